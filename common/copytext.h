/*
 * copytext.h -- rows for `COPY ... FROM STDIN` in PostgreSQL's text format.
 *
 * A caller-owned growing buffer: hr_copy_field() appends one column, escaping
 * what the text format gives a meaning (backslash, tab, newline, carriage
 * return; NULL is written \N), and ends the row after the `last` column.  The
 * caller sends b->p[0..b->len) with PQputCopyData and frees it with
 * hr_copy_free().  Strings are NUL-terminated, so a value cannot hold a NUL
 * (PostgreSQL's text types cannot either).  Allocation aborts on OOM
 * (alloc.h), so nothing here fails.
 */
#ifndef HERALD_COPYTEXT_H
#define HERALD_COPYTEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct hr_copybuf {
	char *p;    /* the rows so far (not NUL-terminated) */
	size_t len; /* bytes used */
	size_t cap; /* bytes allocated */
} hr_copybuf;

void hr_copy_field(hr_copybuf *b, const char *s, bool last);
void hr_copy_free(hr_copybuf *b);

#endif
