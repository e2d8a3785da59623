/*
 * test_campaigns.c -- campaign runs end to end: the real herald-scheduler
 * (with its campaign runner), a real email worker on the sink transport,
 * real Postgres; herald time moved with hr_clock_advance (no sleeping
 * through delays).  Campaigns are written as the API writes them (rows +
 * NOTIFY herald_campaigns); tests/api/test_campaigns.c covers the API.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "db.h"
#include "harness.h"
#include "stack.h"

static pid_t worker_start(const char *dir, const char *name, const char *ep)
{
	char log[512];
	snprintf(log, sizeof log, "%s/%s.log", dir, name);
	const char *argv[] = {WORKER_PATH, "--channel", "email", "--lane", "bulk", "--scheduler", ep,
			      "--metrics-port", "-1", "--credit=4", NULL};
	return th_spawn(argv, NULL, log, NULL);
}

static int stop_pid(pid_t pid)
{
	kill(pid, SIGTERM);
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void sql(fixture *f, const char *fmt)
{
	char *q = hr_sprintf(fmt, f->t[0].schema, f->t[0].schema, f->t[0].schema, f->t[0].schema);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", q,
		      PQerrorMessage(f->c));
	PQclear(r);
	hr_free(q);
}

static void advance(fixture *f, int64_t seconds)
{
	hr_err err = {0};
	int64_t skew;
	ck_assert_msg(hr_clock_advance(f->c, seconds * 1000000, &skew, &err), "%s", err.msg);
}

static void settle(int ms)
{
	struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&d, NULL);
}

/* Wait until SQL (with %s = schema) reaches want; returns the last value. */
static long wait_for(fixture *f, const char *fmt, long want, int ms)
{
	int64_t deadline = sched_now_ms() + ms;
	long v;
	while ((v = q(f, fmt, f->t[0].schema)) < want && sched_now_ms() < deadline)
		settle(20);
	return v;
}

/*
 * n contacts in city with email consent; plus in city: one without consent,
 * one who withdrew it, one suppressed; prefix makes the addresses unique.
 */
static void contacts(fixture *f, const char *prefix, const char *city, int n, const char *zone)
{
	char *q = hr_sprintf("INSERT INTO %%1$s.contacts (email, attributes, time_zone) SELECT '%s' || i || '@x.io', "
			     "jsonb_build_object('city', '%s'), %s FROM generate_series(1, %d) i",
			     prefix, city, zone ? zone : "NULL", n + 3);
	char *q2 = hr_sprintf(q, f->t[0].schema);
	PGresult *r = PQexec(f->c, q2);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(f->c));
	PQclear(r);
	hr_free(q);
	hr_free(q2);
	q = hr_sprintf("INSERT INTO %%1$s.consents (contact_id, channel, purpose, granted, at) SELECT id, 'email', "
		       "'marketing', NOT (email = '%s%d@x.io'), now() FROM %%1$s.contacts WHERE email LIKE '%s%%%%' "
		       "AND email <> '%s%d@x.io'; INSERT INTO %%1$s.suppressions (channel, address, reason) "
		       "VALUES ('email', '%s%d@x.io', 'hard_bounce')",
		       prefix, n + 2, prefix, prefix, n + 1, prefix, n + 3);
	q2 = hr_sprintf(q, f->t[0].schema);
	r = PQexec(f->c, q2);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(f->c));
	PQclear(r);
	hr_free(q);
	hr_free(q2);
}

static void base(fixture *f)
{
	sql(f, "INSERT INTO %s.templates (name, channel) VALUES ('hello', 'email');"
	       "INSERT INTO %s.template_versions (template_id, version, content) VALUES (1, 1, "
	       "'{\"from\":\"news@shop.io\",\"subject\":\"hi {{ contact.email }}\",\"text\":\"hi\"}');"
	       "INSERT INTO %s.segments (name, rule) VALUES ('kyiv', '{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"Kyiv\"}')");
}

/* A campaign as POST /v1/campaigns writes it: activated now, next_run_at its first run (given in SQL). */
static void campaign(fixture *f, const char *calendar, const char *first_run_sql)
{
	char *q = hr_sprintf("INSERT INTO %%1$s.campaigns (name, segment_id, channel, messages, calendar, state, "
			     "activated_at, next_run_at) VALUES ('c', 1, 'email', "
			     "'{\"email\":{\"template\":1,\"provider\":\"main\"}}', '%s', 'active', "
			     "date_trunc('second', herald_clock.now()), %s); SELECT pg_notify('herald_campaigns', '%lld')",
			     calendar, first_run_sql, (long long)f->t[0].id);
	char *q2 = hr_sprintf(q, f->t[0].schema);
	PGresult *r = PQexec(f->c, q2);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(f->c));
	PQclear(r);
	hr_free(q);
	hr_free(q2);
}

#define DUPES                                                                                               \
	"SELECT count(*) FROM (SELECT o.origin_id, u.cid FROM %s.outbox o, unnest(o.contact_ids) u(cid) "     \
	"WHERE o.origin = 'campaign' GROUP BY 1, 2 HAVING count(*) > 1) x"
#define OUTSIDERS                                                                                           \
	"SELECT count(*) FROM %s.outbox o, unnest(o.contact_ids) u(cid) JOIN %s.contacts c ON c.id = u.cid "  \
	"WHERE o.origin = 'campaign' AND (c.attributes->>'city' <> 'Kyiv' OR c.email ~ '(11|12|13)@')"

START_TEST(scheduled_and_recurring_runs_reach_each_consenting_member_once)
{
	fixture f;
	fixture_open(&f, 1);
	base(&f);
	contacts(&f, "k", "Kyiv", 10, NULL);
	contacts(&f, "l", "Lviv", 3, NULL);
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	pid_t w = worker_start(f.dir, "worker", s.ep[1]);
	/* at: in two hours; recurring: daily at the next hour boundary + 5 h */
	campaign(&f, "{\"kind\":\"at\",\"at\":\"2000-01-01T00:00:00Z\"}", "herald_clock.now() + interval '2 hours'");
	sql(&f, "UPDATE %s.campaigns SET calendar = jsonb_build_object('kind', 'at', 'at', "
		"to_char(next_run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))");
	settle(300);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.campaign_runs", f.t[0].schema), 0);
	advance(&f, 3 * 3600);
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.results", 10, 30000), 10);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.campaign_runs WHERE recipients = 10", f.t[0].schema), 1);
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.campaigns WHERE state = 'completed'", 1, 10000), 1);
	/* recurring, daily */
	campaign(&f, "{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYHOUR=4;BYMINUTE=0\",\"start\":\"2026-01-01T00:00:00\","
		     "\"time_zone\":\"UTC\"}",
		 "date_trunc('day', herald_clock.now()) + interval '1 day 4 hours'");
	/* The first 04:00 is one or two herald days away (two when the 3 h advance
	 * above crossed midnight UTC); each day's advance passes one 04:00 at most,
	 * so days are advanced one at a time until the two runs are in. */
	long v = 10;
	for (int day = 0; day < 3 && v < 30; day++) {
		advance(&f, 86400 + 1);
		v = wait_for(&f, "SELECT count(*) FROM %s.results", v + 10, 30000);
	}
	ck_assert_int_eq(v, 30);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.campaign_runs", f.t[0].schema), 3);
	ck_assert_int_eq(q(&f, DUPES, f.t[0].schema), 0);
	ck_assert_int_eq(q(&f, OUTSIDERS, f.t[0].schema), 0);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'sent'", f.t[0].schema), 30);
	ck_assert_int_eq(stop_pid(w), 0);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fixture_close(&f);
}
END_TEST

START_TEST(frequency_cap_holds_across_two_campaigns)
{
	fixture f;
	fixture_open(&f, 1);
	base(&f);
	contacts(&f, "k", "Kyiv", 10, NULL);
	char *u = hr_sprintf("UPDATE herald.tenants SET settings = '{\"frequency_cap\":{\"max\":1,\"per\":\"day\"}}' "
			     "WHERE id = %lld", (long long)f.t[0].id);
	PQclear(PQexec(f.c, u));
	hr_free(u);
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	pid_t w = worker_start(f.dir, "worker", s.ep[1]);
	campaign(&f, "{\"kind\":\"now\"}", "date_trunc('second', herald_clock.now())");
	campaign(&f, "{\"kind\":\"now\"}", "date_trunc('second', herald_clock.now())");
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.campaign_runs", 2, 30000), 2);
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.results", 10, 30000), 10);
	settle(300);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results", f.t[0].schema), 10);
	ck_assert_int_eq(q(&f, "SELECT sum(recipients) FROM %s.campaign_runs", f.t[0].schema), 10);
	/* a day later the cap allows one more */
	advance(&f, 86400 + 60);
	campaign(&f, "{\"kind\":\"now\"}", "date_trunc('second', herald_clock.now())");
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.results", 20, 30000), 20);
	ck_assert_int_eq(stop_pid(w), 0);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fixture_close(&f);
}
END_TEST

#define HELD_AT(zone)                                                                                       \
	"SELECT count(*) FROM %s.campaign_batches h, unnest(h.contact_ids) u(cid) JOIN %s.contacts c ON "    \
	"c.id = u.cid WHERE c.time_zone = '" zone "' AND h.due_at = "

START_TEST(local_time_quiet_hours_zones_dst_pause_resume_cancel)
{
	fixture f;
	fixture_open(&f, 1);
	base(&f);
	contacts(&f, "b", "Kyiv", 4, "'Europe/Berlin'");
	contacts(&f, "t", "Kyiv", 4, "'Asia/Tokyo'");
	contacts(&f, "n", "Kyiv", 4, "'America/New_York'");
	char *u = hr_sprintf("UPDATE herald.tenants SET settings = '{\"quiet_hours\":{\"from\":\"22:00\",\"to\":\"08:00\"}}' "
			     "WHERE id = %lld", (long long)f.t[0].id);
	PQclear(PQexec(f.c, u));
	hr_free(u);
	/* herald time to 2027-03-28 00:00Z (Europe's DST change day) */
	PGresult *r = PQexec(f.c, "SELECT extract(epoch FROM '2027-03-28T00:00:00Z'::timestamptz - herald_clock.now())::bigint");
	advance(&f, strtoll(PQgetvalue(r, 0, 0), NULL, 10));
	PQclear(r);
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	pid_t w = worker_start(f.dir, "worker", s.ep[1]);
	/* 23:30 local, inside the quiet hours: each recipient at 08:00 local the next morning */
	campaign(&f, "{\"kind\":\"at\",\"at\":\"2027-03-28T23:30:00\",\"local_time_per_recipient\":true}",
		 "'2027-03-28T09:30:00Z'");
	advance(&f, 10 * 3600); /* 10:00Z: the run starts (23:30 first happens in UTC+14 at 09:30Z) */
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.campaign_runs WHERE recipients = 12", 1, 30000), 1);
	ck_assert_int_eq(q(&f, HELD_AT("Asia/Tokyo") "'2027-03-28T23:00:00Z'", f.t[0].schema), 4);
	ck_assert_int_eq(q(&f, HELD_AT("Europe/Berlin") "'2027-03-29T06:00:00Z'", f.t[0].schema), 4);
	ck_assert_int_eq(q(&f, HELD_AT("America/New_York") "'2027-03-29T12:00:00Z'", f.t[0].schema), 4);
	advance(&f, 13 * 3600 + 60); /* 23:01Z: Tokyo's 08:00 has come */
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.results", 4, 30000), 4);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.outbox WHERE herald_at = '2027-03-28T23:00:00Z'", f.t[0].schema), 1);
	/* paused: Berlin's time passes and nothing moves; resumed: it goes at once */
	sql(&f, "UPDATE %s.campaigns SET state = 'paused'");
	advance(&f, 8 * 3600); /* 07:01Z */
	settle(500);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results", f.t[0].schema), 4);
	sql(&f, "UPDATE %s.campaigns SET state = 'active'");
	PQclear(PQexec(f.c, "SELECT pg_notify('herald_campaigns', (SELECT min(id) FROM herald.tenants)::text)"));
	char *n = hr_sprintf("SELECT pg_notify('herald_campaigns', '%lld')", (long long)f.t[0].id);
	PQclear(PQexec(f.c, n));
	hr_free(n);
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.results", 8, 30000), 8);
	/* cancelled: New York's batch is deleted, never sent */
	sql(&f, "WITH d AS (DELETE FROM %s.campaign_batches) UPDATE %s.campaigns SET state = 'cancelled', next_run_at = NULL");
	advance(&f, 86400);
	settle(500);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results", f.t[0].schema), 8);
	ck_assert_int_eq(q(&f, DUPES, f.t[0].schema), 0);
	ck_assert_int_eq(stop_pid(w), 0);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fixture_close(&f);
}
END_TEST

START_TEST(scheduler_sigkill_mid_campaign_loses_and_repeats_nothing)
{
	fixture f;
	fixture_open(&f, 1);
	base(&f);
	contacts(&f, "k", "Kyiv", 40000, NULL);
	sproc s;
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	pid_t w = worker_start(f.dir, "worker", s.ep[1]);
	campaign(&f, "{\"kind\":\"now\"}", "date_trunc('second', herald_clock.now())");
	long at_kill = wait_for(&f, "SELECT count(*) FROM %s.results", 1, 60000);
	ck_assert_msg(at_kill >= 1 && at_kill < 40000, "at kill: %ld", at_kill);
	ck_assert_int_eq(sched_stop(&s, SIGKILL), 128 + SIGKILL);
	stop_pid(w);
	sched_start(&s, f.dsn, f.dir, NULL, NULL);
	w = worker_start(f.dir, "worker2", s.ep[1]);
	ck_assert_int_eq(wait_for(&f, "SELECT count(*) FROM %s.results", 40000, 120000), 40000);
	settle(300);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results", f.t[0].schema), 40000);
	ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.campaign_runs", f.t[0].schema), 1);
	ck_assert_int_eq(q(&f, DUPES, f.t[0].schema), 0);
	ck_assert_int_eq(q(&f, "SELECT count(DISTINCT u.cid) FROM %s.outbox o, unnest(o.contact_ids) u(cid)", f.t[0].schema),
			 40000);
	ck_assert_int_eq(stop_pid(w), 0);
	ck_assert_int_eq(sched_stop(&s, SIGTERM), 0);
	fixture_close(&f);
}
END_TEST

int main(void)
{
	th_pg_dsn();
	Suite *s = suite_create("scheduler_campaigns");
	TCase *tc = th_tcase("campaigns");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, scheduled_and_recurring_runs_reach_each_consenting_member_once);
	tcase_add_test(tc, frequency_cap_holds_across_two_campaigns);
	tcase_add_test(tc, local_time_quiet_hours_zones_dst_pause_resume_cancel);
	tcase_add_test(tc, scheduler_sigkill_mid_campaign_loses_and_repeats_nothing);
	suite_add_tcase(s, tc);
	return th_run(s);
}
