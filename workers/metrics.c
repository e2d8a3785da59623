/*
 * metrics.c -- Prometheus text over libmicrohttpd.  See metrics.h.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "wire.h"

#define NSTATUS 6 /* hr_result_status 1..5, index 0 unused */

/* Latency buckets, upper bounds in microseconds (the histogram's `le`). */
static const uint64_t bucket_us[] = {1000,   2500,    5000,    10000,   25000,  50000,  100000,
				     250000, 500000, 1000000, 2500000, 5000000, 10000000};
#define NBUCKETS (sizeof bucket_us / sizeof bucket_us[0])

struct wk_metrics {
	int channel, lane;
	struct MHD_Daemon *daemon;
	int port;
	_Atomic uint64_t results[NSTATUS];
	_Atomic uint64_t buckets[NBUCKETS + 1]; /* last = +Inf */
	_Atomic uint64_t latency_sum_us, latency_count;
	_Atomic uint64_t leases_held, inflight, renders, render_errors;
	_Atomic uint64_t cache_entries, cache_hits, cache_misses, connections;
	_Atomic int connected;
};

wk_metrics *wk_metrics_new(int channel, int lane)
{
	wk_metrics *m = hr_calloc(1, sizeof *m);
	m->channel = channel;
	m->lane = lane;
	m->port = -1;
	return m;
}

void wk_metrics_result(wk_metrics *m, int status, uint64_t latency_us)
{
	if (status > 0 && status < NSTATUS)
		atomic_fetch_add_explicit(&m->results[status], 1, memory_order_relaxed);
	size_t b = 0;
	while (b < NBUCKETS && latency_us > bucket_us[b])
		b++;
	atomic_fetch_add_explicit(&m->buckets[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->latency_sum_us, latency_us, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->latency_count, 1, memory_order_relaxed);
}

void wk_metrics_connected(wk_metrics *m, bool up)
{
	atomic_store_explicit(&m->connected, up ? 1 : 0, memory_order_relaxed);
}

void wk_metrics_gauges_set(wk_metrics *m, const wk_metrics_gauges *g)
{
#define SET(f) atomic_store_explicit(&m->f, g->f, memory_order_relaxed)
	SET(leases_held);
	SET(inflight);
	SET(renders);
	SET(render_errors);
	SET(cache_entries);
	SET(cache_hits);
	SET(cache_misses);
	SET(connections);
#undef SET
}

static uint64_t ld(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * sysconf(_SC_PAGESIZE);
}

static void render_text(wk_metrics *m, wk_buf *b)
{
	const char *ch = hr_channel_name(m->channel), *ln = hr_lane_name(m->lane);
	wk_buf_str(b, "# HELP herald_worker_results_total Send results by class.\n"
		      "# TYPE herald_worker_results_total counter\n");
	for (int s = 1; s < NSTATUS; s++)
		wk_buf_printf(b, "herald_worker_results_total{channel=\"%s\",lane=\"%s\",status=\"%s\"} %llu\n",
			      ch, ln, hr_result_name(s), (unsigned long long)ld(&m->results[s]));
	wk_buf_str(b, "# HELP herald_worker_send_latency_seconds Duration of one send.\n"
		      "# TYPE herald_worker_send_latency_seconds histogram\n");
	uint64_t cum = 0;
	for (size_t i = 0; i <= NBUCKETS; i++) {
		cum += ld(&m->buckets[i]);
		if (i < NBUCKETS)
			wk_buf_printf(b, "herald_worker_send_latency_seconds_bucket{channel=\"%s\",lane=\"%s\",le=\"%g\"} %llu\n",
				      ch, ln, (double)bucket_us[i] / 1e6, (unsigned long long)cum);
		else
			wk_buf_printf(b, "herald_worker_send_latency_seconds_bucket{channel=\"%s\",lane=\"%s\",le=\"+Inf\"} %llu\n",
				      ch, ln, (unsigned long long)cum);
	}
	wk_buf_printf(b, "herald_worker_send_latency_seconds_sum{channel=\"%s\",lane=\"%s\"} %.6f\n", ch, ln,
		      (double)ld(&m->latency_sum_us) / 1e6);
	wk_buf_printf(b, "herald_worker_send_latency_seconds_count{channel=\"%s\",lane=\"%s\"} %llu\n", ch, ln,
		      (unsigned long long)ld(&m->latency_count));
	struct {
		const char *name, *type, *help;
		uint64_t v;
	} simple[] = {
		{"herald_worker_renders_total", "counter", "Jobs rendered.", ld(&m->renders)},
		{"herald_worker_render_errors_total", "counter", "Jobs whose render failed.", ld(&m->render_errors)},
		{"herald_worker_leases_held", "gauge", "Job batches held.", ld(&m->leases_held)},
		{"herald_worker_sends_in_flight", "gauge", "Sends in a transport.", ld(&m->inflight)},
		{"herald_worker_template_cache_entries", "gauge", "Compiled templates cached.", ld(&m->cache_entries)},
		{"herald_worker_template_cache_hits_total", "counter", "Template cache hits.", ld(&m->cache_hits)},
		{"herald_worker_template_cache_misses_total", "counter", "Template cache misses (compiles).", ld(&m->cache_misses)},
		{"herald_worker_connections_opened_total", "counter", "Provider connections opened.", ld(&m->connections)},
		{"herald_worker_scheduler_connected", "gauge", "1 while the scheduler is heard from.",
		 (uint64_t)atomic_load_explicit(&m->connected, memory_order_relaxed)},
		{"herald_worker_resident_bytes", "gauge", "Resident memory of the process.", (uint64_t)rss_bytes()},
	};
	for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
		wk_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s{channel=\"%s\",lane=\"%s\"} %llu\n",
			      simple[i].name, simple[i].help, simple[i].name, simple[i].type, simple[i].name,
			      ch, ln, (unsigned long long)simple[i].v);
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type, wk_buf *b)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(b->len, b->p ? b->p : (void *)"", MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", type);
	enum MHD_Result rc = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **state)
{
	wk_metrics *m = cls;
	wk_buf b = {0};
	enum MHD_Result rc;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		wk_buf_str(&b, "method not allowed\n");
		rc = answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", &b);
	} else if (strcmp(url, "/metrics") == 0) {
		render_text(m, &b);
		rc = answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4", &b);
	} else if (strcmp(url, "/healthz") == 0) {
		bool up = atomic_load_explicit(&m->connected, memory_order_relaxed);
		wk_buf_str(&b, up ? "ok\n" : "scheduler not connected\n");
		rc = answer(c, up ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", &b);
	} else {
		wk_buf_str(&b, "not found\n");
		rc = answer(c, MHD_HTTP_NOT_FOUND, "text/plain", &b);
	}
	wk_buf_free(&b);
	return rc;
}

bool wk_metrics_start(wk_metrics *m, int port, hr_err *err)
{
	if (port < 0)
		return true;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY, (uint16_t)port,
				     NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, &sa,
				     MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				     MHD_OPTION_END);
	if (!m->daemon)
		return hr_fail(err, HR_ERR_IO, "metrics_port", "metrics: cannot listen on 127.0.0.1:%d", port);
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? info->port : port;
	return true;
}

int wk_metrics_port(const wk_metrics *m)
{
	return m->port;
}

void wk_metrics_free(wk_metrics *m)
{
	if (!m)
		return;
	if (m->daemon)
		MHD_stop_daemon(m->daemon);
	hr_free(m);
}
