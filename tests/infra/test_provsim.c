/*
 * test_provsim.c -- herald-provsim against the real binary: every test
 * starts it on port 0 in a private temp dir and drives it over HTTP.
 *
 * One check case per concern; ctest runs each case as its own test
 * (CK_RUN_CASE), so a failure names the concern.  Fault tests use a fixed
 * --seed and a sequential client, so their counts are reproducible; the
 * bands they assert are still the binomial ones (about +-4 sigma), so a
 * change of generator that stays honest keeps them passing.
 */
#include <arpa/inet.h>
#include <check.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "psim.h"

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void assert_counts(json_t *st, const char *prefix, long long accepted,
			  long long duplicates)
{
	char k[256];
	snprintf(k, sizeof k, "%s.accepted", prefix);
	ck_assert_msg(jpath(st, k) == accepted, "%s: got %lld, want %lld", k, jpath(st, k), accepted);
	snprintf(k, sizeof k, "%s.duplicates", prefix);
	ck_assert_msg(jpath(st, k) == duplicates, "%s: got %lld, want %lld", k, jpath(st, k),
		      duplicates);
}

/* Waits (deadline) until the receipts file has at least n complete lines. */
static char **wait_receipts(psim *p, size_t n, size_t *got, long long deadline_ms)
{
	long long deadline = mono_ms() + deadline_ms;
	for (;;) {
		char **l = psim_receipts(p, got);
		if (*got >= n || mono_ms() > deadline)
			return l;
		psim_lines_free(l, *got);
		usleep(2000); /* polling a file: no event to wait on */
	}
}

/* --- success path ------------------------------------------------------ */

START_TEST(send_success)
{
	psim p;
	psim_start(&p, NULL);
	presp r;
	long long t0 = now_ns();
	ck_assert_int_eq(psim_send(&p, "sms", "acme-sms", "t1", "+15550001", "m-1", &r), 200);
	json_t *j = json_loads(r.body, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "accepted");
	const char *id = json_string_value(json_object_get(j, "id"));
	ck_assert_msg(id && *id, "no provider id in %s", r.body);
	char first_id[64];
	snprintf(first_id, sizeof first_id, "%s", id);
	json_decref(j);

	/* message_id through the Idempotency-Key header only */
	psim_http(&p, "POST", "/v1/send/messenger/acme-viber", "{\"to\":\"+15550002\",\"tenant\":\"t1\"}",
		  ARGS("Idempotency-Key: idem-7", "Content-Type: application/json"), 0, &r);
	ck_assert_msg(r.status == 200, "got %ld (%s), want 200", r.status, r.body);
	ck_assert_msg(!strstr(r.body, first_id), "provider ids must differ: %s", r.body);
	ck_assert_int_eq(psim_send(&p, "push", "fcm", "t2", "device-token-abc", "m-3", &r), 200);
	ck_assert_int_eq(psim_send(&p, "webhook", "hooks", "t2", "https://example.com/h", "m-4", &r), 200);
	long long t1 = now_ns();

	json_t *st = psim_get_json(&p, "/v1/stats");
	assert_counts(st, "totals", 4, 0);
	assert_counts(st, "tenants.t1", 2, 0);
	assert_counts(st, "tenants.t2", 2, 0);
	assert_counts(st, "accounts.acme-sms", 1, 0);
	assert_counts(st, "accounts.acme-viber", 1, 0);
	ck_assert_int_eq(jpath(st, "totals.received"), 4);
	json_decref(st);
	st = psim_get_json(&p, "/v1/stats/recipient/%2B15550001");
	assert_counts(st, "", 1, 0);
	ck_assert_str_eq(json_string_value(json_object_get(st, "to")), "+15550001");
	json_decref(st);
	st = psim_get_json(&p, "/healthz");
	ck_assert_str_eq(json_string_value(json_object_get(st, "status")), "ok");
	json_decref(st);

	size_t n;
	char **lines = wait_receipts(&p, 4, &n, 5000);
	ck_assert_msg(n == 4, "receipts: got %zu lines, want 4", n);
	bool saw_idem = false;
	for (size_t i = 0; i < n; i++) {
		long long ts;
		char ten[64], acc[64], ch[16], to[64], mid[64];
		ck_assert_msg(sscanf(lines[i], "%lld %63s %63s %15s %63s %63s", &ts, ten, acc, ch, to,
				     mid) == 6, "bad receipt line: %s", lines[i]);
		ck_assert_msg(ts >= t0 && ts <= t1, "receipt time %lld outside [%lld, %lld]", ts, t0, t1);
		if (strcmp(mid, "idem-7") == 0) {
			saw_idem = true;
			ck_assert_str_eq(ch, "messenger");
			ck_assert_str_eq(acc, "acme-viber");
			ck_assert_str_eq(to, "+15550002");
		}
	}
	ck_assert(saw_idem);
	psim_lines_free(lines, n);
	psim_stop(&p);
}
END_TEST

/* --- bad input and auth ------------------------------------------------- */

START_TEST(bad_requests)
{
	psim p;
	psim_start(&p, ARGS("--max-body", "512", "--fault", "account=secure,token=s3cr3t"));
	static const struct {
		const char *path, *body;
		long want;
		const char *detail; /* substring of the error */
	} cases[] = {
		{"/v1/send/sms/a", "{\"to\":\"+1\",\"tenant\":\"t\",", 400, "invalid JSON"},
		{"/v1/send/sms/a", "[1,2]", 400, "JSON object"},
		{"/v1/send/sms/a", "{\"tenant\":\"t\",\"message_id\":\"m\"}", 400, "to: missing"},
		{"/v1/send/sms/a", "{\"to\":\"+1\",\"message_id\":\"m\"}", 400, "tenant: missing"},
		{"/v1/send/sms/a", "{\"to\":\"+1\",\"tenant\":\"t\"}", 400, "message_id"},
		{"/v1/send/sms/a", "{\"to\":\"+1\",\"tenant\":\"t x\",\"message_id\":\"m\"}", 400, "tenant"},
		{"/v1/send/sms/a", "{\"to\":5,\"tenant\":\"t\",\"message_id\":\"m\"}", 400, "to:"},
		{"/v1/send/sms/a", "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"m\",\"text\":3}", 400, "text"},
		{"/v1/send/sms/a", "", 400, "invalid JSON"},
		{"/v1/send/fax/a", "{}", 404, "not_found"},
		{"/v1/send/sms/", "{}", 404, "not_found"},
		{"/v1/nope", NULL, 405, "method"},
		{"/v1/send/sms/secure", "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"m\"}", 401, "unauthorized"},
	};
	presp r;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		psim_http(&p, "POST", cases[i].path, cases[i].body, NULL, 0, &r);
		ck_assert_msg(r.status == cases[i].want, "case %zu %s %s: got %ld, want %ld (%s)", i,
			      cases[i].path, cases[i].body, r.status, cases[i].want, r.body);
		ck_assert_msg(strstr(r.body, cases[i].detail), "case %zu: body %s lacks '%s'", i,
			      r.body, cases[i].detail);
	}
	/* oversized body */
	char big[2048];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	psim_http(&p, "POST", "/v1/send/sms/a", big, NULL, 0, &r);
	ck_assert_msg(r.status == 413, "oversized: got %ld, want 413", r.status);
	/* Idempotency-Key that contradicts the body */
	psim_http(&p, "POST", "/v1/send/sms/a", "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"m\"}",
		  ARGS("Idempotency-Key: other"), 0, &r);
	ck_assert_int_eq(r.status, 400);
	/* auth: wrong token, then the right one */
	const char *body = "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"m\"}";
	psim_http(&p, "POST", "/v1/send/sms/secure", body, ARGS("Authorization: Bearer nope"), 0, &r);
	ck_assert_int_eq(r.status, 401);
	psim_http(&p, "POST", "/v1/send/sms/secure", body, ARGS("Authorization: s3cr3t"), 0, &r);
	ck_assert_int_eq(r.status, 401);
	psim_http(&p, "POST", "/v1/send/sms/secure", body, ARGS("Authorization: Bearer s3cr3t"), 0, &r);
	ck_assert_msg(r.status == 200, "right token: got %ld (%s)", r.status, r.body);

	json_t *st = psim_get_json(&p, "/v1/stats");
	ck_assert_int_eq(jpath(st, "totals.accepted"), 1);
	/* the nine 400 cases above, the 413, the key mismatch */
	ck_assert_int_eq(jpath(st, "totals.bad_request_400"), 11);
	ck_assert_int_eq(jpath(st, "totals.unauthorized_401"), 3);
	ck_assert_int_eq(jpath(st, "accounts.secure.unauthorized_401"), 3);
	json_decref(st);
	psim_stop(&p);
}
END_TEST

/* --- fault injection ---------------------------------------------------- */

START_TEST(fault_probabilities)
{
	psim p;
	psim_start(&p, ARGS("--seed", "42", "--fault", "account=*,p429=0.2,retry_after=3", "--fault",
			    "account=flaky,p429=0,p500=0.1,p503=0.05"));
	presp r;
	int n429 = 0, n200 = 0, n500 = 0, n503 = 0;
	char id[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(id, sizeof id, "a-%d", i);
		long s = psim_send(&p, "sms", "acct", "t", "+1555", id, &r);
		if (s == 429) {
			n429++;
			ck_assert_msg(strcmp(r.retry_after, "3") == 0, "Retry-After '%s', want 3",
				      r.retry_after);
		} else {
			ck_assert_msg(s == 200, "got %ld", s);
			n200++;
		}
	}
	/* Binomial(1000, 0.2): mean 200, sigma 12.6 */
	ck_assert_msg(n429 >= 150 && n429 <= 250, "429s: got %d, want 200 +- 50", n429);
	for (int i = 0; i < 1000; i++) {
		snprintf(id, sizeof id, "f-%d", i);
		long s = psim_send(&p, "sms", "flaky", "t", "+1555", id, &r);
		n500 += s == 500;
		n503 += s == 503;
		ck_assert_msg(s == 200 || s == 500 || s == 503, "flaky: got %ld", s);
	}
	/* Binomial(1000, 0.1): 100 +- 4 sigma (38); (1000, 0.05): 50 +- 28 */
	ck_assert_msg(n500 >= 62 && n500 <= 138, "500s: got %d, want 100 +- 38", n500);
	ck_assert_msg(n503 >= 22 && n503 <= 78, "503s: got %d, want 50 +- 28", n503);
	json_t *st = psim_get_json(&p, "/v1/stats");
	ck_assert_int_eq(jpath(st, "totals.throttled_429"), n429);
	ck_assert_int_eq(jpath(st, "accounts.acct.accepted"), n200);
	ck_assert_int_eq(jpath(st, "accounts.flaky.errors_5xx"), n500 + n503);
	ck_assert_int_eq(jpath(st, "totals.received"), 2000);
	json_decref(st);
	psim_stop(&p);
}
END_TEST

/* Outcome string of 200 sends with p429=0.5 under a given seed. */
static void outcomes(const char *seed, char out[201])
{
	psim p;
	psim_start(&p, ARGS("--seed", seed, "--fault", "account=*,p429=0.5"));
	presp r;
	for (int i = 0; i < 200; i++) {
		char id[32];
		snprintf(id, sizeof id, "s-%d", i);
		out[i] = psim_send(&p, "sms", "a", "t", "+1", id, &r) == 200 ? 'o' : 'x';
	}
	out[200] = '\0';
	psim_stop(&p);
}

START_TEST(fault_seeded)
{
	char a[201], b[201], c[201];
	outcomes("7", a);
	outcomes("7", b);
	outcomes("8", c);
	ck_assert_str_eq(a, b);
	ck_assert_str_ne(a, c);
}
END_TEST

START_TEST(rate_ceiling)
{
	psim p;
	psim_start(&p, ARGS("--fault", "account=capped,rate_429_above=50"));
	presp r;
	long long t0 = now_ns();
	int ok = 0, throttled = 0;
	for (int i = 0; i < 150; i++) {
		char id[32];
		snprintf(id, sizeof id, "r-%d", i);
		long s = psim_send(&p, "sms", "capped", "t", "+1", id, &r);
		if (s == 429) {
			throttled++;
			ck_assert_str_eq(r.retry_after, "1");
		} else {
			ck_assert_int_eq(s, 200);
			ok++;
		}
	}
	long long t1 = now_ns();
	/* Fixed windows on whole wall-clock seconds: the burst spans `w` of them. */
	long long w = t1 / 1000000000LL - t0 / 1000000000LL + 1;
	ck_assert_msg(ok <= 50 * w && throttled >= 150 - 50 * w,
		      "accepted %d, throttled %d over %lld windows", ok, throttled, w);
	ck_assert_msg(ok >= 50, "accepted %d, want at least one full window (50)", ok);
	/* Another account is not capped. */
	for (int i = 0; i < 60; i++) {
		char id[32];
		snprintf(id, sizeof id, "u-%d", i);
		ck_assert_int_eq(psim_send(&p, "sms", "free", "t", "+1", id, &r), 200);
	}
	/* No second of server time holds more than 50 accepted. */
	size_t n;
	char **lines = wait_receipts(&p, (size_t)ok + 60, &n, 5000);
	ck_assert_int_eq(n, (size_t)ok + 60);
	long long sec[8] = {0};
	int cnt[8] = {0};
	for (size_t i = 0; i < n; i++) {
		long long ts;
		char acc[64];
		ck_assert_int_eq(sscanf(lines[i], "%lld %*s %63s", &ts, acc), 2);
		if (strcmp(acc, "capped") != 0)
			continue;
		for (int k = 0; k < 8; k++)
			if (cnt[k] == 0 || sec[k] == ts / 1000000000LL) {
				sec[k] = ts / 1000000000LL;
				cnt[k]++;
				ck_assert_msg(cnt[k] <= 50, "second %lld: %d accepted, want <= 50",
					      sec[k], cnt[k]);
				break;
			}
	}
	psim_lines_free(lines, n);
	json_t *st = psim_get_json(&p, "/v1/stats");
	ck_assert_int_eq(jpath(st, "accounts.capped.throttled_429"), throttled);
	json_decref(st);
	psim_stop(&p);
}
END_TEST

static size_t sink(char *p, size_t sz, size_t n, void *arg)
{
	return sz * n;
}

/* n concurrent sends to one account on one multi handle (one connection
 * each); codes[i] and results[i] per request. */
static void concurrent(psim *p, const char *account, int n, long timeout_ms, long *codes,
		       CURLcode *results)
{
	CURLM *m = curl_multi_init();
	CURL *h[64];
	int idx[64];
	char bodies[64][128], url[256];
	ck_assert_int_le(n, 64);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/send/sms/%s", p->port, account);
	for (int i = 0; i < n; i++) {
		idx[i] = i;
		h[i] = curl_easy_init();
		snprintf(bodies[i], sizeof bodies[i],
			 "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"c-%d\"}", i);
		curl_easy_setopt(h[i], CURLOPT_URL, url);
		curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, bodies[i]);
		curl_easy_setopt(h[i], CURLOPT_TIMEOUT_MS, timeout_ms);
		curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h[i], CURLOPT_PRIVATE, &idx[i]);
		curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, sink);
		curl_multi_add_handle(m, h[i]);
		codes[i] = -1;
	}
	int running = n;
	while (running) {
		ck_assert_int_eq(curl_multi_perform(m, &running), CURLM_OK);
		if (running)
			ck_assert_int_eq(curl_multi_poll(m, NULL, 0, 1000, NULL), CURLM_OK);
	}
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(m, &left))) {
		int *ip;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&ip);
		results[*ip] = msg->data.result;
		codes[*ip] = 0;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &codes[*ip]);
	}
	for (int i = 0; i < n; i++) {
		curl_multi_remove_handle(m, h[i]);
		curl_easy_cleanup(h[i]);
	}
	curl_multi_cleanup(m);
}

START_TEST(latency_does_not_block)
{
	psim p;
	psim_start(&p, ARGS("--threads", "1", "--fault", "account=slow,latency_ms=300"));
	presp r;
	ck_assert_int_eq(psim_send(&p, "sms", "slow", "t", "+1", "one", &r), 200);
	ck_assert_msg(r.secs >= 0.29, "latency: answered after %.3f s, want >= 0.3", r.secs);
	/* 20 at once on a single server thread: held, not slept, so all finish
	 * in about one latency (serially they would take 6 s). */
	long codes[20];
	CURLcode res[20];
	long long t0 = mono_ms();
	concurrent(&p, "slow", 20, 10000, codes, res);
	long long took = mono_ms() - t0;
	for (int i = 0; i < 20; i++)
		ck_assert_msg(res[i] == CURLE_OK && codes[i] == 200, "request %d: curl %d, http %ld", i,
			      res[i], codes[i]);
	ck_assert_msg(took >= 290 && took < 3000, "20 concurrent took %lld ms, want 300..3000", took);
	/* an account without latency answers at once */
	ck_assert_int_eq(psim_send(&p, "sms", "fast", "t", "+1", "f", &r), 200);
	ck_assert_msg(r.secs < 0.25, "fast account took %.3f s", r.secs);
	psim_stop(&p);
}
END_TEST

START_TEST(timeout_held_then_released)
{
	psim p;
	psim_start(&p, ARGS("--threads", "1", "--fault", "account=hang,ptimeout=1"));
	presp r;
	psim_http(&p, "POST", "/v1/send/sms/hang", "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"h1\"}",
		  NULL, 300, &r);
	ck_assert_msg(r.rc == CURLE_OPERATION_TIMEDOUT, "want a client timeout, got curl %d http %ld",
		      r.rc, r.status);
	/* the only server thread is free for others while that one is held */
	ck_assert_int_eq(psim_send(&p, "sms", "ok", "t", "+1", "o1", &r), 200);
	ck_assert_msg(r.secs < 0.25, "other account took %.3f s", r.secs);
	json_t *st = psim_get_json(&p, "/v1/stats");
	ck_assert_int_eq(jpath(st, "accounts.hang.timeouts"), 1);
	ck_assert_int_eq(jpath(st, "accounts.hang.accepted"), 0);
	json_decref(st);
	/* hold_ms bounds a timeout: the server closes the socket unanswered */
	psim_http(&p, "POST", "/v1/control/faults", "{\"account\":\"hang\",\"hold_ms\":200}", NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	psim_http(&p, "POST", "/v1/send/sms/hang", "{\"to\":\"+1\",\"tenant\":\"t\",\"message_id\":\"h2\"}",
		  NULL, 5000, &r);
	ck_assert_msg(r.rc == CURLE_GOT_NOTHING && r.secs >= 0.19 && r.secs < 4,
		      "after hold_ms: curl %d after %.3f s, want GOT_NOTHING after ~0.2 s", r.rc, r.secs);
	psim_stop(&p);
}
END_TEST

struct held_args {
	psim *p;
	long codes[5];
	CURLcode res[5];
};

static void *held_clients(void *arg)
{
	struct held_args *a = arg;
	concurrent(a->p, "hang", 5, 20000, a->codes, a->res);
	return NULL;
}

START_TEST(sigterm_with_held_requests)
{
	psim p;
	psim_start(&p, ARGS("--fault", "account=hang,ptimeout=1"));
	struct held_args a = {.p = &p};
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, held_clients, &a), 0);
	/* wait until all five are held */
	long long deadline = mono_ms() + 10000;
	for (;;) {
		json_t *st = psim_get_json(&p, "/v1/stats");
		long long n = jpath(st, "totals.timeouts");
		json_decref(st);
		if (n == 5)
			break;
		ck_assert_msg(mono_ms() < deadline, "only %lld requests held", n);
		usleep(2000);
	}
	long long t0 = mono_ms();
	psim_stop(&p); /* asserts exit 0, clean stderr */
	ck_assert_msg(mono_ms() - t0 < 5000, "stop took %lld ms", mono_ms() - t0);
	pthread_join(t, NULL);
	for (int i = 0; i < 5; i++)
		ck_assert_msg(a.res[i] != CURLE_OK && a.res[i] != CURLE_OPERATION_TIMEDOUT,
			      "held request %d: curl %d, want the connection closed at shutdown", i,
			      a.res[i]);
}
END_TEST

START_TEST(sigint_stops_cleanly)
{
	psim p;
	psim_start(&p, NULL);
	presp r;
	ck_assert_int_eq(psim_send(&p, "sms", "a", "t", "+1", "x", &r), 200);
	ck_assert_int_eq(psim_stop_sig(&p, SIGINT, true), 0);
}
END_TEST

/* --- duplicates, stats, reset ------------------------------------------ */

START_TEST(duplicates_counted)
{
	psim p;
	psim_start(&p, NULL);
	presp r;
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(psim_send(&p, "sms", "a", "t1", "+1555", "same", &r), 200);
	/* same id on another account is a different message */
	ck_assert_int_eq(psim_send(&p, "sms", "b", "t1", "+1555", "same", &r), 200);
	/* and many distinct ids are never called duplicates */
	for (int i = 0; i < 2000; i++) {
		char id[32];
		snprintf(id, sizeof id, "u%d", i);
		ck_assert_int_eq(psim_send(&p, "sms", "a", "t2", "+1666", id, &r), 200);
	}
	json_t *st = psim_get_json(&p, "/v1/stats");
	assert_counts(st, "totals", 2004, 2);
	assert_counts(st, "accounts.a", 2003, 2);
	assert_counts(st, "accounts.b", 1, 0);
	assert_counts(st, "tenants.t1", 4, 2);
	assert_counts(st, "tenants.t2", 2000, 0);
	json_decref(st);
	st = psim_get_json(&p, "/v1/stats/recipient/+1555");
	assert_counts(st, "", 4, 2);
	json_decref(st);
	psim_stop(&p);
}
END_TEST

START_TEST(stats_and_reset)
{
	psim p;
	psim_start(&p, ARGS("--fault", "account=thr,p429=1"));
	presp r;
	ck_assert_int_eq(psim_send(&p, "sms", "a", "alpha", "+100", "m1", &r), 200);
	ck_assert_int_eq(psim_send(&p, "sms", "a", "alpha", "+200", "m2", &r), 200);
	ck_assert_int_eq(psim_send(&p, "sms", "a", "beta", "+100", "m3", &r), 200);
	ck_assert_int_eq(psim_send(&p, "sms", "thr", "beta", "+100", "m4", &r), 429);
	json_t *st = psim_get_json(&p, "/v1/stats");
	ck_assert_int_eq(jpath(st, "tenants.alpha.accepted"), 2);
	ck_assert_int_eq(jpath(st, "tenants.beta.accepted"), 1);
	ck_assert_int_eq(jpath(st, "tenants.beta.received"), 2);
	ck_assert_int_eq(jpath(st, "tenants.beta.throttled_429"), 1);
	ck_assert_int_eq(jpath(st, "accounts.thr.throttled_429"), 1);
	ck_assert_int_eq(jpath(st, "totals.received"), 4);
	json_decref(st);
	st = psim_get_json(&p, "/v1/stats/recipient/+100");
	assert_counts(st, "", 2, 0);
	json_decref(st);
	st = psim_get_json(&p, "/v1/stats/recipient/+999");
	assert_counts(st, "", 0, 0);
	json_decref(st);

	psim_http(&p, "POST", "/v1/control/reset", "", NULL, 0, &r);
	ck_assert_int_eq(r.status, 200);
	st = psim_get_json(&p, "/v1/stats");
	ck_assert_int_eq(jpath(st, "totals.received"), 0);
	ck_assert_int_eq(jpath(st, "totals.accepted"), 0);
	ck_assert_int_eq(json_object_size(json_object_get(st, "tenants")), 0);
	json_decref(st);
	st = psim_get_json(&p, "/v1/stats/recipient/+100");
	assert_counts(st, "", 0, 0);
	json_decref(st);
	/* the duplicate detector was reset too */
	ck_assert_int_eq(psim_send(&p, "sms", "a", "alpha", "+100", "m1", &r), 200);
	st = psim_get_json(&p, "/v1/stats");
	assert_counts(st, "totals", 1, 0);
	json_decref(st);
	psim_stop(&p);
}
END_TEST

/* --- control endpoint --------------------------------------------------- */

START_TEST(control_endpoint)
{
	psim p;
	psim_start(&p, ARGS("--control-token", "ctl", "--fault", "account=x,token=acct-secret"));
	const char *const auth[] = {"Authorization: Bearer ctl", NULL};
	presp r;
	psim_http(&p, "POST", "/v1/control/faults", "{\"account\":\"y\",\"p500\":1}", NULL, 0, &r);
	ck_assert_int_eq(r.status, 401);
	psim_http(&p, "POST", "/v1/control/faults", "{\"account\":\"y\",\"p500\":1}",
		  ARGS("Authorization: Bearer wrong"), 0, &r);
	ck_assert_int_eq(r.status, 401);
	psim_http(&p, "POST", "/v1/control/reset", "", NULL, 0, &r);
	ck_assert_int_eq(r.status, 401);

	ck_assert_int_eq(psim_send(&p, "sms", "y", "t", "+1", "k1", &r), 200);
	psim_http(&p, "POST", "/v1/control/faults", "{\"account\":\"y\",\"p500\":1}", auth, 0, &r);
	ck_assert_msg(r.status == 200, "got %ld: %s", r.status, r.body);
	ck_assert_int_eq(psim_send(&p, "sms", "y", "t", "+1", "k2", &r), 500);
	ck_assert_int_eq(psim_send(&p, "sms", "z", "t", "+1", "k3", &r), 200); /* others untouched */
	psim_http(&p, "POST", "/v1/control/faults", "{\"account\":\"y\",\"p500\":0}", auth, 0, &r);
	ck_assert_int_eq(psim_send(&p, "sms", "y", "t", "+1", "k4", &r), 200);
	/* the default applies to accounts without their own configuration */
	psim_http(&p, "POST", "/v1/control/faults", "{\"account\":\"*\",\"p503\":1}", auth, 0, &r);
	ck_assert_int_eq(psim_send(&p, "sms", "z", "t", "+1", "k5", &r), 503);
	ck_assert_int_eq(psim_send(&p, "sms", "y", "t", "+1", "k6", &r), 200);

	static const char *const bad[] = {
		"{\"account\":\"y\",\"p500\":2}",
		"{\"account\":\"y\",\"p500\":\"x\"}",
		"{\"account\":\"y\",\"bogus\":1}",
		"{\"account\":\"y\",\"p429\":0.6,\"p500\":0.6}",
		"{\"account\":\"y\",\"latency_ms\":1.5}",
		"{\"account\":\"\"}",
		"not json",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		psim_http(&p, "POST", "/v1/control/faults", bad[i], auth, 0, &r);
		ck_assert_msg(r.status == 400, "%s: got %ld, want 400", bad[i], r.status);
	}
	/* a rejected change changed nothing */
	ck_assert_int_eq(psim_send(&p, "sms", "y", "t", "+1", "k7", &r), 200);

	psim_http(&p, "GET", "/v1/control/faults", NULL, auth, 0, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_msg(!strstr(r.body, "acct-secret") && strstr(r.body, "\"token\":\"***\""),
		      "token not masked: %s", r.body);
	psim_http(&p, "POST", "/v1/control/reset", "", auth, 0, &r);
	ck_assert_int_eq(r.status, 200);
	psim_stop(&p);
}
END_TEST

/* --- receipts file ------------------------------------------------------ */

START_TEST(receipts_flushed)
{
	psim p;
	psim_start(&p, ARGS("--threads", "2"));
	presp r;
	long long t0 = now_ns();
	for (int i = 0; i < 300; i++) {
		char id[32], to[32];
		snprintf(id, sizeof id, "rc-%d", i);
		snprintf(to, sizeof to, "+1%03d", i % 7);
		ck_assert_int_eq(psim_send(&p, i % 2 ? "sms" : "push", "acc", "ten", to, id, &r), 200);
	}
	long long t1 = now_ns();
	/* flushed while running (every 50 ms), not only at exit */
	size_t n;
	char **lines = wait_receipts(&p, 300, &n, 2000);
	ck_assert_msg(n == 300, "receipts while running: %zu lines, want 300", n);
	static char seen[300];
	memset(seen, 0, sizeof seen);
	for (size_t i = 0; i < n; i++) {
		long long ts;
		char ten[32], acc[32], ch[16], to[32], mid[32], extra[8];
		int k = sscanf(lines[i], "%lld %31s %31s %15s %31s %31s %7s", &ts, ten, acc, ch, to,
			       mid, extra);
		ck_assert_msg(k == 6, "line %zu has %d fields: %s", i, k, lines[i]);
		ck_assert(ts >= t0 && ts <= t1);
		int id = -1;
		ck_assert_int_eq(sscanf(mid, "rc-%d", &id), 1);
		ck_assert(id >= 0 && id < 300 && !seen[id]);
		seen[id] = 1;
		ck_assert_str_eq(ch, id % 2 ? "sms" : "push");
	}
	psim_lines_free(lines, n);
	/* after a clean stop: flushed once more, nothing duplicated */
	psim_stop_keep(&p);
	lines = psim_receipts(&p, &n);
	ck_assert_int_eq(n, 300);
	psim_lines_free(lines, n);
	psim_cleanup(&p);
}
END_TEST

/* --- delivery receipts -------------------------------------------------- */

static pthread_mutex_t dlr_mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *dlr_got; /* array of received bodies */

struct upload {
	char buf[4096];
	size_t len;
};

static enum MHD_Result dlr_handler(void *cls, struct MHD_Connection *c, const char *url,
				   const char *method, const char *version, const char *data,
				   size_t *size, void **req)
{
	struct upload *u = *req;
	if (!u) {
		*req = u = calloc(1, sizeof *u);
		return MHD_YES;
	}
	if (*size) {
		size_t n = *size < sizeof u->buf - 1 - u->len ? *size : sizeof u->buf - 1 - u->len;
		memcpy(u->buf + u->len, data, n);
		u->len += n;
		*size = 0;
		return MHD_YES;
	}
	json_t *j = json_loadb(u->buf, u->len, 0, NULL);
	pthread_mutex_lock(&dlr_mu);
	json_array_append_new(dlr_got, j ? j : json_string(u->buf));
	pthread_mutex_unlock(&dlr_mu);
	struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ok = MHD_queue_response(c, 204, resp);
	MHD_destroy_response(resp);
	return ok;
}

static void dlr_done(void *cls, struct MHD_Connection *c, void **req,
		     enum MHD_RequestTerminationCode toe)
{
	free(*req);
	*req = NULL;
}

START_TEST(dlr_posted)
{
	dlr_got = json_array();
	struct MHD_Daemon *d = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, dlr_handler, NULL,
		MHD_OPTION_SOCK_ADDR,
		(struct sockaddr *)&(struct sockaddr_in){.sin_family = AF_INET,
							 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
		MHD_OPTION_NOTIFY_COMPLETED, dlr_done, NULL, MHD_OPTION_END);
	ck_assert_ptr_nonnull(d);
	int dport = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
	char spec[256];
	snprintf(spec, sizeof spec, "account=dl,dlr_url=http://127.0.0.1:%d/dlr,fail_to=+1555000",
		 dport);
	psim p;
	psim_start(&p, ARGS("--fault", spec));
	presp r;
	char id_ok[64], id_bad[64];
	ck_assert_int_eq(psim_send(&p, "sms", "dl", "t", "+4912345", "good-1", &r), 200);
	json_t *j = json_loads(r.body, 0, NULL);
	snprintf(id_ok, sizeof id_ok, "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	ck_assert_int_eq(psim_send(&p, "sms", "dl", "t", "+15550001234", "bad-1", &r), 200);
	j = json_loads(r.body, 0, NULL);
	snprintf(id_bad, sizeof id_bad, "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	/* an account without dlr_url sends none */
	ck_assert_int_eq(psim_send(&p, "sms", "other", "t", "+4912345", "none-1", &r), 200);

	long long deadline = mono_ms() + 10000;
	for (;;) {
		pthread_mutex_lock(&dlr_mu);
		size_t n = json_array_size(dlr_got);
		pthread_mutex_unlock(&dlr_mu);
		if (n >= 2)
			break;
		ck_assert_msg(mono_ms() < deadline, "got %zu DLRs, want 2", n);
		usleep(2000);
	}
	pthread_mutex_lock(&dlr_mu);
	ck_assert_int_eq(json_array_size(dlr_got), 2);
	size_t i;
	json_t *v;
	bool good = false, bad = false;
	json_array_foreach(dlr_got, i, v) {
		const char *mid = json_string_value(json_object_get(v, "message_id"));
		const char *pid = json_string_value(json_object_get(v, "provider_id"));
		const char *status = json_string_value(json_object_get(v, "status"));
		ck_assert_msg(mid && pid && status, "bad DLR body");
		if (strcmp(mid, "good-1") == 0) {
			good = true;
			ck_assert_str_eq(pid, id_ok);
			ck_assert_str_eq(status, "delivered");
		} else {
			ck_assert_str_eq(mid, "bad-1");
			bad = true;
			ck_assert_str_eq(pid, id_bad);
			ck_assert_str_eq(status, "undelivered");
			ck_assert_str_eq(json_string_value(json_object_get(v, "reason")), "hard_bounce");
		}
	}
	pthread_mutex_unlock(&dlr_mu);
	ck_assert(good && bad);
	/* the simulator counts a DLR once the receiver's answer is back, which
	 * can be just after the receiver recorded it */
	deadline = mono_ms() + 10000;
	for (;;) {
		json_t *st = psim_get_json(&p, "/v1/stats");
		long long sent = jpath(st, "dlr.sent"), failed = jpath(st, "dlr.failed");
		json_decref(st);
		ck_assert_int_eq(failed, 0);
		if (sent == 2)
			break;
		ck_assert_msg(sent < 2 && mono_ms() < deadline, "dlr.sent %lld, want 2", sent);
		usleep(2000);
	}
	psim_stop(&p);
	MHD_stop_daemon(d);
	json_decref(dlr_got);
}
END_TEST

/* --- command line ------------------------------------------------------- */

static int run_cli(const char *const *args, char *err, size_t errlen)
{
	char path[] = "/tmp/provsim-cli-XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		const char *argv[16] = {PROVSIM_BIN};
		int n = 1;
		for (int i = 0; args[i] && n < 15; i++)
			argv[n++] = args[i];
		argv[n] = NULL;
		dup2(fd, 2);
		dup2(fd, 1);
		execv(PROVSIM_BIN, (char *const *)argv);
		_exit(127);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ssize_t n = pread(fd, err, errlen - 1, 0);
	err[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* --inbox N keeps the last N accepted texts per recipient, newest first; off by default. */
START_TEST(inbox_keeps_last_texts)
{
	psim p, q;
	presp r;
	psim_start(&q, NULL);
	psim_http(&q, "GET", "/v1/inbox/%2B15550009", NULL, NULL, 0, &r);
	ck_assert_msg(r.status == 404, "without --inbox: got %ld", r.status);
	psim_stop(&q);

	psim_start(&p, ARGS("--inbox", "3"));
	const char *const json[] = {"Content-Type: application/json", NULL};
	psim_http(&p, "POST", "/v1/send/sms/acc", "{\"to\":\"+15550009\",\"tenant\":\"t1\",\"message_id\":\"m1\",\"text\":\"code 1111\"}", json, 0, &r);
	ck_assert_int_eq(r.status, 200);
	psim_http(&p, "POST", "/v1/send/sms/acc", "{\"to\":\"+15550008\",\"tenant\":\"t1\",\"message_id\":\"m2\",\"text\":\"other\"}", json, 0, &r);
	psim_http(&p, "POST", "/v1/send/sms/acc", "{\"to\":\"+15550009\",\"tenant\":\"t1\",\"message_id\":\"m3\",\"text\":\"code 2222\"}", json, 0, &r);
	/* a duplicate send of m3 is not a new message */
	psim_http(&p, "POST", "/v1/send/sms/acc", "{\"to\":\"+15550009\",\"tenant\":\"t1\",\"message_id\":\"m3\",\"text\":\"code 2222\"}", json, 0, &r);
	json_t *j = psim_get_json(&p, "/v1/inbox/%2B15550009");
	json_t *m = json_object_get(j, "messages");
	ck_assert_int_eq(json_array_size(m), 2);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 0), "text")), "code 2222");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 1), "text")), "code 1111");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 1), "message_id")), "m1");
	json_decref(j);
	/* the ring holds 3: a 4th message pushes out m1 */
	psim_http(&p, "POST", "/v1/send/push/acc", "{\"to\":\"+15550007\",\"tenant\":\"t1\",\"message_id\":\"m4\",\"body\":{\"title\":\"T\"}}", json, 0, &r);
	j = psim_get_json(&p, "/v1/inbox/%2B15550009");
	ck_assert_int_eq(json_array_size(json_object_get(j, "messages")), 1);
	json_decref(j);
	j = psim_get_json(&p, "/v1/inbox/%2B15550007");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "messages"), 0), "text")),
			 "{\"title\":\"T\"}");
	json_decref(j);
	psim_stop(&p);
}
END_TEST

START_TEST(cli_rejects_bad_options)
{
	static const struct {
		const char *args[4];
		const char *want;
	} cases[] = {
		{{"--threads", "0"}, "--threads"},
		{{"--port", "70000"}, "--port"},
		{{"--fault", "account=*,p429=2"}, "p429"},
		{{"--fault", "account=*,nope=1"}, "unknown key"},
		{{"--fault", "p429"}, "key=value"},
		{{"--seed", "abc"}, "--seed"},
		{{"--bogus"}, "bad command line"},
		{{"--bind", "not-an-ip"}, "bind address"},
		{{"extra"}, "unexpected argument"},
	};
	char err[4096];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int code = run_cli(cases[i].args, err, sizeof err);
		ck_assert_msg(code == 1, "case %zu: exit %d, want 1 (%s)", i, code, err);
		ck_assert_msg(strstr(err, cases[i].want) && strstr(err, "fatal"),
			      "case %zu: output lacks '%s': %s", i, cases[i].want, err);
		ck_assert_msg(!strstr(err, "listening"), "case %zu listened anyway", i);
	}
	ck_assert_int_eq(run_cli((const char *const[]){"--help", NULL}, err, sizeof err), 0);
	ck_assert_msg(strstr(err, "--rate") == NULL && strstr(err, "--fault"), "help: %s", err);
}
END_TEST

/* --- the harness itself -------------------------------------------------- */

static int meta_fd = -1;

START_TEST(inner_failing_test)
{
	psim p;
	psim_start(&p, NULL);
	dprintf(meta_fd, "%d %s\n", (int)p.pid, p.dir);
	ck_assert_msg(0, "deliberate failure with a live simulator");
}
END_TEST

START_TEST(harness_cleans_up_on_failure)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	meta_fd = fds[1];
	char *outer = strdup(getenv("PSIM_ROOT"));
	char *inner = psim_root_new(); /* what main() does for the real suite */
	Suite *s = suite_create("inner");
	TCase *tc = tcase_create("inner");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, inner_failing_test);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_FORK);
	srunner_set_log(sr, "/dev/null");
	srunner_run(sr, "inner", "inner", CK_SILENT);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	close(fds[1]);
	ck_assert_int_eq(failed, 1);
	char kept[400];
	snprintf(kept, sizeof kept, "%s", inner);
	psim_root_remove(inner);
	setenv("PSIM_ROOT", outer, 1);
	free(outer);
	char buf[512] = {0};
	ck_assert_int_gt(read(fds[0], buf, sizeof buf - 1), 0);
	close(fds[0]);
	int pid;
	char dir[400];
	ck_assert_int_eq(sscanf(buf, "%d %399s", &pid, dir), 2);
	long long deadline = mono_ms() + 10000;
	while (kill(pid, 0) == 0) {
		ck_assert_msg(mono_ms() < deadline, "simulator %d survived a failed test", pid);
		usleep(2000);
	}
	ck_assert_msg(strncmp(dir, kept, strlen(kept)) == 0, "dir %s not under root %s", dir, kept);
	ck_assert_msg(access(dir, F_OK) != 0, "temp dir %s survived a failed test", dir);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("provsim");
	struct {
		const char *name;
		const TTest *t;
	} cases[] = {
		{"send", send_success},
		{"badreq", bad_requests},
		{"faults", fault_probabilities},
		{"seed", fault_seeded},
		{"rate", rate_ceiling},
		{"latency", latency_does_not_block},
		{"timeout", timeout_held_then_released},
		{"sigterm", sigterm_with_held_requests},
		{"sigint", sigint_stops_cleanly},
		{"dedupe", duplicates_counted},
		{"stats", stats_and_reset},
		{"control", control_endpoint},
		{"receipts", receipts_flushed},
		{"dlr", dlr_posted},
		{"cli", cli_rejects_bad_options},
		{"inbox", inbox_keeps_last_texts},
		{"harness", harness_cleans_up_on_failure},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_set_timeout(tc, 120);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	return s;
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	char *root = psim_root_new();
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int run = srunner_ntests_run(sr), failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	psim_root_remove(root);
	curl_global_cleanup();
	if (run == 0) {
		fprintf(stderr, "no test ran (CK_RUN_CASE=%s?)\n", getenv("CK_RUN_CASE"));
		return 1;
	}
	return failed ? 1 : 0;
}
