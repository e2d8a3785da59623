/*
 * snippets.c -- a tenant's snippets (named Liquid partials for {% render %}
 * and {% include %}), and what templates.c needs of them: the check of a
 * Liquid source, the scan for the snippets it renders, and the snapshot of
 * those snippets into a template version.
 *
 * Why a snapshot: a template version is immutable -- the workers cache its
 * compiled form by (tenant, template, version), and a message queued today
 * and retried tomorrow must render the same.  So when a version is saved,
 * every snippet it renders (transitively: snippets rendering snippets) is
 * copied into the version's content as content.snippets {name: source}; the
 * scheduler sends the content as is and the worker's partial loader reads
 * the snapshot (workers/render.c).  Editing a snippet therefore changes
 * templates when they are next saved; PUT and GET of a snippet list the
 * templates whose current version uses it (`used_by`, with `stale` when
 * their copy differs), so a marketer knows which to save again.
 *
 * A snippet a template renders must exist when the template is saved (else
 * 422 naming the field, line and column), and its name must be quoted text:
 * a name computed at render time ({% include var %}) cannot be snapshotted.
 * The scan reads tag markup only ({% ... %}, including the lines of a
 * {% liquid %} tag), and skips {% comment %} and {% raw %} blocks.
 *
 * Routes: PUT/GET/DELETE /v1/snippets/{name}, GET /v1/snippets (cursor on
 * the name).  Names: 1-100 of A-Z a-z 0-9 _ . -, starting with a letter or
 * digit.  Errors follow the rest of the API (problem.c); everything runs in
 * the request's tenant transaction.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "liquid.h"

#define SNAPSHOT_MAX (1024 * 1024) /* bytes of snippets one version may carry */
#define SNAPSHOT_ROUNDS 100        /* levels of snippets rendering snippets (the engine's depth) */

void tpl_limits(liquid_limits *l)
{
	/* The workers' limits (workers/render.c): what saves and previews here
	 * must also render there. */
	*l = liquid_default_limits;
	l->max_template_size = TPL_SRC_MAX;
	l->max_output_size = 1024 * 1024;
	l->max_loop_iterations = 1000000;
	if (l->max_render_memory > 4u << 20)
		l->max_render_memory = 4u << 20;
}

void tpl_error(jv *v, const char *pointer, int line, int column, const char *fmt, ...)
{
	char detail[640];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	json_t *e = json_object();
	json_object_set_new(e, "pointer", json_string(pointer));
	json_t *d = json_string(detail);
	json_object_set_new(e, "detail", d ? d : json_string("invalid Liquid"));
	if (line > 0)
		json_object_set_new(e, "line", json_integer(line));
	if (column > 0)
		json_object_set_new(e, "column", json_integer(column));
	json_array_append_new(v->errors, e);
}

void tpl_liquid_error(jv *v, const char *pointer, const liquid_error *le)
{
	char where[200] = "";
	if (le->partial[0])
		snprintf(where, sizeof where, " in snippet '%s'", le->partial);
	if (le->line > 0 && le->column > 0)
		tpl_error(v, pointer, le->line, le->column, "%s (line %d, column %d%s)", le->message, le->line,
			  le->column, where);
	else if (le->line > 0)
		tpl_error(v, pointer, le->line, 0, "%s (line %d%s)", le->message, le->line, where);
	else
		tpl_error(v, pointer, 0, 0, "%s%s", le->message, where);
}

/* ---- positions and tag words in Liquid source ---- */

static void line_col(const char *s, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (s[i] == '\n') {
			++*line;
			*col = 1;
		} else if (((unsigned char)s[i] & 0xc0) != 0x80) { /* count characters, not UTF-8 bytes */
			++*col;
		}
	}
}

static size_t skip_space(const char *s, size_t i, size_t end)
{
	while (i < end && isspace((unsigned char)s[i]))
		i++;
	return i;
}

/* The tag word at s[i..end): its end. */
static size_t word_end(const char *s, size_t i, size_t end)
{
	while (i < end && (isalnum((unsigned char)s[i]) || s[i] == '_'))
		i++;
	return i;
}

static bool word_is(const char *s, size_t a, size_t b, const char *w)
{
	return b - a == strlen(w) && memcmp(s + a, w, b - a) == 0;
}

/*
 * The engine reports "'if' tag was never closed" with the line of the
 * opening tag but no column: find that tag on its line.
 */
static void column_of_open_tag(const char *src, size_t len, liquid_error *le)
{
	char tag[32];
	if (le->column > 0 || le->line < 1 || sscanf(le->message, "%*[^']'%31[a-z]' tag was never closed", tag) != 1)
		return;
	size_t i = 0;
	for (int line = 1; line < le->line && i < len; i++)
		if (src[i] == '\n')
			line++;
	const char *nl = memchr(src + i, '\n', len - i);
	size_t end = nl ? (size_t)(nl - src) : len;
	for (size_t p = i; p + 1 < end; p++) {
		if (src[p] != '{' || src[p + 1] != '%')
			continue;
		size_t w = p + 2 < end && src[p + 2] == '-' ? p + 3 : p + 2;
		w = skip_space(src, w, end);
		if (word_is(src, w, word_end(src, w, end), tag)) {
			int l, c;
			line_col(src, p, &l, &c);
			le->column = c;
			return;
		}
	}
}

bool tpl_check_source(jv *v, const char *pointer, const char *src, size_t len, json_t *warnings)
{
	liquid_limits lim;
	tpl_limits(&lim);
	liquid_parse_opts po = {.mode = LIQUID_LAX, .limits = &lim};
	liquid_error le;
	/* Lax is what the workers parse with; an error there can never be sent. */
	if (!liquid_validate(src, len, &po, &le)) {
		column_of_open_tag(src, len, &le);
		tpl_liquid_error(v, pointer, &le);
		return false;
	}
	/* Strict finds junk lax skips silently ({{ x || upcase }}): worth saying, not refusing. */
	po.mode = LIQUID_STRICT;
	if (warnings && !liquid_validate(src, len, &po, &le)) {
		column_of_open_tag(src, len, &le);
		jv w = {.errors = warnings};
		tpl_liquid_error(&w, pointer, &le);
	}
	return true;
}

bool snippet_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 100 || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

/* ---- scanning a source for the snippets it renders ---- */

/* A reference: name[0..n) (n = 0: not quoted text), at 1-based line/column. */
typedef void (*ref_fn)(void *ud, const char *name, size_t n, int line, int column);

/* After `render`/`include` at s[i..end): the quoted name, reported at tag offset `at`. */
static void ref_at(const char *s, size_t i, size_t end, size_t at, ref_fn fn, void *ud)
{
	int line, col;
	line_col(s, at, &line, &col);
	i = skip_space(s, i, end);
	if (i < end && (s[i] == '\'' || s[i] == '"')) {
		const char *q = memchr(s + i + 1, s[i], end - i - 1);
		if (q) {
			fn(ud, s + i + 1, (size_t)(q - (s + i + 1)), line, col);
			return;
		}
	}
	fn(ud, NULL, 0, line, col);
}

static void refs_scan(const char *s, size_t len, ref_fn fn, void *ud)
{
	size_t i = 0;
	int comment = 0;
	bool raw = false;
	while (i + 1 < len) {
		const char *t = memmem(s + i, len - i, "{%", 2);
		if (!t)
			break;
		size_t start = (size_t)(t - s), j = start + 2;
		if (j < len && s[j] == '-')
			j++;
		const char *e = j < len ? memmem(s + j, len - j, "%}", 2) : NULL;
		if (!e)
			break;
		size_t end = (size_t)(e - s), mend = end;
		if (mend > j && s[mend - 1] == '-')
			mend--;
		size_t w = skip_space(s, j, mend), we = word_end(s, w, mend);
		i = end + 2;
		if (raw) {
			raw = !word_is(s, w, we, "endraw");
			continue;
		}
		if (word_is(s, w, we, "raw")) {
			raw = true;
		} else if (word_is(s, w, we, "comment")) {
			comment++;
		} else if (word_is(s, w, we, "endcomment")) {
			if (comment > 0)
				comment--;
		} else if (comment > 0) {
			continue;
		} else if (word_is(s, w, we, "render") || word_is(s, w, we, "include")) {
			ref_at(s, we, mend, start, fn, ud);
		} else if (word_is(s, w, we, "liquid")) {
			/* One tag per line, without delimiters. */
			size_t a = we;
			while (a < mend) {
				const char *nl = memchr(s + a, '\n', mend - a);
				size_t b = nl ? (size_t)(nl - s) : mend;
				size_t lw = skip_space(s, a, b), lwe = word_end(s, lw, b);
				if (word_is(s, lw, lwe, "render") || word_is(s, lw, lwe, "include"))
					ref_at(s, lwe, b, lw, fn, ud);
				a = b + 1;
			}
		}
	}
}

/* ---- the snapshot ---- */

typedef struct snap {
	jv *v;
	json_t *origin;     /* name -> {field, via, line, column}: who first rendered it */
	json_t *next;       /* names to fetch in the next round */
	const char *field;  /* the content field being scanned */
	const char *via;    /* the snippet being scanned, NULL = the field itself */
	const char *pointer_base; /* "/content" */
} snap;

static void snap_ref(void *ud, const char *name, size_t n, int line, int col)
{
	snap *sn = ud;
	char *ptr = jv_ptr(sn->pointer_base, sn->field);
	char *nm = n ? hr_strndup(name, n) : NULL;
	if (!nm || !snippet_name_valid(nm) || memchr(name, '\0', n)) {
		if (sn->via)
			tpl_error(sn->v, ptr, 0, 0,
				  "snippet '%s' (line %d, column %d) renders a snippet %s; give the name of an existing "
				  "snippet as quoted text",
				  sn->via, line, col, nm ? "whose name is not a snippet name" : "by a computed name");
		else
			tpl_error(sn->v, ptr, line, col,
				  "renders a snippet %s (line %d, column %d); give the name of an existing snippet as "
				  "quoted text, e.g. {%% render 'footer' %%}",
				  nm ? "whose name is not a snippet name" : "by a computed name", line, col);
	} else if (!json_object_get(sn->origin, nm)) {
		json_object_set_new(sn->origin, nm,
				    json_pack("{s:s, s:s?, s:i, s:i}", "field", sn->field, "via", sn->via, "line", line,
					      "column", col));
		json_array_append_new(sn->next, json_string(nm));
	}
	hr_free(nm);
	hr_free(ptr);
}

/* A Postgres text[] literal of the names (validated: no quotes or backslashes). */
static char *names_literal(json_t *names)
{
	size_t cap = 3, len = 0, i;
	json_t *x;
	json_array_foreach(names, i, x) cap += json_string_length(x) + 3;
	char *out = hr_malloc(cap);
	out[len++] = '{';
	json_array_foreach(names, i, x) len += (size_t)snprintf(out + len, cap - len, "%s\"%s\"", i ? "," : "",
								 json_string_value(x));
	snprintf(out + len, cap - len, "}");
	return out;
}

bool snippets_snapshot(PGconn *db, json_t *content, jv *v, hr_err *err)
{
	json_t *found = json_object();
	snap sn = {.v = v, .origin = json_object(), .next = json_array(), .pointer_base = "/content"};
	const char *k;
	json_t *val;
	bool ok = false;
	size_t total = 0;
	json_object_foreach(content, k, val) {
		if (!json_is_string(val))
			continue;
		sn.field = k;
		sn.via = NULL;
		refs_scan(json_string_value(val), json_string_length(val), snap_ref, &sn);
	}
	for (int round = 0; json_array_size(sn.next) && round < SNAPSHOT_ROUNDS; round++) {
		json_t *want = sn.next;
		sn.next = json_array();
		char *lit = names_literal(want);
		const char *p[] = {lit};
		PGresult *res;
		bool q = hr_db_query(db, "SELECT name, body FROM snippets WHERE name = ANY($1::text[])", 1, p, &res, err);
		hr_free(lit);
		if (!q) {
			json_decref(want);
			goto out;
		}
		for (int i = 0; i < PQntuples(res); i++) {
			const char *name = PQgetvalue(res, i, 0), *body = PQgetvalue(res, i, 1);
			size_t n = (size_t)PQgetlength(res, i, 1);
			total += n;
			json_object_set_new(found, name, json_stringn(body, n));
			sn.field = json_string_value(json_object_get(json_object_get(sn.origin, name), "field"));
			sn.via = name;
			refs_scan(body, n, snap_ref, &sn);
		}
		PQclear(res);
		size_t i;
		json_t *x;
		json_array_foreach(want, i, x) {
			const char *name = json_string_value(x);
			if (json_object_get(found, name))
				continue;
			json_t *o = json_object_get(sn.origin, name);
			const char *field = json_string_value(json_object_get(o, "field"));
			const char *via = json_string_value(json_object_get(o, "via"));
			int line = (int)json_integer_value(json_object_get(o, "line"));
			int col = (int)json_integer_value(json_object_get(o, "column"));
			char *ptr = jv_ptr("/content", field);
			if (via)
				tpl_error(v, ptr, 0, 0,
					  "snippet '%s', rendered by snippet '%s' (line %d, column %d), does not exist", name,
					  via, line, col);
			else
				tpl_error(v, ptr, line, col, "snippet '%s' does not exist (line %d, column %d)", name, line,
					  col);
			hr_free(ptr);
		}
		json_decref(want);
	}
	if (total > SNAPSHOT_MAX)
		tpl_error(v, "/content", 0, 0, "the snippets this template renders hold %zu bytes; at most %d", total,
			  SNAPSHOT_MAX);
	if (json_object_size(found))
		json_object_set(content, "snippets", found);
	ok = true;
out:
	json_decref(found);
	json_decref(sn.origin);
	json_decref(sn.next);
	return ok;
}

/* ---- routes ---- */

static bool name_param(api_req *r, bool for_write)
{
	if (snippet_name_valid(r->param[0]))
		return true;
	if (for_write) {
		json_t *errors = json_array();
		json_array_append_new(errors, json_pack("{s:s, s:s}", "parameter", "name", "detail",
							"must be 1 to 100 of A-Z a-z 0-9 _ . -, starting with a letter "
							"or digit"));
		api_problem(r, 422, "validation", "The request is not valid", "the snippet name is not valid", errors);
	} else {
		api_problem(r, 404, "not-found", "Not found", "no such snippet", NULL);
	}
	return false;
}

/* {name, body, updated_at, used_by: [{id, name, version, stale}]} of snippet $1. */
#define SNIPPET_JSON                                                                                         \
	"SELECT jsonb_build_object('name', s.name, 'body', s.body, 'updated_at', s.updated_at, 'used_by', "    \
	"coalesce((SELECT jsonb_agg(jsonb_build_object('id', t.id, 'name', t.name, 'version', "                \
	"t.current_version, 'stale', v.content->'snippets'->>s.name IS DISTINCT FROM s.body) ORDER BY t.id) " \
	"FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.current_version " \
	"WHERE v.content->'snippets' ? s.name), '[]'::jsonb))::text FROM snippets s WHERE s.name = $1"

/* Answer status with the snippet (and warnings, stolen, when non-empty), or 404. */
static void snippet_reply(api_req *r, int status, json_t *warnings)
{
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, SNIPPET_JSON, 1, p, &res, &err)) {
		json_decref(warnings);
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0) {
		api_problem(r, 404, "not-found", "Not found", "no such snippet", NULL);
		json_decref(warnings);
	} else {
		json_t *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
		if (json_array_size(warnings))
			json_object_set(out, "warnings", warnings);
		json_decref(warnings);
		api_json(r, status, out);
	}
	PQclear(res);
}

static void scan_dynamic(void *ud, const char *name, size_t n, int line, int col)
{
	jv *v = ud;
	char nm[128] = "";
	if (n && n < sizeof nm)
		memcpy(nm, name, n);
	if (!n || !snippet_name_valid(nm) || memchr(name, '\0', n))
		tpl_error(v, "/body", line, col,
			  "renders a snippet %s (line %d, column %d); give a snippet name as quoted text, e.g. "
			  "{%% render 'footer' %%}",
			  n ? "whose name is not a snippet name" : "by a computed name", line, col);
}

void snippets_put(api_req *r)
{
	if (!name_param(r, true))
		return;
	static const char *const allowed[] = {"body", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	json_t *body = json_object_get(r->json, "body");
	json_t *warnings = json_array();
	if (!body || json_is_null(body))
		jv_add(&v, "", "body", "is required");
	else if (!json_is_string(body))
		jv_add(&v, "", "body", "must be a string");
	else if (json_string_length(body) == 0)
		jv_add(&v, "", "body", "must not be empty");
	else if (json_string_length(body) > TPL_SRC_MAX)
		jv_add(&v, "", "body", "must be at most %d bytes", TPL_SRC_MAX);
	else if (tpl_check_source(&v, "/body", json_string_value(body), json_string_length(body), warnings))
		refs_scan(json_string_value(body), json_string_length(body), scan_dynamic, &v);
	if (!jv_ok(&v)) {
		json_decref(warnings);
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	const char *p[] = {r->param[0], json_string_value(body)};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "INSERT INTO snippets (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE "
			 "SET body = excluded.body, updated_at = now() RETURNING xmax = 0",
			 2, p, &res, &err)) {
		json_decref(warnings);
		api_problem_err(r, &err);
		return;
	}
	bool created = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (created)
		snprintf(r->location, sizeof r->location, "/v1/snippets/%s", r->param[0]);
	snippet_reply(r, created ? 201 : 200, warnings);
}

void snippets_get(api_req *r)
{
	if (name_param(r, false))
		snippet_reply(r, 200, NULL);
}

void snippets_delete(api_req *r)
{
	if (!name_param(r, false))
		return;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "DELETE FROM snippets WHERE name = $1 RETURNING 1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	bool found = PQntuples(res) == 1;
	PQclear(res);
	if (!found) {
		api_problem(r, 404, "not-found", "Not found", "no such snippet", NULL);
		return;
	}
	/* Saved versions keep their copies: nothing already saved breaks. */
	hr_free(r->resp);
	r->resp = NULL;
	r->ctype = NULL;
	r->status = 204;
}

void snippets_list(api_req *r)
{
	char after[128] = "", limit[16];
	if (!api_list_args(r, "s1:", after, sizeof after, limit))
		return;
	if (after[0] && !snippet_name_valid(after)) {
		api_bad_param(r, "cursor", "is not a cursor this API returned");
		return;
	}
	const char *p[] = {after, limit};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('name', name, 'size', octet_length(body), 'updated_at', "
			 "updated_at)::text, name FROM snippets WHERE name > $1 COLLATE \"C\" "
			 "ORDER BY name COLLATE \"C\" LIMIT $2::int + 1",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	api_list_reply(r, res, atoi(limit), "s1:");
	PQclear(res);
}
