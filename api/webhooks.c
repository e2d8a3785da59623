/*
 * webhooks.c -- webhooks out: tenants subscribe a URL to delivery and
 * engagement events; herald-api delivers each event, signed per the
 * Standard Webhooks spec, with retries, and keeps a delivery log.
 *
 *   POST   /v1/webhooks                 {url, event_types, description?} -> 201 with the
 *                                        signing secret (whsec_..., shown once)
 *   GET    /v1/webhooks                 list (cursor pagination)
 *   GET    /v1/webhooks/{id}
 *   PATCH  /v1/webhooks/{id}            url, event_types, description
 *   DELETE /v1/webhooks/{id}            204; its pending deliveries fail ("deleted")
 *   GET    /v1/webhooks/{id}/deliveries the delivery log, newest first, every attempt
 *
 * Event types: message_delivered, message_bounced, message_complained,
 * email_opened, email_clicked, unsubscribed.
 *
 * Queueing (webhooks_record): an event is inserted into the tenant's events
 * and, in the same statement, one webhook_deliveries row per subscription of
 * its type; when there is one, NOTIFY herald_webhooks '<tenant id>' -- sent
 * by Postgres only if the transaction commits, so a delivery is queued
 * exactly when its event exists.
 *
 * Delivery (the thread started by api_webhooks_start): it LISTENs on
 * herald_webhooks and keeps, per tenant, only the time its next delivery is
 * due; it reads a tenant's table when notified or when that time comes, so
 * idle tenants cost nothing (one read per tenant when the thread starts, to
 * find deliveries left by a previous process).  A due batch is claimed with
 * FOR UPDATE SKIP LOCKED and a lease (next_at moved 60 s ahead), so several
 * herald-api processes never send one delivery twice at once; a process that
 * dies mid-send leaves the lease to expire and the delivery is sent again
 * (at least once; receivers dedupe on webhook-id).
 *
 * Each attempt: POST the payload {"type", "timestamp", "data"} with
 *   webhook-id: msg_<tenant id>_<delivery id>   (the same on every retry)
 *   webhook-timestamp: <unix seconds of this attempt>
 *   webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>
 * A 2xx answer is delivered; anything else is retried after
 * webhook_retry_base_ms x 2^(attempt-1), jittered by +-50 %, capped at one
 * hour, until webhook_max_attempts, then failed.  Every attempt is appended
 * to the row's log (time, HTTP status or error, milliseconds).
 *
 * Where deliveries may go: public addresses only, unless the operator sets
 * webhook_allow_private -- a URL's IP-literal or localhost host is checked
 * when saved (api_url_host_not_public), every address a delivery connects to
 * when it connects (webhook_deliver.c, open_socket), so a tenant cannot
 * point herald at the agency's own network.
 *
 * Thread safety: the handlers run on the request threads with the request's
 * connection; the delivery thread owns its two connections and its curl
 * handle.
 */
#include <ctype.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "log.h"

static const char *const event_types[] = {"message_delivered", "message_bounced", "message_complained",
					  "email_opened",      "email_clicked",   "unsubscribed",       NULL};

#define SECRET_BYTES 24
#define BATCH 32

/* ---- queueing ---- */

bool webhooks_record(PGconn *c, int64_t tenant_id, const char *name, int64_t contact_id, int64_t message_id,
		     json_t *props, const char *occurred_at, hr_err *err)
{
	char cid[32], mid[32], tid[32];
	snprintf(cid, sizeof cid, "%lld", (long long)contact_id);
	snprintf(mid, sizeof mid, "%lld", (long long)message_id);
	snprintf(tid, sizeof tid, "%lld", (long long)tenant_id);
	char *pj = api_dump(props);
	const char *p[] = {cid, name, pj, occurred_at, mid, tid};
	PGresult *res;
	bool ok = hr_db_query(
		c,
		"WITH e AS (INSERT INTO events (contact_id, name, properties, occurred_at, message_id) "
		"VALUES (nullif($1::bigint, 0), $2, $3::jsonb, coalesce($4::timestamptz, herald_clock.now()), nullif($5::bigint, 0)) "
		"RETURNING id, name, properties, occurred_at, contact_id, message_id), "
		"d AS (INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload) "
		"SELECT w.id, e.id, e.name, jsonb_build_object('type', e.name, 'timestamp', e.occurred_at, "
		"'data', e.properties || jsonb_build_object('event_id', e.id, 'contact_id', e.contact_id, "
		"'message_id', e.message_id)) FROM e JOIN webhooks w ON w.deleted_at IS NULL "
		"AND e.name = ANY (w.event_types) RETURNING 1) "
		"SELECT CASE WHEN count(*) > 0 THEN pg_notify('herald_webhooks', $6) END, count(*) FROM d",
		6, p, &res, err);
	hr_free(pj);
	if (ok)
		PQclear(res);
	return ok;
}

/* ---- the API ---- */

static void bad_param(api_req *r, const char *name, const char *detail)
{
	json_t *errors = json_array();
	json_array_append_new(errors, json_pack("{s:s, s:s}", "parameter", name, "detail", detail));
	api_problem(r, 400, "bad-parameter", "Bad query parameter", detail, errors);
}

/* Cursors: hex of "v1:<last id>", like every list of the API. */
static void cursor_make(long long id, char out[64])
{
	char plain[32];
	int n = snprintf(plain, sizeof plain, "v1:%lld", id);
	for (int i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", (unsigned char)plain[i]);
}

static bool cursor_read(const char *s, char id[24])
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
	if (strncmp(plain, "v1:", 3) != 0 || !plain[3] || strspn(plain + 3, "0123456789") != strlen(plain + 3) ||
	    strlen(plain + 3) > 18)
		return false;
	snprintf(id, 24, "%s", plain + 3);
	return true;
}

/* cursor and limit query parameters; false = a 400 is set. */
static bool page_params(api_req *r, char after[24], char limit[16])
{
	const char *cur = api_query(r, "cursor"), *lim = api_query(r, "limit");
	if (cur && *cur && !cursor_read(cur, after)) {
		bad_param(r, "cursor", "is not a cursor this API returned");
		return false;
	}
	if (lim) {
		size_t n = strlen(lim);
		long l = n >= 1 && n <= 3 && strspn(lim, "0123456789") == n ? atol(lim) : 0;
		if (l < 1 || l > 500) {
			bad_param(r, "limit", "must be 1 to 500");
			return false;
		}
		snprintf(limit, 16, "%ld", l);
	}
	return true;
}

/* A page of rows (column 0: JSON text, column 1: the id the cursor continues after). */
static void page_answer(api_req *r, PGresult *res, const char *limit)
{
	int n = PQntuples(res), want = atoi(limit);
	json_t *data = json_array();
	for (int i = 0; i < n && i < want; i++)
		json_array_append_new(data, json_loads(PQgetvalue(res, i, 0), 0, NULL));
	json_t *out = json_pack("{s:o}", "data", data);
	if (n > want) {
		char c[64];
		cursor_make(strtoll(PQgetvalue(res, want - 1, 1), NULL, 10), c);
		json_object_set_new(out, "next_cursor", json_string(c));
	} else {
		json_object_set_new(out, "next_cursor", json_null());
	}
	api_json(r, 200, out);
}

/* The {id} path parameter: a positive integer, else 404. */
static bool path_id(api_req *r)
{
	const char *s = r->param[0];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		api_problem(r, 404, "not-found", "Not found", "no such webhook", NULL);
		return false;
	}
	return true;
}

static bool url_ok(const char *u)
{
	size_t n = strlen(u);
	size_t skip = !strncmp(u, "https://", 8) ? 8 : !strncmp(u, "http://", 7) ? 7 : 0;
	if (!skip || n == skip || u[skip] == '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f)
			return false;
	return true;
}

/* Validate the writable fields; required on create.  types_out: a Postgres text[] literal (heap). */
static void check_fields(api_req *r, jv *v, json_t *b, bool create, const char **url, char **types_out,
			 const char **desc)
{
	static const char *const allowed[] = {"url", "event_types", "description", NULL};
	jv_only(v, b, "", allowed);
	*url = jv_str(v, b, "", "url", create, 2048);
	const char *kind;
	if (*url && !url_ok(*url))
		jv_add(v, "", "url", "must be an http:// or https:// URL without spaces");
	else if (*url && !hr_config_bool(api_cfg(r), "webhook_allow_private") && (kind = api_url_host_not_public(*url)))
		jv_add(v, "", "url", "must point at a public address, not a %s one (the server's webhook_allow_private is off)",
		       kind);
	*desc = jv_str(v, b, "", "description", false, 500);
	*types_out = NULL;
	json_t *t = json_object_get(b, "event_types");
	if (!t) {
		if (create)
			jv_add(v, "", "event_types", "is required");
		return;
	}
	if (!json_is_array(t) || json_array_size(t) < 1) {
		jv_add(v, "", "event_types", "must be a non-empty array of event types");
		return;
	}
	json_t *lit = json_array();
	size_t i;
	json_t *e;
	json_array_foreach(t, i, e)
	{
		char base[48];
		snprintf(base, sizeof base, "/event_types/%zu", i);
		const char *s = json_string_value(e);
		bool known = false;
		for (int k = 0; s && event_types[k]; k++)
			known = known || !strcmp(s, event_types[k]);
		if (!known) {
			jv_add(v, base, NULL,
			       "must be one of message_delivered, message_bounced, message_complained, email_opened, "
			       "email_clicked, unsubscribed");
			continue;
		}
		bool dup = false;
		for (size_t k = 0; k < json_array_size(lit); k++)
			dup = dup || !strcmp(json_string_value(json_array_get(lit, k)), s);
		if (dup)
			jv_add(v, base, NULL, "is listed twice");
		else
			json_array_append_new(lit, json_string(s));
	}
	/* {a,b}: the names are plain words, no quoting needed. */
	size_t len = 3;
	for (i = 0; i < json_array_size(lit); i++)
		len += strlen(json_string_value(json_array_get(lit, i))) + 1;
	char *o = hr_malloc(len), *p = o;
	*p++ = '{';
	for (i = 0; i < json_array_size(lit); i++)
		p += sprintf(p, "%s%s", i ? "," : "", json_string_value(json_array_get(lit, i)));
	*p++ = '}';
	*p = '\0';
	json_decref(lit);
	*types_out = o;
}

#define HOOK_JSON                                                                                           \
	"jsonb_build_object('id', id, 'url', url, 'event_types', to_jsonb(event_types), 'description', "     \
	"description, 'created_at', created_at, 'updated_at', updated_at)::text"

static void hook_answer(api_req *r, PGresult *res, int status)
{
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such webhook", NULL);
	else
		api_json(r, status, json_loads(PQgetvalue(res, 0, 0), 0, NULL));
}

void webhooks_create(api_req *r)
{
	jv v;
	jv_init(&v);
	const char *url, *desc;
	char *types;
	hr_err err = {0};
	check_fields(r, &v, r->json, true, &url, &types, &desc);
	if (!jv_ok(&v)) {
		hr_free(types);
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	const uint8_t *master = api_master_key(r);
	if (!master) {
		hr_free(types);
		api_problem(r, 503, "unavailable", "Webhooks are unavailable", "the server has no master key", NULL);
		return;
	}
	PGresult *res;
	if (!hr_db_query(r->db, "SELECT nextval(pg_get_serial_sequence('webhooks', 'id'))", 0, NULL, &res, &err)) {
		hr_free(types);
		api_problem_err(r, &err);
		return;
	}
	char id[32];
	snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	uint8_t raw[SECRET_BYTES];
	hr_random_bytes(raw, sizeof raw);
	char *aad = hr_sprintf("tenant:%lld/webhook:%s", (long long)r->tenant.id, id);
	uint8_t *sealed;
	size_t slen;
	hr_seal(master, aad, raw, sizeof raw, &sealed, &slen);
	hr_free(aad);
	char *hex = hr_malloc(2 * slen + 3);
	memcpy(hex, "\\x", 2);
	for (size_t i = 0; i < slen; i++)
		snprintf(hex + 2 + 2 * i, 3, "%02x", sealed[i]);
	hr_free(sealed);
	const char *p[] = {id, url, types, hex, desc};
	bool ok = hr_db_query(r->db,
			      "INSERT INTO webhooks (id, url, event_types, secret_sealed, description) "
			      "VALUES ($1, $2, $3::text[], $4::bytea, $5) RETURNING " HOOK_JSON,
			      5, p, &res, &err);
	hr_free(hex);
	hr_free(types);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	json_t *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	/* whsec_ + base64: the form Standard Webhooks libraries take. */
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char secret[6 + SECRET_BYTES / 3 * 4 + 1] = "whsec_", *s = secret + 6;
	for (size_t i = 0; i < SECRET_BYTES; i += 3) {
		uint32_t x = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
		*s++ = b64[x >> 18 & 63], *s++ = b64[x >> 12 & 63], *s++ = b64[x >> 6 & 63], *s++ = b64[x & 63];
	}
	*s = '\0';
	memset(raw, 0, sizeof raw);
	json_object_set_new(out, "secret", json_string(secret));
	snprintf(r->location, sizeof r->location, "/v1/webhooks/%s", id);
	api_json(r, 201, out);
}

void webhooks_list(api_req *r)
{
	char after[24] = "0", limit[16] = "50";
	if (!page_params(r, after, limit))
		return;
	const char *p[] = {after, limit};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT " HOOK_JSON ", id FROM webhooks WHERE id > $1 AND deleted_at IS NULL "
			 "ORDER BY id LIMIT $2::int + 1",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	page_answer(r, res, limit);
	PQclear(res);
}

void webhooks_get(api_req *r)
{
	if (!path_id(r))
		return;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT " HOOK_JSON " FROM webhooks WHERE id = $1 AND deleted_at IS NULL", 1, p, &res,
			 &err)) {
		api_problem_err(r, &err);
		return;
	}
	hook_answer(r, res, 200);
	PQclear(res);
}

void webhooks_update(api_req *r)
{
	if (!path_id(r))
		return;
	jv v;
	jv_init(&v);
	const char *url, *desc;
	char *types;
	check_fields(r, &v, r->json, false, &url, &types, &desc);
	if (!jv_ok(&v)) {
		hr_free(types);
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	bool clear_desc = json_is_null(json_object_get(r->json, "description"));
	const char *p[] = {r->param[0], url, types, desc, clear_desc ? "t" : "f"};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db,
			      "UPDATE webhooks SET url = coalesce($2, url), event_types = coalesce($3::text[], event_types), "
			      "description = CASE WHEN $5::bool THEN NULL ELSE coalesce($4, description) END, "
			      "updated_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING " HOOK_JSON,
			      5, p, &res, &err);
	hr_free(types);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	hook_answer(r, res, 200);
	PQclear(res);
}

void webhooks_delete(api_req *r)
{
	if (!path_id(r))
		return;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "WITH w AS (UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL "
			 "RETURNING id), d AS (UPDATE webhook_deliveries SET status = 'failed', done_at = now(), "
			 "log = log || jsonb_build_array(jsonb_build_object('at', now(), 'error', 'webhook deleted')) "
			 "WHERE webhook_id IN (SELECT id FROM w) AND status = 'pending') SELECT id FROM w",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0) {
		api_problem(r, 404, "not-found", "Not found", "no such webhook", NULL);
	} else {
		hr_free(r->resp);
		r->resp = hr_strdup("");
		r->resp_len = 0;
		r->ctype = NULL;
		r->status = 204;
	}
	PQclear(res);
}

void webhooks_deliveries(api_req *r)
{
	if (!path_id(r))
		return;
	char after[24] = "", limit[16] = "50";
	if (!page_params(r, after, limit))
		return;
	const char *ph[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT 1 FROM webhooks WHERE id = $1", 1, ph, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	bool found = PQntuples(res) == 1;
	PQclear(res);
	if (!found) {
		api_problem(r, 404, "not-found", "Not found", "no such webhook", NULL);
		return;
	}
	/* Newest first: the cursor continues below the last id shown. */
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)r->tenant.id);
	const char *p[] = {r->param[0], after[0] ? after : NULL, limit, tid};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('id', 'msg_' || $4::text || '_' || id, 'event_id', event_id, "
			 "'event_type', event_type, 'status', status, 'attempts', attempts, 'next_at', "
			 "CASE WHEN status = 'pending' THEN next_at END, 'created_at', created_at, 'done_at', done_at, "
			 "'payload', payload, 'log', log)::text, id FROM webhook_deliveries WHERE webhook_id = $1 "
			 "AND ($2::bigint IS NULL OR id < $2::bigint) ORDER BY id DESC LIMIT $3::int + 1",
			 4, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	page_answer(r, res, limit);
	PQclear(res);
}
