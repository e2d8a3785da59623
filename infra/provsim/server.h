/*
 * server.h -- provsim's HTTP server: libmicrohttpd with an epoll thread pool,
 * keep-alive, and the routes
 *
 *   POST /v1/send/{sms|messenger|push|webhook}/{account}   the provider API
 *   GET  /v1/stats                   totals, per tenant, per account, dlr
 *   GET  /v1/stats/recipient/{to}    one recipient
 *   POST /v1/control/faults          change fault configuration (faults.h)
 *   GET  /v1/control/faults          show it (tokens masked)
 *   POST /v1/control/reset           zero every counter
 *   GET  /healthz
 *
 * /v1/control/... require "Authorization: Bearer <control_token>" when a
 * control token is set.  All answers are JSON.
 *
 * The send path allocates nothing of its own per request: the body lands in
 * a per-connection buffer reused across keep-alive requests, jansson parses
 * into a per-thread arena (jsonmem.h), answers are formatted on the stack;
 * only libmicrohttpd's own response objects are allocated.
 *
 * Latency and timeouts suspend the connection and let the timer thread
 * resume it (timer.h); no server thread ever sleeps.
 *
 * Errors: ps_server_start() returns false with a message.  Thread safety:
 * start/stop from one thread; the dependencies must outlive the server.
 */
#ifndef HERALD_PROVSIM_SERVER_H
#define HERALD_PROVSIM_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dlr.h"
#include "faults.h"
#include "inbox.h"
#include "receipts.h"
#include "stats.h"

typedef struct ps_server_opts {
	const char *bind;          /* numeric IPv4 or IPv6 address */
	uint16_t port;             /* 0 = any free port */
	unsigned threads;          /* MHD thread pool size, >= 1 */
	const char *control_token; /* NULL = control endpoints unguarded */
	size_t max_body;           /* larger send bodies get 413 */
	bool verbose;              /* one info line per send request */
	ps_stats *stats;
	ps_faults *faults;
	ps_receipts *receipts;     /* NULL = no receipts file */
	ps_dlr *dlr;
	ps_inbox *inbox;           /* NULL = no inbox (GET /v1/inbox/{to} answers 404) */
} ps_server_opts;

typedef struct ps_server ps_server;

/* Binds, listens and starts the threads; *port_out is the bound port. */
bool ps_server_start(const ps_server_opts *o, ps_server **out, uint16_t *port_out, char *err,
		     size_t errlen) PS_WUR;

/* Answers every held request, stops accepting, joins the threads, frees. */
void ps_server_stop(ps_server *s);

#endif
