/*
 * arena.h -- bump allocator and growable byte buffer for the Liquid engine.
 *
 * lq_arena hands out memory from chained blocks; nothing is freed one by
 * one.  A compiled template owns one arena for its whole tree (free is one
 * walk over the blocks); a renderer owns one for per-render temporaries and
 * rewinds it (lq_arena_reset keeps the first block) between renders, so a
 * steady-state render allocates nothing from the heap.
 *
 * lq_buf is a growable byte string (the render output, captures, filter
 * scratch).  Its storage comes from the heap (hr_realloc) and is kept when
 * cleared, so a buffer reused across renders stops allocating once warm.
 *
 * Ownership: the arena owns every pointer it returned; the buffer owns its
 * bytes.  Thread safety: none -- one owner thread at a time.
 * Errors: none; out-of-memory aborts (see alloc.h).
 */
#ifndef HERALD_LIQUID_ARENA_H
#define HERALD_LIQUID_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct lq_arena_block lq_arena_block;

typedef struct lq_arena {
	lq_arena_block *head;  /* current block (newest first) */
	size_t block_size;     /* size of the next ordinary block */
	size_t used_total;     /* bytes handed out since creation/reset */
} lq_arena;

void lq_arena_init(lq_arena *a, size_t first_block);
void *lq_arena_alloc(lq_arena *a, size_t n);       /* 16-byte aligned */
void *lq_arena_zalloc(lq_arena *a, size_t n);
char *lq_arena_strndup(lq_arena *a, const char *s, size_t n); /* NUL-terminated */
void lq_arena_reset(lq_arena *a);                  /* keep one block, drop the rest */
void lq_arena_free(lq_arena *a);
size_t lq_arena_footprint(const lq_arena *a);      /* bytes of blocks held */

typedef struct lq_buf {
	char *p;     /* bytes, always NUL-terminated when cap > 0 */
	size_t n;    /* length */
	size_t cap;  /* allocated size */
} lq_buf;

void lq_buf_grow(lq_buf *b, size_t need);
static inline void lq_buf_put(lq_buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap)
		lq_buf_grow(b, n + 1);
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}
static inline void lq_buf_putc(lq_buf *b, char c)
{
	if (b->n + 2 > b->cap)
		lq_buf_grow(b, 2);
	b->p[b->n++] = c;
	b->p[b->n] = 0;
}
static inline void lq_buf_puts(lq_buf *b, const char *s) { lq_buf_put(b, s, strlen(s)); }
void lq_buf_printf(lq_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void lq_buf_clear(lq_buf *b) { b->n = 0; if (b->cap) b->p[0] = 0; }
void lq_buf_free(lq_buf *b);

#endif
