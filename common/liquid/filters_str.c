/*
 * filters_str.c -- string, HTML and URL filters (see filters.h).
 * Strings are UTF-8; lengths and slices count characters like Ruby.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "filters.h"
#include "render.h"

static void sv(lq_ctx *c, lq_value v, const char **p, size_t *n) { lq_to_str(lq_ctx_arena(c), v, p, n); }

static bool set_buf(lq_ctx *c, lq_value *v, lq_buf *b)
{
	*v = lq_str(lq_arena_strndup(lq_ctx_arena(c), b->p ? b->p : "", b->n), b->n);
	lq_buf_free(b);
	return true;
}

static size_t utf8_len(const char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += ((unsigned char)p[i] & 0xC0) != 0x80;
	return k;
}

/* byte offset of character index ci (ci <= length) */
static size_t utf8_off(const char *p, size_t n, size_t ci)
{
	size_t i = 0, k = 0;
	while (i < n) {
		if (((unsigned char)p[i] & 0xC0) != 0x80) {
			if (k == ci)
				return i;
			k++;
		}
		i++;
	}
	return n;
}

FILTER(f_append)
{
	const char *a, *b;
	size_t an, bn;
	sv(c, *v, &a, &an);
	sv(c, ARG(0), &b, &bn);
	if (!lq_ctx_room(c, an + bn + 1))
		return false;
	char *s = lq_arena_alloc(lq_ctx_arena(c), an + bn + 1);
	memcpy(s, a, an);
	memcpy(s + an, b, bn);
	s[an + bn] = 0;
	*v = lq_str(s, an + bn);
	return true;
}

FILTER(f_prepend)
{
	lq_value x = ARG(0);
	lq_value in = *v;
	*v = x;
	lq_value a[1] = {in};
	return f_append(c, v, a, 1, kwn, kwv, nkw);
}

static bool map_bytes(lq_ctx *c, lq_value *v, int mode)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	char *s = lq_arena_strndup(lq_ctx_arena(c), p, n);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (mode == 0)
			s[i] = (char)tolower(ch);
		else if (mode == 1)
			s[i] = (char)toupper(ch);
		else
			s[i] = (char)(i == 0 ? toupper(ch) : tolower(ch));
	}
	*v = lq_str(s, n);
	return true;
}

FILTER(f_downcase) { return map_bytes(c, v, 0); }
FILTER(f_upcase) { return map_bytes(c, v, 1); }
FILTER(f_capitalize) { return map_bytes(c, v, 2); }

static void html_escape(lq_buf *b, const char *p, size_t n, bool once)
{
	for (size_t i = 0; i < n; i++) {
		switch (p[i]) {
		case '&':
			if (once) {
				/* keep an existing entity: &name; or &#123; */
				size_t j = i + 1;
				if (j < n && p[j] == '#') {
					j++;
					size_t d = j;
					while (j < n && isdigit((unsigned char)p[j]))
						j++;
					if (j > d && j < n && p[j] == ';') {
						lq_buf_putc(b, '&');
						break;
					}
				} else {
					size_t d = j;
					while (j < n && isalpha((unsigned char)p[j]))
						j++;
					if (j > d && j < n && p[j] == ';') {
						lq_buf_putc(b, '&');
						break;
					}
				}
			}
			lq_buf_puts(b, "&amp;");
			break;
		case '<': lq_buf_puts(b, "&lt;"); break;
		case '>': lq_buf_puts(b, "&gt;"); break;
		case '"': lq_buf_puts(b, "&quot;"); break;
		case '\'': lq_buf_puts(b, "&#39;"); break;
		default: lq_buf_putc(b, p[i]);
		}
	}
}

FILTER(f_escape)
{
	if (v->kind == LV_NIL)
		return true;
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	html_escape(&b, p, n, false);
	return set_buf(c, v, &b);
}

FILTER(f_escape_once)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	html_escape(&b, p, n, true);
	return set_buf(c, v, &b);
}

FILTER(f_url_encode)
{
	if (v->kind == LV_NIL)
		return true;
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (isalnum(ch) || ch == '_' || ch == '.' || ch == '-' || ch == '~')
			lq_buf_putc(&b, (char)ch);
		else if (ch == ' ')
			lq_buf_putc(&b, '+');
		else
			lq_buf_printf(&b, "%%%02X", ch);
	}
	return set_buf(c, v, &b);
}

static int hexv(int ch)
{
	if (isdigit(ch)) return ch - '0';
	if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
	return -1;
}

FILTER(f_url_decode)
{
	if (v->kind == LV_NIL)
		return true;
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '+')
			lq_buf_putc(&b, ' ');
		else if (p[i] == '%' && i + 2 < n + 0 && i + 2 <= n - 1 + 0 && hexv((unsigned char)p[i + 1]) >= 0 && hexv((unsigned char)p[i + 2]) >= 0) {
			lq_buf_putc(&b, (char)(hexv((unsigned char)p[i + 1]) * 16 + hexv((unsigned char)p[i + 2])));
			i += 2;
		} else
			lq_buf_putc(&b, p[i]);
	}
	return set_buf(c, v, &b);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool b64enc(lq_ctx *c, lq_value *v, bool url)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	for (size_t i = 0; i < n; i += 3) {
		unsigned x = (unsigned char)p[i] << 16;
		if (i + 1 < n) x |= (unsigned char)p[i + 1] << 8;
		if (i + 2 < n) x |= (unsigned char)p[i + 2];
		char o[4] = {B64[(x >> 18) & 63], B64[(x >> 12) & 63], B64[(x >> 6) & 63], B64[x & 63]};
		if (i + 1 >= n) o[2] = '=';
		if (i + 2 >= n) o[3] = '=';
		for (int k = 0; k < 4; k++) {
			if (url && o[k] == '+') o[k] = '-';
			if (url && o[k] == '/') o[k] = '_';
		}
		lq_buf_put(&b, o, 4);
	}
	return set_buf(c, v, &b);
}

static bool b64dec(lq_ctx *c, lq_value *v, bool url)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (url && ch == '-') ch = '+';
		if (url && ch == '_') ch = '/';
		if (ch == '=')
			break;
		const char *k = strchr(B64, ch);
		if (!k || !ch) {
			lq_buf_free(&b);
			return lq_fail(c, "invalid base64 provided to base64_decode");
		}
		acc = (acc << 6) | (unsigned)(k - B64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			lq_buf_putc(&b, (char)((acc >> bits) & 0xFF));
		}
	}
	return set_buf(c, v, &b);
}

FILTER(f_base64_encode) { return b64enc(c, v, false); }
FILTER(f_base64_decode) { return b64dec(c, v, false); }
FILTER(f_base64_url_safe_encode) { return b64enc(c, v, true); }
FILTER(f_base64_url_safe_decode) { return b64dec(c, v, true); }

static bool isws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' || ch == 0; }

static bool strip(lq_ctx *c, lq_value *v, bool l, bool r)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	if (l)
		while (n && isws(*p)) {
			p++;
			n--;
		}
	if (r)
		while (n && isws(p[n - 1]))
			n--;
	*v = lq_str(p, n);
	return true;
}

FILTER(f_strip) { return strip(c, v, true, true); }
FILTER(f_lstrip) { return strip(c, v, true, false); }
FILTER(f_rstrip) { return strip(c, v, false, true); }

static const char *ci_find(const char *p, const char *e, const char *w)
{
	size_t wn = strlen(w);
	for (; p + wn <= e; p++)
		if (strncasecmp(p, w, wn) == 0)
			return p;
	return NULL;
}

FILTER(f_strip_html)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	const char *e = p + n;
	lq_buf b = {0};
	/* Ruby: remove <script>...</script>, <!-- -->, <style>...</style>,
	 * then any <...>. */
	while (p < e) {
		if (*p == '<') {
			const char *end = NULL;
			if ((size_t)(e - p) >= 7 && strncasecmp(p, "<script", 7) == 0) {
				const char *q = ci_find(p, e, "</script>");
				if (q)
					end = q + 9;
			} else if ((size_t)(e - p) >= 6 && strncasecmp(p, "<style", 6) == 0) {
				const char *q = ci_find(p, e, "</style>");
				if (q)
					end = q + 8;
			} else if ((size_t)(e - p) >= 4 && memcmp(p, "<!--", 4) == 0) {
				const char *q = ci_find(p + 4, e, "-->");
				if (q)
					end = q + 3;
			}
			if (!end) {
				const char *q = memchr(p, '>', (size_t)(e - p));
				if (q)
					end = q + 1;
			}
			if (end) {
				p = end;
				continue;
			}
		}
		lq_buf_putc(&b, *p++);
	}
	return set_buf(c, v, &b);
}

FILTER(f_strip_newlines)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	for (size_t i = 0; i < n; i++)
		if (p[i] != '\n' && p[i] != '\r')
			lq_buf_putc(&b, p[i]);
	return set_buf(c, v, &b);
}

FILTER(f_newline_to_br)
{
	const char *p;
	size_t n;
	sv(c, *v, &p, &n);
	lq_buf b = {0};
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
			continue;
		if (p[i] == '\n')
			lq_buf_puts(&b, "<br />\n");
		else
			lq_buf_putc(&b, p[i]);
	}
	return set_buf(c, v, &b);
}

/* mode: 0 all, 1 first, 2 last */
static bool replace(lq_ctx *c, lq_value *v, lq_value pat, lq_value rep, int mode)
{
	const char *p, *q, *r;
	size_t n, qn, rn;
	sv(c, *v, &p, &n);
	sv(c, pat, &q, &qn);
	sv(c, rep, &r, &rn);
	lq_buf b = {0};
	if (qn == 0) {
		if (!lq_ctx_room(c, n + (n + 1) * rn))
			return false;
		/* Ruby gsub("") inserts between characters; sub("") prepends. */
		if (mode == 1) {
			lq_buf_put(&b, r, rn);
			lq_buf_put(&b, p, n);
		} else if (mode == 2) {
			lq_buf_put(&b, p, n);
			lq_buf_put(&b, r, rn);
		} else {
			lq_buf_put(&b, r, rn);
			for (size_t i = 0; i < n; i++) {
				lq_buf_putc(&b, p[i]);
				if (i + 1 == n || ((unsigned char)p[i + 1] & 0xC0) != 0x80)
					lq_buf_put(&b, r, rn);
			}
		}
		return set_buf(c, v, &b);
	}
	if (mode == 2) {
		const char *last = NULL;
		for (const char *s = p; s + qn <= p + n;) {
			const char *f = memmem(s, (size_t)(p + n - s), q, qn);
			if (!f)
				break;
			last = f;
			s = f + 1;
		}
		if (!last) {
			*v = lq_str(p, n);
			return true;
		}
		lq_buf_put(&b, p, (size_t)(last - p));
		lq_buf_put(&b, r, rn);
		lq_buf_put(&b, last + qn, (size_t)(p + n - last - qn));
		return set_buf(c, v, &b);
	}
	if (mode == 0 && rn > qn) {
		/* result size first: n matches x a long replacement multiplies */
		size_t cnt = 0;
		for (const char *x = p; (x = memmem(x, (size_t)(p + n - x), q, qn)); x += qn)
			cnt++;
		if (!lq_ctx_room(c, n + cnt * (rn - qn))) {
			lq_buf_free(&b);
			return false;
		}
	}
	const char *s = p, *e = p + n;
	while (s < e) {
		const char *f = memmem(s, (size_t)(e - s), q, qn);
		if (!f)
			break;
		lq_buf_put(&b, s, (size_t)(f - s));
		lq_buf_put(&b, r, rn);
		s = f + qn;
		if (mode == 1)
			break;
	}
	lq_buf_put(&b, s, (size_t)(e - s));
	return set_buf(c, v, &b);
}

FILTER(f_replace) { return replace(c, v, ARG(0), ARG(1), 0); }
FILTER(f_replace_first) { return replace(c, v, ARG(0), ARG(1), 1); }
FILTER(f_replace_last) { return replace(c, v, ARG(0), ARG(1), 2); }
FILTER(f_remove) { return replace(c, v, ARG(0), lq_str("", 0), 0); }
FILTER(f_remove_first) { return replace(c, v, ARG(0), lq_str("", 0), 1); }
FILTER(f_remove_last) { return replace(c, v, ARG(0), lq_str("", 0), 2); }

FILTER(f_size)
{
	switch (v->kind) {
	case LV_STR:
		*v = lq_int((int64_t)utf8_len(v->u.s.p, v->u.s.n));
		return true;
	case LV_ARRAY:
	case LV_JSON:
	case LV_RANGE:
		*v = lq_int((int64_t)lq_arr_len(*v));
		return true;
	case LV_INT:
		*v = lq_int(8);
		return true;
	default:
		*v = lq_int(0);
		return true;
	}
}

FILTER(f_slice)
{
	int64_t off, len = 1;
	if (!lq_to_integer(ARG(0), &off))
		return lq_fail(c, "invalid integer");
	if (nargs > 1 && args[1].kind != LV_NIL && !lq_to_integer(args[1], &len))
		return lq_fail(c, "invalid integer");
	if (lq_is_array(*v)) {
		int64_t n = (int64_t)lq_arr_len(*v);
		if (off < 0)
			off += n;
		if (off < 0 || off > n || len < 0) {
			*v = lq_array_value(lq_array_new(lq_ctx_arena(c), 0));
			return true;
		}
		if (len > n - off)
			len = n - off;
		lq_array *a = lq_array_new(lq_ctx_arena(c), (size_t)len);
		for (int64_t i = 0; i < len; i++)
			a->v[i] = lq_arr_get(*v, (size_t)(off + i));
		*v = lq_array_value(a);
		return true;
	}
	const char *p;
	size_t bn;
	sv(c, *v, &p, &bn);
	int64_t n = (int64_t)utf8_len(p, bn);
	if (off < 0)
		off += n;
	if (off < 0 || off > n || len < 0) {
		*v = lq_str("", 0);
		return true;
	}
	if (len > n - off)
		len = n - off;
	size_t b0 = utf8_off(p, bn, (size_t)off), b1 = utf8_off(p, bn, (size_t)(off + len));
	*v = lq_str(p + b0, b1 - b0);
	return true;
}

FILTER(f_truncate)
{
	if (v->kind == LV_NIL)
		return true;
	int64_t len = 50;
	if (nargs > 0 && !lq_to_integer(args[0], &len))
		return lq_fail(c, "invalid integer");
	const char *p, *t = "...";
	size_t bn, tn = 3;
	sv(c, *v, &p, &bn);
	if (nargs > 1)
		sv(c, args[1], &t, &tn);
	int64_t n = (int64_t)utf8_len(p, bn);
	if (n <= len) {
		*v = lq_str(p, bn);
		return true;
	}
	int64_t l = len - (int64_t)utf8_len(t, tn);
	if (l < 0)
		l = 0;
	size_t cut = utf8_off(p, bn, (size_t)l);
	lq_buf b = {0};
	lq_buf_put(&b, p, cut);
	lq_buf_put(&b, t, tn);
	return set_buf(c, v, &b);
}

FILTER(f_truncatewords)
{
	if (v->kind == LV_NIL)
		return true;
	int64_t words = 15;
	if (nargs > 0 && !lq_to_integer(args[0], &words))
		return lq_fail(c, "invalid integer");
	if (words <= 0)
		words = 1;
	const char *p, *t = "...";
	size_t n, tn = 3;
	sv(c, *v, &p, &n);
	if (nargs > 1)
		sv(c, args[1], &t, &tn);
	lq_buf b = {0};
	size_t i = 0;
	int64_t k = 0;
	while (i < n) {
		while (i < n && isws(p[i]) && p[i])
			i++;
		if (i >= n)
			break;
		size_t s = i;
		while (i < n && !(isws(p[i]) && p[i]))
			i++;
		if (k == words) {
			lq_buf_put(&b, t, tn);
			return set_buf(c, v, &b);
		}
		if (k)
			lq_buf_putc(&b, ' ');
		lq_buf_put(&b, p + s, i - s);
		k++;
	}
	lq_buf_free(&b);
	*v = lq_str(p, n);
	return true;
}

FILTER(f_split)
{
	const char *p, *q;
	size_t n, qn;
	sv(c, *v, &p, &n);
	sv(c, ARG(0), &q, &qn);
	lq_arena *a = lq_ctx_arena(c);
	/* count upper bound, then fill */
	size_t cap = n + 1, k = 0;
	lq_value *items = lq_arena_alloc(a, cap * sizeof *items);
	if (v->kind == LV_NIL || n == 0) {
		lq_array *arr = lq_array_new(a, 0);
		*v = lq_array_value(arr);
		return true;
	}
	if (qn == 1 && q[0] == ' ') {
		/* awk-style: runs of whitespace, leading ignored */
		size_t i = 0;
		while (i < n) {
			while (i < n && isws(p[i]) && p[i])
				i++;
			if (i >= n)
				break;
			size_t s = i;
			while (i < n && !(isws(p[i]) && p[i]))
				i++;
			items[k++] = lq_str(p + s, i - s);
		}
	} else if (qn == 0) {
		for (size_t i = 0; i < n;) {
			size_t s = i++;
			while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80)
				i++;
			items[k++] = lq_str(p + s, i - s);
		}
	} else {
		const char *s = p, *e = p + n;
		for (;;) {
			const char *f = memmem(s, (size_t)(e - s), q, qn);
			if (!f) {
				items[k++] = lq_str(s, (size_t)(e - s));
				break;
			}
			items[k++] = lq_str(s, (size_t)(f - s));
			s = f + qn;
		}
		while (k && items[k - 1].u.s.n == 0)
			k--; /* Ruby drops trailing empty fields */
	}
	lq_array *arr = lq_arena_alloc(a, sizeof *arr);
	arr->n = k;
	arr->v = items;
	*v = lq_array_value(arr);
	return true;
}

FILTER(f_default)
{
	bool allow_false = false;
	for (int i = 0; i < nkw; i++)
		if (strcmp(kwn[i], "allow_false") == 0)
			allow_false = lq_truthy(kwv[i]);
	bool use = allow_false ? v->kind == LV_NIL : !lq_truthy(*v);
	if (!use && (v->kind == LV_STR || lq_is_array(*v) || lq_is_hash(*v)))
		use = lq_is_empty(*v);
	if (use)
		*v = nargs > 0 ? args[0] : lq_str("", 0);
	return true;
}

const lq_filter_def lq_filters_str[] = {
	{"append", f_append},
	{"prepend", f_prepend},
	{"downcase", f_downcase},
	{"upcase", f_upcase},
	{"capitalize", f_capitalize},
	{"escape", f_escape},
	{"h", f_escape},
	{"escape_once", f_escape_once},
	{"url_encode", f_url_encode},
	{"url_decode", f_url_decode},
	{"base64_encode", f_base64_encode},
	{"base64_decode", f_base64_decode},
	{"base64_url_safe_encode", f_base64_url_safe_encode},
	{"base64_url_safe_decode", f_base64_url_safe_decode},
	{"strip", f_strip},
	{"lstrip", f_lstrip},
	{"rstrip", f_rstrip},
	{"strip_html", f_strip_html},
	{"strip_newlines", f_strip_newlines},
	{"newline_to_br", f_newline_to_br},
	{"replace", f_replace},
	{"replace_first", f_replace_first},
	{"replace_last", f_replace_last},
	{"remove", f_remove},
	{"remove_first", f_remove_first},
	{"remove_last", f_remove_last},
	{"size", f_size},
	{"slice", f_slice},
	{"truncate", f_truncate},
	{"truncatewords", f_truncatewords},
	{"split", f_split},
	{"default", f_default},
	{NULL, NULL},
};
