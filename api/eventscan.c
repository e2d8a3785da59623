/*
 * eventscan.c -- see eventscan.h.
 *
 * A recursive-descent reader over the body.  Each function returns false to
 * give up (never an error of its own).  JSON's grammar and jansson's rules
 * as applied here, from jansson 2.14's load.c: strict UTF-8 (no overlong
 * forms, no surrogates, nothing over U+10FFFF), no raw control characters in
 * strings, \u0000 refused, a \uD800-\uDBFF escape only before a
 * \uDC00-\uDFFF one, an integer beyond 64 bits and a real beyond a double's
 * range refused, whitespace of space, tab, CR and LF.
 */
#include "eventscan.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "jsonout.h"

typedef struct rd {
	const char *p, *end;
	hr_sbuf *out;
} rd;

static void ws(rd *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
		r->p++;
}

/* Skip whitespace, then take c if it is next. */
static bool take(rd *r, char c)
{
	ws(r);
	if (r->p < r->end && *r->p == c) {
		r->p++;
		return true;
	}
	return false;
}

static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* One UTF-8 sequence of 2 to 4 bytes at p (its first byte >= 0x80); its length, or 0 when jansson refuses it. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	uint32_t v;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		v = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		v = v << 6 | (p[i] & 0x3F);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 0;
	return n;
}

/*
 * A string at r->p (its opening quote).  *s, *n: the bytes between the
 * quotes; *esc: whether it has an escape.  del: also refuse DEL (0x7f), as
 * the validators do in a name or a time.
 */
static bool string(rd *r, const char **s, size_t *n, bool *esc, bool del)
{
	if (r->p >= r->end || *r->p != '"')
		return false;
	const unsigned char *p = (const unsigned char *)r->p + 1, *end = (const unsigned char *)r->end;
	const char *start = (const char *)p;
	*esc = false;
	for (;;) {
		if (p >= end)
			return false;
		unsigned c = *p;
		if (c == '"')
			break;
		if (c < 0x20 || (del && c == 0x7f))
			return false;
		if (c >= 0x80) {
			size_t k = utf8_seq(p, end);
			if (!k)
				return false;
			p += k;
			continue;
		}
		if (c != '\\') {
			p++;
			continue;
		}
		*esc = true;
		if (end - p < 2)
			return false;
		switch (p[1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			p += 2;
			continue;
		case 'u':
			break;
		default:
			return false;
		}
		if (end - p < 6)
			return false;
		int u = hex4((const char *)p + 2);
		if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF)) /* \u0000, a lone low surrogate */
			return false;
		p += 6;
		if (u >= 0xD800 && u <= 0xDBFF) {
			if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
				return false;
			int lo = hex4((const char *)p + 2);
			if (lo < 0xDC00 || lo > 0xDFFF)
				return false;
			p += 6;
		}
	}
	*s = start;
	*n = (size_t)((const char *)p - start);
	r->p = (const char *)p + 1;
	return true;
}

/* Past a run of one or more digits at p, or NULL when there is none. */
static const char *digits(const char *p, const char *end)
{
	const char *q = p;
	while (q < end && *q >= '0' && *q <= '9')
		q++;
	return q > p ? q : NULL;
}

/* A number at r->p, written as hr_json_dump writes what jansson reads of it. */
static bool number(rd *r)
{
	const char *p = r->p, *end = r->end, *start = p;
	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (!(p = digits(p, end)))
		return false;
	size_t intlen = (size_t)(p - start);
	bool real = false;
	if (p < end && *p == '.') {
		if (!(p = digits(p + 1, end)))
			return false;
		real = true;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!(p = digits(p, end)))
			return false;
		real = true;
	}
	size_t len = (size_t)(p - start);
	if (!real) {
		/* jansson: a json_integer (64 bits, else refused), written back in decimal.  Up to
		 * 18 digits always fits; "-0" reads as 0 (given up: rare, and one rule less). */
		if (intlen - (*start == '-') > 18 || (intlen == 2 && start[0] == '-' && start[1] == '0'))
			return false;
		hr_sbuf_addn(r->out, start, len);
	} else {
		char tmp[64], txt[40];
		if (len >= sizeof tmp)
			return false;
		memcpy(tmp, start, len);
		tmp[len] = '\0';
		double d = strtod(tmp, NULL);
		if (!isfinite(d)) /* jansson: "real number overflow" */
			return false;
		int tl = hr_json_real(txt, sizeof txt, d);
		hr_sbuf_addn(r->out, txt, (size_t)tl);
	}
	r->p = p;
	return true;
}

static bool value(rd *r, int depth);

/* At an object's or array's opening bracket: copy it; true when the closing one follows at once (copied too). */
static bool empty(rd *r, char close)
{
	hr_sbuf_addn(r->out, r->p++, 1);
	if (!take(r, close))
		return false;
	hr_sbuf_addn(r->out, &close, 1);
	return true;
}

/* After a member or an element: 1 at the closing bracket, 0 after a comma (another follows), -1 at
 * anything else.  Copies what it takes. */
static int next(rd *r, char close)
{
	if (take(r, close)) {
		hr_sbuf_addn(r->out, &close, 1);
		return 1;
	}
	if (!take(r, ','))
		return -1;
	hr_sbuf_addn(r->out, ",", 1);
	return 0;
}

static bool object(rd *r, int depth)
{
	struct {
		const char *s;
		size_t n;
	} keys[EVSCAN_MAX_KEYS];
	size_t nkeys = 0;
	if (empty(r, '}'))
		return true;
	int more = 0;
	while (!more) {
		ws(r);
		const char *k;
		size_t kn;
		bool esc;
		if (nkeys == EVSCAN_MAX_KEYS || !string(r, &k, &kn, &esc, false) || esc)
			return false;
		for (size_t i = 0; i < nkeys; i++) /* JSON_REJECT_DUPLICATES */
			if (keys[i].n == kn && memcmp(keys[i].s, k, kn) == 0)
				return false;
		keys[nkeys].s = k;
		keys[nkeys++].n = kn;
		if (!take(r, ':'))
			return false;
		hr_sbuf_addn(r->out, k - 1, kn + 2);
		hr_sbuf_addn(r->out, ":", 1);
		if (!value(r, depth + 1))
			return false;
		more = next(r, '}');
	}
	return more > 0;
}

static bool array(rd *r, int depth)
{
	if (empty(r, ']'))
		return true;
	int more = 0;
	while (!more) {
		if (!value(r, depth + 1))
			return false;
		more = next(r, ']');
	}
	return more > 0;
}

static bool word(rd *r, const char *w, size_t n)
{
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0)
		return false;
	hr_sbuf_addn(r->out, w, n);
	r->p += n;
	return true;
}

/* Any JSON value, written to r->out. */
static bool value(rd *r, int depth)
{
	if (depth > EVSCAN_MAX_DEPTH)
		return false;
	ws(r);
	if (r->p >= r->end)
		return false;
	switch (*r->p) {
	case '{':
		return object(r, depth);
	case '[':
		return array(r, depth);
	case '"': {
		const char *s;
		size_t n;
		bool esc;
		if (!string(r, &s, &n, &esc, false))
			return false;
		hr_sbuf_addn(r->out, s - 1, n + 2);
		return true;
	}
	case 't':
		return word(r, "true", 4);
	case 'f':
		return word(r, "false", 5);
	case 'n':
		return word(r, "null", 4);
	default:
		return number(r);
	}
}

static bool null(rd *r)
{
	ws(r);
	if ((size_t)(r->end - r->p) < 4 || memcmp(r->p, "null", 4) != 0)
		return false;
	r->p += 4;
	return true;
}

/* End a string of the text with its NUL (hr_sbuf keeps one more after it). */
static void end_text(hr_sbuf *b)
{
	hr_sbuf_addn(b, "", 1);
}

/* A string value without escapes (a name, a time), copied to the text; its offset. */
static bool plain(rd *r, size_t maxlen, bool del, size_t *off)
{
	const char *s;
	size_t n;
	bool esc;
	ws(r);
	if (!string(r, &s, &n, &esc, del) || esc || n == 0 || n > maxlen)
		return false;
	*off = r->out->n;
	hr_sbuf_addn(r->out, s, n);
	end_text(r->out);
	return true;
}

enum { F_NAME = 1, F_CONTACT = 2, F_PROPS = 4, F_AT = 8 };

static bool event(rd *r, evscan_event *e)
{
	e->name = e->props = e->at = EVSCAN_NONE;
	if (!take(r, '{'))
		return false;
	unsigned seen = 0;
	for (;;) {
		ws(r);
		const char *k;
		size_t kn;
		bool esc;
		if (!string(r, &k, &kn, &esc, false) || esc || !take(r, ':'))
			return false;
		unsigned f = kn == 4 && memcmp(k, "name", 4) == 0 ? F_NAME
			   : kn == 7 && memcmp(k, "contact", 7) == 0 ? F_CONTACT
			   : kn == 10 && memcmp(k, "properties", 10) == 0 ? F_PROPS
			   : kn == 11 && memcmp(k, "occurred_at", 11) == 0 ? F_AT
			   : 0;
		if (!f || (seen & f))
			return false;
		seen |= f;
		ws(r);
		switch (f) {
		case F_NAME:
			if (!plain(r, 128, true, &e->name))
				return false;
			break;
		case F_CONTACT: /* a reference is looked up: the usual way */
			if (!null(r))
				return false;
			break;
		case F_PROPS:
			if (r->p < r->end && *r->p == '{') {
				e->props = r->out->n;
				if (!object(r, 1))
					return false;
				end_text(r->out);
			} else if (!null(r)) {
				return false;
			}
			break;
		case F_AT:
			if (r->p < r->end && *r->p == '"') {
				if (!plain(r, 40, true, &e->at) || !jv_rfc3339(r->out->p + e->at))
					return false;
			} else if (!null(r)) {
				return false;
			}
			break;
		}
		if (take(r, '}'))
			return e->name != EVSCAN_NONE;
		if (!take(r, ','))
			return false;
	}
}

bool evscan_read(evscan *s, const char *buf, size_t len)
{
	s->n = 0;
	rd r = {buf, buf + len, &s->text};
	const char *k;
	size_t kn;
	bool esc;
	if (!take(&r, '{'))
		return false;
	ws(&r);
	if (!string(&r, &k, &kn, &esc, false) || esc || kn != 6 || memcmp(k, "events", 6) != 0 || !take(&r, ':') ||
	    !take(&r, '['))
		return false;
	do {
		if (s->n == EVSCAN_MAX_EVENTS || !event(&r, &s->ev[s->n]))
			return false;
		s->n++;
	} while (take(&r, ','));
	if (!take(&r, ']') || !take(&r, '}'))
		return false;
	ws(&r);
	return r.p == r.end;
}

void evscan_free(evscan *s)
{
	hr_free(s->text.p);
	s->text = (hr_sbuf){0};
	s->n = 0;
}
