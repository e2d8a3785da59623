/*
 * dispatch.c -- herald-scheduler's loop: workers, leases, dispatch, results.
 *
 * One thread.  Each turn: take what the workers sent (HELLO, CREDIT,
 * RESULTS, HEARTBEAT, BYE) from the two ROUTER sockets (transactional lane,
 * bulk lane), hear NOTIFYs, promote due retries and batches, expire dead
 * workers and overdue leases, load batches for tenants with room, then
 * dispatch: the transactional lane first, always; within a lane and channel,
 * tenants in deficit-round-robin order (fair.c); every lease only as large
 * as the rate limiter (ratelimit.c) grants for all its scopes -- tenant,
 * tenant x channel, agency, provider account, and for email each
 * recipient's domain.  A lease goes to the worker of that lane and channel
 * with the most credit.
 *
 * A message's state is changed only by msg_set(), which refuses illegal
 * moves; see sched.h for the states.  Final results go to the lander
 * thread; temporary failures wait in the tenant's retry heap with
 * exponential backoff and jitter (or the provider's Retry-After) and are
 * dead-lettered after max_attempts; throttling is not a failure: it slows
 * the account's limiter (AIMD) and the message waits, attempts unchanged.
 *
 * Several schedulers: only tenants of shards this one owns are loaded and
 * dispatched (owner.h; tick in sched_run, hooks at the end of this file).  A
 * shard being given back keeps its leases' results flowing but gets no new
 * lease; once nothing of it is out and its results are landed, its work is
 * forgotten and the shard unlocked for the next owner.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <zmq.h>

#include "alloc.h"
#include "log.h"
#include "metrics.h"
#include "model.h"

int64_t store_promote_future(tenant *t, int64_t now);

int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *state_name(int st)
{
	static const char *const names[] = {"pending", "leased", "waiting", "done"};
	return st >= 0 && st <= 3 ? names[st] : "?";
}

/* The one place a message changes state. */
static void msg_set(batch *b, int idx, int to)
{
	int from = b->state[idx];
	static const bool legal[4][4] = {
		/* to:      pending leased waiting done */
		/* pending */ {false, true, false, true},
		/* leased  */ {true, false, true, true},
		/* waiting */ {true, false, false, true},
		/* done    */ {false, false, false, false},
	};
	if (!legal[from][to])
		hr_panic("scheduler: message %lld: illegal move %s -> %s", (long long)(b->id * 4096 + idx),
			 state_name(from), state_name(to));
	b->state[idx] = (uint8_t)to;
}

/* ---- ready lists and backlog ------------------------------------------- */

static void ready_push(sched *s, batch *b)
{
	if (b->ready)
		return;
	tenant *t = b->t;
	int l = b->lane - 1, c = b->channel;
	b->ready = true;
	b->next = NULL;
	if (t->tail[l][c])
		t->tail[l][c]->next = b;
	else
		t->head[l][c] = b;
	t->tail[l][c] = b;
	(void)s;
}

/* The loop serves t: its shard is owned and not being given back. */
static bool serving(const sched *s, const tenant *t)
{
	return owner_shard_state(s->owner, t->shard) == SHARD_OWNED;
}

static void backlog_add(sched *s, batch *b, int64_t delta)
{
	tenant *t = b->t;
	int l = b->lane - 1, c = b->channel;
	t->pending[l][c] = (uint64_t)((int64_t)t->pending[l][c] + delta);
	/* A tenant being handed over is out of the round: no new leases. */
	hr_fair_set_backlog(s->fair[l][c], t->id, serving(s, t) ? t->pending[l][c] : 0);
}

/* A message became pending again (lease expired, retry due, handed back). */
static void msg_repend(sched *s, batch *b, int idx)
{
	msg_set(b, idx, MSG_PENDING);
	if (idx < b->cursor)
		b->cursor = idx;
	backlog_add(s, b, 1);
	ready_push(s, b);
}

/* ---- completion and low water ------------------------------------------ */

static landed *outq;
static int noutq, capoutq;
static uint64_t npushed; /* items ever pushed; the lander lands them in this order */

static void out_push(tenant *t, const landed *x)
{
	if (noutq == capoutq) {
		capoutq = capoutq ? capoutq * 2 : 1024;
		outq = hr_realloc(outq, (size_t)capoutq * sizeof *outq);
	}
	outq[noutq++] = *x;
	t->out_seq = ++npushed; /* landed once lander_done() reaches it */
}

void batch_free(batch *b)
{
	for (int i = 0; i < b->n; i++) {
		hr_free(b->address[i]);
		hr_free(b->data[i]);
	}
	hr_free(b->address);
	hr_free(b->data);
	hr_free(b->state);
	hr_free(b->attempts);
	hr_free(b->content);
	hr_free(b->provider);
	if (b->provider_json) {
		memset(b->provider_json, 0, strlen(b->provider_json)); /* it holds secrets */
		hr_free(b->provider_json);
	}
	hr_free(b->scope_account);
	hr_free(b->scope_sender);
	hr_free(b);
}

static int64_t low_water(const tenant *t)
{
	int64_t low = t->last_seen + 1;
	for (const batch *b = t->all; b; b = b->all_next)
		if (!b->complete && b->id < low)
			low = b->id;
	if (t->ndue > 0 && t->due_ids[t->duehead] < low)
		low = t->due_ids[t->duehead];
	for (int i = 0; i < t->ndue; i++)
		if (t->due_ids[t->duehead + i] < low)
			low = t->due_ids[t->duehead + i];
	for (int i = 0; i < t->nfuture; i++)
		if (t->future[i].id < low)
			low = t->future[i].id;
	for (int i = 0; i < t->ngaps; i++) /* ids a transaction may still commit (store.c) */
		if (t->gaps[i].lo < low)
			low = t->gaps[i].lo;
	return low;
}

/* Free complete, unreferenced batches; tell the lander the new low water. */
static void tenant_settle(sched *s, tenant *t)
{
	batch **pp = &t->all;
	bool freed = false;
	while (*pp) {
		batch *b = *pp;
		if (b->complete && b->refs == 0 && !b->ready) {
			*pp = b->all_next;
			batch_free(b);
			t->loaded--;
			freed = true;
		} else {
			pp = &b->all_next;
		}
	}
	if (freed) {
		landed m = {.t = t, .low_water = true, .message_id = low_water(t)};
		out_push(t, &m);
	}
}

static void msg_final(sched *s, batch *b, int idx, uint8_t status, const hr_result *r, const char *reason)
{
	int prev = b->state[idx];
	if (prev == MSG_PENDING)
		backlog_add(s, b, -1);
	msg_set(b, idx, MSG_DONE);
	landed x = {
		.t = b->t,
		.message_id = b->id * 4096 + idx,
		.status = status,
		.attempts = b->attempts[idx],
		.latency_us = r ? r->latency_us : 0,
		.provider_id = r && r->provider_id.len ? hr_strndup(r->provider_id.p, r->provider_id.len) : NULL,
		.reason = reason ? hr_strdup(reason)
			 : r && r->reason.len ? hr_strndup(r->reason.p, r->reason.len) : NULL,
		.address = status == HR_RES_BOUNCED ? hr_strdup(b->address[idx]) : NULL,
		.channel = b->channel,
		.bulk = b->lane == HR_LANE_BULK,
	};
	out_push(b->t, &x);
	s->results[status < 8 ? status : 0]++;
	if (--b->remaining == 0) {
		b->complete = true;
		tenant_settle(s, b->t);
	}
}

/*
 * The sender identity a batch is sent as: the provider account's "sender"
 * (an SMS sender id, a from-domain), else for email the domain of a literal
 * From address in the content (a From built by Liquid markup is not known
 * before rendering, and then only the account's identity applies).
 */
static char *sender_scope(const tenant *t, const batch *b)
{
	char ident[256] = "";
	json_t *p = b->provider_json ? json_loads(b->provider_json, 0, NULL) : NULL;
	const char *v = p ? json_string_value(json_object_get(p, "sender")) : NULL;
	if (v)
		snprintf(ident, sizeof ident, "%s", v);
	json_decref(p);
	if (!ident[0] && b->channel == HR_CH_EMAIL && b->content) {
		json_t *c = json_loads(b->content, 0, NULL);
		const char *from = c ? json_string_value(json_object_get(c, "from")) : NULL;
		const char *at = from && !strstr(from, "{{") && !strstr(from, "{%") ? strrchr(from, '@') : NULL;
		if (at) {
			size_t n = strcspn(at + 1, "> \t\"");
			if (n > 0 && n < sizeof ident)
				snprintf(ident, sizeof ident, "%.*s", (int)n, at + 1);
		}
		json_decref(c);
	}
	if (!ident[0])
		return NULL;
	for (char *q = ident; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q - 'A' + 'a');
	return hr_sprintf("sender:%u/%s", t->id, ident);
}

void tenant_add_batch(sched *s, tenant *t, batch *b)
{
	/* Keep t->all sorted by id: promoted future batches can be older. */
	batch **pp = &t->all;
	while (*pp && (*pp)->id < b->id)
		pp = &(*pp)->all_next;
	b->all_next = *pp;
	*pp = b;
	t->loaded++;
	if (b->remaining == 0) {
		b->complete = true;
		tenant_settle(s, t);
		return;
	}
	b->scope_sender = sender_scope(t, b);
	backlog_add(s, b, b->remaining); /* msg_final below takes back what it finishes */
	if (!b->provider_json || !b->channel || !b->lane) {
		char reason[256];
		snprintf(reason, sizeof reason, "provider account '%s' is not configured for tenant %s",
			 b->provider, t->slug);
		b->refs++; /* the last msg_final completes the batch: keep it alive through the loop */
		for (int i = 0; i < b->n; i++)
			if (b->state[i] == MSG_PENDING) {
				b->attempts[i] = 0;
				msg_final(s, b, i, HR_RES_PERMANENT, NULL, reason);
			}
		b->refs--;
		if (b->complete)
			tenant_settle(s, t);
		return;
	}
	ready_push(s, b);
}

/* ---- retries ------------------------------------------------------------ */

static void retry_push(tenant *t, batch *b, int idx, int64_t not_before)
{
	if (t->nretry == t->capretry) {
		t->capretry = t->capretry ? t->capretry * 2 : 64;
		t->retry = hr_realloc(t->retry, (size_t)t->capretry * sizeof *t->retry);
	}
	int i = t->nretry++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (t->retry[p].not_before_ms <= not_before)
			break;
		t->retry[i] = t->retry[p];
		i = p;
	}
	t->retry[i] = (retry_item){not_before, b, idx};
	b->refs++;
}

static void retry_pop(tenant *t)
{
	retry_item last = t->retry[--t->nretry];
	int n = t->nretry, i = 0;
	for (;;) {
		int c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && t->retry[c + 1].not_before_ms < t->retry[c].not_before_ms)
			c++;
		if (t->retry[c].not_before_ms >= last.not_before_ms)
			break;
		t->retry[i] = t->retry[c];
		i = c;
	}
	if (n > 0)
		t->retry[i] = last;
}

static void retries_due(sched *s, tenant *t, int64_t now)
{
	while (t->nretry > 0 && t->retry[0].not_before_ms <= now) {
		retry_item it = t->retry[0];
		retry_pop(t);
		it.b->refs--;
		if (it.b->state[it.idx] == MSG_WAITING)
			msg_repend(s, it.b, it.idx);
		else if (it.b->complete)
			tenant_settle(s, t);
	}
}

static int64_t backoff_ms(sched *s, int attempt, uint32_t retry_after_ms)
{
	int64_t d = s->retry_base_ms << (attempt > 12 ? 12 : attempt - 1);
	if (d > 600000)
		d = 600000;
	/* jitter: 50-100 % of the step, so retries of one batch spread out */
	d = d / 2 + (int64_t)(rand() % (int)(d / 2 + 1));
	if ((int64_t)retry_after_ms > d)
		d = retry_after_ms;
	return d;
}

/* ---- leases ------------------------------------------------------------- */

static lease *lease_find(sched *s, uint64_t id)
{
	for (lease *l = s->leases[id % 4096]; l; l = l->hnext)
		if (l->id == id)
			return l;
	return NULL;
}

static void lease_drop(sched *s, lease *l)
{
	lease **pp = &s->leases[l->id % 4096];
	while (*pp != l)
		pp = &(*pp)->hnext;
	*pp = l->hnext;
	if (l->w) {
		lease **wp = &l->w->leases;
		while (*wp != l)
			wp = &(*wp)->wnext;
		*wp = l->wnext;
		l->w->nleases--;
	}
	l->b->refs--;
	batch *b = l->b;
	hr_free(l->idx);
	hr_free(l->done);
	hr_free(l);
	if (b->complete)
		tenant_settle(s, b->t);
}

/* Give back what a lease holds unanswered (dead worker, overdue, BYE). */
static void lease_release(sched *s, lease *l)
{
	for (int i = 0; i < l->n; i++)
		if (!l->done[i] && l->b->state[l->idx[i]] == MSG_LEASED)
			msg_repend(s, l->b, l->idx[i]);
	lease_drop(s, l);
}

static int lease_slot(const lease *l, int idx)
{
	int lo = 0, hi = l->n - 1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		if (l->idx[mid] == idx)
			return mid;
		if (l->idx[mid] < idx)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* ---- workers ------------------------------------------------------------ */

static worker *worker_find(sched *s, int lane, const void *id, size_t len)
{
	for (worker *w = s->workers; w; w = w->next)
		if (w->lane == lane && w->idlen == len && memcmp(w->identity, id, len) == 0)
			return w;
	return NULL;
}

static void worker_remove(sched *s, worker *w)
{
	while (w->leases)
		lease_release(s, w->leases);
	worker **pp = &s->workers;
	while (*pp != w)
		pp = &(*pp)->next;
	*pp = w->next;
	hr_free(w->identity);
	hr_free(w->worker_id);
	hr_free(w);
}

static void send_frame(sched *s, worker *w, const hr_buf *b)
{
	void *sock = s->router[w->lane];
	if (zmq_send(sock, w->identity, w->idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(sock, b->data, b->len, ZMQ_DONTWAIT) < 0)
		hr_warn("scheduler: send to worker=%s failed: %s", w->worker_id, zmq_strerror(zmq_errno()));
}

static worker *pick_worker(sched *s, int lane, int channel)
{
	worker *best = NULL;
	for (worker *w = s->workers; w; w = w->next)
		if (w->lane == lane && w->channel == channel && !w->dead && w->credit > 0 &&
		    (!best || w->credit > best->credit))
			best = w;
	return best;
}

/* ---- dispatch ----------------------------------------------------------- */

static hr_buf frame;
static hr_job *jobs;
static int capjobs;
static int64_t next_wake_ns;

static const char *email_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : addr;
}

static void ready_remove(tenant *t, int lane, int ch, batch *b)
{
	batch *prev = NULL;
	for (batch *x = t->head[lane][ch]; x; prev = x, x = x->next)
		if (x == b) {
			if (prev)
				prev->next = b->next;
			else
				t->head[lane][ch] = b->next;
			if (t->tail[lane][ch] == b)
				t->tail[lane][ch] = prev;
			b->ready = false;
			b->next = NULL;
			return;
		}
}

/* Lease up to `want` pending messages of batch b to w; returns how many. */
static uint32_t lease_from(sched *s, tenant *t, batch *b, int lane, int ch, uint32_t want, worker *w)
{
	if ((int)want > capjobs) {
		capjobs = (int)want * 2;
		jobs = hr_realloc(jobs, (size_t)capjobs * sizeof *jobs);
	}
	uint16_t *idx = hr_malloc(want * sizeof *idx);
	uint32_t n = 0;
	char scope_tc[48];
	snprintf(scope_tc, sizeof scope_tc, "tenant:%u/%s", t->id, hr_channel_name(ch));
	const char *scopes[6] = {t->scope_tenant, scope_tc, t->scope_agency, b->scope_account, NULL, NULL};
	int nbase = 4;
	if (b->scope_sender)
		scopes[nbase++] = b->scope_sender;
	int64_t tnow = now_ns();
	while (n < want && b->cursor < b->n) {
		int i = b->cursor;
		if (b->state[i] != MSG_PENDING) {
			b->cursor++;
			continue;
		}
		uint64_t wait = 0;
		char dscope[300];
		int ns = nbase;
		if (ch == HR_CH_EMAIL) {
			snprintf(dscope, sizeof dscope, "domain:%s", email_domain(b->address[i]));
			scopes[ns++] = dscope;
		}
		/* Take one token per message: pacing stays even and per-domain scopes apply. */
		if (hr_limiter_take(s->limiter, scopes, ns, 1, (uint64_t)tnow, &wait) == 0) {
			s->rate_waits++;
			if (!next_wake_ns || tnow + (int64_t)wait < next_wake_ns)
				next_wake_ns = tnow + (int64_t)wait;
			break;
		}
		idx[n++] = (uint16_t)i;
		b->cursor++;
	}
	if (b->cursor >= b->n)
		ready_remove(t, lane, ch, b); /* scanned to the end: back when something re-pends */
	if (n == 0) {
		hr_free(idx);
		return 0;
	}
	lease *l = hr_calloc(1, sizeof *l);
	l->id = ++s->next_lease;
	l->b = b;
	l->w = w;
	l->n = (int)n;
	l->idx = idx;
	l->done = hr_calloc(n, 1);
	l->deadline_ms = now_ms() + s->lease_timeout_ms;
	l->sent_ns = tnow;
	l->hnext = s->leases[l->id % 4096];
	s->leases[l->id % 4096] = l;
	l->wnext = w->leases;
	w->leases = l;
	w->nleases++;
	b->refs++;
	for (uint32_t k = 0; k < n; k++) {
		msg_set(b, idx[k], MSG_LEASED);
		b->attempts[idx[k]]++;
		jobs[k] = (hr_job){
			.message_id = (uint64_t)(b->id * 4096 + idx[k]),
			.attempt = b->attempts[idx[k]],
			.address = {b->address[idx[k]], (uint32_t)strlen(b->address[idx[k]])},
			.data = {b->data[idx[k]], (uint32_t)strlen(b->data[idx[k]])},
		};
	}
	backlog_add(s, b, -(int64_t)n);
	hr_job_batch jb = {
		.lease_id = l->id,
		.lease_deadline = (uint64_t)l->deadline_ms,
		.tenant_id = t->id,
		.tenant = {t->slug, (uint32_t)strlen(t->slug)},
		.channel = b->channel,
		.lane = b->lane,
		.template_id = (uint64_t)b->template_id,
		.template_version = (uint32_t)b->template_version,
		.content = {b->content, (uint32_t)strlen(b->content)},
		.provider = {b->provider_json, (uint32_t)strlen(b->provider_json)},
		.njobs = n,
		.jobs = jobs,
	};
	if (s->trace)
		hr_info("trace: lease=%llu tenant=%s batch=%lld n=%u first=%d cursor=%d/%d worker=%s credit=%u "
			"at_us=%lld",
			(unsigned long long)l->id, t->slug, (long long)b->id, n, idx[0], b->cursor, b->n,
			w->worker_id, w->credit, (long long)wall_us());
	hr_buf_reset(&frame);
	hr_wire_encode_jobs(&frame, &jb);
	send_frame(s, w, &frame);
	w->credit--;
	s->dispatched[lane] += n;
	return n;
}

/*
 * Dispatch one lease of tenant t to w: from its first ready batch the limiter
 * lets through.  A batch whose account or domain is held must not block the
 * tenant's batches for other accounts, so a few batches further down the
 * ready list are tried too.  Returns the messages leased.
 */
static uint32_t dispatch_one(sched *s, tenant *t, int lane, int ch, uint32_t allowance, worker *w)
{
	uint32_t want = allowance < (uint32_t)s->lease_size[lane] ? allowance : (uint32_t)s->lease_size[lane];
	batch *b = t->head[lane][ch];
	for (int tries = 0; b && tries < 8; tries++) {
		batch *next = b->next;
		uint32_t n = lease_from(s, t, b, lane, ch, want, w);
		if (n > 0)
			return n;
		b = next;
	}
	return 0;
}

static void dispatch_lane(sched *s, int lane)
{
	for (int ch = 1; ch < NCHANNELS; ch++) {
		hr_fair *f = s->fair[lane][ch];
		uint32_t stalls = 0;
		worker *w;
		while ((w = pick_worker(s, lane, ch)) != NULL) {
			uint32_t tid, allow;
			if (!hr_fair_next(f, &tid, &allow))
				break;
			tenant *t = tenant_find(s, tid);
			uint32_t used = t && serving(s, t) ? dispatch_one(s, t, lane, ch, allow, w) : 0;
			hr_fair_charge(f, tid, used);
			if (used == 0) {
				/* rate-limited or nothing ready: let the others go; stop after a full round */
				if (++stalls > hr_fair_active(f))
					break;
			} else {
				stalls = 0;
			}
		}
	}
}

/* ---- results ------------------------------------------------------------ */

static batch *batch_of(tenant *t, int64_t message_id)
{
	int64_t id = message_id / 4096;
	for (batch *b = t->all; b; b = b->all_next)
		if (b->id == id)
			return b;
	return NULL;
}

static void on_results(sched *s, worker *w, const void *data, size_t len)
{
	hr_result_batch rb;
	hr_err err = {0};
	if (!hr_wire_decode_results(data, len, &rb, &err)) {
		hr_warn("scheduler: worker=%s: bad RESULTS frame dropped: %s", w->worker_id, err.msg);
		return;
	}
	lease *l = lease_find(s, rb.lease_id);
	tenant *t = l ? l->b->t : tenant_find(s, rb.tenant_id);
	int64_t tnow = now_ns(), wall = now_ms();
	if (l)
		for (uint32_t i = 0; i < rb.nresults; i++)
			metrics_observe(s, l->b->lane - 1, (double)(tnow - l->sent_ns) / 1e6);
	for (uint32_t i = 0; t && i < rb.nresults; i++) {
		const hr_result *r = &rb.results[i];
		batch *b = l ? l->b : batch_of(t, (int64_t)r->message_id);
		if (!b || (int64_t)r->message_id / 4096 != b->id)
			continue; /* not ours (any more): its batch is finished */
		int idx = (int)((int64_t)r->message_id % 4096);
		if (idx >= b->n)
			continue;
		if (l) {
			int slot = lease_slot(l, idx);
			if (slot < 0 || l->done[slot])
				continue; /* not in this lease, or answered twice */
			l->done[slot] = 1;
			l->answered++;
		}
		int st = b->state[idx];
		if (st == MSG_DONE)
			continue; /* answered already through another lease */
		/*
		 * A final answer counts whenever it comes: the provider has the
		 * message.  A temporary one (retry, throttled) only from a live lease
		 * whose message is still leased: after a lease expired, the message
		 * is pending, waiting or leased again, and the new owner decides.
		 */
		bool final = r->status == HR_RES_SENT || r->status == HR_RES_PERMANENT ||
			     r->status == HR_RES_BOUNCED;
		if (!final && (!l || st != MSG_LEASED))
			continue;
		switch (r->status) {
		case HR_RES_SENT:
			hr_limiter_succeeded(s->limiter, b->scope_account, 1, (uint64_t)tnow);
			msg_final(s, b, idx, HR_RES_SENT, r, NULL);
			break;
		case HR_RES_PERMANENT:
		case HR_RES_BOUNCED:
			msg_final(s, b, idx, r->status, r, NULL);
			break;
		case HR_RES_THROTTLED:
			s->throttled++;
			hr_limiter_throttled(s->limiter, b->scope_account, (uint64_t)tnow,
					     l ? (uint64_t)l->sent_ns : (uint64_t)tnow, r->retry_after_ms);
			/* not an attempt: the provider asked us to wait, nothing failed */
			if (b->attempts[idx] > 0)
				b->attempts[idx]--;
			msg_set(b, idx, MSG_WAITING);
			retry_push(b->t, b, idx, wall + (r->retry_after_ms ? r->retry_after_ms : 100));
			break;
		case HR_RES_RETRY:
		default:
			if (b->attempts[idx] >= s->max_attempts) {
				char reason[600];
				snprintf(reason, sizeof reason, "dead-lettered after %d attempts; last: %.*s",
					 b->attempts[idx], (int)(r->reason.len > 500 ? 500 : r->reason.len),
					 r->reason.p ? r->reason.p : "");
				s->dead_lettered++;
				msg_final(s, b, idx, 0, r, reason);
				break;
			}
			s->retried++;
			msg_set(b, idx, MSG_WAITING);
			retry_push(b->t, b, idx, wall + backoff_ms(s, b->attempts[idx], r->retry_after_ms));
			break;
		}
	}
	/* Capacity comes back through the worker's CREDIT messages, not here. */
	if (l && l->answered == l->n)
		lease_drop(s, l);
	hr_wire_results_free(&rb);
}

static void on_frame(sched *s, int lane, const void *id, size_t idlen, const void *data, size_t len)
{
	hr_err err = {0};
	hr_wire_type type;
	if (!hr_wire_peek(data, len, &type, &err)) {
		hr_warn("scheduler: bad frame on %s lane dropped: %s", hr_lane_name(lane + 1), err.msg);
		return;
	}
	worker *w = worker_find(s, lane, id, idlen);
	if (type == HR_W_HELLO) {
		hr_hello h;
		if (!hr_wire_decode_hello(data, len, &h, &err)) {
			hr_warn("scheduler: bad HELLO dropped: %s", err.msg);
			return;
		}
		if (h.lane != lane + 1 || h.channel < 1 || h.channel >= NCHANNELS) {
			hr_warn("scheduler: worker %.*s says lane %s on the %s endpoint: ignored",
				(int)h.worker_id.len, h.worker_id.p, hr_lane_name(h.lane), hr_lane_name(lane + 1));
			return;
		}
		if (!w) {
			w = hr_calloc(1, sizeof *w);
			w->identity = hr_malloc(idlen);
			memcpy(w->identity, id, idlen);
			w->idlen = idlen;
			w->lane = lane;
			w->next = s->workers;
			s->workers = w;
			hr_info("scheduler: worker=%.*s joined channel=%s lane=%s credit=%u", (int)h.worker_id.len,
				h.worker_id.p, hr_channel_name(h.channel), hr_lane_name(h.lane), h.credit);
		}
		hr_free(w->worker_id);
		w->worker_id = hr_strndup(h.worker_id.p, h.worker_id.len);
		w->channel = h.channel;
		/* HELLO states the whole credit: what it can hold minus what it holds. */
		w->credit = h.credit > (uint32_t)w->nleases ? h.credit - (uint32_t)w->nleases : 0;
		w->dead = false;
		w->last_seen_ms = now_ms();
		return;
	}
	if (!w) {
		/* A worker we forgot (we restarted): it must say HELLO again. */
		hr_buf b = {0};
		hr_wire_encode_heartbeat(&b);
		if (zmq_send(s->router[lane], id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
			(void)!zmq_send(s->router[lane], b.data, b.len, ZMQ_DONTWAIT);
		hr_buf_free(&b);
		if (type != HR_W_RESULTS)
			return;
		/* Results from before our restart still count: record them if we can. */
		worker tmp = {.worker_id = "unknown", .lane = lane};
		on_results(s, &tmp, data, len);
		return;
	}
	w->last_seen_ms = now_ms();
	switch (type) {
	case HR_W_RESULTS:
		on_results(s, w, data, len);
		break;
	case HR_W_CREDIT: {
		hr_credit c;
		if (hr_wire_decode_credit(data, len, &c, &err))
			w->credit += c.credit;
		else
			hr_warn("scheduler: bad CREDIT dropped: %s", err.msg);
		break;
	}
	case HR_W_HEARTBEAT:
		break;
	case HR_W_BYE: {
		hr_bye bye;
		if (!hr_wire_decode_bye(data, len, &bye, &err)) {
			hr_warn("scheduler: bad BYE dropped: %s", err.msg);
			break;
		}
		for (uint32_t i = 0; i < bye.nleases; i++) {
			lease *l = lease_find(s, bye.leases[i]);
			if (l && l->w == w)
				lease_release(s, l);
		}
		w->dead = true; /* draining: no new leases; results still accepted */
		w->credit = 0;
		hr_info("scheduler: worker=%s draining, handed back %u lease(s)", w->worker_id, bye.nleases);
		hr_wire_bye_free(&bye);
		break;
	}
	default:
		hr_warn("scheduler: worker=%s sent a %d frame: ignored", w->worker_id, (int)type);
	}
}

/* ---- housekeeping ------------------------------------------------------- */

static void housekeeping(sched *s)
{
	int64_t wall = now_ms();
	for (worker *w = s->workers, *nx; w; w = nx) {
		nx = w->next;
		if (wall - w->last_seen_ms > HR_WIRE_DEAD_MS) {
			hr_warn("scheduler: worker=%s silent for %lld ms: presumed dead, %d lease(s) re-dispatched",
				w->worker_id, (long long)(wall - w->last_seen_ms), w->nleases);
			s->expired += (uint64_t)w->nleases;
			worker_remove(s, w);
		}
	}
	for (int i = 0; i < 4096; i++)
		for (lease *l = s->leases[i], *nx; l; l = nx) {
			nx = l->hnext;
			if (l->deadline_ms < wall) {
				hr_warn("scheduler: lease %llu of worker=%s overdue: re-dispatched",
					(unsigned long long)l->id, l->w ? l->w->worker_id : "?");
				s->expired++;
				lease_release(s, l);
			}
		}
	for (int i = 0; i < 1024; i++)
		for (tenant *t = s->tenants[i]; t; t = t->hnext) {
			if (t->nfuture)
				store_promote_future(t, wall);
			if (t->nretry)
				retries_due(s, t, wall);
		}
}

static void heartbeat_all(sched *s)
{
	hr_buf b = {0};
	hr_wire_encode_heartbeat(&b);
	for (worker *w = s->workers; w; w = w->next)
		send_frame(s, w, &b);
	hr_buf_free(&b);
}

static void load_all(sched *s)
{
	store_poll_loads(s); /* reads that arrived, whatever tenant they are for */
	for (int i = 0; i < 1024; i++)
		for (tenant *t = s->tenants[i]; t; t = t->hnext) {
			if (!t->active || !serving(s, t))
				continue;
			int room = s->max_loaded - t->loaded;
			if (t->gaps_ended) { /* otherwise only a batch's end tells the lander */
				t->gaps_ended = false;
				landed m = {.t = t, .low_water = true, .message_id = low_water(t)};
				out_push(t, &m);
			}
			/* Gaps are read again each second even unannounced: a commit whose
			 * NOTIFY was lost, and so that ended transactions' gaps are dropped. */
			if (t->ngaps > 0 && now_ms() - t->gaps_checked_ms >= 1000)
				t->need_load = true;
			if (!(t->need_load || t->more_rows || t->ndue > 0)) /* room <= 0: transactional only */
				continue;
			hr_err err = {0};
			if (!store_load_batches(s, t, room, &err))
				hr_warn("scheduler: tenant=%s: loading work: %s", t->slug, err.msg);
		}
}

static void drain_socket(sched *s, int lane)
{
	for (int k = 0; k < 4096; k++) {
		zmq_msg_t id, body;
		zmq_msg_init(&id);
		if (zmq_msg_recv(&id, s->router[lane], ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&id);
			return;
		}
		zmq_msg_init(&body);
		if (!zmq_msg_more(&id) || zmq_msg_recv(&body, s->router[lane], ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&id);
			zmq_msg_close(&body);
			continue;
		}
		/* Swallow any extra frames: we speak one frame per message. */
		while (zmq_msg_more(&body)) {
			zmq_msg_t extra;
			zmq_msg_init(&extra);
			zmq_msg_recv(&extra, s->router[lane], ZMQ_DONTWAIT);
			zmq_msg_close(&extra);
		}
		on_frame(s, lane, zmq_msg_data(&id), zmq_msg_size(&id), zmq_msg_data(&body),
			 zmq_msg_size(&body));
		zmq_msg_close(&id);
		zmq_msg_close(&body);
	}
}

static void flush_out(sched *s)
{
	if (noutq) {
		lander_submit(s->lander, outq, noutq);
		noutq = 0;
	}
}

/* ---- shards: several schedulers (owner.h) -------------------------------- */

/* Start every tenant of a shard we just locked, like a restarted scheduler. */
static void hook_taken(void *arg, int shard)
{
	sched *s = arg;
	for (int i = 0; i < 1024; i++)
		for (tenant *t = s->tenants[i]; t; t = t->hnext) {
			hr_err err = {0};
			if (t->shard != shard || store_tenant_take(s, t, &err))
				continue;
			/* Low water unknown: recover from the first batch (slower, as correct). */
			hr_warn("scheduler: tenant=%s: taking it over: %s; recovering from the start", t->slug,
				err.msg);
			t->last_seen = 0;
			t->ngaps = 0;
			t->recover_until = INT64_MAX;
			t->recovering = t->need_load = true;
		}
}

/* In or out of the fair rounds: a draining shard gets no new lease. */
static void hook_draining(void *arg, int shard, bool draining)
{
	sched *s = arg;
	for (int i = 0; i < 1024; i++)
		for (tenant *t = s->tenants[i]; t; t = t->hnext)
			if (t->shard == shard)
				for (int l = 0; l < NLANES; l++)
					for (int c = 1; c < NCHANNELS; c++)
						hr_fair_set_backlog(s->fair[l][c], t->id, draining ? 0 : t->pending[l][c]);
}

/*
 * Nothing of the shard in flight: no lease out (results still come back for
 * those), no batch loading, and every result we made for its tenants landed
 * -- the next owner's recovery skips exactly the messages with a result, so
 * an unlanded one would be sent twice.
 */
static bool hook_drained(void *arg, int shard)
{
	sched *s = arg;
	for (int i = 0; i < 4096; i++)
		for (lease *l = s->leases[i]; l; l = l->hnext)
			if (l->b->t->shard == shard)
				return false;
	/* A load in flight lands only when polled, and loads are polled while
	 * loading others -- which may never happen if every other tenant is idle. */
	store_poll_loads(s);
	uint64_t done = lander_done(s->lander);
	for (int i = 0; i < 1024; i++)
		for (tenant *t = s->tenants[i]; t; t = t->hnext)
			if (t->shard == shard && (store_tenant_loading(t) || t->out_seq > done))
				return false;
	return true;
}

/* Another scheduler may own the shard now: forget its tenants' work. */
static void hook_released(void *arg, int shard)
{
	sched *s = arg;
	for (int i = 0; i < 1024; i++)
		for (tenant *t = s->tenants[i]; t; t = t->hnext) {
			if (t->shard != shard)
				continue;
			for (int l = 0; l < NLANES; l++)
				for (int c = 1; c < NCHANNELS; c++) {
					t->head[l][c] = t->tail[l][c] = NULL;
					t->pending[l][c] = 0;
					hr_fair_set_backlog(s->fair[l][c], t->id, 0);
				}
			while (t->all) {
				batch *b = t->all;
				t->all = b->all_next;
				batch_free(b);
			}
			t->loaded = 0;
			t->nretry = 0; /* waiting retries start over with the next owner */
			t->ndue = t->duehead = t->ndue_tx = t->nfuture = t->ngaps = 0;
			t->need_load = t->more_rows = t->recovering = false;
		}
}

/* Shared scopes (agency, domain) are split between the schedulers present. */
static void hook_peers(void *arg, int schedulers)
{
	sched *s = arg;
	hr_limiter_set_share(s->limiter, 1.0 / schedulers);
}

owner_hooks sched_owner_hooks(sched *s)
{
	return (owner_hooks){.arg = s, .taken = hook_taken, .draining = hook_draining, .drained = hook_drained,
			     .released = hook_released, .peers = hook_peers};
}

static void tick_failed(sched *s, const hr_err *err)
{
	/* Our shard locks live in this session: without it another scheduler may serve them. */
	if (PQstatus(s->db) != CONNECTION_OK)
		hr_fatal("scheduler: lost the database connection (and with it the shard locks): %s", err->msg);
	hr_warn("scheduler: rebalancing shards: %s", err->msg);
}

/* Take the tick's answer if it is there (wait: until it is). */
static void tick_poll(sched *s, bool wait)
{
	if (!owner_tick_pending(s->owner))
		return;
	flush_out(s); /* hook_drained counts what the lander has */
	hr_err err = {0};
	if (owner_tick_poll(s->owner, s->db, wait, &err) < 0)
		tick_failed(s, &err);
}

/* The loop's connection is about to run a statement: no tick may be out on it. */
void sched_db_sync(sched *s)
{
	if (s->owner)
		tick_poll(s, true);
}

/* Send the shard tick's read; its answer is taken in a later turn (tick_poll). */
static void rebalance(sched *s)
{
	if (owner_tick_pending(s->owner))
		return;
	hr_err err = {0};
	if (!owner_tick_send(s->owner, s->db, &err))
		tick_failed(s, &err);
}

/*
 * sched_trace: a loop turn that took longer than TURN_SLOW_US is logged with
 * the wall time of each phase and the thread's CPU time, which tells a busy
 * loop (CPU close to wall) from a blocked or descheduled one.
 */
#define TURN_SLOW_US 20000
enum { T_DRAIN_TX, T_DRAIN_BULK, T_NOTIFY, T_HOUSE, T_OTHER, T_LOAD, T_DISPATCH_TX, T_DISPATCH_BULK, T_FLUSH, T_N };
static const char *const turn_phase[T_N] = {"drain_tx", "drain_bulk", "notify",	"house",
					    "other",	"load",	      "disp_tx", "disp_bulk", "flush"};
static int64_t turn_t0, turn_last, turn_cpu0, turn_us[T_N];

static int64_t thread_cpu_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void turn_begin(const sched *s)
{
	if (!s->trace)
		return;
	turn_t0 = turn_last = now_ns() / 1000;
	turn_cpu0 = thread_cpu_us();
	memset(turn_us, 0, sizeof turn_us);
}

static void turn_mark(const sched *s, int phase)
{
	if (!s->trace)
		return;
	int64_t t = now_ns() / 1000;
	turn_us[phase] += t - turn_last;
	turn_last = t;
}

static void turn_end(const sched *s)
{
	if (!s->trace || turn_last - turn_t0 < TURN_SLOW_US)
		return;
	char parts[512];
	size_t len = 0;
	for (int i = 0; i < T_N; i++)
		len += (size_t)snprintf(parts + len, sizeof parts - len, " %s=%lld", turn_phase[i],
					(long long)turn_us[i] / 1000);
	hr_info("trace: slow turn wall_ms=%lld cpu_ms=%lld%s", (long long)(turn_last - turn_t0) / 1000,
		(long long)(thread_cpu_us() - turn_cpu0) / 1000, parts);
}

int sched_run(sched *s);
int sched_run(sched *s)
{
	int64_t last_house = 0, last_beat = 0, last_metrics = 0, last_rebalance = now_ms();
	int64_t stop_at = 0;
	for (;;) {
		if (s->stopping && !stop_at) {
			hr_info("scheduler: stopping: no new leases; waiting for results of the ones out");
			stop_at = now_ms() + 10000;
		}
		if (stop_at) {
			int out = 0;
			for (int i = 0; i < 4096; i++)
				for (lease *l = s->leases[i]; l; l = l->hnext)
					out++;
			if (out == 0 || now_ms() > stop_at)
				break;
		}
		long timeout = 10;
		if (next_wake_ns) {
			int64_t d = (next_wake_ns - now_ns()) / 1000000;
			timeout = d < 0 ? 0 : d < 10 ? (long)d : 10;
		}
		/* The workers, NOTIFYs, and the reads in flight (store.c): a transactional
		 * batch is dispatched the moment its rows arrive. */
		zmq_pollitem_t items[3 + 17] = {
			{s->router[0], 0, ZMQ_POLLIN, 0},
			{s->router[1], 0, ZMQ_POLLIN, 0},
			{NULL, PQsocket(s->listen), ZMQ_POLLIN, 0},
		};
		int fds[17], nfds = store_poll_fds(fds, 16);
		if (owner_tick_pending(s->owner))
			fds[nfds++] = PQsocket(s->db);
		for (int i = 0; i < nfds; i++)
			items[3 + i] = (zmq_pollitem_t){NULL, fds[i], ZMQ_POLLIN, 0};
		if (zmq_poll(items, 3 + nfds, timeout) < 0 && zmq_errno() != EINTR)
			hr_fatal("scheduler: zmq_poll: %s", zmq_strerror(zmq_errno()));
		turn_begin(s);
		if (items[0].revents & ZMQ_POLLIN)
			drain_socket(s, 0);
		turn_mark(s, T_DRAIN_TX);
		if (items[1].revents & ZMQ_POLLIN)
			drain_socket(s, 1);
		turn_mark(s, T_DRAIN_BULK);
		if ((items[2].revents & ZMQ_POLLIN) && !store_poll_notify(s))
			hr_fatal("scheduler: lost the database connection: %s", PQerrorMessage(s->listen));
		turn_mark(s, T_NOTIFY);
		int64_t wall = now_ms();
		if (wall - last_house >= 10) {
			housekeeping(s);
			last_house = wall;
		}
		turn_mark(s, T_HOUSE);
		if (wall - last_beat >= 1000) {
			heartbeat_all(s);
			last_beat = wall;
		}
		if (wall - s->limits_loaded_ms >= s->provider_cache_ms) {
			/* limits changed with heraldctl or the API apply without a restart */
			hr_err lerr = {0};
			if (!store_load_limits(s, &lerr)) {
				hr_warn("scheduler: re-reading limits: %s", lerr.msg);
				s->limits_loaded_ms = wall;
			}
		}
		tick_poll(s, false);
		if (!stop_at && wall - last_rebalance >= s->rebalance_ms) {
			rebalance(s);
			last_rebalance = wall;
		}
		if (wall - last_metrics >= 250) {
			metrics_publish(s->metrics, s);
			last_metrics = wall;
		}
		turn_mark(s, T_OTHER);
		if (!stop_at) {
			load_all(s);
			turn_mark(s, T_LOAD);
			next_wake_ns = 0;
			dispatch_lane(s, 0); /* transactional first, always */
			turn_mark(s, T_DISPATCH_TX);
			dispatch_lane(s, 1);
			turn_mark(s, T_DISPATCH_BULK);
		}
		flush_out(s);
		turn_mark(s, T_FLUSH);
		turn_end(s);
	}
	tick_poll(s, true);
	flush_out(s);
	hr_buf_free(&frame);
	hr_free(jobs);
	hr_free(outq);
	return 0;
}
