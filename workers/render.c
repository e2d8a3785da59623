/*
 * render.c -- content compilation and per-job rendering.  See render.h.
 */
#include "render.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "liquid_cache.h"
#include "tracking.h"

struct wk_render {
	liquid_limits limits;     /* the engine's defaults, tightened for messages */
	liquid_cache *cache;      /* stored templates, shared by all leases */
	liquid_renderer *renderer; /* reused for every render (loop thread only) */
	char *public_url;         /* track_public_url without a trailing '/', NULL = no tracking */
	wk_buf scratch;           /* the tracked html and unsubscribe URL, reused */
	uint64_t renders, errors;
};

/* One compiled field of a lease's content. */
typedef struct cfield {
	liquid_cache_entry *entry; /* stored template: held until the lease ends */
	liquid_template *inline_t; /* inline content: owned */
} cfield;

struct wk_content {
	cfield f[WK_F_CONTENT_COUNT];
	json_t *snippets; /* content.snippets {name: source} for the partial loader, or NULL */
};

static const char *const field_names[WK_F_CONTENT_COUNT] = {
	[WK_F_SUBJECT] = "subject", [WK_F_HTML] = "html",   [WK_F_TEXT] = "text",
	[WK_F_FROM] = "from",       [WK_F_REPLY_TO] = "reply_to", [WK_F_TITLE] = "title",
	[WK_F_BODY] = "body",
};


const char *wk_msg_get(const wk_message *m, wk_field f)
{
	return m->set[f] ? m->text.p + m->off[f] : "";
}

void wk_message_reset(wk_message *m)
{
	wk_buf_reset(&m->text);
	memset(m->set, 0, sizeof m->set);
}

void wk_message_free(wk_message *m)
{
	wk_buf_free(&m->text);
}

wk_render *wk_render_new(size_t max_entries, size_t max_bytes)
{
	wk_render *r = hr_calloc(1, sizeof *r);
	/* Start from the engine's defaults (new bounds get sane values), then
	 * tighten: a message is small, and a runaway template must not take the
	 * worker over its memory budget. */
	r->limits = liquid_default_limits;
	r->limits.max_template_size = 512 * 1024;
	r->limits.max_output_size = 1024 * 1024;
	r->limits.max_loop_iterations = 1000000;
	if (r->limits.max_render_memory > 4u << 20)
		r->limits.max_render_memory = 4u << 20;
	r->cache = liquid_cache_new(max_entries, max_bytes);
	r->renderer = liquid_renderer_new();
	return r;
}

void wk_render_free(wk_render *r)
{
	if (!r)
		return;
	liquid_renderer_free(r->renderer);
	liquid_cache_free(r->cache);
	hr_free(r->public_url);
	wk_buf_free(&r->scratch);
	hr_free(r);
}

void wk_render_set_public_url(wk_render *r, const char *url)
{
	hr_free(r->public_url);
	r->public_url = NULL;
	if (url && *url) {
		size_t n = strlen(url);
		while (n && url[n - 1] == '/')
			n--;
		r->public_url = hr_strndup(url, n);
	}
}

/* Set field f of m to s (appended to the message's buffer). */
static void set_field(wk_message *m, wk_field f, const char *s, size_t n)
{
	m->off[f] = m->text.len;
	wk_buf_add(&m->text, s, n);
	wk_buf_ch(&m->text, '\0');
	m->set[f] = true;
}

wk_render_stats wk_render_stats_get(wk_render *r)
{
	liquid_cache_stats cs = liquid_cache_stats_get(r->cache);
	return (wk_render_stats){.renders = r->renders,
				 .errors = r->errors,
				 .cache_hits = cs.hits,
				 .cache_misses = cs.misses,
				 .cache_entries = cs.entries,
				 .cache_bytes = cs.bytes};
}

/* Which content fields a channel uses, and which it requires. */
static unsigned channel_fields(int channel, unsigned *required)
{
	switch (channel) {
	case HR_CH_EMAIL:
		*required = 1u << WK_F_FROM;
		return 1u << WK_F_SUBJECT | 1u << WK_F_HTML | 1u << WK_F_TEXT | 1u << WK_F_FROM |
		       1u << WK_F_REPLY_TO;
	case HR_CH_SMS:
	case HR_CH_MESSENGER:
		*required = 1u << WK_F_TEXT;
		return 1u << WK_F_TEXT;
	case HR_CH_PUSH:
		*required = 1u << WK_F_BODY;
		return 1u << WK_F_TITLE | 1u << WK_F_BODY;
	case HR_CH_WEBHOOK:
		*required = 1u << WK_F_BODY;
		return 1u << WK_F_BODY;
	default:
		*required = 0;
		return 0;
	}
}

void wk_content_close(wk_render *r, wk_content *c)
{
	if (!c)
		return;
	for (int i = 0; i < WK_F_CONTENT_COUNT; i++) {
		if (c->f[i].entry)
			liquid_cache_release(r->cache, c->f[i].entry);
		liquid_template_free(c->f[i].inline_t);
	}
	json_decref(c->snippets);
	hr_free(c);
}

bool wk_content_open(wk_render *r, const hr_job_batch *b, wk_content **out, hr_err *err)
{
	json_error_t je;
	wk_content *c = hr_calloc(1, sizeof *c);
	json_t *o = json_loadb(b->content.p, b->content.len, JSON_REJECT_DUPLICATES, &je);
	if (!o || !json_is_object(o)) {
		hr_fail(err, HR_ERR_INVALID, "content", "content: not a JSON object%s%s", o ? "" : ": ",
			o ? "" : je.text);
		goto fail;
	}
	/* The snippets a stored version rendered when it was saved (api/templates.c
	 * snapshots them), or that inline content brings along: {name: source}. */
	json_t *sn = json_object_get(o, "snippets");
	if (sn && !json_is_null(sn)) {
		bool strings = json_is_object(sn);
		const char *k;
		json_t *src;
		if (strings)
			json_object_foreach(sn, k, src) strings = strings && json_is_string(src);
		if (!strings) {
			hr_fail(err, HR_ERR_INVALID, "snippets", "content.snippets: want an object of strings");
			goto fail;
		}
		c->snippets = json_incref(sn);
	}
	unsigned required, fields = channel_fields(b->channel, &required);
	if (!fields) {
		hr_fail(err, HR_ERR_INVALID, "channel", "channel %d: unknown", b->channel);
		goto fail;
	}
	char tenant[16], id[64];
	snprintf(tenant, sizeof tenant, "%u", b->tenant_id);
	for (int i = 0; i < WK_F_CONTENT_COUNT; i++) {
		if (!(fields & (1u << i)))
			continue;
		json_t *v = json_object_get(o, field_names[i]);
		if (!v || json_is_null(v)) {
			if (required & (1u << i)) {
				hr_fail(err, HR_ERR_INVALID, field_names[i], "content.%s: missing",
					field_names[i]);
				goto fail;
			}
			continue;
		}
		if (!json_is_string(v)) {
			hr_fail(err, HR_ERR_INVALID, field_names[i], "content.%s: want a string",
				field_names[i]);
			goto fail;
		}
		liquid_parse_opts po = {.mode = LIQUID_LAX, .limits = &r->limits, .name = field_names[i]};
		liquid_error le;
		bool ok;
		if (b->template_id == 0) {
			ok = liquid_parse(json_string_value(v), json_string_length(v), &po, &c->f[i].inline_t, &le);
		} else {
			snprintf(id, sizeof id, "%llu:%s", (unsigned long long)b->template_id, field_names[i]);
			ok = liquid_cache_acquire(r->cache, tenant, id, b->template_version,
						  json_string_value(v), json_string_length(v), &po,
						  &c->f[i].entry, &le);
		}
		if (!ok) {
			hr_fail(err, HR_ERR_INVALID, field_names[i], "content.%s: %s", field_names[i],
				le.message);
			goto fail;
		}
	}
	if (b->channel == HR_CH_EMAIL && !c->f[WK_F_HTML].entry && !c->f[WK_F_HTML].inline_t &&
	    !c->f[WK_F_TEXT].entry && !c->f[WK_F_TEXT].inline_t) {
		hr_fail(err, HR_ERR_INVALID, "text", "content: email needs html or text");
		goto fail;
	}
	json_decref(o);
	*out = c;
	return true;
fail:
	json_decref(o);
	wk_content_close(r, c);
	return false;
}

static const liquid_template *field_template(const wk_content *c, int i)
{
	if (c->f[i].entry)
		return liquid_cache_template(c->f[i].entry);
	return c->f[i].inline_t;
}

/* {% render %} / {% include %}: the content's snippets (the renderer compiles
 * each once and caches it by name and exact source). */
static bool snippet_load(void *ud, const char *name, size_t name_len, const char **src, size_t *src_len)
{
	json_t *s = json_object_getn(ud, name, name_len);
	if (!json_is_string(s))
		return false;
	*src = json_string_value(s);
	*src_len = json_string_length(s);
	return true;
}

/* Render t into field f of m; snippets may be NULL. */
static bool render_into(wk_render *r, const liquid_template *t, json_t *data, json_t *snippets,
			wk_message *m, wk_field f, const char *name, hr_err *err)
{
	liquid_render_opts ro = {.mode = LIQUID_LAX, .limits = &r->limits,
				 .loader = snippets ? snippet_load : NULL, .loader_ud = snippets};
	liquid_error le;
	if (!liquid_render(r->renderer, t, data, &ro, &le))
		return hr_fail(err, HR_ERR_INVALID, name, "%s: %s", name, le.message);
	size_t n;
	const char *s = liquid_output(r->renderer, &n);
	if (memchr(s, '\0', n))
		return hr_fail(err, HR_ERR_INVALID, name, "%s: rendered a NUL byte", name);
	m->off[f] = m->text.len;
	wk_buf_add(&m->text, s, n);
	wk_buf_ch(&m->text, '\0'); /* fields are C strings inside one buffer */
	m->set[f] = true;
	return true;
}

static void set_str(json_t *o, const char *k, const char *s, size_t n)
{
	json_object_set_new(o, k, json_stringn(s, n));
}

/* A JSON string literal of s (with quotes), e.g. for {"text": {{ json.text }}}. */
static void set_json_literal(json_t *o, const char *k, const char *s)
{
	json_t *str = json_string(s);
	char *lit = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
	json_object_set_new(o, k, json_string(lit ? lit : "\"\""));
	free(lit); /* jansson allocates with its own allocator (malloc) */
	json_decref(str);
}

bool wk_render_job(wk_render *r, wk_content *c, const hr_job_batch *b, const hr_job *j,
		   const wk_provider *p, wk_message *m, hr_err *err)
{
	json_t *data = NULL;
	bool ok = false;
	wk_message_reset(m);
	r->renders++;
	if (j->data.len == 0) {
		data = json_object();
	} else {
		json_error_t je;
		data = json_loadb(j->data.p, j->data.len, JSON_REJECT_DUPLICATES, &je);
		if (!data || !json_is_object(data)) {
			hr_fail(err, HR_ERR_INVALID, "data", "data: not a JSON object%s%s",
				data ? "" : ": ", data ? "" : je.text);
			goto fail;
		}
	}
	char idbuf[24];
	snprintf(idbuf, sizeof idbuf, "%llu", (unsigned long long)j->message_id);
	json_t *h = json_object();
	set_str(h, "message_id", idbuf, strlen(idbuf));
	set_str(h, "tenant", b->tenant.p, b->tenant.len);
	set_str(h, "to", j->address.p, j->address.len);
	json_object_set_new(h, "attempt", json_integer(j->attempt));
	json_object_set_new(h, "channel", json_string(hr_channel_name(b->channel)));
	json_object_set_new(h, "lane", json_string(hr_lane_name(b->lane)));
	json_object_set_new(data, "herald", h);
	/* Tracking: this worker knows herald-api's public URL and the tenant's key came with the account. */
	wk_track_ctx tc = {0};
	bool track = b->channel == HR_CH_EMAIL && r->public_url && p && p->tracking;
	if (track) {
		json_t *cid = json_object_get(json_object_get(data, "contact"), "id");
		tc = (wk_track_ctx){.base = r->public_url, .key = p->track_key, .opens = p->track_opens,
				    .clicks = p->track_clicks, .tenant_id = b->tenant_id, .message_id = j->message_id,
				    .contact_id = json_is_integer(cid) && json_integer_value(cid) > 0
							  ? (uint64_t)json_integer_value(cid) : 0};
		/* Templates may show it ({{ herald.unsubscribe_url }}), e.g. in a footer link. */
		wk_buf_reset(&r->scratch);
		wk_track_unsubscribe_url(&tc, &r->scratch);
		set_str(h, "unsubscribe_url", r->scratch.p, r->scratch.len);
	}

	for (int i = 0; i < WK_F_CONTENT_COUNT; i++) {
		const liquid_template *t = field_template(c, i);
		if (t && !render_into(r, t, data, c->snippets, m, (wk_field)i, field_names[i], err))
			goto fail;
	}
	if (track && m->set[WK_F_HTML] && (tc.opens || tc.clicks)) {
		wk_buf_reset(&r->scratch);
		wk_track_html(&tc, wk_msg_get(m, WK_F_HTML), &r->scratch);
		set_field(m, WK_F_HTML, r->scratch.p, r->scratch.len);
	}
	if (b->channel == HR_CH_EMAIL && b->lane == HR_LANE_BULK) {
		/* data's unsubscribe_url, else the account's template, else herald's own one-click URL */
		json_t *u = json_object_get(data, "unsubscribe_url");
		json_t *own = json_object_get(h, "unsubscribe_url");
		if (json_is_string(u) && json_string_length(u)) {
			set_field(m, WK_F_UNSUBSCRIBE, json_string_value(u), json_string_length(u));
		} else if (p && p->unsubscribe) {
			if (!render_into(r, p->unsubscribe, data, NULL, m, WK_F_UNSUBSCRIBE, "unsubscribe_url", err))
				goto fail;
		} else if (own) {
			set_field(m, WK_F_UNSUBSCRIBE, json_string_value(own), json_string_length(own));
		}
	}
	if (p && p->body) {
		/* The request body template sees the rendered message too. */
		json_t *msg = json_object(), *lit = json_object();
		for (int i = 0; i < WK_F_CONTENT_COUNT; i++) {
			if (!m->set[i])
				continue;
			json_object_set_new(msg, field_names[i], json_string(wk_msg_get(m, (wk_field)i)));
			set_json_literal(lit, field_names[i], wk_msg_get(m, (wk_field)i));
		}
		set_json_literal(lit, "message_id", idbuf);
		set_json_literal(lit, "tenant", json_string_value(json_object_get(h, "tenant")));
		set_json_literal(lit, "to", json_string_value(json_object_get(h, "to")));
		json_object_set_new(data, "message", msg);
		json_object_set_new(data, "json", lit);
		if (!render_into(r, p->body, data, NULL, m, WK_F_REQUEST, "body", err))
			goto fail;
	}
	ok = true;
fail:
	if (!ok)
		r->errors++;
	json_decref(data);
	return ok;
}
