/*
 * transport_smtp.c -- email over SMTP: libcurl connects, sessions reused,
 * commands pipelined.
 *
 * A session is one CURL easy handle plus, on the pipelined path, the
 * connection it keeps; sessions are created on first need and kept for the
 * life of the process; at most `concurrency` of them send at once (and at
 * most the provider's own `concurrency` for one account).
 *
 * Pipelined path (smtp:// accounts without STARTTLS, i.e. use_ssl "none";
 * AUTH is fine).  libcurl opens the connection (CURLOPT_CONNECT_ONLY:
 * resolve, connect, greeting, EHLO, AUTH -- all in the shared multi, see
 * curlio.h), and the session takes the socket over (curlio dups it; the
 * handle's removal closes libcurl's descriptor and sends nothing).  Then,
 * per message, on that connection, driven by the loop's poll (a
 * wk_fdwatch): MAIL FROM, RCPT TO and DATA in one write when the server
 * advertised PIPELINING (RFC 2920; one command at a time otherwise), their
 * replies, then the dot-stuffed message and "." in one write, and its
 * reply.  Two writes and two reads per message where libcurl's own SMTP
 * transfer needs five writes, four reads and five polls (measured:
 * docs/benchmarks.md).  A refused transaction is followed by RSET and the
 * connection is kept; a 421, a reply out of turn, a DATA accepted after a
 * refusal, or any I/O error closes it.  An idle connection is still
 * watched: anything the server says then (a timeout's 421, EOF) closes it.
 * A send whose reused connection turns out dead before any reply is sent
 * again once on a new connection.  A connection serves one account (the
 * provider's serial): a session taken for another account closes it first.
 *
 * libcurl path (STARTTLS requested or smtps://, where the TLS state lives
 * in libcurl): each send configures its session's handle afresh
 * (curl_easy_reset: a send to another account must not inherit
 * credentials) and runs a whole SMTP transfer in the shared multi; the
 * connection stays in the multi's cache, so the next send to the same
 * server reuses it: one EHLO / STARTTLS / AUTH per connection, then MAIL,
 * RCPT, DATA per message.
 *
 * The message is built by mime.c (Message-ID <MESSAGE_ID.TENANT@herald>);
 * the envelope sender is the provider's envelope_from or From's address.
 * Server replies: on the libcurl path they reach us through
 * CURLOPT_HEADERFUNCTION (libcurl hands SMTP responses to it), on the
 * pipelined path we read them.  The first 4xx/5xx decides, else the last
 * reply; classify.c maps it, with its RFC 3463 enhanced code, to a result.
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "classify.h"
#include "log.h"
#include "mime.h"
#include "sockio.h"
#include "transport.h"

#define MAX_REPLY_LINE 4096 /* a reply line longer than this is a broken server */

typedef struct smtp_t smtp_t;

/* Pipelined path: what the session's connection is doing. */
typedef enum {
	C_NONE,       /* no connection */
	C_CONNECTING, /* libcurl is opening one (CONNECT_ONLY) */
	C_IDLE,       /* open, no transaction */
	C_ENVELOPE,   /* MAIL / RCPT / DATA sent, replies awaited */
	C_BODY,       /* message and "." sent, the reply awaited */
	C_RSET,       /* RSET after a refused transaction, its reply awaited */
} cstate;

typedef struct sess {
	wk_curlreq req;          /* first: curlio hands it back to done() */
	smtp_t *t;
	CURL *easy;              /* reused for every send of this session */
	wk_send *s;              /* the send running, NULL when idle */
	wk_buf mail;             /* the message being uploaded */
	size_t pos;              /* bytes of mail given to libcurl */
	struct curl_slist rcpt;  /* the one recipient (a list node on our memory) */
	char to[330];            /* its address (libcurl reads it during the transfer) */
	char reply[256];         /* last server reply line */
	char failed[256];        /* first 4xx/5xx reply line ("" = none): it decides, not the QUIT after it */
	struct sess *next_idle;
	/* The pipelined path. */
	wk_fdwatch w;            /* the connection (w.fd, -1 = none) in the loop's poll */
	cstate st;
	uint64_t conn_serial;    /* the account the connection belongs to */
	bool pipelining;         /* the server advertised PIPELINING */
	bool ehlo_pipelining;    /* seen in the EHLO reply of the connection being opened */
	bool reused;             /* the send runs on a connection that carried an earlier one */
	bool resent;             /* the send was already moved to a new connection once */
	wk_buf out;              /* bytes to write */
	size_t opos;             /* of out, written */
	wk_buf in;               /* bytes read, not yet parsed */
	wk_buf cmds;             /* "MAIL FROM:<..>\r\n" "RCPT TO:<..>\r\n" "DATA\r\n" */
	size_t cmd_end[3];       /* end offset of each command in cmds */
	int nsent, nrep;         /* envelope commands sent, their replies read */
	int last_code;           /* code of the last reply read */
	bool closing;            /* a 421 was read: close when the transaction ends */
	long long deadline_ms;   /* the send's time limit (monotonic ms) */
} sess;

struct smtp_t {
	wk_transport base;
	wk_curlio *io;
	wk_transport_opts o;
	sess **all;              /* every session, for free() */
	uint32_t nall;
	sess *idle;              /* sessions with no send */
	char from_addr[330];     /* scratch: envelope sender */
};

static uint32_t smtp_room(wk_transport *tr, const wk_provider *p)
{
	smtp_t *t = (smtp_t *)tr;
	uint32_t free_slots = t->o.concurrency > tr->inflight ? t->o.concurrency - tr->inflight : 0;
	return wk_room_for(free_slots, p, t->o.concurrency);
}

/* The pipelined path serves plain smtp:// accounts; STARTTLS and smtps:// stay with libcurl. */
static bool pipelined_account(const wk_provider *p)
{
	return p->use_ssl == CURLUSESSL_NONE && p->url && strncasecmp(p->url, "smtp://", 7) == 0;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
	sess *x = ud;
	size_t n = size * nitems, left = x->mail.len - x->pos;
	if (n > left)
		n = left;
	memcpy(buf, x->mail.p + x->pos, n);
	x->pos += n;
	return n;
}

/* Keep a reply line: the last one, and the first refusal. */
static void note_reply(sess *x, const char *line, size_t k)
{
	if (k >= sizeof x->reply)
		k = sizeof x->reply - 1;
	memcpy(x->reply, line, k);
	x->reply[k] = '\0';
	if ((line[0] == '4' || line[0] == '5') && !x->failed[0])
		memcpy(x->failed, x->reply, k + 1);
}

/* Every server reply line libcurl reads (greeting and EHLO included); keep the last one. */
static size_t on_reply(char *buf, size_t size, size_t nitems, void *ud)
{
	sess *x = ud;
	size_t n = size * nitems, k = n;
	while (k && (buf[k - 1] == '\r' || buf[k - 1] == '\n'))
		k--;
	if (k >= 3 && isdigit((unsigned char)buf[0])) {
		note_reply(x, buf, k);
		/* "250-PIPELINING" / "250 PIPELINING" in the EHLO reply. */
		if (k >= 14 && buf[0] == '2' && (buf[3] == '-' || buf[3] == ' ') &&
		    strncasecmp(buf + 4, "PIPELINING", 10) == 0 && (k == 14 || buf[14] == ' '))
			x->ehlo_pipelining = true;
	}
	return n;
}

/* The RFC 3463 code after the reply code ("550 5.1.1 ..." -> "5.1.1"), "" when none. */
static void enhanced_code(const char *reply, char *out, size_t outlen)
{
	out[0] = '\0';
	if (strlen(reply) < 4)
		return;
	const char *p = reply + 4;
	size_t n = strspn(p, "0123456789.");
	if (n < 5 || n >= outlen || p[1] != '.')
		return;
	memcpy(out, p, n);
	out[n] = '\0';
}

static void give_back(smtp_t *t, sess *x)
{
	x->s = NULL;
	x->next_idle = t->idle;
	t->idle = x;
}

/* The send's result from rc and the replies read (the first refusal decides). */
static void verdict(sess *x, wk_send *s, CURLcode rc, long code)
{
	const char *v = x->failed[0] ? x->failed : x->reply;
	if (x->failed[0])
		code = strtol(x->failed, NULL, 10);
	char enh[16];
	enhanced_code(v, enh, sizeof enh);
	s->status = wk_classify_smtp(rc, code, enh);
	if (s->status == HR_RES_SENT) {
		/* "250 2.0.0 Ok: queued as 4Fx..." -> the text after the code: the server's id. */
		const char *id = strlen(x->reply) > 4 ? x->reply + 4 : "";
		snprintf(s->provider_id, sizeof s->provider_id, "%s", id);
	} else if (code >= 400 && v[0]) {
		snprintf(s->reason, sizeof s->reason, "smtp %.*s", (int)sizeof s->reason - 6, v);
	} else {
		snprintf(s->reason, sizeof s->reason, "smtp: %s", curl_easy_strerror(rc));
	}
}

/* ---- the pipelined path ---- */

static void conn_close(sess *x, bool quit)
{
	if (x->w.fd >= 0) {
		wk_curlio_unwatch(x->t->io, &x->w);
		if (quit)
			(void)!send(x->w.fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(x->w.fd);
	}
	x->w.fd = -1;
	x->w.events = 0;
	x->w.deadline_ms = 0;
	x->st = C_NONE;
	wk_buf_reset(&x->out);
	wk_buf_reset(&x->in);
	x->opos = 0;
}

static long send_timeout(const smtp_t *t, const wk_provider *p)
{
	return p->timeout_ms ? p->timeout_ms : t->o.smtp_timeout_ms;
}

static void start_connect(sess *x);
static void start_envelope(sess *x);

/* The send is over: result, then the session goes idle (or on to RSET). */
static void piped_finish(sess *x, CURLcode rc)
{
	wk_send *s = x->s;
	verdict(x, s, rc, x->last_code);
	wk_buf_reset(&x->mail);
	x->s = NULL;
	if (x->st != C_RSET)
		give_back(x->t, x);
	wk_transport_finish(&x->t->base, s);
}

/* The connection failed (I/O error, EOF, garbage, timeout). */
static void conn_failed(sess *x, CURLcode rc)
{
	cstate was = x->st;
	bool retry = x->s && was == C_ENVELOPE && x->reused && !x->resent && x->nrep == 0 &&
		     rc != CURLE_OPERATION_TIMEDOUT;
	conn_close(x, false);
	if (retry) {
		/* The server had dropped the idle connection: nothing was accepted, send again. */
		x->resent = true;
		start_connect(x);
		return;
	}
	if (x->s)
		piped_finish(x, rc);
	else if (was == C_RSET)
		give_back(x->t, x); /* an idle session is in the idle list already */
}

static void set_events(sess *x)
{
	x->w.events = (short)(ZMQ_POLLIN | (x->opos < x->out.len ? ZMQ_POLLOUT : 0));
}

/* Write what is pending; false when the connection failed (and was handled). */
static bool flush_out(sess *x)
{
	if (wk_sock_write(x->w.fd, &x->out, &x->opos) != WK_IO_OK) {
		conn_failed(x, CURLE_SEND_ERROR);
		return false;
	}
	if (x->opos == x->out.len) {
		wk_buf_reset(&x->out);
		x->opos = 0;
	}
	set_events(x);
	return true;
}

/* The message, dot-stuffed (RFC 5321 4.5.2), ending in CRLF "." CRLF. */
static void queue_body(sess *x)
{
	const char *p = x->mail.p, *end = x->mail.p + x->mail.len;
	wk_buf_grow(&x->out, x->mail.len + 8);
	if (p < end && *p == '.')
		wk_buf_ch(&x->out, '.');
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl) {
			wk_buf_add(&x->out, p, (size_t)(end - p));
			break;
		}
		wk_buf_add(&x->out, p, (size_t)(nl + 1 - p));
		p = nl + 1;
		if (p < end && *p == '.')
			wk_buf_ch(&x->out, '.');
	}
	if (x->mail.len < 2 || end[-2] != '\r' || end[-1] != '\n')
		wk_buf_add(&x->out, "\r\n", 2);
	wk_buf_add(&x->out, ".\r\n", 3);
}

static void queue_cmd(sess *x, int i)
{
	size_t from = i ? x->cmd_end[i - 1] : 0;
	wk_buf_add(&x->out, x->cmds.p + from, x->cmd_end[i] - from);
	x->nsent = i + 1;
}

/* One complete reply (its last line, without CRLF); false when the connection was given up. */
static bool on_piped_reply(sess *x, const char *line, size_t k)
{
	int code = (int)strtol(line, NULL, 10);
	x->last_code = code;
	note_reply(x, line, k);
	if (code == 421)
		x->closing = true;
	switch (x->st) {
	case C_ENVELOPE: {
		x->nrep++;
		bool refused = code >= 400;
		if (x->nrep < 3 && !refused && !x->closing) {
			if (!x->pipelining) /* one at a time: the next command now */
				queue_cmd(x, x->nrep);
			return true;
		}
		if (x->nrep < x->nsent)
			return true; /* pipelined: the other replies still come */
		if (!x->failed[0] && code == 354 && !x->closing) {
			queue_body(x);
			x->st = C_BODY;
			return true;
		}
		if (!x->failed[0]) /* DATA answered with something else than 354 */
			memcpy(x->failed, x->reply, sizeof x->failed);
		if (code == 354 || x->closing) {
			/* A DATA accepted after a refusal is ended by closing, so nothing is delivered. */
			conn_close(x, false);
			piped_finish(x, CURLE_OK);
			return false;
		}
		wk_buf_add(&x->out, "RSET\r\n", 6);
		x->st = C_RSET;
		piped_finish(x, CURLE_OK);
		return true;
	}
	case C_BODY:
		if (x->closing)
			conn_close(x, false);
		else
			x->st = C_IDLE;
		x->w.deadline_ms = 0;
		piped_finish(x, CURLE_OK);
		return x->st == C_IDLE;
	case C_RSET:
		if (code != 250 || x->closing) {
			conn_close(x, false);
			give_back(x->t, x);
			return false;
		}
		x->st = C_IDLE;
		x->w.deadline_ms = 0;
		give_back(x->t, x);
		return true;
	default:
		/* Out of turn (idle): a 421 before closing, or garbage. */
		conn_close(x, false);
		return false;
	}
}

/* Parse the complete replies in x->in; false when the connection was given up. */
static bool parse_replies(sess *x)
{
	size_t off = 0;
	bool ok = true;
	while (ok) {
		char *nl = memchr(x->in.p + off, '\n', x->in.len - off);
		if (!nl)
			break;
		char *line = x->in.p + off;
		size_t k = (size_t)(nl - line);
		off += k + 1;
		while (k && (line[k - 1] == '\r' || line[k - 1] == '\n'))
			k--;
		if (k < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) || (k > 3 && line[3] != ' ' && line[3] != '-')) {
			conn_failed(x, CURLE_WEIRD_SERVER_REPLY);
			return false;
		}
		if (k > 3 && line[3] == '-')
			continue; /* a multi-line reply goes on */
		ok = on_piped_reply(x, line, k);
	}
	if (!ok)
		return false;
	if (off) {
		memmove(x->in.p, x->in.p + off, x->in.len - off);
		x->in.len -= off;
	}
	if (x->in.len > MAX_REPLY_LINE) {
		conn_failed(x, CURLE_WEIRD_SERVER_REPLY);
		return false;
	}
	return true;
}

static void on_ready(wk_fdwatch *w, short revents)
{
	sess *x = (sess *)((char *)w - offsetof(sess, w));
	if (!revents) {
		conn_failed(x, CURLE_OPERATION_TIMEDOUT);
		return;
	}
	if ((revents & ZMQ_POLLOUT) && !flush_out(x))
		return;
	if (!(revents & (ZMQ_POLLIN | ZMQ_POLLERR)))
		return;
	bool got;
	if (wk_sock_read(x->w.fd, &x->in, &got) != WK_IO_OK) {
		conn_failed(x, CURLE_RECV_ERROR); /* EOF or an error */
		return;
	}
	if (x->st == C_IDLE) {
		/* The server spoke out of turn (a timeout's 421): this connection is over. */
		conn_close(x, false);
		return;
	}
	if (parse_replies(x))
		flush_out(x);
}

/* A connection is open and idle: send the envelope of x->s. */
static void start_envelope(sess *x)
{
	x->st = C_ENVELOPE;
	x->nsent = x->nrep = 0;
	x->last_code = 0;
	x->reply[0] = x->failed[0] = '\0';
	x->closing = false;
	if (x->pipelining) {
		queue_cmd(x, 0);
		queue_cmd(x, 1);
		queue_cmd(x, 2);
	} else {
		queue_cmd(x, 0);
	}
	flush_out(x);
}

/* What both transfers set last -- replies to on_reply, TLS, time limits,
 * credentials -- and the start in the shared multi. */
static void start_transfer(sess *x, const wk_provider *p, long use_ssl, long timeout)
{
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_reply);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_USE_SSL, use_ssl);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout < 10000 ? timeout : 10000L);
	if (p->username && p->password) {
		curl_easy_setopt(e, CURLOPT_USERNAME, p->username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, p->password);
	}
	wk_curlio_start(x->t->io, e, &x->req);
}

/* libcurl opens the connection: resolve, connect, greeting, EHLO, AUTH; then we take the socket. */
static void start_connect(sess *x)
{
	const wk_provider *p = x->s->prov;
	smtp_t *t = x->t;
	CURL *e = x->easy;
	long timeout = send_timeout(t, p);
	x->st = C_CONNECTING;
	x->ehlo_pipelining = false;
	x->reply[0] = x->failed[0] = '\0';
	x->req.keep_socket = true;
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, p->url);
	wk_curlio_easy_defaults(t->io, e);
	curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
	start_transfer(x, p, (long)CURLUSESSL_NONE, timeout);
}

static void connect_done(sess *x, CURLcode rc)
{
	int fd = wk_curlio_take_socket(&x->req, &rc);
	if (fd < 0) {
		x->st = C_NONE;
		piped_finish(x, rc);
		return;
	}
	x->w.fd = fd;
	x->w.deadline_ms = x->deadline_ms;
	x->conn_serial = x->s->prov->serial;
	x->pipelining = x->ehlo_pipelining;
	x->reused = false;
	wk_buf_reset(&x->in);
	wk_buf_reset(&x->out);
	x->opos = 0;
	wk_curlio_watch(x->t->io, &x->w);
	start_envelope(x);
}

/* The envelope commands of the send, kept for one-at-a-time servers. */
static void build_cmds(sess *x, const char *env)
{
	wk_buf_reset(&x->cmds);
	wk_buf_printf(&x->cmds, "MAIL FROM:<%s>\r\n", env);
	x->cmd_end[0] = x->cmds.len;
	wk_buf_printf(&x->cmds, "RCPT TO:<%s>\r\n", x->to);
	x->cmd_end[1] = x->cmds.len;
	wk_buf_add(&x->cmds, "DATA\r\n", 6);
	x->cmd_end[2] = x->cmds.len;
}

static void piped_submit(sess *x, const char *env)
{
	build_cmds(x, env);
	x->resent = false;
	x->deadline_ms = wk_curlio_now_ms() + send_timeout(x->t, x->s->prov);
	if (x->st == C_IDLE && x->conn_serial == x->s->prov->serial) {
		x->reused = true;
		x->w.deadline_ms = x->deadline_ms;
		start_envelope(x);
		return;
	}
	if (x->st != C_NONE)
		conn_close(x, true); /* another account's connection */
	start_connect(x);
}

/* ---- the libcurl path ---- */

static void smtp_done(wk_curlreq *req, CURLcode rc)
{
	sess *x = (sess *)req;
	if (x->st == C_CONNECTING) {
		connect_done(x, rc);
		return;
	}
	wk_send *s = x->s;
	long code = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	/* The first refusal decides: after it libcurl may QUIT, and "221 Bye" is not the verdict. */
	verdict(x, s, rc, code);
	wk_buf_reset(&x->mail);
	give_back(x->t, x);
	wk_transport_finish(&x->t->base, s);
}

/* An idle session for p: one holding a connection to p's account, else one with none, else any. */
static sess *take_session(smtp_t *t, const wk_provider *p, bool piped)
{
	sess **best = NULL;
	int rank = 0;
	for (sess **pp = &t->idle; *pp; pp = &(*pp)->next_idle) {
		sess *x = *pp;
		int r = x->st == C_NONE ? 2 : 1;
		if (piped && x->st == C_IDLE && x->conn_serial == p->serial)
			r = 3;
		if (r > rank) {
			rank = r;
			best = pp;
			if (r == 3)
				break;
		}
	}
	if (best) {
		sess *x = *best;
		*best = x->next_idle;
		if (!piped && x->st != C_NONE)
			conn_close(x, true);
		return x;
	}
	sess *x = hr_calloc(1, sizeof *x);
	x->t = t;
	x->req.done = smtp_done;
	x->req.sock = -1;
	x->w.fd = -1;
	x->w.ready = on_ready;
	x->easy = curl_easy_init();
	if (!x->easy)
		hr_fatal("curl_easy_init failed");
	t->all = hr_realloc(t->all, (t->nall + 1) * sizeof *t->all);
	t->all[t->nall++] = x;
	return x;
}

/* A send that fails before any I/O (bad address, unusable From). */
static void fail_now(smtp_t *t, wk_send *s, const char *why)
{
	s->status = HR_RES_PERMANENT;
	snprintf(s->reason, sizeof s->reason, "%s", why);
	wk_transport_finish(&t->base, s);
}

static void smtp_submit(wk_transport *tr, wk_send *s)
{
	smtp_t *t = (smtp_t *)tr;
	const wk_provider *p = s->prov;
	tr->inflight++;
	s->prov->inflight++;

	size_t tolen = s->j->address.len;
	if (tolen >= sizeof ((sess *)0)->to || !wk_mime_addr_ok(s->j->address.p, tolen)) {
		fail_now(t, s, "to: not a valid email address");
		return;
	}
	const char *env = p->envelope_from;
	if (!env) {
		if (!wk_mime_addr(wk_msg_get(&s->msg, WK_F_FROM), t->from_addr, sizeof t->from_addr)) {
			fail_now(t, s, "from: not a valid mailbox");
			return;
		}
		env = t->from_addr;
	}
	bool piped = pipelined_account(p);
	sess *x = take_session(t, p, piped);
	memcpy(x->to, s->j->address.p, tolen);
	x->to[tolen] = '\0';
	char tenant[130];
	snprintf(tenant, sizeof tenant, "%.*s", (int)s->batch->tenant.len, s->batch->tenant.p);
	wk_mail m = {
		.from = wk_msg_get(&s->msg, WK_F_FROM),
		.reply_to = wk_msg_get(&s->msg, WK_F_REPLY_TO),
		.to = x->to,
		.subject = wk_msg_get(&s->msg, WK_F_SUBJECT),
		.text = wk_msg_get(&s->msg, WK_F_TEXT),
		.html = wk_msg_get(&s->msg, WK_F_HTML),
		.unsubscribe = s->lane == HR_LANE_BULK ? wk_msg_get(&s->msg, WK_F_UNSUBSCRIBE) : NULL,
		.message_id = s->j->message_id,
		.tenant = tenant,
		.date = time(NULL),
	};
	hr_err err = {0};
	wk_buf_reset(&x->mail);
	if (!wk_mime_build(&x->mail, &m, &err)) {
		give_back(t, x);
		fail_now(t, s, err.msg);
		return;
	}
	x->s = s;
	if (piped) {
		piped_submit(x, env);
		return;
	}
	x->pos = 0;
	x->reply[0] = x->failed[0] = '\0';
	/* The recipient list is one node on the session's memory: no allocation per send. */
	x->rcpt.data = x->to;
	x->rcpt.next = NULL;

	CURL *e = x->easy;
	curl_easy_reset(e);
	long timeout = send_timeout(t, p);
	/* libcurl copies string options (URL, MAIL_FROM, credentials) at setopt. */
	curl_easy_setopt(e, CURLOPT_URL, p->url);
	wk_curlio_easy_defaults(t->io, e);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, env);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, &x->rcpt);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(e, CURLOPT_READDATA, x);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->mail.len);
	start_transfer(x, p, p->use_ssl, timeout);
}

static void smtp_free(wk_transport *tr)
{
	smtp_t *t = (smtp_t *)tr;
	for (uint32_t i = 0; i < t->nall; i++) {
		sess *x = t->all[i];
		/* Cleanup takes the handle out of the multi if a transfer still runs. */
		curl_easy_cleanup(x->easy);
		if (x->req.sock >= 0)
			close(x->req.sock);
		conn_close(x, x->st == C_IDLE);
		if (x->s) {
			/* Abandoned at exit (drain timeout): back to the loop, which owns sends. */
			x->s->status = HR_RES_RETRY;
			snprintf(x->s->reason, sizeof x->s->reason, "worker exiting");
			wk_transport_finish(&t->base, x->s);
		}
		wk_buf_free(&x->mail);
		wk_buf_free(&x->out);
		wk_buf_free(&x->in);
		wk_buf_free(&x->cmds);
		hr_free(x);
	}
	hr_free(t->all);
	hr_free(t);
}

static const wk_transport_ops smtp_ops = {smtp_room, smtp_submit, smtp_free};

wk_transport *wk_smtp_new(wk_curlio *io, wk_sendq *done, const wk_transport_opts *o)
{
	smtp_t *t = hr_calloc(1, sizeof *t);
	t->base.ops = &smtp_ops;
	t->base.done = done;
	t->io = io;
	t->o = *o;
	return &t->base;
}
