/*
 * test_heraldctl.c -- the operator CLI as an operator uses it: the real
 * binary against a real database.  Every error case must print one line
 * naming what was wrong, exit non-zero, and change nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"

static char *dsn;

/* Run heraldctl with the test database; returns exit status, *out = stdout+stderr. */
static int ctl(char **out, const char *args)
{
	return th_sh(out, "HERALD_DATABASE_URL='%s' '%s' %s", dsn, HERALDCTL_PATH, args);
}

static int ctl_split(char **out, char **err, const char *args)
{
	char *dir = th_tmpdir("ctlerr");
	char *errfile = hr_sprintf("%s/stderr", dir);
	hr_free(dir);
	int rc = th_sh(out, "HERALD_DATABASE_URL='%s' '%s' %s 2>'%s'", dsn, HERALDCTL_PATH, args, errfile);
	th_sh(err, "cat '%s'", errfile);
	hr_free(errfile);
	return rc;
}

static long count(const char *sql)
{
	PGconn *c;
	hr_err e = {0};
	ck_assert(hr_db_connect(dsn, &c, &e));
	PGresult *r;
	ck_assert_msg(hr_db_query(c, sql, 0, NULL, &r, &e), "%s", e.msg);
	long n = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return n;
}

static int lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void setup(void)
{
	dsn = th_fresh_db();
	char *out;
	int rc = ctl(&out, "migrate");
	ck_assert_msg(rc == 0, "migrate: %s", out);
	ck_assert_msg(strstr(out, "control migrations applied=2"), "got '%s'", out);
	hr_free(out);
}

static void teardown(void)
{
	hr_free(dsn);
}

/* Expect failure with exit code `code` and exactly one line on stderr containing `want`. */
static void expect_error(const char *args, int code, const char *want)
{
	char *out, *err;
	int rc = ctl_split(&out, &err, args);
	ck_assert_msg(rc == code, "heraldctl %s: got exit %d, want %d (%s%s)", args, rc, code, out, err);
	ck_assert_msg(strstr(err, want), "heraldctl %s: got '%s', want '%s'", args, err, want);
	ck_assert_msg(lines(err) == 1, "heraldctl %s: want one line, got '%s'", args, err);
	ck_assert_msg(strncmp(err, "heraldctl: ", 11) == 0, "got '%s'", err);
	hr_free(out);
	hr_free(err);
}

START_TEST(full_operator_session)
{
	char *out;
	ck_assert_int_eq(ctl(&out, "agency create acme --name 'ACME Agency'"), 0);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "tenant create acme shop-one --name 'Shop One'"), 0);
	ck_assert_msg(strstr(out, "schema t_shop_one"), "got '%s'", out);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "tenant list"), 0);
	ck_assert_msg(strstr(out, "shop-one") && strstr(out, "Shop One"), "got '%s'", out);
	hr_free(out);
	char *key, *err;
	ck_assert_int_eq(ctl_split(&key, &err, "apikey create acme shop-one --scope send --name backend"), 0);
	ck_assert_msg(strncmp(key, "hk_", 3) == 0 && lines(key) == 1, "stdout must be the key alone: '%s'", key);
	ck_assert_msg(strstr(err, "shown only once"), "got '%s'", err);
	key[strcspn(key, "\n")] = '\0';
	char key_id[13];
	memcpy(key_id, key + 3, 12);
	key_id[12] = '\0';
	ck_assert_int_eq(ctl(&out, "apikey list acme"), 0);
	ck_assert_msg(strstr(out, key_id) && !strstr(out, key + 16), "list must show the id, never the secret: '%s'", out);
	hr_free(out);
	char args[64];
	snprintf(args, sizeof args, "apikey revoke %s", key_id);
	ck_assert_int_eq(ctl(&out, args), 0);
	hr_free(out);
	ck_assert_int_eq(count("SELECT count(*) FROM herald.api_keys WHERE revoked_at IS NOT NULL"), 1);
	ck_assert_int_eq(ctl(&out, "tenant suspend shop-one"), 0);
	hr_free(out);
	ck_assert_int_eq(count("SELECT count(*) FROM herald.tenants WHERE status = 'suspended'"), 1);
	ck_assert_int_eq(ctl(&out, "tenant resume shop-one"), 0);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "status"), 0);
	ck_assert_msg(strstr(out, "tenants: 1") && strstr(out, "behind: 0"), "got '%s'", out);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "migrate"), 0);
	ck_assert_msg(strstr(out, "applied=0 tenants=1 migrated=0 failed=0"), "got '%s'", out);
	hr_free(out);
	hr_free(key);
	hr_free(err);
}
END_TEST

START_TEST(errors_are_one_line_and_change_nothing)
{
	char *out;
	ck_assert_int_eq(ctl(&out, "agency create acme"), 0);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "tenant create acme shop"), 0);
	hr_free(out);
	long agencies = count("SELECT count(*) FROM herald.agencies");
	long tenants = count("SELECT count(*) FROM herald.tenants");
	long keys = count("SELECT count(*) FROM herald.api_keys");
	expect_error("agency create acme", 1, "agency 'acme' already exists");
	expect_error("agency create 'Bad Slug'", 1, "slug must start with a letter");
	expect_error("agency create 'x;drop'", 1, "may contain only a-z, 0-9 and '-'");
	expect_error("tenant create acme shop", 1, "tenant 'shop' already exists");
	expect_error("tenant create nobody shop2", 1, "no agency 'nobody'");
	expect_error("tenant create acme 'sh\"op'", 1, "slug may contain only");
	expect_error("tenant suspend ghost", 1, "no tenant 'ghost'");
	expect_error("apikey create acme ghost", 1, "agency 'acme' has no tenant 'ghost'");
	expect_error("apikey create acme shop --scope root", 1, "scope must be full, send or read");
	expect_error("apikey revoke nosuchkey", 1, "no API key with id 'nosuchkey'");
	expect_error("tenant create acme", 2, "missing AGENCY and SLUG");
	expect_error("tenant frobnicate", 2, "unknown tenant command 'frobnicate'");
	expect_error("agency create a1 --colour red", 2, "unknown option --colour");
	expect_error("launch", 2, "unknown command 'launch'");
	expect_error("--migrate-jobs=0 migrate", 2, "out of range 1..64");
	ck_assert_int_eq(count("SELECT count(*) FROM herald.agencies"), agencies);
	ck_assert_int_eq(count("SELECT count(*) FROM herald.tenants"), tenants);
	ck_assert_int_eq(count("SELECT count(*) FROM herald.api_keys"), keys);
}
END_TEST

/* Herald time: skew moves forward only, is visible to tenant roles, and is announced. */
START_TEST(clock_advances_and_notifies)
{
	char *out;
	ck_assert_int_eq(ctl(&out, "agency create acme"), 0);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "tenant create acme clockshop"), 0);
	hr_free(out);
	ck_assert_int_eq(count("SELECT (SELECT skew FROM herald_clock.state) = '0'"), 0); /* false = 0 */
	PGconn *l;
	hr_err e = {0};
	ck_assert(hr_db_connect(dsn, &l, &e));
	ck_assert(hr_db_exec(l, "LISTEN herald_clock", &e));
	ck_assert_int_eq(ctl(&out, "clock advance 3d"), 0);
	ck_assert_msg(strstr(out, "3 days"), "got '%s'", out);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "clock advance 90m"), 0);
	ck_assert_msg(strstr(out, "3 days 01:30:00"), "got '%s'", out);
	hr_free(out);
	PQconsumeInput(l);
	int notes = 0;
	for (PGnotify *n; (n = PQnotifies(l)); PQfreemem(n))
		notes++;
	ck_assert_int_eq(notes, 2);
	PQfinish(l);
	/* herald_clock.now() leads now() by the skew, also inside a tenant's role. */
	ck_assert_int_eq(count("SELECT herald_clock.now() - now() = interval '3 days 01:30'"), 0);
	ck_assert(hr_db_connect(dsn, &l, &e));
	ck_assert_msg(hr_db_tenant_begin(l, "t_clockshop", "herald_t_clockshop", &e), "%s", e.msg);
	PGresult *r;
	ck_assert_msg(hr_db_query(l, "SELECT extract(epoch FROM herald_clock.now() - now())::bigint", 0, NULL, &r, &e),
		      "%s", e.msg);
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "264600");
	PQclear(r);
	/* ...and the tenant role cannot move it. */
	ck_assert(!hr_db_exec(l, "UPDATE herald_clock.state SET skew = '0'", &e));
	hr_db_rollback(l);
	PQfinish(l);
	expect_error("clock advance -1d", 2, "expected a positive number");
	expect_error("clock advance 5y", 2, "unknown unit 'y'");
	expect_error("clock advance", 2, "missing");
	expect_error("clock rewind", 2, "unknown clock command 'rewind'");
	ck_assert_int_eq(count("SELECT extract(epoch FROM skew)::bigint FROM herald_clock.state"), 264600);
	ck_assert_int_eq(ctl(&out, "clock reset"), 0);
	hr_free(out);
	ck_assert_int_eq(count("SELECT extract(epoch FROM skew)::bigint FROM herald_clock.state"), 0);
}
END_TEST

START_TEST(unreachable_and_unmigrated_databases)
{
	char *out, *err;
	int rc = th_sh(&out, "HERALD_DATABASE_URL='host=127.0.0.1 port=1 dbname=x connect_timeout=2' '%s' tenant list 2>&1",
		       HERALDCTL_PATH);
	ck_assert_int_eq(rc, 1);
	ck_assert_msg(strncmp(out, "heraldctl: ", 11) == 0 && strstr(out, "cannot connect to PostgreSQL") && lines(out) == 1, "got '%s'", out);
	hr_free(out);
	char *fresh = th_fresh_db();
	rc = th_sh(&out, "HERALD_DATABASE_URL='%s' '%s' agency list 2>&1", fresh, HERALDCTL_PATH);
	ck_assert_int_eq(rc, 1);
	ck_assert_msg(strstr(out, "run `heraldctl migrate`"), "got '%s'", out);
	hr_free(out);
	hr_free(fresh);
	/* A broken setting is named. */
	rc = th_sh(&err, "HERALD_MIGRATE_JOBS=lots '%s' status 2>&1", HERALDCTL_PATH);
	ck_assert_int_eq(rc, 2);
	ck_assert_msg(strstr(err, "HERALD_MIGRATE_JOBS") && strstr(err, "not a whole number"), "got '%s'", err);
	hr_free(err);
}
END_TEST

START_TEST(config_never_shows_secrets)
{
	char *out;
	int rc = th_sh(&out, "HERALD_DATABASE_URL='postgresql://u:s3cr3t@h/db' HERALD_MASTER_KEY=abc '%s' config",
		       HERALDCTL_PATH);
	ck_assert_int_eq(rc, 0);
	ck_assert_msg(!strstr(out, "s3cr3t") && !strstr(out, "= abc"), "secret leaked: %s", out);
	ck_assert_ptr_nonnull(strstr(out, "database_url = ******** (set)"));
	hr_free(out);
}
END_TEST

START_TEST(provider_accounts_sealed_with_master_key)
{
	char *out;
	ck_assert_int_eq(ctl(&out, "agency create acme"), 0);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "tenant create acme shop-p"), 0);
	hr_free(out);
	/* An external database and no master key: refused, nothing stored. */
	expect_error("provider set shop-p sms-main --channel sms --transport http --secret '{\"token\":\"t0p\"}'", 1,
		     "never invents a key");
	const char *key = "HERALD_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
	char args[512];
	snprintf(args, sizeof args,
		 "provider set shop-p sms-main --channel sms --transport http --rate 25 "
		 "--config '{\"url\":\"http://127.0.0.1:9/x\"}' --secret '{\"token\":\"t0p-s3cret\"}'");
	int rc = th_sh(&out, "%s HERALD_DATABASE_URL='%s' '%s' %s", key, dsn, HERALDCTL_PATH, args);
	ck_assert_msg(rc == 0 && strstr(out, "secret sealed"), "got %d '%s'", rc, out);
	hr_free(out);
	rc = th_sh(&out, "%s HERALD_DATABASE_URL='%s' '%s' provider show shop-p sms-main", key, dsn, HERALDCTL_PATH);
	ck_assert_msg(rc == 0 && strstr(out, "\"token\":\"********\"") && !strstr(out, "t0p-s3cret") &&
			      strstr(out, "\"rate_per_s\":25"), "got %d '%s'", rc, out);
	hr_free(out);
	ck_assert_int_eq(ctl(&out, "provider list shop-p"), 0);
	ck_assert_msg(strstr(out, "sms-main") && strstr(out, "sealed") && !strstr(out, "t0p"), "got '%s'", out);
	hr_free(out);
	ck_assert_int_eq(count("SELECT count(*) FROM herald.provider_accounts"), 1);
	expect_error("provider set shop-p x2 --channel sms", 2, "needs --channel and --transport");
}
END_TEST

int main(void)
{
	th_pg_dsn();
	Suite *s = suite_create("heraldctl");
	TCase *tc = th_tcase("cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, full_operator_session);
	tcase_add_test(tc, errors_are_one_line_and_change_nothing);
	tcase_add_test(tc, unreachable_and_unmigrated_databases);
	tcase_add_test(tc, clock_advances_and_notifies);
	tcase_add_test(tc, config_never_shows_secrets);
	tcase_add_test(tc, provider_accounts_sealed_with_master_key);
	suite_add_tcase(s, tc);
	return th_run(s);
}
