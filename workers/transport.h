/*
 * transport.h -- the one interface every transport implements.
 *
 * The loop (loop.c) renders a job into a wk_send and submits it to the
 * transport its provider names; the transport sends it and, when the send
 * is over, fills the result fields and appends the send to the `done`
 * queue it was created with.  The loop drains that queue once per loop
 * iteration, records the results and frees the sends: a transport never
 * frees a send, and nothing is freed inside a libcurl callback.
 *
 *   room(t, p)    how many more sends of provider p it takes right now
 *                 (sessions or requests in flight left; a sink: many).
 *   submit(t, s)  take s (room was > 0).  It may complete at once.
 *   free(t)       sends still in flight are abandoned: appended to `done`
 *                 with status RETRY ("worker exiting"), so the loop can
 *                 reclaim them; then the transport is gone.
 *
 * Transports are driven by the loop thread only.  libcurl-based ones do
 * their I/O through the shared wk_curlio (curlio.h), which the loop polls.
 */
#ifndef HERALD_WORKERS_TRANSPORT_H
#define HERALD_WORKERS_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "curlio.h"
#include "provider.h"
#include "render.h"
#include "wire.h"

struct wk_lease;

typedef struct wk_send wk_send;
struct wk_send {
	/* Set by the loop before submit. */
	struct wk_lease *lease;   /* the lease the job belongs to */
	uint32_t job;             /* index of the job in the lease */
	const hr_job_batch *batch; /* the lease's batch (strings point into its frame) */
	const hr_job *j;          /* the job */
	wk_provider *prov;        /* the batch's provider account */
	int lane;                 /* hr_lane */
	wk_message msg;           /* the rendered fields */
	uint64_t start_us;        /* monotonic time of submit */
	/* Set by the transport when the send is over. */
	uint8_t status;           /* hr_result_status */
	uint32_t retry_after_ms;  /* provider's hint for RETRY/THROTTLED, 0 = none */
	char provider_id[128];    /* SENT: the provider's id, "" = none */
	char reason[256];         /* failures: one line */
	wk_send *next;            /* queue link */
};

/* A FIFO of sends. */
typedef struct wk_sendq {
	wk_send *head, *tail;
	uint32_t n;
} wk_sendq;

static inline void wk_sendq_push(wk_sendq *q, wk_send *s)
{
	s->next = NULL;
	if (q->tail)
		q->tail->next = s;
	else
		q->head = s;
	q->tail = s;
	q->n++;
}

static inline wk_send *wk_sendq_pop(wk_sendq *q)
{
	wk_send *s = q->head;
	if (s) {
		q->head = s->next;
		if (!q->head)
			q->tail = NULL;
		q->n--;
		s->next = NULL;
	}
	return s;
}

typedef struct wk_transport wk_transport;

typedef struct wk_transport_ops {
	uint32_t (*room)(wk_transport *t, const wk_provider *p);
	void (*submit)(wk_transport *t, wk_send *s);
	void (*free)(wk_transport *t);
} wk_transport_ops;

/* Every transport struct starts with this. */
struct wk_transport {
	const wk_transport_ops *ops;
	wk_sendq *done;           /* where finished sends go */
	uint32_t inflight;        /* sends submitted and not finished */
};

/* Settings the transports share. */
typedef struct wk_transport_opts {
	uint32_t concurrency;     /* sends in flight per transport, and per-account ceiling */
	long smtp_timeout_ms;     /* per SMTP send */
	long http_timeout_ms;     /* per HTTP request */
	int channel;              /* hr_channel the worker serves */
} wk_transport_opts;

wk_transport *wk_sink_new(wk_sendq *done);
wk_transport *wk_smtp_new(wk_curlio *io, wk_sendq *done, const wk_transport_opts *o);
wk_transport *wk_http_new(wk_curlio *io, wk_sendq *done, const wk_transport_opts *o);

/* Sends of p a transport with `free_slots` left may take now (the per-account ceiling). */
static inline uint32_t wk_room_for(uint32_t free_slots, const wk_provider *p, uint32_t ceiling)
{
	uint32_t limit = p->concurrency && p->concurrency < ceiling ? p->concurrency : ceiling;
	uint32_t left = p->inflight < limit ? limit - p->inflight : 0;
	return left < free_slots ? left : free_slots;
}

/* Finish s: the transport's bookkeeping, then onto the done queue. */
static inline void wk_transport_finish(wk_transport *t, wk_send *s)
{
	t->inflight--;
	s->prov->inflight--;
	wk_sendq_push(t->done, s);
}

#endif
