/*
 * test_worker.c -- herald-worker end to end: the test is the scheduler
 * (a real ZeroMQ ROUTER, the real wire codec), the worker is the real
 * binary, and the providers are real: postfix's smtp-sink for SMTP,
 * herald-provsim for HTTP.  See wtest.h for the harness.
 */
#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "psim.h"
#include "scripted_http.h"
#include "wtest.h"

/* ---- building batches ---- */

typedef struct batch {
	hr_job_batch b;
	char **strs; /* owned strings the jobs point to */
	size_t nstrs;
} batch;

static hr_str S(const char *s)
{
	return (hr_str){s, (uint32_t)strlen(s)};
}

static char *keep(batch *x, char *s)
{
	x->strs = realloc(x->strs, (x->nstrs + 1) * sizeof *x->strs);
	x->strs[x->nstrs++] = s;
	return s;
}

/* njobs jobs with message ids first_id.., address from addr_fmt (%llu = id), data from data_fmt. */
static void mk(batch *x, uint64_t lease, int channel, int lane, const char *content, const char *provider,
	       uint32_t njobs, uint64_t first_id, const char *addr_fmt, const char *data_fmt)
{
	memset(x, 0, sizeof *x);
	x->b.lease_id = lease;
	x->b.lease_deadline = 0;
	x->b.tenant_id = 7;
	x->b.tenant = S("acme");
	x->b.channel = (uint8_t)channel;
	x->b.lane = (uint8_t)lane;
	x->b.content = S(content);
	x->b.provider = S(provider);
	x->b.njobs = njobs;
	x->b.jobs = calloc(njobs, sizeof *x->b.jobs);
	for (uint32_t i = 0; i < njobs; i++) {
		unsigned long long id = first_id + i;
		char *a = NULL, *d = NULL;
		ck_assert_int_ge(asprintf(&a, addr_fmt, id), 0);
		ck_assert_int_ge(asprintf(&d, data_fmt, id), 0);
		x->b.jobs[i] = (hr_job){.message_id = id, .attempt = 1, .address = S(keep(x, a)),
					.data = S(keep(x, d))};
	}
}

static void unmk(batch *x)
{
	for (size_t i = 0; i < x->nstrs; i++)
		free(x->strs[i]);
	free(x->strs);
	free(x->b.jobs);
}

static void send_batch(wt *t, batch *x)
{
	wt_send_jobs(t, &x->b);
	unmk(x);
}

static const char sink_provider[] = "{\"transport\":\"sink\",\"name\":\"bench\"}";

/* ---- sink ---- */

START_TEST(sink_end_to_end)
{
	wt t;
	const char *extra[] = {"--credit", "4", NULL};
	wt_start(&t, "sms", "bulk", extra);
	ck_assert_int_eq(t.hello.channel, HR_CH_SMS);
	ck_assert_int_eq(t.hello.lane, HR_LANE_BULK);
	ck_assert_int_eq(t.hello.credit, 4);

	/* Three leases of different sizes; ids do not overlap. */
	const uint32_t sizes[] = {5, 50, 3000};
	const uint64_t first[] = {1000, 2000, 10000};
	size_t total = 0;
	for (int i = 0; i < 3; i++) {
		batch x;
		mk(&x, 100 + (uint64_t)i, HR_CH_SMS, HR_LANE_BULK, "{\"text\":\"Hi {{name}} #{{herald.message_id}}\"}",
		   sink_provider, sizes[i], first[i], "+1555%07llu", "{\"name\":\"n%llu\"}");
		send_batch(&t, &x);
		total += sizes[i];
	}
	wt_collect c = {0};
	wt_collect_results(&t, &c, total, 20000);
	/* Every job exactly one result, under its own lease, SENT with the sink's id. */
	for (int i = 0; i < 3; i++)
		for (uint64_t id = first[i]; id < first[i] + sizes[i]; id++) {
			int seen = 0;
			for (size_t k = 0; k < c.n; k++)
				if (c.r[k].message_id == id) {
					seen++;
					ck_assert_uint_eq(c.r[k].lease_id, 100 + (uint64_t)i);
					ck_assert_msg(c.r[k].status == HR_RES_SENT, "msg %llu: got status %d, want SENT (%s)",
						      (unsigned long long)id, c.r[k].status, c.r[k].reason);
					char want[64];
					snprintf(want, sizeof want, "sink-%llu", (unsigned long long)id);
					ck_assert_str_eq(c.r[k].provider_id, want);
				}
			ck_assert_msg(seen == 1, "msg %llu: got %d results, want 1", (unsigned long long)id, seen);
		}
	ck_assert_uint_eq(c.n, total);

	/* Each finished lease gives its credit back; wait for all three. */
	long long deadline = wt_mono_ms() + 5000;
	while (c.credit < 3 && wt_mono_ms() < deadline) {
		hr_wire_type ty;
		uint8_t *f;
		size_t len;
		if (!wt_recv(&t, 200, false, &ty, &f, &len))
			continue;
		ck_assert_int_eq(ty, HR_W_CREDIT);
		hr_credit cr;
		ck_assert(hr_wire_decode_credit(f, len, &cr, NULL));
		c.credit += cr.credit;
		free(f);
	}
	ck_assert_uint_eq(c.credit, 3);

	/* Metrics: results counted, renders counted, healthy. */
	char *body = NULL;
	ck_assert_int_eq(wt_http_get(t.metrics_port, "/metrics", &body), 200);
	char want[160];
	snprintf(want, sizeof want, "herald_worker_results_total{channel=\"sms\",lane=\"bulk\",status=\"sent\"} %zu\n",
		 total);
	ck_assert_msg(strstr(body, want), "metrics lack '%s':\n%s", want, body);
	snprintf(want, sizeof want, "herald_worker_renders_total{channel=\"sms\",lane=\"bulk\"} %zu\n", total);
	ck_assert_msg(strstr(body, want), "metrics lack '%s':\n%s", want, body);
	ck_assert_msg(strstr(body, "herald_worker_send_latency_seconds_count"), "no histogram:\n%s", body);
	free(body);
	ck_assert_int_eq(wt_http_get(t.metrics_port, "/healthz", &body), 200);
	free(body);

	/* Drain with nothing held: an empty BYE, exit 0. */
	ck_assert_int_eq(kill(t.pid, SIGTERM), 0);
	wt_collect_bye(&t, &c, 10000);
	ck_assert_int_eq(c.nbye, 0);
	wt_worker_stop(&t, 0, true, 0, 0);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/* Parse errors fail the whole lease, render errors the job: PERMANENT with Liquid's message. */
START_TEST(render_errors_are_permanent)
{
	wt t;
	wt_start(&t, "sms", "transactional", NULL);
	batch x;
	/* Job data decides: d = 0 divides by zero, d = 1 renders. */
	mk(&x, 1, HR_CH_SMS, HR_LANE_TRANSACTIONAL, "{\"text\":\"{{ 10 | divided_by: d }}\"}", sink_provider, 2, 1,
	   "+1555000%llu", "{\"d\":%llu}");
	x.b.jobs[0].data = S("{\"d\":0}");
	send_batch(&t, &x);
	mk(&x, 2, HR_CH_SMS, HR_LANE_TRANSACTIONAL, "{\"text\":\"{% if %}\"}", sink_provider, 3, 10, "+1555000%llu",
	   "{}");
	send_batch(&t, &x);
	/* Stored template (id 5): compiled through the cache; a missing required field fails. */
	mk(&x, 3, HR_CH_SMS, HR_LANE_TRANSACTIONAL, "{\"title\":\"x\"}", sink_provider, 1, 20, "+1555000%llu", "{}");
	x.b.template_id = 5;
	x.b.template_version = 1;
	send_batch(&t, &x);
	/* Data that is not an object. */
	mk(&x, 4, HR_CH_SMS, HR_LANE_TRANSACTIONAL, "{\"text\":\"ok\"}", sink_provider, 1, 30, "+1555000%llu", "[1]");
	send_batch(&t, &x);
	wt_collect c = {0};
	wt_collect_results(&t, &c, 7, 10000);
	struct {
		uint64_t id;
		uint8_t status;
		const char *reason;
	} want[] = {
		{1, HR_RES_PERMANENT, "divided by 0"},
		{2, HR_RES_SENT, ""},
		{10, HR_RES_PERMANENT, "content.text: Liquid syntax error"},
		{11, HR_RES_PERMANENT, "content.text: Liquid syntax error"},
		{12, HR_RES_PERMANENT, "content.text: Liquid syntax error"},
		{20, HR_RES_PERMANENT, "content.text: missing"},
		{30, HR_RES_PERMANENT, "data: not a JSON object"},
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const wt_res *r = wt_find(&c, want[i].id);
		ck_assert_msg(r, "no result for %llu", (unsigned long long)want[i].id);
		ck_assert_msg(r->status == want[i].status && strstr(r->reason, want[i].reason),
			      "msg %llu: got %s '%s', want %s '%s'", (unsigned long long)want[i].id,
			      hr_result_name(r->status), r->reason, hr_result_name(want[i].status), want[i].reason);
	}
	/* The content errors are logged once per lease (warn), not per job. */
	wt_worker_stop(&t, SIGTERM, true, 0, 2);
	ck_assert_int_eq(wt_log_count(&t, "] warn: "), 2);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/* Garbage from the "scheduler" is logged and dropped; the worker keeps serving. */
START_TEST(malformed_frames_dropped)
{
	wt t;
	wt_start(&t, "sms", "bulk", NULL);
	const uint8_t junk[] = {1, 2, 3};
	const uint8_t badver[] = {HR_WIRE_MAGIC, 99, HR_W_JOBS, 0, 0, 0};
	const uint8_t hello[] = {HR_WIRE_MAGIC, HR_WIRE_VERSION, HR_W_CREDIT, 0, 1, 0, 0, 0};
	wt_send_raw(&t, junk, sizeof junk);
	wt_send_raw(&t, badver, sizeof badver);
	wt_send_raw(&t, hello, sizeof hello); /* a worker->scheduler type */
	/* A JOBS frame cut short. */
	batch x;
	mk(&x, 9, HR_CH_SMS, HR_LANE_BULK, "{\"text\":\"t\"}", sink_provider, 2, 1, "+1555%llu", "{}");
	hr_buf b = {0};
	hr_wire_encode_jobs(&b, &x.b);
	wt_send_raw(&t, b.data, b.len - 3);
	const void *parts[] = {b.data, b.data};
	size_t lens[] = {b.len, b.len};
	wt_send_parts(&t, parts, lens, 2); /* two frames in one message */
	hr_buf_free(&b);
	wt_send_raw(&t, "", 0);
	/* Then a good lease: served. */
	send_batch(&t, &x);
	wt_collect c = {0};
	wt_collect_results(&t, &c, 2, 10000);
	ck_assert_uint_eq(c.n, 2);
	ck_assert_int_eq(c.r[0].status, HR_RES_SENT);
	wt_worker_stop(&t, SIGTERM, true, 0, 6);
	ck_assert_int_eq(wt_log_count(&t, "malformed frame dropped"), 3);
	ck_assert_int_eq(wt_log_count(&t, "unexpected 4 frame"), 1);
	ck_assert_int_eq(wt_log_count(&t, "malformed JOBS frame dropped"), 1);
	ck_assert_int_eq(wt_log_count(&t, "multi-part message"), 1);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/* ---- SMTP ---- */

static char *smtp_provider(int port, const char *extra)
{
	char *p = NULL;
	ck_assert_int_ge(asprintf(&p, "{\"transport\":\"smtp\",\"url\":\"smtp://127.0.0.1:%d/herald.test\"%s}", port,
				  extra ? extra : ""),
			 0);
	return p;
}

static const char email_content[] =
	"{\"from\":\"Acme Caf\\u00e9 <news@acme.test>\",\"subject\":\"\\u041f\\u0440\\u0438\\u0432\\u0435\\u0442 "
	"{{name}}\",\"text\":\"Hello {{name}}\\n.dot line\",\"html\":\"<p>Hello {{name}}</p>\","
	"\"reply_to\":\"help@acme.test\"}";

START_TEST(smtp_sends_with_reuse)
{
	wt_sink sink;
	wt_sink_start(&sink, NULL);
	wt t;
	const char *extra[] = {"--concurrency", "2", NULL};
	wt_start(&t, "email", "bulk", extra);
	char *prov = smtp_provider(sink.port, NULL);
	batch x;
	const int N = 30;
	mk(&x, 1, HR_CH_EMAIL, HR_LANE_BULK, email_content, prov, (uint32_t)N, 500, "user%llu@example.test",
	   "{\"name\":\"N%llu\",\"unsubscribe_url\":\"https://u.acme.test/u/%llu\"}");
	/* data_fmt has two %llu: give each job its own data. */
	for (int i = 0; i < N; i++) {
		char *d = NULL;
		unsigned long long id = 500 + (unsigned long long)i;
		ck_assert_int_ge(asprintf(&d, "{\"name\":\"N%llu\",\"unsubscribe_url\":\"https://u.acme.test/u/%llu\"}",
					  id, id),
				 0);
		x.b.jobs[i].data = S(keep(&x, d));
	}
	send_batch(&t, &x);
	wt_collect c = {0};
	wt_collect_results(&t, &c, (size_t)N, 30000);
	for (size_t i = 0; i < c.n; i++)
		ck_assert_msg(c.r[i].status == HR_RES_SENT, "msg %llu: %s %s", (unsigned long long)c.r[i].message_id,
			      hr_result_name(c.r[i].status), c.r[i].reason);

	/* Every message dumped, with herald's headers. */
	size_t nmail;
	char **mails = wt_sink_mails(&sink, &nmail);
	ck_assert_uint_eq(nmail, (size_t)N);
	int found = 0;
	for (size_t i = 0; i < nmail; i++) {
		char *m = wt_slurp(mails[i]);
		unsigned long long id = 0;
		const char *mid = strstr(m, "\nMessage-ID: <");
		ck_assert_msg(mid && sscanf(mid, "\nMessage-ID: <%llu.acme@herald>", &id) == 1, "no Message-ID:\n%s", m);
		ck_assert_msg(id >= 500 && id < 500 + (unsigned long long)N, "Message-ID %llu", id);
		char want[200];
		snprintf(want, sizeof want, "\nX-Rcpt-Args: <user%llu@example.test>", id);
		ck_assert_msg(strstr(m, want), "envelope recipient: want '%s' in\n%s", want + 1, m);
		ck_assert_msg(strstr(m, "\nX-Mail-Args: <news@acme.test>"), "envelope sender:\n%s", m);
		snprintf(want, sizeof want, "\nList-Unsubscribe: <https://u.acme.test/u/%llu>", id);
		ck_assert_msg(strstr(m, want), "want '%s' in\n%s", want + 1, m);
		ck_assert_msg(strstr(m, "\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"), "%s", m);
		/* "Привет" (UTF-8) in an RFC 2047 encoded-word: base64 of the bytes. */
		ck_assert_msg(strstr(m, "\nSubject: =?UTF-8?B?0J/RgNC40LLQtdGCIE4"), "subject not encoded:\n%s", m);
		ck_assert_msg(strstr(m, "\nFrom: =?UTF-8?B?QWNtZSBDYWbDqQ==?= <news@acme.test>"), "from:\n%s", m);
		ck_assert_msg(strstr(m, "\nReply-To: <help@acme.test>"), "%s", m);
		ck_assert_msg(strstr(m, "\nMIME-Version: 1.0"), "%s", m);
		ck_assert_msg(strstr(m, "Content-Type: multipart/alternative; boundary="), "%s", m);
		ck_assert_msg(strstr(m, "Content-Type: text/plain; charset=utf-8"), "%s", m);
		ck_assert_msg(strstr(m, "Content-Type: text/html; charset=utf-8"), "%s", m);
		ck_assert_msg(strstr(m, "\n=2Edot line"), "leading dot not protected:\n%s", m);
		ck_assert_msg(strstr(m, "\nDate: "), "%s", m);
		found++;
		free(m);
	}
	ck_assert_int_eq(found, N);
	wt_strv_free(mails, nmail);

	/* Connection reuse: sessions counted by smtp-sink (-v logs one "connect" per session;
	 * one of them was the harness's readiness probe). */
	char *log = wt_slurp(sink.log);
	int sessions = -1;
	for (const char *p = log; (p = strstr(p, ": connect (")); p++)
		sessions++;
	ck_assert_msg(sessions >= 1 && sessions <= 2, "got %d SMTP sessions for %d messages, want 1..2:\n%s",
		      sessions, N, log);
	free(log);
	char *body = NULL;
	ck_assert_int_eq(wt_http_get(t.metrics_port, "/metrics", &body), 200);
	ck_assert_msg(strstr(body, "herald_worker_connections_opened_total{channel=\"email\",lane=\"bulk\"} 1\n") ||
			      strstr(body, "herald_worker_connections_opened_total{channel=\"email\",lane=\"bulk\"} 2\n"),
		      "%s", body);
	free(body);
	wt_worker_stop(&t, SIGTERM, true, 0, 0);
	wt_sink_stop(&sink);
	free(prov);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/*
 * Both SMTP paths and the server variants the pipelined one must handle:
 * a server without PIPELINING (one command at a time), an account with
 * use_ssl "try" (libcurl's own SMTP transfer; smtp-sink offers no STARTTLS,
 * so the session goes on in plain text), and a server that drops idle
 * connections (-t 3): the next batch after the drop still goes out, SENT,
 * on new connections.
 */
START_TEST(smtp_paths)
{
	struct {
		const char *args[4];
		const char *extra;
		int pause_ms;
	} cases[] = {
		{{"-p", NULL}, NULL, 0},
		{{NULL}, ",\"use_ssl\":\"try\"", 0},
		{{"-t", "3", NULL}, NULL, 4500},
	};
	const char *wargs[] = {"--concurrency", "2", NULL};
	wt t;
	wt_start(&t, "email", "bulk", wargs);
	wt_collect c = {0};
	unsigned long long id = 2000;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		wt_sink sink;
		wt_sink_start(&sink, cases[i].args);
		char *prov = smtp_provider(sink.port, cases[i].extra);
		const int N = 6;
		for (int round = 0; round < 2; round++) {
			batch x;
			mk(&x, 100 + i * 2 + (size_t)round, HR_CH_EMAIL, HR_LANE_BULK, email_content, prov, (uint32_t)N, id,
			   "user%llu@example.test", "{\"name\":\"P\"}");
			send_batch(&t, &x);
			size_t n0 = c.n;
			wt_collect_results(&t, &c, n0 + (size_t)N, 20000);
			for (size_t k = n0; k < c.n; k++)
				ck_assert_msg(c.r[k].status == HR_RES_SENT, "case %zu round %d msg %llu: %s %s", i, round,
					      (unsigned long long)c.r[k].message_id, hr_result_name(c.r[k].status),
					      c.r[k].reason);
			id += (unsigned long long)N;
			/* The pause answers the worker's heartbeats (wt_recv), like a live scheduler. */
			long long until = wt_mono_ms() + cases[i].pause_ms;
			for (long long left; (left = until - wt_mono_ms()) > 0;) {
				hr_wire_type ty;
				uint8_t *f = NULL;
				size_t fl = 0;
				if (wt_recv(&t, (int)left, false, &ty, &f, &fl))
					free(f); /* a CREDIT: not needed here */
			}
		}
		size_t nmail;
		char **mails = wt_sink_mails(&sink, &nmail);
		ck_assert_msg(nmail == (size_t)(2 * N), "case %zu: %zu mails dumped, want %d", i, nmail, 2 * N);
		for (size_t k = 0; k < nmail; k++) {
			char *m = wt_slurp(mails[k]);
			unsigned long long mid = 0, rid = 0;
			const char *h = strstr(m, "\nMessage-ID: <");
			const char *r = strstr(m, "\nX-Rcpt-Args: <user");
			ck_assert_msg(h && sscanf(h, "\nMessage-ID: <%llu.acme@herald>", &mid) == 1, "case %zu:\n%s", i, m);
			ck_assert_msg(r && sscanf(r, "\nX-Rcpt-Args: <user%llu@", &rid) == 1 && rid == mid,
				      "case %zu: envelope recipient of %llu:\n%s", i, mid, m);
			ck_assert_msg(strstr(m, "\n=2Edot line"), "case %zu:\n%s", i, m);
			free(m);
		}
		wt_strv_free(mails, nmail);
		wt_sink_stop(&sink);
		free(prov);
	}
	wt_worker_stop(&t, SIGTERM, true, 0, 0);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/* SMTP replies and failures map through classify.c's table. */
START_TEST(smtp_error_mapping)
{
	struct {
		const char *args[6];
		uint8_t want;
		const char *reason;
	} cases[] = {
		{{"-f", "rcpt", "-B", "550 5.1.1 <x>: Recipient address rejected", NULL}, HR_RES_BOUNCED, "smtp 550 5.1.1"},
		{{"-f", "rcpt", "-B", "550 5.7.1 relay denied", NULL}, HR_RES_PERMANENT, "smtp 550 5.7.1"},
		{{"-f", "data", "-B", "554 5.6.0 content rejected", NULL}, HR_RES_PERMANENT, "smtp 554"},
		{{"-r", "rcpt", "-b", "421 4.7.0 slow down", NULL}, HR_RES_THROTTLED, "smtp 421"},
		{{"-r", "mail", "-b", "451 4.3.0 try later", NULL}, HR_RES_RETRY, "smtp 451"},
	};
	wt t;
	wt_start(&t, "email", "transactional", NULL);
	wt_collect c = {0};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		wt_sink sink;
		wt_sink_start(&sink, cases[i].args);
		char *prov = smtp_provider(sink.port, NULL);
		batch x;
		mk(&x, 10 + i, HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, email_content, prov, 1, 100 + i, "u%llu@example.test",
		   "{\"name\":\"n\"}");
		send_batch(&t, &x);
		wt_collect_results(&t, &c, i + 1, 20000);
		const wt_res *r = wt_find(&c, 100 + i);
		ck_assert_msg(r && r->status == cases[i].want && strstr(r->reason, cases[i].reason),
			      "case %zu: got %s '%s', want %s '%s'", i, r ? hr_result_name(r->status) : "none",
			      r ? r->reason : "", hr_result_name(cases[i].want), cases[i].reason);
		wt_sink_stop(&sink);
		free(prov);
	}
	/* Nobody listening: a connection error is RETRY. */
	wt_sink gone;
	wt_sink_start(&gone, NULL);
	int port = gone.port;
	wt_sink_stop(&gone);
	char *prov = smtp_provider(port, NULL);
	batch x;
	mk(&x, 50, HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, email_content, prov, 1, 900, "u%llu@example.test", "{}");
	send_batch(&t, &x);
	size_t n0 = c.n;
	wt_collect_results(&t, &c, n0 + 1, 20000);
	const wt_res *r = wt_find(&c, 900);
	ck_assert_msg(r && r->status == HR_RES_RETRY && strstr(r->reason, "smtp: "), "got %s '%s'",
		      r ? hr_result_name(r->status) : "none", r ? r->reason : "");
	/* A bad recipient never reaches the network. */
	mk(&x, 51, HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, email_content, prov, 1, 901, "not an address %llu", "{}");
	send_batch(&t, &x);
	wt_collect_results(&t, &c, n0 + 2, 20000);
	r = wt_find(&c, 901);
	ck_assert_msg(r && r->status == HR_RES_PERMANENT && strstr(r->reason, "to: not a valid email address"),
		      "got %s '%s'", r ? hr_result_name(r->status) : "none", r ? r->reason : "");
	free(prov);
	wt_worker_stop(&t, SIGTERM, true, 0, 0);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/* ---- HTTP ---- */

static char *http_provider(int port, const char *channel, const char *account, const char *extra)
{
	char *p = NULL;
	ck_assert_int_ge(asprintf(&p, "{\"transport\":\"http\",\"name\":\"%s\",\"url\":\"http://127.0.0.1:%d/v1/send/%s/%s\"%s}",
				  account, port, channel, account, extra ? extra : ""),
			 0);
	return p;
}

START_TEST(http_provider_results)
{
	psim ps;
	const char *args[] = {"--fault", "account=thr,p429=1,retry_after=2", "--fault", "account=err,p503=1", NULL};
	psim_start(&ps, args);
	wt t;
	const char *extra[] = {"--concurrency", "8", "--credit", "8", NULL};
	wt_start(&t, "sms", "transactional", extra);
	char *ok = http_provider(ps.port, "sms", "acme", ",\"headers\":{\"X-Test\":\"1\"}");
	char *thr = http_provider(ps.port, "sms", "thr", NULL);
	char *err = http_provider(ps.port, "sms", "err", NULL);
	/* A body template that renders invalid JSON: the provider answers 400. */
	char *bad = http_provider(ps.port, "sms", "acme", ",\"body\":\"{not json {{ herald.to }}\"");
	/* A body template that renders valid JSON through the json literals. */
	char *tmpl = http_provider(ps.port, "sms", "tmpl",
				   ",\"body\":\"{\\\"to\\\":{{json.to}},\\\"tenant\\\":{{json.tenant}},"
				   "\\\"message_id\\\":{{json.message_id}},\\\"text\\\":{{json.text}}}\"");
	const char *content = "{\"text\":\"Code {{code}} \\\"quoted\\\" \\u00e9\"}";
	batch x;
	mk(&x, 1, HR_CH_SMS, HR_LANE_TRANSACTIONAL, content, ok, 40, 1000, "+1555%07llu", "{\"code\":\"%llu\"}");
	send_batch(&t, &x);
	mk(&x, 2, HR_CH_SMS, HR_LANE_TRANSACTIONAL, content, thr, 2, 2000, "+1555%07llu", "{\"code\":\"%llu\"}");
	send_batch(&t, &x);
	mk(&x, 3, HR_CH_SMS, HR_LANE_TRANSACTIONAL, content, err, 2, 3000, "+1555%07llu", "{\"code\":\"%llu\"}");
	send_batch(&t, &x);
	mk(&x, 4, HR_CH_SMS, HR_LANE_TRANSACTIONAL, content, bad, 2, 4000, "+1555%07llu", "{\"code\":\"%llu\"}");
	send_batch(&t, &x);
	mk(&x, 5, HR_CH_SMS, HR_LANE_TRANSACTIONAL, content, tmpl, 3, 5000, "+1555%07llu", "{\"code\":\"%llu\"}");
	send_batch(&t, &x);
	wt_collect c = {0};
	wt_collect_results(&t, &c, 49, 20000);
	for (size_t i = 0; i < c.n; i++) {
		const wt_res *r = &c.r[i];
		uint64_t group = r->message_id / 1000;
		uint8_t want = group == 1 || group == 5 ? HR_RES_SENT
			       : group == 2		? HR_RES_THROTTLED
			       : group == 3		? HR_RES_RETRY
							: HR_RES_PERMANENT;
		ck_assert_msg(r->status == want, "msg %llu: got %s '%s', want %s", (unsigned long long)r->message_id,
			      hr_result_name(r->status), r->reason, hr_result_name(want));
		if (want == HR_RES_SENT)
			ck_assert_msg(r->provider_id[0] == 'p', "msg %llu: provider id '%s'",
				      (unsigned long long)r->message_id, r->provider_id);
		if (want == HR_RES_THROTTLED)
			ck_assert_uint_eq(r->retry_after_ms, 2000);
		if (group == 3)
			ck_assert_msg(strstr(r->reason, "http 503"), "%s", r->reason);
		if (group == 4)
			ck_assert_msg(strstr(r->reason, "http 400"), "%s", r->reason);
	}
	/* The provider saw each accepted message once, with the idempotency key. */
	json_t *st = psim_get_json(&ps, "/v1/stats");
	ck_assert_int_eq(jpath(st, "accounts.acme.accepted"), 40);
	ck_assert_int_eq(jpath(st, "accounts.tmpl.accepted"), 3);
	ck_assert_int_eq(jpath(st, "totals.duplicates") <= 0, 1);
	json_decref(st);
	/* Connections reused: far fewer than requests. */
	char *body = NULL;
	ck_assert_int_eq(wt_http_get(t.metrics_port, "/metrics", &body), 200);
	const char *k = strstr(body, "herald_worker_connections_opened_total{channel=\"sms\",lane=\"transactional\"} ");
	ck_assert_ptr_nonnull(k);
	long conns = strtol(strchr(k, '}') + 2, NULL, 10);
	ck_assert_msg(conns >= 1 && conns <= 16, "connections opened: %ld for 49 requests", conns);
	free(body);
	wt_worker_stop(&t, SIGTERM, true, 0, 0);
	psim_stop(&ps);
	free(ok);
	free(thr);
	free(err);
	free(bad);
	free(tmpl);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/*
 * The HTTP client's edge cases against a scripted real server: chunked and
 * EOF-delimited answers, an interim 100 before a 429, a connection the
 * server drops when it is reused, an answer cut short, garbage, a header
 * block too big, and no answer at all.  One request in flight, so the
 * reused connection is always the same one.
 */
START_TEST(http_client_edges)
{
	sh_server sh;
	sh_start(&sh);
	struct {
		const char *path;
		const char *extra;
		uint32_t n;
		uint8_t want;
		const char *id_prefix; /* SENT: the provider id is this + the message id */
		const char *reason;    /* else: a part of the reason */
	} cases[] = {
		{"/chunked", ",\"headers\":{\"X-Test\":\"1\",\"X-Empty\":\"\"}", 3, HR_RES_SENT, "c", NULL},
		{"/drop2", NULL, 4, HR_RES_SENT, "d", NULL},
		{"/eof", NULL, 2, HR_RES_SENT, "e", NULL},
		{"/continue", NULL, 1, HR_RES_THROTTLED, NULL, "http 429: slow"},
		{"/cut", NULL, 1, HR_RES_RETRY, NULL, "closed the connection before the answer was complete"},
		{"/garbage", NULL, 1, HR_RES_RETRY, NULL, "malformed answer: not an HTTP/1.x status line"},
		{"/hugehead", NULL, 1, HR_RES_RETRY, NULL, "malformed answer: a header block over 16 KiB"},
		{"/silent", ",\"timeout_ms\":300", 1, HR_RES_RETRY, NULL, "Timeout"},
		/* Credentials in the URL: libcurl's own transfer (Basic auth), same server. */
		{"u:pw@/chunked", NULL, 2, HR_RES_SENT, "c", NULL},
	};
	size_t ncases = sizeof cases / sizeof cases[0];
	wt t;
	const char *extra[] = {"--concurrency", "1", "--credit", "16", NULL};
	wt_start(&t, "sms", "transactional", extra);
	size_t total = 0;
	for (size_t i = 0; i < ncases; i++) {
		char *prov = NULL;
		const char *at = strchr(cases[i].path, '@');
		ck_assert_int_ge(asprintf(&prov, "{\"transport\":\"http\",\"name\":\"e%zu\",\"url\":\"http://%.*s127.0.0.1:%d%s\"%s}",
					  i, at ? (int)(at + 1 - cases[i].path) : 0, cases[i].path, sh.port,
					  at ? at + 1 : cases[i].path, cases[i].extra ? cases[i].extra : ""),
				 0);
		batch x;
		mk(&x, i + 1, HR_CH_SMS, HR_LANE_TRANSACTIONAL, "{\"text\":\"code {{n}}\"}", prov, cases[i].n,
		   (i + 1) * 100, "+1555%07llu", "{\"n\":%llu}");
		send_batch(&t, &x);
		total += cases[i].n;
		free(prov);
	}
	wt_collect c = {0};
	wt_collect_results(&t, &c, total, 30000);
	for (size_t k = 0; k < c.n; k++) {
		const wt_res *r = &c.r[k];
		size_t i = r->message_id / 100 - 1;
		ck_assert_uint_lt(i, ncases);
		ck_assert_msg(r->status == cases[i].want, "%s msg %llu: got %s '%s', want %s", cases[i].path,
			      (unsigned long long)r->message_id, hr_result_name(r->status), r->reason,
			      hr_result_name(cases[i].want));
		if (cases[i].id_prefix) {
			char want[64];
			snprintf(want, sizeof want, "%s%llu", cases[i].id_prefix, (unsigned long long)r->message_id);
			ck_assert_str_eq(r->provider_id, want);
		} else {
			ck_assert_msg(strstr(r->reason, cases[i].reason), "%s: reason '%s', want '%s' in it",
				      cases[i].path, r->reason, cases[i].reason);
		}
		if (cases[i].want == HR_RES_THROTTLED)
			ck_assert_uint_eq(r->retry_after_ms, 3000);
	}
	/* The reused connections /drop2 closed were noticed, and their requests sent again. */
	ck_assert_int_ge(atomic_load(&sh.dropped), 1);
	/* What the direct path wrote: the headers libcurl wrote, the provider's, no empty one. */
	pthread_mutex_lock(&sh.mu);
	char host[64];
	snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", sh.port);
	const char *want[] = {"POST /chunked HTTP/1.1\r\n", host, "\r\nAccept: */*\r\n", "\r\nX-Test: 1\r\n",
			      "\r\nContent-Type: application/json\r\n", "\r\nIdempotency-Key: ",
			      "\r\nContent-Length: "};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		ck_assert_msg(strstr(sh.first_head, want[i]), "no '%s' in:\n%s", want[i], sh.first_head);
	ck_assert_msg(!strstr(sh.first_head, "X-Empty"), "an empty header was sent:\n%s", sh.first_head);
	pthread_mutex_unlock(&sh.mu);
	wt_worker_stop(&t, SIGTERM, true, 0, 0);
	sh_stop(&sh);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

/* ---- drain ---- */

START_TEST(drain_hands_back_unstarted)
{
	psim ps;
	const char *args[] = {"--fault", "account=*,latency_ms=400", NULL};
	psim_start(&ps, args);
	wt t;
	const char *extra[] = {"--concurrency", "1", "--credit", "4", NULL};
	wt_start(&t, "webhook", "bulk", extra);
	char *prov = http_provider(ps.port, "webhook", "hook", NULL);
	batch x;
	for (uint64_t l = 1; l <= 3; l++) {
		mk(&x, l, HR_CH_WEBHOOK, HR_LANE_BULK, "{\"body\":\"event {{n}}\"}", prov, 2, l * 100, "https://h.test/%llu",
		   "{\"n\":%llu}");
		send_batch(&t, &x);
	}
	/* Lease 1's first job takes 400 ms; its partial RESULTS prove lease 1 started, and
	 * with one send in flight at a time, leases 2 and 3 cannot have started. */
	wt_collect c = {0};
	wt_collect_results(&t, &c, 1, 10000);
	ck_assert_uint_eq(c.r[0].lease_id, 1);
	ck_assert_int_eq(kill(t.pid, SIGTERM), 0);
	wt_collect_bye(&t, &c, 10000);
	ck_assert_int_eq(c.nbye, 2);
	ck_assert_uint_eq(c.bye[0] + c.bye[1], 2 + 3);
	/* The started lease finishes: both its results arrive, then the worker exits 0. */
	wt_collect_results(&t, &c, 2, 10000);
	ck_assert_uint_eq(c.r[1].lease_id, 1);
	ck_assert_int_eq(c.r[0].status, HR_RES_SENT);
	ck_assert_int_eq(c.r[1].status, HR_RES_SENT);
	wt_worker_stop(&t, 0, true, 0, 0);
	/* Nothing of leases 2 and 3 was sent. */
	json_t *st = psim_get_json(&ps, "/v1/stats");
	ck_assert_int_eq(jpath(st, "totals.accepted"), 2);
	json_decref(st);
	psim_stop(&ps);
	free(prov);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

START_TEST(second_signal_exits_at_once)
{
	psim ps;
	const char *args[] = {"--fault", "account=*,latency_ms=10000", NULL};
	psim_start(&ps, args);
	wt t;
	wt_start(&t, "push", "transactional", NULL);
	char *prov = http_provider(ps.port, "push", "slow", NULL);
	batch x;
	mk(&x, 1, HR_CH_PUSH, HR_LANE_TRANSACTIONAL, "{\"title\":\"T\",\"body\":\"B {{n}}\"}", prov, 1, 1, "tok%llu",
	   "{\"n\":%llu}");
	send_batch(&t, &x);
	/* Wait until the send is in flight (the metrics gauge), then signal twice. */
	long long deadline = wt_mono_ms() + 10000;
	for (;;) {
		char *body = NULL;
		ck_assert_int_eq(wt_http_get(t.metrics_port, "/metrics", &body), 200);
		bool inflight = strstr(body, "herald_worker_sends_in_flight{channel=\"push\",lane=\"transactional\"} 1\n");
		free(body);
		if (inflight)
			break;
		ck_assert_msg(wt_mono_ms() < deadline, "the send never got in flight");
		hr_wire_type ty;
		uint8_t *f;
		size_t len;
		if (wt_recv(&t, 20, false, &ty, &f, &len))
			free(f);
	}
	ck_assert_int_eq(kill(t.pid, SIGTERM), 0);
	wt_collect c = {0};
	wt_collect_bye(&t, &c, 10000);
	long long t0 = wt_mono_ms();
	int code = wt_worker_stop(&t, SIGTERM, false, 0, 0);
	ck_assert_int_eq(code, 1);
	ck_assert_msg(wt_mono_ms() - t0 < 2000, "second SIGTERM took %lld ms", wt_mono_ms() - t0);
	psim_stop_sig(&ps, SIGTERM, false);
	free(prov);
	wt_collect_free(&c);
	wt_close(&t);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("worker");
	struct {
		const char *name;
		const TTest *fn;
	} cases[] = {
		{"sink", sink_end_to_end},
		{"render", render_errors_are_permanent},
		{"malformed", malformed_frames_dropped},
		{"smtp", smtp_sends_with_reuse},
		{"smtp_errors", smtp_error_mapping},
		{"smtp_paths", smtp_paths},
		{"http", http_provider_results},
		{"http_edges", http_client_edges},
		{"drain", drain_hands_back_unstarted},
		{"second_signal", second_signal_exits_at_once},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = th_tcase(cases[i].name);
		tcase_set_timeout(tc, 120);
		tcase_add_test(tc, cases[i].fn);
		suite_add_tcase(s, tc);
	}
	return s;
}

int main(void)
{
	char *root = wt_root_new();
	int rc = th_run(suite());
	wt_root_remove(root);
	return rc;
}
