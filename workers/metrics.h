/*
 * metrics.h -- the worker's Prometheus endpoint.
 *
 * GET /metrics on 127.0.0.1:PORT answers the Prometheus text format:
 *   herald_worker_results_total{channel,lane,status}   counter per result class
 *   herald_worker_send_latency_seconds{channel,lane}   histogram of send durations
 *   herald_worker_renders_total, herald_worker_render_errors_total
 *   herald_worker_leases_held, herald_worker_sends_in_flight   gauges
 *   herald_worker_template_cache_{entries,hits_total,misses_total}
 *   herald_worker_connections_opened_total  (SMTP/HTTP connections libcurl opened)
 *   herald_worker_scheduler_connected       1 when the scheduler is heard from
 *   herald_worker_resident_bytes            the process RSS
 * GET /healthz answers 200 "ok" while the scheduler is connected, else 503.
 *
 * The loop thread updates the figures (relaxed atomics); libmicrohttpd's
 * own thread reads them.  Port 0 picks a free port (wk_metrics_port tells
 * which); a negative port disables the endpoint.
 *
 * Errors: bool + hr_err (HR_ERR_IO when the port cannot be bound).
 */
#ifndef HERALD_WORKERS_METRICS_H
#define HERALD_WORKERS_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct wk_metrics wk_metrics;

wk_metrics *wk_metrics_new(int channel, int lane);
bool wk_metrics_start(wk_metrics *m, int port, hr_err *err) HR_MUST_CHECK;
int wk_metrics_port(const wk_metrics *m);
void wk_metrics_free(wk_metrics *m); /* stops the server */

void wk_metrics_result(wk_metrics *m, int status, uint64_t latency_us);
void wk_metrics_connected(wk_metrics *m, bool up);

typedef struct wk_metrics_gauges {
	uint64_t leases_held, inflight;
	uint64_t renders, render_errors;
	uint64_t cache_entries, cache_hits, cache_misses;
	uint64_t connections;
} wk_metrics_gauges;
void wk_metrics_gauges_set(wk_metrics *m, const wk_metrics_gauges *g);

#endif
