/*
 * codes.c -- promo and referral code pools, issuing and redeeming codes.
 *
 *   POST /v1/code-pools                 create a pool (name, kind, settings)
 *   GET  /v1/code-pools[/{id}]          list (cursor) / one, with its counts
 *   POST /v1/code-pools/{id}/codes      upload codes; duplicates are reported, the rest added
 *   POST /v1/code-pools/{id}/generate   add N unique random codes
 *   POST /v1/code-pools/{id}/issue      give a contact a code of the pool
 *   GET  /v1/codes/{code}               a code, its holder and its redemptions
 *   POST /v1/codes/redeem               redeem a code for a contact
 *
 * The logic that the rule engine shares -- issuing, redeeming, generating --
 * is in common/codes.c; this file validates, resolves contacts and maps the
 * refusals to problem types (code-unknown, code-own, code-already-redeemed,
 * code-exhausted, pool-empty).  Pool settings are stored with their defaults
 * filled in, so what GET shows is what applies.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "codes.h"
#include "db.h"

#define UPLOAD_MAX 10000
#define GENERATE_MAX 100000

bool api_contact_find(api_req *r, const char *pointer, const char *kind, const char *value, int64_t *id,
		      char email[256], char phone[32])
{
	static const char *const q[] = {"id", "external_id", "email", "phone"};
	int k = 0;
	while (k < 3 && strcmp(q[k], kind))
		k++;
	char *sql = hr_sprintf("SELECT s.id, coalesce(s.email, ''), coalesce(s.phone, '') FROM contacts c JOIN contacts s "
			       "ON s.id = coalesce(c.merged_into, c.id) WHERE c.%s = $1%s",
			       q[k], k == 0 ? "::bigint" : "");
	const char *p[] = {value};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db, sql, 1, p, &res, &err);
	hr_free(sql);
	if (!ok) {
		api_problem_err(r, &err);
		return false;
	}
	bool found = PQntuples(res) == 1;
	if (found) {
		*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		snprintf(email, 256, "%s", PQgetvalue(res, 0, 1));
		snprintf(phone, 32, "%s", PQgetvalue(res, 0, 2));
	} else {
		jv v;
		jv_init(&v);
		jv_add(&v, pointer, NULL, "no such contact");
		api_problem_invalid(r, v.errors);
	}
	PQclear(res);
	return found;
}

static void problem_at(api_req *r, int status, const char *type, const char *title, const char *pointer,
		       const char *detail)
{
	api_problem(r, status, type, title, detail,
		    json_pack("[{s:s, s:s}]", "pointer", pointer, "detail", detail));
}

/* A path id: 1..18 digits, else 404 as for a missing row. */
static bool path_id(api_req *r, char out[32])
{
	const char *s = r->param[0];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		api_problem(r, 404, "not-found", "Not found", "no such code pool", NULL);
		return false;
	}
	snprintf(out, 32, "%s", s);
	return true;
}

/* The pool of the path, or a 404. */
static bool path_pool(api_req *r, hr_code_pool *p)
{
	char id[32];
	if (!path_id(r, id))
		return false;
	hr_err err = {0};
	if (!hr_code_pool_get(r->db, strtoll(id, NULL, 10), NULL, p, &err)) {
		if (err.kind == HR_ERR_NOTFOUND)
			api_problem(r, 404, "not-found", "Not found", "no such code pool", NULL);
		else
			api_problem_err(r, &err);
		return false;
	}
	return true;
}

/* a-z first, then a-z 0-9 _ -: pool names and attribute names. */
static bool token_valid(const char *s, size_t max, bool dash)
{
	size_t n = strlen(s);
	if (n < 1 || n > max || !islower((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' && !(dash && s[i] == '-'))
			return false;
	return true;
}

#define POOL_JSON                                                                                 \
	"jsonb_build_object('id', p.id, 'name', p.name, 'kind', p.kind, 'settings', p.settings, " \
	"'created_at', p.created_at)"

void code_pools_create(api_req *r)
{
	static const char *const allowed[] = {"name", "kind", "settings", NULL};
	static const char *const sallowed[] = {"redemption_limit", "credit_attribute", "credit_amount",
					       "code_length", "prefix", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	const char *name = jv_str(&v, r->json, "", "name", true, 64);
	const char *kind = jv_str(&v, r->json, "", "kind", true, 16);
	json_t *s = jv_obj(&v, r->json, "", "settings", false);
	if (name && !token_valid(name, 64, true))
		jv_add(&v, "", "name", "must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter (e.g. spring-2026)");
	bool referral = kind && !strcmp(kind, "referral");
	if (kind && !referral && strcmp(kind, "promo"))
		jv_add(&v, "", "kind", "must be promo or referral");
	int64_t limit = referral ? 3 : 1, amount = 1, length = 10;
	const char *attr = "referral_credits", *prefix = "";
	char up[17] = "";
	if (s) {
		bool present;
		jv_only(&v, s, "/settings", sallowed);
		jv_int(&v, s, "/settings", "redemption_limit", false, 1, HR_CODE_MAX_REDEMPTIONS, &present, &limit);
		jv_int(&v, s, "/settings", "credit_amount", false, 1, 1000000, &present, &amount);
		jv_int(&v, s, "/settings", "code_length", false, 6, 32, &present, &length);
		const char *a = jv_str(&v, s, "/settings", "credit_attribute", false, 64);
		if (a && !referral)
			jv_add(&v, "/settings", "credit_attribute", "only referral pools credit anyone");
		else if (a && !token_valid(a, 64, false))
			jv_add(&v, "/settings", "credit_attribute",
			       "must be 1 to 64 of a-z, 0-9 and _, starting with a letter (e.g. referral_credits)");
		else if (a)
			attr = a;
		if (json_object_get(s, "credit_amount") && !referral)
			jv_add(&v, "/settings", "credit_amount", "only referral pools credit anyone");
		const char *pre = jv_str(&v, s, "/settings", "prefix", false, 16);
		if (pre) {
			size_t n = strlen(pre);
			for (size_t i = 0; i < n; i++)
				up[i] = (char)toupper((unsigned char)pre[i]);
			up[n] = '\0';
			if (strspn(up, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != n)
				jv_add(&v, "/settings", "prefix", "may hold only letters, digits and -");
			else
				prefix = up;
		}
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	json_t *eff = json_pack("{s:I, s:I, s:s}", "redemption_limit", (json_int_t)limit, "code_length",
				(json_int_t)length, "prefix", prefix);
	if (referral) {
		json_object_set_new(eff, "credit_attribute", json_string(attr));
		json_object_set_new(eff, "credit_amount", json_integer(amount));
	}
	char *st = api_dump(eff);
	json_decref(eff);
	const char *p[] = {name, kind, st};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db,
			      "WITH p AS (INSERT INTO code_pools (name, kind, settings) VALUES ($1, $2, $3::jsonb) "
			      "RETURNING *) SELECT " POOL_JSON "::text, p.id FROM p",
			      3, p, &res, &err);
	hr_free(st);
	if (!ok) {
		if (err.kind == HR_ERR_CONFLICT)
			problem_at(r, 409, "conflict", "Conflict", "/name", "a code pool with this name exists");
		else
			api_problem_err(r, &err);
		return;
	}
	snprintf(r->location, sizeof r->location, "/v1/code-pools/%s", PQgetvalue(res, 0, 1));
	api_json(r, 201, json_loads(PQgetvalue(res, 0, 0), 0, NULL));
	PQclear(res);
}

void code_pools_list(api_req *r)
{
	char after[24] = "0", limit[16];
	if (!api_list_args(r, "p1:", after, sizeof after, limit))
		return;
	if (!*after || strspn(after, "0123456789") != strlen(after)) {
		api_bad_param(r, "cursor", "is not a cursor this API returned");
		return;
	}
	const char *p[] = {after, limit};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT " POOL_JSON "::text, p.id FROM code_pools p WHERE p.id > $1 ORDER BY p.id "
			 "LIMIT $2::int + 1",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	api_list_reply(r, res, atoi(limit), "p1:");
	PQclear(res);
}

void code_pools_get(api_req *r)
{
	char id[32];
	if (!path_id(r, id))
		return;
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT (" POOL_JSON " || jsonb_build_object('codes', c.n, 'issued', c.issued, 'available', "
			 "c.available, 'redemptions', c.redemptions))::text FROM code_pools p, LATERAL (SELECT count(*) n, "
			 "count(contact_id) issued, count(*) FILTER (WHERE contact_id IS NULL AND redeemed = 0) available, "
			 "coalesce(sum(redeemed), 0) redemptions FROM codes WHERE pool_id = p.id) c WHERE p.id = $1",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such code pool", NULL);
	else
		api_json(r, 200, json_loads(PQgetvalue(res, 0, 0), 0, NULL));
	PQclear(res);
}

typedef struct upl {
	char code[HR_CODE_MAX + 1];
	size_t index;
} upl;

static int upl_cmp(const void *a, const void *b)
{
	const upl *x = a, *y = b;
	int c = strcmp(x->code, y->code);
	return c ? c : (x->index > y->index) - (x->index < y->index);
}

void code_pools_upload(api_req *r)
{
	static const char *const allowed[] = {"codes", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	json_t *list = json_object_get(r->json, "codes");
	size_t n = json_array_size(list);
	if (!json_is_array(list) || n < 1 || n > UPLOAD_MAX)
		jv_add(&v, "", "codes", "must be an array of 1 to %d codes", UPLOAD_MAX);
	bool sized = json_is_array(list) && n >= 1 && n <= UPLOAD_MAX;
	upl *u = hr_calloc(sized ? n : 1, sizeof *u);
	/* Every bad code is listed, so one 422 says all that is wrong. */
	for (size_t i = 0; sized && i < n; i++) {
		json_t *e = json_array_get(list, i);
		char base[32];
		snprintf(base, sizeof base, "/codes/%zu", i);
		hr_err err = {0};
		if (!json_is_string(e))
			jv_add(&v, base, NULL, "must be a string");
		else if (!hr_code_normalize(json_string_value(e), u[i].code, &err))
			jv_add(&v, base, NULL, "%s", err.msg);
		u[i].index = i;
	}
	hr_code_pool pool;
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		hr_free(u);
		return;
	}
	jv_free(&v);
	if (!path_pool(r, &pool)) {
		hr_free(u);
		return;
	}
	/* Repeats inside the request: sort, keep each code's first occurrence. */
	qsort(u, n, sizeof *u, upl_cmp);
	json_t *dups = json_array();
	size_t cap = n * (HR_CODE_MAX + 1) + 3, len = 0, m = 0;
	char *arr = hr_malloc(cap);
	size_t *first = hr_calloc(n, sizeof *first);
	arr[len++] = '{';
	for (size_t i = 0; i < n; i++) {
		if (i && !strcmp(u[i].code, u[i - 1].code)) {
			json_array_append_new(dups, json_pack("{s:I, s:s, s:s}", "index", (json_int_t)u[i].index, "code",
							      u[i].code, "reason", "repeated in the request"));
			continue;
		}
		len += (size_t)snprintf(arr + len, cap - len, "%s%s", m ? "," : "", u[i].code);
		first[m++] = u[i].index;
	}
	snprintf(arr + len, cap - len, "}");
	char pid[32], lim[16];
	snprintf(pid, sizeof pid, "%lld", (long long)pool.id);
	snprintf(lim, sizeof lim, "%d", pool.redemption_limit);
	const char *p[] = {pid, lim, arr};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db,
			      "WITH i AS (SELECT x, o FROM unnest($3::text[]) WITH ORDINALITY t(x, o)), "
			      "ins AS (INSERT INTO codes (pool_id, code, max_redemptions) SELECT $1, x, $2 FROM i "
			      "ON CONFLICT (code) DO NOTHING RETURNING code) "
			      "SELECT o, x FROM i WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.code = i.x) ORDER BY o",
			      3, p, &res, &err);
	hr_free(arr);
	if (!ok) {
		hr_free(first);
		hr_free(u);
		json_decref(dups);
		api_problem_err(r, &err);
		return;
	}
	int existing = PQntuples(res);
	for (int i = 0; i < existing; i++) {
		size_t o = (size_t)atol(PQgetvalue(res, i, 0)) - 1;
		json_array_append_new(dups, json_pack("{s:I, s:s, s:s}", "index", (json_int_t)first[o], "code",
						      PQgetvalue(res, i, 1), "reason", "exists already"));
	}
	PQclear(res);
	hr_free(first);
	hr_free(u);
	api_json(r, 200, json_pack("{s:I, s:I, s:o}", "pool_id", (json_int_t)pool.id, "added",
				   (json_int_t)(m - (size_t)existing), "duplicates", dups));
}

void code_pools_generate(api_req *r)
{
	static const char *const allowed[] = {"count", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	bool present;
	int64_t count = 0;
	jv_int(&v, r->json, "", "count", true, 1, GENERATE_MAX, &present, &count);
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	hr_code_pool pool;
	if (!path_pool(r, &pool))
		return;
	hr_err err = {0};
	if (!hr_codes_generate(r->db, &pool, (int)count, &err)) {
		api_problem_err(r, &err);
		return;
	}
	api_json(r, 201, json_pack("{s:I, s:I}", "pool_id", (json_int_t)pool.id, "generated", (json_int_t)count));
}

static json_t *code_json(const hr_code *c, const hr_code_pool *p)
{
	return json_pack("{s:I, s:s, s:I, s:s, s:s, s:I, s:i, s:i}", "id", (json_int_t)c->id, "code", c->code,
			 "pool_id", (json_int_t)p->id, "pool", p->name, "kind", p->kind, "contact_id",
			 (json_int_t)c->contact_id, "max_redemptions", c->max_redemptions, "redeemed", c->redeemed);
}

/* Parse {"contact": ref} (plus allowed extra members) into kind/value; false with a 422. */
static bool body_contact(api_req *r, const char *const *allowed, jv *v, const char **kind, char ref[256])
{
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	jv_only(v, r->json, "", allowed);
	json_t *j = json_object_get(r->json, "contact");
	if (!j || json_is_null(j))
		jv_add(v, "", "contact", "is required");
	else
		contact_ref_parse(v, j, "/contact", cc, kind, ref);
	return jv_ok(v);
}

void code_pools_issue(api_req *r)
{
	static const char *const allowed[] = {"contact", NULL};
	jv v;
	jv_init(&v);
	const char *kind = NULL;
	char ref[256];
	if (!body_contact(r, allowed, &v, &kind, ref)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	hr_code_pool pool;
	int64_t cid;
	char em[256], ph[32];
	if (!path_pool(r, &pool) || !api_contact_find(r, "/contact", kind, ref, &cid, em, ph))
		return;
	hr_code c;
	hr_code_refusal why;
	hr_err err = {0};
	if (!hr_code_issue(r->db, &pool, cid, &c, &why, &err)) {
		if (why == HR_CODE_POOL_EMPTY)
			api_problem(r, 409, "pool-empty", "The pool has no free code", err.msg, NULL);
		else
			api_problem_err(r, &err);
		return;
	}
	json_t *out = code_json(&c, &pool);
	json_object_set_new(out, "issued_now", json_boolean(c.issued_now));
	api_json(r, c.issued_now ? 201 : 200, out);
}

void codes_get(api_req *r)
{
	char code[HR_CODE_MAX + 1];
	if (!hr_code_normalize(r->param[0], code, NULL)) {
		api_problem(r, 404, "not-found", "Not found", "no such code", NULL);
		return;
	}
	const char *p[] = {code};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('id', c.id, 'code', c.code, 'pool_id', c.pool_id, 'pool', p.name, "
			 "'kind', p.kind, 'contact_id', c.contact_id, 'issued_at', c.issued_at, 'max_redemptions', "
			 "c.max_redemptions, 'redeemed', c.redeemed, 'redemptions', c.redemptions, 'created_at', "
			 "c.created_at)::text FROM codes c JOIN code_pools p ON p.id = c.pool_id WHERE c.code = $1",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such code", NULL);
	else
		api_json(r, 200, json_loads(PQgetvalue(res, 0, 0), 0, NULL));
	PQclear(res);
}

void codes_redeem(api_req *r)
{
	static const char *const allowed[] = {"code", "contact", NULL};
	jv v;
	jv_init(&v);
	const char *kind = NULL;
	char ref[256], code[HR_CODE_MAX + 1] = "";
	body_contact(r, allowed, &v, &kind, ref);
	const char *raw = jv_str(&v, r->json, "", "code", true, HR_CODE_MAX);
	hr_err err = {0};
	if (raw && !hr_code_normalize(raw, code, &err))
		jv_add(&v, "", "code", "%s", err.msg);
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	int64_t cid;
	char em[256], ph[32];
	if (!api_contact_find(r, "/contact", kind, ref, &cid, em, ph))
		return;
	hr_redemption d;
	hr_code_refusal why;
	if (!hr_code_redeem(r->db, code, cid, &d, &why, &err)) {
		switch (why) {
		case HR_CODE_UNKNOWN:
			problem_at(r, 422, "code-unknown", "No such code", "/code", "no such code");
			break;
		case HR_CODE_OWN:
			problem_at(r, 422, "code-own", "Own referral code", "/contact", err.msg);
			break;
		case HR_CODE_ALREADY_REDEEMED:
			problem_at(r, 409, "code-already-redeemed", "Redeemed already", "/contact", err.msg);
			break;
		case HR_CODE_EXHAUSTED:
			problem_at(r, 409, "code-exhausted", "Redemption limit reached", "/code", err.msg);
			break;
		default:
			api_problem_err(r, &err);
		}
		return;
	}
	json_t *out = json_pack("{s:I, s:s, s:I, s:s, s:s, s:I, s:i, s:i, s:i}", "code_id", (json_int_t)d.code_id,
				"code", code, "pool_id", (json_int_t)d.pool_id, "pool", d.pool, "kind", d.kind,
				"contact_id", (json_int_t)cid, "redeemed", d.redeemed, "max_redemptions",
				d.max_redemptions, "remaining", d.max_redemptions - d.redeemed);
	if (d.referrer_id) {
		json_t *bal = json_loads(d.credits, JSON_DECODE_ANY, NULL);
		json_object_set_new(out, "referrer", json_pack("{s:I, s:s, s:o}", "contact_id", (json_int_t)d.referrer_id,
							       "attribute", d.credit_attribute, "balance",
							       bal ? bal : json_null()));
	}
	api_json(r, 200, out);
}
