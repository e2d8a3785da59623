/*
 * psim.h -- test harness for herald-provsim: start the real binary on port 0
 * in a private temp dir, talk HTTP to it with libcurl, stop it.
 *
 * psim_start() waits for the "listening port=N" line with a deadline (no
 * sleeps).  The simulator's stderr goes to <dir>/stderr.log and its receipts
 * to <dir>/receipts.txt.
 *
 * Cleanup is guaranteed on every path: psim_stop() on the normal one; when
 * a check assertion fails, the forked test child leaves through _exit(), so
 * (1) the simulator has PR_SET_PDEATHSIG=SIGKILL and dies with the test
 * process, whatever killed it, and (2) every test dir lives under a root
 * that the runner process (main) made with psim_root_new() before forking
 * tests and removes with psim_root_remove() after them.  An atexit() handler
 * also kills and removes what a test leaves when it exits normally.
 *
 * psim_stop() sends SIGTERM, waits (deadline) and asserts exit status 0 and
 * a stderr free of warnings, fatals and sanitizer reports.
 *
 * Failures inside these helpers are check assertions.
 */
#ifndef HERALD_TEST_PSIM_H
#define HERALD_TEST_PSIM_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct psim {
	pid_t pid;            /* 0 once stopped */
	pid_t owner;          /* the test process that started it */
	int port;
	char dir[256];        /* private temp dir */
	char receipts[320];   /* <dir>/receipts.txt */
	char errlog[320];     /* <dir>/stderr.log */
} psim;

/* A fresh root for test dirs, exported as PSIM_ROOT; heap path. */
char *psim_root_new(void);
/* Removes the root and everything under it; frees the path. */
void psim_root_remove(char *root);

/* args: NULL-terminated extra arguments after "--port 0 --receipts FILE". */
void psim_start(psim *p, const char *const *args);

/* SIGTERM, wait; returns the exit status (or 128+signal).  With check=true,
 * asserts status 0 and a clean stderr.  Always removes the dir. */
int psim_stop_sig(psim *p, int sig, bool check);
#define psim_stop(p) ((void)psim_stop_sig((p), SIGTERM, true))

/* Like psim_stop() but keeps the dir for inspection; then psim_cleanup(). */
void psim_stop_keep(psim *p);
void psim_cleanup(psim *p);

typedef struct presp {
	long status;          /* HTTP status, 0 on transport error */
	CURLcode rc;          /* transport result */
	char body[16384];
	size_t len;
	char retry_after[32]; /* Retry-After header value, "" if none */
	double secs;          /* total time */
} presp;

/* One request on a reused keep-alive handle.  headers: NULL-terminated or
 * NULL; timeout_ms 0 = 10 s. */
void psim_http(psim *p, const char *method, const char *path, const char *body,
	       const char *const *headers, long timeout_ms, presp *out);

/* POST a send with the given fields (NULL = omitted). */
long psim_send(psim *p, const char *channel, const char *account, const char *tenant,
	       const char *to, const char *msg_id, presp *out);

/* GET path and parse JSON (asserts 200 and valid JSON).  Caller decrefs. */
json_t *psim_get_json(psim *p, const char *path);

/* Integer at a dotted path ("totals.accepted"); -1 when absent. */
long long jpath(json_t *root, const char *path);

/* Lines of the receipts file (heap array of heap strings); *n = count. */
char **psim_receipts(psim *p, size_t *n);
void psim_lines_free(char **lines, size_t n);

long long now_ns(void);
long long mono_ms(void);

#endif
