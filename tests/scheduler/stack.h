/*
 * stack.h -- what the scheduler's integration tests share: a fresh database
 * with migrated tenants and provider accounts, enqueueing, counting results,
 * and the herald-scheduler process (started with PR_SET_PDEATHSIG, so it
 * dies with the test even when an assertion ends the test through _exit).
 * Every helper fails the test (check assertion) rather than returning errors.
 */
#ifndef HERALD_TEST_SCHED_STACK_H
#define HERALD_TEST_SCHED_STACK_H

#include <stdint.h>
#include <sys/types.h>

#include <libpq-fe.h>

#include "tenancy.h"

#define MASTER_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

int64_t sched_now_ms(void);
int free_port(void);

typedef struct sproc {
	pid_t pid;
	char ep[2][128]; /* transactional, bulk */
	int metrics_port;
	char log[512];
} sproc;

/* Start herald-scheduler; eps NULL = bind free ports.  extra_env: "K=V K=V". */
void sched_start(sproc *p, const char *dsn, const char *dir, const char *const eps[2], const char *extra_env);
/* Signal it and wait; returns the exit status (128+signal when killed). */
int sched_stop(sproc *p, int sig);

typedef struct fixture {
	char *dsn;
	char *dir;
	PGconn *c;
	hr_tenant t[8];
} fixture;

/* A fresh database, migrated, with ntenants (<= 8) tenants; each has provider
 * accounts "main" (email, sink) and "sms" (sms, sink). */
void fixture_open(fixture *f, int ntenants);
void fixture_close(fixture *f);
void enqueue(fixture *f, int ti, const char *channel, const char *lane, int n, const char *provider);
/* Tenant ti's sms provider account `name`: HTTP to a provider simulator on port, path
 * /v1/send/sms/<name> (the simulator records the account name with each receipt). */
void provider_psim(fixture *f, int ti, const char *name, int port);
/* One number from SQL; every %s in fmt becomes schema. */
long q(fixture *f, const char *fmt, const char *schema);
long results(fixture *f, int ti);

#endif
