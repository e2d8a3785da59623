/*
 * harness.c -- see harness.h.
 */
#include "harness.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "db.h"
#include "log.h"
#include "pgembed.h"

static pid_t owner_pid;
static char *pg_dir;
static char *pg_dsn;
static hr_migration_set *set;
static char **tmpdirs; /* created by this process (parent or forked test) */
static int ntmpdirs;
static pid_t tmpdirs_pid;

static void rm_rf(const char *dir)
{
	char *cmd = hr_sprintf("rm -rf '%s'", dir);
	(void)!system(cmd);
	hr_free(cmd);
}

static hr_pgembed_opts pg_opts(void)
{
	hr_pgembed_opts o = {
		.data_dir = pg_dir,
		.bin_dir = getenv("HERALD_PG_BIN_DIR") ? getenv("HERALD_PG_BIN_DIR")
						       : "/usr/lib/postgresql/15/bin",
		.os_user = "postgres",
		.throwaway = true,
	};
	return o;
}

static void cleanup(void)
{
	/* Each process removes the temp dirs it made. */
	if (tmpdirs_pid == getpid()) {
		for (int i = 0; i < ntmpdirs; i++) {
			rm_rf(tmpdirs[i]);
			hr_free(tmpdirs[i]);
		}
		hr_free(tmpdirs);
		tmpdirs = NULL;
		ntmpdirs = 0;
	}
	/* Forked test children exit through here too: only the parent owns the cluster. */
	if (getpid() != owner_pid)
		return;
	if (pg_dir) {
		hr_pgembed_opts o = pg_opts();
		hr_err err = {0};
		if (!hr_pgembed_stop(&o, &err))
			fprintf(stderr, "harness: stopping test PostgreSQL: %s\n", err.msg);
		rm_rf(pg_dir);
		hr_free(pg_dir);
		pg_dir = NULL;
	}
	hr_free(pg_dsn);
	pg_dsn = NULL;
	hr_migrations_free(set);
	set = NULL;
}

char *th_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *dir = hr_sprintf("%s/herald-%s.XXXXXX", base, tag);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "harness: mkdtemp %s failed\n", dir);
		abort();
	}
	/* The embedded server may run as another OS user: let it through. */
	chmod(dir, 0711);
	if (tmpdirs_pid != getpid()) {
		/* A forked child inherits the parent's list: not its to remove. */
		for (int i = 0; i < ntmpdirs; i++)
			hr_free(tmpdirs[i]);
		hr_free(tmpdirs);
		tmpdirs = NULL;
		ntmpdirs = 0;
		tmpdirs_pid = getpid();
	}
	tmpdirs = hr_realloc(tmpdirs, (size_t)(ntmpdirs + 1) * sizeof *tmpdirs);
	tmpdirs[ntmpdirs++] = hr_strdup(dir);
	return dir;
}

const char *th_pg_dsn(void)
{
	if (pg_dsn)
		return pg_dsn;
	if (owner_pid == 0) {
		owner_pid = getpid();
		atexit(cleanup);
	}
	if (getpid() != owner_pid) {
		fprintf(stderr, "harness: th_pg_dsn() must first be called from the test runner's main\n");
		abort();
	}
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	pg_dir = hr_sprintf("%s/herald-pg.XXXXXX", base);
	if (!mkdtemp(pg_dir)) {
		fprintf(stderr, "harness: mkdtemp failed\n");
		abort();
	}
	chmod(pg_dir, 0711);
	hr_pgembed_opts o = pg_opts();
	hr_err err = {0};
	if (!hr_pgembed_start(&o, &pg_dsn, &err)) {
		fprintf(stderr, "harness: cannot start test PostgreSQL: %s\n", err.msg);
		exit(1);
	}
	return pg_dsn;
}

char *th_fresh_db(void)
{
	static int counter;
	char name[64];
	snprintf(name, sizeof name, "db_%d_%d", (int)getpid(), ++counter);
	PGconn *c = th_connect();
	char *sql = hr_sprintf("CREATE DATABASE %s", name);
	PGresult *r = PQexec(c, sql);
	hr_free(sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "create database: %s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return hr_sprintf("%s dbname=%s", th_pg_dsn(), name);
}

PGconn *th_connect(void)
{
	PGconn *c;
	hr_err err = {0};
	if (!hr_db_connect(th_pg_dsn(), &c, &err))
		ck_abort_msg("connect: %s", err.msg);
	return c;
}

const hr_migration_set *th_migrations(void)
{
	if (!set) {
		hr_err err = {0};
		if (!hr_migrations_load(NULL, &set, &err)) {
			fprintf(stderr, "harness: loading embedded migrations: %s\n", err.msg);
			abort();
		}
	}
	return set;
}

PGconn *th_control(void)
{
	hr_err err = {0};
	hr_migrate_report rep;
	if (!hr_migrate_all(th_pg_dsn(), th_migrations(), 2, true, &rep, &err))
		ck_abort_msg("migrate: %s", err.msg);
	return th_connect();
}

void th_slug(const char *prefix, char *out, size_t len)
{
	static int counter;
	snprintf(out, len, "%s-%d-%d", prefix, (int)getpid(), ++counter);
}

void th_tenant(PGconn *c, hr_tenant *out)
{
	char agency[48], tenant[48];
	hr_err err = {0};
	th_slug("ag", agency, sizeof agency);
	th_slug("tn", tenant, sizeof tenant);
	if (!hr_agency_create(c, agency, "test agency", NULL, &err))
		ck_abort_msg("agency create: %s", err.msg);
	if (!hr_tenant_create(c, th_migrations(), agency, tenant, "test tenant", out, &err))
		ck_abort_msg("tenant create: %s", err.msg);
}

pid_t th_spawn(const char *const *argv, const char *const *env, const char *log, int *stdout_fd)
{
	int fds[2] = {-1, -1};
	if (stdout_fd)
		ck_assert_int_eq(pipe(fds), 0);
	pid_t parent = getpid();
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1); /* the parent died before prctl */
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(fd, 2);
		if (stdout_fd) {
			dup2(fds[1], 1);
			close(fds[0]);
			close(fds[1]);
		} else {
			dup2(fd, 1);
		}
		close(fd);
		for (int i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (stdout_fd) {
		close(fds[1]);
		*stdout_fd = fds[0];
	}
	return pid;
}

int th_sh(char **output, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char cmd[8192];
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	char *full = hr_sprintf("(%s) 2>&1", cmd);
	FILE *p = popen(full, "r");
	hr_free(full);
	if (!p)
		return -1;
	size_t len = 0, cap = 4096;
	char *buf = hr_malloc(cap);
	size_t got;
	while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
		len += got;
		if (cap - len < 1024)
			buf = hr_realloc(buf, cap *= 2);
	}
	buf[len] = '\0';
	int st = pclose(p);
	if (output)
		*output = buf;
	else
		hr_free(buf);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static long warn_base, warn_expected;

static void quiet_setup(void)
{
	warn_base = hr_log_warn_count();
	warn_expected = 0;
}

static void quiet_teardown(void)
{
	long got = hr_log_warn_count() - warn_base;
	ck_assert_msg(got == warn_expected, "test logged %ld warning(s), expected %ld", got,
		      warn_expected);
}

void th_expect_warnings(long n)
{
	warn_expected = n;
}

TCase *th_tcase(const char *name)
{
	TCase *tc = tcase_create(name);
	tcase_add_checked_fixture(tc, quiet_setup, quiet_teardown);
	tcase_set_timeout(tc, 120);
	return tc;
}

int th_run(Suite *s)
{
	if (owner_pid == 0) {
		owner_pid = getpid();
		atexit(cleanup);
	}
	hr_log_init("test");
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	cleanup();
	return failed == 0 ? 0 : 1;
}
