/*
 * pipeline_bench.c -- the small drivers behind bench/pipeline, bench/lanes
 * and bench/ratelimit (the scripts build, start and stop everything; this
 * program only talks to Postgres).
 *
 *   herald-bench-pipeline wait DSN SCHEMA LOW_WATER [TIMEOUT_S]
 *       Poll SCHEMA.dispatch_state every 5 ms over one connection until
 *       low_water >= LOW_WATER (every outbox batch below it has all its
 *       results committed: the lander writes low water in the transaction of,
 *       or after, the results it covers).  Prints "landed_ns=<unix ns>", the
 *       wall clock when that was first seen.  Exit 1 on timeout.
 *
 *   herald-bench-pipeline tx DSN TENANT PROVIDER CHANNEL RATE SECONDS OUT
 *       Enqueue RATE transactional messages per second for SECONDS, one per
 *       outbox batch, each in its own transaction through hr_outbox_enqueue
 *       (what the API does), on a fixed schedule (no drift, no catch-up
 *       bursts beyond one period).  Writes "<message id> <unix ns after
 *       COMMIT returned> <backend pid>" per message to OUT.  Prints
 *       "tx_sent=N".
 *
 *   herald-bench-pipeline listen DSN OUT
 *       LISTEN herald_outbox on a connection that does nothing else and
 *       write "<notifying backend pid> <payload> <unix ns when read>" per
 *       notification to OUT until SIGTERM/SIGINT: how long Postgres takes to
 *       deliver a NOTIFY to an idle listener, apart from the scheduler.
 *
 *   herald-bench-pipeline hops K RATE SECONDS OUT
 *       The operating system's share of a transactional message's latency:
 *       K processes (this one and K-1 children) in a ring of pipes; RATE
 *       times a second this one writes a timestamp, each process passes it
 *       on, and it comes back after K wake-ups with no other work between.
 *       Writes "<unix ns when sent> <round trip ns>" per message to OUT.
 *       Run beside the transactional traffic of bench/lanes, idle and behind
 *       the backlog, in the same session at the same priority: how much
 *       longer K bare wake-ups take when the backlog keeps both cores busy.
 *
 * Errors: a message on stderr and exit status 1.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "outbox.h"
#include "tenancy.h"

static int64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t mono)
{
	struct timespec ts = {mono / 1000000000, mono % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int die(const hr_err *err)
{
	fprintf(stderr, "herald-bench-pipeline: %s\n", err->msg);
	return 1;
}

static int cmd_wait(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	hr_err err = {0};
	PGconn *c;
	if (!hr_db_connect(argv[2], &c, &err))
		return die(&err);
	char *schema = hr_db_ident(c, argv[3]);
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT low_water FROM %s.dispatch_state", schema);
	long long want = atoll(argv[4]);
	int64_t deadline = mono_ns() + (argc > 5 ? atoll(argv[5]) : 3600) * 1000000000LL;
	int64_t next = mono_ns();
	for (;;) {
		PGresult *r;
		if (!hr_db_query(c, sql, 0, NULL, &r, &err))
			return die(&err);
		long long low = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : 0;
		PQclear(r);
		if (low >= want) {
			printf("landed_ns=%lld\n", (long long)wall_ns());
			break;
		}
		if (mono_ns() > deadline) {
			fprintf(stderr, "herald-bench-pipeline: low water %lld, want %lld: timed out\n", low, want);
			return 1;
		}
		next += 5000000;
		sleep_until(next);
	}
	PQfinish(c);
	return 0;
}

static int cmd_tx(int argc, char **argv)
{
	if (argc < 9)
		return 2;
	hr_err err = {0};
	PGconn *c;
	hr_tenant t;
	if (!hr_db_connect(argv[2], &c, &err) || !hr_tenant_get(c, argv[3], &t, &err))
		return die(&err);
	int rate = atoi(argv[6]), secs = atoi(argv[7]);
	FILE *out = fopen(argv[8], "w");
	if (!out || rate < 1 || secs < 1) {
		fprintf(stderr, "herald-bench-pipeline: bad rate/seconds or cannot write %s\n", argv[8]);
		return 1;
	}
	int64_t period = 1000000000LL / rate, next = mono_ns();
	long total = (long)rate * secs;
	char to[64];
	for (long i = 0; i < total; i++) {
		sleep_until(next);
		next += period;
		snprintf(to, sizeof to, "+1555%07ld", i);
		const char *addr[] = {to};
		hr_outbox_batch b = {
			.channel = argv[5],
			.lane = "transactional",
			.content = "{\"text\":\"Your code is {{ herald.message_id }}\"}",
			.provider = argv[4],
			.origin = "test",
			.n = 1,
			.addresses = addr,
		};
		int64_t id;
		if (!hr_db_tenant_begin(c, t.schema, t.role, &err) ||
		    !hr_outbox_enqueue(c, t.id, &b, &id, &err) || !hr_db_commit(c, &err))
			return die(&err);
		fprintf(out, "%lld %lld %d\n", (long long)id, (long long)wall_ns(), PQbackendPID(c));
	}
	fclose(out);
	PQfinish(c);
	printf("tx_sent=%ld\n", total);
	return 0;
}

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static int cmd_listen(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	hr_err err = {0};
	PGconn *c;
	FILE *out = fopen(argv[3], "w");
	if (!out) {
		fprintf(stderr, "herald-bench-pipeline: cannot write %s\n", argv[3]);
		return 1;
	}
	if (!hr_db_connect(argv[2], &c, &err) || !hr_db_exec(c, "LISTEN herald_outbox", &err))
		return die(&err);
	struct sigaction sa = {.sa_handler = on_stop};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("listening\n");
	fflush(stdout);
	while (!stop) {
		struct pollfd p = {PQsocket(c), POLLIN, 0};
		if (poll(&p, 1, 100) < 0 && errno != EINTR)
			break;
		if (!PQconsumeInput(c)) {
			fprintf(stderr, "herald-bench-pipeline: %s", PQerrorMessage(c));
			return 1;
		}
		int64_t at = wall_ns();
		PGnotify *n;
		while ((n = PQnotifies(c))) {
			fprintf(out, "%d %s %lld\n", n->be_pid, n->extra, (long long)at);
			PQfreemem(n);
		}
		fflush(out); /* read while the bench still runs */
	}
	fclose(out);
	PQfinish(c);
	return 0;
}

/* One hop of the ring: pass every timestamp on until the ring closes. */
static void hop(int in, int out)
{
	int64_t v;
	while (read(in, &v, sizeof v) == (ssize_t)sizeof v)
		if (write(out, &v, sizeof v) != (ssize_t)sizeof v)
			break;
	_exit(0);
}

static int cmd_hops(int argc, char **argv)
{
	if (argc < 6)
		return 2;
	int k = atoi(argv[2]), rate = atoi(argv[3]), secs = atoi(argv[4]);
	FILE *out = fopen(argv[5], "w");
	if (!out || k < 2 || k > 64 || rate < 1 || secs < 1) {
		fprintf(stderr, "herald-bench-pipeline: hops: bad K/rate/seconds or cannot write %s\n", argv[5]);
		return 1;
	}
	int p[64][2]; /* process i reads p[i], writes p[(i + 1) % k]; this one is process 0 */
	for (int i = 0; i < k; i++)
		if (pipe(p[i]) != 0) {
			perror("herald-bench-pipeline: pipe");
			return 1;
		}
	pid_t kids[64];
	for (int i = 1; i < k; i++) {
		kids[i] = fork();
		if (kids[i] < 0) {
			perror("herald-bench-pipeline: fork");
			return 1;
		}
		if (kids[i] == 0) {
			for (int j = 0; j < k; j++) {
				if (j != i)
					close(p[j][0]);
				if (j != (i + 1) % k)
					close(p[j][1]);
			}
			hop(p[i][0], p[(i + 1) % k][1]);
		}
	}
	int in = p[0][0], first = p[1][1];
	int64_t period = 1000000000LL / rate, next = mono_ns(), offset = wall_ns() - mono_ns();
	long total = (long)rate * secs, sent = 0, got = 0;
	while (got < total) {
		int64_t now = mono_ns();
		if (sent < total && now >= next) {
			if (write(first, &now, sizeof now) != (ssize_t)sizeof now) {
				perror("herald-bench-pipeline: hops: write");
				return 1;
			}
			sent++;
			next += period;
			continue;
		}
		int64_t wait_ms = sent < total ? (next - now) / 1000000 : 10000;
		struct pollfd pf = {.fd = in, .events = POLLIN};
		int n = poll(&pf, 1, (int)(wait_ms < 0 ? 0 : wait_ms));
		if (n < 0 && errno != EINTR)
			return 1;
		if (n == 0 && sent >= total) {
			fprintf(stderr, "herald-bench-pipeline: hops: %ld of %ld came back\n", got, total);
			return 1;
		}
		if (n > 0) {
			int64_t t0;
			if (read(in, &t0, sizeof t0) != (ssize_t)sizeof t0)
				return 1;
			fprintf(out, "%lld %lld\n", (long long)(t0 + offset), (long long)(mono_ns() - t0));
			got++;
		}
	}
	for (int i = 0; i < k; i++)
		close(p[i][1]); /* the ring ends: each child reads EOF and exits */
	for (int i = 1; i < k; i++)
		waitpid(kids[i], NULL, 0);
	fclose(out);
	printf("hops=%d sent=%ld\n", k, sent);
	return 0;
}

int main(int argc, char **argv)
{
	hr_log_init("bench");
	int rc = 2;
	if (argc > 1 && strcmp(argv[1], "wait") == 0)
		rc = cmd_wait(argc, argv);
	else if (argc > 1 && strcmp(argv[1], "tx") == 0)
		rc = cmd_tx(argc, argv);
	else if (argc > 1 && strcmp(argv[1], "listen") == 0)
		rc = cmd_listen(argc, argv);
	else if (argc > 1 && strcmp(argv[1], "hops") == 0)
		rc = cmd_hops(argc, argv);
	if (rc == 2)
		fprintf(stderr, "usage: herald-bench-pipeline wait DSN SCHEMA LOW_WATER [TIMEOUT_S]\n"
				"       herald-bench-pipeline tx DSN TENANT PROVIDER CHANNEL RATE SECONDS OUT\n"
				"       herald-bench-pipeline listen DSN OUT\n"
				"       herald-bench-pipeline hops K RATE SECONDS OUT\n");
	return rc;
}
