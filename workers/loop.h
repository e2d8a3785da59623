/*
 * loop.h -- herald-worker's event loop: ZeroMQ, leases, results, drain.
 *
 * wk_run connects a DEALER to each scheduler's ROUTER for the worker's lane
 * (several schedulers share the tenants; each lease's results go back to the
 * scheduler that sent it, and credit is per scheduler) and serves until
 * drained:
 *  - HELLO (channel, lane, free credit) each time a connection to the
 *    scheduler completes its handshake, and when a scheduler that fell
 *    silent for HR_WIRE_DEAD_MS speaks again (it may have forgotten us);
 *    HEARTBEAT every second.
 *  - Each JOBS frame is one lease.  Its jobs are rendered (render.c) and
 *    submitted to the transport the lease's provider names (transport.h),
 *    as that transport has room; results are collected per lease and sent
 *    as RESULTS at the latest when the lease's last job is over, and every
 *    100 ms (or 1,024 results) for a long lease.  When a lease's results
 *    are all out, the lease is freed and a CREDIT returns its slot.
 *  - SIGTERM or SIGINT: BYE names the leases not started (handed back),
 *    started ones finish, results are flushed, and wk_run returns 0 --
 *    within drain_timeout_ms at most.  A second signal exits at once
 *    (status 1), from the signal handler.
 *  - Frames that do not decode are logged (warn) and dropped.
 *
 * A lease's state is the list it is in -- queued (nothing started), active
 * (jobs left to start), waiting (all started, some in flight), done (all
 * over, results not all sent) -- and one function moves it between lists,
 * refusing illegal moves.
 *
 * Memory: bounded by credit x lease size (the frames are kept, zero-copy,
 * until their leases end), plus concurrency x one message; sends, results
 * and buffers are pooled and reused, so RSS stays flat over any number of
 * messages.
 *
 * Thread safety: wk_run owns everything it creates and runs on one thread
 * (libmicrohttpd's metrics thread only reads atomics).
 */
#ifndef HERALD_WORKERS_LOOP_H
#define HERALD_WORKERS_LOOP_H

#include <stdint.h>

typedef struct wk_settings {
	const char *scheduler;    /* ZeroMQ endpoint(s), comma-separated: one link per scheduler */
	int channel;              /* hr_channel */
	int lane;                 /* hr_lane */
	uint32_t credit;          /* leases held at most */
	uint32_t concurrency;     /* sends in flight per transport */
	int metrics_port;         /* 0 = any free port, -1 = off */
	long smtp_timeout_ms;
	long http_timeout_ms;
	long drain_timeout_ms;
	const char *track_public_url; /* herald-api's public base URL, NULL = no tracking */
} wk_settings;

/* Run until drained; the process exit status. */
int wk_run(const wk_settings *s);

#endif
