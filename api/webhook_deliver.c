/*
 * webhook_deliver.c -- herald-api's webhook delivery thread (see webhooks.c
 * for the design: LISTEN herald_webhooks, a due time per tenant, claims with
 * SKIP LOCKED and a lease, Standard Webhooks signatures, backoff with
 * jitter, a log of every attempt).
 *
 * The thread owns one PostgreSQL connection (LISTEN and its queries) and one
 * libcurl handle (keep-alive to receivers).  Deliveries go out one at a
 * time, each bounded by webhook_timeout_ms, so a receiver that hangs delays
 * the others by at most that much per attempt.  api_webhooks_stop() wakes
 * the thread through a pipe and joins it; a delivery in flight finishes or
 * times out first.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "log.h"

#define BATCH 32 /* the claim query's LIMIT */
#define LEASE "60 seconds"

typedef struct due {
	int64_t tenant;
	int64_t at_ms; /* wall-clock ms when its next delivery is due */
} due;

struct api_webhooks {
	pthread_t th;
	int wake[2];
	char *dsn;
	uint8_t master[HR_KEY_LEN];
	long base_ms, max_attempts, timeout_ms;
	PGconn *c;
	CURL *curl;
	bool allow_private; /* webhook_allow_private */
	char refused[160];  /* set by open_socket: why a connection was not made */
	due *due;
	size_t ndue, capdue;
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *api_addr_not_public(int family, const void *addr)
{
	if (family == AF_INET6) {
		const uint8_t *b = addr;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const uint8_t zero[16];
		if (!memcmp(b, mapped, 12))
			return api_addr_not_public(AF_INET, b + 12);
		if (!memcmp(b, zero, 15))
			return b[15] == 1 ? "loopback" : b[15] == 0 ? "unspecified" : "reserved";
		if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
			return "link-local";
		if ((b[0] & 0xfe) == 0xfc)
			return "private";
		if (b[0] == 0xff)
			return "multicast";
		if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) /* NAT64 64:ff9b::/96 */
			return api_addr_not_public(AF_INET, b + 12);
		return NULL;
	}
	if (family != AF_INET)
		return "not an IP address";
	uint32_t a = ntohl(((const struct in_addr *)addr)->s_addr);
	uint8_t h = (uint8_t)(a >> 24), s2 = (uint8_t)(a >> 16);
	if (h == 127)
		return "loopback";
	if (h == 10 || (h == 172 && (s2 & 0xf0) == 16) || (h == 192 && s2 == 168))
		return "private";
	if (h == 169 && s2 == 254)
		return "link-local";
	if (h == 100 && (s2 & 0xc0) == 64)
		return "shared (carrier-grade NAT)";
	if (h == 0)
		return "unspecified";
	if (h >= 224)
		return h < 240 ? "multicast" : "reserved";
	if ((h == 192 && s2 == 0 && ((a >> 8) & 0xff) == 0) || (h == 198 && (s2 & 0xfe) == 18))
		return "reserved";
	return NULL;
}

const char *api_url_host_not_public(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL;
	const char *kind = NULL;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host) {
		size_t n = strlen(host);
		uint8_t a[16];
		if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
			host[n - 1] = '\0';
			/* a zone id (fe80::1%eth0) makes it link-local whatever inet_pton says */
			kind = strchr(host + 1, '%') ? "link-local"
			       : inet_pton(AF_INET6, host + 1, a) == 1 ? api_addr_not_public(AF_INET6, a) : NULL;
		} else if (inet_pton(AF_INET, host, a) == 1) {
			kind = api_addr_not_public(AF_INET, a);
		} else if (!strcasecmp(host, "localhost") || (n > 10 && !strcasecmp(host + n - 10, ".localhost"))) {
			kind = "loopback";
		}
	}
	curl_free(host);
	curl_url_cleanup(u);
	return kind;
}

/*
 * libcurl's CURLOPT_OPENSOCKETFUNCTION: every connection a delivery makes
 * comes here with the address it resolved to, so a name that resolves (or
 * re-resolves) to a non-public address is refused as a literal one is.
 */
static curl_socket_t open_socket(void *p, curlsocktype purpose, struct curl_sockaddr *sa)
{
	api_webhooks *w = p;
	(void)purpose;
	const void *a = sa->family == AF_INET    ? (const void *)&((struct sockaddr_in *)&sa->addr)->sin_addr
			: sa->family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&sa->addr)->sin6_addr
						 : NULL;
	const char *kind = w->allow_private || !a ? NULL : api_addr_not_public(sa->family, a);
	if (kind) {
		char text[INET6_ADDRSTRLEN] = "?";
		inet_ntop(sa->family, a, text, sizeof text);
		snprintf(w->refused, sizeof w->refused,
			 "the URL's host is at %s, a %s address: webhooks go to public addresses only "
			 "(webhook_allow_private)", text, kind);
		return CURL_SOCKET_BAD;
	}
	return socket(sa->family, sa->socktype, sa->protocol);
}

/* Earliest wins: a tenant is due at the sooner of what we knew and what we learn. */
static void due_set(api_webhooks *w, int64_t tenant, int64_t at)
{
	for (size_t i = 0; i < w->ndue; i++)
		if (w->due[i].tenant == tenant) {
			if (at < w->due[i].at_ms)
				w->due[i].at_ms = at;
			return;
		}
	if (w->ndue == w->capdue) {
		w->capdue = w->capdue ? 2 * w->capdue : 16;
		w->due = hr_realloc(w->due, w->capdue * sizeof *w->due);
	}
	w->due[w->ndue++] = (due){tenant, at};
}

static void due_drop(api_webhooks *w, size_t i)
{
	w->due[i] = w->due[--w->ndue];
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
	(void)p, (void)u;
	return s * n;
}

static void b64(const uint8_t *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t x = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
		*out++ = t[x >> 18 & 63];
		*out++ = t[x >> 12 & 63];
		*out++ = i + 1 < n ? t[x >> 6 & 63] : '=';
		*out++ = i + 2 < n ? t[x & 63] : '=';
	}
	*out = '\0';
}

/* One attempt.  *http = the status (0 = none); err = why it failed ("" = delivered). */
static void post(api_webhooks *w, const hr_tenant *t, const char *hook, const char *id, const char *url,
		 const char *sealed_hex, const char *body, long *http, char err[256], long *ms)
{
	*http = 0;
	err[0] = '\0';
	size_t hl = strlen(sealed_hex) / 2;
	uint8_t *sealed = hr_malloc(hl + 1);
	for (size_t i = 0; i < hl; i++) {
		unsigned x;
		sscanf(sealed_hex + 2 * i, "%2x", &x);
		sealed[i] = (uint8_t)x;
	}
	char *aad = hr_sprintf("tenant:%lld/webhook:%s", (long long)t->id, hook), *key = NULL;
	size_t klen = 0;
	hr_err e = {0};
	bool ok = hr_open(w->master, aad, sealed, hl, &key, &klen, &e);
	hr_free(aad);
	hr_free(sealed);
	if (!ok) {
		snprintf(err, 256, "the signing secret does not open (master key changed?)");
		return;
	}
	char msgid[64], ts[24];
	snprintf(msgid, sizeof msgid, "msg_%lld_%s", (long long)t->id, id);
	snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
	char *signed_text = hr_sprintf("%s.%s.%s", msgid, ts, body);
	uint8_t mac[32];
	hr_hmac_sha256(key, klen, signed_text, strlen(signed_text), mac);
	memset(key, 0, klen);
	hr_free(key);
	hr_free(signed_text);
	char sig[64], h1[96], h2[64], h3[96];
	b64(mac, 32, sig);
	snprintf(h1, sizeof h1, "webhook-id: %s", msgid);
	snprintf(h2, sizeof h2, "webhook-timestamp: %s", ts);
	snprintf(h3, sizeof h3, "webhook-signature: v1,%s", sig);
	struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
	hs = curl_slist_append(hs, h1);
	hs = curl_slist_append(hs, h2);
	hs = curl_slist_append(hs, h3);
	hs = curl_slist_append(hs, "Expect:");
	CURL *c = w->curl;
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, w->timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_USERAGENT, "herald-webhooks/1");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, w);
	w->refused[0] = '\0';
	int64_t t0 = wall_ms();
	CURLcode rc = curl_easy_perform(c);
	*ms = (long)(wall_ms() - t0);
	curl_slist_free_all(hs);
	if (rc != CURLE_OK) {
		snprintf(err, 256, "%s", w->refused[0] ? w->refused : curl_easy_strerror(rc));
		return;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http);
	if (*http < 200 || *http > 299)
		snprintf(err, 256, "HTTP %ld", *http);
}

/* Send what is due for one tenant; then learn when its next delivery is due. */
static void run_tenant(api_webhooks *w, size_t di)
{
	int64_t tid = w->due[di].tenant;
	hr_tenant t;
	hr_err err = {0};
	PGresult *res = NULL;
	if (!api_tenant_by_id(w->c, tid, &t, &err)) {
		if (err.kind != HR_ERR_NOTFOUND)
			hr_warn("webhooks: tenant=%lld: %s", (long long)tid, err.msg);
		due_drop(w, di); /* suspended or gone: read again when notified */
		return;
	}
	if (!hr_db_tenant_begin(w->c, t.schema, t.role, &err) ||
	    !hr_db_query(w->c,
			 "WITH c AS (SELECT webhook_id, id FROM webhook_deliveries WHERE status = 'pending' AND "
			 "next_at <= now() ORDER BY next_at LIMIT 32 FOR UPDATE SKIP LOCKED) "
			 "UPDATE webhook_deliveries d SET next_at = now() + interval '" LEASE "' FROM c, webhooks w "
			 "WHERE d.webhook_id = c.webhook_id AND d.id = c.id AND w.id = d.webhook_id "
			 "RETURNING d.webhook_id, d.id, d.attempts, d.payload::text, w.url, encode(w.secret_sealed, 'hex')",
			 0, NULL, &res, &err) ||
	    !hr_db_commit(w->c, &err)) {
		hr_db_rollback(w->c);
		PQclear(res);
		hr_warn("webhooks: tenant=%s: %s", t.slug, err.msg);
		w->due[di].at_ms = wall_ms() + 1000; /* the database is in trouble: try again soon */
		return;
	}
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		const char *hook = PQgetvalue(res, i, 0), *id = PQgetvalue(res, i, 1);
		long attempts = atol(PQgetvalue(res, i, 2)) + 1, http = 0, ms = 0;
		char why[256];
		post(w, &t, hook, id, PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), PQgetvalue(res, i, 3), &http, why, &ms);
		const char *status = !why[0] ? "delivered" : attempts >= w->max_attempts ? "failed" : "pending";
		long long delay = 0;
		if (!strcmp(status, "pending")) {
			double d = (double)w->base_ms;
			for (long k = 1; k < attempts && d < 3600000.0; k++)
				d *= 2;
			uint32_t rnd;
			hr_random_bytes(&rnd, sizeof rnd);
			d *= 0.5 + (double)rnd / 4294967296.0; /* jitter: 0.5x .. 1.5x */
			delay = d > 3600000.0 ? 3600000 : (long long)d;
		}
		char httpt[16], delayt[24], mst[16];
		snprintf(httpt, sizeof httpt, "%ld", http);
		snprintf(delayt, sizeof delayt, "%lld", delay);
		snprintf(mst, sizeof mst, "%ld", ms);
		const char *p[] = {hook, id, status, delayt, http ? httpt : NULL, why[0] ? why : NULL, mst};
		if (!hr_db_tenant_begin(w->c, t.schema, t.role, &err) ||
		    !hr_db_query(w->c,
				 "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $3, "
				 "next_at = now() + $4::bigint * interval '1 millisecond', "
				 "done_at = CASE WHEN $3 <> 'pending' THEN now() END, "
				 "log = log || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object('at', now(), "
				 "'http_status', $5::int, 'error', $6::text, 'ms', $7::int))) "
				 "WHERE webhook_id = $1 AND id = $2",
				 7, p, NULL, &err) ||
		    !hr_db_commit(w->c, &err)) {
			hr_db_rollback(w->c);
			hr_warn("webhooks: tenant=%s delivery=%s: %s", t.slug, id, err.msg);
		}
	}
	PQclear(res);
	res = NULL;
	if (n == BATCH) {
		w->due[di].at_ms = wall_ms(); /* more are due now */
		return;
	}
	if (!hr_db_tenant_begin(w->c, t.schema, t.role, &err) ||
	    !hr_db_query(w->c,
			 "SELECT (extract(epoch FROM min(next_at)) * 1000)::bigint FROM webhook_deliveries "
			 "WHERE status = 'pending'",
			 0, NULL, &res, &err)) {
		hr_db_rollback(w->c);
		hr_warn("webhooks: tenant=%s: %s", t.slug, err.msg);
		w->due[di].at_ms = wall_ms() + 1000;
		return;
	}
	hr_db_rollback(w->c);
	if (PQgetisnull(res, 0, 0))
		due_drop(w, di); /* nothing pending: idle until notified */
	else
		w->due[di].at_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
}

static void take_notifies(api_webhooks *w)
{
	PGnotify *n;
	PQconsumeInput(w->c);
	while ((n = PQnotifies(w->c))) {
		long long t = strtoll(n->extra, NULL, 10);
		if (t > 0)
			due_set(w, t, wall_ms());
		PQfreemem(n);
	}
}

/*
 * Deliveries a previous process left pending: each tenant (with the
 * webhooks tables, migration 5) is read once.
 */
static void scan_all(api_webhooks *w)
{
	hr_err err = {0};
	PGresult *res;
	if (hr_db_query(w->c, "SELECT id FROM herald.tenants WHERE status = 'active' AND schema_version >= 5", 0, NULL,
			&res, &err)) {
		for (int i = 0; i < PQntuples(res); i++)
			due_set(w, strtoll(PQgetvalue(res, i, 0), NULL, 10), 0);
		PQclear(res);
	} else {
		hr_warn("webhooks: %s", err.msg);
	}
}

static void *thread_main(void *arg)
{
	api_webhooks *w = arg;
	hr_err err = {0};
	scan_all(w);
	for (;;) {
		take_notifies(w);
		int64_t now = wall_ms(), next = -1;
		size_t pick = (size_t)-1;
		for (size_t i = 0; i < w->ndue; i++)
			if (next < 0 || w->due[i].at_ms < next)
				next = w->due[i].at_ms, pick = i;
		if (next >= 0 && next <= now) {
			run_tenant(w, pick);
			struct pollfd stop = {.fd = w->wake[0], .events = POLLIN};
			if (poll(&stop, 1, 0) > 0)
				break; /* stopping: leave the rest to the next process */
			continue;
		}
		struct pollfd pf[2] = {{.fd = PQsocket(w->c), .events = POLLIN}, {.fd = w->wake[0], .events = POLLIN}};
		int timeout = next < 0 ? -1 : (int)(next - now > 60000 ? 60000 : next - now);
		if (poll(pf, 2, timeout) < 0)
			continue;
		if (pf[1].revents)
			break;
		if (PQstatus(w->c) != CONNECTION_OK) {
			/* Lost the database: reconnect, LISTEN again and re-read every tenant once. */
			PQreset(w->c);
			if (PQstatus(w->c) == CONNECTION_OK && hr_db_exec(w->c, "LISTEN herald_webhooks", &err))
				scan_all(w);
			else
				poll(pf + 1, 1, 1000);
		}
	}
	return NULL;
}

bool api_webhooks_start(const hr_config *cfg, const char *dsn, const uint8_t master[HR_KEY_LEN], api_webhooks **out,
			hr_err *err)
{
	api_webhooks *w = hr_calloc(1, sizeof *w);
	memcpy(w->master, master, HR_KEY_LEN);
	w->base_ms = hr_config_int(cfg, "webhook_retry_base_ms");
	w->max_attempts = hr_config_int(cfg, "webhook_max_attempts");
	w->timeout_ms = hr_config_int(cfg, "webhook_timeout_ms");
	w->allow_private = hr_config_bool(cfg, "webhook_allow_private");
	w->wake[0] = w->wake[1] = -1;
	if (pipe(w->wake) != 0) {
		hr_fail(err, HR_ERR_IO, NULL, "webhooks: pipe failed");
		goto fail;
	}
	if (!hr_db_connect(dsn, &w->c, err) || !hr_db_exec(w->c, "LISTEN herald_webhooks", err))
		goto fail;
	w->curl = curl_easy_init();
	if (!w->curl) {
		hr_fail(err, HR_ERR_IO, NULL, "webhooks: curl_easy_init failed");
		goto fail;
	}
	if (pthread_create(&w->th, NULL, thread_main, w) != 0) {
		hr_fail(err, HR_ERR_IO, NULL, "webhooks: cannot start the delivery thread");
		goto fail;
	}
	*out = w;
	return true;
fail:
	if (w->curl)
		curl_easy_cleanup(w->curl);
	if (w->c)
		PQfinish(w->c);
	if (w->wake[0] >= 0) {
		close(w->wake[0]);
		close(w->wake[1]);
	}
	hr_free(w);
	return false;
}

void api_webhooks_stop(api_webhooks *w)
{
	if (!w)
		return;
	if (write(w->wake[1], "x", 1) != 1)
		hr_warn("webhooks: cannot wake the delivery thread");
	pthread_join(w->th, NULL);
	curl_easy_cleanup(w->curl);
	PQfinish(w->c);
	close(w->wake[0]);
	close(w->wake[1]);
	hr_free(w->due);
	memset(w->master, 0, sizeof w->master);
	hr_free(w);
}
