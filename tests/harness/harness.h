/*
 * harness.h -- what herald's integration tests share.
 *
 * - th_pg_dsn(): a throwaway PostgreSQL cluster for this test binary, started
 *   on first use through the production code (pgembed.c) in a private temp
 *   dir on a free port, stopped and removed when the binary exits -- also
 *   when a test fails, since check runs each test in a forked child and only
 *   the parent owns the cluster.  infra/test.sh removes whatever a killed
 *   binary left behind.
 * - th_control(): a connection to that cluster with the control schema
 *   migrated through hr_migrate_all (the production path).
 * - th_tenant(): a fresh agency + tenant with unique slugs, for one test.
 * - th_run(): run a suite, print check's summary, return the exit status.
 *
 * Tests fail on unexpected warnings: th_run() checks hr_log_warn_count().
 */
#ifndef HERALD_TEST_HARNESS_H
#define HERALD_TEST_HARNESS_H

#include <check.h>
#include <sys/types.h>
#include <libpq-fe.h>

#include "migrate.h"
#include "tenancy.h"

const char *th_pg_dsn(void);
PGconn *th_connect(void);
/* A new empty database in the test cluster; its DSN (heap). */
char *th_fresh_db(void);
PGconn *th_control(void);
const hr_migration_set *th_migrations(void);

/* mkdtemp under TMPDIR; heap string; removed at exit (parent only). */
char *th_tmpdir(const char *tag);

/* A unique slug with the given prefix ("t" -> "t-12345-7"). */
void th_slug(const char *prefix, char *out, size_t len);

/* Fresh agency and tenant for one test; aborts the test on failure. */
void th_tenant(PGconn *c, hr_tenant *out);

/* Run a shell command, return its exit status and its stdout+stderr (heap, caller frees). */
int th_sh(char **output, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int th_run(Suite *s);

/*
 * Start argv[0] (an absolute path) as a child that dies with this process
 * (PR_SET_PDEATHSIG, so also when a failed assertion ends the test through
 * _exit).  env: NULL-terminated "NAME=value" strings set in the child (may be
 * NULL).  stderr is appended to log; so is stdout, unless stdout_fd is given,
 * which then receives the read end of a pipe on the child's stdout.
 */
pid_t th_spawn(const char *const *argv, const char *const *env, const char *log, int *stdout_fd);

/*
 * A test case created with th_tcase() fails when a test logs a warning it did
 * not announce with th_expect_warnings(n).
 */
TCase *th_tcase(const char *name);
void th_expect_warnings(long n);

#endif
