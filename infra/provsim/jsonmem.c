/*
 * jsonmem.c -- see jsonmem.h.
 */
#include "jsonmem.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"
#include "log.h"

#define ARENA_SIZE (16 * 1024)

struct arena {
	char *base;   /* ARENA_SIZE bytes */
	size_t used;  /* bump offset */
	bool active;  /* inside begin/end */
};

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Thread_local struct arena *tl;

static void arena_destroy(void *p)
{
	struct arena *a = p;
	hr_free(a->base);
	hr_free(a);
}

static void make_key(void)
{
	if (pthread_key_create(&key, arena_destroy) != 0)
		hr_fatal("jsonmem: pthread_key_create failed");
}

static void *jm_malloc(size_t n)
{
	struct arena *a = tl;
	if (a && a->active) {
		size_t need = (n + 15) & ~(size_t)15;
		if (need <= ARENA_SIZE - a->used) {
			void *p = a->base + a->used;
			a->used += need;
			return p;
		}
	}
	return hr_malloc(n);
}

static void jm_free(void *p)
{
	struct arena *a = tl;
	if (a && (char *)p >= a->base && (char *)p < a->base + ARENA_SIZE)
		return;
	hr_free(p);
}

void ps_json_mem_init(void)
{
	pthread_once(&once, make_key);
	json_set_alloc_funcs(jm_malloc, jm_free);
}

void ps_json_arena_begin(void)
{
	if (!tl) {
		tl = hr_calloc(1, sizeof *tl);
		tl->base = hr_malloc(ARENA_SIZE);
		(void)pthread_setspecific(key, tl); /* only fails on a bad key */
	}
	tl->used = 0;
	tl->active = true;
}

void ps_json_arena_end(void)
{
	tl->active = false;
	tl->used = 0;
}

void ps_json_free(void *p)
{
	jm_free(p);
}
