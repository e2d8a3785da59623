/*
 * strbuf.h -- a growing NUL-terminated string, for building text (SQL, JSON).
 *
 * Zero-initialise (hr_sbuf b = {0}); b.p is NULL until something is added,
 * then always NUL-terminated; release it with hr_free(b.p).  Allocation
 * aborts on OOM (alloc.h), so nothing here fails.
 */
#ifndef HERALD_STRBUF_H
#define HERALD_STRBUF_H

#include <stddef.h>

typedef struct hr_sbuf {
	char *p;    /* the text so far, NUL-terminated (NULL while empty) */
	size_t n;   /* its length */
	size_t cap; /* bytes allocated */
} hr_sbuf;

void hr_sbuf_addn(hr_sbuf *b, const char *s, size_t n);
void hr_sbuf_add(hr_sbuf *b, const char *s);
/* For herald's own format strings (not input): any length. */
void hr_sbuf_addf(hr_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
