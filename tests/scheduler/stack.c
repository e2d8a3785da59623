/*
 * stack.c -- see stack.h.
 */
#include "stack.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"
#include "migrate.h"
#include "outbox.h"
#include "providers.h"


int64_t sched_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the scheduler process ---- */


int free_port(void)
{
	void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
	ck_assert_int_eq(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
	char ep[128];
	size_t len = sizeof ep;
	zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len);
	int linger = 0;
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
	zmq_close(s);
	zmq_ctx_term(ctx);
	return atoi(strrchr(ep, ':') + 1);
}

/* Start herald-scheduler; eps NULL = bind free ports.  Waits for both "listening" lines. */
void sched_start(sproc *p, const char *dsn, const char *dir, const char *const eps[2],
			const char *extra_env)
{
	snprintf(p->log, sizeof p->log, "%s/scheduler.log", dir);
	char *env[24];
	int ne = 0;
	env[ne++] = hr_sprintf("HERALD_DATABASE_URL=%s", dsn);
	env[ne++] = hr_sprintf("HERALD_MASTER_KEY=%s", MASTER_HEX);
	env[ne++] = hr_sprintf("HERALD_SCHED_BIND_TRANSACTIONAL=%s", eps ? eps[0] : "tcp://127.0.0.1:*");
	env[ne++] = hr_sprintf("HERALD_SCHED_BIND_BULK=%s", eps ? eps[1] : "tcp://127.0.0.1:*");
	if (extra_env) {
		char *copy = hr_strdup(extra_env), *save = NULL;
		for (char *kv = strtok_r(copy, " ", &save); kv && ne < 23; kv = strtok_r(NULL, " ", &save))
			env[ne++] = hr_strdup(kv);
		hr_free(copy);
	}
	env[ne] = NULL;
	const char *argv[] = {SCHEDULER_PATH, NULL};
	int out;
	p->pid = th_spawn(argv, (const char *const *)env, p->log, &out);
	for (int i = 0; i < ne; i++)
		hr_free(env[i]);
	int got = 0;
	int64_t deadline = sched_now_ms() + 20000;
	char buf[2048];
	size_t len = 0;
	p->metrics_port = 0;
	while ((got < 2 || !p->metrics_port) && sched_now_ms() < deadline) {
		struct pollfd pfd = {out, POLLIN, 0};
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		ssize_t n = read(out, buf + len, sizeof buf - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		char *nl;
		while ((nl = strchr(buf, '\n'))) {
			*nl = '\0';
			char lane[32], ep[128];
			int mport;
			if (sscanf(buf, "metrics port=%d", &mport) == 1)
				p->metrics_port = mport;
			if (sscanf(buf, "listening lane=%31s endpoint=%127s", lane, ep) == 2) {
				snprintf(p->ep[strcmp(lane, "bulk") == 0], sizeof p->ep[0], "%s", ep);
				got++;
			}
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len + 1);
		}
	}
	close(out);
	if (got < 2) {
		char *log = NULL;
		th_sh(&log, "cat '%s'", p->log);
		kill(p->pid, SIGKILL);
		ck_abort_msg("scheduler did not start: %s", log);
	}
}

int sched_stop(sproc *p, int sig)
{
	if (p->pid <= 0)
		return -1;
	kill(p->pid, sig);
	int st = 0;
	int64_t deadline = sched_now_ms() + 20000;
	while (waitpid(p->pid, &st, WNOHANG) == 0) {
		if (sched_now_ms() > deadline) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &st, 0);
			break;
		}
		struct timespec d = {0, 10000000};
		nanosleep(&d, NULL);
	}
	p->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- database fixtures ---- */


void fixture_open(fixture *f, int ntenants)
{
	hr_err err = {0};
	f->dsn = th_fresh_db();
	f->dir = th_tmpdir("sched");
	hr_migrate_report rep;
	ck_assert_msg(hr_migrate_all(f->dsn, th_migrations(), 2, true, &rep, &err), "%s", err.msg);
	ck_assert(hr_db_connect(f->dsn, &f->c, &err));
	char agency[48];
	th_slug("ag", agency, sizeof agency);
	ck_assert(hr_agency_create(f->c, agency, NULL, NULL, &err));
	uint8_t key[HR_KEY_LEN];
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	for (int i = 0; i < ntenants; i++) {
		char slug[48];
		th_slug("tn", slug, sizeof slug);
		ck_assert_msg(hr_tenant_create(f->c, th_migrations(), agency, slug, NULL, &f->t[i], &err), "%s",
			      err.msg);
		hr_provider_spec p = {.name = "main", .channel = "email", .transport = "sink", .config = "{}",
				      .secret = "{\"token\":\"s\"}"};
		ck_assert_msg(hr_provider_put(f->c, key, slug, &p, &err), "%s", err.msg);
		hr_provider_spec q = {.name = "sms", .channel = "sms", .transport = "sink", .config = "{}"};
		ck_assert(hr_provider_put(f->c, key, slug, &q, &err));
	}
}

void fixture_close(fixture *f)
{
	PQfinish(f->c);
	hr_free(f->dsn);
	hr_free(f->dir);
}

void enqueue(fixture *f, int ti, const char *channel, const char *lane, int n, const char *provider)
{
	hr_err err = {0};
	const char **addr = hr_malloc(HR_OUTBOX_MAX * sizeof *addr);
	char **own = hr_calloc(HR_OUTBOX_MAX, sizeof *own);
	for (int done = 0; done < n;) {
		int k = n - done < HR_OUTBOX_MAX ? n - done : HR_OUTBOX_MAX;
		for (int i = 0; i < k; i++) {
			hr_free(own[i]);
			own[i] = hr_sprintf(strcmp(channel, "sms") == 0 ? "+1555%07d" : "u%d@example.com", done + i);
			addr[i] = own[i];
		}
		hr_outbox_batch b = {.channel = channel, .lane = lane, .content = "{\"text\":\"hi\"}",
				     .provider = provider, .origin = "test", .n = k, .addresses = addr};
		ck_assert(hr_db_tenant_begin(f->c, f->t[ti].schema, f->t[ti].role, &err));
		ck_assert_msg(hr_outbox_enqueue(f->c, (int64_t)f->t[ti].id, &b, NULL, &err), "%s", err.msg);
		ck_assert(hr_db_commit(f->c, &err));
		done += k;
	}
	for (int i = 0; i < HR_OUTBOX_MAX; i++)
		hr_free(own[i]);
	hr_free(own);
	hr_free(addr);
}

void provider_psim(fixture *f, int ti, const char *name, int port)
{
	uint8_t key[HR_KEY_LEN];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	char cfg[256];
	snprintf(cfg, sizeof cfg, "{\"url\":\"http://127.0.0.1:%d/v1/send/sms/%s\"}", port, name);
	hr_provider_spec sp = {.name = name, .channel = "sms", .transport = "http", .config = cfg};
	ck_assert_msg(hr_provider_put(f->c, key, f->t[ti].slug, &sp, &err), "%s", err.msg);
}

long q(fixture *f, const char *fmt, const char *schema)
{
	char sql[1024];
	snprintf(sql, sizeof sql, fmt, schema, schema, schema);
	PGresult *r;
	hr_err err = {0};
	ck_assert_msg(hr_db_query(f->c, sql, 0, NULL, &r, &err), "%s: %s", sql, err.msg);
	long v = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

long results(fixture *f, int ti)
{
	return q(f, "SELECT count(*) FROM %s.results", f->t[ti].schema);
}

