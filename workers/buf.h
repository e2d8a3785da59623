/*
 * buf.h -- a growable byte buffer for the worker's hot path.
 *
 * wk_buf is caller-owned; wk_buf_free releases it.  wk_buf_reset keeps the
 * memory for reuse, so a buffer reused per send or per lease settles at its
 * high-water mark and stops allocating (the worker's memory stays flat).
 * Appends never fail (hr_realloc aborts on out-of-memory).  The content is
 * always NUL-terminated past len, so it can be handed to C string APIs.
 *
 * Thread safety: none; one owner at a time.
 */
#ifndef HERALD_WORKERS_BUF_H
#define HERALD_WORKERS_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

typedef struct wk_buf {
	char *p;    /* bytes, NUL-terminated at p[len] once anything was appended */
	size_t len; /* bytes used */
	size_t cap; /* bytes allocated */
} wk_buf;

static inline void wk_buf_grow(wk_buf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more + 1)
		cap *= 2;
	b->p = hr_realloc(b->p, cap);
	b->cap = cap;
}

static inline void wk_buf_add(wk_buf *b, const void *p, size_t n)
{
	wk_buf_grow(b, n);
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static inline void wk_buf_str(wk_buf *b, const char *s)
{
	wk_buf_add(b, s, strlen(s));
}

static inline void wk_buf_ch(wk_buf *b, char c)
{
	wk_buf_add(b, &c, 1);
}

__attribute__((format(printf, 2, 3))) static inline void wk_buf_printf(wk_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char tmp[256];
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof tmp) {
		wk_buf_add(b, tmp, (size_t)n);
		return;
	}
	wk_buf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static inline void wk_buf_reset(wk_buf *b)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

static inline void wk_buf_free(wk_buf *b)
{
	hr_free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

#endif
