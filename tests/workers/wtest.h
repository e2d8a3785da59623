/*
 * wtest.h -- harness for herald-worker's integration tests.
 *
 * The test plays the scheduler: a real ZeroMQ ROUTER bound on
 * tcp://127.0.0.1:* (the port read back from ZMQ_LAST_ENDPOINT), the real
 * herald-worker binary started as a child connected to it, and frames
 * encoded and decoded by the real wire codec (common/wire.c).  Worker
 * heartbeats are answered automatically while a test waits for a frame.
 *
 * Children never outlive a test, also when an assertion fails (check then
 * leaves the forked test through _exit, skipping atexit and teardown):
 *  - the worker runs with PR_SET_PDEATHSIG = SIGKILL;
 *  - smtp-sink must drop root privileges (-u), which clears the death
 *    signal, so it runs under a small guardian process (a fork of the test)
 *    that has the death signal, and kills smtp-sink when it gets it;
 *  - every test dir lives under the root the runner made (wt_root_new)
 *    before forking tests and removes after them.
 *
 * wt_worker_stop asserts the exit status and a worker log free of sanitizer
 * reports and of warnings the test did not allow.
 * Failures inside these helpers are check assertions.
 */
#ifndef HERALD_TEST_WTEST_H
#define HERALD_TEST_WTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

/* The runner's root for test dirs (exported as WT_ROOT); from main() only. */
char *wt_root_new(void);
void wt_root_remove(char *root);

/* A fresh dir under the root, world-writable (smtp-sink writes as nobody). */
void wt_dir(char *out, size_t len, const char *tag);

typedef struct wt {
	void *zctx, *router;
	char endpoint[128];
	uint8_t ident[256];      /* the worker's routing id, once heard */
	size_t identlen;
	pid_t pid;               /* the worker, 0 once stopped */
	char dir[256];
	char log[320];           /* the worker's stderr */
	int metrics_port;
	hr_hello hello;          /* the last HELLO (worker_id not kept) */
	int hellos;              /* HELLOs received */
} wt;

/* Bind the ROUTER, start the worker with --channel/--lane and extra args
 * (NULL-terminated), wait for its HELLO (deadline). */
void wt_start(wt *t, const char *channel, const char *lane, const char *const *extra);

/* Next frame that is not a HEARTBEAT (HELLOs are recorded and skipped too,
 * unless want_hello).  Returns false on timeout.  *frame is heap (free()). */
bool wt_recv(wt *t, int timeout_ms, bool want_hello, hr_wire_type *type, uint8_t **frame, size_t *len);

/* Send raw bytes as one frame (or as several parts when nparts > 1). */
void wt_send_raw(wt *t, const void *p, size_t len);
void wt_send_parts(wt *t, const void *const *parts, const size_t *lens, int nparts);
void wt_send_jobs(wt *t, const hr_job_batch *b);

/* A result the test collected. */
typedef struct wt_res {
	uint64_t lease_id, message_id;
	uint8_t status;
	uint32_t retry_after_ms, latency_us;
	char provider_id[128];
	char reason[256];
} wt_res;

typedef struct wt_collect {
	wt_res *r;
	size_t n, cap;
	uint32_t credit;         /* sum of CREDIT received */
	int results_msgs;        /* RESULTS frames */
	uint64_t bye[64];        /* leases handed back by BYEs */
	int nbye, byes;          /* lease ids, BYE frames */
} wt_collect;

/* Collect frames until `want` results are in (or timeout_ms passes); asserts it got them. */
void wt_collect_results(wt *t, wt_collect *c, size_t want, int timeout_ms);
/* Collect until a BYE arrived. */
void wt_collect_bye(wt *t, wt_collect *c, int timeout_ms);
void wt_collect_free(wt_collect *c);
const wt_res *wt_find(const wt_collect *c, uint64_t message_id);

/* Signal the worker, wait for its exit (deadline); returns the status
 * (128+signal if killed).  With check: asserts status want_status and a
 * clean log (no sanitizer report; at most allowed_warns warn lines). */
int wt_worker_stop(wt *t, int sig, bool check, int want_status, int allowed_warns);
/* Close the ROUTER and the context (after the worker stopped). */
void wt_close(wt *t);

/* Count occurrences of needle in the worker's log. */
int wt_log_count(wt *t, const char *needle);
char *wt_slurp(const char *path); /* heap; "" when missing */

/* An smtp-sink under a guardian.  args: extra smtp-sink options (NULL-terminated). */
typedef struct wt_sink {
	pid_t guard;
	int port;
	char dir[256];           /* dumps: <dir>/mail/%M. */
	char log[320];           /* smtp-sink's stderr (-v: one "connect" line per session) */
} wt_sink;
void wt_sink_start(wt_sink *s, const char *const *args);
void wt_sink_stop(wt_sink *s);
/* Message files dumped so far (heap array of heap paths). */
char **wt_sink_mails(wt_sink *s, size_t *n);
void wt_strv_free(char **v, size_t n);

/* GET http://127.0.0.1:port/path; returns the status, body into *body (heap). */
long wt_http_get(int port, const char *path, char **body);

long long wt_mono_ms(void);

#endif
