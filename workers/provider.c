/*
 * provider.c -- provider account parsing and cache.  See provider.h.
 */
#include "provider.h"

#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "crypto.h"
#include "log.h"

struct wk_providers {
	wk_provider *head, *tail; /* most recently used first */
	unsigned count;
	unsigned max_idle;        /* unreferenced providers kept at most */
	uint64_t serial;          /* last serial handed out */
};

const char *wk_transport_name(wk_transport_kind k)
{
	static const char *const names[WK_TR_COUNT] = {"sink", "smtp", "http"};
	return k < WK_TR_COUNT ? names[k] : "?";
}

wk_providers *wk_providers_new(unsigned max_idle)
{
	wk_providers *ps = hr_calloc(1, sizeof *ps);
	ps->max_idle = max_idle;
	return ps;
}

static void provider_free(wk_provider *p)
{
	hr_free(p->key);
	hr_free(p->name);
	hr_free(p->url);
	hr_free(p->username);
	if (p->password) {
		/* A credential: do not leave it in freed memory. */
		memset(p->password, 0, strlen(p->password));
		hr_free(p->password);
	}
	hr_free(p->envelope_from);
	hr_free(p->method);
	curl_slist_free_all(p->headers);
	liquid_template_free(p->body);
	liquid_template_free(p->unsubscribe);
	memset(p->track_key, 0, sizeof p->track_key);
	hr_free(p);
}

static void unlink_p(wk_providers *ps, wk_provider *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		ps->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		ps->tail = p->prev;
	p->prev = p->next = NULL;
	ps->count--;
}

static void push_front(wk_providers *ps, wk_provider *p)
{
	p->prev = NULL;
	p->next = ps->head;
	if (ps->head)
		ps->head->prev = p;
	ps->head = p;
	if (!ps->tail)
		ps->tail = p;
	ps->count++;
}

void wk_providers_free(wk_providers *ps)
{
	if (!ps)
		return;
	while (ps->head) {
		wk_provider *p = ps->head;
		unlink_p(ps, p);
		provider_free(p);
	}
	hr_free(ps);
}

/* Optional string field: NULL when absent; false when present and not a string. */
static bool opt_str(json_t *o, const char *key, char **out, hr_err *err)
{
	json_t *v = json_object_get(o, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v))
		return hr_fail(err, HR_ERR_INVALID, key, "provider.%s: want a string", key);
	*out = hr_strndup(json_string_value(v), json_string_length(v));
	if (strlen(*out) != json_string_length(v))
		return hr_fail(err, HR_ERR_INVALID, key, "provider.%s: contains a NUL byte", key);
	return true;
}

static bool opt_int(json_t *o, const char *key, long min, long max, long *out, hr_err *err)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return hr_fail(err, HR_ERR_INVALID, key, "provider.%s: want an integer %ld..%ld", key,
			       min, max);
	*out = (long)json_integer_value(v);
	return true;
}

static bool opt_template(json_t *o, const char *key, liquid_template **out, hr_err *err)
{
	char *src = NULL;
	*out = NULL;
	if (!opt_str(o, key, &src, err))
		return false;
	if (!src)
		return true;
	liquid_parse_opts po = {.mode = LIQUID_LAX, .name = key};
	liquid_error le;
	bool ok = liquid_parse(src, strlen(src), &po, out, &le);
	hr_free(src);
	if (!ok)
		return hr_fail(err, HR_ERR_INVALID, key, "provider.%s: %s", key, le.message);
	return true;
}

static bool parse(const char *json, size_t len, wk_provider *p, hr_err *err)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	char *transport = NULL, *use_ssl = NULL;
	bool ok = false;
	if (!o || !json_is_object(o)) {
		hr_fail(err, HR_ERR_INVALID, "provider", "provider: not a JSON object%s%s",
			o ? "" : ": ", o ? "" : je.text);
		goto fail;
	}
	if (!opt_str(o, "transport", &transport, err) || !opt_str(o, "name", &p->name, err) ||
	    !opt_str(o, "url", &p->url, err) || !opt_str(o, "use_ssl", &use_ssl, err) ||
	    !opt_str(o, "username", &p->username, err) || !opt_str(o, "password", &p->password, err) ||
	    !opt_str(o, "envelope_from", &p->envelope_from, err) ||
	    !opt_str(o, "method", &p->method, err))
		goto fail;
	if (!p->name)
		p->name = hr_strdup("");
	if (!transport) {
		hr_fail(err, HR_ERR_INVALID, "transport", "provider.transport: missing");
		goto fail;
	}
	if (!strcmp(transport, "sink")) {
		p->kind = WK_TR_SINK;
	} else if (!strcmp(transport, "smtp")) {
		p->kind = WK_TR_SMTP;
	} else if (!strcmp(transport, "http")) {
		p->kind = WK_TR_HTTP;
	} else {
		hr_fail(err, HR_ERR_INVALID, "transport",
			"provider.transport: '%s' is not sink, smtp or http", transport);
		goto fail;
	}
	if (p->kind == WK_TR_SMTP && (!p->url || strncmp(p->url, "smtp", 4) != 0)) {
		hr_fail(err, HR_ERR_INVALID, "url", "provider.url: want smtp://host:port or smtps://");
		goto fail;
	}
	if (p->kind == WK_TR_HTTP && p->url && strncmp(p->url, "http://", 7) != 0 &&
	    strncmp(p->url, "https://", 8) != 0) {
		hr_fail(err, HR_ERR_INVALID, "url", "provider.url: want http:// or https://");
		goto fail;
	}
	p->use_ssl = CURLUSESSL_NONE;
	if (use_ssl) {
		if (!strcmp(use_ssl, "try")) {
			p->use_ssl = CURLUSESSL_TRY;
		} else if (!strcmp(use_ssl, "all")) {
			p->use_ssl = CURLUSESSL_ALL;
		} else if (strcmp(use_ssl, "none") != 0) {
			hr_fail(err, HR_ERR_INVALID, "use_ssl", "provider.use_ssl: want none, try or all");
			goto fail;
		}
	}
	if (p->envelope_from && strpbrk(p->envelope_from, "\r\n<> ")) {
		hr_fail(err, HR_ERR_INVALID, "envelope_from", "provider.envelope_from: not an address");
		goto fail;
	}
	json_t *tr = json_object_get(o, "tracking");
	if (tr && !json_is_null(tr)) {
		const char *hex = json_string_value(json_object_get(tr, "key"));
		json_t *op = json_object_get(tr, "opens"), *cl = json_object_get(tr, "clicks");
		if (!json_is_object(tr) || !hex || !hr_key_from_hex(hex, p->track_key, err) ||
		    (op && !json_is_boolean(op)) || (cl && !json_is_boolean(cl))) {
			hr_fail(err, HR_ERR_INVALID, "tracking",
				"provider.tracking: want {\"key\": 64 hex digits, \"opens\": bool, \"clicks\": bool}");
			goto fail;
		}
		p->tracking = true;
		p->track_opens = !op || json_is_true(op);
		p->track_clicks = !cl || json_is_true(cl);
	}
	long conc = 0;
	if (!opt_int(o, "concurrency", 1, 100000, &conc, err) ||
	    !opt_int(o, "timeout_ms", 1, 3600000, &p->timeout_ms, err))
		goto fail;
	p->concurrency = (uint32_t)conc;
	if (!p->method)
		p->method = hr_strdup("POST");
	for (const char *c = p->method; *c; c++)
		if (*c < 'A' || *c > 'Z') {
			hr_fail(err, HR_ERR_INVALID, "method", "provider.method: want an HTTP method");
			goto fail;
		}
	json_t *h = json_object_get(o, "headers");
	if (h && !json_is_null(h)) {
		if (!json_is_object(h)) {
			hr_fail(err, HR_ERR_INVALID, "headers", "provider.headers: want an object");
			goto fail;
		}
		const char *k;
		json_t *v;
		json_object_foreach(h, k, v)
		{
			if (!json_is_string(v) || strpbrk(k, "\r\n: ") || !*k ||
			    strpbrk(json_string_value(v), "\r\n")) {
				hr_fail(err, HR_ERR_INVALID, "headers",
					"provider.headers.%s: want a one-line string", k);
				goto fail;
			}
			char *line = hr_sprintf("%s: %s", k, json_string_value(v));
			p->headers = curl_slist_append(p->headers, line);
			hr_free(line);
			if (!p->headers)
				hr_panic("curl_slist_append: out of memory");
		}
	}
	if (!opt_template(o, "body", &p->body, err) ||
	    !opt_template(o, "unsubscribe_url", &p->unsubscribe, err))
		goto fail;
	ok = true;
fail:
	hr_free(transport);
	hr_free(use_ssl);
	json_decref(o);
	return ok;
}

bool wk_provider_get(wk_providers *ps, const char *json, size_t len, wk_provider **out, hr_err *err)
{
	for (wk_provider *p = ps->head; p; p = p->next) {
		if (p->key_len == len && memcmp(p->key, json, len) == 0) {
			unlink_p(ps, p);
			push_front(ps, p);
			p->refs++;
			*out = p;
			return true;
		}
	}
	wk_provider *p = hr_calloc(1, sizeof *p);
	if (!parse(json, len, p, err)) {
		provider_free(p);
		return false;
	}
	p->key = hr_strndup(json, len);
	p->key_len = len;
	p->refs = 1;
	p->serial = ++ps->serial;
	push_front(ps, p);
	/* Bound the cache: free the least recently used idle providers. */
	for (wk_provider *q = ps->tail; q && ps->count > ps->max_idle;) {
		wk_provider *prev = q->prev;
		if (q->refs == 0 && q->inflight == 0) {
			unlink_p(ps, q);
			provider_free(q);
		}
		q = prev;
	}
	*out = p;
	return true;
}

void wk_provider_put(wk_providers *ps, wk_provider *p)
{
	if (p->refs == 0)
		hr_panic("provider %s: put without get", p->name);
	p->refs--;
}
