/*
 * server.c -- see server.h.
 *
 * libmicrohttpd calls the access handler several times per request: once
 * when the headers are in (we mark the request), once per body chunk (we
 * append to the connection's buffer), once when the body is complete (we
 * answer, or hold the answer), and -- for a held request -- once more after
 * the timer resumed the connection (we send the stored answer).
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "jsonmem.h"
#include "log.h"
#include "timer.h"

#define MAX_NAME 128   /* account, tenant, message_id */
#define MAX_TO 256     /* recipient: phone, address, device token, URL */
#define STOP_WAIT_MS 3000

struct ps_server {
	ps_server_opts o;
	struct MHD_Daemon *mhd;
	ps_timer *timer;
	int listen_fd;
	_Atomic long held;      /* connections suspended and not yet re-entered */
	_Atomic unsigned next_tidx;
	unsigned long long boot; /* start time, prefixes provider ids */
};

/* Per TCP connection, reused by its keep-alive requests. */
struct conn {
	char *body;             /* request body, cap bytes */
	size_t len, cap;
	bool too_big;           /* body exceeded max_body; the rest is discarded */
	bool held;              /* suspended; the answer below is pending */
	bool close_on_resume;   /* a "timeout": close without answering */
	unsigned status;        /* pending answer */
	unsigned retry_after;   /* pending Retry-After, 0 = none */
	size_t resp_len;
	char resp[256];
};

static _Thread_local unsigned tl_tidx;         /* 1-based, 0 = unassigned */
static _Thread_local unsigned long long tl_seq; /* provider ids issued here */

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	/* MHD reports client misbehaviour (resets, aborted uploads) here; that
	 * is normal for a load target, so it is information, not a warning. */
	char line[512];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	hr_info("mhd: %s", line);
}

static void on_conn(void *cls, struct MHD_Connection *c, void **sock_ctx,
		    enum MHD_ConnectionNotificationCode toe)
{
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		struct conn *cc = hr_calloc(1, sizeof *cc);
		cc->cap = 4096;
		cc->body = hr_malloc(cc->cap);
		*sock_ctx = cc;
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *sock_ctx) {
		struct conn *cc = *sock_ctx;
		hr_free(cc->body);
		hr_free(cc);
		*sock_ctx = NULL;
	}
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *body,
			      size_t len, unsigned retry_after)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (retry_after) {
		char ra[16];
		snprintf(ra, sizeof ra, "%u", retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result answer_json(struct MHD_Connection *c, unsigned status, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return MHD_NO;
	enum MHD_Result ok = answer(c, status, s, strlen(s), 0);
	ps_json_free(s);
	return ok;
}

static enum MHD_Result answer_error(struct MHD_Connection *c, unsigned status, const char *code,
				    const char *detail)
{
	return answer_json(c, status, json_pack("{s:s, s:s}", "error", code, "detail", detail));
}

/* A pending answer for the held path, formatted into the connection. */
static void store(struct conn *cc, unsigned status, unsigned retry_after, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void store(struct conn *cc, unsigned status, unsigned retry_after, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cc->resp, sizeof cc->resp, fmt, ap);
	va_end(ap);
	cc->resp_len = n < 0 ? 0 : (size_t)n < sizeof cc->resp ? (size_t)n : sizeof cc->resp - 1;
	cc->status = status;
	cc->retry_after = retry_after;
}

static enum MHD_Result hold(ps_server *s, struct MHD_Connection *c, struct conn *cc,
			    uint32_t ms, bool close_on_resume)
{
	cc->held = true;
	cc->close_on_resume = close_on_resume;
	atomic_fetch_add(&s->held, 1);
	MHD_suspend_connection(c);
	if (!ps_timer_add(s->timer, c, ps_mono_ms() + ms))
		MHD_resume_connection(c); /* shutting down: answer at once */
	return MHD_YES;
}

static bool bearer_ok(struct MHD_Connection *c, const char *token)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	return h && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, token) == 0;
}

/* A name-like field: 1..max bytes, no whitespace or control characters
 * (they would break the receipts line format). */
static bool clean(const char *v, size_t len, size_t max)
{
	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] <= 0x20 || v[i] == 0x7f)
			return false;
	return true;
}

static bool get_field(json_t *root, const char *key, size_t max, const char **out,
		      char *err, size_t errlen)
{
	json_t *v = json_object_get(root, key);
	if (!v) {
		snprintf(err, errlen, "%s: missing", key);
		goto fail;
	}
	if (!json_is_string(v) || !clean(json_string_value(v), json_string_length(v), max) ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		snprintf(err, errlen, "%s: want a string of 1..%zu bytes without spaces", key, max);
		goto fail;
	}
	*out = json_string_value(v);
	return true;
fail:
	return false;
}

static bool channel_ok(const char *ch, size_t n)
{
	static const char *const names[] = {"sms", "messenger", "push", "webhook"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == n && memcmp(names[i], ch, n) == 0)
			return true;
	return false;
}

/* POST /v1/send/{channel}/{account}; path points after "/v1/send/". */
static enum MHD_Result do_send(ps_server *s, struct MHD_Connection *c, struct conn *cc,
			       const char *path)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts); /* the request is complete now */
	uint64_t now_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;

	const char *slash = strchr(path, '/');
	if (!slash || !channel_ok(path, (size_t)(slash - path)) ||
	    !clean(slash + 1, strlen(slash + 1), MAX_NAME) || strchr(slash + 1, '/'))
		return answer_error(c, MHD_HTTP_NOT_FOUND, "not_found",
				    "want /v1/send/{sms|messenger|push|webhook}/{account}");
	char channel[16];
	snprintf(channel, sizeof channel, "%.*s", (int)(slash - path), path);
	const char *account = slash + 1;

	ps_stats *st = s->o.stats;
	ps_entry *acct = ps_registry_get(ps_stats_accounts(st), account, strlen(account));
	const ps_fault_cfg *cfg = ps_faults_for(s->o.faults, acct);
	ps_stats_count(st, acct, NULL, PS_RECEIVED);

	if (cfg->token && !bearer_ok(c, cfg->token)) {
		ps_stats_count(st, acct, NULL, PS_UNAUTHORIZED);
		return answer_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
				    "bad or missing bearer token");
	}
	if (cc->too_big) {
		ps_stats_count(st, acct, NULL, PS_BAD_REQUEST);
		return answer_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", "body too large");
	}

	char err[320];
	enum MHD_Result rc;
	const char *tenant, *to, *msg_id = NULL;
	json_error_t jerr;
	ps_json_arena_begin();
	json_t *root = json_loadb(cc->body, cc->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(err, sizeof err, "body: invalid JSON at line %d column %d: %s", jerr.line,
			 jerr.column, jerr.text);
		goto bad;
	}
	if (!json_is_object(root)) {
		snprintf(err, sizeof err, "body: want a JSON object");
		goto bad;
	}
	if (!get_field(root, "tenant", MAX_NAME, &tenant, err, sizeof err) ||
	    !get_field(root, "to", MAX_TO, &to, err, sizeof err))
		goto bad;
	json_t *text = json_object_get(root, "text");
	if (text && !json_is_string(text)) {
		snprintf(err, sizeof err, "text: want a string");
		goto bad;
	}
	const char *idem = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	if (json_object_get(root, "message_id")) {
		if (!get_field(root, "message_id", MAX_NAME, &msg_id, err, sizeof err))
			goto bad;
		if (idem && strcmp(idem, msg_id) != 0) {
			snprintf(err, sizeof err, "Idempotency-Key: differs from message_id");
			goto bad;
		}
	} else if (idem && clean(idem, strlen(idem), MAX_NAME)) {
		msg_id = idem;
	} else {
		snprintf(err, sizeof err, "message_id: missing (and no valid Idempotency-Key)");
		goto bad;
	}

	ps_entry *ten = ps_registry_get(ps_stats_tenants(st), tenant, strlen(tenant));
	ps_entry_inc(ten, PS_RECEIVED);
	enum ps_verdict v = ps_faults_decide(s->o.faults, cfg, acct, now_ns / 1000000000ull);
	switch (v) {
	case PS_TIMEOUT:
		ps_stats_count(st, acct, ten, PS_TIMEOUTS);
		rc = hold(s, c, cc, cfg->hold_ms, true);
		goto out;
	case PS_RATE_429:
		ps_stats_count(st, acct, ten, PS_THROTTLED);
		store(cc, MHD_HTTP_TOO_MANY_REQUESTS, 1,
		      "{\"error\":\"rate_limited\",\"detail\":\"above %u requests per second\","
		      "\"retry_after\":1}", cfg->rate_429_above);
		break;
	case PS_RAND_429:
		ps_stats_count(st, acct, ten, PS_THROTTLED);
		store(cc, MHD_HTTP_TOO_MANY_REQUESTS, cfg->retry_after,
		      "{\"error\":\"throttled\",\"retry_after\":%u}", cfg->retry_after);
		break;
	case PS_RAND_500:
		ps_stats_count(st, acct, ten, PS_ERRORS_5XX);
		store(cc, MHD_HTTP_INTERNAL_SERVER_ERROR, 0, "{\"error\":\"internal_error\"}");
		break;
	case PS_RAND_503:
		ps_stats_count(st, acct, ten, PS_ERRORS_5XX);
		store(cc, MHD_HTTP_SERVICE_UNAVAILABLE, 0, "{\"error\":\"unavailable\"}");
		break;
	case PS_OK: {
		bool dup = ps_stats_accept(st, acct, ten, to, strlen(to), msg_id, strlen(msg_id));
		if (!tl_tidx)
			tl_tidx = atomic_fetch_add(&s->next_tidx, 1) + 1;
		char pid[48];
		snprintf(pid, sizeof pid, "p%llx-%x-%llx", s->boot, tl_tidx, ++tl_seq);
		if (s->o.receipts)
			ps_receipts_add(s->o.receipts, now_ns, tenant, account, channel, to, msg_id);
		if (s->o.inbox && !dup) {
			/* json_dumpb: no allocation (jansson allocates from this request's arena) */
			char bodytext[PS_INBOX_TEXT] = "";
			json_t *body = json_object_get(root, "body");
			if (!text && body) {
				size_t n = json_dumpb(body, bodytext, sizeof bodytext - 1, JSON_COMPACT);
				bodytext[n < sizeof bodytext ? n : 0] = '\0';
			}
			ps_inbox_add(s->o.inbox, channel, tenant, to, msg_id,
				     text ? json_string_value(text) : bodytext);
		}
		if (cfg->dlr_url && s->o.dlr)
			ps_dlr_enqueue(s->o.dlr, cfg->dlr_url, pid, msg_id,
				       cfg->fail_to && strncmp(to, cfg->fail_to, strlen(cfg->fail_to)) == 0);
		store(cc, MHD_HTTP_OK, 0, "{\"id\":\"%s\",\"status\":\"accepted\"}", pid);
		if (dup && s->o.verbose)
			hr_info("duplicate account=%s msg=%s", account, msg_id);
		break;
	}
	}
	if (s->o.verbose)
		hr_info("send channel=%s account=%s tenant=%s to=%s msg=%s status=%u", channel,
			account, tenant, to, msg_id, cc->status);
	if (cfg->latency_ms)
		rc = hold(s, c, cc, cfg->latency_ms, false);
	else
		rc = answer(c, cc->status, cc->resp, cc->resp_len, cc->retry_after);
out:
	json_decref(root);
	ps_json_arena_end();
	return rc;
bad:
	json_decref(root);
	ps_json_arena_end();
	ps_stats_count(st, acct, NULL, PS_BAD_REQUEST);
	return answer_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", err);
}

static enum MHD_Result do_control(ps_server *s, struct MHD_Connection *c, struct conn *cc,
				  const char *what, bool post)
{
	if (s->o.control_token && !bearer_ok(c, s->o.control_token))
		return answer_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
				    "bad or missing control token");
	ps_registry *accounts = ps_stats_accounts(s->o.stats);
	if (strcmp(what, "reset") == 0) {
		if (!post)
			return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method", "want POST");
		ps_stats_reset(s->o.stats);
		if (s->o.inbox)
			ps_inbox_reset(s->o.inbox);
		hr_info("control: counters reset");
		return answer_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "reset"));
	}
	if (strcmp(what, "faults") != 0)
		return answer_error(c, MHD_HTTP_NOT_FOUND, "not_found", "unknown control");
	if (post) {
		char err[200];
		json_error_t jerr;
		json_t *body = json_loadb(cc->body, cc->len, JSON_REJECT_DUPLICATES, &jerr);
		if (!body)
			return answer_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", jerr.text);
		bool ok = ps_faults_apply_json(s->o.faults, accounts, body, err, sizeof err);
		json_decref(body);
		if (!ok)
			return answer_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", err);
		hr_info("control: faults changed");
	}
	return answer_json(c, MHD_HTTP_OK, ps_faults_json(s->o.faults, accounts));
}

static enum MHD_Result route(ps_server *s, struct MHD_Connection *c, struct conn *cc,
			     const char *url, const char *method)
{
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	if (strncmp(url, "/v1/send/", 9) == 0) {
		if (!post)
			return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method", "want POST");
		return do_send(s, c, cc, url + 9);
	}
	if (strncmp(url, "/v1/control/", 12) == 0) {
		if (!get && !post)
			return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method", "want GET or POST");
		return do_control(s, c, cc, url + 12, post);
	}
	if (!get)
		return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method", "want GET");
	if (strcmp(url, "/healthz") == 0)
		return answer(c, MHD_HTTP_OK, "{\"status\":\"ok\"}", 15, 0);
	if (strcmp(url, "/v1/stats") == 0)
		return answer_json(c, MHD_HTTP_OK, ps_stats_json(s->o.stats));
	if (strncmp(url, "/v1/stats/recipient/", 20) == 0 && url[20])
		return answer_json(c, MHD_HTTP_OK, ps_stats_recipient_json(s->o.stats, url + 20));
	if (strncmp(url, "/v1/inbox/", 10) == 0 && url[10]) {
		if (!s->o.inbox)
			return answer_error(c, MHD_HTTP_NOT_FOUND, "no_inbox", "started without --inbox");
		return answer_json(c, MHD_HTTP_OK, ps_inbox_json(s->o.inbox, url + 10));
	}
	return answer_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such endpoint");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_size, void **req_cls)
{
	ps_server *s = cls;
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *cc = ci ? ci->socket_context : NULL;
	if (!cc)
		return MHD_NO; /* cannot happen: on_conn runs first */
	if (!*req_cls) {
		*req_cls = cc;
		cc->len = 0;
		cc->too_big = false;
		cc->held = false;
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (cc->too_big || cc->len + n > s->o.max_body) {
			cc->too_big = true;
			return MHD_YES;
		}
		if (cc->len + n > cc->cap) {
			while (cc->cap < cc->len + n)
				cc->cap *= 2;
			cc->body = hr_realloc(cc->body, cc->cap);
		}
		memcpy(cc->body + cc->len, upload, n);
		cc->len += n;
		return MHD_YES;
	}
	if (cc->held) {
		cc->held = false;
		atomic_fetch_sub(&s->held, 1);
		if (cc->close_on_resume)
			return MHD_NO; /* the "timeout": drop the connection unanswered */
		return answer(c, cc->status, cc->resp, cc->resp_len, cc->retry_after);
	}
	return route(s, c, cc, url, method);
}

static bool listen_on(const char *addr, uint16_t port, int *fd_out, uint16_t *port_out,
		      char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	char ps[8];
	int fd = -1;
	snprintf(ps, sizeof ps, "%u", port);
	int rc = getaddrinfo(addr, ps, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "bind address %s: %s", addr, gai_strerror(rc));
		goto fail;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
		snprintf(err, errlen, "listen on %s:%u: %s", addr, port, strerror(errno));
		goto fail;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		snprintf(err, errlen, "getsockname: %s", strerror(errno));
		goto fail;
	}
	*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	*fd_out = fd;
	freeaddrinfo(ai);
	return true;
fail:
	if (fd >= 0)
		close(fd);
	if (ai)
		freeaddrinfo(ai);
	return false;
}

bool ps_server_start(const ps_server_opts *o, ps_server **out, uint16_t *port_out, char *err,
		     size_t errlen)
{
	ps_server *s = hr_calloc(1, sizeof *s);
	s->o = *o;
	s->listen_fd = -1;
	s->boot = (unsigned long long)time(NULL);
	ps_json_mem_init();
	if (!ps_timer_start(&s->timer, err, errlen))
		goto fail;
	if (!listen_on(o->bind, o->port, &s->listen_fd, port_out, err, errlen))
		goto fail;
	s->mhd = MHD_start_daemon(
		MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO |
			MHD_USE_ERROR_LOG,
		0, NULL, NULL, handle, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)o->threads,
		MHD_OPTION_NOTIFY_CONNECTION, on_conn, s,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned int)60000,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)300,
		MHD_OPTION_END);
	if (!s->mhd) {
		snprintf(err, errlen, "MHD_start_daemon failed (threads=%u)", o->threads);
		goto fail;
	}
	*out = s;
	return true;
fail:
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->timer) {
		ps_timer_stop(s->timer);
		ps_timer_free(s->timer);
	}
	hr_free(s);
	return false;
}

void ps_server_stop(ps_server *s)
{
	if (!s)
		return;
	/* MHD must not be stopped with suspended connections: resume them all,
	 * then wait until each has re-entered the handler (left MHD's
	 * suspended list) before stopping the daemon. */
	ps_timer_stop(s->timer);
	uint64_t deadline = ps_mono_ms() + STOP_WAIT_MS;
	while (atomic_load(&s->held) > 0 && ps_mono_ms() < deadline) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&s->held) > 0)
		hr_warn("stop: %ld held connections did not resume", atomic_load(&s->held));
	MHD_stop_daemon(s->mhd); /* also closes the listen socket */
	ps_timer_free(s->timer);
	hr_free(s);
}
