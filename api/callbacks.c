/*
 * callbacks.c -- provider delivery receipts:
 *
 *   POST /v1/callbacks/{tenant}/{provider}
 *
 * One URL per provider account.  Providers cannot hold herald API keys, so
 * the account's own `callback_secret` (a member of the account's sealed
 * secret, set with PUT /v1/tenants/{slug}/providers/{name}) authenticates:
 * either `Herald-Signature: sha256=<hex HMAC-SHA256(callback_secret, body)>`
 * (for providers that sign) or `?key=<callback_secret>` in the URL (for
 * providers that only take a URL).  Both compare in constant time.  Unknown
 * tenants and accounts, and accounts without a callback_secret, answer 404
 * alike; a wrong signature 401.
 *
 * Body: one receipt or {"receipts": [...]} (up to 1,000, accepted or refused
 * whole).  A receipt:
 *   {"message_id": 8192 | "8192" | "<8192.shop@herald>",   (herald's message id)
 *    "status": "delivered" | "bounced" | "complained" | "undelivered",
 *    "bounce": "hard" | "soft",      (bounced/undelivered; default from reason
 *                                     hard_bounce / soft_bounce, else soft)
 *    "reason": "...", "provider_id": "...", "occurred_at": RFC 3339}
 * ("undelivered" is the SMS word for a bounce: herald-provsim sends it.)
 * The message must have been sent through this account (else 422 naming
 * the receipt's message_id); nothing is written unless every receipt is good.
 *
 * Each receipt becomes an event of the message (message_delivered,
 * message_bounced, message_complained; GET /v1/messages/{id} lists them and
 * reports the latest as the message's status).  A hard bounce or a complaint
 * suppresses the message's address on its channel (suppressions, reason
 * hard_bounce / complaint), recorded in the event as "suppressed": true.
 * Providers retry: a receipt already recorded (same message, status and
 * bounce type) is counted as a duplicate and not recorded again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "cascade.h"
#include "db.h"
#include "outbox.h"
#include "providers.h"

#define MAX_RECEIPTS 1000

typedef struct receipt {
	long long message_id;
	const char *event;     /* message_delivered | message_bounced | message_complained */
	const char *bounce;    /* hard | soft | NULL */
	const char *reason, *provider_id, *occurred_at;
	char base[32];         /* JSON pointer of the receipt */
} receipt;

static void nothing_here(api_req *r)
{
	api_problem(r, 404, "not-found", "Not found", "no such callback endpoint", NULL);
}

static int hexv(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The request proves it knows the secret. */
static bool authentic(api_req *r, const char *secret)
{
	const char *sig = api_header(r, "Herald-Signature");
	if (sig) {
		if (strncmp(sig, "sha256=", 7) != 0 || strlen(sig + 7) != 64)
			return false;
		uint8_t want[32], got[32];
		for (int i = 0; i < 32; i++) {
			int hi = hexv(sig[7 + 2 * i]), lo = hexv(sig[8 + 2 * i]);
			if (hi < 0 || lo < 0)
				return false;
			got[i] = (uint8_t)(hi << 4 | lo);
		}
		hr_hmac_sha256(secret, strlen(secret), r->raw, r->raw_len, want);
		return hr_ct_equal(want, got, 32);
	}
	const char *key = api_query(r, "key");
	if (!key)
		return false;
	size_t n = strlen(secret);
	/* Compare the fixed-length digests: the time does not depend on where they differ. */
	char a[65], b[65];
	hr_sha256_hex(key, strlen(key), a);
	hr_sha256_hex(secret, n, b);
	return hr_ct_equal(a, b, 64);
}

/* "8192", "<8192.slug@herald>", "8192.slug@herald" or an integer. */
static bool parse_message_id(json_t *v, const char *slug, long long *out)
{
	char buf[128];
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 1)
			return false;
		*out = (long long)json_integer_value(v);
		return true;
	}
	const char *s = json_string_value(v);
	if (!s || strlen(s) >= sizeof buf)
		return false;
	snprintf(buf, sizeof buf, "%s", s[0] == '<' ? s + 1 : s);
	size_t n = strlen(buf);
	if (s[0] == '<') {
		if (!n || buf[n - 1] != '>')
			return false;
		buf[--n] = '\0';
	}
	size_t d = strspn(buf, "0123456789");
	if (d < 1 || d > 18 || buf[0] == '0')
		return false;
	if (buf[d]) {
		/* ".slug@herald": the right-hand side herald writes into Message-ID (workers/mime.c). */
		char want[80];
		snprintf(want, sizeof want, ".%s@herald", slug);
		if (strcmp(buf + d, want) != 0)
			return false;
		buf[d] = '\0';
	}
	*out = strtoll(buf, NULL, 10);
	return true;
}

static void parse_receipt(jv *v, json_t *o, const char *base, const char *slug, receipt *x)
{
	static const char *const allowed[] = {"message_id", "status", "bounce", "reason", "provider_id",
					      "occurred_at", NULL};
	snprintf(x->base, sizeof x->base, "%s", base);
	if (!json_is_object(o)) {
		jv_add(v, base, NULL, "must be a receipt object");
		return;
	}
	jv_only(v, o, base, allowed);
	json_t *mid = json_object_get(o, "message_id");
	if (!mid)
		jv_add(v, base, "message_id", "is required");
	else if (!parse_message_id(mid, slug, &x->message_id))
		jv_add(v, base, "message_id", "must be a herald message id (8192 or <8192.%s@herald>)", slug);
	const char *status = jv_str(v, o, base, "status", true, 16);
	const char *bounce = jv_str(v, o, base, "bounce", false, 8);
	x->reason = jv_str(v, o, base, "reason", false, 500);
	x->provider_id = jv_str(v, o, base, "provider_id", false, 255);
	x->occurred_at = jv_str(v, o, base, "occurred_at", false, 64);
	if (x->occurred_at && !jv_rfc3339(x->occurred_at))
		jv_add(v, base, "occurred_at", "must be an RFC 3339 date-time");
	if (bounce && strcmp(bounce, "hard") && strcmp(bounce, "soft"))
		jv_add(v, base, "bounce", "must be hard or soft");
	if (!status)
		return;
	bool bounced = !strcmp(status, "bounced") || !strcmp(status, "undelivered");
	if (!strcmp(status, "delivered"))
		x->event = "message_delivered";
	else if (!strcmp(status, "complained"))
		x->event = "message_complained";
	else if (bounced)
		x->event = "message_bounced";
	else
		jv_add(v, base, "status", "must be delivered, bounced, complained or undelivered");
	if (bounce && !bounced)
		jv_add(v, base, "bounce", "only a bounced or undelivered receipt has a bounce type");
	if (bounced) {
		const char *rs = x->reason ? x->reason : "";
		x->bounce = bounce                             ? bounce
			    : !strcmp(rs, "hard_bounce")        ? "hard"
			    : "soft";
	}
}

void callbacks_post(api_req *r)
{
	hr_err err = {0};
	hr_tenant t;
	const char *slug = r->param[0], *account = r->param[1];
	char *pjson = NULL, *secret = NULL;
	receipt *xs = NULL;
	PGresult *res = NULL;
	const uint8_t *master = api_master_key(r);
	if (!master) {
		api_problem(r, 503, "unavailable", "Callbacks are unavailable", "the server has no master key", NULL);
		return;
	}
	if (!hr_slug_valid(slug, "tenant", &err) || !hr_slug_valid(account, "provider", &err) ||
	    !hr_tenant_get(r->db, slug, &t, &err) || strcmp(t.status, "active") != 0 ||
	    !hr_provider_resolve(r->db, master, t.id, account, false, &pjson, &err)) {
		if (err.kind == HR_ERR_DB)
			api_problem_err(r, &err);
		else
			nothing_here(r);
		return;
	}
	json_t *acct = json_loads(pjson, 0, NULL);
	memset(pjson, 0, strlen(pjson));
	hr_free(pjson);
	const char *s = json_string_value(json_object_get(acct, "callback_secret"));
	if (s && *s)
		secret = hr_strdup(s);
	json_decref(acct);
	if (!secret) {
		nothing_here(r);
		return;
	}
	bool ok = authentic(r, secret);
	memset(secret, 0, strlen(secret));
	hr_free(secret);
	if (!ok) {
		api_problem(r, 401, "unauthorized", "Unauthorized",
			    "send Herald-Signature: sha256=<HMAC-SHA256 of the body under the account's callback_secret>",
			    NULL);
		return;
	}
	/* The body: one receipt, or {"receipts": [...]}. */
	jv v;
	jv_init(&v);
	json_t *list = json_object_get(r->json, "receipts");
	size_t n = 1;
	if (list) {
		if (json_object_size(r->json) != 1)
			jv_only(&v, r->json, "", (const char *const[]){"receipts", NULL});
		if (!json_is_array(list) || json_array_size(list) < 1 || json_array_size(list) > MAX_RECEIPTS) {
			jv_add(&v, "", "receipts", "must be an array of 1 to %d receipts", MAX_RECEIPTS);
			api_problem_invalid(r, v.errors);
			return;
		}
		n = json_array_size(list);
	}
	xs = hr_calloc(n, sizeof *xs);
	for (size_t i = 0; i < n; i++) {
		char base[32] = "";
		if (list)
			snprintf(base, sizeof base, "/receipts/%zu", i);
		parse_receipt(&v, list ? json_array_get(list, i) : r->json, base, t.slug, &xs[i]);
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		goto out;
	}
	if (!hr_db_tenant_begin(r->db, t.schema, t.role, &err))
		goto fail;
	/* Every message must be this account's; all unknown ones are listed at once. */
	char **addr = hr_calloc(n, sizeof *addr), **chan = hr_calloc(n, sizeof *chan);
	int64_t *contact = hr_calloc(n, sizeof *contact);
	bool dbok = true;
	for (size_t i = 0; i < n && dbok; i++) {
		char batch[32], idx[16];
		snprintf(batch, sizeof batch, "%lld", xs[i].message_id / HR_OUTBOX_MAX);
		snprintf(idx, sizeof idx, "%lld", xs[i].message_id % HR_OUTBOX_MAX);
		const char *p[] = {batch, idx, account};
		dbok = hr_db_query(r->db,
				   "SELECT channel, addresses[$2::int + 1], coalesce(contact_ids[$2::int + 1], 0) "
				   "FROM outbox WHERE id = $1::bigint AND cardinality(addresses) > $2::int AND provider = $3",
				   3, p, &res, &err);
		if (!dbok)
			break;
		if (PQntuples(res) == 1) {
			chan[i] = hr_strdup(PQgetvalue(res, 0, 0));
			addr[i] = hr_strdup(PQgetvalue(res, 0, 1));
			contact[i] = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
		} else {
			jv_add(&v, xs[i].base, "message_id", "no message %lld was sent through provider account '%s'",
			       xs[i].message_id, account);
		}
		PQclear(res);
		res = NULL;
	}
	size_t recorded = 0, dup = 0;
	for (size_t i = 0; i < n && dbok && jv_ok(&v); i++) {
		char mid[32];
		snprintf(mid, sizeof mid, "%lld", xs[i].message_id);
		const char *pd[] = {mid, xs[i].event, xs[i].bounce};
		dbok = hr_db_query(r->db,
				   "SELECT 1 FROM events WHERE message_id = $1::bigint AND name = $2 "
				   "AND properties->>'bounce' IS NOT DISTINCT FROM $3",
				   3, pd, &res, &err);
		if (!dbok)
			break;
		bool seen = PQntuples(res) > 0;
		PQclear(res);
		res = NULL;
		if (seen) {
			dup++;
			continue;
		}
		bool suppress = !strcmp(xs[i].event, "message_complained") ||
				(xs[i].bounce && !strcmp(xs[i].bounce, "hard"));
		if (suppress) {
			const char *ps[] = {chan[i], addr[i], xs[i].bounce ? "hard_bounce" : "complaint"};
			dbok = hr_db_query(r->db,
					   "INSERT INTO suppressions (channel, address, reason) VALUES ($1, $2, $3) "
					   "ON CONFLICT DO NOTHING",
					   3, ps, NULL, &err);
			if (!dbok)
				break;
		}
		json_t *props = json_pack("{s:I, s:s, s:s, s:b}", "message_id", (json_int_t)xs[i].message_id, "channel",
					  chan[i], "provider", account, "suppressed", suppress);
		if (xs[i].bounce)
			json_object_set_new(props, "bounce", json_string(xs[i].bounce));
		if (xs[i].reason)
			json_object_set_new(props, "reason", json_string(xs[i].reason));
		if (xs[i].provider_id)
			json_object_set_new(props, "provider_id", json_string(xs[i].provider_id));
		dbok = webhooks_record(r->db, t.id, xs[i].event, contact[i], xs[i].message_id, props, xs[i].occurred_at,
				       &err);
		json_decref(props);
		recorded++;
	}
	for (size_t i = 0; i < n; i++) {
		hr_free(addr[i]);
		hr_free(chan[i]);
	}
	hr_free(addr);
	hr_free(chan);
	hr_free(contact);
	if (!dbok)
		goto fail;
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		goto out;
	}
	jv_free(&v);
	if (recorded > 0) { /* the channel cascade: a batch whose messages all have an outcome falls back now */
		char *ids = hr_calloc(1, n * 24 + 3);
		size_t len = 0;
		for (size_t i = 0; i < n; i++)
			len += (size_t)snprintf(ids + len, 24, "%s%lld", i ? "," : "{", xs[i].message_id / HR_OUTBOX_MAX);
		snprintf(ids + len, 3, "}");
		dbok = hr_cascade_settle(r->db, t.id, ids, &err);
		hr_free(ids);
		if (!dbok)
			goto fail;
	}
	api_json(r, 200, json_pack("{s:I, s:I}", "recorded", (json_int_t)recorded, "duplicates", (json_int_t)dup));
	goto out;
fail:
	jv_free(&v);
	PQclear(res);
	api_problem_err(r, &err);
out:
	hr_free(xs);
}
