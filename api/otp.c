/*
 * otp.c -- one-time codes: POST /v1/otp and POST /v1/otp/verify.
 *
 * Send: validate (otp_pre, before the tenant transaction: the provider
 * account lives in the control schema), then in the request's transaction:
 * resolve the recipient, check the template and suppressions as a
 * transactional message would, take a transaction-scoped advisory lock on the
 * recipient (so concurrent sends count each other), refuse with 429 past
 * api_otp_sends_per_10min sends to that recipient in 10 minutes, supersede the
 * recipient's pending OTPs of the same purpose, and enqueue the message on the
 * transactional lane with the code in its data (`{{ code }}` in the content).
 * Only an HMAC of the code is stored (common/codes.h); the code itself exists
 * in the outbox row that carries it, and nowhere else.
 *
 * Verify: the OTP named by id, or the latest one of a recipient (to or
 * contact) and purpose, is locked FOR UPDATE, so parallel guesses are counted
 * one by one.  The answer, in this order: used (409 otp-used), superseded
 * (410 otp-superseded), expired (410 otp-expired), locked after too many wrong
 * attempts (409 otp-attempts-exhausted) -- none of these looks at the code --
 * then the code is compared in constant time: right is 200, wrong is 422
 * otp-wrong with the attempts left.  A wrong attempt is recorded even though
 * the answer is an error (keep_writes); the last one locks the OTP.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "codes.h"
#include "db.h"
#include "outbox.h"

#define OTP_DEFAULT_PURPOSE "verify"

typedef struct otp_in {
	const char *channel, *provider, *purpose, *to;
	int64_t digits, ttl_s, max_attempts;
	int64_t template_id, template_version;
	char *content;       /* JSON text or NULL */
	json_t *data;        /* the caller's data (borrowed), or NULL */
	const char *ref_kind; /* contact reference, or NULL */
	char ref[256];
} otp_in;

static void otp_free(void *p)
{
	otp_in *m = p;
	hr_free(m->content);
	hr_free(m);
}

/* 1..64 of a-z 0-9 _ -, starting with a letter (as consent purposes). */
static bool purpose_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 64 || !islower((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

void otp_pre(api_req *r)
{
	static const char *const allowed[] = {"channel", "provider", "to", "contact", "purpose", "length", "ttl_s",
					      "max_attempts", "template", "content", "data", NULL};
	otp_in *m = hr_calloc(1, sizeof *m);
	r->state = m;
	r->state_free = otp_free;
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	jv v;
	jv_init(&v);
	hr_err err = {0};
	bool present;
	jv_only(&v, r->json, "", allowed);
	m->channel = jv_str(&v, r->json, "", "channel", true, 16);
	m->provider = jv_str(&v, r->json, "", "provider", true, 40);
	m->purpose = jv_str(&v, r->json, "", "purpose", false, 64);
	if (!m->purpose)
		m->purpose = OTP_DEFAULT_PURPOSE;
	else if (!purpose_valid(m->purpose))
		jv_add(&v, "", "purpose", "must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter (e.g. login)");
	if (m->channel && strcmp(m->channel, "sms") && strcmp(m->channel, "email"))
		jv_add(&v, "", "channel", "must be sms or email");
	if (m->provider && !hr_slug_valid(m->provider, "provider", &err))
		jv_add(&v, "", "provider", "is not an account name");
	m->digits = 4;
	m->ttl_s = 300;
	m->max_attempts = 5;
	jv_int(&v, r->json, "", "length", false, HR_OTP_MIN_DIGITS, HR_OTP_MAX_DIGITS, &present, &m->digits);
	jv_int(&v, r->json, "", "ttl_s", false, 30, 86400, &present, &m->ttl_s);
	jv_int(&v, r->json, "", "max_attempts", false, 1, 20, &present, &m->max_attempts);
	json_t *tpl = jv_obj(&v, r->json, "", "template", false);
	json_t *content = jv_obj(&v, r->json, "", "content", false);
	if (tpl) {
		static const char *const tallowed[] = {"id", "version", NULL};
		bool p1, p2;
		jv_only(&v, tpl, "/template", tallowed);
		jv_int(&v, tpl, "/template", "id", true, 1, INT64_MAX, &p1, &m->template_id);
		jv_int(&v, tpl, "/template", "version", true, 1, 1000000, &p2, &m->template_version);
	}
	if (tpl && content)
		jv_add(&v, "", "content", "give template or content, not both");
	else if (content)
		m->content = api_dump(content);
	m->data = jv_obj(&v, r->json, "", "data", false);
	if (m->data && json_object_get(m->data, "code"))
		jv_add(&v, "/data", "code", "is set by herald: it is the code sent");
	m->to = jv_str(&v, r->json, "", "to", false, 320);
	json_t *ref = json_object_get(r->json, "contact");
	bool has_ref = ref && !json_is_null(ref);
	if (has_ref)
		contact_ref_parse(&v, ref, "/contact", cc, &m->ref_kind, m->ref);
	/* Judged by value: a null member counts as absent (and must not slip past as "given"). */
	json_t *jto = json_object_get(r->json, "to");
	bool has_to = jto && !json_is_null(jto);
	if (!has_to && !has_ref)
		jv_add(&v, "", "to", "give to (a phone number or email address) or contact");
	else if (has_to && has_ref)
		jv_add(&v, "", "to", "give to or contact, not both");
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	if (!api_master_key(r)) {
		api_problem(r, 503, "unavailable", "No master key",
			    "this server has no master key to protect one-time codes (see master_key)", NULL);
		return;
	}
	api_provider_check(r, "", m->provider, m->channel);
}

static void refuse(api_req *r, int status, const char *type, const char *title, const char *pointer,
		   const char *detail)
{
	json_t *errors = NULL;
	if (pointer) {
		errors = json_array();
		json_array_append_new(errors, json_pack("{s:s, s:s}", "pointer", pointer, "detail", detail));
	}
	api_problem(r, status, type, title, detail, errors);
}

static void invalid(api_req *r, const char *pointer, const char *detail)
{
	jv v;
	jv_init(&v);
	jv_add(&v, pointer, NULL, "%s", detail);
	api_problem_invalid(r, v.errors);
}

/* The default message when the request gives neither template nor content. */
static char *default_content(bool email)
{
	return hr_strdup(email ? "{\"subject\": \"Your code\", \"text\": \"Your code is {{ code }}\"}"
			       : "{\"text\": \"Your code is {{ code }}\"}");
}

void otp_post(api_req *r)
{
	otp_in *m = r->state;
	hr_err err = {0};
	PGresult *res = NULL;
	bool email = !strcmp(m->channel, "email");
	char addr[320] = "", cid[32] = "";
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	const char *who = m->to ? "/to" : "/contact";
	if (m->to) {
		if (email ? !hr_email_normalize(m->to, addr, &err) : !hr_phone_normalize(m->to, cc, addr, &err)) {
			invalid(r, "/to", err.msg);
			return;
		}
		const char *pa[] = {addr};
		if (!hr_db_query(r->db,
				 email ? "SELECT coalesce(merged_into, id) FROM contacts WHERE email = $1"
				       : "SELECT coalesce(merged_into, id) FROM contacts WHERE phone = $1",
				 1, pa, &res, &err))
			goto fail;
		if (PQntuples(res) == 1)
			snprintf(cid, sizeof cid, "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
		res = NULL;
	} else {
		int64_t id;
		char em[256], ph[32];
		if (!api_contact_find(r, "/contact", m->ref_kind, m->ref, &id, em, ph))
			return;
		snprintf(cid, sizeof cid, "%lld", (long long)id);
		snprintf(addr, sizeof addr, "%s", email ? em : ph);
		if (!addr[0]) {
			api_problem(r, 422, "blocked", "The code may not be sent",
				    email ? "the contact has no email address" : "the contact has no phone number",
				    json_pack("[{s:s, s:s}]", "pointer", "/contact", "detail",
					      "the contact has no address for this channel"));
			return;
		}
	}
	if (m->template_id) {
		char tid[32], ver[16];
		snprintf(tid, sizeof tid, "%lld", (long long)m->template_id);
		snprintf(ver, sizeof ver, "%lld", (long long)m->template_version);
		const char *pt[] = {tid, ver, m->channel};
		if (!hr_db_query(r->db,
				 "SELECT 1 FROM template_versions v JOIN templates t ON t.id = v.template_id "
				 "WHERE v.template_id = $1 AND v.version = $2 AND t.channel = $3",
				 3, pt, &res, &err))
			goto fail;
		bool found = PQntuples(res) == 1;
		PQclear(res);
		res = NULL;
		if (!found) {
			invalid(r, "/template", "no such template version for this channel");
			return;
		}
	}
	/* Suppressions, as for any transactional message (transactional_policy). */
	const char *policy = json_string_value(json_object_get(r->tenant_settings, "transactional_policy"));
	if (!policy || strcmp(policy, "none") != 0) {
		const char *ps[] = {m->channel, addr};
		if (!hr_db_query(r->db, "SELECT reason FROM suppressions WHERE channel = $1 AND address = $2", 2, ps, &res,
				 &err))
			goto fail;
		if (PQntuples(res) == 1) {
			char why[96];
			snprintf(why, sizeof why, "the address is suppressed (%s)", PQgetvalue(res, 0, 0));
			PQclear(res);
			api_problem(r, 422, "blocked", "The code may not be sent", why,
				    json_pack("[{s:s, s:s}]", "pointer", who, "detail", why));
			return;
		}
		PQclear(res);
		res = NULL;
	}
	/* The send rate per recipient: concurrent sends to one address take turns here. */
	char limit[16];
	snprintf(limit, sizeof limit, "%ld", hr_config_int(api_cfg(r), "api_otp_sends_per_10min"));
	const char *pr[] = {addr, limit};
	if (!hr_db_query(r->db,
			 "SELECT pg_advisory_xact_lock(hashtext('herald.otp'), hashtext(current_schema() || ':' || $1))",
			 1, pr, NULL, &err) ||
	    !hr_db_query(r->db,
			 "SELECT count(*) >= $2::int, ceil(extract(epoch FROM min(created_at) + interval '10 minutes' - "
			 "now())) FROM (SELECT created_at FROM otp_codes WHERE recipient = $1 AND created_at > now() - "
			 "interval '10 minutes' ORDER BY created_at DESC LIMIT $2::int) x",
			 2, pr, &res, &err))
		goto fail;
	bool over = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	int wait = atoi(PQgetvalue(res, 0, 1));
	PQclear(res);
	res = NULL;
	if (over) {
		r->retry_after = wait > 0 ? wait : 1;
		char *d = hr_sprintf("at most %s codes may be sent to one recipient in 10 minutes; retry after %d s",
				     limit, r->retry_after);
		api_problem(r, 429, "otp-rate-limited", "Too many codes for this recipient", d,
			    json_pack("[{s:s, s:s}]", "pointer", who, "detail", d));
		hr_free(d);
		return;
	}
	if (!api_quota_send(r, m->channel)) /* the channel's messages_per_day (api/quota.c) */
		return;
	const char *psup[] = {addr, m->purpose};
	if (!hr_db_query(r->db,
			 "UPDATE otp_codes SET status = 'superseded' WHERE recipient = $1 AND purpose = $2 "
			 "AND status = 'pending'",
			 2, psup, NULL, &err))
		goto fail;
	/* The code, its keyed hash, and the message that carries it. */
	char code[HR_OTP_MAX_DIGITS + 1], salt[33], hash[65];
	uint8_t key[HR_KEY_LEN];
	hr_otp_generate((int)m->digits, code);
	hr_random_token(salt, 32);
	hr_otp_key(api_master_key(r), key);
	hr_otp_hash(key, r->tenant.id, salt, code, hash);
	json_t *data = m->data ? json_deep_copy(m->data) : json_object();
	json_object_set_new(data, "code", json_string(code));
	json_object_set_new(data, "purpose", json_string(m->purpose));
	json_object_set_new(data, "ttl_minutes", json_integer((m->ttl_s + 59) / 60));
	char *dtext = api_dump(data);
	json_decref(data);
	char *content = m->content ? hr_strdup(m->content) : m->template_id ? NULL : default_content(email);
	const char *addrs[] = {addr};
	int64_t cids[] = {cid[0] ? strtoll(cid, NULL, 10) : 0};
	const char *datas[] = {dtext};
	hr_outbox_batch b = {.channel = m->channel, .lane = "transactional", .template_id = m->template_id,
			     .template_version = (int)m->template_version, .content = content,
			     .provider = m->provider, .origin = "api", .n = 1, .addresses = addrs,
			     .contact_ids = cid[0] ? cids : NULL, .data = datas};
	int64_t msg;
	bool ok = hr_outbox_enqueue(r->db, r->tenant.id, &b, &msg, &err);
	/* The code leaves this process only inside the outbox row. */
	memset(code, 0, sizeof code);
	memset(dtext, 0, strlen(dtext));
	hr_free(dtext);
	hr_free(content);
	if (!ok)
		goto fail;
	char mid[32], ttl[16], maxa[16];
	snprintf(mid, sizeof mid, "%lld", (long long)msg);
	snprintf(ttl, sizeof ttl, "%lld", (long long)m->ttl_s);
	snprintf(maxa, sizeof maxa, "%lld", (long long)m->max_attempts);
	const char *pi[] = {m->channel, addr, m->purpose, cid[0] ? cid : NULL, salt, hash, maxa, mid, ttl};
	if (!hr_db_query(r->db,
			 "WITH o AS (INSERT INTO otp_codes (channel, recipient, purpose, contact_id, salt, code_hash, "
			 "max_attempts, message_id, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
			 "now() + make_interval(secs => $9::int)) RETURNING *) "
			 "SELECT jsonb_build_object('id', id, 'status', status, 'channel', channel, 'to', recipient, "
			 "'purpose', purpose, 'contact_id', contact_id, 'message_id', message_id, 'max_attempts', "
			 "max_attempts, 'expires_at', expires_at)::text FROM o",
			 9, pi, &res, &err))
		goto fail;
	json_t *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	api_json(r, 202, out ? out : json_object());
	return;
fail:
	PQclear(res);
	api_problem_err(r, &err);
}

void otp_verify(api_req *r)
{
	static const char *const allowed[] = {"id", "to", "contact", "purpose", "code", NULL};
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	jv v;
	jv_init(&v);
	bool has_id;
	int64_t id = 0;
	jv_only(&v, r->json, "", allowed);
	jv_int(&v, r->json, "", "id", false, 1, INT64_MAX, &has_id, &id);
	const char *to = jv_str(&v, r->json, "", "to", false, 320);
	const char *purpose = jv_str(&v, r->json, "", "purpose", false, 64);
	const char *code = jv_str(&v, r->json, "", "code", true, HR_OTP_MAX_DIGITS);
	const char *kind = NULL;
	char ref[256] = "", addr[320] = "";
	json_t *jref = json_object_get(r->json, "contact");
	json_t *jto = json_object_get(r->json, "to"), *jid = json_object_get(r->json, "id");
	bool has_ref = jref && !json_is_null(jref), has_to = jto && !json_is_null(jto);
	bool id_given = jid && !json_is_null(jid);
	if (has_ref)
		contact_ref_parse(&v, jref, "/contact", cc, &kind, ref);
	if (!purpose)
		purpose = OTP_DEFAULT_PURPOSE;
	else if (!purpose_valid(purpose))
		jv_add(&v, "", "purpose", "must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter (e.g. login)");
	if (code && (strlen(code) < HR_OTP_MIN_DIGITS || strspn(code, "0123456789") != strlen(code)))
		jv_add(&v, "", "code", "must be %d to %d digits", HR_OTP_MIN_DIGITS, HR_OTP_MAX_DIGITS);
	int given = id_given + has_to + has_ref;
	if (given != 1)
		jv_add(&v, "", given ? "id" : "to", "give exactly one of id, to and contact");
	if (to) {
		hr_err err = {0};
		bool ok = strchr(to, '@') ? hr_email_normalize(to, addr, &err) : hr_phone_normalize(to, cc, addr, &err);
		if (!ok)
			jv_add(&v, "", "to", "%s", err.msg);
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	if (!api_master_key(r)) {
		api_problem(r, 503, "unavailable", "No master key",
			    "this server has no master key to check one-time codes (see master_key)", NULL);
		return;
	}
	hr_err err = {0};
	PGresult *res = NULL;
	char key1[32] = "";
	const char *where;
	if (has_id) {
		snprintf(key1, sizeof key1, "%lld", (long long)id);
		where = "id = $1";
	} else if (has_to) {
		where = "recipient = $1 AND purpose = $2";
	} else {
		int64_t c;
		char em[256], ph[32];
		if (!api_contact_find(r, "/contact", kind, ref, &c, em, ph))
			return;
		snprintf(key1, sizeof key1, "%lld", (long long)c);
		where = "contact_id = $1 AND purpose = $2";
	}
	char *sql = hr_sprintf("SELECT id, status, expires_at <= now(), attempts, max_attempts, salt, code_hash, "
			       "contact_id, recipient, purpose FROM otp_codes WHERE %s ORDER BY id DESC LIMIT 1 "
			       "FOR UPDATE",
			       where);
	const char *p[] = {has_to ? addr : key1, purpose};
	bool ok = hr_db_query(r->db, sql, has_id ? 1 : 2, p, &res, &err);
	hr_free(sql);
	if (!ok)
		goto fail;
	const char *ptr = has_id ? "/id" : has_to ? "/to" : "/contact";
	if (PQntuples(res) == 0) {
		PQclear(res);
		refuse(r, 404, "otp-not-found", "No such one-time code", ptr,
		       has_id ? "no one-time code has this id" : "no one-time code was sent to this recipient for this purpose");
		return;
	}
	const char *status = PQgetvalue(res, 0, 1);
	bool expired = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	int attempts = atoi(PQgetvalue(res, 0, 3)), max = atoi(PQgetvalue(res, 0, 4));
	if (!strcmp(status, "verified")) {
		refuse(r, 409, "otp-used", "Code already used", "/code", "this one-time code was used already");
	} else if (!strcmp(status, "superseded")) {
		refuse(r, 410, "otp-superseded", "Code superseded", "/code",
		       "a newer code was sent to this recipient for this purpose; use that one");
	} else if (expired) {
		refuse(r, 410, "otp-expired", "Code expired", "/code", "this one-time code has expired; send a new one");
	} else if (!strcmp(status, "locked") || attempts >= max) {
		refuse(r, 409, "otp-attempts-exhausted", "Too many attempts", "/code",
		       "too many wrong attempts for this code; send a new one");
	} else {
		uint8_t k[HR_KEY_LEN];
		char hash[65];
		hr_otp_key(api_master_key(r), k);
		hr_otp_hash(k, r->tenant.id, PQgetvalue(res, 0, 5), code, hash);
		bool right = hr_ct_equal(hash, PQgetvalue(res, 0, 6), 64);
		char oid[32];
		snprintf(oid, sizeof oid, "%s", PQgetvalue(res, 0, 0));
		json_t *out = NULL;
		if (right)
			out = json_pack("{s:b, s:I, s:s, s:s, s:o}", "verified", 1, "id",
					(json_int_t)strtoll(oid, NULL, 10), "to", PQgetvalue(res, 0, 8), "purpose",
					PQgetvalue(res, 0, 9), "contact_id",
					PQgetisnull(res, 0, 7) ? json_null()
							       : json_integer(strtoll(PQgetvalue(res, 0, 7), NULL, 10)));
		PQclear(res);
		res = NULL;
		const char *pu[] = {oid, right ? "t" : "f"};
		if (!hr_db_query(r->db,
				 "UPDATE otp_codes SET attempts = attempts + 1, verified_at = CASE WHEN $2::bool "
				 "THEN now() END, status = CASE WHEN $2::bool THEN 'verified' WHEN attempts + 1 >= "
				 "max_attempts THEN 'locked' ELSE status END WHERE id = $1",
				 2, pu, NULL, &err)) {
			json_decref(out);
			goto fail;
		}
		if (right) {
			api_json(r, 200, out);
			return;
		}
		int left = max - attempts - 1;
		char *d = hr_sprintf("the code is wrong; %d attempt%s left", left, left == 1 ? "" : "s");
		refuse(r, 422, "otp-wrong", "Wrong code", "/code", d);
		hr_free(d);
		/* The problem document with attempts_left, for clients that show it. */
		json_t *pd = json_loads(r->resp, 0, NULL);
		json_object_set_new(pd, "attempts_left", json_integer(left));
		api_json(r, 422, pd);
		r->ctype = "application/problem+json";
		r->keep_writes = true; /* the attempt counts */
		return;
	}
	PQclear(res);
	return;
fail:
	PQclear(res);
	api_problem_err(r, &err);
}
