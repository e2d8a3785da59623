/*
 * test_db.c -- common/ against a real PostgreSQL: the embedded cluster,
 * the migration runner, tenancy and tenant isolation.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"
#include "migrate.h"
#include "pgembed.h"
#include "providers.h"
#include "tenancy.h"

static PGconn *connect_dsn(const char *dsn)
{
	PGconn *c;
	hr_err err = {0};
	ck_assert_msg(hr_db_connect(dsn, &c, &err), "%s", err.msg);
	return c;
}

static char *scalar(PGconn *c, const char *sql)
{
	PGresult *r;
	hr_err err = {0};
	ck_assert_msg(hr_db_query(c, sql, 0, NULL, &r, &err), "%s: %s", sql, err.msg);
	char *v = hr_strdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return v;
}

static long count(PGconn *c, const char *sql)
{
	char *v = scalar(c, sql);
	long n = atol(v);
	hr_free(v);
	return n;
}

/* A copy of the source tree's migrations plus extra files, in a temp dir. */
static char *migration_copy(void)
{
	char *dir = th_tmpdir("migset");
	char *out = NULL;
	int rc = th_sh(&out, "cp -r '%s/migrations/control' '%s/migrations/tenant' '%s/'",
		       HERALD_SOURCE_DIR, HERALD_SOURCE_DIR, dir);
	ck_assert_msg(rc == 0, "cp: %s", out);
	hr_free(out);
	return dir;
}

static void put(const char *dir, const char *name, const char *text, const char *mode)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, mode);
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static hr_migration_set *load(const char *dir)
{
	hr_migration_set *s;
	hr_err err = {0};
	ck_assert_msg(hr_migrations_load(dir, &s, &err), "%s", err.msg);
	return s;
}

static void make_tenants(const char *dsn, const hr_migration_set *set, int n, hr_tenant *out)
{
	PGconn *c = connect_dsn(dsn);
	hr_err err = {0};
	char agency[48];
	th_slug("ag", agency, sizeof agency);
	ck_assert_msg(hr_agency_create(c, agency, NULL, NULL, &err), "%s", err.msg);
	for (int i = 0; i < n; i++) {
		char slug[48];
		th_slug("tn", slug, sizeof slug);
		ck_assert_msg(hr_tenant_create(c, set, agency, slug, NULL, &out[i], &err), "%s", err.msg);
	}
	PQfinish(c);
}

/* ---- embedded PostgreSQL ---- */

START_TEST(pgembed_start_is_idempotent_and_survives_restart)
{
	char *dir = th_tmpdir("pgown");
	hr_pgembed_opts o = {.data_dir = dir, .bin_dir = "/usr/lib/postgresql/15/bin",
			     .os_user = "postgres", .throwaway = true};
	hr_err err = {0};
	char *dsn1, *dsn2, *dsn3;
	ck_assert_msg(hr_pgembed_start(&o, &dsn1, &err), "%s", err.msg);
	ck_assert_msg(hr_pgembed_start(&o, &dsn2, &err), "%s", err.msg);
	ck_assert_str_eq(dsn1, dsn2); /* already running: left as it is */
	PGconn *c = connect_dsn(dsn1);
	ck_assert(hr_db_exec(c, "CREATE TABLE keep (x int); INSERT INTO keep VALUES (42)", &err));
	PQfinish(c);
	ck_assert_msg(hr_pgembed_stop(&o, &err), "%s", err.msg);
	ck_assert(!hr_pgembed_dsn(dir, &dsn3, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "no embedded PostgreSQL is running"));
	ck_assert_msg(hr_pgembed_stop(&o, &err), "stopping a stopped cluster: %s", err.msg);
	ck_assert_msg(hr_pgembed_start(&o, &dsn3, &err), "%s", err.msg);
	c = connect_dsn(dsn3);
	ck_assert_int_eq(count(c, "SELECT x FROM keep"), 42);
	PQfinish(c);
	ck_assert(hr_pgembed_stop(&o, &err));
	hr_free(dsn1);
	hr_free(dsn2);
	hr_free(dsn3);
	hr_free(dir);
}
END_TEST

START_TEST(pgembed_bad_bin_dir_is_a_clear_error)
{
	char *dir = th_tmpdir("pgbad");
	hr_pgembed_opts o = {.data_dir = dir, .bin_dir = "/nonexistent/bin", .os_user = "postgres"};
	hr_err err = {0};
	char *dsn;
	ck_assert(!hr_pgembed_start(&o, &dsn, &err));
	ck_assert_msg(strstr(err.msg, "/nonexistent/bin/initdb not found"), "got '%s'", err.msg);
	ck_assert_str_eq(err.field, "pg_bin_dir");
	hr_free(dir);
}
END_TEST

/* ---- migrations ---- */

START_TEST(migrate_twice_is_a_noop)
{
	char *dsn = th_fresh_db();
	const hr_migration_set *set = th_migrations();
	hr_migrate_report rep;
	hr_err err = {0};
	ck_assert_msg(hr_migrate_all(dsn, set, 2, true, &rep, &err), "%s", err.msg);
	ck_assert_int_eq(rep.control_applied, (int)set->ncontrol);
	hr_tenant t[3];
	make_tenants(dsn, set, 3, t);
	ck_assert_int_eq(t[0].schema_version, hr_migrations_latest(set->tenant, set->ntenant));
	ck_assert_msg(hr_migrate_all(dsn, set, 2, true, &rep, &err), "%s", err.msg);
	ck_assert_int_eq(rep.control_applied, 0);
	ck_assert_int_eq(rep.tenants, 3);
	ck_assert_int_eq(rep.migrated, 0);
	ck_assert_int_eq(rep.failed, 0);
	PGconn *c = connect_dsn(dsn);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM herald.schema_migrations"), (long)set->ncontrol);
	PQfinish(c);
	hr_free(dsn);
}
END_TEST

START_TEST(new_tenant_migration_reaches_every_tenant)
{
	char *dsn = th_fresh_db();
	char *dir = migration_copy();
	hr_migration_set *base = load(dir);
	hr_migrate_report rep;
	hr_err err = {0};
	ck_assert(hr_migrate_all(dsn, base, 2, true, &rep, &err));
	hr_tenant t[5];
	make_tenants(dsn, base, 5, t);
	put(dir, "tenant/0099_extra.sql", "ALTER TABLE contacts ADD COLUMN extra text;\n", "w");
	hr_migration_set *next = load(dir);
	ck_assert_msg(hr_migrate_all(dsn, next, 3, true, &rep, &err), "%s", err.msg);
	ck_assert_int_eq(rep.migrated, 5);
	PGconn *c = connect_dsn(dsn);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM herald.tenants WHERE schema_version = 99"), 5);
	for (int i = 0; i < 5; i++) {
		char sql[256];
		snprintf(sql, sizeof sql,
			 "SELECT count(*) FROM information_schema.columns WHERE table_schema = '%s' "
			 "AND table_name = 'contacts' AND column_name = 'extra'",
			 t[i].schema);
		ck_assert_int_eq(count(c, sql), 1);
	}
	/* A tenant created now starts at the new latest version. */
	hr_tenant late;
	make_tenants(dsn, next, 1, &late);
	ck_assert_int_eq(late.schema_version, 99);
	PQfinish(c);
	hr_migrations_free(base);
	hr_migrations_free(next);
	hr_free(dir);
	hr_free(dsn);
}
END_TEST

START_TEST(edited_migration_is_refused_and_nothing_applied)
{
	char *dsn = th_fresh_db();
	char *dir = migration_copy();
	hr_migration_set *base = load(dir);
	hr_migrate_report rep;
	hr_err err = {0};
	ck_assert(hr_migrate_all(dsn, base, 2, true, &rep, &err));
	hr_tenant t[2];
	make_tenants(dsn, base, 2, t);
	/* Edit an applied tenant migration and add a new one in the same set. */
	put(dir, "tenant/0001_core.sql", "\n-- an innocent-looking edit\n", "a");
	put(dir, "tenant/0900_new.sql", "CREATE TABLE must_not_exist (x int);\n", "w");
	hr_migration_set *edited = load(dir);
	ck_assert(!hr_migrate_all(dsn, edited, 2, true, &rep, &err));
	ck_assert_int_eq(rep.failed, 2);
	ck_assert_int_eq(rep.migrated, 0);
	PGconn *c = connect_dsn(dsn);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'must_not_exist'"), 0);
	/* The error names the file, per tenant. */
	hr_err one = {0};
	int from, to;
	ck_assert(!hr_migrate_tenant(c, edited, t[0].schema, t[0].role, &from, &to, &one));
	ck_assert_msg(strstr(one.msg, "migration tenant/0001_core.sql was edited after it was applied"),
		      "got '%s'", one.msg);
	ck_assert_str_eq(one.field, "0001_core.sql");
	/* An edited control migration stops the whole run. */
	hr_migrations_free(edited);
	put(dir, "control/0001_control.sql", "\n-- edit\n", "a");
	edited = load(dir);
	ck_assert(!hr_migrate_all(dsn, edited, 2, true, &rep, &err));
	ck_assert_msg(strstr(err.msg, "control/0001_control.sql was edited"), "got '%s'", err.msg);
	ck_assert_int_eq(rep.tenants, 0);
	th_expect_warnings(2); /* one per tenant in the first run */
	PQfinish(c);
	hr_migrations_free(base);
	hr_migrations_free(edited);
	hr_free(dir);
	hr_free(dsn);
}
END_TEST

START_TEST(newer_schema_than_binary_is_refused)
{
	char *dsn = th_fresh_db();
	char *dir = migration_copy();
	put(dir, "tenant/0050_later.sql", "CREATE TABLE later (x int);\n", "w");
	hr_migration_set *newer = load(dir);
	hr_migrate_report rep;
	hr_err err = {0};
	ck_assert(hr_migrate_all(dsn, newer, 2, true, &rep, &err));
	hr_tenant t;
	make_tenants(dsn, newer, 1, &t);
	PGconn *c = connect_dsn(dsn);
	int from, to;
	ck_assert(!hr_migrate_tenant(c, th_migrations(), t.schema, t.role, &from, &to, &err));
	ck_assert_msg(strstr(err.msg, "newer than this herald's latest"), "got '%s'", err.msg);
	PQfinish(c);
	hr_migrations_free(newer);
	hr_free(dir);
	hr_free(dsn);
}
END_TEST

START_TEST(failed_tenant_does_not_stop_others_and_run_resumes)
{
	char *dsn = th_fresh_db();
	char *dir = migration_copy();
	hr_migration_set *base = load(dir);
	hr_migrate_report rep;
	hr_err err = {0};
	ck_assert(hr_migrate_all(dsn, base, 2, true, &rep, &err));
	hr_tenant t[4];
	make_tenants(dsn, base, 4, t);
	PGconn *c = connect_dsn(dsn);
	char sql[256];
	snprintf(sql, sizeof sql, "CREATE TABLE %s.blocker (x int)", t[2].schema);
	ck_assert(hr_db_exec(c, sql, &err));
	put(dir, "tenant/0900_blocker.sql", "CREATE TABLE blocker (y int);\n", "w");
	hr_migration_set *next = load(dir);
	ck_assert(!hr_migrate_all(dsn, next, 2, true, &rep, &err));
	ck_assert_int_eq(rep.failed, 1);
	ck_assert_int_eq(rep.migrated, 3);
	ck_assert_msg(strstr(err.msg, "1 of 4 tenant schema(s) failed"), "got '%s'", err.msg);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM herald.tenants WHERE schema_version = 900"), 3);
	/* Fix the cause; the next run does only what is left. */
	snprintf(sql, sizeof sql, "DROP TABLE %s.blocker", t[2].schema);
	ck_assert(hr_db_exec(c, sql, &err));
	ck_assert_msg(hr_migrate_all(dsn, next, 2, true, &rep, &err), "%s", err.msg);
	ck_assert_int_eq(rep.migrated, 1);
	ck_assert_int_eq(rep.failed, 0);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM herald.tenants WHERE schema_version = 900"), 4);
	th_expect_warnings(1);
	PQfinish(c);
	hr_migrations_free(base);
	hr_migrations_free(next);
	hr_free(dir);
	hr_free(dsn);
}
END_TEST

typedef struct runner_arg {
	const char *dsn;
	const hr_migration_set *set;
	hr_migrate_report rep;
	bool ok;
	hr_err err;
} runner_arg;

static void *runner(void *p)
{
	runner_arg *a = p;
	a->ok = hr_migrate_all(a->dsn, a->set, 2, true, &a->rep, &a->err);
	return NULL;
}

START_TEST(concurrent_runners_do_not_collide)
{
	char *dsn = th_fresh_db();
	char *dir = migration_copy();
	hr_migration_set *base = load(dir);
	runner_arg a = {.dsn = dsn, .set = base}, b = a;
	pthread_t ta, tb;
	/* Two runners on a fresh database: the control migrations are applied once. */
	pthread_create(&ta, NULL, runner, &a);
	pthread_create(&tb, NULL, runner, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	ck_assert_msg(a.ok && b.ok, "a: %s / b: %s", a.err.msg, b.err.msg);
	ck_assert_int_eq(a.rep.control_applied + b.rep.control_applied, (int)base->ncontrol);
	hr_tenant t[6];
	make_tenants(dsn, base, 6, t);
	put(dir, "tenant/0900_more.sql", "CREATE TABLE more (x int); SELECT pg_sleep(0.05);\n", "w");
	hr_migration_set *next = load(dir);
	a.set = b.set = next;
	pthread_create(&ta, NULL, runner, &a);
	pthread_create(&tb, NULL, runner, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	ck_assert_msg(a.ok && b.ok, "a: %s / b: %s", a.err.msg, b.err.msg);
	ck_assert_int_eq(a.rep.migrated + b.rep.migrated, 6);
	PGconn *c = connect_dsn(dsn);
	for (int i = 0; i < 6; i++) {
		char sql[256];
		snprintf(sql, sizeof sql, "SELECT count(*) FROM %s.schema_migrations WHERE version = 900",
			 t[i].schema);
		ck_assert_int_eq(count(c, sql), 1);
	}
	PQfinish(c);
	hr_migrations_free(base);
	hr_migrations_free(next);
	hr_free(dir);
	hr_free(dsn);
}
END_TEST

START_TEST(unmigrated_control_is_reported)
{
	char *dsn = th_fresh_db();
	PGconn *c = connect_dsn(dsn);
	hr_err err = {0};
	ck_assert(!hr_migrate_check_control(c, th_migrations(), &err));
	ck_assert_msg(strstr(err.msg, "run `heraldctl migrate`"), "got '%s'", err.msg);
	PQfinish(c);
	hr_free(dsn);
}
END_TEST

/* ---- tenancy ---- */

START_TEST(agency_errors_change_nothing)
{
	PGconn *c = th_control();
	hr_err err = {0};
	char slug[48];
	th_slug("ag", slug, sizeof slug);
	long before = count(c, "SELECT count(*) FROM herald.agencies");
	ck_assert(hr_agency_create(c, slug, "A", NULL, &err));
	ck_assert(!hr_agency_create(c, slug, "A again", NULL, &err));
	ck_assert_int_eq(err.kind, HR_ERR_CONFLICT);
	ck_assert_msg(strstr(err.msg, "already exists"), "got '%s'", err.msg);
	ck_assert(!hr_agency_create(c, "Bad Slug", "B", NULL, &err));
	ck_assert_int_eq(err.kind, HR_ERR_INVALID);
	ck_assert(!hr_agency_create(c, "x'); DROP TABLE herald.tenants; --", "B", NULL, &err));
	ck_assert_int_eq(count(c, "SELECT count(*) FROM herald.agencies"), before + 1);
	PQfinish(c);
}
END_TEST

START_TEST(tenant_errors_change_nothing)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant t, u;
	th_tenant(c, &t);
	long tenants = count(c, "SELECT count(*) FROM herald.tenants");
	long roles = count(c, "SELECT count(*) FROM pg_roles");
	ck_assert(!hr_tenant_create(c, th_migrations(), "no-such-agency", "fresh-one", NULL, &u, &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	ck_assert(!hr_tenant_create(c, th_migrations(), t.agency_slug, t.slug, NULL, &u, &err));
	ck_assert_int_eq(err.kind, HR_ERR_CONFLICT);
	ck_assert(!hr_tenant_create(c, th_migrations(), t.agency_slug, "bad_slug", NULL, &u, &err));
	ck_assert_int_eq(err.kind, HR_ERR_INVALID);
	/* A schema of the derived name already exists outside herald: refused, all rolled back. */
	char slug[48], sql[256];
	th_slug("left", slug, sizeof slug);
	snprintf(sql, sizeof sql, "CREATE SCHEMA \"t_%s\"", slug);
	for (char *p = sql; *p; p++)
		if (*p == '-')
			*p = '_';
	ck_assert(hr_db_exec(c, sql, &err));
	ck_assert(!hr_tenant_create(c, th_migrations(), t.agency_slug, slug, NULL, &u, &err));
	ck_assert_int_eq(err.kind, HR_ERR_CONFLICT);
	ck_assert_msg(strstr(err.msg, "already exists in the database"), "got '%s'", err.msg);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM herald.tenants"), tenants);
	ck_assert_int_eq(count(c, "SELECT count(*) FROM pg_roles"), roles);
	PQfinish(c);
}
END_TEST

START_TEST(suspend_resume_and_unknown)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant t, got;
	th_tenant(c, &t);
	ck_assert(hr_tenant_set_status(c, t.slug, "suspended", &err));
	ck_assert(hr_tenant_get(c, t.slug, &got, &err));
	ck_assert_str_eq(got.status, "suspended");
	ck_assert(hr_tenant_set_status(c, t.slug, "active", &err));
	ck_assert(!hr_tenant_set_status(c, "nobody-here", "active", &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	ck_assert(!hr_tenant_set_status(c, t.slug, "deleted", &err));
	ck_assert_int_eq(err.kind, HR_ERR_INVALID);
	PQfinish(c);
}
END_TEST

START_TEST(api_keys_verify_revoke_suspend)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant t;
	th_tenant(c, &t);
	char key[HR_KEY_LEN_TOTAL + 1], id[HR_KEY_ID_LEN + 1];
	ck_assert_msg(hr_apikey_create(c, t.agency_slug, t.slug, "send", "backend", key, id, &err), "%s", err.msg);
	/* Only the hash is stored. */
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM herald.api_keys WHERE secret_hash LIKE '%%%s%%' OR key_id = '%s'",
		 key + 4 + HR_KEY_ID_LEN, id);
	ck_assert_int_eq(count(c, sql), 1);
	hr_principal p;
	ck_assert_msg(hr_apikey_verify(c, key, &p, &err), "%s", err.msg);
	ck_assert(p.has_tenant);
	ck_assert_str_eq(p.scope, "send");
	ck_assert_str_eq(p.tenant.slug, t.slug);
	char wrong[HR_KEY_LEN_TOTAL + 1];
	memcpy(wrong, key, sizeof wrong);
	wrong[HR_KEY_LEN_TOTAL - 1] = wrong[HR_KEY_LEN_TOTAL - 1] == 'a' ? 'b' : 'a';
	ck_assert(!hr_apikey_verify(c, wrong, &p, &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	ck_assert(!hr_apikey_verify(c, "hk_short", &p, &err));
	ck_assert(!hr_apikey_verify(c, "", &p, &err));
	ck_assert(hr_tenant_set_status(c, t.slug, "suspended", &err));
	ck_assert(!hr_apikey_verify(c, key, &p, &err));
	ck_assert(hr_tenant_set_status(c, t.slug, "active", &err));
	ck_assert(hr_apikey_verify(c, key, &p, &err));
	ck_assert(hr_apikey_revoke(c, id, &err));
	ck_assert(!hr_apikey_verify(c, key, &p, &err));
	ck_assert(!hr_apikey_revoke(c, "nokeyid", &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	/* Scopes are checked against the key's kind. */
	ck_assert(!hr_apikey_create(c, t.agency_slug, t.slug, "agency", NULL, key, id, &err));
	ck_assert_str_eq(err.field, "scope");
	ck_assert(!hr_apikey_create(c, t.agency_slug, NULL, "full", NULL, key, id, &err));
	ck_assert(!hr_apikey_create(c, t.agency_slug, t.slug, "admin", NULL, key, id, &err));
	PQfinish(c);
}
END_TEST

START_TEST(agency_key_reaches_only_its_tenants)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant mine, theirs, got;
	th_tenant(c, &mine);
	th_tenant(c, &theirs); /* another agency */
	char key[HR_KEY_LEN_TOTAL + 1], id[HR_KEY_ID_LEN + 1];
	ck_assert(hr_apikey_create(c, mine.agency_slug, NULL, "agency", NULL, key, id, &err));
	hr_principal p;
	ck_assert(hr_apikey_verify(c, key, &p, &err));
	ck_assert(!p.has_tenant);
	ck_assert(hr_principal_tenant(c, &p, mine.slug, &got, &err));
	ck_assert_str_eq(got.schema, mine.schema);
	ck_assert(!hr_principal_tenant(c, &p, theirs.slug, &got, &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	/* The same answer as for a tenant that does not exist at all. */
	char other_msg[sizeof err.msg];
	snprintf(other_msg, sizeof other_msg, "%s", err.msg);
	ck_assert(!hr_principal_tenant(c, &p, "ghost-tenant", &got, &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(other_msg, "no tenant"));
	/* A tenant key cannot name another tenant. */
	ck_assert(hr_apikey_create(c, mine.agency_slug, mine.slug, "full", NULL, key, id, &err));
	ck_assert(hr_apikey_verify(c, key, &p, &err));
	ck_assert(!hr_principal_tenant(c, &p, theirs.slug, &got, &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	PQfinish(c);
}
END_TEST

static bool run_as_tenant(PGconn *c, const hr_tenant *t, const char *sql, hr_err *err)
{
	if (!hr_db_tenant_begin(c, t->schema, t->role, err))
		return false;
	bool ok = hr_db_exec(c, sql, err);
	if (ok)
		return hr_db_commit(c, err);
	hr_db_rollback(c);
	return false;
}

START_TEST(tenant_key_cannot_reach_another_tenants_schema)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant a, b, acting;
	th_tenant(c, &a);
	th_tenant(c, &b);
	char key[HR_KEY_LEN_TOTAL + 1], id[HR_KEY_ID_LEN + 1];
	ck_assert(hr_apikey_create(c, a.agency_slug, a.slug, "full", NULL, key, id, &err));
	/* B has a contact; A's key acts through the data-access layer. */
	ck_assert(run_as_tenant(c, &b, "INSERT INTO contacts (email) VALUES ('b@example.com')", &err));
	hr_principal p;
	ck_assert(hr_apikey_verify(c, key, &p, &err));
	ck_assert(hr_principal_tenant(c, &p, NULL, &acting, &err));
	ck_assert_str_eq(acting.slug, a.slug);
	ck_assert_msg(run_as_tenant(c, &acting, "INSERT INTO contacts (email) VALUES ('a@example.com')", &err),
		      "%s", err.msg);
	char sql[512];
	const char *attempts[] = {
		"SELECT * FROM %s.contacts",
		"UPDATE %s.contacts SET email = 'stolen@example.com'",
		"SET LOCAL search_path TO %s; SELECT * FROM contacts",
		"DELETE FROM %s.contacts",
	};
	for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
		snprintf(sql, sizeof sql, attempts[i], b.schema);
		ck_assert_msg(!run_as_tenant(c, &acting, sql, &err), "'%s' was allowed", sql);
		ck_assert_msg(strstr(err.msg, "permission denied") || strstr(err.msg, "does not exist"),
			      "'%s': got '%s'", sql, err.msg);
	}
	ck_assert(!run_as_tenant(c, &acting, "SELECT * FROM herald.api_keys", &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "permission denied"));
	ck_assert(!run_as_tenant(c, &acting, "CREATE TABLE public.leak (x int)", &err));
	/* B's data is untouched, A sees only its own. */
	snprintf(sql, sizeof sql, "SELECT string_agg(email, ',') FROM %s.contacts", b.schema);
	char *v = scalar(c, sql);
	ck_assert_str_eq(v, "b@example.com");
	hr_free(v);
	snprintf(sql, sizeof sql, "SELECT string_agg(email, ',') FROM %s.contacts", a.schema);
	v = scalar(c, sql);
	ck_assert_str_eq(v, "a@example.com");
	hr_free(v);
	PQfinish(c);
}
END_TEST

/* ---- provider accounts and the master key ---- */

static const uint8_t test_key[HR_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
					     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

START_TEST(provider_secret_sealed_at_rest)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant t;
	th_tenant(c, &t);
	hr_provider_spec s = {.name = "sms-main", .channel = "sms", .transport = "http",
			      .config = "{\"url\":\"http://127.0.0.1:1/v1/send/sms/sms-main\"}",
			      .secret = "{\"headers\":{\"Authorization\":\"Bearer sup3rsecret\"}}",
			      .rate_per_s = 50};
	ck_assert_msg(hr_provider_put(c, test_key, t.slug, &s, &err), "%s", err.msg);
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM herald.provider_accounts WHERE tenant_id = %lld AND "
		 "(position('sup3rsecret' in encode(secret_sealed, 'escape')) > 0 OR config::text LIKE '%%sup3r%%')",
		 (long long)t.id);
	ck_assert_int_eq(count(c, sql), 0);
	char *json;
	ck_assert_msg(hr_provider_resolve(c, test_key, t.id, "sms-main", false, &json, &err), "%s", err.msg);
	ck_assert_msg(strstr(json, "Bearer sup3rsecret") && strstr(json, "\"rate_per_s\":50") &&
			      strstr(json, "\"transport\":\"http\""), "got %s", json);
	hr_free(json);
	ck_assert(hr_provider_resolve(c, test_key, t.id, "sms-main", true, &json, &err));
	ck_assert_msg(!strstr(json, "sup3rsecret") && strstr(json, "********"), "got %s", json);
	hr_free(json);
	/* Replacing without a secret keeps the sealed one. */
	s.secret = NULL;
	s.rate_per_s = 0;
	ck_assert(hr_provider_put(c, test_key, t.slug, &s, &err));
	ck_assert(hr_provider_resolve(c, test_key, t.id, "sms-main", false, &json, &err));
	ck_assert_msg(strstr(json, "sup3rsecret") && strstr(json, "\"rate_per_s\":0"), "got %s", json);
	hr_free(json);
	/* Another master key does not open it. */
	uint8_t other[HR_KEY_LEN];
	memcpy(other, test_key, sizeof other);
	other[31] ^= 0xff;
	ck_assert(!hr_provider_resolve(c, other, t.id, "sms-main", false, &json, &err));
	ck_assert_msg(strstr(err.msg, "wrong master key"), "got '%s'", err.msg);
	/* A sealed secret copied to another account does not open there. */
	hr_provider_spec s2 = {.name = "sms-other", .channel = "sms", .transport = "http", .config = "{}"};
	ck_assert(hr_provider_put(c, test_key, t.slug, &s2, &err));
	snprintf(sql, sizeof sql,
		 "UPDATE herald.provider_accounts SET secret_sealed = (SELECT secret_sealed FROM "
		 "herald.provider_accounts WHERE tenant_id = %lld AND name = 'sms-main') "
		 "WHERE tenant_id = %lld AND name = 'sms-other'",
		 (long long)t.id, (long long)t.id);
	ck_assert(hr_db_exec(c, sql, &err));
	ck_assert(!hr_provider_resolve(c, test_key, t.id, "sms-other", false, &json, &err));
	ck_assert(!hr_provider_resolve(c, test_key, t.id, "nope", false, &json, &err));
	ck_assert_int_eq(err.kind, HR_ERR_NOTFOUND);
	PQfinish(c);
}
END_TEST

static const struct {
	hr_provider_spec spec;
	const char *field, *want;
} bad_provider_cases[] = {
	{{"ok-name", "fax", "http", "{}", NULL, 0}, "channel", "channel must be"},
	{{"ok-name", "sms", "pigeon", "{}", NULL, 0}, "transport", "transport must be"},
	{{"ok-name", "sms", "smtp", "{}", NULL, 0}, "transport", "smtp serves the email channel only"},
	{{"ok-name", "sms", "http", "{\"url\":", NULL, 0}, "config", "config is not valid JSON"},
	{{"ok-name", "sms", "http", "[1,2]", NULL, 0}, "config", "must be a JSON object"},
	{{"ok-name", "sms", "http", "{}", "\"pw\"", 0}, "secret", "secret must be a JSON object"},
	{{"Bad Name", "sms", "http", "{}", NULL, 0}, "name", "start with a letter"},
	{{"ok-name", "sms", "http", "{}", NULL, -5}, "rate_per_s", "rate_per_s must be"},
};

START_TEST(provider_bad_input_writes_nothing)
{
	PGconn *c = th_control();
	hr_err err = {0};
	hr_tenant t;
	th_tenant(c, &t);
	ck_assert(!hr_provider_put(c, test_key, t.slug, &bad_provider_cases[_i].spec, &err));
	ck_assert_msg(strstr(err.msg, bad_provider_cases[_i].want), "case %d: got '%s', want '%s'", _i,
		      err.msg, bad_provider_cases[_i].want);
	ck_assert_str_eq(err.field, bad_provider_cases[_i].field);
	char sql[160];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM herald.provider_accounts WHERE tenant_id = %lld",
		 (long long)t.id);
	ck_assert_int_eq(count(c, sql), 0);
	PQfinish(c);
}
END_TEST

START_TEST(master_key_sources)
{
	char *dir = th_tmpdir("mkey");
	hr_config *cfg = hr_config_new(HR_ROLE_ALL);
	hr_err err = {0};
	uint8_t k1[HR_KEY_LEN], k2[HR_KEY_LEN];
	ck_assert(hr_config_set(cfg, "data_dir", dir, &err));
	/* Embedded stack: created once (0600), then reused. */
	ck_assert_msg(hr_master_key_load(cfg, k1, &err), "%s", err.msg);
	ck_assert_msg(hr_master_key_load(cfg, k2, &err), "%s", err.msg);
	ck_assert(memcmp(k1, k2, sizeof k1) == 0);
	char path[1024];
	snprintf(path, sizeof path, "%s/master.key", dir);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* External database: never invented. */
	ck_assert(hr_config_set(cfg, "database_url", "host=db.example", &err));
	ck_assert(!hr_master_key_load(cfg, k2, &err));
	ck_assert_msg(strstr(err.msg, "never invents a key"), "got '%s'", err.msg);
	ck_assert(hr_config_set(cfg, "master_key_file", path, &err));
	ck_assert(hr_master_key_load(cfg, k2, &err));
	ck_assert(memcmp(k1, k2, sizeof k1) == 0);
	FILE *f = fopen(path, "w");
	fputs("not-hex\n", f);
	fclose(f);
	ck_assert(!hr_master_key_load(cfg, k2, &err));
	ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "64 hex digits"), "got '%s'", err.msg);
	ck_assert(hr_config_set(cfg, "master_key", "00ff", &err));
	ck_assert(!hr_master_key_load(cfg, k2, &err));
	hr_config_free(cfg);
	hr_free(dir);
}
END_TEST

int main(void)
{
	th_pg_dsn(); /* the parent owns the cluster */
	Suite *s = suite_create("common_db");
	TCase *tc = th_tcase("pgembed");
	tcase_add_test(tc, pgembed_start_is_idempotent_and_survives_restart);
	tcase_add_test(tc, pgembed_bad_bin_dir_is_a_clear_error);
	suite_add_tcase(s, tc);
	tc = th_tcase("migrate");
	tcase_add_test(tc, migrate_twice_is_a_noop);
	tcase_add_test(tc, new_tenant_migration_reaches_every_tenant);
	tcase_add_test(tc, edited_migration_is_refused_and_nothing_applied);
	tcase_add_test(tc, newer_schema_than_binary_is_refused);
	tcase_add_test(tc, failed_tenant_does_not_stop_others_and_run_resumes);
	tcase_add_test(tc, concurrent_runners_do_not_collide);
	tcase_add_test(tc, unmigrated_control_is_reported);
	suite_add_tcase(s, tc);
	tc = th_tcase("tenancy");
	tcase_add_test(tc, agency_errors_change_nothing);
	tcase_add_test(tc, tenant_errors_change_nothing);
	tcase_add_test(tc, suspend_resume_and_unknown);
	tcase_add_test(tc, api_keys_verify_revoke_suspend);
	tcase_add_test(tc, agency_key_reaches_only_its_tenants);
	tcase_add_test(tc, tenant_key_cannot_reach_another_tenants_schema);
	suite_add_tcase(s, tc);
	tc = th_tcase("providers");
	tcase_add_test(tc, provider_secret_sealed_at_rest);
	tcase_add_loop_test(tc, provider_bad_input_writes_nothing, 0,
			    sizeof bad_provider_cases / sizeof bad_provider_cases[0]);
	tcase_add_test(tc, master_key_sources);
	suite_add_tcase(s, tc);
	return th_run(s);
}
