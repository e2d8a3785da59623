/*
 * tracking.c -- the endpoints behind the links herald puts in emails:
 *
 *   GET  /v1/t/open/{token}         the open pixel: records email_opened, answers a 1x1 GIF
 *   GET  /v1/t/click/{token}        records email_clicked {url}, answers 302 to the signed URL
 *   GET  /v1/unsubscribe/{token}    a small page asking to confirm (changes nothing: mail
 *                                   scanners fetch links)
 *   POST /v1/unsubscribe/{token}    RFC 8058 one-click unsubscribe (body
 *                                   List-Unsubscribe=One-Click, form-encoded): records
 *                                   unsubscribed, revokes the contact's email consents
 *                                   (consent_log + consents, source one_click_unsubscribe)
 *                                   and suppresses the address
 *
 * No API key: the token (common/track.h) authenticates -- it is signed with
 * a key derived from the master key and names the tenant, the message, the
 * contact and, for clicks, the URL.  A token that does not verify, of the
 * wrong kind, of a suspended or unknown tenant or of a message that is not
 * there answers 404 and writes nothing.  Each recorded event also queues the
 * tenant's webhooks (webhooks_record).
 *
 * Repeated opens and clicks are each recorded (reports count unique ones
 * with DISTINCT); a repeated unsubscribe records nothing new once the
 * contact's consents are revoked and the address suppressed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "outbox.h"
#include "track.h"

/* GIF89a, 1x1, one transparent pixel (43 bytes). */
static const unsigned char pixel_gif[] = {
	0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
	0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

bool api_tenant_by_id(PGconn *c, int64_t id, hr_tenant *out, hr_err *err)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)id);
	const char *p[] = {tid};
	PGresult *res;
	if (!hr_db_query(c,
			 "SELECT t.slug FROM herald.tenants t JOIN herald.agencies a ON a.id = t.agency_id "
			 "WHERE t.id = $1 AND t.status = 'active' AND a.status = 'active'",
			 1, p, &res, err))
		return false;
	bool found = PQntuples(res) == 1;
	char slug[48] = "";
	if (found)
		snprintf(slug, sizeof slug, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (!found)
		return hr_fail(err, HR_ERR_NOTFOUND, "tenant", "no such tenant");
	return hr_tenant_get(c, slug, out, err);
}

static void not_found(api_req *r)
{
	api_problem(r, 404, "not-found", "Not found", "no such link", NULL);
}

/* The message a token names, in its tenant's transaction. */
typedef struct tracked {
	hr_track_token t;
	char *url;          /* clicks: the target (heap) */
	hr_tenant tenant;
	char channel[16];
	char address[520];
} tracked;

/*
 * Verify the token in r->param[0] (of kind), open the tenant's transaction
 * and find the message.  False: a response is set (404, or 5xx).
 */
static bool open_token(api_req *r, hr_track_kind kind, tracked *k)
{
	hr_err err = {0};
	memset(k, 0, sizeof *k);
	const uint8_t *master = api_master_key(r);
	if (!master) {
		api_problem(r, 503, "unavailable", "Tracking is unavailable", "the server has no master key", NULL);
		return false;
	}
	if (!hr_track_decode(master, r->param[0], &k->t, &k->url) || k->t.kind != kind) {
		not_found(r);
		return false;
	}
	if (!api_tenant_by_id(r->db, k->t.tenant_id, &k->tenant, &err)) {
		if (err.kind == HR_ERR_NOTFOUND)
			not_found(r);
		else
			api_problem_err(r, &err);
		return false;
	}
	if (!hr_db_tenant_begin(r->db, k->tenant.schema, k->tenant.role, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	char batch[32], idx[16];
	snprintf(batch, sizeof batch, "%llu", (unsigned long long)(k->t.message_id / HR_OUTBOX_MAX));
	snprintf(idx, sizeof idx, "%llu", (unsigned long long)(k->t.message_id % HR_OUTBOX_MAX));
	const char *p[] = {batch, idx};
	PGresult *res;
	if (!hr_db_query(r->db,
			 "SELECT channel, addresses[$2::int + 1] FROM outbox WHERE id = $1::bigint "
			 "AND cardinality(addresses) > $2::int",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	bool found = PQntuples(res) == 1;
	if (found) {
		snprintf(k->channel, sizeof k->channel, "%s", PQgetvalue(res, 0, 0));
		snprintf(k->address, sizeof k->address, "%s", PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	if (!found) {
		not_found(r);
		return false;
	}
	return true;
}

static bool record(api_req *r, tracked *k, const char *name, json_t *props)
{
	hr_err err = {0};
	json_object_set_new(props, "message_id", json_integer((json_int_t)k->t.message_id));
	json_object_set_new(props, "channel", json_string(k->channel));
	bool ok = webhooks_record(r->db, k->tenant.id, name, (int64_t)k->t.contact_id, (int64_t)k->t.message_id,
				  props, NULL, &err);
	json_decref(props);
	if (!ok)
		api_problem_err(r, &err);
	return ok;
}

void track_open(api_req *r)
{
	tracked k;
	if (open_token(r, HR_TRACK_OPEN, &k) && record(r, &k, "email_opened", json_object())) {
		hr_free(r->resp);
		r->resp = hr_malloc(sizeof pixel_gif);
		memcpy(r->resp, pixel_gif, sizeof pixel_gif);
		r->resp_len = sizeof pixel_gif;
		r->status = 200;
		r->ctype = "image/gif";
		r->no_store = true;
	}
	hr_free(k.url);
}

void track_click(api_req *r)
{
	tracked k;
	if (open_token(r, HR_TRACK_CLICK, &k) &&
	    record(r, &k, "email_clicked", json_pack("{s:s}", "url", k.url))) {
		r->redirect = hr_strdup(k.url);
		hr_free(r->resp);
		r->resp = hr_strdup("");
		r->status = 302;
		r->ctype = "text/plain";
		r->no_store = true;
	}
	hr_free(k.url);
}

static void page(api_req *r, int status, const char *title, const char *body)
{
	hr_free(r->resp);
	r->resp = hr_sprintf("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
			     "<meta name=\"viewport\" content=\"width=device-width\"><title>%s</title></head>"
			     "<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">%s</body></html>\n",
			     title, body);
	r->resp_len = 0;
	r->status = status;
	r->ctype = "text/html; charset=utf-8";
	r->no_store = true;
}

void track_unsubscribe_page(api_req *r)
{
	tracked k;
	if (open_token(r, HR_TRACK_UNSUBSCRIBE, &k)) {
		/* Nothing is written: the form posts the RFC 8058 body to this same URL. */
		hr_db_rollback(r->db);
		page(r, 200, "Unsubscribe",
		     "<h1>Unsubscribe</h1><p>Stop receiving these emails at this address?</p>"
		     "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
		     "<button type=\"submit\">Unsubscribe</button></form>");
	}
	hr_free(k.url);
}

/* The RFC 8058 body: List-Unsubscribe=One-Click among form fields (urlencoded or multipart). */
static bool one_click_body(api_req *r)
{
	const char *ct = api_header(r, "Content-Type");
	const char *b = r->raw ? r->raw : "";
	if (ct && strncasecmp(ct, "multipart/form-data", 19) == 0) {
		const char *n = strstr(b, "name=\"List-Unsubscribe\"");
		if (!n)
			return false;
		const char *v = strstr(n, "\r\n\r\n");
		return v && strncmp(v + 4, "One-Click", 9) == 0 && (v[13] == '\r' || v[13] == '\0');
	}
	/* application/x-www-form-urlencoded: fields separated by '&' */
	for (const char *p = b; *p;) {
		size_t n = strcspn(p, "&");
		if (n == 26 && strncmp(p, "List-Unsubscribe=One-Click", 26) == 0)
			return true;
		p += n;
		if (*p == '&')
			p++;
	}
	return false;
}

void track_unsubscribe_post(api_req *r)
{
	tracked k;
	hr_err err = {0};
	PGresult *res = NULL;
	if (!one_click_body(r)) {
		json_t *errors = json_array();
		json_array_append_new(errors, json_pack("{s:s, s:s}", "pointer", "", "detail",
							"the body must be List-Unsubscribe=One-Click (RFC 8058)"));
		api_problem(r, 400, "bad-parameter", "Not a one-click unsubscribe",
			    "the body must be List-Unsubscribe=One-Click (RFC 8058)", errors);
		return;
	}
	if (!open_token(r, HR_TRACK_UNSUBSCRIBE, &k))
		goto out;
	char cid[32], mid[32];
	snprintf(cid, sizeof cid, "%llu", (unsigned long long)k.t.contact_id);
	snprintf(mid, sizeof mid, "%llu", (unsigned long long)k.t.message_id);
	/* The address first: the suppression holds even for a message sent to an address only. */
	const char *ps[] = {k.channel, k.address};
	if (!hr_db_query(r->db,
			 "INSERT INTO suppressions (channel, address, reason) VALUES ($1, $2, 'unsubscribe') "
			 "ON CONFLICT DO NOTHING RETURNING 1",
			 2, ps, &res, &err))
		goto fail;
	bool changed = PQntuples(res) == 1;
	PQclear(res);
	res = NULL;
	json_t *revoked = json_array();
	if (k.t.contact_id) {
		/* Every purpose the contact granted on the channel, and marketing at least. */
		const char *pc[] = {cid, k.channel, mid};
		if (!hr_db_query(r->db,
				 "WITH p AS (SELECT purpose FROM consents WHERE contact_id = $1::bigint "
				 "AND channel = $2 AND granted UNION SELECT 'marketing' WHERE NOT EXISTS ("
				 "SELECT 1 FROM consents WHERE contact_id = $1::bigint AND channel = $2 "
				 "AND purpose = 'marketing' AND NOT granted)), "
				 "c AS (SELECT id FROM contacts WHERE id = $1::bigint), "
				 "l AS (INSERT INTO consent_log (contact_id, channel, purpose, granted, source, detail) "
				 "SELECT c.id, $2, p.purpose, false, 'one_click_unsubscribe', "
				 "jsonb_build_object('message_id', $3::bigint) FROM p, c RETURNING purpose, at), "
				 "u AS (INSERT INTO consents (contact_id, channel, purpose, granted, at) "
				 "SELECT $1::bigint, $2, purpose, false, at FROM l ON CONFLICT (contact_id, channel, purpose) "
				 "DO UPDATE SET granted = false, at = excluded.at RETURNING purpose) "
				 "SELECT purpose FROM u ORDER BY 1",
				 3, pc, &res, &err)) {
			json_decref(revoked);
			goto fail;
		}
		for (int i = 0; i < PQntuples(res); i++)
			json_array_append_new(revoked, json_string(PQgetvalue(res, i, 0)));
		changed = changed || PQntuples(res) > 0;
		PQclear(res);
		res = NULL;
	}
	if (changed) {
		if (!record(r, &k, "unsubscribed", json_pack("{s:o}", "purposes", revoked)))
			goto out;
	} else {
		json_decref(revoked);
	}
	page(r, 200, "Unsubscribed", "<h1>You are unsubscribed</h1><p>You will not get these emails any more.</p>");
	goto out;
fail:
	PQclear(res);
	api_problem_err(r, &err);
out:
	hr_free(k.url);
}
