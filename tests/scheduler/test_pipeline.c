/*
 * test_pipeline.c -- herald-scheduler as a process: real Postgres, real
 * ZeroMQ.  The test plays the workers (DEALER sockets speaking the wire
 * protocol), so every answer a provider can give -- sent, retry, throttled,
 * permanent, bounced, silence -- is under the test's control, and checks what
 * lands in the tenants' schemas.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"
#include "migrate.h"
#include "outbox.h"
#include "providers.h"
#include "tenancy.h"
#include "stack.h"
#include "wire.h"

/* ---- a worker played by the test ---- */

typedef uint8_t (*policy_fn)(const hr_job *job, void *ud, uint32_t *retry_after_ms);

typedef struct fworker {
	void *ctx, *sock;
	uint8_t channel, lane;
	uint32_t credit;
	policy_fn policy;
	void *ud;
	long jobs_seen, leases_seen;
	bool hold;          /* take leases, answer nothing (a stuck worker) */
	int64_t *deadlines; /* lease_deadline of every job received, if not NULL */
	int ndeadlines;
	/* leases taken while holding: answered later by fw_answer_held */
	struct held { uint64_t lease, tenant; uint32_t n; uint64_t ids[512]; } *held;
	int nheld;
	int64_t last_hello;
	char id[64];
} fworker;

static void fw_send(fworker *w, const hr_buf *b)
{
	ck_assert_int_ge(zmq_send(w->sock, b->data, b->len, 0), 0);
}

static void fw_hello(fworker *w)
{
	hr_buf b = {0};
	hr_hello h = {.worker_id = {w->id, (uint32_t)strlen(w->id)}, .channel = w->channel, .lane = w->lane,
		      .credit = w->credit};
	hr_wire_encode_hello(&b, &h);
	fw_send(w, &b);
	hr_buf_free(&b);
	w->last_hello = sched_now_ms();
}

static void fw_open(fworker *w, const char *ep, uint8_t channel, uint8_t lane, uint32_t credit, policy_fn pol,
		    void *ud)
{
	memset(w, 0, sizeof *w);
	w->ctx = zmq_ctx_new();
	w->sock = zmq_socket(w->ctx, ZMQ_DEALER);
	int linger = 0;
	zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
	ck_assert_int_eq(zmq_connect(w->sock, ep), 0);
	w->channel = channel;
	w->lane = lane;
	w->credit = credit;
	w->policy = pol;
	w->ud = ud;
	static int n;
	snprintf(w->id, sizeof w->id, "test-worker-%d-%d", (int)getpid(), ++n);
	fw_hello(w);
}

static void fw_close(fworker *w)
{
	zmq_close(w->sock);
	zmq_ctx_term(w->ctx);
}

/* Serve for up to ms milliseconds. */
static void fw_pump(fworker *w, int ms)
{
	int64_t end = sched_now_ms() + ms;
	do {
		zmq_pollitem_t it = {w->sock, 0, ZMQ_POLLIN, 0};
		int64_t left = end - sched_now_ms();
		zmq_poll(&it, 1, left > 0 ? (long)left : 0);
		/* HELLO every second: a restarted scheduler learns of us again. */
		if (sched_now_ms() - w->last_hello > 1000)
			fw_hello(w);
		if (!(it.revents & ZMQ_POLLIN))
			continue;
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, w->sock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			continue;
		}
		hr_wire_type type;
		hr_err err = {0};
		ck_assert_msg(hr_wire_peek(zmq_msg_data(&m), zmq_msg_size(&m), &type, &err), "%s", err.msg);
		if (type == HR_W_JOBS) {
			hr_job_batch jb;
			ck_assert_msg(hr_wire_decode_jobs(zmq_msg_data(&m), zmq_msg_size(&m), &jb, &err), "%s", err.msg);
			ck_assert_int_eq(jb.lane, w->lane);
			ck_assert_int_eq(jb.channel, w->channel);
			w->leases_seen++;
			w->jobs_seen += jb.njobs;
			for (uint32_t i = 0; w->deadlines && i < jb.njobs; i++)
				w->deadlines[w->ndeadlines++] = (int64_t)jb.lease_deadline;
			if (w->hold && w->held && jb.njobs <= 512) {
				struct held *h = &w->held[w->nheld++];
				h->lease = jb.lease_id;
				h->tenant = jb.tenant_id;
				h->n = jb.njobs;
				for (uint32_t i = 0; i < jb.njobs; i++)
					h->ids[i] = jb.jobs[i].message_id;
			}
			if (!w->hold) {
				hr_result *rs = hr_calloc(jb.njobs ? jb.njobs : 1, sizeof *rs);
				for (uint32_t i = 0; i < jb.njobs; i++) {
					rs[i].message_id = jb.jobs[i].message_id;
					rs[i].status = w->policy(&jb.jobs[i], w->ud, &rs[i].retry_after_ms);
					rs[i].latency_us = 100;
					rs[i].provider_id = (hr_str){"prov-1", 6};
					if (rs[i].status != HR_RES_SENT)
						rs[i].reason = (hr_str){"test says so", 12};
				}
				hr_result_batch rb = {.lease_id = jb.lease_id, .tenant_id = jb.tenant_id,
						      .nresults = jb.njobs, .results = rs};
				hr_buf b = {0};
				hr_wire_encode_results(&b, &rb);
				fw_send(w, &b);
				hr_buf_reset(&b);
				hr_credit c = {1};
				hr_wire_encode_credit(&b, &c);
				fw_send(w, &b);
				hr_buf_free(&b);
				hr_free(rs);
			}
			hr_wire_jobs_free(&jb);
		}
		zmq_msg_close(&m);
	} while (sched_now_ms() < end);
}

/* Answer every held lease now, all with `status` (a worker that was presumed dead speaks up). */
static void fw_answer_held(fworker *w, uint8_t status)
{
	for (int k = 0; k < w->nheld; k++) {
		struct held *h = &w->held[k];
		hr_result rs[512];
		memset(rs, 0, sizeof rs);
		for (uint32_t i = 0; i < h->n; i++)
			rs[i] = (hr_result){.message_id = h->ids[i], .status = status, .reason = {"late", 4}};
		hr_result_batch rb = {.lease_id = h->lease, .tenant_id = (uint32_t)h->tenant, .nresults = h->n,
				      .results = rs};
		hr_buf b = {0};
		hr_wire_encode_results(&b, &rb);
		fw_send(w, &b);
		hr_buf_free(&b);
	}
	w->nheld = 0;
}

static uint8_t always_sent(const hr_job *j, void *ud, uint32_t *ra)
{
	(void)j, (void)ud, (void)ra;
	return HR_RES_SENT;
}

/* A provider that takes 50 us a message (or *ud us): slow enough to be caught mid-run. */
static uint8_t slow_sent(const hr_job *j, void *ud, uint32_t *ra)
{
	(void)j, (void)ra;
	struct timespec d = {0, ud ? *(long *)ud * 1000 : 50000};
	nanosleep(&d, NULL);
	return HR_RES_SENT;
}

/* Pump the workers until tenant ti has `want` results (or the deadline). */
static void serve_until(fixture *f, fworker **ws, int nw, int ti, long want, int ms)
{
	int64_t deadline = sched_now_ms() + ms;
	while (results(f, ti) < want && sched_now_ms() < deadline)
		for (int i = 0; i < nw; i++)
			fw_pump(ws[i], 20);
}

/* ---- tests ---- */

START_TEST(every_message_gets_exactly_one_result_in_its_tenant)
{
	fixture f;
	fixture_open(&f, 2);
	enqueue(&f, 0, "email", "bulk", 10000, "main");
	enqueue(&f, 1, "email", "bulk", 3000, "main");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	fworker w;
	fw_open(&w, s.ep[1], HR_CH_EMAIL, HR_LANE_BULK, 8, always_sent, NULL);
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 10000, 60000);
	serve_until(&f, ws, 1, 1, 3000, 60000);
	ck_assert_int_eq(results(&f, 0), 10000);
	ck_assert_int_eq(results(&f, 1), 3000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'sent' AND attempts = 1 "
			       "AND provider_id = 'prov-1'", f.t[0].schema), 10000);
	/* every result belongs to a message of that tenant's outbox */
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results r WHERE NOT EXISTS (SELECT 1 FROM %s.outbox o "
			       "WHERE o.id = r.message_id / 4096 AND r.message_id %% 4096 < cardinality(o.addresses))",
			   f.t[0].schema), 0);
	ck_assert_int_eq(w.jobs_seen, 13000);
	/* low water reaches past the last batch once everything is landed */
	int64_t deadline = sched_now_ms() + 5000;
	while (q(&f, "SELECT count(*) FROM %s.dispatch_state WHERE low_water > (SELECT max(id) FROM %s.outbox)",
		 f.t[0].schema) == 0 && sched_now_ms() < deadline)
		fw_pump(&w, 50);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.dispatch_state WHERE low_water > (SELECT max(id) FROM %s.outbox)",
			   f.t[0].schema), 1);
	/* Prometheus metrics and health, as an operator scrapes them */
	char *m = NULL;
	fw_pump(&w, 300); /* a publish interval */
	ck_assert_int_eq(th_sh(&m, "curl -sf http://127.0.0.1:%d/metrics", s.metrics_port), 0);
	ck_assert_msg(strstr(m, "herald_results_total{status=\"sent\"} 13000\n") &&
			      strstr(m, "herald_dispatched_total{lane=\"bulk\"} 13000\n") &&
			      strstr(m, "herald_workers{channel=\"email\",lane=\"bulk\"} 1\n") &&
			      strstr(m, "herald_dispatch_to_result_ms_count{lane=\"bulk\"} 13000\n"),
		      "metrics: %s", m);
	hr_free(m);
	ck_assert_int_eq(th_sh(&m, "curl -sf http://127.0.0.1:%d/healthz", s.metrics_port), 0);
	ck_assert_str_eq(m, "ok\n");
	hr_free(m);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

static uint8_t always_retry(const hr_job *j, void *ud, uint32_t *ra)
{
	(void)j, (void)ud, (void)ra;
	return HR_RES_RETRY;
}

START_TEST(temporary_failures_retry_then_dead_letter)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "sms", "transactional", 20, "sms");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, "HERALD_SCHED_MAX_ATTEMPTS=3 HERALD_SCHED_RETRY_BASE_MS=20");
	fworker w;
	fw_open(&w, s.ep[0], HR_CH_SMS, HR_LANE_TRANSACTIONAL, 4, always_retry, NULL);
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 20, 30000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'dead' AND attempts = 3 AND "
			       "reason LIKE 'dead-lettered after 3 attempts; last: test says so'", f.t[0].schema), 20);
	ck_assert_int_eq(w.jobs_seen, 60);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

typedef struct flaky {
	int throttles; /* answer THROTTLED this many times per message first */
	int seen[4096];
} flaky;

static uint8_t throttle_then_send(const hr_job *j, void *ud, uint32_t *ra)
{
	flaky *fl = ud;
	int i = (int)(j->message_id % 4096);
	if (fl->seen[i]++ < fl->throttles) {
		*ra = 30;
		return HR_RES_THROTTLED;
	}
	return HR_RES_SENT;
}

START_TEST(throttling_is_not_a_failure)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "sms", "bulk", 200, "sms");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, "HERALD_SCHED_MAX_ATTEMPTS=2");
	flaky *fl = hr_calloc(1, sizeof *fl);
	fl->throttles = 3; /* more throttles than max_attempts: none may be dead-lettered */
	fworker w;
	fw_open(&w, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 4, throttle_then_send, fl);
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 200, 60000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'sent' AND attempts = 1", f.t[0].schema),
			 200);
	ck_assert_int_eq(w.jobs_seen, 800);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	hr_free(fl);
	fixture_close(&f);
}
END_TEST

static uint8_t bounce_odd(const hr_job *j, void *ud, uint32_t *ra)
{
	(void)ud, (void)ra;
	return j->message_id % 2 ? HR_RES_BOUNCED : HR_RES_PERMANENT;
}

START_TEST(permanent_failures_and_bounces_are_recorded_and_suppressed)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "email", "transactional", 10, "main");
	enqueue(&f, 0, "email", "transactional", 3, "no-such-account");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	fworker w;
	fw_open(&w, s.ep[0], HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, 4, bounce_odd, NULL);
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 13, 30000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'bounced'", f.t[0].schema), 5);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'failed' AND reason = 'test says so'",
			   f.t[0].schema), 5);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.suppressions WHERE reason = 'hard_bounce' AND channel = 'email'",
			   f.t[0].schema), 5);
	/* an unconfigured provider account fails its messages permanently, saying why */
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'failed' AND attempts = 0 AND "
			       "reason LIKE 'provider account ''no-such-account'' is not configured%%'", f.t[0].schema), 3);
	ck_assert_int_eq(w.jobs_seen, 10);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

START_TEST(transactional_lane_is_not_behind_bulk)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "email", "bulk", 20000, "main");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	/* The bulk pool is stuck: it holds its leases and answers nothing. */
	fworker bulk, tx;
	fw_open(&bulk, s.ep[1], HR_CH_EMAIL, HR_LANE_BULK, 2, always_sent, NULL);
	bulk.hold = true;
	fw_open(&tx, s.ep[0], HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, 4, always_sent, NULL);
	fworker *both[] = {&bulk, &tx};
	int64_t until = sched_now_ms() + 20000;
	while (bulk.jobs_seen == 0 && sched_now_ms() < until)
		fw_pump(&bulk, 20);
	ck_assert_int_gt(bulk.jobs_seen, 0);
	enqueue(&f, 0, "email", "transactional", 50, "main");
	serve_until(&f, both, 2, 0, 50, 20000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results", f.t[0].schema), 50);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results r JOIN %s.outbox o ON o.id = r.message_id / 4096 "
			       "WHERE o.lane = 'transactional'", f.t[0].schema), 50);
	ck_assert_int_eq(tx.jobs_seen, 50);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&bulk);
	fw_close(&tx);
	fixture_close(&f);
}
END_TEST

START_TEST(small_tenant_is_not_starved_by_a_big_one)
{
	fixture f;
	fixture_open(&f, 2);
	enqueue(&f, 0, "email", "bulk", 40000, "main");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, "HERALD_SCHED_LEASE_SIZE_BULK=64");
	fworker w;
	long us = 250; /* ~4,000 messages/s: the big campaign takes ~10 s */
	fw_open(&w, s.ep[1], HR_CH_EMAIL, HR_LANE_BULK, 2, slow_sent, &us);
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 2000, 30000); /* the big campaign is under way */
	enqueue(&f, 1, "email", "bulk", 500, "main");
	serve_until(&f, ws, 1, 1, 500, 30000);
	ck_assert_int_eq(results(&f, 1), 500);
	long big = results(&f, 0);
	ck_assert_msg(big < 40000, "the small tenant finished only after the big one (%ld)", big);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

START_TEST(stuck_worker_leases_are_redispatched)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "sms", "bulk", 300, "sms");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, "HERALD_SCHED_LEASE_TIMEOUT_MS=1000 HERALD_SCHED_LEASE_SIZE_BULK=100");
	fworker stuck, good;
	fw_open(&stuck, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 3, always_sent, NULL);
	stuck.hold = true;
	int64_t until = sched_now_ms() + 20000;
	while (stuck.jobs_seen < 300 && sched_now_ms() < until)
		fw_pump(&stuck, 20);
	ck_assert_int_eq(stuck.jobs_seen, 300);
	fw_open(&good, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 3, always_sent, NULL);
	fworker *ws[] = {&stuck, &good};
	serve_until(&f, ws, 2, 0, 300, 30000);
	ck_assert_int_eq(results(&f, 0), 300);
	ck_assert_int_eq(good.jobs_seen, 300);
	th_expect_warnings(0);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&stuck);
	fw_close(&good);
	fixture_close(&f);
}
END_TEST

START_TEST(sigkill_of_the_scheduler_loses_nothing_and_duplicates_no_result)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "email", "bulk", 30000, "main");
	char ep0[64], ep1[64];
	snprintf(ep0, sizeof ep0, "tcp://127.0.0.1:%d", free_port());
	snprintf(ep1, sizeof ep1, "tcp://127.0.0.1:%d", free_port());
	const char *eps[2] = {ep0, ep1};
	sproc s;
	sched_start(&s, f.dsn, f.dir, eps, "HERALD_SCHED_LEASE_SIZE_BULK=128");
	fworker w;
	fw_open(&w, ep1, HR_CH_EMAIL, HR_LANE_BULK, 4, slow_sent, NULL);
	fworker *ws[] = {&w};
	for (int kill_no = 0; kill_no < 3; kill_no++) {
		long before = results(&f, 0);
		serve_until(&f, ws, 1, 0, before + 4000, 30000);
		ck_assert_int_lt(results(&f, 0), 30000); /* killed mid-run */
		ck_assert_int_eq(sched_stop(&s, SIGKILL), 128 + SIGKILL);
		fw_pump(&w, 100); /* answers to the dead scheduler are lost: fine */
		sched_start(&s, f.dsn, f.dir, eps, "HERALD_SCHED_LEASE_SIZE_BULK=128");
	}
	serve_until(&f, ws, 1, 0, 30000, 60000);
	ck_assert_int_eq(results(&f, 0), 30000);
	ck_assert_int_eq(q(&f, "SELECT count(DISTINCT message_id) FROM %s.results", f.t[0].schema), 30000);
	/* at least once: the worker saw every message, some more than once */
	ck_assert_int_ge(w.jobs_seen, 30000);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

/* Most stamps (ms) in any window [t, t + 1000) that starts at a stamp. */
static int most_in_a_second(const int64_t *stamps, int n)
{
	int best = 0;
	for (int i = 0; i < n; i++) {
		int k = 0;
		for (int j = 0; j < n; j++)
			k += stamps[j] >= stamps[i] && stamps[j] < stamps[i] + 1000;
		best = k > best ? k : best;
	}
	return best;
}

START_TEST(sender_identity_is_rate_limited)
{
	fixture f;
	fixture_open(&f, 1);
	char sql[256];
	snprintf(sql, sizeof sql,
		 "UPDATE herald.tenants SET limits = '{\"sender_rates\": {\"News.Example\": 20}}' WHERE id = %lld",
		 (long long)f.t[0].id);
	hr_err err = {0};
	ck_assert(hr_db_exec(f.c, sql, &err));
	/* 60 messages from one sender identity, From a literal address of news.example */
	const char *addr[60];
	char *own[60];
	for (int i = 0; i < 60; i++)
		addr[i] = own[i] = hr_sprintf("r%d@example.org", i);
	hr_outbox_batch b = {.channel = "email", .lane = "bulk", .provider = "main", .origin = "test", .n = 60,
			     .content = "{\"from\":\"News <hi@news.example>\",\"text\":\"x\"}", .addresses = addr};
	ck_assert(hr_db_tenant_begin(f.c, f.t[0].schema, f.t[0].role, &err));
	ck_assert_msg(hr_outbox_enqueue(f.c, (int64_t)f.t[0].id, &b, NULL, &err), "%s", err.msg);
	ck_assert(hr_db_commit(f.c, &err));
	for (int i = 0; i < 60; i++)
		hr_free(own[i]);
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, "HERALD_SCHED_LEASE_TIMEOUT_MS=30000");
	fworker w;
	fw_open(&w, s.ep[1], HR_CH_EMAIL, HR_LANE_BULK, 8, always_sent, NULL);
	int64_t stamps[64];
	w.deadlines = stamps;
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 60, 30000);
	ck_assert_int_eq(results(&f, 0), 60);
	ck_assert_int_eq(w.ndeadlines, 60);
	/* dispatch time = lease deadline - 30 s: no 1-s window may hold more than 20 + a burst of 1 */
	int best = most_in_a_second(stamps, 60);
	ck_assert_msg(best <= 21, "%d messages of sender news.example dispatched within one second, limit 20/s", best);
	int64_t lo = stamps[0], hi = stamps[0];
	for (int i = 0; i < 60; i++) {
		lo = stamps[i] < lo ? stamps[i] : lo;
		hi = stamps[i] > hi ? stamps[i] : hi;
	}
	ck_assert_msg(hi - lo >= 2000, "60 messages at 20/s took only %lld ms", (long long)(hi - lo));
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

static uint8_t retry_until_told(const hr_job *j, void *ud, uint32_t *ra)
{
	(void)j, (void)ra;
	return *(bool *)ud ? HR_RES_SENT : HR_RES_RETRY;
}

START_TEST(late_answers_from_expired_leases_are_harmless)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "sms", "bulk", 50, "sms");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL,
		    "HERALD_SCHED_LEASE_TIMEOUT_MS=1000 HERALD_SCHED_RETRY_BASE_MS=4000 HERALD_SCHED_MAX_ATTEMPTS=5");
	fworker a, b;
	fw_open(&a, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 1, always_sent, NULL);
	a.hold = true;
	a.held = hr_calloc(8, sizeof *a.held);
	int64_t until = sched_now_ms() + 20000;
	while (a.jobs_seen < 50 && sched_now_ms() < until)
		fw_pump(&a, 20);
	ck_assert_int_eq(a.jobs_seen, 50);
	/* a's lease expires; b takes the messages and answers "retry": they wait ~2-4 s */
	bool ok_now = false;
	fw_open(&b, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 1, retry_until_told, &ok_now);
	until = sched_now_ms() + 20000;
	while (b.jobs_seen < 50 && sched_now_ms() < until)
		fw_pump(&b, 20);
	ck_assert_int_eq(b.jobs_seen, 50);
	/* now the worker presumed dead answers its expired lease: retry for every message */
	fw_answer_held(&a, HR_RES_RETRY);
	a.hold = false;
	ok_now = true;
	fworker *ws[] = {&a, &b};
	serve_until(&f, ws, 2, 0, 50, 30000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'sent'", f.t[0].schema), 50);
	/* the late answers neither crashed the scheduler nor counted as attempts */
	ck_assert_int_eq(q(&f, "SELECT max(attempts) FROM %s.results", f.t[0].schema), 3);
	th_expect_warnings(0);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&a);
	fw_close(&b);
	hr_free(a.held);
	fixture_close(&f);
}
END_TEST

START_TEST(a_result_already_landed_is_kept_and_the_rest_still_lands)
{
	fixture f;
	fixture_open(&f, 1);
	enqueue(&f, 0, "sms", "bulk", 20, "sms");
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	fworker w;
	fw_open(&w, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 1, always_sent, NULL);
	w.hold = true;
	w.held = hr_calloc(4, sizeof *w.held);
	int64_t until = sched_now_ms() + 20000;
	while (w.jobs_seen < 20 && sched_now_ms() < until)
		fw_pump(&w, 20);
	ck_assert_int_eq(w.jobs_seen, 20);
	/* While the lease is out, message 3 gets a result by another way (say, a scheduler that
	 * was presumed dead landed it): the lander's COPY of the lease's 20 results conflicts. */
	char sql[256];
	snprintf(sql, sizeof sql,
		 "INSERT INTO %s.results (message_id, status, attempts, reason) "
		 "SELECT min(id) * 4096 + 3, 'failed', 1, 'pre-existing' FROM %s.outbox",
		 f.t[0].schema, f.t[0].schema);
	hr_err err = {0};
	ck_assert_msg(hr_db_exec(f.c, sql, &err), "%s", err.msg);
	fw_answer_held(&w, HR_RES_SENT);
	w.hold = false;
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 20, 20000);
	ck_assert_int_eq(results(&f, 0), 20);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'sent'", f.t[0].schema), 19);
	/* the first result stays: exactly one per message */
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE reason = 'pre-existing' AND "
			       "message_id = (SELECT min(id) * 4096 + 3 FROM %s.outbox)", f.t[0].schema), 1);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	hr_free(w.held);
	fixture_close(&f);
}
END_TEST

START_TEST(a_rate_set_while_running_applies_without_a_restart)
{
	fixture f;
	fixture_open(&f, 1);
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, "HERALD_SCHED_PROVIDER_CACHE_MS=300");
	fworker w;
	fw_open(&w, s.ep[1], HR_CH_SMS, HR_LANE_BULK, 8, always_sent, NULL);
	int64_t stamps[64];
	w.deadlines = stamps;
	/* the operator limits the running scheduler's account to 20/s */
	char sql[256];
	snprintf(sql, sizeof sql, "UPDATE herald.provider_accounts SET rate_per_s = 20 WHERE tenant_id = %lld "
		 "AND name = 'sms'", (long long)f.t[0].id);
	hr_err err = {0};
	ck_assert(hr_db_exec(f.c, sql, &err));
	fw_pump(&w, 700); /* two reload periods */
	enqueue(&f, 0, "sms", "bulk", 60, "sms");
	fworker *ws[] = {&w};
	serve_until(&f, ws, 1, 0, 60, 30000);
	ck_assert_int_eq(results(&f, 0), 60);
	ck_assert_int_eq(w.ndeadlines, 60);
	int best = most_in_a_second(stamps, 60);
	ck_assert_msg(best <= 21, "%d dispatched within one second after the limit was set to 20/s", best);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fw_close(&w);
	fixture_close(&f);
}
END_TEST

int main(void)
{
	th_pg_dsn();
	Suite *s = suite_create("scheduler_pipeline");
	TCase *tc;
	tc = th_tcase("exactly_once");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, every_message_gets_exactly_one_result_in_its_tenant);
	suite_add_tcase(s, tc);
	tc = th_tcase("dead_letter");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, temporary_failures_retry_then_dead_letter);
	suite_add_tcase(s, tc);
	tc = th_tcase("throttling");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, throttling_is_not_a_failure);
	suite_add_tcase(s, tc);
	tc = th_tcase("permanent");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, permanent_failures_and_bounces_are_recorded_and_suppressed);
	suite_add_tcase(s, tc);
	tc = th_tcase("lanes");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, transactional_lane_is_not_behind_bulk);
	suite_add_tcase(s, tc);
	tc = th_tcase("fairness");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, small_tenant_is_not_starved_by_a_big_one);
	suite_add_tcase(s, tc);
	tc = th_tcase("stuck");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, stuck_worker_leases_are_redispatched);
	suite_add_tcase(s, tc);
	tc = th_tcase("sender");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, sender_identity_is_rate_limited);
	suite_add_tcase(s, tc);
	tc = th_tcase("late");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, late_answers_from_expired_leases_are_harmless);
	suite_add_tcase(s, tc);
	tc = th_tcase("conflict");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, a_result_already_landed_is_kept_and_the_rest_still_lands);
	suite_add_tcase(s, tc);
	tc = th_tcase("live_limits");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, a_rate_set_while_running_applies_without_a_restart);
	suite_add_tcase(s, tc);
	tc = th_tcase("sigkill");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, sigkill_of_the_scheduler_loses_nothing_and_duplicates_no_result);
	suite_add_tcase(s, tc);
	return th_run(s);
}
