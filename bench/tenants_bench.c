/*
 * tenants_bench.c -- create N tenants, then apply a new tenant migration to
 * all of them; print the figures last as key=value pairs.
 *
 * usage: herald-bench-tenants DSN MIGRATIONS_COPY_DIR [N] [JOBS]
 *
 * The tenants are created through hr_tenant_create (what heraldctl and the
 * API use) from JOBS threads with a connection each; the migration runs
 * through hr_migrate_all (what `heraldctl migrate` runs).  The extra
 * migration is written into MIGRATIONS_COPY_DIR/tenant/, a copy of the
 * project's migrations made by the bench/tenants script.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "tenancy.h"

static const char *dsn;
static hr_migration_set *set;
static int ntenants;
static atomic_int next_tenant, failures;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *creator(void *arg)
{
	(void)arg;
	PGconn *c;
	hr_err err = {0};
	if (!hr_db_connect(dsn, &c, &err))
		hr_fatal("bench: %s", err.msg);
	for (;;) {
		int i = atomic_fetch_add(&next_tenant, 1);
		if (i >= ntenants)
			break;
		char slug[32];
		snprintf(slug, sizeof slug, "bench-%05d", i);
		if (!hr_tenant_create(c, set, "bench", slug, NULL, NULL, &err)) {
			hr_warn("bench: tenant %s: %s", slug, err.msg);
			atomic_fetch_add(&failures, 1);
		}
		if ((i + 1) % 100 == 0)
			fprintf(stderr, "created %d/%d tenants\n", i + 1, ntenants);
	}
	PQfinish(c);
	return NULL;
}

int main(int argc, char **argv)
{
	hr_log_init("bench-tenants");
	if (argc < 3) {
		fprintf(stderr, "usage: %s DSN MIGRATIONS_COPY_DIR [N] [JOBS]\n", argv[0]);
		return 2;
	}
	dsn = argv[1];
	const char *dir = argv[2];
	ntenants = argc > 3 ? atoi(argv[3]) : 1000;
	int jobs = argc > 4 ? atoi(argv[4]) : 4;
	hr_err err = {0};
	if (!hr_migrations_load(dir, &set, &err))
		hr_fatal("bench: %s", err.msg);
	hr_migrate_report rep;
	if (!hr_migrate_all(dsn, set, jobs, true, &rep, &err))
		hr_fatal("bench: %s", err.msg);
	PGconn *c;
	if (!hr_db_connect(dsn, &c, &err) || !hr_agency_create(c, "bench", "bench", NULL, &err))
		hr_fatal("bench: %s", err.msg);
	PQfinish(c);

	double t0 = now_s();
	pthread_t th[64];
	if (jobs > 64)
		jobs = 64;
	for (int i = 0; i < jobs; i++)
		pthread_create(&th[i], NULL, creator, NULL);
	for (int i = 0; i < jobs; i++)
		pthread_join(th[i], NULL);
	double create_s = now_s() - t0;

	/* A new tenant migration, as an upgrade would bring. */
	char path[4096];
	snprintf(path, sizeof path, "%s/tenant/9000_bench_upgrade.sql", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		hr_fatal("bench: cannot write %s", path);
	fputs("ALTER TABLE contacts ADD COLUMN lead_score int NOT NULL DEFAULT 0;\n"
	      "CREATE INDEX events_name_time ON events (name, occurred_at);\n"
	      "CREATE TABLE bench_upgrade (id bigserial PRIMARY KEY, note text);\n",
	      f);
	fclose(f);
	hr_migration_set *next;
	if (!hr_migrations_load(dir, &next, &err))
		hr_fatal("bench: %s", err.msg);
	t0 = now_s();
	bool ok = hr_migrate_all(dsn, next, jobs, true, &rep, &err);
	double migrate_s = now_s() - t0;
	if (!ok)
		hr_warn("bench: migrate: %s", err.msg);
	printf("tenants=%d create_failures=%d jobs=%d create_s=%.2f create_per_s=%.1f migrated=%d "
	       "migrate_failures=%d migrate_s=%.2f goal_s=60\n",
	       ntenants, atomic_load(&failures), jobs, create_s, ntenants / create_s, rep.migrated,
	       rep.failed, migrate_s);
	hr_migrations_free(set);
	hr_migrations_free(next);
	return ok && atomic_load(&failures) == 0 ? 0 : 1;
}
