/*
 * timer.c -- see timer.h.  A binary min-heap on due time under one mutex;
 * the array grows by doubling and never shrinks, so steady traffic adds
 * without allocating.
 */
#include "timer.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

struct held {
	uint64_t due_ms;
	struct MHD_Connection *conn;
};

struct ps_timer {
	pthread_mutex_t mu;  /* guards everything below */
	pthread_cond_t cv;   /* CLOCK_MONOTONIC; signalled on new earliest / stop */
	struct held *heap;
	size_t n, cap;
	bool stop;
	pthread_t thread;
};

uint64_t ps_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void swap(struct held *a, struct held *b)
{
	struct held t = *a;
	*a = *b;
	*b = t;
}

static struct held pop(ps_timer *t)
{
	struct held top = t->heap[0];
	t->heap[0] = t->heap[--t->n];
	for (size_t i = 0;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < t->n && t->heap[l].due_ms < t->heap[m].due_ms)
			m = l;
		if (r < t->n && t->heap[r].due_ms < t->heap[m].due_ms)
			m = r;
		if (m == i)
			break;
		swap(&t->heap[i], &t->heap[m]);
		i = m;
	}
	return top;
}

static void *timer_main(void *arg)
{
	ps_timer *t = arg;
	pthread_mutex_lock(&t->mu);
	while (!t->stop) {
		if (t->n == 0) {
			pthread_cond_wait(&t->cv, &t->mu);
			continue;
		}
		uint64_t now = ps_mono_ms();
		if (t->heap[0].due_ms <= now) {
			struct held h = pop(t);
			/* Resuming only flags the connection and wakes MHD's
			 * thread; holding our mutex over it is cheap. */
			MHD_resume_connection(h.conn);
			continue;
		}
		uint64_t due = t->heap[0].due_ms;
		struct timespec ts = {.tv_sec = (time_t)(due / 1000),
				      .tv_nsec = (long)(due % 1000) * 1000000L};
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	while (t->n)
		MHD_resume_connection(pop(t).conn);
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

bool ps_timer_start(ps_timer **out, char *err, size_t errlen)
{
	ps_timer *t = hr_calloc(1, sizeof *t);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&t->mu, NULL);
	t->cap = 1024;
	t->heap = hr_malloc(t->cap * sizeof *t->heap);
	int rc = pthread_create(&t->thread, NULL, timer_main, t);
	if (rc != 0) {
		snprintf(err, errlen, "timer: thread: %s", strerror(rc));
		goto fail;
	}
	*out = t;
	return true;
fail:
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	hr_free(t->heap);
	hr_free(t);
	return false;
}

bool ps_timer_add(ps_timer *t, struct MHD_Connection *c, uint64_t due_ms)
{
	pthread_mutex_lock(&t->mu);
	if (t->stop)
		goto fail;
	if (t->n == t->cap) {
		t->cap *= 2;
		t->heap = hr_realloc(t->heap, t->cap * sizeof *t->heap);
	}
	size_t i = t->n++;
	t->heap[i] = (struct held){due_ms, c};
	while (i > 0 && t->heap[(i - 1) / 2].due_ms > t->heap[i].due_ms) {
		swap(&t->heap[i], &t->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	if (i == 0)
		pthread_cond_signal(&t->cv); /* new earliest: re-arm the sleep */
	pthread_mutex_unlock(&t->mu);
	return true;
fail:
	pthread_mutex_unlock(&t->mu);
	return false;
}

void ps_timer_stop(ps_timer *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	t->stop = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
}

void ps_timer_free(ps_timer *t)
{
	if (!t)
		return;
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	hr_free(t->heap);
	hr_free(t);
}
