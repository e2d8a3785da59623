/*
 * alloc.h -- herald's one allocator wrapper.
 *
 * Every heap allocation in herald goes through these functions.  They never
 * return NULL: on out-of-memory they log and abort(), so callers do not test
 * for NULL.  In release builds the process allocator is jemalloc (linked into
 * every binary); in the sanitizer build it is the system/ASan allocator.
 *
 * hr_alloc_stats() reports allocator-wide figures (jemalloc's "allocated" and
 * "resident" when available, else zero) for metrics and benchmarks.
 *
 * Thread safety: all functions are thread-safe.
 */
#ifndef HERALD_ALLOC_H
#define HERALD_ALLOC_H

#include <stddef.h>
#include <stdbool.h>

void *hr_malloc(size_t n);
void *hr_calloc(size_t nmemb, size_t size);
void *hr_realloc(void *p, size_t n);
char *hr_strdup(const char *s);
char *hr_strndup(const char *s, size_t n);
void hr_free(void *p);

/* printf into a fresh heap string (never NULL). */
char *hr_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct hr_alloc_stats {
	size_t allocated; /* bytes handed out by the allocator */
	size_t resident;  /* bytes of physical memory the allocator holds */
	bool available;   /* false when the allocator cannot report (non-jemalloc) */
} hr_alloc_stats;

hr_alloc_stats hr_alloc_stats_get(void);

/*
 * Fault seam for tests: when set to N > 0, the Nth following allocation
 * (counted from the call) behaves as out-of-memory and aborts.  0 disables.
 */
void hr_alloc_fail_after(long n);

#endif
