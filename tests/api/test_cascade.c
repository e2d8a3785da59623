/*
 * test_cascade.c -- the channel cascade end to end (docs/cascade.md): real
 * herald-api, herald-scheduler, herald-worker processes (messenger and sms,
 * both lanes) and herald-provsim as the messenger and SMS provider, which
 * posts delivery receipts to herald-api's callback endpoint.  Herald time is
 * moved with hr_clock_advance (what `heraldctl clock advance` does): nothing
 * sleeps through a validity window.
 *
 * Checked: a messenger message not delivered within its window falls back to
 * SMS, which is delivered, and the cascade stops there; a delivered messenger
 * message never falls back; a failed first channel falls back at once
 * (without waiting for the window); invalid fallback lists (a channel twice,
 * the message's own channel, no address) are 422 naming the pointer and write
 * nothing; a campaign with a fallback sends it only to the contacts without a
 * delivery receipt, as one batch; cost per step, per message and per channel
 * in the campaign report.
 */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "apitest.h"
#include "clock.h"
#include "db.h"
#include "harness.h"
#include "providers.h"
#include "psim.h"

typedef struct stack {
	psim ps;
	char dir[512];
	pid_t sched, workers[4];
	int sched_out;
	char ep[2][128];
} stack;

static long long ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void)
{
	struct timespec d = {0, 20000000};
	nanosleep(&d, NULL);
}

static void sched_up(stack *s)
{
	char log[600];
	snprintf(log, sizeof log, "%s/scheduler.log", s->dir);
	char *env[] = {hr_sprintf("HERALD_DATABASE_URL=%s", the_dsn), hr_sprintf("HERALD_MASTER_KEY=%s", MASTER_HEX),
		       hr_strdup("HERALD_SCHED_BIND_TRANSACTIONAL=tcp://127.0.0.1:*"),
		       hr_strdup("HERALD_SCHED_BIND_BULK=tcp://127.0.0.1:*"), NULL};
	const char *argv[] = {SCHEDULER_PATH, NULL};
	s->sched = th_spawn(argv, (const char *const *)env, log, &s->sched_out);
	for (int i = 0; env[i]; i++)
		hr_free(env[i]);
	char buf[8192];
	size_t len = 0;
	long long deadline = ms() + 20000;
	while ((!s->ep[0][0] || !s->ep[1][0]) && ms() < deadline) {
		struct pollfd p = {s->sched_out, POLLIN, 0};
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t n = read(s->sched_out, buf + len, sizeof buf - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		const char *lanes[] = {"listening lane=transactional endpoint=", "listening lane=bulk endpoint="};
		for (int l = 0; l < 2; l++) {
			char *at = strstr(buf, lanes[l]);
			if (at && strchr(at, '\n') && !s->ep[l][0])
				sscanf(at + strlen(lanes[l]), "%127s", s->ep[l]);
		}
	}
	ck_assert_msg(s->ep[0][0] && s->ep[1][0], "herald-scheduler did not start (see %s)", log);
}

static void stack_up(stack *s)
{
	memset(s, 0, sizeof *s);
	char *d = th_tmpdir("cascade");
	snprintf(s->dir, sizeof s->dir, "%s", d);
	hr_free(d);
	const char *args[] = {"--inbox", "200", NULL};
	psim_start(&s->ps, args);
	sched_up(s);
	const char *ch[] = {"messenger", "sms"}, *lane[] = {"transactional", "bulk"};
	for (int i = 0; i < 4; i++) {
		char log[600];
		snprintf(log, sizeof log, "%s/worker-%s-%s.log", s->dir, ch[i / 2], lane[i % 2]);
		const char *argv[] = {WORKER_PATH, "--channel", ch[i / 2], "--lane", lane[i % 2], "--scheduler",
				      s->ep[i % 2], "--metrics-port", "-1", NULL};
		s->workers[i] = th_spawn(argv, NULL, log, NULL);
	}
}

static int stop_pid(pid_t pid)
{
	kill(pid, SIGTERM);
	int st = 0;
	long long deadline = ms() + 20000;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		nap();
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void stack_down(stack *s)
{
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(stop_pid(s->workers[i]), 0);
	ck_assert_int_eq(stop_pid(s->sched), 0);
	close(s->sched_out);
	psim_stop(&s->ps);
	char *logs = NULL;
	th_sh(&logs, "grep -h -E 'WARN|ERROR|FATAL|runtime error|AddressSanitizer' '%s'/*.log", s->dir);
	ck_assert_msg(!logs || !logs[0], "warnings in the logs:\n%s", logs ? logs : "");
	hr_free(logs);
	th_sh(NULL, "rm -rf '%s'", s->dir);
}

/* A provider account on the simulator: herald account `name` -> provsim account `sim`. */
static void account(fx *f, stack *s, const char *name, const char *channel, const char *sim, const char *price)
{
	uint8_t key[32];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	char cfg[512];
	snprintf(cfg, sizeof cfg, "{\"url\": \"http://127.0.0.1:%d/v1/send/%s/%s\"%s%s%s}", s->ps.port, channel, sim,
		 price ? ", \"price\": " : "", price ? price : "", price ? ", \"currency\": \"EUR\"" : "");
	hr_provider_spec p = {.name = name, .channel = channel, .transport = "http", .config = cfg,
			      .secret = "{\"callback_secret\": \"cb-secret\"}"};
	ck_assert_msg(hr_provider_put(f->c, key, f->t.slug, &p, &err), "%s", err.msg);
}

/* Faults of a provsim account (JSON members without braces). */
static void sim_config(stack *s, const char *sim, const char *members)
{
	char body[1024];
	snprintf(body, sizeof body, "{\"account\": \"%s\", %s}", sim, members);
	presp r;
	psim_http(&s->ps, "POST", "/v1/control/faults", body, NULL, 0, &r);
	ck_assert_msg(r.status == 200, "faults %s: %ld %s", body, r.status, r.body);
}

/* provsim posts receipts of account `sim` to herald's callback URL of herald account `name`. */
static void sim_receipts(fx *f, stack *s, const char *sim, const char *name, const char *extra)
{
	char m[768];
	snprintf(m, sizeof m, "\"dlr_url\": \"http://127.0.0.1:%d/v1/callbacks/%s/%s?key=cb-secret\"%s%s",
		 the_srv.port, f->t.slug, name, extra ? ", " : "", extra ? extra : "");
	sim_config(s, sim, m);
}

/* Texts the simulator got for a recipient (newest first, joined by '|'). */
static char *inbox(stack *s, const char *to)
{
	char path[128];
	snprintf(path, sizeof path, "/v1/inbox/%%2B%s", to + 1);
	json_t *j = psim_get_json(&s->ps, path);
	size_t i;
	json_t *m;
	char *out = hr_strdup("");
	json_array_foreach(json_object_get(j, "messages"), i, m) {
		const char *t = json_string_value(json_object_get(m, "text"));
		char *n = hr_sprintf("%s%s|", out, t ? t : "");
		hr_free(out);
		out = n;
	}
	json_decref(j);
	return out;
}

static bool inbox_has(stack *s, const char *to, const char *text)
{
	char *got = inbox(s, to);
	bool yes = strstr(got, text) != NULL;
	hr_free(got);
	return yes;
}

static void wait_inbox(stack *s, const char *to, const char *text)
{
	long long deadline = ms() + 30000;
	while (!inbox_has(s, to, text) && ms() < deadline)
		nap();
	char *got = inbox(s, to);
	ck_assert_msg(strstr(got, text), "%s never got '%s' (got '%s'; logs in %s)", to, text, got, s->dir);
	hr_free(got);
}

/* Wait until the SQL count (tenant schema as %s) reaches want. */
static void wait_count(fx *f, const char *sql, long want)
{
	long long deadline = ms() + 30000;
	long got;
	while ((got = count(f, sql)) != want && ms() < deadline)
		nap();
	ck_assert_msg(got == want, "%s: got %ld, want %ld", sql, got, want);
}

static void advance(fx *f, int64_t seconds)
{
	int64_t skew;
	hr_err err = {0};
	ck_assert_msg(hr_clock_advance(f->c, seconds * 1000000, &skew, &err), "%s", err.msg);
}

static long long contact(fx *f, const char *phone, const char *group)
{
	char body[256];
	snprintf(body, sizeof body, "{\"phone\": \"%s\", \"attributes\": {\"group\": \"%s\"}}", phone, group);
	resp *r = call("PUT", "/v1/contacts", f->full, NULL, body);
	ck_assert_msg(r->status == 200 || r->status == 201, "%ld %s", r->status, r->body);
	long long id = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	const char *chans[] = {"messenger", "sms"};
	for (int i = 0; i < 2; i++) {
		char path[64];
		snprintf(path, sizeof path, "/v1/contacts/%lld/consents", id);
		snprintf(body, sizeof body, "{\"channel\": \"%s\", \"purpose\": \"marketing\", \"granted\": true, "
					    "\"source\": \"test\"}", chans[i]);
		r = call("POST", path, f->full, NULL, body);
		ck_assert_msg(r->status < 300, "%ld %s", r->status, r->body);
		resp_free(r);
	}
	return id;
}

static long long send_msg(fx *f, long long contact_id, const char *provider, const char *text, const char *fallback)
{
	char body[1024];
	snprintf(body, sizeof body, "{\"channel\": \"messenger\", \"provider\": \"%s\", \"contact\": {\"id\": %lld}, "
				    "\"content\": {\"text\": \"%s\"}, \"fallback\": %s}",
		 provider, contact_id, text, fallback);
	resp *r = call("POST", "/v1/messages", f->full, NULL, body);
	ck_assert_msg(r->status == 202, "%ld %s", r->status, r->body);
	long long id = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	return id;
}

static json_t *get_message(fx *f, long long id)
{
	char path[64];
	snprintf(path, sizeof path, "/v1/messages/%lld", id);
	resp *r = call("GET", path, f->full, NULL, NULL);
	ck_assert_msg(r->status == 200, "%ld %s", r->status, r->body);
	json_t *j = json_incref(r->json);
	resp_free(r);
	return j;
}

static const char *js(json_t *o, const char *path)
{
	/* a dotted path; numbers index arrays */
	char buf[128];
	snprintf(buf, sizeof buf, "%s", path);
	json_t *cur = o;
	for (char *save = NULL, *t = strtok_r(buf, ".", &save); t && cur; t = strtok_r(NULL, ".", &save))
		cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(t)) : json_object_get(cur, t);
	static char out[8][128];
	static int k;
	char *o2 = out[k++ % 8];
	if (!cur || json_is_null(cur))
		snprintf(o2, 128, "null");
	else if (json_is_string(cur))
		snprintf(o2, 128, "%s", json_string_value(cur));
	else if (json_is_integer(cur))
		snprintf(o2, 128, "%lld", (long long)json_integer_value(cur));
	else
		snprintf(o2, 128, "?");
	return o2;
}

/* Wait until GET /v1/messages/{id} shows `value` at `path`. */
static json_t *wait_message(fx *f, long long id, const char *path, const char *value)
{
	long long deadline = ms() + 30000;
	for (;;) {
		json_t *j = get_message(f, id);
		if (!strcmp(js(j, path), value))
			return j;
		if (ms() > deadline) {
			char *t = json_dumps(j, JSON_COMPACT);
			ck_abort_msg("message %lld: %s is not %s in %s", id, path, value, t);
		}
		json_decref(j);
		nap();
	}
}

#define SMS_FALLBACK "[{\"channel\": \"sms\", \"provider\": \"sms\", \"content\": {\"text\": \"%s\"}, \"after\": \"10m\"}]"

START_TEST(cascade_falls_back_stops_and_costs)
{
	fx f;
	fx_open(&f);
	stack s;
	stack_up(&s);
	account(&f, &s, "viber", "messenger", "viber-quiet", "0.01");      /* no receipts */
	account(&f, &s, "viber-dlr", "messenger", "viber-dlr", "0.01");    /* delivered receipts */
	account(&f, &s, "viber-auth", "messenger", "viber-auth", "0.01");  /* 401: a failed send */
	account(&f, &s, "sms", "sms", "sms-gw", "0.05");
	sim_receipts(&f, &s, "viber-dlr", "viber-dlr", NULL);
	sim_receipts(&f, &s, "sms-gw", "sms", NULL);
	sim_config(&s, "viber-auth", "\"token\": \"only-the-right-one\"");
	long long a = contact(&f, "+447700900101", "x"), b = contact(&f, "+447700900102", "x"),
		  c = contact(&f, "+447700900103", "x");
	char fb[256];

	/* 1. Not delivered within the window: SMS after 10 minutes (not before), delivered, stop. */
	snprintf(fb, sizeof fb, SMS_FALLBACK, "sms for a");
	long long m1 = send_msg(&f, a, "viber", "viber for a", fb);
	wait_inbox(&s, "+447700900101", "viber for a");
	json_t *j = wait_message(&f, m1, "status", "sent");
	ck_assert_str_eq(js(j, "cascade.state"), "waiting");
	ck_assert_str_eq(js(j, "cascade.next_channel"), "sms");
	ck_assert_str_eq(js(j, "cost"), "0.01");
	ck_assert_str_eq(js(j, "currency"), "EUR");
	json_decref(j);
	advance(&f, 9 * 60);
	/* the window is not over: after the scheduler re-read the clock, still nothing on SMS */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE channel = 'sms'"), 0);
	advance(&f, 2 * 60);
	wait_inbox(&s, "+447700900101", "sms for a");
	j = wait_message(&f, m1, "cascade.steps.1.status", "delivered");
	ck_assert_str_eq(js(j, "cascade.state"), "finished");
	ck_assert_str_eq(js(j, "cascade.steps.0.channel"), "messenger");
	ck_assert_str_eq(js(j, "cascade.steps.0.status"), "sent");
	ck_assert_str_eq(js(j, "cascade.steps.0.cost"), "0.01");
	ck_assert_str_eq(js(j, "cascade.steps.1.channel"), "sms");
	ck_assert_str_eq(js(j, "cascade.steps.1.cost"), "0.05");
	ck_assert_str_eq(js(j, "cascade.cost.EUR"), "0.06");
	/* the SMS message shows the same cascade */
	long long sms1 = strtoll(js(j, "cascade.steps.1.message_id"), NULL, 10);
	json_decref(j);
	j = get_message(&f, sms1);
	char m1s[32];
	snprintf(m1s, sizeof m1s, "%lld", m1);
	ck_assert_str_eq(js(j, "cascade.steps.0.message_id"), m1s);
	ck_assert_str_eq(js(j, "channel"), "sms");
	ck_assert_str_eq(js(j, "cost"), "0.05");
	ck_assert_int_eq((long)json_array_size(json_object_get(json_object_get(j, "cascade"), "steps")), 2);
	json_decref(j);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE channel = 'sms'"), 1);

	/* 2. Delivered on messenger: the cascade ends at the receipt, no SMS ever. */
	snprintf(fb, sizeof fb, SMS_FALLBACK, "sms for b");
	long long m2 = send_msg(&f, b, "viber-dlr", "viber for b", fb);
	j = wait_message(&f, m2, "status", "delivered");
	json_decref(j);
	j = wait_message(&f, m2, "cascade.state", "finished");
	ck_assert_int_eq((long)json_array_size(json_object_get(json_object_get(j, "cascade"), "steps")), 1);
	json_decref(j);
	wait_count(&f, "SELECT count(*) FROM %s.outbox WHERE cascade_at IS NOT NULL", 0);
	advance(&f, 11 * 60);
	ck_assert(!inbox_has(&s, "+447700900102", "sms for b"));
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE channel = 'sms'"), 1);

	/* 3. A failed first channel falls back at once, without waiting for the window. */
	snprintf(fb, sizeof fb, SMS_FALLBACK, "sms for c");
	long long m3 = send_msg(&f, c, "viber-auth", "viber for c", fb);
	wait_inbox(&s, "+447700900103", "sms for c");
	j = wait_message(&f, m3, "cascade.steps.1.status", "delivered");
	ck_assert_str_eq(js(j, "cascade.steps.0.status"), "failed");
	ck_assert_str_eq(js(j, "cascade.steps.0.cost"), "null"); /* not accepted, not billed */
	ck_assert_str_eq(js(j, "cascade.cost.EUR"), "0.05");
	json_decref(j);
	ck_assert(!inbox_has(&s, "+447700900103", "viber for c"));

	stack_down(&s);
	fx_close(&f);
}
END_TEST

START_TEST(cascade_lists_are_validated_and_write_nothing)
{
	fx f;
	fx_open(&f);
	stack s = {0};
	s.ps.port = 9; /* the accounts are never used */
	account(&f, &s, "viber", "messenger", "v", "0.01");
	account(&f, &s, "sms", "sms", "s", NULL);
	account(&f, &s, "push", "push", "p", NULL);
	long long a = contact(&f, "+447700900201", "x");
	char body[1024];
	struct {
		const char *fallback, *pointer;
	} bad[] = {
		{"[{\"channel\": \"messenger\", \"provider\": \"viber\", \"content\": {\"text\": \"x\"}}]", "/fallback/0/channel"},
		{"[{\"channel\": \"sms\", \"provider\": \"sms\", \"content\": {\"text\": \"x\"}}, "
		 "{\"channel\": \"sms\", \"provider\": \"sms\", \"content\": {\"text\": \"y\"}}]", "/fallback/1/channel"},
		{"[{\"channel\": \"sms\", \"provider\": \"viber\", \"content\": {\"text\": \"x\"}}]", "/fallback/0/provider"},
		{"[{\"channel\": \"sms\", \"provider\": \"sms\", \"content\": {\"text\": \"x\"}, \"after\": \"soon\"}]", "/fallback/0/after"},
		{"[{\"channel\": \"sms\", \"provider\": \"sms\"}]", "/fallback/0/template"},
		{"[{\"channel\": \"push\", \"provider\": \"push\", \"content\": {\"text\": \"x\"}}]", "/fallback/0/to"},
		{"[{\"channel\": \"sms\", \"provider\": \"sms\", \"template\": {\"id\": 999, \"version\": 1}}]", "/fallback/0/template"},
		{"{}", "/fallback"},
		{"[]", "/fallback"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(body, sizeof body, "{\"channel\": \"messenger\", \"provider\": \"viber\", \"contact\": {\"id\": %lld}, "
					    "\"content\": {\"text\": \"hi\"}, \"fallback\": %s}", a, bad[i].fallback);
		resp *r = call("POST", "/v1/messages", f.full, NULL, body);
		expect_problem(r, 422, bad[i].pointer);
		resp_free(r);
	}
	/* a raw `to` gives no contact to take the SMS address from */
	resp *r = call("POST", "/v1/messages", f.full, NULL,
		       "{\"channel\": \"messenger\", \"provider\": \"viber\", \"to\": \"+447700900201\", "
		       "\"content\": {\"text\": \"hi\"}, \"fallback\": [{\"channel\": \"sms\", \"provider\": \"sms\", "
		       "\"content\": {\"text\": \"x\"}}]}");
	expect_problem(r, 422, "/fallback/0/to");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 0);
	/* ... and with its own `to` it is accepted, the steps stored on the batch */
	r = call("POST", "/v1/messages", f.full, NULL,
		 "{\"channel\": \"messenger\", \"provider\": \"viber\", \"to\": \"+447700900201\", "
		 "\"content\": {\"text\": \"hi\"}, \"fallback\": [{\"channel\": \"sms\", \"provider\": \"sms\", "
		 "\"to\": \"+44 7700 900202\", \"content\": {\"text\": \"x\"}, \"after\": 90}]}");
	ck_assert_msg(r->status == 202, "%ld %s", r->status, r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE cascade -> 0 ->> 'to' = '+447700900202' "
				   "AND (cascade -> 0 ->> 'after_s')::int = 90 AND cascade_at > herald_clock.now() + "
				   "interval '80 seconds'"),
			 1);
	/* prices are validated on the account */
	uint8_t key[32];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	hr_provider_spec p = {.name = "bad", .channel = "sms", .transport = "sink",
			      .config = "{\"price\": \"cheap\", \"currency\": \"EUR\"}"};
	ck_assert(!hr_provider_put(f.c, key, f.t.slug, &p, &err));
	p.config = "{\"price\": 0.1, \"currency\": \"euro\"}";
	ck_assert(!hr_provider_put(f.c, key, f.t.slug, &p, &err));
	fx_close(&f);
}
END_TEST

/* POST a delivery receipt as a provider would. */
static void receipt(fx *f, const char *account, long long message_id)
{
	char path[160], body[128];
	snprintf(path, sizeof path, "/v1/callbacks/%s/%s?key=cb-secret", f->t.slug, account);
	snprintf(body, sizeof body, "{\"message_id\": %lld, \"status\": \"delivered\"}", message_id);
	resp *r = call("POST", path, NULL, NULL, body);
	ck_assert_msg(r->status == 200, "%ld %s", r->status, r->body);
	resp_free(r);
}

START_TEST(campaign_falls_back_for_the_undelivered_only)
{
	fx f;
	fx_open(&f);
	stack s;
	stack_up(&s);
	account(&f, &s, "viber", "messenger", "camp-viber", "0.01");
	account(&f, &s, "sms", "sms", "camp-sms", "0.05");
	sim_receipts(&f, &s, "camp-sms", "sms", NULL);
	const char *phones[] = {"+447700900301", "+447700900302", "+447700900303", "+447700900304"};
	for (int i = 0; i < 4; i++)
		contact(&f, phones[i], i < 3 ? "in" : "out");
	resp *r = call("POST", "/v1/templates", f.full, NULL,
		       "{\"name\": \"v\", \"channel\": \"messenger\", \"content\": {\"text\": \"campaign on viber\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long tv = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	r = call("POST", "/v1/templates", f.full, NULL,
		 "{\"name\": \"s\", \"channel\": \"sms\", \"content\": {\"text\": \"campaign on sms\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long ts = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	r = call("POST", "/v1/segments", f.full, NULL,
		 "{\"name\": \"in\", \"rule\": {\"attribute\": \"group\", \"op\": \"eq\", \"value\": \"in\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long seg = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	char body[1024];
	/* a window under a minute is refused */
	snprintf(body, sizeof body,
		 "{\"name\": \"c\", \"segment_id\": %lld, \"channel\": \"messenger\", \"fallback\": \"sms\", "
		 "\"fallback_after\": \"30s\", \"messages\": {\"messenger\": {\"template\": %lld, \"provider\": \"viber\"}, "
		 "\"sms\": {\"template\": %lld, \"provider\": \"sms\"}}, \"calendar\": {\"kind\": \"now\"}}",
		 seg, tv, ts);
	r = call("POST", "/v1/campaigns", f.full, NULL, body);
	expect_problem(r, 422, "/fallback_after");
	resp_free(r);
	snprintf(body, sizeof body,
		 "{\"name\": \"c\", \"segment_id\": %lld, \"channel\": \"messenger\", \"fallback\": \"sms\", "
		 "\"fallback_after\": \"15m\", \"messages\": {\"messenger\": {\"template\": %lld, \"provider\": \"viber\"}, "
		 "\"sms\": {\"template\": %lld, \"provider\": \"sms\"}}, \"calendar\": {\"kind\": \"now\"}}",
		 seg, tv, ts);
	r = call("POST", "/v1/campaigns", f.full, NULL, body);
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long camp = (long long)json_integer_value(json_object_get(r->json, "id"));
	ck_assert_int_eq(json_integer_value(json_object_get(r->json, "fallback_after")), 900);
	resp_free(r);
	/* three messenger messages sent, one batch armed with the fallback */
	wait_count(&f, "SELECT count(*) FROM %s.results", 3);
	wait_count(&f, "SELECT count(*) FROM %s.outbox WHERE channel = 'messenger' AND cascade_at IS NOT NULL", 1);
	for (int i = 0; i < 3; i++)
		wait_inbox(&s, phones[i], "campaign on viber");
	/* the first two are delivered (their provider says so); the third never is */
	PGresult *ids;
	char q[256];
	snprintf(q, sizeof q, "SELECT o.id * 4096 + i - 1, o.addresses[i] FROM %s.outbox o, "
			      "generate_subscripts(o.addresses, 1) i WHERE o.channel = 'messenger' ORDER BY 2", f.t.schema);
	ids = PQexec(f.c, q);
	ck_assert_int_eq(PQntuples(ids), 3);
	receipt(&f, "viber", strtoll(PQgetvalue(ids, 0, 0), NULL, 10));
	receipt(&f, "viber", strtoll(PQgetvalue(ids, 1, 0), NULL, 10));
	long long undelivered = strtoll(PQgetvalue(ids, 2, 0), NULL, 10);
	PQclear(ids);
	advance(&f, 14 * 60);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE channel = 'sms'"), 0);
	advance(&f, 2 * 60);
	wait_inbox(&s, phones[2], "campaign on sms");
	wait_count(&f, "SELECT count(*) FROM %s.events WHERE name = 'message_delivered'", 3);
	/* one SMS batch, to the undelivered contact only */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE channel = 'sms'"), 1);
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.outbox WHERE channel = 'sms' AND addresses = '{%s}'", phones[2]);
	ck_assert_int_eq(count(&f, q), 1);
	ck_assert(!inbox_has(&s, phones[0], "campaign on sms"));
	ck_assert(!inbox_has(&s, phones[1], "campaign on sms"));
	ck_assert(!inbox_has(&s, phones[3], "campaign"));
	json_t *j = wait_message(&f, undelivered, "cascade.steps.1.status", "delivered");
	ck_assert_str_eq(js(j, "cascade.cost.EUR"), "0.06");
	json_decref(j);
	/* cost per channel in the campaign report */
	time_t now = time(NULL);
	char from[16], to[16], path[160];
	time_t lo = now - 86400, hi = now + 3 * 86400;
	strftime(from, sizeof from, "%Y-%m-%d", gmtime(&lo));
	strftime(to, sizeof to, "%Y-%m-%d", gmtime(&hi));
	snprintf(path, sizeof path, "/v1/reports/campaigns/%lld?from=%s&to=%s", camp, from, to);
	r = call("GET", path, f.full, NULL, NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	json_t *ch = json_object_get(r->json, "channels");
	ck_assert_msg(json_array_size(ch) == 2, "%s", r->body);
	ck_assert_str_eq(js(ch, "0.channel"), "messenger");
	ck_assert_str_eq(js(ch, "0.messages"), "3");
	ck_assert_str_eq(js(ch, "0.sent"), "3");
	ck_assert_str_eq(js(ch, "0.delivered"), "2");
	ck_assert_str_eq(js(ch, "0.cost"), "0.03");
	ck_assert_str_eq(js(ch, "0.currency"), "EUR");
	ck_assert_str_eq(js(ch, "1.channel"), "sms");
	ck_assert_str_eq(js(ch, "1.messages"), "1");
	ck_assert_str_eq(js(ch, "1.delivered"), "1");
	ck_assert_str_eq(js(ch, "1.cost"), "0.05");
	resp_free(r);
	stack_down(&s);
	fx_close(&f);
}
END_TEST

Suite *cascade_suite(void);
Suite *cascade_suite(void)
{
	Suite *s = suite_create("cascade");
	TCase *tc = th_tcase("http");
	tcase_set_timeout(tc, 180);
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, cascade_lists_are_validated_and_write_nothing);
	tcase_add_test(tc, cascade_falls_back_stops_and_costs);
	tcase_add_test(tc, campaign_falls_back_for_the_undelivered_only);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(cascade_suite());
}
