/*
 * migrate.h -- herald's migration runner.
 *
 * Two sets of SQL files: migrations/control/NNNN_name.sql for the control
 * schema `herald`, and migrations/tenant/NNNN_name.sql applied to every
 * tenant's own schema.  By default the binaries use the copy built into them
 * (common/embed.cmake); `migrations_dir` reads a directory instead.
 *
 * Rules the runner enforces:
 * - ordered by version (the NNNN prefix), versions unique and positive;
 * - each migration runs in its own transaction and is recorded with the
 *   SHA-256 of its text in the target schema's schema_migrations;
 * - an applied migration whose text changed, or that is missing from the set,
 *   is refused with an error naming it, and nothing is applied to that target;
 * - a run holds a session advisory lock on the control database, so two
 *   runners never interleave (the second waits);
 * - re-running is a no-op; a run killed half-way resumes where it stopped,
 *   because every tenant's progress is committed migration by migration.
 *
 * Thread safety: a hr_migration_set is immutable after loading and may be
 * shared by threads; hr_migrate_all uses its own threads and connections.
 */
#ifndef HERALD_MIGRATE_H
#define HERALD_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "err.h"

typedef struct hr_embedded_file {
	const char *path; /* "control/0001_control.sql" */
	const char *data;
	size_t len;
} hr_embedded_file;

/* Built into every binary; terminated by an entry with path NULL. */
extern const hr_embedded_file hr_embedded_migrations[];

typedef struct hr_migration {
	int version;
	char *name;  /* file name, e.g. "0001_core.sql" */
	char *sql;   /* NUL-terminated text */
	char checksum[65];
} hr_migration;

typedef struct hr_migration_set {
	hr_migration *control;
	size_t ncontrol;
	hr_migration *tenant;
	size_t ntenant;
} hr_migration_set;

/* dir NULL = the embedded set. */
bool hr_migrations_load(const char *dir, hr_migration_set **out, hr_err *err) HR_MUST_CHECK;
void hr_migrations_free(hr_migration_set *set);
int hr_migrations_latest(const hr_migration *list, size_t n);

/*
 * Bring the control schema to the set's latest version (taking the runner
 * lock).  Used by `heraldctl migrate` and by tests.
 */
bool hr_migrate_control(PGconn *c, const hr_migration_set *set, hr_err *err) HR_MUST_CHECK;

/* Fails (HR_ERR_CONFLICT) unless the control schema is exactly at the set's latest version. */
bool hr_migrate_check_control(PGconn *c, const hr_migration_set *set, hr_err *err) HR_MUST_CHECK;

/*
 * Apply the pending tenant migrations to one schema (which must exist and have
 * schema_migrations).  from and to receive the versions before and after.
 * Each migration is its own transaction.
 */
bool hr_migrate_tenant(PGconn *c, const hr_migration_set *set, const char *schema,
		       const char *role, int *from, int *to, hr_err *err) HR_MUST_CHECK;

/*
 * Lay out a brand-new tenant schema inside the caller's open transaction:
 * schema, grants for role, schema_migrations, every tenant migration.
 */
bool hr_migrate_new_schema(PGconn *c, const hr_migration_set *set, const char *schema,
			   const char *role, hr_err *err) HR_MUST_CHECK;

typedef struct hr_migrate_report {
	int control_applied; /* control migrations applied in this run */
	int tenants;         /* tenants examined */
	int migrated;        /* tenants that received at least one migration */
	int failed;          /* tenants whose migration failed (see the log) */
} hr_migrate_report;

/*
 * The whole run: lock, control schema, then every tenant schema with `jobs`
 * parallel connections.  Progress is logged per tenant (unless quiet).
 * Returns false if anything failed; the report says how much was done.
 */
bool hr_migrate_all(const char *control_dsn, const hr_migration_set *set, int jobs, bool quiet,
		    hr_migrate_report *rep, hr_err *err) HR_MUST_CHECK;

#endif
