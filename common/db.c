/*
 * db.c -- see db.h.
 */
#include "db.h"

#include <string.h>

#include "alloc.h"
#include "log.h"
#include "pgembed.h"

bool hr_db_dsn_from_config(const hr_config *cfg, char **dsn, hr_err *err)
{
	const char *url = hr_config_str(cfg, "database_url");
	if (url) {
		*dsn = hr_strdup(url);
		return true;
	}
	char *dir = hr_config_str(cfg, "data_dir") ? hr_strdup(hr_config_str(cfg, "data_dir"))
						   : hr_pgembed_default_dir();
	hr_pgembed_opts o = {
		.data_dir = dir,
		.bin_dir = hr_config_str(cfg, "pg_bin_dir"),
		.os_user = hr_config_str(cfg, "pg_os_user"),
		.port = (int)hr_config_int(cfg, "pg_port"),
	};
	bool ok = hr_pgembed_start(&o, dsn, err);
	hr_free(dir);
	return ok;
}

static void quiet_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

bool hr_db_connect(const char *dsn, PGconn **out, hr_err *err)
{
	PGconn *c = PQconnectdb(dsn);
	if (PQstatus(c) != CONNECTION_OK) {
		hr_fail(err, HR_ERR_DB, "database_url", "cannot connect to PostgreSQL: %s",
			PQerrorMessage(c));
		PQfinish(c);
		return false;
	}
	/* Errors are reported through hr_err; keep NOTICEs (e.g. "already exists,
	 * skipping") off stderr. */
	PQsetNoticeProcessor(c, quiet_notice, NULL);
	*out = c;
	return true;
}

bool hr_db_fail(PGconn *c, const PGresult *res, const char *what, hr_err *err)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
	hr_err_kind kind = HR_ERR_DB;
	if (state) {
		if (strcmp(state, "23505") == 0)
			kind = HR_ERR_CONFLICT;
		else if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
			kind = HR_ERR_INVALID;
	}
	return hr_fail(err, kind, NULL, "%s: %s", what, msg && *msg ? msg : "unknown error");
}

bool hr_db_exec(PGconn *c, const char *sql, hr_err *err)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
	if (!ok)
		hr_db_fail(c, r, "SQL failed", err);
	PQclear(r);
	return ok;
}

bool hr_db_query(PGconn *c, const char *sql, int nparams, const char *const *params,
		 PGresult **res, hr_err *err)
{
	PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		hr_db_fail(c, r, "query failed", err);
		PQclear(r);
		if (res)
			*res = NULL;
		return false;
	}
	if (res)
		*res = r;
	else
		PQclear(r);
	return true;
}

bool hr_db_pipeline_end(PGconn *c, bool ok, hr_err *err)
{
	PGresult *r;
	while ((r = PQgetResult(c)) && PQresultStatus(r) != PGRES_PIPELINE_SYNC)
		PQclear(r);
	PQclear(r);
	if (PQexitPipelineMode(c) != 1 && ok)
		ok = hr_db_fail(c, NULL, "pipeline failed", err);
	return ok;
}

bool hr_db_pipeline(PGconn *c, hr_db_stmt *s, int n, hr_err *err)
{
	for (int i = 0; i < n; i++)
		s[i].res = NULL;
	if (PQenterPipelineMode(c) != 1)
		return hr_db_fail(c, NULL, "pipeline failed", err);
	bool ok = true;
	int sent = 0;
	while (sent < n && PQsendQueryParams(c, s[sent].sql, s[sent].nparams, NULL, s[sent].params, NULL, NULL, 0) == 1)
		sent++;
	if (sent < n)
		ok = hr_db_fail(c, NULL, "query failed", err);
	if (PQpipelineSync(c) != 1 && ok)
		ok = hr_db_fail(c, NULL, "pipeline failed", err);
	/* Each statement's result, then NULL; after them the sync's. */
	for (int i = 0; i < sent; i++) {
		PGresult *r;
		while ((r = PQgetResult(c))) {
			ExecStatusType st = PQresultStatus(r);
			if (st == PGRES_TUPLES_OK && !s[i].res) {
				s[i].res = r;
				continue;
			}
			if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && ok)
				ok = hr_db_fail(c, st == PGRES_PIPELINE_ABORTED ? NULL : r, "query failed", err);
			PQclear(r);
		}
	}
	ok = hr_db_pipeline_end(c, ok, err);
	if (!ok)
		for (int i = 0; i < n; i++) {
			PQclear(s[i].res);
			s[i].res = NULL;
		}
	return ok;
}

char *hr_db_ident(PGconn *c, const char *name)
{
	char *q = PQescapeIdentifier(c, name, strlen(name));
	if (!q)
		hr_panic("db: PQescapeIdentifier failed: %s", PQerrorMessage(c));
	char *out = hr_strdup(q);
	PQfreemem(q);
	return out;
}

bool hr_db_tenant_begin(PGconn *c, const char *schema, const char *role, hr_err *err)
{
	char *qs = hr_db_ident(c, schema), *qr = hr_db_ident(c, role);
	char *sql = hr_sprintf("BEGIN; SET LOCAL ROLE %s; SET LOCAL search_path TO %s", qr, qs);
	bool ok = hr_db_exec(c, sql, err);
	hr_free(sql);
	hr_free(qs);
	hr_free(qr);
	if (!ok)
		hr_db_rollback(c);
	return ok;
}

bool hr_db_commit(PGconn *c, hr_err *err)
{
	return hr_db_exec(c, "COMMIT", err);
}

void hr_db_rollback(PGconn *c)
{
	PGresult *r = PQexec(c, "ROLLBACK");
	PQclear(r);
}
