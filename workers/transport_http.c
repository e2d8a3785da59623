/*
 * transport_http.c -- SMS, messenger, push and webhooks through HTTP providers.
 *
 * Many requests in flight per worker: at most `concurrency` at once (and at
 * most the provider's own `concurrency` for one account), one per session;
 * sessions are created on first need and kept for the life of the process,
 * each with its easy handle and, on the direct path, its connection.
 *
 * Direct path (http:// URLs without user:password, and no *_proxy variable
 * set when the worker started).  libcurl opens the connection
 * (CURLOPT_CONNECT_ONLY: resolve and connect in the shared multi, see
 * curlio.h) and the session takes the socket over, as the SMTP transport
 * does.  Then our own HTTP/1.1 client, driven by the loop's poll (a
 * wk_fdwatch): the whole request in one write, the answer read and parsed
 * as it comes (http1.c: Content-Length, chunked, or until EOF; 1xx
 * skipped); one write and one read per request where libcurl's transfer
 * added two zero-timeout polls (docs/benchmarks.md).  The connection stays
 * open for the next request to the same host:port unless the answer said
 * "Connection: close", ended at EOF, or came with bytes after it; an idle
 * connection is still watched, so a server closing it is noticed.  A
 * request whose reused connection turns out dead before any byte of answer
 * is sent again once on a new connection (libcurl does the same).  A
 * malformed answer fails the send (RETRY, "http: malformed answer: ...")
 * and closes the connection; so does the send's time limit.
 *
 * libcurl path (https://, where the TLS state lives in libcurl; URLs with
 * credentials; a proxy from the environment): a whole transfer in the
 * shared multi on the session's easy handle, configured once per account;
 * keep-alive connections stay in the multi's cache between requests.
 *
 * Request: provider `method` (default POST) to provider `url` -- or, for a
 * webhook account without url, to the job's address --, the provider's
 * `headers`, `Content-Type: application/json` unless the provider sets one,
 * and always `Idempotency-Key: <message_id>` so that a provider can drop the
 * duplicate of a send repeated after a crash.  Body: the provider's `body`
 * template (render.c) or the default JSON object
 *   {"to":..,"message_id":"..","tenant":..,"text":..[,"title":..]}
 * (text is the rendered text, or body for push and webhook).  The direct
 * path sends what libcurl sent: Host, Accept (any type), the headers above
 * (a provider's Host, Accept or Content-Type replaces ours; a header with
 * an empty value is not sent), Content-Length and the body.
 *
 * Answer: classify.c maps the status; a SENT answer's JSON `id` (string or
 * number) is the provider id; a 429's Retry-After (seconds or HTTP date) is
 * the retry hint.  The response body is kept up to 16 KiB.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "alloc.h"
#include "classify.h"
#include "http1.h"
#include "log.h"
#include "sockio.h"
#include "transport.h"

#define MAX_RESPONSE (16 * 1024)

typedef struct http_t http_t;

/* Direct path: what the session's connection is doing. */
typedef enum {
	C_NONE,       /* no connection */
	C_CONNECTING, /* libcurl is opening one (CONNECT_ONLY) */
	C_IDLE,       /* open, no request */
	C_BUSY,       /* a request written (or being written), its answer awaited */
} cstate;

/* Where a direct request goes, from its URL. */
typedef struct target {
	bool direct;              /* our client can send it (else libcurl's transfer) */
	char origin[300];         /* "host:port": connections are shared per origin */
	char host[300];           /* the Host header */
	char path[2048];          /* the request target: path[?query] */
} target;

typedef struct sess {
	wk_curlreq req;               /* first: curlio hands it back to done() */
	http_t *t;
	CURL *easy;                   /* reused for every request of this session */
	wk_send *s;                   /* the request running, NULL when idle */
	wk_buf body;                  /* request body */
	wk_buf resp;                  /* libcurl path: response body (bounded) */
	char retry_after[64];         /* libcurl path: Retry-After header, "" = none */
	uint64_t configured;          /* serial of the provider the handle is set up for, 0 = none */
	char idem[64];                /* "Idempotency-Key: <message id>" */
	struct curl_slist *hnodes;    /* this request's header list, nodes on our memory */
	size_t nhnodes;
	struct sess *next_idle;
	/* The direct path. */
	wk_fdwatch w;                 /* the connection (w.fd, -1 = none) in the loop's poll */
	cstate st;
	char origin[300];             /* where the connection goes */
	char url[2048];               /* the URL libcurl connects to (CONNECT_ONLY) */
	wk_buf out;                   /* the request: head and body */
	size_t opos;                  /* of out, written */
	wk_buf in;                    /* bytes read, not yet parsed */
	wk_h1 h1;                     /* the answer */
	bool reused;                  /* the request runs on a connection that carried an earlier one */
	bool resent;                  /* the request was already moved to a new connection once */
	bool answered;                /* a byte of answer arrived */
	long long deadline_ms;        /* the request's time limit (monotonic ms) */
} sess;

struct http_t {
	wk_transport base;
	wk_curlio *io;
	wk_transport_opts o;
	sess **all;
	uint32_t nall;
	sess *idle;
	target tg;                    /* the last provider URL parsed ... */
	uint64_t tg_serial;           /* ... for this provider (0 = none) */
};

static uint32_t http_room(wk_transport *tr, const wk_provider *p)
{
	http_t *t = (http_t *)tr;
	uint32_t free_slots = t->o.concurrency > tr->inflight ? t->o.concurrency - tr->inflight : 0;
	return wk_room_for(free_slots, p, t->o.concurrency);
}

/* ---- the answer, whichever path read it ---- */

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
static void reason_from(const wk_buf *resp, long status, char *out, size_t outlen)
{
	char snippet[160];
	size_t n = resp->len < sizeof snippet - 1 ? resp->len : sizeof snippet - 1;
	for (size_t i = 0; i < n; i++)
		snippet[i] = (resp->p[i] == '\n' || resp->p[i] == '\r') ? ' ' : resp->p[i];
	snippet[n] = '\0';
	snprintf(out, outlen, "http %ld%s%s", status, n ? ": " : "", snippet);
}

/*
 * The send is over: its result from rc (a transport error, with `detail`
 * when there is more to say than libcurl's text), the status, the answer's
 * body and Retry-After; then the session is idle again.
 */
static void conclude(sess *x, CURLcode rc, long status, const wk_buf *resp, const char *retry_after,
		     const char *detail)
{
	wk_send *s = x->s;
	s->status = wk_classify_http(rc, status);
	if (rc != CURLE_OK) {
		snprintf(s->reason, sizeof s->reason, "http: %s", detail ? detail : curl_easy_strerror(rc));
	} else if (s->status == HR_RES_SENT) {
		json_t *o = resp->len ? json_loadb(resp->p, resp->len, 0, NULL) : NULL;
		json_t *id = json_is_object(o) ? json_object_get(o, "id") : NULL;
		if (json_is_string(id))
			snprintf(s->provider_id, sizeof s->provider_id, "%s", json_string_value(id));
		else if (json_is_integer(id))
			snprintf(s->provider_id, sizeof s->provider_id, "%lld",
				 (long long)json_integer_value(id));
		json_decref(o);
	} else {
		reason_from(resp, status, s->reason, sizeof s->reason);
	}
	if (s->status == HR_RES_THROTTLED || s->status == HR_RES_RETRY)
		s->retry_after_ms = retry_after_ms(retry_after);
	give_back(x->t, x);
	wk_transport_finish(&x->t->base, s);
}

/* ---- the direct path ---- */

/* Parse url for the direct path; false (t->direct unset) leaves it to libcurl. */
static bool parse_target(const char *url, target *tg)
{
	tg->direct = false;
	if (strncasecmp(url, "http://", 7) != 0)
		return false;
	CURLU *u = curl_url();
	if (!u)
		hr_panic("curl_url: out of memory");
	char *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL, *pass = NULL;
	bool ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		  curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
		  curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK;
	if (ok) {
		/* Credentials in the URL mean Basic auth: libcurl's job. */
		ok = curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_NO_USER &&
		     curl_url_get(u, CURLUPART_PASSWORD, &pass, 0) == CURLUE_NO_PASSWORD;
	}
	if (ok) {
		long pn = 80;
		if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
			pn = strtol(port, NULL, 10);
		bool q = curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK && query;
		/* libcurl names the port in Host only when it is not the scheme's default. */
		ok = (size_t)snprintf(tg->origin, sizeof tg->origin, "%s:%ld", host, pn) < sizeof tg->origin &&
		     (size_t)snprintf(tg->host, sizeof tg->host, "%s%s%.0ld", host, pn != 80 ? ":" : "",
				      pn != 80 ? pn : 0L) < sizeof tg->host &&
		     (size_t)snprintf(tg->path, sizeof tg->path, "%s%s%s", path, q ? "?" : "", q ? query : "") <
			     sizeof tg->path &&
		     !strpbrk(tg->path, " \r\n") && !strpbrk(tg->host, " \r\n");
	}
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_free(user);
	curl_free(pass);
	curl_url_cleanup(u);
	tg->direct = ok;
	return ok;
}

static void conn_close(sess *x)
{
	if (x->w.fd >= 0) {
		wk_curlio_unwatch(x->t->io, &x->w);
		close(x->w.fd);
	}
	x->w.fd = -1;
	x->w.events = 0;
	x->w.deadline_ms = 0;
	x->st = C_NONE;
	x->opos = 0;
	wk_buf_reset(&x->in);
}

static void start_connect(sess *x);

/* The connection failed (I/O error, EOF, a malformed answer, the time limit). */
static void conn_failed(sess *x, CURLcode rc, const char *detail)
{
	bool retry = x->s && x->st == C_BUSY && x->reused && !x->resent && !x->answered &&
		     rc != CURLE_OPERATION_TIMEDOUT;
	conn_close(x);
	if (retry) {
		/* The server had dropped the idle connection: nothing was answered, send again. */
		x->resent = true;
		start_connect(x);
		return;
	}
	if (x->s) {
		static const wk_buf none = {0};
		conclude(x, rc, 0, &none, "", detail);
	}
}

static void set_events(sess *x)
{
	x->w.events = (short)(ZMQ_POLLIN | (x->opos < x->out.len ? ZMQ_POLLOUT : 0));
}

/* Write what is pending; false when the connection failed (and was handled). */
static bool flush_out(sess *x)
{
	if (wk_sock_write(x->w.fd, &x->out, &x->opos) != WK_IO_OK) {
		conn_failed(x, CURLE_SEND_ERROR, NULL);
		return false;
	}
	set_events(x);
	return true;
}

/* An open connection: write the request, await the answer. */
static void start_request(sess *x)
{
	x->st = C_BUSY;
	x->opos = 0;
	x->answered = false;
	wk_buf_reset(&x->in);
	wk_h1_reset(&x->h1, strcmp(x->s->prov->method, "HEAD") == 0);
	x->w.deadline_ms = x->deadline_ms;
	wk_curlio_watch(x->t->io, &x->w);
	flush_out(x);
}

/* The answer is complete. */
static void answer_done(sess *x)
{
	/* Bytes after the answer, or a request not fully written (the server
	 * answered early): the connection is in no state for another request. */
	bool keep = x->h1.keep_alive && x->in.len == 0 && x->opos == x->out.len;
	if (keep) {
		x->st = C_IDLE;
		x->w.events = ZMQ_POLLIN;
		x->w.deadline_ms = 0;
	} else {
		conn_close(x);
	}
	conclude(x, CURLE_OK, x->h1.status, &x->h1.body, x->h1.retry_after, NULL);
}

static void on_ready(wk_fdwatch *w, short revents)
{
	sess *x = (sess *)((char *)w - offsetof(sess, w));
	if (!revents) {
		conn_failed(x, CURLE_OPERATION_TIMEDOUT, NULL);
		return;
	}
	if (x->st == C_IDLE) {
		/* The server closed the idle connection (or spoke out of turn): it is over. */
		conn_close(x);
		return;
	}
	bool writable = revents & ZMQ_POLLOUT, readable = revents & (ZMQ_POLLIN | ZMQ_POLLERR);
	if (writable && !flush_out(x))
		return;
	bool got = false;
	wk_io rd = readable ? wk_sock_read(x->w.fd, &x->in, &got) : WK_IO_OK;
	if (rd == WK_IO_OK && !got)
		return; /* nothing new */
	x->answered |= got;
	if (rd == WK_IO_ERR) {
		conn_failed(x, CURLE_RECV_ERROR, NULL);
		return;
	}
	bool eof = rd == WK_IO_EOF;
	size_t used = wk_h1_feed(&x->h1, x->in.p, x->in.len);
	if (used) {
		memmove(x->in.p, x->in.p + used, x->in.len - used);
		x->in.len -= used;
	}
	if (x->h1.state == H1_BAD) {
		char why[160];
		snprintf(why, sizeof why, "malformed answer: %s", x->h1.error);
		conn_failed(x, CURLE_WEIRD_SERVER_REPLY, why);
		return;
	}
	if (x->h1.state == H1_DONE || (eof && wk_h1_eof(&x->h1))) {
		answer_done(x);
		return;
	}
	if (eof)
		conn_failed(x, CURLE_RECV_ERROR,
			    x->answered ? "the server closed the connection before the answer was complete"
					: NULL);
}

/* libcurl opens the connection (resolve, connect); then we take the socket. */
static void start_connect(sess *x)
{
	http_t *t = x->t;
	CURL *e = x->easy;
	long left = (long)(x->deadline_ms - wk_curlio_now_ms());
	if (left < 1)
		left = 1;
	x->st = C_CONNECTING;
	x->configured = 0; /* the libcurl path must set the handle up again */
	x->req.keep_socket = true;
	curl_easy_reset(e);
	wk_curlio_easy_defaults(t->io, e);
	curl_easy_setopt(e, CURLOPT_URL, x->url);
	curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left < 10000 ? left : 10000L);
	wk_curlio_start(t->io, e, &x->req);
}

static void connect_done(sess *x, CURLcode rc)
{
	int fd = wk_curlio_take_socket(&x->req, &rc);
	if (fd < 0) {
		x->st = C_NONE;
		static const wk_buf none = {0};
		conclude(x, rc, 0, &none, "", NULL);
		return;
	}
	x->w.fd = fd;
	x->reused = false;
	start_request(x);
}

/* A header of the provider's list, "Name: value", is name n (n ends in ':')? */
static bool header_is(const char *h, const char *n)
{
	return strncasecmp(h, n, strlen(n)) == 0;
}

/* The request, head and body, into x->out. */
static void build_request(sess *x, const wk_provider *p, const target *tg)
{
	wk_buf *o = &x->out;
	wk_buf_reset(o);
	bool own_host = false, own_accept = false, own_ctype = false;
	for (const struct curl_slist *h = p->headers; h; h = h->next) {
		own_host |= header_is(h->data, "host:");
		own_accept |= header_is(h->data, "accept:");
		own_ctype |= header_is(h->data, "content-type:");
	}
	wk_buf_grow(o, 256 + x->body.len);
	wk_buf_printf(o, "%s %s HTTP/1.1\r\n", p->method, tg->path);
	if (!own_host)
		wk_buf_printf(o, "Host: %s\r\n", tg->host);
	if (!own_accept)
		wk_buf_add(o, "Accept: */*\r\n", 13);
	for (const struct curl_slist *h = p->headers; h; h = h->next) {
		/* provider.c writes "Name: value"; an empty value is not sent (as libcurl does). */
		const char *colon = strchr(h->data, ':');
		if (!colon || !colon[1 + strspn(colon + 1, " \t")] || header_is(h->data, "content-length:") ||
		    header_is(h->data, "transfer-encoding:"))
			continue;
		wk_buf_str(o, h->data);
		wk_buf_add(o, "\r\n", 2);
	}
	if (!own_ctype)
		wk_buf_add(o, "Content-Type: application/json\r\n", 32);
	wk_buf_str(o, x->idem);
	wk_buf_printf(o, "\r\nContent-Length: %zu\r\n\r\n", x->body.len);
	wk_buf_add(o, x->body.p ? x->body.p : "", x->body.len);
}

static void direct_submit(sess *x, const wk_provider *p, const target *tg, const char *url)
{
	build_request(x, p, tg);
	x->resent = false;
	long timeout = p->timeout_ms ? p->timeout_ms : x->t->o.http_timeout_ms;
	x->deadline_ms = wk_curlio_now_ms() + timeout;
	if (x->st == C_IDLE && strcmp(x->origin, tg->origin) == 0) {
		x->reused = true;
		start_request(x);
		return;
	}
	if (x->st != C_NONE)
		conn_close(x);
	snprintf(x->origin, sizeof x->origin, "%s", tg->origin);
	snprintf(x->url, sizeof x->url, "%s", url);
	start_connect(x);
}

/* ---- the libcurl path ---- */

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

static void http_done(wk_curlreq *req, CURLcode rc)
{
	sess *x = (sess *)req;
	if (x->st == C_CONNECTING) {
		connect_done(x, rc);
		return;
	}
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	conclude(x, rc, status, &x->resp, x->retry_after, NULL);
}

/*
 * An idle session: for the direct path (origin set) one holding a
 * connection to that origin, else one without a connection, else any (its
 * connection is closed); a new one when none is idle.
 */
static sess *take_session(http_t *t, const char *origin)
{
	sess **match = NULL, **bare = NULL;
	for (sess **q = &t->idle; *q && !match; q = &(*q)->next_idle) {
		if (origin && (*q)->st == C_IDLE && strcmp((*q)->origin, origin) == 0)
			match = q;
		else if (!bare && (*q)->st == C_NONE)
			bare = q;
	}
	sess **pp = match ? match : bare ? bare : t->idle ? &t->idle : NULL;
	if (pp) {
		sess *x = *pp;
		*pp = x->next_idle;
		if (!match && x->st != C_NONE)
			conn_close(x);
		return x;
	}
	sess *x = hr_calloc(1, sizeof *x);
	x->t = t;
	x->req.done = http_done;
	x->req.sock = -1;
	x->w.fd = -1;
	x->w.ready = on_ready;
	x->h1.body_max = MAX_RESPONSE;
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

static void curl_submit(sess *x, const wk_provider *p, const char *url)
{
	http_t *t = x->t;
	struct curl_slist *headers = build_headers(x, p);
	wk_buf_reset(&x->resp);
	x->retry_after[0] = '\0';
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
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body.p ? x->body.p : "");
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body.len);
	wk_curlio_start(t->io, e, &x->req);
}

/* ---- submit ---- */

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
	const target *tg = &t->tg;
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
		t->tg_serial = 0;
		parse_target(url, &t->tg);
	} else if (t->tg_serial != p->serial) {
		parse_target(url, &t->tg);
		t->tg_serial = p->serial;
	}
	bool direct = tg->direct && !wk_curlio_proxied(t->io);
	sess *x = take_session(t, direct ? tg->origin : NULL);
	wk_buf_reset(&x->body);
	if (s->msg.set[WK_F_REQUEST]) {
		wk_buf_str(&x->body, wk_msg_get(&s->msg, WK_F_REQUEST));
	} else if (!default_body(s, &x->body)) {
		give_back(t, x);
		fail_now(t, s, "body: the rendered message is not valid UTF-8");
		return;
	}
	snprintf(x->idem, sizeof x->idem, "Idempotency-Key: %llu", (unsigned long long)s->j->message_id);
	x->s = s;
	if (direct)
		direct_submit(x, p, tg, url);
	else
		curl_submit(x, p, url);
}

static void http_free(wk_transport *tr)
{
	http_t *t = (http_t *)tr;
	for (uint32_t i = 0; i < t->nall; i++) {
		sess *x = t->all[i];
		/* Cleanup takes the handle out of the multi if a transfer still runs. */
		curl_easy_cleanup(x->easy);
		if (x->req.sock >= 0)
			close(x->req.sock);
		conn_close(x);
		if (x->s) {
			/* Abandoned at exit (drain timeout): back to the loop, which owns sends. */
			x->s->status = HR_RES_RETRY;
			snprintf(x->s->reason, sizeof x->s->reason, "worker exiting");
			wk_transport_finish(&t->base, x->s);
		}
		hr_free(x->hnodes);
		wk_buf_free(&x->body);
		wk_buf_free(&x->resp);
		wk_buf_free(&x->out);
		wk_buf_free(&x->in);
		wk_buf_free(&x->h1.body);
		hr_free(x);
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
