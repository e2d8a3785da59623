/*
 * metrics.h -- herald-scheduler's Prometheus endpoint and health check.
 *
 * The loop thread renders the metrics text (metrics_render) every 250 ms and
 * publishes it (metrics_publish); a libmicrohttpd thread serves the latest
 * copy on /metrics and answers /healthz with 200 while the loop published
 * within the last 2 s (else 503).  The loop never blocks on a scrape and the
 * HTTP thread never reads the loop's structures.
 */
#ifndef HERALD_SCHED_METRICS_H
#define HERALD_SCHED_METRICS_H

#include <stdbool.h>

#include "err.h"

typedef struct sched sched;
typedef struct metrics_server metrics_server;

/* port 0 = a free port (logged and printed as "metrics port=N"), -1 = off (returns NULL, true). */
bool metrics_start(int port, metrics_server **out, hr_err *err) HR_MUST_CHECK;
void metrics_publish(metrics_server *m, const sched *s);
void metrics_stop(metrics_server *m);

/* Record one dispatch-to-result latency (ms) for the lane (0 tx, 1 bulk). */
void metrics_observe(sched *s, int lane, double ms);

#endif
