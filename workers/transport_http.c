/*
 * transport_http.c -- SMS, messenger, push and webhooks through HTTP providers.
 *
 * Many requests in flight per worker through libcurl's multi interface
 * (curlio.h): at most `concurrency` at once (and at most the provider's own
 * `concurrency` for one account), each on a reused easy handle; keep-alive
 * connections stay in the multi's cache between requests.
 *
 * Request: provider `method` (default POST) to provider `url` -- or, for a
 * webhook account without url, to the job's address --, the provider's
 * `headers`, `Content-Type: application/json` unless the provider sets one,
 * and always `Idempotency-Key: <message_id>` so that a provider can drop the
 * duplicate of a send repeated after a crash.  Body: the provider's `body`
 * template (render.c) or the default JSON object
 *   {"to":..,"message_id":"..","tenant":..,"text":..[,"title":..]}
 * (text is the rendered text, or body for push and webhook).
 *
 * Answer: classify.c maps the status; a SENT answer's JSON `id` (string or
 * number) is the provider id; a 429's Retry-After (seconds or HTTP date) is
 * the retry hint.  The response body is kept up to 16 KiB.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "alloc.h"
#include "classify.h"
#include "log.h"
#include "transport.h"

#define MAX_RESPONSE (16 * 1024)

typedef struct http_t http_t;

typedef struct sess {
	wk_curlreq req;               /* first: curlio hands it back to done() */
	http_t *t;
	CURL *easy;                   /* reused for every request of this session */
	wk_send *s;                   /* the request running, NULL when idle */
	wk_buf body;                  /* request body */
	wk_buf resp;                  /* response body (bounded) */
	char retry_after[64];         /* Retry-After header, "" = none */
	uint64_t configured;          /* serial of the provider the handle is set up for, 0 = none */
	char idem[64];                /* "Idempotency-Key: <message id>" */
	struct curl_slist *hnodes;    /* this request's header list, nodes on our memory */
	size_t nhnodes;
	struct sess *next_idle;
} sess;

struct http_t {
	wk_transport base;
	wk_curlio *io;
	wk_transport_opts o;
	sess **all;
	uint32_t nall;
	sess *idle;
};

static uint32_t http_room(wk_transport *tr, const wk_provider *p)
{
	http_t *t = (http_t *)tr;
	uint32_t free_slots = t->o.concurrency > tr->inflight ? t->o.concurrency - tr->inflight : 0;
	return wk_room_for(free_slots, p, t->o.concurrency);
}

static size_t on_body(char *buf, size_t size, size_t nitems, void *ud)
{
	sess *x = ud;
	size_t n = size * nitems;
	if (x->resp.len < MAX_RESPONSE)
		wk_buf_add(&x->resp, buf, n < MAX_RESPONSE - x->resp.len ? n : MAX_RESPONSE - x->resp.len);
	return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
	sess *x = ud;
	size_t n = size * nitems;
	static const char name[] = "retry-after:";
	if (n > sizeof name - 1 && strncasecmp(buf, name, sizeof name - 1) == 0) {
		const char *v = buf + sizeof name - 1;
		size_t k = n - (sizeof name - 1);
		while (k && (*v == ' ' || *v == '\t'))
			v++, k--;
		while (k && (v[k - 1] == '\r' || v[k - 1] == '\n' || v[k - 1] == ' '))
			k--;
		if (k >= sizeof x->retry_after)
			k = sizeof x->retry_after - 1;
		memcpy(x->retry_after, v, k);
		x->retry_after[k] = '\0';
	}
	return n;
}

/* Retry-After: delta-seconds or an HTTP date (RFC 9110 10.2.3), as ms from now; 0 = none. */
static uint32_t retry_after_ms(const char *v)
{
	if (!*v)
		return 0;
	if (strspn(v, "0123456789") == strlen(v)) {
		long long sec = strtoll(v, NULL, 10);
		return sec > 86400 ? 86400000u : (uint32_t)(sec * 1000);
	}
	time_t when = curl_getdate(v, NULL);
	time_t now = time(NULL);
	if (when <= now)
		return 0;
	return when - now > 86400 ? 86400000u : (uint32_t)(when - now) * 1000u;
}

static void give_back(http_t *t, sess *x)
{
	x->s = NULL;
	x->next_idle = t->idle;
	t->idle = x;
}

/* One line of the response for a failure reason. */
static void reason_from(sess *x, long status, char *out, size_t outlen)
{
	char snippet[160];
	size_t n = x->resp.len < sizeof snippet - 1 ? x->resp.len : sizeof snippet - 1;
	for (size_t i = 0; i < n; i++)
		snippet[i] = (x->resp.p[i] == '\n' || x->resp.p[i] == '\r') ? ' ' : x->resp.p[i];
	snippet[n] = '\0';
	snprintf(out, outlen, "http %ld%s%s", status, n ? ": " : "", snippet);
}

static void http_done(wk_curlreq *req, CURLcode rc)
{
	sess *x = (sess *)req;
	wk_send *s = x->s;
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	s->status = wk_classify_http(rc, status);
	if (rc != CURLE_OK) {
		snprintf(s->reason, sizeof s->reason, "http: %s", curl_easy_strerror(rc));
	} else if (s->status == HR_RES_SENT) {
		json_t *o = x->resp.len ? json_loadb(x->resp.p, x->resp.len, 0, NULL) : NULL;
		json_t *id = json_is_object(o) ? json_object_get(o, "id") : NULL;
		if (json_is_string(id))
			snprintf(s->provider_id, sizeof s->provider_id, "%s", json_string_value(id));
		else if (json_is_integer(id))
			snprintf(s->provider_id, sizeof s->provider_id, "%lld",
				 (long long)json_integer_value(id));
		json_decref(o);
	} else {
		reason_from(x, status, s->reason, sizeof s->reason);
	}
	if (s->status == HR_RES_THROTTLED || s->status == HR_RES_RETRY)
		s->retry_after_ms = retry_after_ms(x->retry_after);
	give_back(x->t, x);
	wk_transport_finish(&x->t->base, s);
}

static sess *take_session(http_t *t)
{
	sess *x = t->idle;
	if (x) {
		t->idle = x->next_idle;
		return x;
	}
	x = hr_calloc(1, sizeof *x);
	x->t = t;
	x->req.done = http_done;
	x->easy = curl_easy_init();
	if (!x->easy)
		hr_fatal("curl_easy_init failed");
	t->all = hr_realloc(t->all, (t->nall + 1) * sizeof *t->all);
	t->all[t->nall++] = x;
	return x;
}

/*
 * The header list: the provider's headers, Content-Type unless the provider
 * sets one, Idempotency-Key, "Expect:" (no 100-continue round trip).  Nodes
 * live in the session and point at the provider's strings (held by the
 * lease) and the session's idem buffer: no allocation per request.
 */
static struct curl_slist *build_headers(sess *x, const wk_provider *p)
{
	size_t n = 3;
	bool has_ctype = false;
	for (const struct curl_slist *h = p->headers; h; h = h->next, n++)
		if (strncasecmp(h->data, "content-type:", 13) == 0)
			has_ctype = true;
	if (n > x->nhnodes) {
		x->hnodes = hr_realloc(x->hnodes, n * sizeof *x->hnodes);
		x->nhnodes = n;
	}
	size_t k = 0;
	for (const struct curl_slist *h = p->headers; h; h = h->next)
		x->hnodes[k++].data = h->data;
	if (!has_ctype)
		x->hnodes[k++].data = (char *)"Content-Type: application/json";
	x->hnodes[k++].data = x->idem;
	x->hnodes[k++].data = (char *)"Expect:";
	for (size_t i = 0; i < k; i++)
		x->hnodes[i].next = i + 1 < k ? &x->hnodes[i + 1] : NULL;
	return x->hnodes;
}

/* The default body: {"to","message_id","tenant","text"[,"title"]}, JSON-escaped by jansson. */
static bool default_body(const wk_send *s, wk_buf *out)
{
	const wk_message *m = &s->msg;
	char id[24];
	snprintf(id, sizeof id, "%llu", (unsigned long long)s->j->message_id);
	const char *text = m->set[WK_F_TEXT] ? wk_msg_get(m, WK_F_TEXT) : wk_msg_get(m, WK_F_BODY);
	json_t *o = json_object();
	json_object_set_new(o, "to", json_stringn(s->j->address.p, s->j->address.len));
	json_object_set_new(o, "message_id", json_string(id));
	json_object_set_new(o, "tenant", json_stringn(s->batch->tenant.p, s->batch->tenant.len));
	json_object_set_new(o, "text", json_string(text));
	if (m->set[WK_F_TITLE])
		json_object_set_new(o, "title", json_string(wk_msg_get(m, WK_F_TITLE)));
	/* json_*string returns NULL on invalid UTF-8, and then the key is missing. */
	bool ok = json_object_size(o) == (m->set[WK_F_TITLE] ? 5u : 4u);
	char *text_out = ok ? json_dumps(o, JSON_COMPACT) : NULL;
	if (text_out)
		wk_buf_str(out, text_out);
	free(text_out); /* jansson's allocation */
	json_decref(o);
	return text_out != NULL;
}

static void fail_now(http_t *t, wk_send *s, const char *why)
{
	s->status = HR_RES_PERMANENT;
	snprintf(s->reason, sizeof s->reason, "%s", why);
	wk_transport_finish(&t->base, s);
}

static void http_submit(wk_transport *tr, wk_send *s)
{
	http_t *t = (http_t *)tr;
	const wk_provider *p = s->prov;
	tr->inflight++;
	s->prov->inflight++;

	char urlbuf[2048];
	const char *url = p->url;
	if (!url) {
		/* A webhook account without url: the job's address is the URL. */
		size_t n = s->j->address.len;
		if (t->o.channel != HR_CH_WEBHOOK || n >= sizeof urlbuf ||
		    (strncmp(s->j->address.p, "http://", 7) && strncmp(s->j->address.p, "https://", 8)) ||
		    memchr(s->j->address.p, '\0', n)) {
			fail_now(t, s, t->o.channel == HR_CH_WEBHOOK ? "address: not an http(s) URL"
								   : "provider.url: missing");
			return;
		}
		memcpy(urlbuf, s->j->address.p, n);
		urlbuf[n] = '\0';
		url = urlbuf;
	}
	sess *x = take_session(t);
	wk_buf_reset(&x->body);
	wk_buf_reset(&x->resp);
	x->retry_after[0] = '\0';
	if (s->msg.set[WK_F_REQUEST]) {
		wk_buf_str(&x->body, wk_msg_get(&s->msg, WK_F_REQUEST));
	} else if (!default_body(s, &x->body)) {
		give_back(t, x);
		fail_now(t, s, "body: the rendered message is not valid UTF-8");
		return;
	}
	snprintf(x->idem, sizeof x->idem, "Idempotency-Key: %llu", (unsigned long long)s->j->message_id);
	struct curl_slist *headers = build_headers(x, p);

	x->s = s;
	CURL *e = x->easy;
	if (x->configured != p->serial) {
		/* A handle set up for another account must not keep its options. */
		curl_easy_reset(e);
		long timeout = p->timeout_ms ? p->timeout_ms : t->o.http_timeout_ms;
		wk_curlio_easy_defaults(t->io, e);
		if (strcmp(p->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, p->method);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout < 10000 ? timeout : 10000L);
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
		if (p->url)
			curl_easy_setopt(e, CURLOPT_URL, p->url);
		x->configured = p->serial;
	}
	/* Per request: what changes from one message to the next. */
	if (!p->url)
		curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body.p);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body.len);
	wk_curlio_start(t->io, e, &x->req);
}

static void http_free(wk_transport *tr)
{
	http_t *t = (http_t *)tr;
	for (uint32_t i = 0; i < t->nall; i++) {
		/* Cleanup takes the handle out of the multi if a transfer still runs. */
		curl_easy_cleanup(t->all[i]->easy);
		if (t->all[i]->s) {
			/* Abandoned at exit (drain timeout): back to the loop, which owns sends. */
			t->all[i]->s->status = HR_RES_RETRY;
			snprintf(t->all[i]->s->reason, sizeof t->all[i]->s->reason, "worker exiting");
			wk_transport_finish(&t->base, t->all[i]->s);
		}
		hr_free(t->all[i]->hnodes);
		wk_buf_free(&t->all[i]->body);
		wk_buf_free(&t->all[i]->resp);
		hr_free(t->all[i]);
	}
	hr_free(t->all);
	hr_free(t);
}

static const wk_transport_ops http_ops = {http_room, http_submit, http_free};

wk_transport *wk_http_new(wk_curlio *io, wk_sendq *done, const wk_transport_opts *o)
{
	http_t *t = hr_calloc(1, sizeof *t);
	t->base.ops = &http_ops;
	t->base.done = done;
	t->io = io;
	t->o = *o;
	return &t->base;
}
