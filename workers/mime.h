/*
 * mime.h -- build an RFC 5322 / MIME email from a rendered message.
 *
 * wk_mime_build writes a complete message (CRLF line endings, headers,
 * body) into a caller-owned wk_buf:
 *   Date, From, Reply-To (if any), To, Subject (RFC 2047 encoded-words when
 *   not plain ASCII), Message-ID <MESSAGE_ID.TENANT@herald> -- the message
 *   id is the idempotency key, so a duplicate send after a crash carries the
 *   same Message-ID and receivers can drop it --, MIME-Version,
 *   List-Unsubscribe + List-Unsubscribe-Post (RFC 8058) when an unsubscribe
 *   URL is given, then a multipart/alternative text+html body, or a single
 *   text or html part.  Parts are UTF-8, quoted-printable, so any content
 *   makes 7-bit lines of at most 76 characters.  SMTP dot-stuffing is
 *   done by transport_smtp.c (or libcurl, on its path).
 *
 * Header values come from rendered templates, i.e. from users: a line break
 * in From, Reply-To, To or the unsubscribe URL is refused (header
 * injection); in Subject it is folded to a space.
 *
 * Errors: bool + hr_err (HR_ERR_INVALID, field = the offending header).
 * Thread safety: pure functions.
 */
#ifndef HERALD_WORKERS_MIME_H
#define HERALD_WORKERS_MIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "err.h"

typedef struct wk_mail {
	const char *from;        /* "Name <addr>" or "addr" (required) */
	const char *reply_to;    /* same forms; NULL/"" = none */
	const char *to;          /* addr-spec of the recipient (required) */
	const char *subject;     /* UTF-8; NULL = "" */
	const char *text;        /* text/plain part; NULL/"" = none */
	const char *html;        /* text/html part; NULL/"" = none */
	const char *unsubscribe; /* URL for List-Unsubscribe; NULL/"" = none */
	uint64_t message_id;     /* herald's message id */
	const char *tenant;      /* tenant slug, for the Message-ID */
	time_t date;             /* Date header */
} wk_mail;

bool wk_mime_build(wk_buf *out, const wk_mail *m, hr_err *err) HR_MUST_CHECK;

/*
 * The addr-spec inside a From-style value ("Name <a@b>" -> "a@b"), written
 * to out (NUL-terminated).  False when there is none or it is not a
 * plausible address (no '@', spaces, control characters, angle brackets).
 */
bool wk_mime_addr(const char *value, char *out, size_t outlen) HR_MUST_CHECK;

/* True when s is a plausible bare address (the recipient, an envelope address). */
bool wk_mime_addr_ok(const char *s, size_t len);

#endif
