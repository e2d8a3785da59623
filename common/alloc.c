/*
 * alloc.c -- see alloc.h.  Thin wrappers that turn NULL into abort().
 */
#include "alloc.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HERALD_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

static atomic_long fail_countdown;

static void oom(size_t n)
{
	/* No allocation here: the heap is exhausted. */
	char buf[96];
	int len = snprintf(buf, sizeof buf, "panic: out of memory allocating %zu bytes\n", n);
	if (len > 0)
		(void)!write(2, buf, (size_t)len);
	abort();
}

static void check_fault(size_t n)
{
	if (atomic_load_explicit(&fail_countdown, memory_order_relaxed) <= 0)
		return;
	if (atomic_fetch_sub(&fail_countdown, 1) == 1)
		oom(n);
}

void *hr_malloc(size_t n)
{
	check_fault(n);
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *hr_calloc(size_t nmemb, size_t size)
{
	check_fault(size);
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (!p)
		oom(nmemb * size);
	return p;
}

void *hr_realloc(void *p, size_t n)
{
	check_fault(n);
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *hr_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = hr_malloc(n);
	memcpy(p, s, n);
	return p;
}

char *hr_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = hr_malloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

void hr_free(void *p)
{
	free(p);
}

char *hr_sprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		oom(0);
	char *p = hr_malloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

hr_alloc_stats hr_alloc_stats_get(void)
{
	hr_alloc_stats st = {0};
#ifdef HERALD_JEMALLOC
	uint64_t epoch = 1;
	size_t sz = sizeof epoch;
	mallctl("epoch", &epoch, &sz, &epoch, sz);
	sz = sizeof st.allocated;
	if (mallctl("stats.allocated", &st.allocated, &sz, NULL, 0) == 0 &&
	    mallctl("stats.resident", &st.resident, &sz, NULL, 0) == 0)
		st.available = true;
#endif
	return st;
}

void hr_alloc_fail_after(long n)
{
	atomic_store(&fail_countdown, n);
}
