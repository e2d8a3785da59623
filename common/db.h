/*
 * db.h -- herald's thin layer over libpq.
 *
 * Conventions: every function returns bool (true = success) and puts the
 * detail in an hr_err, classifying Postgres errors by SQLSTATE (unique
 * violation -> HR_ERR_CONFLICT, data exceptions -> HR_ERR_INVALID, the rest
 * HR_ERR_DB).  Results are text-format PGresults owned by the caller.
 *
 * Tenant isolation: code acting for a tenant runs inside
 * hr_db_tenant_begin(), which opens a transaction and switches, for that
 * transaction only, to the tenant's own Postgres role and schema
 * (SET LOCAL ROLE / search_path).  The tenant role has rights on its schema
 * only, so even a wrong query cannot read another tenant's rows.
 *
 * Thread safety: a PGconn belongs to one thread at a time.
 */
#ifndef HERALD_DB_H
#define HERALD_DB_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "config.h"
#include "err.h"

/*
 * The control database's connection string: database_url if set, else the
 * embedded cluster under data_dir, started (and initialised) if needed.
 */
bool hr_db_dsn_from_config(const hr_config *cfg, char **dsn, hr_err *err) HR_MUST_CHECK;

bool hr_db_connect(const char *dsn, PGconn **out, hr_err *err) HR_MUST_CHECK;

/* One or more SQL commands, no parameters; results discarded. */
bool hr_db_exec(PGconn *c, const char *sql, hr_err *err) HR_MUST_CHECK;

/* A parameterised statement (text params, NULL = SQL NULL).  *res may be NULL
 * when the caller does not want the rows; otherwise the caller PQclear()s it. */
bool hr_db_query(PGconn *c, const char *sql, int nparams, const char *const *params,
		 PGresult **res, hr_err *err) HR_MUST_CHECK;

/*
 * Several parameterised statements in one round trip (libpq pipeline mode),
 * for statements that do not depend on each other's results.  Each
 * statement's rows go to its res (NULL for a statement that returned none,
 * or that did not run); the caller PQclear()s them.  On failure the first
 * error is in err, the statements after the failing one did not run, and an
 * open transaction is aborted (roll it back).
 */
typedef struct hr_db_stmt {
	const char *sql;
	int nparams;
	const char *const *params;
	PGresult *res; /* out */
} hr_db_stmt;
bool hr_db_pipeline(PGconn *c, hr_db_stmt *s, int n, hr_err *err) HR_MUST_CHECK;
/* After a pipeline's statements' results were read: the sync's, then out of
 * pipeline mode.  Returns ok, or false (err set) when leaving fails. */
bool hr_db_pipeline_end(PGconn *c, bool ok, hr_err *err) HR_MUST_CHECK;

/* Fill err from a failed result (or from the connection when res is NULL). */
bool hr_db_fail(PGconn *c, const PGresult *res, const char *what, hr_err *err);

/* A quoted SQL identifier (heap string). */
char *hr_db_ident(PGconn *c, const char *name);

/* BEGIN, then act as the tenant role in the tenant schema until COMMIT/ROLLBACK. */
bool hr_db_tenant_begin(PGconn *c, const char *schema, const char *role, hr_err *err) HR_MUST_CHECK;

bool hr_db_commit(PGconn *c, hr_err *err) HR_MUST_CHECK;
/* Roll back whatever transaction is open; never fails loudly. */
void hr_db_rollback(PGconn *c);

#endif
