/*
 * loop.c -- herald-worker's event loop.  See loop.h.
 *
 * One iteration: zmq_poll over the DEALER, the monitor socket, the signal
 * pipe and libcurl's sockets; then read frames, drive libcurl, record
 * finished sends, start new sends, flush results, send CREDIT / HEARTBEAT /
 * HELLO as due.  Finished sends are recorded from the `done` queue after
 * libcurl returns, never inside its callbacks, and sends are recycled
 * through a free list.
 *
 * Several schedulers (each serving its share of the tenants): one link per
 * endpoint -- a DEALER, its monitor, its handshake, heartbeat, credit and
 * BYE state.  A lease belongs to the link it came on, and its results go
 * back on that link only (lease ids are per scheduler).  Sends, transports
 * and the render cache are shared.
 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "alloc.h"
#include "buf.h"
#include "curlio.h"
#include "log.h"
#include "metrics.h"
#include "provider.h"
#include "render.h"
#include "transport.h"
#include "wire.h"

#define HEARTBEAT_MS 1000
#define PARTIAL_FLUSH_MS 100    /* partial RESULTS at least this often */
#define PARTIAL_FLUSH_COUNT 1024 /* ... or when this many results wait */
#define START_BUDGET 2048       /* sends started per iteration, so frames keep flowing */
#define HELLO_RETRY_MS 10
#define MAX_POLL 1024
#define RECENT_LEASES 256       /* finished lease ids remembered, to drop re-sent batches */
#define FREE_SENDS_MAX 64
#define MAX_LINKS 16            /* scheduler endpoints */

typedef enum lease_state { L_QUEUED, L_ACTIVE, L_WAITING, L_DONE, L_NSTATES } lease_state;
static const char *const state_names[L_NSTATES] = {"queued", "active", "waiting", "done"};

/* A result waiting to be sent; its strings live in the lease's `strs`. */
typedef struct pres {
	uint64_t message_id;
	uint8_t status;
	uint32_t latency_us, retry_after_ms;
	uint32_t pid_off, pid_len, reason_off, reason_len;
} pres;

/* One scheduler endpoint and what the worker knows of that scheduler. */
typedef struct slink {
	char *ep;                   /* tcp://host:port */
	int idx;
	void *sock, *mon;
	uint32_t held;              /* leases of this slink */
	uint32_t credit_owed;       /* CREDIT to send */
	bool need_hello, handshaken, alive;
	long long last_heard_ms, next_hello_ms;
	uint64_t *bye;              /* leases to hand back in BYE */
	uint32_t nbye, capbye;
	bool over_credit_warned;
} slink;

typedef struct wk_lease wk_lease;
struct wk_lease {
	lease_state state;
	slink *ln;                   /* the scheduler it came from; its results go back there */
	wk_lease *prev, *next;      /* the list of its state */
	zmq_msg_t frame;            /* the JOBS frame; b's strings point into it */
	hr_job_batch b;
	wk_provider *prov;          /* NULL when setup failed */
	wk_content *content;        /* NULL when setup failed */
	uint8_t setup_status;       /* 0, or the result every job gets (setup failed) */
	char setup_reason[sizeof ((hr_err *)0)->msg];
	uint32_t next_job;          /* next job to start */
	uint32_t finished;          /* jobs over (result recorded, or skipped duplicate) */
	uint8_t *dup;               /* per job: 1 = duplicate message id, no result; NULL = none */
	pres *pending;              /* results not yet sent */
	uint32_t npending, cappending;
	wk_buf strs;
	long long first_pending_ms; /* when the oldest pending result was recorded */
};

typedef struct lease_list {
	wk_lease *head, *tail;
	uint32_t n;
} lease_list;

typedef struct worker {
	const wk_settings *s;
	char worker_id[128];
	void *zctx, *sock, *mon;
	int sigpipe[2];
	lease_list lists[L_NSTATES];
	wk_providers *providers;
	wk_render *render;
	wk_curlio *io;
	wk_transport *tr[WK_TR_COUNT];
	wk_transport_opts topts;
	wk_sendq done;
	wk_send *free_sends;
	uint32_t nfree_sends;
	wk_metrics *metrics;
	hr_buf out;                 /* frame being encoded */
	hr_result *res_scratch;     /* RESULTS being encoded */
	uint32_t cap_scratch;
	uint64_t recent[RECENT_LEASES];
	uint8_t recent_link[RECENT_LEASES];
	uint32_t recent_pos, recent_n; /* ring position, entries filled */
	slink links[MAX_LINKS];
	int nlinks;
	long long last_heartbeat_ms;
	bool draining;
	long long drain_deadline_ms;
} worker;

static volatile sig_atomic_t signals_seen;
static int signal_fd = -1;

static void on_signal(int sig)
{
	if (++signals_seen >= 2) {
		static const char msg[] = "herald-worker: second signal, exiting at once\n";
		(void)!write(2, msg, sizeof msg - 1);
		_exit(1);
	}
	int saved = errno;
	(void)!write(signal_fd, "x", 1);
	errno = saved;
}

static long long mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long mono_ms(void)
{
	return mono_us() / 1000;
}

/* ---- lease lists: a lease's state is the list it is in ---- */

static void list_remove(lease_list *l, wk_lease *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		l->head = x->next;
	if (x->next)
		x->next->prev = x->prev;
	else
		l->tail = x->prev;
	x->prev = x->next = NULL;
	l->n--;
}

static void list_append(lease_list *l, wk_lease *x)
{
	x->next = NULL;
	x->prev = l->tail;
	if (l->tail)
		l->tail->next = x;
	else
		l->head = x;
	l->tail = x;
	l->n++;
}

/* The one place a lease changes state.  Legal: queued->active->waiting->done. */
static void lease_move(worker *w, wk_lease *x, lease_state to)
{
	if (to != x->state + 1)
		hr_panic("lease %llu: illegal move %s -> %s", (unsigned long long)x->b.lease_id,
			 state_names[x->state], state_names[to]);
	list_remove(&w->lists[x->state], x);
	x->state = to;
	list_append(&w->lists[to], x);
}

static uint32_t leases_held(const worker *w)
{
	uint32_t n = 0;
	for (int i = 0; i < L_NSTATES; i++)
		n += w->lists[i].n;
	return n;
}

/* Remove a lease from its list and free it (queued ones on BYE, done ones when flushed). */
static void lease_free(worker *w, wk_lease *x)
{
	list_remove(&w->lists[x->state], x);
	x->ln->held--;
	if (x->prov)
		wk_provider_put(w->providers, x->prov);
	wk_content_close(w->render, x->content);
	hr_wire_jobs_free(&x->b);
	zmq_msg_close(&x->frame);
	hr_free(x->dup);
	hr_free(x->pending);
	wk_buf_free(&x->strs);
	hr_free(x);
}

/* ---- sending frames ---- */

static bool send_out(worker *w, slink *ln)
{
	int rc = zmq_send(ln->sock, w->out.data, w->out.len, ZMQ_DONTWAIT);
	hr_buf_reset(&w->out);
	if (rc >= 0)
		return true;
	/* EAGAIN: no connection (ZMQ_IMMEDIATE) or the pipe is full; the caller keeps the data. */
	if (errno != EAGAIN && errno != EINTR)
		hr_warn("zmq_send: %s", zmq_strerror(errno));
	return false;
}

static void send_hello(worker *w, slink *ln)
{
	uint32_t held = ln->held; /* credit is per scheduler */
	hr_hello h = {
		.worker_id = {w->worker_id, (uint32_t)strlen(w->worker_id)},
		.channel = (uint8_t)w->s->channel,
		.lane = (uint8_t)w->s->lane,
		/* Free slots: a scheduler that forgot us learns what we can take now. */
		.credit = w->draining ? 0 : (held < w->s->credit ? w->s->credit - held : 0),
	};
	hr_wire_encode_hello(&w->out, &h);
	if (send_out(w, ln)) {
		ln->need_hello = false;
		ln->credit_owed = 0; /* the HELLO's credit supersedes what we owed */
		hr_info("hello sent scheduler=%s credit=%u held=%u", ln->ep, h.credit, held);
	} else {
		ln->next_hello_ms = mono_ms() + HELLO_RETRY_MS;
	}
}

static void send_bye(worker *w, slink *ln)
{
	hr_bye b = {.nleases = ln->nbye, .leases = ln->bye};
	hr_wire_encode_bye(&w->out, &b);
	if (send_out(w, ln)) {
		hr_info("bye sent scheduler=%s leases_handed_back=%u", ln->ep, ln->nbye);
		ln->nbye = 0;
	}
}

/* RESULTS for a lease's pending results; false when it could not be sent now. */
static bool flush_lease(worker *w, wk_lease *x)
{
	if (x->npending == 0)
		return true;
	if (w->cap_scratch < x->npending) {
		w->cap_scratch = x->npending;
		w->res_scratch = hr_realloc(w->res_scratch, w->cap_scratch * sizeof *w->res_scratch);
	}
	for (uint32_t i = 0; i < x->npending; i++) {
		const pres *p = &x->pending[i];
		w->res_scratch[i] = (hr_result){
			.message_id = p->message_id,
			.status = p->status,
			.latency_us = p->latency_us,
			.retry_after_ms = p->retry_after_ms,
			.provider_id = {x->strs.p + p->pid_off, p->pid_len},
			.reason = {x->strs.p + p->reason_off, p->reason_len},
		};
	}
	hr_result_batch rb = {.lease_id = x->b.lease_id, .tenant_id = x->b.tenant_id,
			      .nresults = x->npending, .results = w->res_scratch};
	hr_wire_encode_results(&w->out, &rb);
	if (!send_out(w, x->ln))
		return false;
	x->npending = 0;
	wk_buf_reset(&x->strs);
	return true;
}

/* ---- results ---- */

static void record(worker *w, wk_lease *x, uint32_t job, uint8_t status, uint32_t latency_us,
		   uint32_t retry_after_ms, const char *provider_id, const char *reason)
{
	if (x->npending == x->cappending) {
		x->cappending = x->cappending ? x->cappending * 2 : 64;
		x->pending = hr_realloc(x->pending, x->cappending * sizeof *x->pending);
	}
	if (x->npending == 0)
		x->first_pending_ms = mono_ms();
	pres *p = &x->pending[x->npending++];
	p->message_id = x->b.jobs[job].message_id;
	p->status = status;
	p->latency_us = latency_us;
	p->retry_after_ms = retry_after_ms;
	/* Empty strings take no room; offsets stay valid however strs grows. */
	p->pid_off = (uint32_t)x->strs.len;
	p->pid_len = (uint32_t)strlen(provider_id);
	wk_buf_add(&x->strs, provider_id, p->pid_len);
	p->reason_off = (uint32_t)x->strs.len;
	p->reason_len = (uint32_t)strlen(reason);
	wk_buf_add(&x->strs, reason, p->reason_len);
	x->finished++;
	wk_metrics_result(w->metrics, status, latency_us);
}

/* Move a lease on when its jobs are all started / all over. */
static void lease_advance(worker *w, wk_lease *x)
{
	if (x->state == L_ACTIVE && x->next_job == x->b.njobs)
		lease_move(w, x, L_WAITING);
	if (x->state == L_WAITING && x->finished == x->b.njobs)
		lease_move(w, x, L_DONE);
}

static void recycle(worker *w, wk_send *s)
{
	if (w->nfree_sends >= FREE_SENDS_MAX) {
		wk_message_free(&s->msg);
		hr_free(s);
		return;
	}
	s->next = w->free_sends;
	w->free_sends = s;
	w->nfree_sends++;
}

/* Record every finished send (after libcurl returned: never from a callback). */
static void reap(worker *w)
{
	wk_send *s;
	long long now = mono_us();
	while ((s = wk_sendq_pop(&w->done))) {
		wk_lease *x = s->lease;
		long long lat = now - (long long)s->start_us;
		record(w, x, s->job, s->status, lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat, s->retry_after_ms,
		       s->status == HR_RES_SENT ? s->provider_id : "",
		       s->status == HR_RES_SENT ? "" : s->reason);
		lease_advance(w, x);
		recycle(w, s);
	}
}

/* ---- starting sends ---- */

static wk_transport *transport_for(worker *w, wk_transport_kind k)
{
	if (!w->tr[k]) {
		switch (k) {
		case WK_TR_SINK:
			w->tr[k] = wk_sink_new(&w->done);
			break;
		case WK_TR_SMTP:
			w->tr[k] = wk_smtp_new(w->io, &w->done, &w->topts);
			break;
		case WK_TR_HTTP:
			w->tr[k] = wk_http_new(w->io, &w->done, &w->topts);
			break;
		default:
			hr_panic("transport kind %d", (int)k);
		}
	}
	return w->tr[k];
}

static wk_send *new_send(worker *w)
{
	wk_send *s = w->free_sends;
	if (s) {
		w->free_sends = s->next;
		w->nfree_sends--;
	} else {
		s = hr_calloc(1, sizeof *s);
	}
	return s;
}

/* A lease is started -- no longer handed back on drain -- when its first job is. */
static void begin(worker *w, wk_lease *x)
{
	if (x->state == L_QUEUED)
		lease_move(w, x, L_ACTIVE);
}

/* Start what a lease can start now; returns the budget left. */
static uint32_t start_lease(worker *w, wk_lease *x, uint32_t budget)
{
	while ((x->state == L_QUEUED || x->state == L_ACTIVE) && x->next_job < x->b.njobs && budget) {
		uint32_t j = x->next_job;
		if (x->dup && x->dup[j]) {
			/* Same message id twice in one lease: one send, one result. */
			begin(w, x);
			x->next_job++;
			x->finished++;
			lease_advance(w, x);
			continue;
		}
		if (x->setup_status) {
			begin(w, x);
			record(w, x, j, x->setup_status, 0, 0, "", x->setup_reason);
			x->next_job++;
			budget--;
			lease_advance(w, x);
			continue;
		}
		wk_transport *t = transport_for(w, x->prov->kind);
		if (t->ops->room(t, x->prov) == 0)
			break;
		begin(w, x);
		wk_send *s = new_send(w);
		hr_err err = {0};
		if (!wk_render_job(w->render, x->content, &x->b, &x->b.jobs[j], x->prov, &s->msg, &err)) {
			recycle(w, s);
			record(w, x, j, HR_RES_PERMANENT, 0, 0, "", err.msg);
			x->next_job++;
			budget--;
			lease_advance(w, x);
			continue;
		}
		s->lease = x;
		s->job = j;
		s->batch = &x->b;
		s->j = &x->b.jobs[j];
		s->prov = x->prov;
		s->lane = x->b.lane;
		s->start_us = (uint64_t)mono_us();
		s->status = 0;
		s->retry_after_ms = 0;
		s->provider_id[0] = s->reason[0] = '\0';
		x->next_job++;
		budget--;
		t->ops->submit(t, s);
		/* A synchronous transport may have finished the lease: advance first, then reap. */
		lease_advance(w, x);
		reap(w);
	}
	return budget;
}

/* Start sends across leases in arrival order; true when work is left that could start now. */
static bool start_sends(worker *w)
{
	uint32_t budget = START_BUDGET;
	wk_lease *x = w->lists[L_ACTIVE].head;
	while (x && budget) {
		wk_lease *next = x->next; /* x may move to another list */
		budget = start_lease(w, x, budget);
		x = next;
	}
	x = w->lists[L_QUEUED].head;
	while (x && budget) {
		wk_lease *next = x->next;
		budget = start_lease(w, x, budget);
		x = next;
	}
	return budget == 0;
}

/* ---- receiving ---- */

/* Lease ids are per scheduler: a lease is (link, id). */
static bool recent_lease(const worker *w, const slink *ln, uint64_t id)
{
	for (uint32_t i = 0; i < w->recent_n; i++)
		if (w->recent[i] == id && w->recent_link[i] == ln->idx)
			return true;
	return false;
}

static bool held_lease(const worker *w, const slink *ln, uint64_t id)
{
	for (int s = 0; s < L_NSTATES; s++)
		for (const wk_lease *x = w->lists[s].head; x; x = x->next)
			if (x->b.lease_id == id && x->ln == ln)
				return true;
	return false;
}

/* Mark jobs whose message id already appeared earlier in the lease. */
static void mark_duplicates(wk_lease *x)
{
	uint32_t n = x->b.njobs, cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	uint64_t *set = hr_calloc(cap, sizeof *set);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t id = x->b.jobs[i].message_id;
		uint64_t h = id * 0x9E3779B97F4A7C15ull;
		uint32_t k = (uint32_t)(h >> 32) & (cap - 1);
		/* Message ids are never 0 on the wire (the decoder refuses 0), so 0 marks empty. */
		while (set[k] && set[k] != id)
			k = (k + 1) & (cap - 1);
		if (set[k] == id) {
			if (!x->dup)
				x->dup = hr_calloc(n, 1);
			x->dup[i] = 1;
		} else {
			set[k] = id;
		}
	}
	hr_free(set);
	if (x->dup)
		hr_warn("lease=%llu tenant=%u: duplicate message ids in one batch; one result each",
			(unsigned long long)x->b.lease_id, x->b.tenant_id);
}

/* Compile what the batch needs; on failure every job gets setup_status. */
static void lease_setup(worker *w, wk_lease *x)
{
	hr_err err = {0};
	const hr_job_batch *b = &x->b;
	if (b->channel != w->s->channel || b->lane != w->s->lane) {
		/* The scheduler routed it to the wrong pool: another worker can send it. */
		x->setup_status = HR_RES_RETRY;
		snprintf(x->setup_reason, sizeof x->setup_reason,
			 "worker serves %s/%s, batch is %s/%s", hr_channel_name(w->s->channel),
			 hr_lane_name(w->s->lane), hr_channel_name(b->channel), hr_lane_name(b->lane));
		hr_warn("lease=%llu tenant=%u: %s", (unsigned long long)b->lease_id, b->tenant_id,
			x->setup_reason);
		return;
	}
	if (!wk_provider_get(w->providers, b->provider.p, b->provider.len, &x->prov, &err)) {
		x->prov = NULL;
		goto bad;
	}
	if (!wk_content_open(w->render, b, &x->content, &err)) {
		x->content = NULL;
		goto bad;
	}
	return;
bad:
	/* A provider account or content that cannot work is the same for every job: permanent. */
	x->setup_status = HR_RES_PERMANENT;
	snprintf(x->setup_reason, sizeof x->setup_reason, "%s", err.msg);
	hr_warn("lease=%llu tenant=%u: %s", (unsigned long long)b->lease_id, b->tenant_id, err.msg);
}

static void hand_back(slink *ln, uint64_t lease_id)
{
	if (ln->nbye == ln->capbye) {
		ln->capbye = ln->capbye ? ln->capbye * 2 : 16;
		ln->bye = hr_realloc(ln->bye, ln->capbye * sizeof *ln->bye);
	}
	ln->bye[ln->nbye++] = lease_id;
}

static void on_jobs(worker *w, slink *ln, wk_lease *x)
{
	hr_err err = {0};
	if (!hr_wire_decode_jobs(zmq_msg_data(&x->frame), zmq_msg_size(&x->frame), &x->b, &err)) {
		hr_warn("malformed JOBS frame dropped: %s%s%s", err.field, err.field[0] ? ": " : "", err.msg);
		zmq_msg_close(&x->frame);
		hr_free(x);
		return;
	}
	uint64_t id = x->b.lease_id;
	if (held_lease(w, ln, id) || recent_lease(w, ln, id)) {
		/* A batch sent twice: it has (or had) its results once; return the credit it used. */
		hr_warn("lease=%llu received again; dropped", (unsigned long long)id);
		hr_wire_jobs_free(&x->b);
		zmq_msg_close(&x->frame);
		hr_free(x);
		ln->credit_owed++;
		return;
	}
	if (w->draining) {
		/* Crossed our BYE: hand it back unstarted. */
		hand_back(ln, id);
		hr_wire_jobs_free(&x->b);
		zmq_msg_close(&x->frame);
		hr_free(x);
		return;
	}
	if (ln->held >= w->s->credit && !ln->over_credit_warned) {
		hr_warn("scheduler=%s sent more leases than credit=%u; taking them anyway", ln->ep, w->s->credit);
		ln->over_credit_warned = true;
	}
	mark_duplicates(x);
	lease_setup(w, x);
	x->ln = ln;
	ln->held++;
	x->state = L_QUEUED;
	list_append(&w->lists[L_QUEUED], x);
}

static void read_frames(worker *w, slink *ln)
{
	for (int i = 0; i < 256; i++) {
		wk_lease *x = hr_calloc(1, sizeof *x);
		zmq_msg_init(&x->frame);
		if (zmq_msg_recv(&x->frame, ln->sock, ZMQ_DONTWAIT) < 0) {
			int e = errno;
			zmq_msg_close(&x->frame);
			hr_free(x);
			if (e != EAGAIN && e != EINTR)
				hr_warn("zmq_msg_recv: %s", zmq_strerror(e));
			return;
		}
		long long now = mono_ms();
		if (!ln->alive) {
			hr_info("scheduler heard from scheduler=%s", ln->ep);
			ln->alive = true;
			/* It may have declared us dead and forgotten us: introduce ourselves again. */
			if (ln->last_heard_ms)
				ln->need_hello = true;
		}
		ln->last_heard_ms = now;
		if (zmq_msg_more(&x->frame)) {
			hr_warn("multi-part message from the scheduler dropped (one frame per message)");
			while (zmq_msg_more(&x->frame) && zmq_msg_recv(&x->frame, ln->sock, ZMQ_DONTWAIT) >= 0)
				;
			zmq_msg_close(&x->frame);
			hr_free(x);
			continue;
		}
		hr_wire_type type;
		hr_err err = {0};
		if (!hr_wire_peek(zmq_msg_data(&x->frame), zmq_msg_size(&x->frame), &type, &err)) {
			hr_warn("malformed frame dropped: %s%s%s", err.field, err.field[0] ? ": " : "", err.msg);
		} else if (type == HR_W_JOBS) {
			on_jobs(w, ln, x);
			continue;
		} else if (type != HR_W_HEARTBEAT) {
			hr_warn("unexpected %d frame from the scheduler dropped", (int)type);
		}
		zmq_msg_close(&x->frame);
		hr_free(x);
	}
}

static void read_monitor(slink *ln)
{
	for (;;) {
		zmq_msg_t ev, addr;
		zmq_msg_init(&ev);
		if (zmq_msg_recv(&ev, ln->mon, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&ev);
			return;
		}
		uint16_t event = 0;
		if (zmq_msg_size(&ev) >= 6)
			memcpy(&event, zmq_msg_data(&ev), 2);
		bool more = zmq_msg_more(&ev);
		zmq_msg_close(&ev);
		if (more) {
			zmq_msg_init(&addr);
			(void)!zmq_msg_recv(&addr, ln->mon, 0);
			zmq_msg_close(&addr);
		}
		if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
			hr_info("connected to scheduler=%s", ln->ep);
			ln->handshaken = true;
			ln->alive = true;
			ln->last_heard_ms = mono_ms();
			ln->need_hello = true;
			ln->next_hello_ms = 0;
		} else if (event == ZMQ_EVENT_DISCONNECTED) {
			hr_warn("disconnected from scheduler=%s; reconnecting", ln->ep);
			ln->handshaken = false;
		}
	}
}

/* ---- setup ---- */

static bool link_setup(worker *w, slink *ln, hr_err *err)
{
	ln->sock = zmq_socket(w->zctx, ZMQ_DEALER);
	if (!ln->sock)
		return hr_fail(err, HR_ERR_IO, "scheduler", "zmq_socket: %s", zmq_strerror(errno));
	int one = 1, zero = 0, ivl = 100, ivlmax = 2000, hb = HEARTBEAT_MS, dead = HR_WIRE_DEAD_MS;
	int64_t maxmsg = HR_WIRE_MAX_FRAME;
	zmq_setsockopt(ln->sock, ZMQ_ROUTING_ID, w->worker_id, strlen(w->worker_id));
	/* Queue frames only on a live connection: results wait in their lease while disconnected. */
	zmq_setsockopt(ln->sock, ZMQ_IMMEDIATE, &one, sizeof one);
	zmq_setsockopt(ln->sock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(ln->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
	zmq_setsockopt(ln->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
	zmq_setsockopt(ln->sock, ZMQ_RECONNECT_IVL_MAX, &ivlmax, sizeof ivlmax);
	/* ZMTP heartbeats notice a dead TCP peer and make ZeroMQ reconnect. */
	zmq_setsockopt(ln->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
	zmq_setsockopt(ln->sock, ZMQ_HEARTBEAT_TIMEOUT, &dead, sizeof dead);
	char mon[64];
	snprintf(mon, sizeof mon, "inproc://worker-monitor-%d-%d", (int)getpid(), ln->idx);
	if (zmq_socket_monitor(ln->sock, mon, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) != 0)
		return hr_fail(err, HR_ERR_IO, "scheduler", "zmq_socket_monitor: %s", zmq_strerror(errno));
	ln->mon = zmq_socket(w->zctx, ZMQ_PAIR);
	if (!ln->mon || zmq_connect(ln->mon, mon) != 0)
		return hr_fail(err, HR_ERR_IO, "scheduler", "monitor: %s", zmq_strerror(errno));
	if (zmq_connect(ln->sock, ln->ep) != 0)
		return hr_fail(err, HR_ERR_INVALID, "scheduler", "scheduler: cannot connect to '%s': %s", ln->ep,
			       zmq_strerror(errno));
	return true;
}

/* One link per comma-separated endpoint of the scheduler setting. */
static bool zmq_setup(worker *w, hr_err *err)
{
	w->zctx = zmq_ctx_new();
	char *copy = hr_strdup(w->s->scheduler), *save = NULL;
	bool ok = true;
	for (char *ep = strtok_r(copy, ",", &save); ok && ep; ep = strtok_r(NULL, ",", &save)) {
		if (w->nlinks == MAX_LINKS) {
			ok = hr_fail(err, HR_ERR_INVALID, "scheduler", "scheduler: more than %d endpoints", MAX_LINKS);
			break;
		}
		slink *ln = &w->links[w->nlinks];
		ln->idx = w->nlinks++;
		ln->ep = hr_strdup(ep);
		ok = link_setup(w, ln, err);
	}
	hr_free(copy);
	return ok;
}

static void make_worker_id(worker *w)
{
	char host[64] = "host";
	gethostname(host, sizeof host - 1);
	host[sizeof host - 1] = '\0';
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
		rnd = (uint32_t)mono_us();
	snprintf(w->worker_id, sizeof w->worker_id, "%s:%d:%08x", host, (int)getpid(), rnd);
}

static bool signals_setup(worker *w, hr_err *err)
{
	if (pipe2(w->sigpipe, O_CLOEXEC | O_NONBLOCK) != 0)
		return hr_fail(err, HR_ERR_IO, NULL, "pipe: %s", strerror(errno));
	signal_fd = w->sigpipe[1];
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return true;
}

/* ---- drain ---- */

static void begin_drain(worker *w)
{
	w->draining = true;
	w->drain_deadline_ms = mono_ms() + w->s->drain_timeout_ms;
	uint32_t started = w->lists[L_ACTIVE].n + w->lists[L_WAITING].n + w->lists[L_DONE].n, back = 0;
	while (w->lists[L_QUEUED].head) {
		wk_lease *x = w->lists[L_QUEUED].head;
		hand_back(x->ln, x->b.lease_id);
		lease_free(w, x);
		back++;
	}
	hr_info("draining: handing back %u unstarted lease(s), finishing %u", back, started);
	for (int i = 0; i < w->nlinks; i++)
		send_bye(w, &w->links[i]);
}

static bool drained(const worker *w)
{
	if (!w->draining || leases_held(w) != 0 || w->done.n != 0)
		return false;
	/* An unsent BYE does not hold us while disconnected: unanswered leases
	 * are re-dispatched when they expire anyway. */
	for (int i = 0; i < w->nlinks; i++)
		if (w->links[i].nbye != 0 && w->links[i].handshaken)
			return false;
	return true;
}

/* ---- the loop ---- */

static void flush_results(worker *w, long long now, long long *next_due)
{
	wk_lease *x = w->lists[L_DONE].head;
	while (x) {
		wk_lease *next = x->next;
		if (flush_lease(w, x)) {
			x->ln->credit_owed++;
			w->recent_link[w->recent_pos] = (uint8_t)x->ln->idx;
			w->recent[w->recent_pos] = x->b.lease_id;
			w->recent_pos = (w->recent_pos + 1) % RECENT_LEASES;
			if (w->recent_n < RECENT_LEASES)
				w->recent_n++;
			lease_free(w, x);
		}
		x = next;
	}
	for (int s = L_ACTIVE; s <= L_WAITING; s++) {
		for (x = w->lists[s].head; x; x = x->next) {
			if (!x->npending)
				continue;
			long long due = x->first_pending_ms + PARTIAL_FLUSH_MS;
			if ((now >= due || x->npending >= PARTIAL_FLUSH_COUNT) && flush_lease(w, x))
				continue;
			if (due < *next_due)
				*next_due = due;
		}
	}
	/* Results that could not go out (no connection) are retried on the partial-flush tick. */
	if (w->lists[L_DONE].n && now + PARTIAL_FLUSH_MS < *next_due)
		*next_due = now + PARTIAL_FLUSH_MS;
}

static void update_gauges(worker *w)
{
	wk_render_stats rs = wk_render_stats_get(w->render);
	uint32_t inflight = 0;
	for (int k = 0; k < WK_TR_COUNT; k++)
		if (w->tr[k])
			inflight += w->tr[k]->inflight;
	wk_metrics_gauges g = {
		.leases_held = leases_held(w),
		.inflight = inflight,
		.renders = rs.renders,
		.render_errors = rs.errors,
		.cache_entries = rs.cache_entries,
		.cache_hits = rs.cache_hits,
		.cache_misses = rs.cache_misses,
		.connections = wk_curlio_connects(w->io),
	};
	wk_metrics_gauges_set(w->metrics, &g);
	bool up = true; /* every scheduler listed: each serves tenants only it serves */
	for (int i = 0; i < w->nlinks; i++)
		up = up && w->links[i].handshaken && w->links[i].alive;
	wk_metrics_connected(w->metrics, up);
}

/* HELLO, BYE, CREDIT and HEARTBEAT as due on one link; lowers *next_due. */
static void link_turn(worker *w, slink *ln, long long now, bool beat, long long *next_due)
{
	if (ln->need_hello && now >= ln->next_hello_ms)
		send_hello(w, ln);
	if (ln->need_hello && ln->next_hello_ms < *next_due)
		*next_due = ln->next_hello_ms;
	if (w->draining && ln->nbye)
		send_bye(w, ln);
	if (ln->credit_owed && !w->draining && !ln->need_hello) {
		hr_credit c = {.credit = ln->credit_owed};
		hr_wire_encode_credit(&w->out, &c);
		if (send_out(w, ln))
			ln->credit_owed = 0;
	}
	if (beat) {
		hr_wire_encode_heartbeat(&w->out);
		(void)send_out(w, ln); /* a heartbeat that cannot go out is not worth keeping */
	}
	if (ln->alive && ln->last_heard_ms && now - ln->last_heard_ms > HR_WIRE_DEAD_MS) {
		uint32_t held = ln->held;
		hr_warn("scheduler=%s silent for %d ms; keeping %u lease(s), waiting for it", ln->ep,
			HR_WIRE_DEAD_MS, held);
		ln->alive = false;
	}
}

static void run_loop(worker *w)
{
	zmq_pollitem_t items[MAX_POLL];
	for (;;) {
		long long now = mono_ms();
		long long next_due = w->last_heartbeat_ms + HEARTBEAT_MS;

		if (signals_seen && !w->draining)
			begin_drain(w);
		if (w->draining && now >= w->drain_deadline_ms) {
			hr_warn("drain timeout after %ld ms: %u lease(s) unfinished", w->s->drain_timeout_ms,
				leases_held(w));
			return;
		}
		bool more = start_sends(w);
		/* New transfers go out now, not after a zero-timeout poll; sends that
		 * finish meanwhile free room for more at once. */
		if (wk_curlio_kick(w->io)) {
			reap(w);
			more = true;
		}
		flush_results(w, now, &next_due);
		bool beat = now - w->last_heartbeat_ms >= HEARTBEAT_MS;
		if (beat)
			w->last_heartbeat_ms = now;
		for (int i = 0; i < w->nlinks; i++)
			link_turn(w, &w->links[i], now, beat, &next_due);
		update_gauges(w);
		if (drained(w))
			return;

		/* Poll. */
		size_t n = 0;
		items[n++] = (zmq_pollitem_t){.fd = w->sigpipe[0], .events = ZMQ_POLLIN};
		long timeout = more ? 0 : (long)(next_due - now);
		for (int i = 0; i < w->nlinks; i++) {
			slink *ln = &w->links[i];
			items[n++] = (zmq_pollitem_t){.socket = ln->sock, .events = ZMQ_POLLIN};
			items[n++] = (zmq_pollitem_t){.socket = ln->mon, .events = ZMQ_POLLIN};
			if (ln->alive && ln->last_heard_ms) {
				long dead_in = (long)(ln->last_heard_ms + HR_WIRE_DEAD_MS + 1 - now);
				if (dead_in < timeout)
					timeout = dead_in;
			}
		}
		size_t ncurl = wk_curlio_pollitems(w->io, items + n, MAX_POLL - n);
		if (w->draining && w->drain_deadline_ms - now < timeout)
			timeout = (long)(w->drain_deadline_ms - now);
		long ct = wk_curlio_timeout(w->io);
		if (ct >= 0 && ct < timeout)
			timeout = ct;
		if (timeout < 0)
			timeout = 0;
		int rc = zmq_poll(items, (int)(n + ncurl), timeout);
		if (rc < 0 && errno != EINTR)
			hr_fatal("zmq_poll: %s", zmq_strerror(errno));
		if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
			char buf[16];
			while (read(w->sigpipe[0], buf, sizeof buf) > 0)
				;
		}
		for (int i = 0; i < w->nlinks; i++) {
			read_monitor(&w->links[i]);
			read_frames(w, &w->links[i]);
		}
		wk_curlio_act(w->io, rc > 0 ? items + n : NULL, rc > 0 ? ncurl : 0);
		reap(w);
	}
}

static void worker_free(worker *w)
{
	/* Transports first: in-flight sends (drain timeout) come back on `done`. */
	for (int k = 0; k < WK_TR_COUNT; k++)
		if (w->tr[k])
			w->tr[k]->ops->free(w->tr[k]);
	while (w->done.head)
		recycle(w, wk_sendq_pop(&w->done));
	for (int s = 0; s < L_NSTATES; s++)
		while (w->lists[s].head)
			lease_free(w, w->lists[s].head);
	while (w->free_sends) {
		wk_send *s = w->free_sends;
		w->free_sends = s->next;
		wk_message_free(&s->msg);
		hr_free(s);
	}
	wk_curlio_free(w->io);
	wk_providers_free(w->providers);
	wk_render_free(w->render);
	for (int i = 0; i < w->nlinks; i++) {
		slink *ln = &w->links[i];
		if (ln->mon)
			zmq_close(ln->mon);
		if (ln->sock) {
			/* Give the last RESULTS and BYE a moment to leave. */
			int linger = 2000;
			zmq_setsockopt(ln->sock, ZMQ_LINGER, &linger, sizeof linger);
			zmq_close(ln->sock);
		}
		hr_free(ln->ep);
		hr_free(ln->bye);
	}
	if (w->zctx)
		zmq_ctx_term(w->zctx);
	wk_metrics_free(w->metrics);
	hr_buf_free(&w->out);
	hr_free(w->res_scratch);
	if (w->sigpipe[0] >= 0) {
		close(w->sigpipe[0]);
		close(w->sigpipe[1]);
	}
}

int wk_run(const wk_settings *s)
{
	worker w = {.s = s, .sigpipe = {-1, -1}};
	hr_err err = {0};
	int status = 1;
	make_worker_id(&w);
	w.topts = (wk_transport_opts){.concurrency = s->concurrency, .smtp_timeout_ms = s->smtp_timeout_ms,
				      .http_timeout_ms = s->http_timeout_ms, .channel = s->channel};
	w.providers = wk_providers_new(64);
	w.render = wk_render_new(1024, 16u << 20);
	wk_render_set_public_url(w.render, s->track_public_url);
	w.io = wk_curlio_new((long)s->concurrency * 2 + 8);
	w.metrics = wk_metrics_new(s->channel, s->lane);
	if (!signals_setup(&w, &err) || !wk_metrics_start(w.metrics, s->metrics_port, &err) ||
	    !zmq_setup(&w, &err))
		goto fail;
	hr_info("started worker_id=%s channel=%s lane=%s scheduler=%s credit=%u concurrency=%u metrics_port=%d",
		w.worker_id, hr_channel_name(s->channel), hr_lane_name(s->lane), s->scheduler, s->credit,
		s->concurrency, wk_metrics_port(w.metrics));
	run_loop(&w);
	hr_info("drained: exiting");
	status = 0;
	worker_free(&w);
	return status;
fail:
	hr_warn("%s", err.msg);
	worker_free(&w);
	return status;
}
