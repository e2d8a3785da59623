/*
 * transport_sink.c -- the sink transport: every send is SENT at once.
 *
 * For benchmarks and tests of everything but the network: the job is still
 * rendered (the loop does that before submit), only the delivery is skipped.
 * The provider id is "sink-<message id>", so a test can check that results
 * belong to their jobs.
 */
#include <stdio.h>

#include "alloc.h"
#include "transport.h"

static uint32_t sink_room(wk_transport *t, const wk_provider *p)
{
	/* Unbounded in principle; the loop's per-iteration budget bounds the work. */
	return 1u << 20;
}

static void sink_submit(wk_transport *t, wk_send *s)
{
	t->inflight++;
	s->prov->inflight++;
	s->status = HR_RES_SENT;
	snprintf(s->provider_id, sizeof s->provider_id, "sink-%llu",
		 (unsigned long long)s->j->message_id);
	wk_transport_finish(t, s);
}

static void sink_free(wk_transport *t)
{
	hr_free(t);
}

static const wk_transport_ops sink_ops = {sink_room, sink_submit, sink_free};

wk_transport *wk_sink_new(wk_sendq *done)
{
	wk_transport *t = hr_calloc(1, sizeof *t);
	t->ops = &sink_ops;
	t->done = done;
	return t;
}
