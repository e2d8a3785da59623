/*
 * templates.c -- message templates: versions, validation, preview, test sends.
 *
 * A template has a name (unique in the tenant), a channel (fixed once
 * created) and numbered versions; templates.current_version names the one
 * new sends should use.  POST /v1/templates saves version 1, PUT
 * /v1/templates/{id} saves the next one; a saved version is never changed,
 * so a message that names (id, version) -- POST /v1/messages, campaigns,
 * rules -- renders the same whenever it is sent, and the workers may cache
 * its compiled form by (tenant, template, version).
 *
 * Content is a JSON object of Liquid sources, one per field of the channel:
 *   email      subject, html, text, from, reply_to   (subject, from, and html or text required)
 *   sms        text                                   (required)
 *   messenger  text                                   (required)
 *   push       title, body                            (body required)
 *   webhook    body                                   (required)
 * Saving checks every field: known for the channel, a string of at most
 * TPL_SRC_MAX bytes, one line for subject/from/reply_to/title, Liquid that
 * the workers can compile (lax mode; a failure is a 422 whose errors[] entry
 * names /content/<field> with line and column), and the snippets it renders
 * (snippets.c snapshots them into content.snippets).  What only strict mode
 * finds is returned as `warnings`, not refused.
 *
 * Preview renders a version as the worker would -- same limits, same data
 * shape ({...data, contact: {attributes..., id, email, phone, ...}, herald:
 * {...}}) -- and answers every rendered field; a render error is a 422 naming
 * the field, or, with inline_errors, written into the output as
 * "Liquid error (line N): ...".  A test send renders the same way first (so
 * a broken template is a 422, not a failed message), then enqueues a
 * transactional message of one with origin 'test' (hr_outbox_enqueue) and
 * answers 202 with its id.  Test sends check suppressions (a bounced or
 * complaining address is refused) but not consent: they go to the team's
 * own addresses.
 *
 * Everything runs in the request's tenant transaction (server.c): an error
 * writes nothing.  Another tenant's ids are simply not in this schema: 404.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "liquid.h"
#include "outbox.h"

typedef struct chan_spec {
	const char *channel;
	const char *fields[6];   /* content members, NULL-terminated */
	const char *required[3]; /* always required */
} chan_spec;

static const chan_spec chans[] = {
	{"email", {"subject", "html", "text", "from", "reply_to", NULL}, {"subject", "from", NULL}},
	{"sms", {"text", NULL}, {"text", NULL}},
	{"messenger", {"text", NULL}, {"text", NULL}},
	{"push", {"title", "body", NULL}, {"body", NULL}},
	{"webhook", {"body", NULL}, {"body", NULL}},
};

static const chan_spec *chan_find(const char *channel)
{
	for (size_t i = 0; channel && i < sizeof chans / sizeof chans[0]; i++)
		if (!strcmp(chans[i].channel, channel))
			return &chans[i];
	return NULL;
}

/* Header-like fields: a line break there would break the message's headers. */
static bool one_line(const char *field)
{
	return !strcmp(field, "subject") || !strcmp(field, "from") || !strcmp(field, "reply_to") ||
	       !strcmp(field, "title");
}

/*
 * Check content (the request's object) for the channel into v; warnings get
 * strict-mode findings.  Returns a new object of the accepted fields.
 */
static json_t *content_parse(jv *v, json_t *content, const chan_spec *cs, json_t *warnings)
{
	json_t *out = json_object();
	jv_only(v, content, "/content", cs->fields);
	for (const char *const *f = cs->fields; *f; f++) {
		json_t *x = json_object_get(content, *f);
		if (!x || json_is_null(x))
			continue;
		if (!json_is_string(x)) {
			jv_add(v, "/content", *f, "must be a string");
			continue;
		}
		const char *s = json_string_value(x);
		size_t n = json_string_length(x);
		if (n == 0) {
			jv_add(v, "/content", *f, "must not be empty");
			continue;
		}
		if (n > TPL_SRC_MAX) {
			jv_add(v, "/content", *f, "must be at most %d bytes", TPL_SRC_MAX);
			continue;
		}
		bool clean = true;
		for (size_t i = 0; i < n && clean; i++) {
			unsigned char c = (unsigned char)s[i];
			if (one_line(*f) ? c < 0x20 || c == 0x7f
					 : (c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f) {
				jv_add(v, "/content", *f, one_line(*f) ? "must be one line without control characters"
								       : "must not contain control characters other than "
									 "tab and line breaks");
				clean = false;
			}
		}
		if (!clean)
			continue;
		char *ptr = jv_ptr("/content", *f);
		if (tpl_check_source(v, ptr, s, n, warnings))
			json_object_set(out, *f, x);
		hr_free(ptr);
	}
	for (const char *const *f = cs->required; *f; f++) {
		json_t *x = json_object_get(content, *f);
		if (!x || json_is_null(x))
			jv_add(v, "/content", *f, "is required for %s", cs->channel);
	}
	if (!strcmp(cs->channel, "email")) {
		json_t *h = json_object_get(content, "html"), *t = json_object_get(content, "text");
		if ((!h || json_is_null(h)) && (!t || json_is_null(t)))
			jv_add(v, "/content", "html", "an email needs html or text (or both)");
	}
	return out;
}

/* The id in path parameter i, or a 404. */
static bool path_id(api_req *r, int i, const char *what)
{
	const char *s = r->param[i];
	size_t n = strlen(s);
	if (n >= 1 && n <= 18 && strspn(s, "0123456789") == n && s[0] != '0')
		return true;
	char *d = hr_sprintf("no such %s", what);
	api_problem(r, 404, "not-found", "Not found", d, NULL);
	hr_free(d);
	return false;
}

/* ---- lists (shared with snippets.c): opaque cursors, hex of prefix + key ---- */

void api_bad_param(api_req *r, const char *name, const char *detail)
{
	json_t *errors = json_array();
	json_array_append_new(errors, json_pack("{s:s, s:s}", "parameter", name, "detail", detail));
	api_problem(r, 400, "bad-parameter", "Bad query parameter", detail, errors);
}

bool api_list_args(api_req *r, const char *prefix, char *after, size_t after_size, char limit[16])
{
	const char *cur = api_query(r, "cursor"), *lim = api_query(r, "limit");
	snprintf(limit, 16, "50");
	if (cur && *cur) {
		size_t n = strlen(cur), pl = strlen(prefix);
		bool ok = n % 2 == 0 && n / 2 > pl && n / 2 < after_size + pl;
		char *plain = hr_malloc(n / 2 + 1);
		for (size_t i = 0; ok && i < n / 2; i++) {
			unsigned x = 0;
			ok = isxdigit((unsigned char)cur[2 * i]) && isxdigit((unsigned char)cur[2 * i + 1]) &&
			     sscanf(cur + 2 * i, "%2x", &x) == 1 && x >= 0x20 && x < 0x7f;
			plain[i] = (char)x;
		}
		plain[ok ? n / 2 : 0] = '\0';
		ok = ok && strncmp(plain, prefix, pl) == 0;
		if (ok)
			snprintf(after, after_size, "%s", plain + pl);
		hr_free(plain);
		if (!ok) {
			api_bad_param(r, "cursor", "is not a cursor this API returned");
			return false;
		}
	}
	if (lim) {
		size_t n = strlen(lim);
		long l = n >= 1 && n <= 3 && strspn(lim, "0123456789") == n ? atol(lim) : 0;
		if (l < 1 || l > 500) {
			api_bad_param(r, "limit", "must be 1 to 500");
			return false;
		}
		snprintf(limit, 16, "%ld", l);
	}
	return true;
}

void api_list_reply(api_req *r, PGresult *res, int want, const char *prefix)
{
	int n = PQntuples(res);
	json_t *data = json_array();
	for (int i = 0; i < n && i < want; i++)
		json_array_append_new(data, json_loads(PQgetvalue(res, i, 0), 0, NULL));
	json_t *out = json_pack("{s:o}", "data", data);
	if (n > want) {
		const char *key = PQgetvalue(res, want - 1, 1);
		size_t pl = strlen(prefix), kl = strlen(key);
		char *c = hr_malloc(2 * (pl + kl) + 1);
		for (size_t i = 0; i < pl + kl; i++)
			snprintf(c + 2 * i, 3, "%02x", (unsigned char)(i < pl ? prefix[i] : key[i - pl]));
		json_object_set_new(out, "next_cursor", json_string(c));
		hr_free(c);
	} else {
		json_object_set_new(out, "next_cursor", json_null());
	}
	api_json(r, 200, out);
}

/* ---- reading ---- */

#define TEMPLATE_JSON                                                                                          \
	"jsonb_build_object('id', t.id, 'name', t.name, 'channel', t.channel, 'version', t.current_version, "  \
	"'content', v.content - 'snippets', 'snippets', coalesce(v.content->'snippets', '{}'::jsonb), "        \
	"'versions', (SELECT jsonb_agg(jsonb_build_object('version', x.version, 'created_at', x.created_at) " \
	"ORDER BY x.version) FROM template_versions x WHERE x.template_id = t.id), "                          \
	"'created_at', t.created_at, 'updated_at', t.updated_at)::text"

/* Answer status with template id (plus warnings, stolen, when non-empty), or 404. */
static void template_reply(api_req *r, int status, const char *id, json_t *warnings)
{
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT " TEMPLATE_JSON " FROM templates t JOIN template_versions v "
			 "ON v.template_id = t.id AND v.version = t.current_version WHERE t.id = $1",
			 1, p, &res, &err)) {
		json_decref(warnings);
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0) {
		api_problem(r, 404, "not-found", "Not found", "no such template", NULL);
	} else {
		json_t *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
		if (json_array_size(warnings))
			json_object_set(out, "warnings", warnings);
		api_json(r, status, out);
	}
	json_decref(warnings);
	PQclear(res);
}

void templates_get(api_req *r)
{
	if (path_id(r, 0, "template"))
		template_reply(r, 200, r->param[0], NULL);
}

void templates_version_get(api_req *r)
{
	if (!path_id(r, 0, "template") || !path_id(r, 1, "version"))
		return;
	const char *p[] = {r->param[0], r->param[1]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('template_id', t.id, 'name', t.name, 'channel', t.channel, "
			 "'version', v.version, 'current', v.version = t.current_version, "
			 "'content', v.content - 'snippets', 'snippets', coalesce(v.content->'snippets', '{}'::jsonb), "
			 "'created_at', v.created_at)::text FROM templates t JOIN template_versions v "
			 "ON v.template_id = t.id WHERE t.id = $1 AND v.version = $2::bigint",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such template version", NULL);
	else
		api_json(r, 200, json_loads(PQgetvalue(res, 0, 0), 0, NULL));
	PQclear(res);
}

void templates_list(api_req *r)
{
	char after[24] = "0", limit[16];
	if (!api_list_args(r, "t1:", after, sizeof after, limit))
		return;
	if (strspn(after, "0123456789") != strlen(after) || !after[0]) {
		api_bad_param(r, "cursor", "is not a cursor this API returned");
		return;
	}
	const char *channel = api_query(r, "channel");
	if (channel && !chan_find(channel)) {
		api_bad_param(r, "channel", "must be email, sms, messenger, push or webhook");
		return;
	}
	const char *p[] = {after, limit, channel};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('id', id, 'name', name, 'channel', channel, 'version', "
			 "current_version, 'created_at', created_at, 'updated_at', updated_at)::text, id "
			 "FROM templates WHERE id > $1::bigint AND ($3::text IS NULL OR channel = $3) "
			 "ORDER BY id LIMIT $2::int + 1",
			 3, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	api_list_reply(r, res, atoi(limit), "t1:");
	PQclear(res);
}

/* ---- saving ---- */

/*
 * Validate content for cs and snapshot its snippets: the content text to
 * store in *out, or false with the response (422 / 5xx) made.
 */
static bool content_ready(api_req *r, jv *v, const chan_spec *cs, json_t *warnings, char **out)
{
	json_t *content = jv_obj(v, r->json, "", "content", true);
	json_t *c = content ? content_parse(v, content, cs, warnings) : NULL;
	hr_err err = {0};
	/* Snippets only once the fields themselves are good: one round of errors at a time. */
	if (c && jv_ok(v) && !snippets_snapshot(r->db, c, v, &err)) {
		json_decref(c);
		jv_free(v);
		api_problem_err(r, &err);
		return false;
	}
	if (!jv_ok(v)) {
		json_decref(c);
		api_problem_invalid(r, v->errors);
		return false;
	}
	jv_free(v);
	*out = api_dump(c);
	json_decref(c);
	return true;
}

static void save_failed(api_req *r, hr_err *err, const char *name)
{
	if (err->kind == HR_ERR_CONFLICT) {
		char *d = hr_sprintf("a template named '%s' exists", name ? name : "");
		json_t *errors = json_array();
		json_t *dj = json_string(d);
		json_array_append_new(errors, json_pack("{s:s, s:o}", "pointer", "/name", "detail",
							dj ? dj : json_string("a template with this name exists")));
		api_problem(r, 409, "conflict", "Conflict", dj ? d : "a template with this name exists", errors);
		hr_free(d);
		return;
	}
	api_problem_err(r, err);
}

void templates_post(api_req *r)
{
	static const char *const allowed[] = {"name", "channel", "content", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	const char *name = jv_str(&v, r->json, "", "name", true, 200);
	const char *channel = jv_str(&v, r->json, "", "channel", true, 16);
	const chan_spec *cs = chan_find(channel);
	if (channel && !cs)
		jv_add(&v, "", "channel", "must be email, sms, messenger, push or webhook");
	if (!cs) {
		/* The fields depend on the channel: without one, only say what else is wrong. */
		jv_obj(&v, r->json, "", "content", true);
		api_problem_invalid(r, v.errors);
		return;
	}
	json_t *warnings = json_array();
	char *content = NULL;
	if (!content_ready(r, &v, cs, warnings, &content)) {
		json_decref(warnings);
		return;
	}
	const char *p[] = {name, channel, content};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "WITH t AS (INSERT INTO templates (name, channel) VALUES ($1, $2) RETURNING id), "
			 "v AS (INSERT INTO template_versions (template_id, version, content) "
			 "SELECT id, 1, $3::jsonb FROM t) SELECT id FROM t",
			 3, p, &res, &err)) {
		hr_free(content);
		json_decref(warnings);
		save_failed(r, &err, name);
		return;
	}
	hr_free(content);
	char id[32];
	snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	snprintf(r->location, sizeof r->location, "/v1/templates/%s", id);
	template_reply(r, 201, id, warnings);
}

void templates_put(api_req *r)
{
	if (!path_id(r, 0, "template"))
		return;
	static const char *const allowed[] = {"name", "channel", "content", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	const char *name = jv_str(&v, r->json, "", "name", false, 200);
	const char *channel = jv_str(&v, r->json, "", "channel", false, 16);
	/* The row lock orders concurrent saves: each gets its own version number. */
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT channel FROM templates WHERE id = $1 FOR UPDATE", 1, p, &res, &err)) {
		jv_free(&v);
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0) {
		PQclear(res);
		jv_free(&v);
		api_problem(r, 404, "not-found", "Not found", "no such template", NULL);
		return;
	}
	const chan_spec *cs = chan_find(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (channel && strcmp(channel, cs->channel))
		jv_add(&v, "", "channel", "a template's channel cannot change (this one is %s); create another template",
		       cs->channel);
	json_t *warnings = json_array();
	char *content = NULL;
	if (!content_ready(r, &v, cs, warnings, &content)) {
		json_decref(warnings);
		return;
	}
	const char *pu[] = {r->param[0], name, content};
	if (!hr_db_query(r->db,
			 "WITH t AS (UPDATE templates SET current_version = current_version + 1, "
			 "name = coalesce($2, name), updated_at = now() WHERE id = $1 RETURNING id, current_version) "
			 "INSERT INTO template_versions (template_id, version, content) "
			 "SELECT id, current_version, $3::jsonb FROM t",
			 3, pu, NULL, &err)) {
		hr_free(content);
		json_decref(warnings);
		save_failed(r, &err, name);
		return;
	}
	hr_free(content);
	template_reply(r, 200, r->param[0], warnings);
}

/* ---- rendering: preview and test sends ---- */

typedef struct tpl_loaded {
	const chan_spec *cs;
	int version;
	json_t *content; /* the version's content */
} tpl_loaded;

/*
 * The template in path parameter 0 at `version` (0 = current).  False with
 * the response made: 404 for the template, 422 /version for a version it
 * does not have.
 */
static bool tpl_load(api_req *r, int64_t version, tpl_loaded *t)
{
	char ver[24];
	snprintf(ver, sizeof ver, "%lld", (long long)version);
	const char *p[] = {r->param[0], ver};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT t.channel, v.version, v.content::text FROM templates t LEFT JOIN template_versions v "
			 "ON v.template_id = t.id AND v.version = CASE WHEN $2::int = 0 THEN t.current_version "
			 "ELSE $2::int END WHERE t.id = $1",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	if (PQntuples(res) == 0) {
		PQclear(res);
		api_problem(r, 404, "not-found", "Not found", "no such template", NULL);
		return false;
	}
	if (PQgetisnull(res, 0, 1)) {
		PQclear(res);
		jv v;
		jv_init(&v);
		jv_add(&v, "", "version", "this template has no version %lld", (long long)version);
		api_problem_invalid(r, v.errors);
		return false;
	}
	t->cs = chan_find(PQgetvalue(res, 0, 0));
	t->version = atoi(PQgetvalue(res, 0, 1));
	t->content = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
	PQclear(res);
	return true;
}

/*
 * The data a worker would render with: data (or {}) plus `contact` (the
 * contact named by kind/value, resolved to the one it was merged into) as
 * scheduler/store.c builds it.  *cid and addr (the contact's address for the
 * channel, "" when none) are filled when a contact is given.  False with the
 * response made.
 */
static bool render_data(api_req *r, json_t *data, const char *kind, const char *value, const char *channel,
			json_t **out, char cid[32], char addr[256])
{
	json_t *d = data ? json_deep_copy(data) : json_object();
	cid[0] = addr[0] = '\0';
	if (kind) {
		static const char *const cols[] = {"id", "external_id", "email", "phone"};
		int k = 0;
		while (strcmp(cols[k], kind))
			k++;
		char *sql = hr_sprintf("SELECT (c.attributes || jsonb_strip_nulls(jsonb_build_object('id', c.id, "
				       "'email', c.email, 'phone', c.phone, 'external_id', c.external_id, 'time_zone', "
				       "c.time_zone, 'locale', c.locale)))::text, c.id, c.email, c.phone "
				       "FROM contacts x JOIN contacts c ON c.id = coalesce(x.merged_into, x.id) "
				       "WHERE x.%s = $1%s",
				       cols[k], k == 0 ? "::bigint" : "");
		const char *p[] = {value};
		PGresult *res;
		hr_err err = {0};
		bool ok = hr_db_query(r->db, sql, 1, p, &res, &err);
		hr_free(sql);
		if (!ok) {
			json_decref(d);
			api_problem_err(r, &err);
			return false;
		}
		if (PQntuples(res) != 1) {
			PQclear(res);
			json_decref(d);
			jv v;
			jv_init(&v);
			jv_add(&v, "/contact", NULL, "no such contact");
			api_problem_invalid(r, v.errors);
			return false;
		}
		json_object_set_new(d, "contact", json_loads(PQgetvalue(res, 0, 0), 0, NULL));
		snprintf(cid, 32, "%s", PQgetvalue(res, 0, 1));
		int col = !strcmp(channel, "email") ? 2 : !strcmp(channel, "sms") || !strcmp(channel, "messenger") ? 3 : 0;
		if (col && !PQgetisnull(res, 0, col))
			snprintf(addr, 256, "%s", PQgetvalue(res, 0, col));
		PQclear(res);
	}
	*out = d;
	return true;
}

static bool snippet_load(void *ud, const char *name, size_t name_len, const char **src, size_t *src_len)
{
	json_t *s = json_object_getn(ud, name, name_len);
	if (!json_is_string(s))
		return false;
	*src = json_string_value(s);
	*src_len = json_string_length(s);
	return true;
}

/*
 * Render every field of t against data, as the worker would (plus its
 * `herald` object).  The rendered fields, or NULL with the response made
 * (422 naming /content/<field>).
 */
static json_t *render_all(api_req *r, const tpl_loaded *t, json_t *data, const char *to, bool inline_errors)
{
	json_t *h = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s}", "message_id", "0", "tenant", r->tenant.slug, "to",
			      to, "attempt", 1, "channel", t->cs->channel, "lane", "transactional");
	json_object_set_new(data, "herald", h ? h : json_object());
	liquid_limits lim;
	tpl_limits(&lim);
	json_t *snippets = json_object_get(t->content, "snippets");
	liquid_render_opts ro = {.mode = LIQUID_LAX, .limits = &lim, .render_errors = inline_errors,
				 .loader = json_is_object(snippets) ? snippet_load : NULL, .loader_ud = snippets};
	liquid_renderer *rr = liquid_renderer_new();
	json_t *out = json_object();
	jv v;
	jv_init(&v);
	for (const char *const *f = t->cs->fields; *f; f++) {
		json_t *src = json_object_get(t->content, *f);
		if (!json_is_string(src))
			continue;
		liquid_parse_opts po = {.mode = LIQUID_LAX, .limits = &lim, .name = *f};
		liquid_template *lt = NULL;
		liquid_error le;
		char *ptr = jv_ptr("/content", *f);
		if (!liquid_parse(json_string_value(src), json_string_length(src), &po, &lt, &le) ||
		    !liquid_render(rr, lt, data, &ro, &le)) {
			tpl_liquid_error(&v, ptr, &le);
		} else {
			size_t n;
			const char *s = liquid_output(rr, &n);
			json_t *js = json_stringn(s, n);
			if (js)
				json_object_set_new(out, *f, js);
			else
				tpl_error(&v, ptr, 0, 0, "rendered text that is not UTF-8 or holds a NUL byte");
		}
		hr_free(ptr);
		liquid_template_free(lt);
	}
	liquid_renderer_free(rr);
	if (!jv_ok(&v)) {
		json_decref(out);
		api_problem_invalid(r, v.errors);
		return NULL;
	}
	jv_free(&v);
	return out;
}

void templates_preview(api_req *r)
{
	if (!path_id(r, 0, "template"))
		return;
	static const char *const allowed[] = {"version", "contact", "data", "inline_errors", NULL};
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	bool has_version, has_inline, inline_errors = false;
	int64_t version = 0;
	jv_int(&v, r->json, "", "version", false, 1, 1000000, &has_version, &version);
	jv_bool(&v, r->json, "", "inline_errors", false, &has_inline, &inline_errors);
	json_t *data = jv_obj(&v, r->json, "", "data", false);
	const char *kind = NULL;
	char ref[256] = "";
	json_t *cref = json_object_get(r->json, "contact");
	if (cref && !json_is_null(cref))
		contact_ref_parse(&v, cref, "/contact", cc, &kind, ref);
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	tpl_loaded t = {0};
	if (!tpl_load(r, version, &t))
		return;
	json_t *d = NULL, *out = NULL;
	char cid[32], addr[256];
	if (render_data(r, data, kind, ref, t.cs->channel, &d, cid, addr) &&
	    (out = render_all(r, &t, d, addr, inline_errors)))
		api_json(r, 200, json_pack("{s:I, s:i, s:s, s:o}", "template_id", (json_int_t)strtoll(r->param[0], NULL, 10),
					   "version", t.version, "channel", t.cs->channel, "rendered", out));
	json_decref(d);
	json_decref(t.content);
}

/* A test send's request, checked before the tenant transaction (provider account). */
typedef struct test_in {
	const char *to, *provider, *kind;
	char ref[256];
	int64_t version;
	json_t *data;          /* borrowed from r->json */
	char account_channel[16];
} test_in;

void templates_test_pre(api_req *r)
{
	static const char *const allowed[] = {"to", "provider", "version", "contact", "data", NULL};
	test_in *m = hr_calloc(1, sizeof *m);
	r->state = m;
	r->state_free = hr_free;
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	jv v;
	jv_init(&v);
	hr_err err = {0};
	jv_only(&v, r->json, "", allowed);
	m->to = jv_str(&v, r->json, "", "to", true, 512);
	m->provider = jv_str(&v, r->json, "", "provider", true, 40);
	if (m->provider && !hr_slug_valid(m->provider, "provider", &err))
		jv_add(&v, "", "provider", "is not an account name");
	bool has_version;
	jv_int(&v, r->json, "", "version", false, 1, 1000000, &has_version, &m->version);
	m->data = jv_obj(&v, r->json, "", "data", false);
	json_t *cref = json_object_get(r->json, "contact");
	if (cref && !json_is_null(cref))
		contact_ref_parse(&v, cref, "/contact", cc, &m->kind, m->ref);
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	if (!api_provider_channel(r, m->provider, m->account_channel, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (!m->account_channel[0]) {
		jv_init(&v);
		jv_add(&v, "", "provider", "no such provider account");
		api_problem_invalid(r, v.errors);
	}
}

void templates_test(api_req *r)
{
	if (!path_id(r, 0, "template"))
		return;
	test_in *m = r->state;
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	tpl_loaded t = {0};
	json_t *d = NULL, *out = NULL;
	char *data = NULL;
	jv v;
	if (!tpl_load(r, m->version, &t))
		return;
	const char *ch = t.cs->channel;
	if (strcmp(m->account_channel, ch)) {
		jv_init(&v);
		jv_add(&v, "", "provider", "this account serves %s; the template is for %s", m->account_channel, ch);
		api_problem_invalid(r, v.errors);
		goto out;
	}
	char addr[520] = "";
	hr_err err = {0};
	if (!strcmp(ch, "email") ? !hr_email_normalize(m->to, addr, &err)
	    : !strcmp(ch, "sms") ? !hr_phone_normalize(m->to, cc, addr, &err) : false) {
		jv_init(&v);
		jv_add(&v, "", "to", "%s", err.msg);
		api_problem_invalid(r, v.errors);
		goto out;
	}
	if (!addr[0])
		snprintf(addr, sizeof addr, "%s", m->to);
	const char *ps[] = {ch, addr};
	PGresult *res;
	if (!hr_db_query(r->db, "SELECT reason FROM suppressions WHERE channel = $1 AND address = $2", 2, ps, &res,
			 &err)) {
		api_problem_err(r, &err);
		goto out;
	}
	if (PQntuples(res) == 1) {
		char why[96];
		snprintf(why, sizeof why, "the address is suppressed (%s)", PQgetvalue(res, 0, 0));
		PQclear(res);
		json_t *errors = json_array();
		json_array_append_new(errors, json_pack("{s:s, s:s}", "pointer", "/to", "detail", why));
		api_problem(r, 422, "blocked", "The message may not be sent", why, errors);
		goto out;
	}
	PQclear(res);
	char cid[32], caddr[256];
	if (!render_data(r, m->data, m->kind, m->ref, ch, &d, cid, caddr))
		goto out;
	/* Render first: a template that cannot render is a 422 now, not a failed message later. */
	if (!(out = render_all(r, &t, d, addr, false)))
		goto out;
	data = m->data ? api_dump(m->data) : NULL;
	const char *addrs[] = {addr};
	int64_t cids[] = {cid[0] ? strtoll(cid, NULL, 10) : 0};
	const char *datas[] = {data};
	if (!api_quota_send(r, ch)) /* a test send is a message too (api/quota.c) */
		goto out;
	hr_outbox_batch b = {.channel = ch, .lane = "transactional", .template_id = strtoll(r->param[0], NULL, 10),
			     .template_version = t.version, .provider = m->provider, .origin = "test", .n = 1,
			     .addresses = addrs, .contact_ids = cid[0] ? cids : NULL, .data = data ? datas : NULL};
	int64_t id;
	if (!hr_outbox_enqueue(r->db, r->tenant.id, &b, &id, &err)) {
		api_problem_err(r, &err);
		goto out;
	}
	snprintf(r->location, sizeof r->location, "/v1/messages/%lld", (long long)id);
	api_json(r, 202, json_pack("{s:I, s:s, s:s, s:{s:I, s:i}}", "id", (json_int_t)id, "status", "queued", "to",
				   addr, "template", "id", (json_int_t)b.template_id, "version", t.version));
out:
	hr_free(data);
	json_decref(out);
	json_decref(d);
	json_decref(t.content);
}
