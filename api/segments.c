/*
 * segments.c -- /v1/segments: create, list, read, replace, delete a segment,
 * and preview it (how many contacts it matches now, and a sample).
 *
 * A rule is validated by compiling it (common/segment.c) in the request's
 * tenant transaction, so references to other segments ({"segment": id}) are
 * resolved against this tenant's segments only.  A bad rule is a 422 whose
 * errors[0].pointer is the JSON pointer of the offending part inside the
 * body ("/rule/and/1/value").  The ids a rule reaches (directly or through
 * other segments) are stored in segments.refs: a segment that another one or
 * a campaign uses cannot be deleted (409), and a rule that would reach its
 * own segment is refused (422), so membership never loops.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "clock.h"
#include "db.h"
#include "segment.h"

/*
 * JSON text Postgres built (jsonb): integers stay integers, but a number
 * beyond int64 (a rule may hold 1.5e308, which jsonb writes out in full) is
 * read as a double rather than failing the answer.
 */
json_t *db_json(const char *text)
{
	json_t *v = json_loads(text, 0, NULL);
	return v ? v : json_loads(text, JSON_DECODE_INT_AS_REAL, NULL);
}

/* A path id: 1..18 digits, no leading zero; else the answer is 404. */
bool api_path_id(api_req *r, int i, char out[24], const char *what)
{
	const char *s = r->param[i];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		char d[64];
		snprintf(d, sizeof d, "no such %s", what);
		api_problem(r, 404, "not-found", "Not found", d, NULL);
		return false;
	}
	snprintf(out, 24, "%s", s);
	return true;
}

typedef struct seg_refs {
	PGconn *db;
	int64_t self; /* 0 when creating */
	int64_t ids[256];
	int n;
	bool loop;
} seg_refs;

static bool lookup(void *ud, int64_t id, char **json, hr_err *err)
{
	seg_refs *s = ud;
	if (id == s->self) {
		s->loop = true;
		return hr_fail(err, HR_ERR_INVALID, "", "a segment cannot contain itself");
	}
	char sid[32];
	snprintf(sid, sizeof sid, "%lld", (long long)id);
	const char *p[] = {sid};
	PGresult *r;
	if (!hr_db_query(s->db, "SELECT rule::text FROM segments WHERE id = $1", 1, p, &r, err))
		return false;
	bool found = PQntuples(r) == 1;
	if (found)
		*json = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (!found)
		return hr_fail(err, HR_ERR_NOTFOUND, "", "no segment %lld", (long long)id);
	bool seen = false;
	for (int i = 0; i < s->n; i++)
		seen = seen || s->ids[i] == id;
	if (!seen && s->n < 256)
		s->ids[s->n++] = id;
	return true;
}

/*
 * Validate a segment body {name, rule} and compile the rule.  On failure the
 * answer is set and false returned.  *rule_text and *refs are heap strings.
 */
static bool segment_body(api_req *r, int64_t self, const char **name, char **rule_text, char **refs,
			 hr_segment_sql *sql)
{
	static const char *const allowed[] = {"name", "rule", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	*name = jv_str(&v, r->json, "", "name", true, 200);
	json_t *rule = json_object_get(r->json, "rule");
	if (!rule || json_is_null(rule))
		jv_add(&v, "", "rule", "is required");
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return false;
	}
	jv_free(&v);
	*rule_text = api_dump(rule);
	seg_refs s = {.db = r->db, .self = self};
	hr_segment_opts o = {.now_unix = hr_clock_now() / 1000000, .lookup = lookup, .lookup_ud = &s,
			     .first_param = 1};
	hr_err err = {0};
	memset(sql, 0, sizeof *sql);
	if (!hr_segment_compile(*rule_text, &o, sql, &err)) {
		hr_free(*rule_text);
		*rule_text = NULL;
		if (err.kind != HR_ERR_INVALID && err.kind != HR_ERR_NOTFOUND) {
			api_problem_err(r, &err);
			return false;
		}
		jv_init(&v);
		char *ptr = hr_sprintf("/rule%s", err.field);
		jv_add(&v, ptr, NULL, "%s", s.loop ? "a segment cannot contain itself" : err.msg);
		hr_free(ptr);
		api_problem_invalid(r, v.errors);
		return false;
	}
	size_t cap = 16 + (size_t)s.n * 21, len = 0;
	*refs = hr_malloc(cap);
	len += (size_t)snprintf(*refs, cap, "{");
	for (int i = 0; i < s.n; i++)
		len += (size_t)snprintf(*refs + len, cap - len, "%s%lld", i ? "," : "", (long long)s.ids[i]);
	snprintf(*refs + len, cap - len, "}");
	return true;
}

#define SEGMENT_JSON                                                                                        \
	"jsonb_build_object('id', id, 'name', name, 'rule', rule, 'created_at', created_at, "              \
	"'updated_at', updated_at)::text"

static void answer_row(api_req *r, PGresult *res, int status)
{
	json_t *o = db_json(PQgetvalue(res, 0, 0));
	if (status == 201)
		snprintf(r->location, sizeof r->location, "/v1/segments/%lld",
			 (long long)json_integer_value(json_object_get(o, "id")));
	api_json(r, status, o);
}

static void name_taken(api_req *r)
{
	api_problem(r, 409, "conflict", "Conflict", "a segment with this name exists already", NULL);
}

void segments_create(api_req *r)
{
	const char *name;
	char *rule = NULL, *refs = NULL;
	hr_segment_sql sql;
	if (!segment_body(r, 0, &name, &rule, &refs, &sql))
		return;
	hr_segment_sql_free(&sql);
	const char *p[] = {name, rule, refs};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db,
			      "INSERT INTO segments (name, rule, refs) VALUES ($1, $2::jsonb, $3::bigint[]) "
			      "ON CONFLICT (name) DO NOTHING RETURNING " SEGMENT_JSON,
			      3, p, &res, &err);
	hr_free(rule);
	hr_free(refs);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 1)
		answer_row(r, res, 201);
	else
		name_taken(r);
	PQclear(res);
}

void segments_list(api_req *r)
{
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT coalesce(jsonb_agg(" SEGMENT_JSON "::jsonb ORDER BY id), '[]')::text FROM segments", 0,
			 NULL, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	json_t *out = json_object();
	json_object_set_new(out, "segments", db_json(PQgetvalue(res, 0, 0)));
	PQclear(res);
	api_json(r, 200, out);
}

void segments_get(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "segment"))
		return;
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT " SEGMENT_JSON " FROM segments WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 1)
		answer_row(r, res, 200);
	else
		api_problem(r, 404, "not-found", "Not found", "no such segment", NULL);
	PQclear(res);
}

void segments_put(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "segment"))
		return;
	const char *pe[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT 1 FROM segments WHERE id = $1 FOR UPDATE", 1, pe, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	bool found = PQntuples(res) == 1;
	PQclear(res);
	if (!found) {
		api_problem(r, 404, "not-found", "Not found", "no such segment", NULL);
		return;
	}
	const char *name;
	char *rule = NULL, *refs = NULL;
	hr_segment_sql sql;
	if (!segment_body(r, strtoll(id, NULL, 10), &name, &rule, &refs, &sql))
		return;
	hr_segment_sql_free(&sql);
	const char *p[] = {id, name, rule, refs};
	bool ok = hr_db_query(r->db,
			      "UPDATE segments SET name = $2, rule = $3::jsonb, refs = $4::bigint[], updated_at = now() "
			      "WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM segments o WHERE o.name = $2 AND o.id <> $1) "
			      "RETURNING " SEGMENT_JSON,
			      4, p, &res, &err);
	hr_free(rule);
	hr_free(refs);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 1)
		answer_row(r, res, 200);
	else
		name_taken(r);
	PQclear(res);
}

void segments_delete(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "segment"))
		return;
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT (SELECT " SEGMENT_JSON " FROM segments WHERE id = $1 FOR UPDATE), "
			 "(SELECT min(id) FROM segments WHERE $1 = ANY(refs)), "
			 "(SELECT min(id) FROM campaigns WHERE segment_id = $1)",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQgetisnull(res, 0, 0)) {
		api_problem(r, 404, "not-found", "Not found", "no such segment", NULL);
	} else if (!PQgetisnull(res, 0, 1) || !PQgetisnull(res, 0, 2)) {
		char d[160];
		snprintf(d, sizeof d, "the segment is used by %s %s; change or delete that first",
			 PQgetisnull(res, 0, 1) ? "campaign" : "segment", PQgetvalue(res, 0, PQgetisnull(res, 0, 1) ? 2 : 1));
		api_problem(r, 409, "in-use", "Segment in use", d, NULL);
	} else {
		json_t *o = db_json(PQgetvalue(res, 0, 0));
		PQclear(res);
		if (!hr_db_query(r->db, "DELETE FROM segments WHERE id = $1", 1, p, NULL, &err)) {
			json_decref(o);
			api_problem_err(r, &err);
			return;
		}
		api_json(r, 200, o);
		return;
	}
	PQclear(res);
}

void segments_preview(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "segment"))
		return;
	const char *ss = api_query(r, "sample");
	long sample = 10;
	if (ss) {
		char *end;
		sample = strtol(ss, &end, 10);
		if (!*ss || *end || sample < 0 || sample > 100) {
			json_t *e = json_array();
			json_array_append_new(e, json_pack("{s:s, s:s}", "parameter", "sample", "detail",
							   "must be 0 to 100"));
			api_problem(r, 400, "bad-parameter", "Bad query parameter", "sample: must be 0 to 100", e);
			return;
		}
	}
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT rule::text FROM segments WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) != 1) {
		PQclear(res);
		api_problem(r, 404, "not-found", "Not found", "no such segment", NULL);
		return;
	}
	char *rule = hr_strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	seg_refs s = {.db = r->db, .self = strtoll(id, NULL, 10)};
	hr_segment_opts o = {.now_unix = hr_clock_now() / 1000000, .lookup = lookup, .lookup_ud = &s,
			     .first_param = 2};
	hr_segment_sql sql = {0};
	bool ok = hr_segment_compile(rule, &o, &sql, &err);
	hr_free(rule);
	if (!ok) {
		/* A stored rule that no longer compiles (e.g. a time that passed the supported range). */
		if (err.kind == HR_ERR_INVALID || err.kind == HR_ERR_NOTFOUND)
			api_problem(r, 409, "segment-broken", "The segment cannot be evaluated", err.msg, NULL);
		else
			api_problem_err(r, &err);
		hr_segment_sql_free(&sql);
		return;
	}
	char n[16];
	snprintf(n, sizeof n, "%ld", sample);
	const char **pp = hr_calloc((size_t)sql.nparams + 1, sizeof *pp);
	pp[0] = n;
	for (int i = 0; i < sql.nparams; i++)
		pp[i + 1] = sql.params[i];
	char *q = hr_sprintf("WITH m AS (SELECT c.* FROM contacts c WHERE c.merged_into IS NULL AND %s) "
			     "SELECT (SELECT count(*) FROM m), (SELECT coalesce(jsonb_agg(x.o ORDER BY x.id), '[]') "
			     "FROM (SELECT m.id, jsonb_strip_nulls(jsonb_build_object('id', m.id, 'external_id', "
			     "m.external_id, 'email', m.email, 'phone', m.phone, 'time_zone', m.time_zone, "
			     "'attributes', m.attributes)) AS o FROM m ORDER BY m.id LIMIT $1::int) x)::text",
			     sql.where);
	ok = hr_db_query(r->db, q, sql.nparams + 1, pp, &res, &err);
	hr_free(q);
	hr_free(pp);
	hr_segment_sql_free(&sql);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	json_t *out = json_pack("{s:I, s:o}", "count", (json_int_t)strtoll(PQgetvalue(res, 0, 0), NULL, 10), "sample",
				db_json(PQgetvalue(res, 0, 1)));
	PQclear(res);
	api_json(r, 200, out);
}
