/*
 * transport_smtp.c -- email over SMTP with libcurl, sessions reused.
 *
 * A session is one CURL easy handle, created on first need and kept for the
 * life of the process; at most `concurrency` of them send at once (and at
 * most the provider's own `concurrency` for one account).  Each send
 * configures its session's handle afresh (curl_easy_reset: a send to
 * another account must not inherit credentials) and runs it in the shared
 * multi (curlio.h); the connection stays in the multi's cache when the
 * transfer ends, so the next send to the same server -- on any session --
 * reuses it: one EHLO / STARTTLS / AUTH per connection, then MAIL, RCPT,
 * DATA per message.
 *
 * The message is built by mime.c (Message-ID <MESSAGE_ID.TENANT@herald>);
 * the envelope sender is the provider's envelope_from or From's address.
 * The server's replies reach us through CURLOPT_HEADERFUNCTION (libcurl
 * hands SMTP responses to it); the last one, with its RFC 3463 enhanced
 * code, is what classify.c maps to a result.
 */
#include <ctype.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "classify.h"
#include "log.h"
#include "mime.h"
#include "transport.h"

typedef struct smtp_t smtp_t;

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

/* Every server reply line; keep the last one (multi-line replies: their last line). */
static size_t on_reply(char *buf, size_t size, size_t nitems, void *ud)
{
	sess *x = ud;
	size_t n = size * nitems, k = n;
	while (k && (buf[k - 1] == '\r' || buf[k - 1] == '\n'))
		k--;
	if (k >= 3 && isdigit((unsigned char)buf[0])) {
		if (k >= sizeof x->reply)
			k = sizeof x->reply - 1;
		memcpy(x->reply, buf, k);
		x->reply[k] = '\0';
		if ((buf[0] == '4' || buf[0] == '5') && !x->failed[0])
			memcpy(x->failed, x->reply, k + 1);
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

static void smtp_done(wk_curlreq *req, CURLcode rc)
{
	sess *x = (sess *)req;
	wk_send *s = x->s;
	long code = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	/* The first refusal decides: after it libcurl may QUIT, and "221 Bye" is not the verdict. */
	const char *verdict = x->failed[0] ? x->failed : x->reply;
	if (x->failed[0])
		code = strtol(x->failed, NULL, 10);
	char enh[16];
	enhanced_code(verdict, enh, sizeof enh);
	s->status = wk_classify_smtp(rc, code, enh);
	if (s->status == HR_RES_SENT) {
		/* "250 2.0.0 Ok: queued as 4Fx..." -> the text after the code: the server's id. */
		const char *id = strlen(x->reply) > 4 ? x->reply + 4 : "";
		snprintf(s->provider_id, sizeof s->provider_id, "%s", id);
	} else if (code >= 400 && verdict[0]) {
		snprintf(s->reason, sizeof s->reason, "smtp %.*s", (int)sizeof s->reason - 6, verdict);
	} else {
		snprintf(s->reason, sizeof s->reason, "smtp: %s", curl_easy_strerror(rc));
	}
	wk_buf_reset(&x->mail);
	give_back(x->t, x);
	wk_transport_finish(&x->t->base, s);
}

static sess *take_session(smtp_t *t)
{
	sess *x = t->idle;
	if (x) {
		t->idle = x->next_idle;
		return x;
	}
	x = hr_calloc(1, sizeof *x);
	x->t = t;
	x->req.done = smtp_done;
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
	sess *x = take_session(t);
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
	x->pos = 0;
	x->reply[0] = x->failed[0] = '\0';
	/* The recipient list is one node on the session's memory: no allocation per send. */
	x->rcpt.data = x->to;
	x->rcpt.next = NULL;

	CURL *e = x->easy;
	curl_easy_reset(e);
	long timeout = p->timeout_ms ? p->timeout_ms : t->o.smtp_timeout_ms;
	/* libcurl copies string options (URL, MAIL_FROM, credentials) at setopt. */
	curl_easy_setopt(e, CURLOPT_URL, p->url);
	wk_curlio_easy_defaults(t->io, e);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, env);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, &x->rcpt);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(e, CURLOPT_READDATA, x);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->mail.len);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_reply);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_USE_SSL, p->use_ssl);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout < 10000 ? timeout : 10000L);
	if (p->username && p->password) {
		curl_easy_setopt(e, CURLOPT_USERNAME, p->username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, p->password);
	}
	wk_curlio_start(t->io, e, &x->req);
}

static void smtp_free(wk_transport *tr)
{
	smtp_t *t = (smtp_t *)tr;
	for (uint32_t i = 0; i < t->nall; i++) {
		/* Cleanup takes the handle out of the multi if a transfer still runs. */
		curl_easy_cleanup(t->all[i]->easy);
		if (t->all[i]->s) {
			/* Abandoned at exit (drain timeout): back to the loop, which owns sends. */
			t->all[i]->s->status = HR_RES_RETRY;
			snprintf(t->all[i]->s->reason, sizeof t->all[i]->s->reason, "worker exiting");
			wk_transport_finish(&t->base, t->all[i]->s);
		}
		wk_buf_free(&t->all[i]->mail);
		hr_free(t->all[i]);
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
