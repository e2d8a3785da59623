/*
 * pgembed.h -- herald's embedded PostgreSQL: with no database configured,
 * herald runs its own PostgreSQL 15 cluster from Debian's postgresql-15
 * binaries (initdb + pg_ctl), no system service involved.
 *
 * Layout under data_dir:
 *   pg/            PGDATA (owned by the server's OS user)
 *   run/           unix socket directory (0700)
 *   log/           postgres.log and the output of initdb / pg_ctl
 *   pg.password    the `herald` superuser's password for TCP (loopback) logins
 *   .lock          flock(2) serialising start/stop between herald processes
 *
 * The server listens on a unix socket in run/ (trust: only its owner and
 * root reach that directory) and on 127.0.0.1 (password, scram-sha-256).
 * When herald runs as root, initdb, pg_ctl and the server run as the
 * unprivileged OS user `os_user` (PostgreSQL refuses to run as root).
 *
 * Thread safety: call from one thread; the flock makes concurrent processes safe.
 */
#ifndef HERALD_PGEMBED_H
#define HERALD_PGEMBED_H

#include <stdbool.h>

#include "err.h"

typedef struct hr_pgembed_opts {
	const char *data_dir; /* required: created if missing */
	const char *bin_dir;  /* directory with initdb, pg_ctl */
	const char *os_user;  /* server's OS user when euid == 0 */
	int port;             /* 127.0.0.1 port, 0 = a free one */
	bool throwaway;       /* tests: no fsync, faster initdb; never for data you keep */
} hr_pgembed_opts;

/*
 * Initialise the cluster if data_dir has none, start it if it is not running,
 * make sure database `herald` exists, and return its libpq connection string
 * (heap, caller frees).  Idempotent: a running cluster is left as it is.
 */
bool hr_pgembed_start(const hr_pgembed_opts *o, char **dsn, hr_err *err) HR_MUST_CHECK;

/* Connection string of the running cluster under data_dir (fails if not running). */
bool hr_pgembed_dsn(const char *data_dir, char **dsn, hr_err *err) HR_MUST_CHECK;

/* Stop the cluster (fast shutdown: sessions are ended, nothing committed is lost).
 * Succeeds when nothing is running. */
bool hr_pgembed_stop(const hr_pgembed_opts *o, hr_err *err) HR_MUST_CHECK;

/* Default data directory: /var/lib/herald for root, else $HOME/.local/share/herald.
 * Heap string. */
char *hr_pgembed_default_dir(void);

#endif
