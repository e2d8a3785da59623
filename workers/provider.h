/*
 * provider.h -- provider accounts, as the scheduler names them in a batch.
 *
 * Each JOBS batch carries its provider account as a JSON object (wire.h,
 * hr_job_batch.provider).  The worker parses it into a wk_provider once and
 * keeps it in a small cache keyed by the exact JSON text, so a stream of
 * batches for the same account costs one parse.  Fields:
 *
 *   transport   "sink" | "smtp" | "http"                       (required)
 *   name        account name for logs                          (optional)
 *   url         smtp://host:port[/helo-name] or http(s)://...  (smtp, http;
 *               a webhook provider without url posts to each job's address)
 *   use_ssl     "none" | "try" | "all"  (STARTTLS policy, smtp; default none)
 *   username, password                  (SMTP AUTH, when both are given)
 *   envelope_from                       (SMTP MAIL FROM; default: From's address)
 *   concurrency sessions (smtp) or requests in flight (http); default and
 *               ceiling: the worker's `concurrency` setting
 *   timeout_ms  per send; default the worker's smtp/http_timeout_ms
 *   method      HTTP method, default POST
 *   headers     object of extra HTTP headers, e.g. {"Authorization":"Bearer x"}
 *   body        Liquid template of the HTTP request body (see docs/workers.md)
 *   unsubscribe_url  Liquid template of the List-Unsubscribe URL (bulk email)
 *   tracking    {"key": 64 hex digits, "opens": bool, "clicks": bool} -- the
 *               tenant's tracking key and choices, added by the scheduler for
 *               email accounts (common/providers.c; workers/tracking.h)
 *
 * Ownership: wk_provider_get returns a referenced provider; the caller
 * releases it with wk_provider_put.  Unreferenced providers stay cached
 * until the cache holds more than its bound, then the least recently used
 * one is freed.  `inflight` is the transports' per-account counter.
 *
 * Errors: bool + hr_err (HR_ERR_INVALID, field = the JSON key).
 * Thread safety: none; the worker's loop thread owns the cache.
 */
#ifndef HERALD_WORKERS_PROVIDER_H
#define HERALD_WORKERS_PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "err.h"
#include "liquid.h"
#include "wire.h"

typedef enum wk_transport_kind {
	WK_TR_SINK = 0,
	WK_TR_SMTP = 1,
	WK_TR_HTTP = 2,
	WK_TR_COUNT
} wk_transport_kind;

typedef struct wk_provider wk_provider;
struct wk_provider {
	char *key;                   /* the JSON text it was parsed from (cache key) */
	size_t key_len;
	char *name;                  /* account name, "" when none */
	wk_transport_kind kind;
	char *url;                   /* NULL = none */
	long use_ssl;                /* CURLUSESSL_NONE/TRY/ALL */
	char *username, *password;   /* NULL = no AUTH */
	char *envelope_from;         /* NULL = From's address */
	uint32_t concurrency;        /* 0 = the worker's setting */
	long timeout_ms;             /* 0 = the worker's setting */
	char *method;                /* HTTP method */
	struct curl_slist *headers;  /* extra HTTP headers ("Name: value") */
	liquid_template *body;       /* HTTP body template; NULL = the default JSON body */
	liquid_template *unsubscribe; /* List-Unsubscribe URL template; NULL = none */
	bool tracking;               /* track_key, track_opens, track_clicks are set */
	uint8_t track_key[32];       /* the tenant's tracking key */
	bool track_opens, track_clicks;
	uint64_t serial;             /* unique per parsed provider in this process (never reused) */
	uint32_t inflight;           /* sends of this account in a transport now */
	unsigned refs;               /* leases holding it */
	wk_provider *prev, *next;    /* cache list, most recently used first */
};

typedef struct wk_providers wk_providers;

wk_providers *wk_providers_new(unsigned max_idle);
void wk_providers_free(wk_providers *ps); /* every provider must be put back */

bool wk_provider_get(wk_providers *ps, const char *json, size_t len, wk_provider **out,
		     hr_err *err) HR_MUST_CHECK;
void wk_provider_put(wk_providers *ps, wk_provider *p);

const char *wk_transport_name(wk_transport_kind k);

#endif
