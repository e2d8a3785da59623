/*
 * migrate.c -- see migrate.h.
 */
#include "migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "crypto.h"
#include "db.h"
#include "log.h"

/* pg_advisory_lock(HR_LOCK_CLASS, 1): one migration runner at a time. */
#define HR_LOCK_CLASS 0x68726c64 /* "hrld" */

/* ---- loading ---------------------------------------------------------- */

static bool parse_name(const char *name, int *version)
{
	const char *p = name;
	long v = 0;
	if (!isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p)) {
		v = v * 10 + (*p++ - '0');
		if (v > 1000000)
			return false;
	}
	if (*p++ != '_' || v <= 0)
		return false;
	size_t len = strlen(p);
	if (len < 5 || strcmp(p + len - 4, ".sql") != 0)
		return false;
	for (size_t i = 0; i < len - 4; i++)
		if (!islower((unsigned char)p[i]) && !isdigit((unsigned char)p[i]) && p[i] != '_')
			return false;
	*version = (int)v;
	return true;
}

static bool add(hr_migration **list, size_t *n, const char *set, const char *name, const char *data,
		size_t len, hr_err *err)
{
	int version;
	if (!parse_name(name, &version))
		return hr_fail(err, HR_ERR_INVALID, name,
			       "migration file %s/%s: name must be NNNN_lowercase_words.sql", set, name);
	if (memchr(data, '\0', len))
		return hr_fail(err, HR_ERR_INVALID, name, "migration file %s/%s contains a NUL byte",
			       set, name);
	for (size_t i = 0; i < *n; i++)
		if ((*list)[i].version == version)
			return hr_fail(err, HR_ERR_INVALID, name,
				       "migrations %s/%s and %s/%s have the same version %d", set,
				       (*list)[i].name, set, name, version);
	*list = hr_realloc(*list, (*n + 1) * sizeof **list);
	hr_migration *m = &(*list)[(*n)++];
	m->version = version;
	m->name = hr_strdup(name);
	m->sql = hr_strndup(data, len);
	hr_sha256_hex(data, len, m->checksum);
	return true;
}

static int by_version(const void *a, const void *b)
{
	const hr_migration *x = a, *y = b;
	return (x->version > y->version) - (x->version < y->version);
}

static bool load_dir(const char *dir, const char *set, hr_migration **list, size_t *n, hr_err *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, set);
	DIR *d = opendir(path);
	if (!d)
		return hr_fail(err, HR_ERR_IO, "migrations_dir", "cannot open %s: %s", path,
			       strerror(errno));
	bool ok = true;
	struct dirent *e;
	while (ok && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char file[4400];
		snprintf(file, sizeof file, "%s/%s", path, e->d_name);
		FILE *f = fopen(file, "rb");
		if (!f) {
			ok = hr_fail(err, HR_ERR_IO, "migrations_dir", "cannot read %s: %s", file,
				     strerror(errno));
			break;
		}
		char *buf = NULL;
		size_t len = 0, cap = 0, got;
		do {
			if (len + 65536 > cap)
				buf = hr_realloc(buf, cap = (cap ? cap * 2 : 65536));
			got = fread(buf + len, 1, cap - len, f);
			len += got;
		} while (got > 0);
		fclose(f);
		ok = add(list, n, set, e->d_name, buf, len, err);
		hr_free(buf);
	}
	closedir(d);
	return ok;
}

bool hr_migrations_load(const char *dir, hr_migration_set **out, hr_err *err)
{
	hr_migration_set *s = hr_calloc(1, sizeof *s);
	bool ok = true;
	if (dir) {
		ok = load_dir(dir, "control", &s->control, &s->ncontrol, err) &&
		     load_dir(dir, "tenant", &s->tenant, &s->ntenant, err);
	} else {
		for (const hr_embedded_file *f = hr_embedded_migrations; ok && f->path; f++) {
			const char *slash = strchr(f->path, '/');
			bool control = strncmp(f->path, "control/", 8) == 0;
			ok = add(control ? &s->control : &s->tenant, control ? &s->ncontrol : &s->ntenant,
				 control ? "control" : "tenant", slash + 1, f->data, f->len, err);
		}
	}
	if (ok && (s->ncontrol == 0 || s->ntenant == 0))
		ok = hr_fail(err, HR_ERR_INVALID, "migrations_dir",
			     "migration set is incomplete: %zu control and %zu tenant migrations",
			     s->ncontrol, s->ntenant);
	if (!ok) {
		hr_migrations_free(s);
		return false;
	}
	qsort(s->control, s->ncontrol, sizeof *s->control, by_version);
	qsort(s->tenant, s->ntenant, sizeof *s->tenant, by_version);
	*out = s;
	return true;
}

static void free_list(hr_migration *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		hr_free(l[i].name);
		hr_free(l[i].sql);
	}
	hr_free(l);
}

void hr_migrations_free(hr_migration_set *set)
{
	if (!set)
		return;
	free_list(set->control, set->ncontrol);
	free_list(set->tenant, set->ntenant);
	hr_free(set);
}

int hr_migrations_latest(const hr_migration *list, size_t n)
{
	return n ? list[n - 1].version : 0;
}

/* ---- verifying what is applied ----------------------------------------- */

/*
 * Compare schema.schema_migrations with the set.  On success *applied_max is
 * the highest applied version and pending[] (size n) marks what to apply.
 */
static bool verify(PGconn *c, const char *schema, const char *setname, const hr_migration *list,
		   size_t n, bool *pending, int *applied_max, hr_err *err)
{
	char *qs = hr_db_ident(c, schema);
	char *sql = hr_sprintf("SELECT version, name, checksum FROM %s.schema_migrations ORDER BY version", qs);
	PGresult *r;
	bool ok = hr_db_query(c, sql, 0, NULL, &r, err);
	hr_free(sql);
	hr_free(qs);
	if (!ok)
		return false;
	for (size_t i = 0; i < n; i++)
		pending[i] = true;
	*applied_max = 0;
	int latest = hr_migrations_latest(list, n);
	for (int row = 0; ok && row < PQntuples(r); row++) {
		int v = atoi(PQgetvalue(r, row, 0));
		const char *name = PQgetvalue(r, row, 1), *sum = PQgetvalue(r, row, 2);
		if (v > *applied_max)
			*applied_max = v;
		size_t i;
		for (i = 0; i < n && list[i].version != v; i++)
			;
		if (i == n) {
			if (v > latest)
				ok = hr_fail(err, HR_ERR_CONFLICT, name,
					     "%s: schema is at %s migration %d (%s), newer than this "
					     "herald's latest %d: upgrade herald first",
					     schema, setname, v, name, latest);
			else
				ok = hr_fail(err, HR_ERR_CONFLICT, name,
					     "%s: applied %s migration %d (%s) is missing from the "
					     "migration set",
					     schema, setname, v, name);
		} else if (!hr_ct_equal(list[i].checksum, sum, 64) || strlen(sum) != 64) {
			ok = hr_fail(err, HR_ERR_CONFLICT, list[i].name,
				     "%s: migration %s/%s was edited after it was applied "
				     "(checksum %.12s in the database, %.12s in the file); restore it "
				     "and put the change in a new migration",
				     schema, setname, list[i].name, sum, list[i].checksum);
		} else {
			pending[i] = false;
		}
	}
	PQclear(r);
	return ok;
}

/* ---- applying ---------------------------------------------------------- */

static bool record(PGconn *c, const hr_migration *m, hr_err *err)
{
	char v[16];
	snprintf(v, sizeof v, "%d", m->version);
	const char *p[] = {v, m->name, m->checksum};
	return hr_db_query(c,
			   "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
			   3, p, NULL, err);
}

static bool apply_one(PGconn *c, const char *schema, const char *setname, const hr_migration *m,
		      bool update_tenant_row, hr_err *err)
{
	char *qs = hr_db_ident(c, schema);
	/* Serialise per schema (tenant creation and other runners). */
	char *lit = PQescapeLiteral(c, schema, strlen(schema));
	char *begin = hr_sprintf("BEGIN; SELECT pg_advisory_xact_lock(%d, hashtext(%s)); "
			   "SET LOCAL search_path TO %s",
			   HR_LOCK_CLASS, lit, qs);
	PQfreemem(lit);
	hr_free(qs);
	bool ok = hr_db_exec(c, begin, err);
	hr_free(begin);
	if (!ok)
		goto fail;
	/* Another runner may have applied it while we waited for the lock. */
	char v[16];
	snprintf(v, sizeof v, "%d", m->version);
	const char *p[] = {v};
	PGresult *r;
	if (!hr_db_query(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, p, &r, err))
		goto fail;
	bool done = PQntuples(r) > 0;
	PQclear(r);
	if (!done) {
		if (!hr_db_exec(c, m->sql, err)) {
			char msg[sizeof err->msg];
			snprintf(msg, sizeof msg, "%s", err->msg);
			hr_fail(err, err->kind, m->name, "%s: migration %s/%s failed: %s", schema, setname,
				m->name, msg);
			goto fail;
		}
		if (!record(c, m, err))
			goto fail;
	}
	if (update_tenant_row) {
		const char *q[] = {v, schema};
		if (!hr_db_query(c,
				 "UPDATE herald.tenants SET schema_version = $1, updated_at = now() "
				 "WHERE schema_name = $2 AND schema_version < $1",
				 2, q, NULL, err))
			goto fail;
	}
	if (!hr_db_commit(c, err))
		goto fail;
	return true;
fail:
	hr_db_rollback(c);
	return false;
}

static bool lock_runner(PGconn *c, bool quiet, hr_err *err)
{
	PGresult *r;
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%d, 1)", HR_LOCK_CLASS);
	if (!hr_db_query(c, sql, 0, NULL, &r, err))
		return false;
	bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if (got)
		return true;
	if (!quiet)
		hr_info("migrate: another migration runner is at work; waiting for it to finish");
	snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d, 1)", HR_LOCK_CLASS);
	return hr_db_exec(c, sql, err);
}

static void unlock_runner(PGconn *c)
{
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%d, 1)", HR_LOCK_CLASS);
	hr_err ignored;
	(void)!hr_db_exec(c, sql, &ignored);
}

static bool control_locked(PGconn *c, const hr_migration_set *set, int *applied, hr_err *err)
{
	*applied = 0;
	if (!hr_db_exec(c,
			"CREATE SCHEMA IF NOT EXISTS herald; "
			"REVOKE ALL ON SCHEMA herald FROM PUBLIC; "
			"CREATE TABLE IF NOT EXISTS herald.schema_migrations ("
			" version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
			" applied_at timestamptz NOT NULL DEFAULT now())",
			err))
		return false;
	bool *pending = hr_calloc(set->ncontrol, sizeof *pending);
	int max;
	bool ok = verify(c, "herald", "control", set->control, set->ncontrol, pending, &max, err);
	for (size_t i = 0; ok && i < set->ncontrol; i++) {
		if (!pending[i])
			continue;
		ok = apply_one(c, "herald", "control", &set->control[i], false, err);
		if (ok)
			(*applied)++;
	}
	hr_free(pending);
	return ok;
}

bool hr_migrate_control(PGconn *c, const hr_migration_set *set, hr_err *err)
{
	if (!lock_runner(c, true, err))
		return false;
	int applied;
	bool ok = control_locked(c, set, &applied, err);
	unlock_runner(c);
	return ok;
}

bool hr_migrate_check_control(PGconn *c, const hr_migration_set *set, hr_err *err)
{
	PGresult *r;
	if (!hr_db_query(c, "SELECT coalesce(max(version), 0) FROM herald.schema_migrations", 0, NULL,
			 &r, NULL))
		return hr_fail(err, HR_ERR_CONFLICT, NULL,
			       "the database has no herald control schema: run `heraldctl migrate`");
	int have = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	int want = hr_migrations_latest(set->control, set->ncontrol);
	if (have < want)
		return hr_fail(err, HR_ERR_CONFLICT, NULL,
			       "the control schema is at version %d, this herald needs %d: run "
			       "`heraldctl migrate`",
			       have, want);
	if (have > want)
		return hr_fail(err, HR_ERR_CONFLICT, NULL,
			       "the control schema is at version %d, newer than this herald (%d): "
			       "upgrade herald",
			       have, want);
	return true;
}

bool hr_migrate_tenant(PGconn *c, const hr_migration_set *set, const char *schema,
		       const char *role, int *from, int *to, hr_err *err)
{
	(void)role;
	bool *pending = hr_calloc(set->ntenant, sizeof *pending);
	int max;
	bool ok = verify(c, schema, "tenant", set->tenant, set->ntenant, pending, &max, err);
	*from = *to = max;
	for (size_t i = 0; ok && i < set->ntenant; i++) {
		if (!pending[i])
			continue;
		ok = apply_one(c, schema, "tenant", &set->tenant[i], true, err);
		if (ok && set->tenant[i].version > *to)
			*to = set->tenant[i].version;
	}
	hr_free(pending);
	return ok;
}

bool hr_migrate_new_schema(PGconn *c, const hr_migration_set *set, const char *schema,
			   const char *role, hr_err *err)
{
	char *qs = hr_db_ident(c, schema), *qr = hr_db_ident(c, role);
	char *sql = hr_sprintf(
		"CREATE ROLE %2$s NOLOGIN; "
		"GRANT %2$s TO CURRENT_USER; "
		"CREATE SCHEMA %1$s; "
		"SET LOCAL search_path TO %1$s; "
		"CREATE TABLE schema_migrations ("
		" version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
		" applied_at timestamptz NOT NULL DEFAULT now()); "
		"GRANT USAGE ON SCHEMA %1$s TO %2$s; "
		"GRANT SELECT ON schema_migrations TO %2$s; "
		"ALTER DEFAULT PRIVILEGES IN SCHEMA %1$s GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %2$s; "
		"ALTER DEFAULT PRIVILEGES IN SCHEMA %1$s GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %2$s",
		qs, qr);
	bool ok = hr_db_exec(c, sql, err);
	hr_free(sql);
	hr_free(qs);
	hr_free(qr);
	for (size_t i = 0; ok && i < set->ntenant; i++) {
		const hr_migration *m = &set->tenant[i];
		if (!hr_db_exec(c, m->sql, err)) {
			char msg[sizeof err->msg];
			snprintf(msg, sizeof msg, "%s", err->msg);
			return hr_fail(err, HR_ERR_DB, m->name, "tenant migration %s failed: %s", m->name, msg);
		}
		ok = record(c, m, err);
	}
	return ok;
}

/* ---- the whole run ----------------------------------------------------- */

typedef struct tenant_row {
	char *slug, *schema, *role, *dsn; /* dsn NULL = the control database */
} tenant_row;

typedef struct run {
	const char *control_dsn;
	const hr_migration_set *set;
	tenant_row *rows;
	int nrows;
	bool quiet;
	atomic_int next, migrated, failed, done;
} run;

static PGconn *conn_for(const run *rn, const char *dsn, PGconn **control, PGconn **other,
			char **other_dsn, hr_err *err)
{
	if (!dsn) {
		if (!*control && !hr_db_connect(rn->control_dsn, control, err))
			return NULL;
		return *control;
	}
	if (*other && strcmp(*other_dsn, dsn) == 0)
		return *other;
	if (*other) {
		PQfinish(*other);
		hr_free(*other_dsn);
		*other = NULL;
	}
	if (!hr_db_connect(dsn, other, err))
		return NULL;
	*other_dsn = hr_strdup(dsn);
	return *other;
}

static void *worker(void *arg)
{
	run *rn = arg;
	PGconn *control = NULL, *other = NULL;
	char *other_dsn = NULL;
	for (;;) {
		int i = atomic_fetch_add(&rn->next, 1);
		if (i >= rn->nrows)
			break;
		tenant_row *t = &rn->rows[i];
		hr_err err = {0};
		int from = 0, to = 0;
		PGconn *c = conn_for(rn, t->dsn, &control, &other, &other_dsn, &err);
		bool ok = c && hr_migrate_tenant(c, rn->set, t->schema, t->role, &from, &to, &err);
		int n = atomic_fetch_add(&rn->done, 1) + 1;
		if (!ok) {
			atomic_fetch_add(&rn->failed, 1);
			hr_warn("migrate: tenant=%s failed at version %d: %s (%d/%d)", t->slug, to,
				err.msg, n, rn->nrows);
		} else if (to != from) {
			atomic_fetch_add(&rn->migrated, 1);
			if (!rn->quiet)
				hr_info("migrate: tenant=%s version %d -> %d (%d/%d)", t->slug, from, to,
					n, rn->nrows);
		}
	}
	if (control)
		PQfinish(control);
	if (other)
		PQfinish(other);
	hr_free(other_dsn);
	return NULL;
}

bool hr_migrate_all(const char *control_dsn, const hr_migration_set *set, int jobs, bool quiet,
		    hr_migrate_report *rep, hr_err *err)
{
	memset(rep, 0, sizeof *rep);
	PGconn *c;
	if (!hr_db_connect(control_dsn, &c, err))
		return false;
	run rn = {.control_dsn = control_dsn, .set = set, .quiet = quiet};
	PGresult *r = NULL;
	bool ok = lock_runner(c, quiet, err) && control_locked(c, set, &rep->control_applied, err);
	if (ok && !quiet && rep->control_applied)
		hr_info("migrate: control schema: %d migration(s) applied", rep->control_applied);
	if (ok)
		ok = hr_db_query(c,
				 "SELECT t.slug, t.schema_name, t.role_name, s.dsn FROM herald.tenants t "
				 "JOIN herald.db_servers s ON s.id = t.db_server_id ORDER BY t.id",
				 0, NULL, &r, err);
	if (ok) {
		rn.nrows = PQntuples(r);
		rn.rows = hr_calloc((size_t)rn.nrows + 1, sizeof *rn.rows);
		for (int i = 0; i < rn.nrows; i++) {
			rn.rows[i].slug = hr_strdup(PQgetvalue(r, i, 0));
			rn.rows[i].schema = hr_strdup(PQgetvalue(r, i, 1));
			rn.rows[i].role = hr_strdup(PQgetvalue(r, i, 2));
			rn.rows[i].dsn = PQgetisnull(r, i, 3) ? NULL : hr_strdup(PQgetvalue(r, i, 3));
		}
		PQclear(r);
		if (jobs < 1)
			jobs = 1;
		if (jobs > rn.nrows)
			jobs = rn.nrows ? rn.nrows : 1;
		pthread_t th[64];
		int started = 0;
		for (; started < jobs && started < 64; started++)
			if (pthread_create(&th[started], NULL, worker, &rn) != 0)
				break;
		if (started == 0)
			worker(&rn);
		for (int i = 0; i < started; i++)
			pthread_join(th[i], NULL);
		rep->tenants = rn.nrows;
		rep->migrated = atomic_load(&rn.migrated);
		rep->failed = atomic_load(&rn.failed);
		if (rep->failed)
			ok = hr_fail(err, HR_ERR_DB, NULL,
				     "%d of %d tenant schema(s) failed to migrate (see the log); "
				     "fix the cause and run again: done tenants are skipped",
				     rep->failed, rn.nrows);
		for (int i = 0; i < rn.nrows; i++) {
			hr_free(rn.rows[i].slug);
			hr_free(rn.rows[i].schema);
			hr_free(rn.rows[i].role);
			hr_free(rn.rows[i].dsn);
		}
		hr_free(rn.rows);
	}
	unlock_runner(c);
	PQfinish(c);
	return ok;
}
