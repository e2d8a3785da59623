/*
 * tracking.c -- link rewriting, open pixel, unsubscribe URL.  See tracking.h.
 */
#include "tracking.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "track.h"

static void add_token_url(const wk_track_ctx *t, const char *path, hr_track_kind kind, const char *url, size_t ulen,
			  wk_buf *out)
{
	hr_track_token tok = {.kind = kind, .tenant_id = t->tenant_id, .message_id = t->message_id,
			      .contact_id = t->contact_id, .url = url, .url_len = ulen};
	char *s = hr_track_encode(t->key, &tok);
	if (!s)
		return;
	wk_buf_str(out, t->base);
	wk_buf_str(out, path);
	wk_buf_str(out, s);
	hr_free(s);
}

void wk_track_unsubscribe_url(const wk_track_ctx *t, wk_buf *out)
{
	add_token_url(t, "/v1/unsubscribe/", HR_TRACK_UNSUBSCRIBE, NULL, 0, out);
}

/* The value's text with &amp; (and &#38;) decoded, into dec (heap); its length. */
static size_t decode_amp(const char *v, size_t n, char **dec)
{
	char *d = hr_malloc(n + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '&' && n - i >= 5 && !strncasecmp(v + i, "&amp;", 5)) {
			d[k++] = '&';
			i += 4;
		} else if (v[i] == '&' && n - i >= 5 && !strncmp(v + i, "&#38;", 5)) {
			d[k++] = '&';
			i += 4;
		} else {
			d[k++] = v[i];
		}
	}
	d[k] = '\0';
	*dec = d;
	return k;
}

/* Within one <a ...> tag [p, end): copy it to out with its href rewritten. */
static void rewrite_tag(const wk_track_ctx *t, const char *p, const char *end, wk_buf *out)
{
	const char *q = p + 2; /* after "<a" */
	while (q < end) {
		/* an attribute name starts after whitespace */
		if (!isspace((unsigned char)q[-1]) || end - q < 5 || strncasecmp(q, "href", 4) != 0) {
			q++;
			continue;
		}
		const char *e = q + 4;
		while (e < end && isspace((unsigned char)*e))
			e++;
		if (e >= end || *e != '=') {
			q++;
			continue;
		}
		e++;
		while (e < end && isspace((unsigned char)*e))
			e++;
		char quote = e < end && (*e == '"' || *e == '\'') ? *e : 0;
		const char *vs = quote ? e + 1 : e, *ve = vs;
		while (ve < end && (quote ? *ve != quote : !isspace((unsigned char)*ve) && *ve != '>'))
			ve++;
		if (quote && ve >= end)
			break; /* unterminated: leave the tag as it is */
		/* trim blanks around the URL */
		const char *us = vs, *ue = ve;
		while (us < ue && isspace((unsigned char)*us))
			us++;
		while (ue > us && isspace((unsigned char)ue[-1]))
			ue--;
		char *url;
		size_t ulen = decode_amp(us, (size_t)(ue - us), &url);
		size_t blen = strlen(t->base);
		bool own = ulen >= blen && !strncmp(url, t->base, blen);
		if (!own && hr_track_url_ok(url, ulen)) {
			wk_buf_add(out, p, (size_t)(vs - p));
			add_token_url(t, "/v1/t/click/", HR_TRACK_CLICK, url, ulen, out);
			wk_buf_add(out, ve, (size_t)(end - ve));
			hr_free(url);
			return;
		}
		hr_free(url);
		break;
	}
	wk_buf_add(out, p, (size_t)(end - p));
}

void wk_track_html(const wk_track_ctx *t, const char *html, wk_buf *out)
{
	size_t start = out->len;
	const char *p = html;
	if (t->clicks) {
		for (;;) {
			const char *a = strchr(p, '<');
			if (!a)
				break;
			bool anchor = (a[1] == 'a' || a[1] == 'A') && (isspace((unsigned char)a[2]));
			const char *end = anchor ? strchr(a, '>') : NULL;
			if (!end) {
				wk_buf_add(out, p, (size_t)(a - p) + 1);
				p = a + 1;
				continue;
			}
			wk_buf_add(out, p, (size_t)(a - p));
			rewrite_tag(t, a, end, out);
			p = end;
		}
	}
	wk_buf_str(out, p);
	if (!t->opens)
		return;
	wk_buf pix = {0};
	wk_buf_str(&pix, "<img src=\"");
	add_token_url(t, "/v1/t/open/", HR_TRACK_OPEN, NULL, 0, &pix);
	wk_buf_str(&pix, "\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0;width:1px;height:1px\">");
	/* before the last </body>, if there is one */
	const char *body = NULL;
	for (const char *s = out->p + start; (s = strchr(s, '<')); s++)
		if (!strncasecmp(s, "</body", 6))
			body = s;
	if (body) {
		size_t at = (size_t)(body - out->p), tail = out->len - at;
		char *rest = hr_strndup(body, tail);
		out->len = at;
		wk_buf_add(out, pix.p, pix.len);
		wk_buf_add(out, rest, tail);
		hr_free(rest);
	} else {
		wk_buf_add(out, pix.p, pix.len);
	}
	wk_buf_free(&pix);
}
