/*
 * test_audience.c -- common/audience.c's fan-out statement against a real
 * tenant schema, without the scheduler: who is in a run (consent,
 * suppressions, the frequency cap, merged contacts), that nobody is in it
 * twice, how the recipients are cut into batches of at most 4,096 of one due
 * instant (one due; zones and spread slots; held for later), that the
 * statement's planner settings do not leak into the caller's transaction,
 * and that the batch arrays are stored lz4-compressed (migration 0013).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "audience.h"
#include "db.h"
#include "harness.h"

/*
 * 10,000 contacts.  Contact i: email u<i>@x.test; time zone Asia/Tokyo for
 * i % 3 = 1, none otherwise; consent granted except i % 10 = 0 (no row) and
 * i % 10 = 5 (revoked); email suppressed for i % 97 = 0; merged into
 * contact 1 for i % 1000 = 999.  With no cap, the audience is every i with
 * i % 10 not in (0, 5), i % 97 <> 0, i % 1000 <> 999.
 */
#define N 10000

static const char *fixture =
	"INSERT INTO contacts (id, email, time_zone) SELECT i, 'u' || i || '@x.test', "
	"CASE WHEN i % 3 = 1 THEN 'Asia/Tokyo' END FROM generate_series(1, 10000) i;"
	"UPDATE contacts SET merged_into = 1 WHERE id % 1000 = 999;"
	"INSERT INTO consents (contact_id, channel, purpose, granted, at) SELECT i, 'email', 'marketing', "
	"i % 10 <> 5, now() FROM generate_series(1, 10000) i WHERE i % 10 <> 0;"
	"INSERT INTO suppressions (channel, address, reason) SELECT 'email', 'u' || i || '@x.test', 'manual' "
	"FROM generate_series(1, 10000) i WHERE i % 97 = 0;";

static const char *expected_ids_sql =
	"SELECT i FROM generate_series(1, 10000) i WHERE i % 10 NOT IN (0, 5) AND i % 97 <> 0 AND i % 1000 <> 999";

static PGconn *tenant_with_fixture(hr_tenant *t)
{
	PGconn *c = th_control();
	hr_err err = {0};
	th_tenant(c, t);
	ck_assert_msg(hr_db_tenant_begin(c, t->schema, t->role, &err), "%s", err.msg);
	ck_assert_msg(hr_db_exec(c, fixture, &err), "fixture: %s", err.msg);
	ck_assert_msg(hr_db_commit(c, &err), "%s", err.msg);
	return c;
}

static long long q_int(PGconn *c, const char *sql)
{
	hr_err err = {0};
	PGresult *r;
	ck_assert_msg(hr_db_query(c, sql, 0, NULL, &r, &err), "%s: %s", sql, err.msg);
	long long v = PQgetisnull(r, 0, 0) ? -1 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

static char *q_text(PGconn *c, const char *sql)
{
	hr_err err = {0};
	PGresult *r;
	ck_assert_msg(hr_db_query(c, sql, 0, NULL, &r, &err), "%s: %s", sql, err.msg);
	char *v = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* Every message of the run's outbox and held batches: (batch kind, batch id, due, contact id, address). */
#define MESSAGES                                                                                             \
	"(SELECT 'o' AS kind, o.id AS batch, o.herald_at AS due, x.cid, x.addr FROM outbox o, "               \
	"unnest(o.contact_ids, o.addresses) x(cid, addr) WHERE o.origin_id = 1 "                            \
	"UNION ALL SELECT 'h', h.id, h.due_at, x.cid, x.addr FROM campaign_batches h, "                      \
	"unnest(h.contact_ids, h.addresses) x(cid, addr) WHERE h.run_id = 1)"

/* The checks every shape of run must pass; want_ids: SQL of the expected contact ids. */
static void check_run(PGconn *c, const hr_audience_result *res, const char *want_ids)
{
	char *sql;
	long long want = q_int(c, (sql = hr_sprintf("SELECT count(*) FROM (%s) w", want_ids)));
	hr_free(sql);
	ck_assert_int_eq(res->recipients, want);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM " MESSAGES " m"), want);
	/* nobody twice */
	ck_assert_int_eq(q_int(c, "SELECT count(DISTINCT cid) FROM " MESSAGES " m"), want);
	/* exactly the expected set */
	sql = hr_sprintf("SELECT count(*) FROM ((SELECT cid FROM " MESSAGES " m EXCEPT %s) UNION ALL "
			 "(%s EXCEPT SELECT cid FROM " MESSAGES " m)) d",
			 want_ids, want_ids);
	ck_assert_int_eq(q_int(c, sql), 0);
	hr_free(sql);
	/* each address is its contact's */
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM " MESSAGES " m WHERE m.addr <> 'u' || m.cid || '@x.test'"), 0);
	/* batches: one due each, at most 4,096, and per due only the last one short */
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM (SELECT kind, batch FROM " MESSAGES
				  " m GROUP BY kind, batch HAVING count(DISTINCT due) <> 1 OR count(*) > 4096) b"),
			 0);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM (SELECT due, count(*) FILTER (WHERE n < 4096) AS short "
				  "FROM (SELECT kind, batch, min(due) AS due, count(*) AS n FROM " MESSAGES
				  " m GROUP BY kind, batch) b GROUP BY due) s WHERE short > 1"),
			 0);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM outbox WHERE origin_id = 1"), res->batches_now);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM campaign_batches WHERE run_id = 1"), res->batches_held);
}

/* A run row (id 1) for campaign_batches' foreign key, in the open transaction. */
static void run_row(PGconn *c)
{
	hr_err err = {0};
	ck_assert_msg(hr_db_exec(c,
				 "INSERT INTO templates (name, channel) VALUES ('t', 'email');"
				 "INSERT INTO segments (name, rule) VALUES ('s', '{}');"
				 "INSERT INTO campaigns (id, name, segment_id, channel, messages, calendar, state, "
				 "activated_at) VALUES (1, 'c', 1, 'email', '{}', '{\"kind\":\"now\"}', 'active', now());"
				 "INSERT INTO campaign_runs (id, campaign_id, run_at, started_at, channel, template_id, "
				 "template_version, provider) VALUES (1, 1, now(), now(), 'email', 1, 1, 'main')",
				 &err),
		      "%s", err.msg);
}

static hr_audience base_audience(const char *const *zones, int nzones, const int64_t *dues, int nslots)
{
	hr_audience a = {.channel = "email", .where = NULL, .nzones = nzones, .zones = zones, .nslots = nslots,
			 .dues = dues, .template_id = 1, .template_version = 1, .provider = "main",
			 .origin = "campaign", .origin_id = 1, .hold_later = true};
	return a;
}

START_TEST(one_due_policy_batches_and_settings_restored)
{
	hr_tenant t;
	PGconn *c = tenant_with_fixture(&t);
	hr_err err = {0};
	ck_assert(hr_db_tenant_begin(c, t.schema, t.role, &err));
	run_row(c);
	/* the caller's own settings, which the fan-out must leave as they were */
	ck_assert(hr_db_exec(c, "SET LOCAL work_mem = '5MB'; SET LOCAL jit = on; SET LOCAL enable_nestloop = on; "
				"SET LOCAL enable_sort = on",
			     &err));
	const char *zones[] = {""};
	int64_t dues[] = {(int64_t)time(NULL) - 60};
	hr_audience a = base_audience(zones, 1, dues, 1);
	hr_audience_result res;
	ck_assert_msg(hr_audience_materialise(c, t.id, &a, &res, &err), "%s", err.msg);
	check_run(c, &res, expected_ids_sql);
	ck_assert_int_eq(res.batches_held, 0); /* due a minute ago: all to the outbox */
	ck_assert_int_eq(res.batches_now, (res.recipients + 4095) / 4096);
	char *s = q_text(c, "SELECT current_setting('work_mem') || ' ' || current_setting('jit') || ' ' || "
			    "current_setting('enable_nestloop') || ' ' || current_setting('enable_sort')");
	ck_assert_str_eq(s, "5MB on on on");
	hr_free(s);
	hr_db_rollback(c);
	PQfinish(c);
}
END_TEST

START_TEST(frequency_cap_over_many_capped_contacts)
{
	hr_tenant t;
	PGconn *c = tenant_with_fixture(&t);
	hr_err err = {0};
	ck_assert(hr_db_tenant_begin(c, t.schema, t.role, &err));
	run_row(c);
	/* Contacts 1..6000 already got two bulk campaign messages today (one in the
	 * outbox, one held), contacts 6001..8000 one, from another run (origin 2);
	 * an API message (transactional) to everybody never counts. */
	ck_assert_msg(hr_db_exec(c,
				 "INSERT INTO outbox (channel, lane, template_id, provider, origin, origin_id, herald_at, "
				 "addresses, contact_ids) SELECT 'email', 'bulk', 1, 'main', 'campaign', 2, "
				 "herald_clock.now() - interval '1 hour', array_agg('u' || i || '@x.test'), array_agg(i) "
				 "FROM generate_series(1, 8000) i GROUP BY i / 4000;"
				 "INSERT INTO campaign_batches (run_id, due_at, addresses, contact_ids) SELECT 1, "
				 "herald_clock.now() + interval '1 hour', array_agg('u' || i || '@x.test'), array_agg(i) "
				 "FROM generate_series(1, 6000) i GROUP BY i / 4000;"
				 "INSERT INTO outbox (channel, lane, template_id, provider, origin, herald_at, addresses, "
				 "contact_ids) SELECT 'email', 'transactional', 1, 'main', 'api', herald_clock.now(), "
				 "array_agg('u' || i || '@x.test'), array_agg(i) FROM generate_series(1, 10000) i "
				 "GROUP BY i / 4000;",
				 &err),
		      "%s", err.msg);
	const char *zones[] = {""};
	int64_t dues[] = {(int64_t)time(NULL) - 60};
	hr_audience a = base_audience(zones, 1, dues, 1);
	a.cap = (hr_audience_cap){.max = 2, .period_s = 86400};
	a.origin_id = 3;
	hr_audience_result res;
	ck_assert_msg(hr_audience_materialise(c, t.id, &a, &res, &err), "%s", err.msg);
	char *want = hr_sprintf("%s AND i > 6000", expected_ids_sql);
	char *sql = hr_sprintf("SELECT count(*) FROM (%s) w", want);
	ck_assert_int_eq(res.recipients, q_int(c, sql));
	hr_free(sql);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM outbox o, unnest(o.contact_ids) x(cid) "
				  "WHERE o.origin_id = 3 AND x.cid <= 6000"),
			 0);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM outbox o, unnest(o.contact_ids) x(cid) "
				  "WHERE o.origin_id = 3 AND x.cid BETWEEN 6001 AND 8000"),
			 q_int(c, "SELECT count(*) FROM generate_series(6001, 8000) i WHERE i % 10 NOT IN (0, 5) "
				  "AND i % 97 <> 0 AND i % 1000 <> 999"));
	hr_free(want);
	/* a cap of one, in the same transaction: everybody eligible got a message
	 * today (before, or from the run just above), so nobody is left */
	a.cap.max = 1;
	a.origin_id = 4;
	ck_assert_msg(hr_audience_materialise(c, t.id, &a, &res, &err), "%s", err.msg);
	ck_assert_int_eq(res.recipients, 0);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM outbox WHERE origin_id = 4"), 0);
	hr_db_rollback(c);
	PQfinish(c);
}
END_TEST

START_TEST(zones_spread_and_held_batches)
{
	hr_tenant t;
	PGconn *c = tenant_with_fixture(&t);
	hr_err err = {0};
	ck_assert(hr_db_tenant_begin(c, t.schema, t.role, &err));
	run_row(c);
	/* two zones x three spread slots: default zone due now, +1 h, +2 h;
	 * Tokyo +10 h, +11 h, +12 h (held) */
	int64_t now = (int64_t)time(NULL) - 60;
	const char *zones[] = {"", "Asia/Tokyo"};
	int64_t dues[] = {now, now + 3600, now + 7200, now + 36000, now + 39600, now + 43200};
	hr_audience a = base_audience(zones, 2, dues, 3);
	hr_audience_result res;
	ck_assert_msg(hr_audience_materialise(c, t.id, &a, &res, &err), "%s", err.msg);
	check_run(c, &res, expected_ids_sql);
	ck_assert_int_gt(res.batches_now, 0);
	ck_assert_int_gt(res.batches_held, 0);
	/* the outbox holds only what is due now; Tokyo's recipients are all held */
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM outbox WHERE origin_id = 1 AND herald_at > now()"), 0);
	ck_assert_int_eq(q_int(c, "SELECT count(*) FROM outbox o, unnest(o.contact_ids) x(cid) "
				  "WHERE o.origin_id = 1 AND x.cid % 3 = 1"),
			 0);
	/* six dues in use, each recipient's zone decides its three */
	ck_assert_int_eq(q_int(c, "SELECT count(DISTINCT due) FROM " MESSAGES " m"), 6);
	char *sql = hr_sprintf("SELECT count(*) FROM " MESSAGES " m WHERE (m.cid %% 3 = 1) <> "
			       "(extract(epoch FROM m.due)::bigint >= %lld)",
			       (long long)(now + 36000));
	ck_assert_int_eq(q_int(c, sql), 0);
	hr_free(sql);
	hr_db_rollback(c);
	PQfinish(c);
}
END_TEST

START_TEST(batch_arrays_are_lz4_when_the_server_has_it)
{
	PGconn *c = th_control();
	hr_tenant t;
	hr_err err = {0};
	th_tenant(c, &t);
	/* a server built without lz4 refuses the setting: then pglz stays (0013's fallback) */
	PGresult *r = PQexec(c, "SET default_toast_compression = lz4");
	bool lz4 = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	ck_assert(hr_db_exec(c, "RESET default_toast_compression", &err));
	char *sql = hr_sprintf("SELECT string_agg(k.relname || '.' || a.attname || '=' || CASE a.attcompression "
			       "WHEN 'l' THEN 'l' WHEN 'p' THEN 'p' ELSE '-' END, ' ' ORDER BY k.relname, a.attname) "
			       "FROM pg_attribute a JOIN pg_class k ON k.oid = a.attrelid JOIN pg_namespace n "
			       "ON n.oid = k.relnamespace WHERE n.nspname = '%s' AND k.relname IN ('outbox', "
			       "'campaign_batches') AND a.attname IN ('addresses', 'contact_ids', 'data')",
			       t.schema);
	char *got = q_text(c, sql);
	hr_free(sql);
	const char *m = lz4 ? "l" : "-";
	char *want = hr_sprintf("campaign_batches.addresses=%s campaign_batches.contact_ids=%s outbox.addresses=%s "
				"outbox.contact_ids=%s outbox.data=%s",
				m, m, m, m, m);
	ck_assert_str_eq(got, want);
	hr_free(got);
	hr_free(want);
	PQfinish(c);
}
END_TEST

int main(void)
{
	th_pg_dsn(); /* the parent owns the cluster */
	Suite *s = suite_create("audience");
	TCase *tc = th_tcase("materialise");
	tcase_add_test(tc, one_due_policy_batches_and_settings_restored);
	tcase_add_test(tc, frequency_cap_over_many_capped_contacts);
	tcase_add_test(tc, zones_spread_and_held_batches);
	tcase_add_test(tc, batch_arrays_are_lz4_when_the_server_has_it);
	suite_add_tcase(s, tc);
	return th_run(s);
}
