/*
 * contacts.c -- contacts and their consent.
 *
 * PUT /v1/contacts upserts by any of external_id, email, phone (normalised,
 * normalize.c).  The request's identifiers may name several existing
 * contacts -- e.g. the external id is contact A's and the phone contact B's:
 * they are one person, so they are merged.  The rule: the oldest contact (the
 * smallest id) survives; every other one gets merged_into = survivor (and
 * contacts already merged into them follow), its attributes fill the gaps of
 * the survivor's, its identifiers move to the survivor where the survivor has
 * none, its current consents are copied where the survivor has none for that
 * channel and purpose (its consent_log history stays with its own row), and
 * the response lists the merged ids.  Lookups by an identifier that stayed
 * on a merged row resolve to the survivor (coalesce(merged_into, id)).
 *
 * Everything runs in the request's tenant transaction; a concurrent upsert
 * of the same new identifier loses with 409 (retry it).  contact_parse()
 * and contact_upsert() are shared with the bulk import (imports.c), whose
 * rows must be validated, normalised and merged exactly as here.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "db.h"

#define CONTACT_JSON                                                                                        \
	"jsonb_build_object('id', c.id, 'external_id', c.external_id, 'email', c.email, 'phone', c.phone, " \
	"'attributes', c.attributes, 'time_zone', c.time_zone, 'locale', c.locale, 'merged_into', "         \
	"c.merged_into, 'created_at', c.created_at, 'updated_at', c.updated_at)::text"

static const char *country_code(api_req *r)
{
	return json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
}

/* A path id: 1..18 digits (else the route answers 404 as for a missing row). */
static bool path_id(api_req *r, int i)
{
	const char *s = r->param[i];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		api_problem(r, 404, "not-found", "Not found", "no such resource", NULL);
		return false;
	}
	return true;
}

/* Parse a JSON text column value produced by SQL and hand it over. */
static json_t *col_json(PGresult *res, int row, int col)
{
	json_t *j = json_loads(PQgetvalue(res, row, col), JSON_DECODE_ANY, NULL);
	return j ? j : json_null();
}

bool contact_ref_parse(jv *v, json_t *ref, const char *base, const char *cc, const char **kind, char value[256])
{
	static const char *const kinds[] = {"id", "external_id", "email", "phone", NULL};
	size_t before = json_array_size(v->errors);
	if (!json_is_object(ref) || json_object_size(ref) != 1) {
		jv_add(v, base, NULL, "must be an object with exactly one of id, external_id, email, phone");
		return false;
	}
	jv_only(v, ref, base, kinds);
	if (json_array_size(v->errors) != before)
		return false;
	const char *k = json_object_iter_key(json_object_iter(ref));
	hr_err err = {0};
	if (strcmp(k, "id") == 0) {
		bool present;
		int64_t id = 0;
		jv_int(v, ref, base, "id", true, 1, INT64_MAX / 4096, &present, &id);
		if (!present)
			return false;
		snprintf(value, 256, "%lld", (long long)id);
	} else {
		const char *s = jv_str(v, ref, base, k, true, 254);
		if (!s)
			return false;
		if (strcmp(k, "email") == 0 ? !hr_email_normalize(s, value, &err)
		    : strcmp(k, "phone") == 0 ? !hr_phone_normalize(s, cc, value, &err) : false) {
			jv_add(v, base, k, "%s", err.msg);
			return false;
		}
		if (strcmp(k, "external_id") == 0)
			snprintf(value, 256, "%s", s);
	}
	*kind = k;
	return true;
}

bool contact_parse(jv *v, json_t *obj, const char *cc, contact_in *in)
{
	static const char *const allowed[] = {"external_id", "email", "phone", "attributes", "time_zone", "locale",
					      NULL};
	size_t before = json_array_size(v->errors);
	hr_err err = {0};
	memset(in, 0, sizeof *in);
	jv_only(v, obj, "", allowed);
	in->external_id = jv_str(v, obj, "", "external_id", false, 200);
	const char *email = jv_str(v, obj, "", "email", false, 320);
	const char *phone = jv_str(v, obj, "", "phone", false, 40);
	json_t *attrs = jv_obj(v, obj, "", "attributes", false);
	in->time_zone = jv_str(v, obj, "", "time_zone", false, 64);
	in->locale = jv_str(v, obj, "", "locale", false, 35);
	if (email && !(in->has_email = hr_email_normalize(email, in->email, &err)))
		jv_add(v, "", "email", "%s", err.msg);
	if (phone && !(in->has_phone = hr_phone_normalize(phone, cc, in->phone, &err)))
		jv_add(v, "", "phone", "%s", err.msg);
	if (in->time_zone && !hr_tz_valid(in->time_zone))
		jv_add(v, "", "time_zone", "is not a known IANA time zone (e.g. Europe/Berlin)");
	if (in->locale && !hr_locale_valid(in->locale))
		jv_add(v, "", "locale", "is not a locale tag (e.g. en-GB)");
	if (!json_object_get(obj, "external_id") && !email && !phone)
		jv_add(v, "", NULL, "a contact needs at least one of external_id, email, phone");
	if (json_array_size(v->errors) != before)
		return false;
	in->attributes = attrs && json_object_size(attrs) ? api_dump(attrs) : NULL;
	return true;
}

static bool parse_contact(api_req *r, contact_in *in)
{
	jv v;
	jv_init(&v);
	if (!contact_parse(&v, r->json, country_code(r), in)) {
		api_problem_invalid(r, v.errors);
		return false;
	}
	jv_free(&v);
	return true;
}

/* Move identifier `col` to the survivor: clear it on every other row first (unique). */
static bool take_ident(PGconn *db, const char *col, const char *val, const char *survivor, hr_err *err)
{
	char *sql = hr_sprintf("UPDATE contacts SET %s = NULL WHERE %s = $1 AND id <> $2", col, col);
	const char *p[] = {val, survivor};
	bool ok = hr_db_query(db, sql, 2, p, NULL, err);
	hr_free(sql);
	return ok;
}

bool contact_upsert(PGconn *db, const contact_in *in, bool *created, json_t **out, hr_err *err_out)
{
	hr_err err = {0};
	PGresult *res = NULL;
	json_t *merged = json_array();
	char *others = NULL;
	const char *email = in->has_email ? in->email : NULL, *phone = in->has_phone ? in->phone : NULL;
	const char *pm[] = {in->external_id, email, phone};
	if (!hr_db_query(db,
			 "SELECT DISTINCT coalesce(merged_into, id) FROM contacts "
			 "WHERE external_id = $1 OR email = $2 OR phone = $3 ORDER BY 1",
			 3, pm, &res, &err))
		goto fail;
	int nroots = PQntuples(res);
	if (nroots == 0) {
		PQclear(res);
		const char *pi[] = {in->external_id, email, phone, in->attributes, in->time_zone, in->locale};
		if (!hr_db_query(db,
				 "WITH c AS (INSERT INTO contacts (external_id, email, phone, attributes, time_zone, "
				 "locale) VALUES ($1, $2, $3, coalesce($4::jsonb, '{}'), $5, $6) RETURNING *) "
				 "SELECT " CONTACT_JSON " FROM c",
				 6, pi, &res, &err))
			goto fail;
		json_t *c = col_json(res, 0, 0);
		json_object_set_new(c, "merged", merged);
		PQclear(res);
		*created = true;
		*out = c;
		return true;
	}
	char survivor[32];
	snprintf(survivor, sizeof survivor, "%s", PQgetvalue(res, 0, 0));
	if (nroots > 1) {
		/* Postgres array literal of the absorbed roots. */
		size_t len = 0, cap = (size_t)nroots * 24 + 4;
		others = hr_malloc(cap);
		len += (size_t)snprintf(others, cap, "{");
		for (int i = 1; i < nroots; i++) {
			len += (size_t)snprintf(others + len, cap - len, "%s%s", i > 1 ? "," : "", PQgetvalue(res, i, 0));
			json_array_append_new(merged, json_integer(strtoll(PQgetvalue(res, i, 0), NULL, 10)));
		}
		snprintf(others + len, cap - len, "}");
	}
	PQclear(res);
	res = NULL;
	if (others) {
		const char *po[] = {survivor, others};
		if (!hr_db_query(db,
				 "UPDATE contacts SET merged_into = $1, updated_at = now() "
				 "WHERE id = ANY($2::bigint[]) OR merged_into = ANY($2::bigint[])",
				 2, po, NULL, &err) ||
		    !hr_db_query(db,
				 "INSERT INTO consents (contact_id, channel, purpose, granted, at) "
				 "SELECT DISTINCT ON (channel, purpose) $1::bigint, channel, purpose, granted, at "
				 "FROM consents WHERE contact_id = ANY($2::bigint[]) ORDER BY channel, purpose, at DESC "
				 "ON CONFLICT DO NOTHING",
				 2, po, NULL, &err) ||
		    !hr_db_query(db,
				 "UPDATE contacts SET attributes = coalesce((SELECT jsonb_object_agg(e.key, e.value) "
				 "FROM (SELECT x.key, x.value FROM contacts o, jsonb_each(o.attributes) x "
				 "WHERE o.id = ANY($2::bigint[]) ORDER BY o.id DESC) e), '{}') || attributes "
				 "WHERE id = $1",
				 2, po, NULL, &err))
			goto fail;
		/* Identifiers the survivor lacks (and the request does not set) come from the oldest absorbed. */
		static const char *const cols[] = {"external_id", "email", "phone"};
		const char *given[] = {in->external_id, email, phone};
		for (int k = 0; k < 3; k++) {
			if (given[k])
				continue;
			char *sql = hr_sprintf("SELECT o.%s FROM contacts o, contacts s WHERE s.id = $1 AND s.%s IS NULL "
					       "AND o.id = ANY($2::bigint[]) AND o.%s IS NOT NULL ORDER BY o.id LIMIT 1",
					       cols[k], cols[k], cols[k]);
			bool ok = hr_db_query(db, sql, 2, po, &res, &err);
			hr_free(sql);
			if (!ok)
				goto fail;
			if (PQntuples(res) == 1) {
				char *val = hr_strdup(PQgetvalue(res, 0, 0));
				char *set = hr_sprintf("UPDATE contacts SET %s = $1 WHERE id = $2", cols[k]);
				const char *pv[] = {val, survivor};
				ok = take_ident(db, cols[k], val, survivor, &err) &&
				     hr_db_query(db, set, 2, pv, NULL, &err);
				hr_free(set);
				hr_free(val);
			}
			PQclear(res);
			res = NULL;
			if (!ok)
				goto fail;
		}
	}
	if ((in->external_id && !take_ident(db, "external_id", in->external_id, survivor, &err)) ||
	    (email && !take_ident(db, "email", email, survivor, &err)) ||
	    (phone && !take_ident(db, "phone", phone, survivor, &err)))
		goto fail;
	const char *pu[] = {survivor, in->external_id, email, phone, in->attributes, in->time_zone, in->locale};
	if (!hr_db_query(db,
			 "WITH c AS (UPDATE contacts SET external_id = coalesce($2, external_id), "
			 "email = coalesce($3, email), phone = coalesce($4, phone), "
			 "attributes = attributes || coalesce($5::jsonb, '{}'), time_zone = coalesce($6, time_zone), "
			 "locale = coalesce($7, locale), updated_at = now() WHERE id = $1 RETURNING *) "
			 "SELECT " CONTACT_JSON " FROM c",
			 7, pu, &res, &err))
		goto fail;
	json_t *c = col_json(res, 0, 0);
	PQclear(res);
	json_object_set_new(c, "merged", merged);
	hr_free(others);
	*created = false;
	*out = c;
	return true;
fail:
	PQclear(res);
	json_decref(merged);
	hr_free(others);
	if (err.kind == HR_ERR_CONFLICT)
		hr_fail(&err, HR_ERR_CONFLICT, "", "a concurrent request changed these contacts; retry");
	*err_out = err;
	return false;
}

void contacts_put(api_req *r)
{
	contact_in in;
	if (!parse_contact(r, &in))
		return;
	bool created = false;
	json_t *c = NULL;
	hr_err err = {0};
	bool ok = contact_upsert(r->db, &in, &created, &c, &err);
	hr_free(in.attributes);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	if (created && !api_quota_contacts(r)) { /* over the contacts limit: rolled back (api/quota.c) */
		json_decref(c);
		return;
	}
	if (created)
		snprintf(r->location, sizeof r->location, "/v1/contacts/%lld",
			 (long long)json_integer_value(json_object_get(c, "id")));
	api_json(r, created ? 201 : 200, c);
}

void contacts_get(api_req *r)
{
	if (!path_id(r, 0))
		return;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT " CONTACT_JSON " FROM contacts c WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such contact", NULL);
	else
		api_json(r, 200, col_json(res, 0, 0));
	PQclear(res);
}

/* Cursors are opaque to clients: hex of "v1:<last id>". */
void api_cursor_make(long long id, char out[64])
{
	char plain[32];
	int n = snprintf(plain, sizeof plain, "v1:%lld", id);
	for (int i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", (unsigned char)plain[i]);
}

bool api_cursor_read(const char *s, char id[24])
{
	size_t n = strlen(s);
	if (n < 8 || n > 46 || n % 2)
		return false;
	char plain[24];
	for (size_t i = 0; i < n / 2; i++) {
		unsigned x;
		if (!isxdigit((unsigned char)s[2 * i]) || !isxdigit((unsigned char)s[2 * i + 1]) ||
		    sscanf(s + 2 * i, "%2x", &x) != 1)
			return false;
		plain[i] = (char)x;
	}
	plain[n / 2] = '\0';
	if (strncmp(plain, "v1:", 3) != 0 || strspn(plain + 3, "0123456789") != strlen(plain + 3) || !plain[3])
		return false;
	snprintf(id, 24, "%s", plain + 3);
	return true;
}

static void bad_param(api_req *r, const char *name, const char *detail)
{
	json_t *errors = json_array();
	json_array_append_new(errors, json_pack("{s:s, s:s}", "parameter", name, "detail", detail));
	api_problem(r, 400, "bad-parameter", "Bad query parameter", detail, errors);
}

void contacts_list(api_req *r)
{
	const char *cur = api_query(r, "cursor"), *lim = api_query(r, "limit");
	char after[24] = "0", limit[16] = "50";
	if (cur && *cur && !api_cursor_read(cur, after)) {
		bad_param(r, "cursor", "is not a cursor this API returned");
		return;
	}
	if (lim) {
		size_t n = strlen(lim);
		long l = n >= 1 && n <= 3 && strspn(lim, "0123456789") == n ? atol(lim) : 0;
		if (l < 1 || l > 500) {
			bad_param(r, "limit", "must be 1 to 500");
			return;
		}
		snprintf(limit, sizeof limit, "%ld", l);
	}
	const char *p[] = {after, limit};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT " CONTACT_JSON ", c.id FROM contacts c WHERE c.id > $1 AND c.merged_into IS NULL "
			 "ORDER BY c.id LIMIT $2::int + 1",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	int n = PQntuples(res), want = atoi(limit);
	json_t *data = json_array();
	for (int i = 0; i < n && i < want; i++)
		json_array_append_new(data, col_json(res, i, 0));
	json_t *out = json_pack("{s:o}", "data", data);
	if (n > want) {
		char c[64];
		api_cursor_make(strtoll(PQgetvalue(res, want - 1, 1), NULL, 10), c);
		json_object_set_new(out, "next_cursor", json_string(c));
	} else {
		json_object_set_new(out, "next_cursor", json_null());
	}
	PQclear(res);
	api_json(r, 200, out);
}

/* The contact a consent applies to: the id, or the survivor it was merged into. */
static bool consent_contact(api_req *r, char id[32])
{
	if (!path_id(r, 0))
		return false;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT coalesce(merged_into, id) FROM contacts WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	bool found = PQntuples(res) == 1;
	if (found)
		snprintf(id, 32, "%s", PQgetvalue(res, 0, 0));
	else
		api_problem(r, 404, "not-found", "Not found", "no such contact", NULL);
	PQclear(res);
	return found;
}

static bool token_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 64 || !islower((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

#define CONSENT_JSON                                                                                      \
	"jsonb_build_object('id', l.id, 'contact_id', l.contact_id, 'channel', l.channel, 'purpose', "    \
	"l.purpose, 'granted', l.granted, 'source', l.source, 'actor', l.actor, 'detail', l.detail, 'at', " \
	"l.at)::text"

void consents_post(api_req *r)
{
	static const char *const allowed[] = {"channel", "purpose", "granted", "source", "actor", "detail", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	const char *channel = jv_str(&v, r->json, "", "channel", true, 16);
	const char *purpose = jv_str(&v, r->json, "", "purpose", true, 64);
	bool has_granted, granted = false;
	jv_bool(&v, r->json, "", "granted", true, &has_granted, &granted);
	const char *source = jv_str(&v, r->json, "", "source", true, 200);
	const char *actor = jv_str(&v, r->json, "", "actor", false, 200);
	json_t *detail = jv_obj(&v, r->json, "", "detail", false);
	if (channel && strcmp(channel, "email") && strcmp(channel, "sms") && strcmp(channel, "messenger") &&
	    strcmp(channel, "push"))
		jv_add(&v, "", "channel", "must be email, sms, messenger or push");
	if (purpose && !token_valid(purpose))
		jv_add(&v, "", "purpose", "must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter (e.g. marketing)");
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	char id[32];
	if (!consent_contact(r, id))
		return;
	char *det = detail ? api_dump(detail) : NULL;
	const char *p[] = {id, channel, purpose, granted ? "true" : "false", source, actor, det};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db,
			      "WITH l AS (INSERT INTO consent_log (contact_id, channel, purpose, granted, source, actor, "
			      "detail) VALUES ($1, $2, $3, $4, $5, $6, coalesce($7::jsonb, '{}')) RETURNING *), "
			      "u AS (INSERT INTO consents (contact_id, channel, purpose, granted, at) "
			      "SELECT contact_id, channel, purpose, granted, at FROM l "
			      "ON CONFLICT (contact_id, channel, purpose) DO UPDATE SET granted = excluded.granted, "
			      "at = excluded.at) SELECT " CONSENT_JSON " FROM l",
			      7, p, &res, &err);
	hr_free(det);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	api_json(r, 201, col_json(res, 0, 0));
	PQclear(res);
}

void consents_list(api_req *r)
{
	char id[32];
	if (!consent_contact(r, id))
		return;
	const char *p[] = {id};
	PGresult *cur = NULL, *hist = NULL;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('channel', channel, 'purpose', purpose, 'granted', granted, 'at', "
			 "at)::text FROM consents WHERE contact_id = $1 ORDER BY channel, purpose",
			 1, p, &cur, &err) ||
	    !hr_db_query(r->db,
			 "SELECT " CONSENT_JSON " FROM consent_log l WHERE contact_id = $1 OR contact_id IN "
			 "(SELECT m.id FROM contacts m WHERE m.merged_into = $1) ORDER BY at, id",
			 1, p, &hist, &err)) {
		PQclear(cur);
		api_problem_err(r, &err);
		return;
	}
	json_t *a = json_array(), *h = json_array();
	for (int i = 0; i < PQntuples(cur); i++)
		json_array_append_new(a, col_json(cur, i, 0));
	for (int i = 0; i < PQntuples(hist); i++)
		json_array_append_new(h, col_json(hist, i, 0));
	PQclear(cur);
	PQclear(hist);
	api_json(r, 200, json_pack("{s:I, s:o, s:o}", "contact_id", (json_int_t)strtoll(id, NULL, 10), "current", a,
				   "history", h));
}
