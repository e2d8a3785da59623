/*
 * mime.c -- RFC 5322 / MIME message construction.  See mime.h.
 */
#include "mime.h"

#include <stdio.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool has_crlf(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

static bool is_ascii_printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

bool wk_mime_addr_ok(const char *s, size_t len)
{
	if (len == 0 || len > 320)
		return false;
	const char *at = memchr(s, '@', len);
	if (!at || at == s || at == s + len - 1)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		/* Bytes >= 0x80 are allowed: SMTPUTF8 addresses are UTF-8. */
		if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == '"' || c == '(' ||
		    c == ')' || c == ',' || c == ';' || c == '\\')
			return false;
	}
	return true;
}

bool wk_mime_addr(const char *value, char *out, size_t outlen)
{
	const char *lt = strrchr(value, '<');
	const char *p = value;
	size_t n = strlen(value);
	if (lt) {
		const char *gt = strchr(lt, '>');
		if (!gt)
			return false;
		p = lt + 1;
		n = (size_t)(gt - p);
	} else {
		/* Bare address: trim surrounding blanks. */
		while (n && (*p == ' ' || *p == '\t'))
			p++, n--;
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
	}
	if (!wk_mime_addr_ok(p, n) || n + 1 > outlen)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/*
 * RFC 2047 B-encoded words for a header value, folded so that no encoded
 * word exceeds 75 characters.  Words split only between UTF-8 characters.
 */
static void encode_words(wk_buf *b, const char *s, size_t n)
{
	/* 42 bytes -> 56 base64 chars + 12 of "=?UTF-8?B??=": 68, so even
	 * "Reply-To: " + a word stays within 78 characters a line. */
	const size_t max_raw = 42;
	size_t i = 0;
	bool first = true;
	while (i < n) {
		size_t take = n - i < max_raw ? n - i : max_raw;
		/* Do not cut inside a UTF-8 sequence: back up over continuation bytes. */
		while (take < n - i && take > 0 && ((unsigned char)s[i + take] & 0xC0) == 0x80)
			take--;
		if (take == 0)
			take = n - i < max_raw ? n - i : max_raw;
		/* Later words go on continuation lines (folding whitespace). */
		if (!first)
			wk_buf_str(b, "\r\n ");
		first = false;
		wk_buf_str(b, "=?UTF-8?B?");
		const unsigned char *u = (const unsigned char *)s + i;
		for (size_t k = 0; k < take; k += 3) {
			unsigned v = (unsigned)u[k] << 16;
			if (k + 1 < take)
				v |= (unsigned)u[k + 1] << 8;
			if (k + 2 < take)
				v |= u[k + 2];
			char q[4] = {b64[(v >> 18) & 63], b64[(v >> 12) & 63],
				     k + 1 < take ? b64[(v >> 6) & 63] : '=', k + 2 < take ? b64[v & 63] : '='};
			wk_buf_add(b, q, 4);
		}
		wk_buf_str(b, "?=");
		i += take;
	}
}

/* An unstructured header value (Subject): plain when short printable ASCII, else encoded. */
static void header_text(wk_buf *b, const char *name, const char *s)
{
	wk_buf_str(b, name);
	wk_buf_str(b, ": ");
	size_t n = strlen(s);
	/* Line breaks in a rendered subject become spaces: never a new header. */
	char *clean = NULL;
	if (has_crlf(s)) {
		clean = hr_strndup(s, n);
		for (char *c = clean; *c; c++)
			if (*c == '\r' || *c == '\n')
				*c = ' ';
		s = clean;
	}
	if (is_ascii_printable(s, n) && n + strlen(name) + 2 <= 78 && !strstr(s, "=?"))
		wk_buf_add(b, s, n);
	else
		encode_words(b, s, n);
	wk_buf_str(b, "\r\n");
	hr_free(clean);
}

/* A mailbox header (From, Reply-To): "Name <addr>" with the name quoted or encoded. */
static bool header_mailbox(wk_buf *b, const char *name, const char *value, hr_err *err)
{
	char addr[330];
	if (has_crlf(value) || !wk_mime_addr(value, addr, sizeof addr))
		return hr_fail(err, HR_ERR_INVALID, name, "%s: not a valid mailbox", name);
	wk_buf_str(b, name);
	wk_buf_str(b, ": ");
	const char *lt = strrchr(value, '<');
	if (lt) {
		const char *p = value;
		size_t n = (size_t)(lt - value);
		while (n && (*p == ' ' || *p == '\t'))
			p++, n--;
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		/* Strip quotes the author may have written around the name. */
		if (n >= 2 && p[0] == '"' && p[n - 1] == '"')
			p++, n -= 2;
		if (n) {
			if (is_ascii_printable(p, n)) {
				wk_buf_ch(b, '"');
				for (size_t i = 0; i < n; i++) {
					if (p[i] == '"' || p[i] == '\\')
						wk_buf_ch(b, '\\');
					wk_buf_ch(b, p[i]);
				}
				wk_buf_ch(b, '"');
			} else {
				encode_words(b, p, n);
			}
			wk_buf_ch(b, ' ');
		}
	}
	wk_buf_printf(b, "<%s>\r\n", addr);
	return true;
}

/* Quoted-printable (RFC 2045) with CRLF line ends; LF or CRLF in the input are line breaks. */
static void qp(wk_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;
		if (c == '\r' && p[1] == '\n')
			continue;
		if (c == '\n') {
			wk_buf_str(b, "\r\n");
			col = 0;
			continue;
		}
		bool eol_next = p[1] == '\0' || p[1] == '\n' || (p[1] == '\r' && p[2] == '\n');
		bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !eol_next);
		/* A leading dot is encoded too: it survives any MTA's dot handling unchanged. */
		if (c == '.' && col == 0)
			literal = false;
		size_t need = literal ? 1 : 3;
		if (col + need > 75) {
			wk_buf_str(b, "=\r\n");
			col = 0;
		}
		if (literal) {
			wk_buf_ch(b, (char)c);
		} else {
			char e[3] = {'=', hex[c >> 4], hex[c & 15]};
			wk_buf_add(b, e, 3);
		}
		col += need;
	}
	wk_buf_str(b, "\r\n");
}

static void part(wk_buf *b, const char *type, const char *body)
{
	wk_buf_printf(b, "Content-Type: %s; charset=utf-8\r\n", type);
	wk_buf_str(b, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	qp(b, body);
}

/* A Message-ID right-hand token: the tenant slug when it is plain atext, else "t". */
static const char *msgid_tenant(const char *t)
{
	if (!t || !*t || strlen(t) > 64)
		return "t";
	for (const char *p = t; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_'))
			return "t";
	return t;
}

bool wk_mime_build(wk_buf *out, const wk_mail *m, hr_err *err)
{
	if (!m->to || !wk_mime_addr_ok(m->to, strlen(m->to)))
		return hr_fail(err, HR_ERR_INVALID, "to", "to: not a valid email address");
	if (!m->from || !*m->from)
		return hr_fail(err, HR_ERR_INVALID, "from", "from: missing");
	bool has_text = m->text && *m->text, has_html = m->html && *m->html;
	if (!has_text && !has_html)
		return hr_fail(err, HR_ERR_INVALID, "text", "neither text nor html rendered any content");

	char date[64];
	struct tm tm;
	gmtime_r(&m->date, &tm);
	/* C locale day and month names: the worker never calls setlocale(). */
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	wk_buf_printf(out, "Date: %s\r\n", date);
	if (!header_mailbox(out, "From", m->from, err))
		return false;
	if (m->reply_to && *m->reply_to && !header_mailbox(out, "Reply-To", m->reply_to, err))
		return false;
	wk_buf_printf(out, "To: <%s>\r\n", m->to);
	header_text(out, "Subject", m->subject ? m->subject : "");
	wk_buf_printf(out, "Message-ID: <%llu.%s@herald>\r\n", (unsigned long long)m->message_id,
		      msgid_tenant(m->tenant));
	if (m->unsubscribe && *m->unsubscribe) {
		const char *u = m->unsubscribe;
		if (has_crlf(u) || strpbrk(u, "<> \t") || !is_ascii_printable(u, strlen(u)))
			return hr_fail(err, HR_ERR_INVALID, "unsubscribe_url",
				       "unsubscribe_url: not a plain URL");
		wk_buf_printf(out, "List-Unsubscribe: <%s>\r\n", u);
		wk_buf_str(out, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
	}
	wk_buf_str(out, "MIME-Version: 1.0\r\n");
	if (has_text && has_html) {
		char boundary[64];
		/* "=_" cannot occur in quoted-printable output, so it cannot occur in a part. */
		snprintf(boundary, sizeof boundary, "=_herald_%llu", (unsigned long long)m->message_id);
		wk_buf_printf(out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);
		wk_buf_printf(out, "--%s\r\n", boundary);
		part(out, "text/plain", m->text);
		wk_buf_printf(out, "--%s\r\n", boundary);
		part(out, "text/html", m->html);
		wk_buf_printf(out, "--%s--\r\n", boundary);
	} else {
		part(out, has_text ? "text/plain" : "text/html", has_text ? m->text : m->html);
	}
	return true;
}
