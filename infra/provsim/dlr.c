/*
 * dlr.c -- see dlr.h.
 */
#include "dlr.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "jsonmem.h"
#include "log.h"

#define BATCH 256
#define DRAIN_MS 2000

struct rec {
	const char *url;     /* owned by a fault configuration */
	bool failed;         /* "undelivered" rather than "delivered" */
	char provider_id[48];
	char msg_id[128];
};

struct ps_dlr {
	pthread_mutex_t mu;       /* guards the ring and `stop` */
	pthread_cond_t cv;        /* signalled on enqueue and stop */
	struct rec *ring;         /* PS_DLR_QUEUE entries */
	size_t head, count;       /* first queued entry, queued entries */
	bool stop;
	pthread_t thread;
	CURL *curl;               /* used by the thread only */
	struct curl_slist *hdrs;
	_Atomic unsigned long long sent, failed, dropped;
};

static size_t discard(char *p, size_t sz, size_t n, void *arg)
{
	return sz * n;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void post_one(ps_dlr *d, const struct rec *r)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "provider_id", r->provider_id, "message_id",
			      r->msg_id, "status", r->failed ? "undelivered" : "delivered");
	if (r->failed)
		json_object_set_new(o, "reason", json_string("hard_bounce"));
	char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!body) {
		atomic_fetch_add(&d->failed, 1);
		return;
	}
	curl_easy_setopt(d->curl, CURLOPT_URL, r->url);
	curl_easy_setopt(d->curl, CURLOPT_POSTFIELDS, body);
	CURLcode rc = curl_easy_perform(d->curl);
	long code = 0;
	curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &code);
	if (rc == CURLE_OK && code >= 200 && code < 300)
		atomic_fetch_add(&d->sent, 1);
	else
		atomic_fetch_add(&d->failed, 1);
	ps_json_free(body);
}

static void *dlr_main(void *arg)
{
	ps_dlr *d = arg;
	struct rec *batch = hr_malloc(BATCH * sizeof *batch);
	uint64_t drain_until = 0;
	pthread_mutex_lock(&d->mu);
	for (;;) {
		while (d->count == 0 && !d->stop)
			pthread_cond_wait(&d->cv, &d->mu);
		if (d->stop) {
			if (!drain_until)
				drain_until = mono_ms() + DRAIN_MS;
			if (d->count == 0 || mono_ms() > drain_until)
				break;
		}
		size_t n = 0;
		while (n < BATCH && d->count) {
			batch[n++] = d->ring[d->head];
			d->head = (d->head + 1) % PS_DLR_QUEUE;
			d->count--;
		}
		pthread_mutex_unlock(&d->mu);
		for (size_t i = 0; i < n; i++)
			post_one(d, &batch[i]);
		pthread_mutex_lock(&d->mu);
	}
	atomic_fetch_add(&d->dropped, d->count);
	d->count = 0;
	pthread_mutex_unlock(&d->mu);
	hr_free(batch);
	return NULL;
}

bool ps_dlr_start(ps_dlr **out, char *err, size_t errlen)
{
	ps_dlr *d = hr_calloc(1, sizeof *d);
	d->curl = curl_easy_init();
	if (!d->curl) {
		snprintf(err, errlen, "dlr: curl_easy_init failed");
		goto fail;
	}
	d->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, d->hdrs);
	curl_easy_setopt(d->curl, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(d->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, discard);
	d->ring = hr_malloc(PS_DLR_QUEUE * sizeof *d->ring);
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	int rc = pthread_create(&d->thread, NULL, dlr_main, d);
	if (rc != 0) {
		snprintf(err, errlen, "dlr: thread: %s", strerror(rc));
		pthread_cond_destroy(&d->cv);
		pthread_mutex_destroy(&d->mu);
		goto fail;
	}
	*out = d;
	return true;
fail:
	if (d->curl)
		curl_easy_cleanup(d->curl);
	curl_slist_free_all(d->hdrs);
	hr_free(d->ring);
	hr_free(d);
	return false;
}

void ps_dlr_stop(ps_dlr *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	curl_easy_cleanup(d->curl);
	curl_slist_free_all(d->hdrs);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	hr_free(d->ring);
	hr_free(d);
}

void ps_dlr_enqueue(ps_dlr *d, const char *url, const char *provider_id, const char *msg_id,
		    bool failed)
{
	pthread_mutex_lock(&d->mu);
	if (d->count == PS_DLR_QUEUE || d->stop) {
		pthread_mutex_unlock(&d->mu);
		atomic_fetch_add(&d->dropped, 1);
		return;
	}
	struct rec *r = &d->ring[(d->head + d->count) % PS_DLR_QUEUE];
	r->url = url;
	r->failed = failed;
	snprintf(r->provider_id, sizeof r->provider_id, "%s", provider_id);
	snprintf(r->msg_id, sizeof r->msg_id, "%s", msg_id);
	d->count++;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

void ps_dlr_stats_json(void *arg, json_t *out)
{
	ps_dlr *d = arg;
	pthread_mutex_lock(&d->mu);
	size_t queued = d->count;
	pthread_mutex_unlock(&d->mu);
	json_object_set_new(out, "queued", json_integer((json_int_t)queued));
	json_object_set_new(out, "sent", json_integer((json_int_t)atomic_load(&d->sent)));
	json_object_set_new(out, "failed", json_integer((json_int_t)atomic_load(&d->failed)));
	json_object_set_new(out, "dropped", json_integer((json_int_t)atomic_load(&d->dropped)));
}
