/*
 * arena.c -- see arena.h.
 */
#include "arena.h"

#include <stdarg.h>
#include <stdio.h>

#include "alloc.h"

struct lq_arena_block {
	lq_arena_block *next; /* older block */
	size_t size;          /* usable bytes in data[] */
	size_t used;          /* bytes handed out */
	_Alignas(16) unsigned char data[];
};

static lq_arena_block *block_new(size_t size, lq_arena_block *next)
{
	lq_arena_block *b = hr_malloc(sizeof *b + size);
	b->next = next;
	b->size = size;
	b->used = 0;
	return b;
}

void lq_arena_init(lq_arena *a, size_t first_block)
{
	a->head = NULL;
	a->block_size = first_block ? first_block : 4096;
	a->used_total = 0;
}

void *lq_arena_alloc(lq_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	lq_arena_block *b = a->head;
	if (!b || b->size - b->used < n) {
		size_t sz = a->block_size;
		if (n > sz / 4) {
			/* Big request: its own block, behind the current one so the
			 * current block's free tail stays usable. */
			lq_arena_block *big = block_new(n, b ? b->next : NULL);
			if (b)
				b->next = big;
			else
				a->head = big;
			big->used = n;
			a->used_total += n;
			return big->data;
		}
		b = block_new(sz, b);
		a->head = b;
		if (a->block_size < 1u << 20)
			a->block_size *= 2;
	}
	void *p = b->data + b->used;
	b->used += n;
	a->used_total += n;
	return p;
}

void *lq_arena_zalloc(lq_arena *a, size_t n)
{
	void *p = lq_arena_alloc(a, n);
	memset(p, 0, n);
	return p;
}

char *lq_arena_strndup(lq_arena *a, const char *s, size_t n)
{
	char *p = lq_arena_alloc(a, n + 1);
	if (n)
		memcpy(p, s, n);
	p[n] = 0;
	return p;
}

void lq_arena_reset(lq_arena *a)
{
	lq_arena_block *b = a->head;
	if (!b)
		return;
	/* Keep the newest (largest ordinary) block; free the rest. */
	lq_arena_block *rest = b->next;
	while (rest) {
		lq_arena_block *nx = rest->next;
		hr_free(rest);
		rest = nx;
	}
	b->next = NULL;
	b->used = 0;
	a->used_total = 0;
}

void lq_arena_free(lq_arena *a)
{
	lq_arena_block *b = a->head;
	while (b) {
		lq_arena_block *nx = b->next;
		hr_free(b);
		b = nx;
	}
	a->head = NULL;
	a->used_total = 0;
}

size_t lq_arena_footprint(const lq_arena *a)
{
	size_t t = 0;
	for (const lq_arena_block *b = a->head; b; b = b->next)
		t += sizeof *b + b->size;
	return t;
}

void lq_buf_grow(lq_buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->n + need)
		cap *= 2;
	b->p = hr_realloc(b->p, cap);
	b->cap = cap;
	b->p[b->n] = 0; /* a fresh buffer is an empty string, not garbage */
}

void lq_buf_printf(lq_buf *b, const char *fmt, ...)
{
	va_list ap;
	char tmp[256];
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof tmp) {
		lq_buf_put(b, tmp, (size_t)n);
		return;
	}
	if (b->n + (size_t)n + 1 > b->cap)
		lq_buf_grow(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)n;
}

void lq_buf_free(lq_buf *b)
{
	hr_free(b->p);
	b->p = NULL;
	b->n = b->cap = 0;
}
