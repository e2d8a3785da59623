/*
 * metrics.c -- see metrics.h.
 */
#include "metrics.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "alloc.h"
#include "log.h"
#include "model.h"

static const double bounds_ms[13] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};

struct metrics_server {
	struct MHD_Daemon *daemon;
	pthread_mutex_t mu;
	char *text;              /* latest published rendering */
	struct timespec published;
	int port;
};

void metrics_observe(sched *s, int lane, double ms)
{
	int i = 0;
	while (i < 13 && ms > bounds_ms[i])
		i++;
	s->lat_bucket[lane][i]++;
	s->lat_count[lane]++;
	s->lat_sum_ms[lane] += ms;
}

typedef struct tbuf {
	char *p;
	size_t len, cap;
} tbuf;

static void put(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(tbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n >= 0 && b->p && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 4096;
		b->p = hr_realloc(b->p, b->cap);
	}
}

static void render(const sched *s, tbuf *b)
{
	static const char *const lanes[2] = {"transactional", "bulk"};
	put(b, "# HELP herald_dispatched_total Messages leased to workers.\n# TYPE herald_dispatched_total counter\n");
	for (int l = 0; l < NLANES; l++)
		put(b, "herald_dispatched_total{lane=\"%s\"} %llu\n", lanes[l], (unsigned long long)s->dispatched[l]);
	put(b, "# HELP herald_results_total Final results, by status.\n# TYPE herald_results_total counter\n");
	static const struct {
		int idx;
		const char *name;
	} st[] = {{HR_RES_SENT, "sent"}, {HR_RES_PERMANENT, "failed"}, {HR_RES_BOUNCED, "bounced"}, {0, "dead"}};
	for (size_t i = 0; i < sizeof st / sizeof st[0]; i++)
		put(b, "herald_results_total{status=\"%s\"} %llu\n", st[i].name,
		    (unsigned long long)s->results[st[i].idx]);
	put(b, "# TYPE herald_retried_total counter\nherald_retried_total %llu\n", (unsigned long long)s->retried);
	put(b, "# TYPE herald_throttled_total counter\nherald_throttled_total %llu\n", (unsigned long long)s->throttled);
	put(b, "# TYPE herald_leases_expired_total counter\nherald_leases_expired_total %llu\n",
	    (unsigned long long)s->expired);
	put(b, "# HELP herald_rate_limit_waits_total Dispatch attempts refused by a rate limit.\n"
	       "# TYPE herald_rate_limit_waits_total counter\nherald_rate_limit_waits_total %llu\n",
	    (unsigned long long)s->rate_waits);
	put(b, "# HELP herald_results_landed_total Results committed to tenant schemas.\n"
	       "# TYPE herald_results_landed_total counter\nherald_results_landed_total %llu\n",
	    (unsigned long long)lander_landed(s->lander));
	put(b, "# HELP herald_results_unlanded Results waiting for the writer.\n"
	       "# TYPE herald_results_unlanded gauge\nherald_results_unlanded %llu\n",
	    (unsigned long long)lander_queue_depth(s->lander));
	int owned_tenants = 0;
	for (int i = 0; i < 1024; i++)
		for (const tenant *t = s->tenants[i]; t; t = t->hnext)
			owned_tenants += owner_shard_state(s->owner, t->shard) != SHARD_FREE;
	put(b, "# HELP herald_shards Tenant shards this scheduler holds (owned: served; releasing: being "
	       "handed over).\n# TYPE herald_shards gauge\nherald_shards{state=\"owned\"} %d\n"
	       "herald_shards{state=\"releasing\"} %d\n",
	    owner_count(s->owner, SHARD_OWNED), owner_count(s->owner, SHARD_RELEASING));
	put(b, "# HELP herald_tenants_owned Tenants whose shard this scheduler holds.\n"
	       "# TYPE herald_tenants_owned gauge\nherald_tenants_owned %d\n", owned_tenants);
	put(b, "# HELP herald_tenant_owned Tenants this scheduler serves or is handing over (1 each).\n"
	       "# TYPE herald_tenant_owned gauge\n");
	for (int i = 0; i < 1024; i++)
		for (const tenant *t = s->tenants[i]; t; t = t->hnext)
			if (owner_shard_state(s->owner, t->shard) != SHARD_FREE)
				put(b, "herald_tenant_owned{tenant=\"%s\",shard=\"%d\"} 1\n", t->slug, t->shard);
	put(b, "# HELP herald_schedulers Schedulers present on the control database (shards are shared "
	       "between them).\n# TYPE herald_schedulers gauge\nherald_schedulers %d\n", owner_schedulers(s->owner));
	put(b, "# HELP herald_queue_depth Messages ready to dispatch, per tenant, channel and lane.\n"
	       "# TYPE herald_queue_depth gauge\n");
	for (int i = 0; i < 1024; i++)
		for (const tenant *t = s->tenants[i]; t; t = t->hnext)
			for (int l = 0; l < NLANES; l++)
				for (int c = 1; c < NCHANNELS; c++)
					if (t->pending[l][c])
						put(b, "herald_queue_depth{tenant=\"%s\",channel=\"%s\",lane=\"%s\"} %llu\n",
						    t->slug, hr_channel_name(c), lanes[l],
						    (unsigned long long)t->pending[l][c]);
	put(b, "# HELP herald_outbox_batches_waiting Outbox batches known but not yet loaded (due or future).\n"
	       "# TYPE herald_outbox_batches_waiting gauge\n");
	for (int i = 0; i < 1024; i++)
		for (const tenant *t = s->tenants[i]; t; t = t->hnext)
			if (t->ndue || t->nfuture)
				put(b, "herald_outbox_batches_waiting{tenant=\"%s\"} %d\n", t->slug, t->ndue + t->nfuture);
	int nworkers[NLANES][NCHANNELS] = {{0}};
	unsigned credit[NLANES][NCHANNELS] = {{0}};
	for (const worker *w = s->workers; w; w = w->next)
		if (!w->dead) {
			nworkers[w->lane][w->channel]++;
			credit[w->lane][w->channel] += w->credit;
		}
	put(b, "# TYPE herald_workers gauge\n");
	for (int l = 0; l < NLANES; l++)
		for (int c = 1; c < NCHANNELS; c++)
			put(b, "herald_workers{channel=\"%s\",lane=\"%s\"} %d\n", hr_channel_name(c), lanes[l],
			    nworkers[l][c]);
	put(b, "# TYPE herald_worker_credit gauge\n");
	for (int l = 0; l < NLANES; l++)
		for (int c = 1; c < NCHANNELS; c++)
			put(b, "herald_worker_credit{channel=\"%s\",lane=\"%s\"} %u\n", hr_channel_name(c), lanes[l],
			    credit[l][c]);
	put(b, "# HELP herald_dispatch_to_result_ms Time from lease to the worker's result.\n"
	       "# TYPE herald_dispatch_to_result_ms histogram\n");
	for (int l = 0; l < NLANES; l++) {
		uint64_t cum = 0;
		for (int i = 0; i < 13; i++) {
			cum += s->lat_bucket[l][i];
			put(b, "herald_dispatch_to_result_ms_bucket{lane=\"%s\",le=\"%g\"} %llu\n", lanes[l],
			    bounds_ms[i], (unsigned long long)cum);
		}
		put(b, "herald_dispatch_to_result_ms_bucket{lane=\"%s\",le=\"+Inf\"} %llu\n", lanes[l],
		    (unsigned long long)s->lat_count[l]);
		put(b, "herald_dispatch_to_result_ms_sum{lane=\"%s\"} %.3f\n", lanes[l], s->lat_sum_ms[l]);
		put(b, "herald_dispatch_to_result_ms_count{lane=\"%s\"} %llu\n", lanes[l],
		    (unsigned long long)s->lat_count[l]);
	}
}

void metrics_publish(metrics_server *m, const sched *s)
{
	if (!m)
		return;
	tbuf b = {0};
	render(s, &b);
	pthread_mutex_lock(&m->mu);
	hr_free(m->text);
	m->text = b.p;
	clock_gettime(CLOCK_MONOTONIC, &m->published);
	pthread_mutex_unlock(&m->mu);
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned code, const char *type, const char *body)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", type);
	enum MHD_Result rc = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **state)
{
	(void)version, (void)upload, (void)upload_size, (void)state;
	metrics_server *m = cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
	pthread_mutex_lock(&m->mu);
	enum MHD_Result rc;
	if (strcmp(url, "/metrics") == 0) {
		rc = answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4", m->text ? m->text : "");
	} else if (strcmp(url, "/healthz") == 0) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		double age = (double)(now.tv_sec - m->published.tv_sec) +
			     (double)(now.tv_nsec - m->published.tv_nsec) / 1e9;
		bool ok = m->text && age < 2.0;
		rc = answer(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
			    ok ? "ok\n" : "scheduler loop is not running\n");
	} else {
		rc = answer(c, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n");
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

bool metrics_start(int port, metrics_server **out, hr_err *err)
{
	*out = NULL;
	if (port < 0)
		return true;
	metrics_server *m = hr_calloc(1, sizeof *m);
	pthread_mutex_init(&m->mu, NULL);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY, (uint16_t)port,
				     NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, &sa,
				     MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				     MHD_OPTION_END);
	if (!m->daemon) {
		pthread_mutex_destroy(&m->mu);
		hr_free(m);
		return hr_fail(err, HR_ERR_IO, "metrics_port", "metrics: cannot listen on 127.0.0.1:%d", port);
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? info->port : port;
	printf("metrics port=%d\n", m->port);
	fflush(stdout);
	hr_info("scheduler: metrics on http://127.0.0.1:%d/metrics", m->port);
	*out = m;
	return true;
}

void metrics_stop(metrics_server *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->daemon);
	pthread_mutex_destroy(&m->mu);
	hr_free(m->text);
	hr_free(m);
}
