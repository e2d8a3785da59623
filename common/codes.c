/*
 * codes.c -- see codes.h.
 */
#include "codes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc.h"
#include "db.h"

/* ---- OTP ---- */

static void hmac_sha256(const uint8_t key[HR_KEY_LEN], const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 0;
	if (!HMAC(EVP_sha256(), key, HR_KEY_LEN, data, len, out, &n) || n != 32)
		abort(); /* OpenSSL without SHA-256: nothing herald can run on */
}

void hr_otp_key(const uint8_t master[HR_KEY_LEN], uint8_t key[HR_KEY_LEN])
{
	static const char label[] = "herald/otp/v1";
	hmac_sha256(master, label, sizeof label - 1, key);
}

void hr_otp_generate(int digits, char *out)
{
	int i = 0;
	while (i < digits) {
		uint8_t buf[32];
		hr_random_bytes(buf, sizeof buf);
		for (size_t k = 0; k < sizeof buf && i < digits; k++)
			if (buf[k] < 250) /* 250 = 25 * 10: no bias towards low digits */
				out[i++] = (char)('0' + buf[k] % 10);
	}
	out[digits] = '\0';
}

void hr_otp_hash(const uint8_t key[HR_KEY_LEN], int64_t tenant_id, const char *salt, const char *code,
		 char out[65])
{
	static const char hex[] = "0123456789abcdef";
	char *msg = hr_sprintf("%lld:%s:%s", (long long)tenant_id, salt, code);
	uint8_t md[32];
	hmac_sha256(key, msg, strlen(msg), md);
	hr_free(msg);
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

/* ---- codes ---- */

/* No 0/O, 1/I/L: codes are read aloud, typed from SMS and printed. 31 symbols. */
static const char alphabet[] = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

void hr_code_random(char *out, size_t len)
{
	size_t i = 0;
	while (i < len) {
		uint8_t buf[64];
		hr_random_bytes(buf, sizeof buf);
		for (size_t k = 0; k < sizeof buf && i < len; k++)
			if (buf[k] < 248) /* 248 = 8 * 31: rejection keeps it uniform */
				out[i++] = alphabet[buf[k] % 31];
	}
	out[len] = '\0';
}

bool hr_code_normalize(const char *in, char out[HR_CODE_MAX + 1], hr_err *err)
{
	size_t n = strlen(in);
	if (n < 1 || n > HR_CODE_MAX)
		return hr_fail(err, HR_ERR_INVALID, "code", "must be 1 to %d characters", HR_CODE_MAX);
	for (size_t i = 0; i < n; i++) {
		char ch = in[i];
		if (ch >= 'a' && ch <= 'z')
			ch = (char)(ch - 'a' + 'A');
		else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return hr_fail(err, HR_ERR_INVALID, "code", "may hold only letters, digits, - and _");
		out[i] = ch;
	}
	out[n] = '\0';
	return true;
}

static void pool_from_row(PGresult *res, hr_code_pool *p)
{
	memset(p, 0, sizeof *p);
	p->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(p->name, sizeof p->name, "%s", PQgetvalue(res, 0, 1));
	snprintf(p->kind, sizeof p->kind, "%s", PQgetvalue(res, 0, 2));
	bool referral = strcmp(p->kind, "referral") == 0;
	json_t *s = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
	json_t *v;
	/* The API validated the settings when the pool was made; defaults fill the gaps. */
	v = json_object_get(s, "redemption_limit");
	p->redemption_limit = json_is_integer(v) ? (int)json_integer_value(v) : referral ? 3 : 1;
	v = json_object_get(s, "credit_attribute");
	snprintf(p->credit_attribute, sizeof p->credit_attribute, "%s",
		 json_is_string(v) ? json_string_value(v) : "referral_credits");
	v = json_object_get(s, "credit_amount");
	p->credit_amount = json_is_integer(v) ? (int64_t)json_integer_value(v) : 1;
	v = json_object_get(s, "code_length");
	p->code_length = json_is_integer(v) ? (int)json_integer_value(v) : 10;
	v = json_object_get(s, "prefix");
	snprintf(p->prefix, sizeof p->prefix, "%s", json_is_string(v) ? json_string_value(v) : "");
	json_decref(s);
}

bool hr_code_pool_get(PGconn *c, int64_t id, const char *name, hr_code_pool *out, hr_err *err)
{
	char ids[32];
	snprintf(ids, sizeof ids, "%lld", (long long)id);
	const char *p[] = {name ? NULL : ids, name};
	PGresult *res;
	if (!hr_db_query(c, "SELECT id, name, kind, settings::text FROM code_pools WHERE id = $1 OR name = $2", 2, p,
			 &res, err))
		return false;
	bool found = PQntuples(res) == 1;
	if (found)
		pool_from_row(res, out);
	PQclear(res);
	return found ? true : hr_fail(err, HR_ERR_NOTFOUND, NULL, "no such code pool");
}

/* A Postgres text[] literal of n fresh codes of the pool (codes are [A-Z0-9_-]: no quoting needed). */
static char *fresh_codes(const hr_code_pool *p, int n)
{
	size_t one = strlen(p->prefix) + (size_t)p->code_length + 1;
	char *a = hr_malloc((size_t)n * one + 3), *o = a;
	char *code = hr_malloc((size_t)p->code_length + 1);
	*o++ = '{';
	for (int i = 0; i < n; i++) {
		hr_code_random(code, (size_t)p->code_length);
		o += sprintf(o, "%s%s%s", i ? "," : "", p->prefix, code);
	}
	*o++ = '}';
	*o = '\0';
	hr_free(code);
	return a;
}

bool hr_codes_generate(PGconn *c, const hr_code_pool *p, int n, hr_err *err)
{
	char pid[32], lim[16];
	snprintf(pid, sizeof pid, "%lld", (long long)p->id);
	snprintf(lim, sizeof lim, "%d", p->redemption_limit);
	int done = 0;
	/* 31^10 codes: a collision is rare, eight rounds in a row of them means the space is full. */
	for (int round = 0; round < 8 && done < n; round++) {
		char *arr = fresh_codes(p, n - done);
		const char *q[] = {pid, lim, arr};
		PGresult *res;
		bool ok = hr_db_query(c,
				      "INSERT INTO codes (pool_id, code, max_redemptions) "
				      "SELECT $1, x, $2 FROM unnest($3::text[]) x ON CONFLICT (code) DO NOTHING",
				      3, q, &res, err);
		hr_free(arr);
		if (!ok)
			return false;
		done += atoi(PQcmdTuples(res));
		PQclear(res);
	}
	if (done < n)
		return hr_fail(err, HR_ERR_CONFLICT, "/code_length",
			       "the pool's code space is nearly used up: make codes longer");
	return true;
}

static void code_from_row(PGresult *res, hr_code *out)
{
	out->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(out->code, sizeof out->code, "%s", PQgetvalue(res, 0, 1));
	out->max_redemptions = atoi(PQgetvalue(res, 0, 2));
	out->redeemed = atoi(PQgetvalue(res, 0, 3));
}

bool hr_code_issue(PGconn *c, const hr_code_pool *p, int64_t contact_id, hr_code *out, hr_code_refusal *why,
		   hr_err *err)
{
	char pid[32], cid[32], lim[16];
	snprintf(pid, sizeof pid, "%lld", (long long)p->id);
	snprintf(cid, sizeof cid, "%lld", (long long)contact_id);
	snprintf(lim, sizeof lim, "%d", p->redemption_limit);
	memset(out, 0, sizeof *out);
	out->pool_id = p->id;
	out->contact_id = contact_id;
	*why = HR_CODE_OK;
	const char *q[] = {pid, cid};
	PGresult *res = NULL;
	/* One issuer per (schema, pool, contact) at a time, so a contact never gets two codes. */
	if (!hr_db_query(c,
			 "SELECT pg_advisory_xact_lock(hashtext('herald.codes.issue'), "
			 "hashtext(current_schema() || ':' || $1 || ':' || $2))",
			 2, q, NULL, err))
		return false;
	if (!hr_db_query(c, "SELECT id, code, max_redemptions, redeemed FROM codes WHERE pool_id = $1 AND contact_id = $2",
			 2, q, &res, err))
		return false;
	if (PQntuples(res) == 1) {
		code_from_row(res, out);
		PQclear(res);
		return true;
	}
	PQclear(res);
	/* A free code; SKIP LOCKED: concurrent issuers take different ones without waiting. */
	if (!hr_db_query(c,
			 "UPDATE codes SET contact_id = $2, issued_at = now() WHERE id = (SELECT id FROM codes "
			 "WHERE pool_id = $1 AND contact_id IS NULL AND redeemed = 0 LIMIT 1 FOR UPDATE SKIP LOCKED) "
			 "RETURNING id, code, max_redemptions, redeemed",
			 2, q, &res, err))
		return false;
	bool got = PQntuples(res) == 1;
	if (got)
		code_from_row(res, out);
	PQclear(res);
	if (!got && strcmp(p->kind, "referral") != 0) {
		*why = HR_CODE_POOL_EMPTY;
		return hr_fail(err, HR_ERR_CONFLICT, NULL, "the pool has no free code left: upload or generate more");
	}
	for (int round = 0; !got && round < 8; round++) {
		char *code = hr_malloc(strlen(p->prefix) + (size_t)p->code_length + 1);
		strcpy(code, p->prefix);
		hr_code_random(code + strlen(p->prefix), (size_t)p->code_length);
		const char *qi[] = {pid, cid, lim, code};
		bool ok = hr_db_query(c,
				      "INSERT INTO codes (pool_id, contact_id, max_redemptions, code, issued_at) "
				      "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (code) DO NOTHING "
				      "RETURNING id, code, max_redemptions, redeemed",
				      4, qi, &res, err);
		hr_free(code);
		if (!ok)
			return false;
		got = PQntuples(res) == 1;
		if (got)
			code_from_row(res, out);
		PQclear(res);
	}
	if (!got)
		return hr_fail(err, HR_ERR_CONFLICT, NULL, "the pool's code space is nearly used up: make codes longer");
	out->issued_now = true;
	char id[32];
	snprintf(id, sizeof id, "%lld", (long long)out->id);
	const char *qe[] = {cid, id, pid, p->name, p->kind};
	return hr_db_query(c,
			   "INSERT INTO events (contact_id, name, properties, occurred_at) VALUES ($1, 'code_issued', "
			   "jsonb_build_object('code_id', $2::bigint, 'pool_id', $3::bigint, 'pool', $4::text, "
			   "'kind', $5::text), herald_clock.now())",
			   5, qe, NULL, err);
}

bool hr_code_redeem(PGconn *c, const char *code, int64_t contact_id, hr_redemption *out, hr_code_refusal *why,
		    hr_err *err)
{
	char cid[32];
	snprintf(cid, sizeof cid, "%lld", (long long)contact_id);
	memset(out, 0, sizeof *out);
	*why = HR_CODE_OK;
	const char *q[] = {code, cid};
	PGresult *res;
	/* The code's row lock serialises its redemptions; after a wait, READ
	 * COMMITTED re-reads the row, so the counter seen here is the latest. */
	if (!hr_db_query(c,
			 "SELECT c.id, c.pool_id, coalesce(o.merged_into, o.id), c.max_redemptions, c.redeemed, "
			 "c.redemptions @> jsonb_build_array(jsonb_build_object('contact_id', $2::bigint)), "
			 "p.name, p.kind, p.settings::text FROM codes c JOIN code_pools p ON p.id = c.pool_id "
			 "LEFT JOIN contacts o ON o.id = c.contact_id WHERE c.code = $1 FOR UPDATE OF c",
			 2, q, &res, err))
		return false;
	if (PQntuples(res) == 0) {
		PQclear(res);
		*why = HR_CODE_UNKNOWN;
		return hr_fail(err, HR_ERR_NOTFOUND, "/code", "no such code");
	}
	out->code_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	out->pool_id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	int64_t owner = PQgetisnull(res, 0, 2) ? 0 : strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	out->max_redemptions = atoi(PQgetvalue(res, 0, 3));
	int redeemed = atoi(PQgetvalue(res, 0, 4));
	bool again = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
	snprintf(out->pool, sizeof out->pool, "%s", PQgetvalue(res, 0, 6));
	snprintf(out->kind, sizeof out->kind, "%s", PQgetvalue(res, 0, 7));
	hr_code_pool pool = {0};
	{
		/* Only the credit settings matter here (defaults as pool_from_row). */
		json_t *s = json_loads(PQgetvalue(res, 0, 8), 0, NULL);
		json_t *v = json_object_get(s, "credit_attribute");
		snprintf(pool.credit_attribute, sizeof pool.credit_attribute, "%s",
			 json_is_string(v) ? json_string_value(v) : "referral_credits");
		v = json_object_get(s, "credit_amount");
		pool.credit_amount = json_is_integer(v) ? (int64_t)json_integer_value(v) : 1;
		json_decref(s);
	}
	PQclear(res);
	bool referral = strcmp(out->kind, "referral") == 0;
	if (referral && owner == contact_id) {
		*why = HR_CODE_OWN;
		return hr_fail(err, HR_ERR_INVALID, "/contact", "a contact cannot redeem their own referral code");
	}
	if (again) {
		*why = HR_CODE_ALREADY_REDEEMED;
		return hr_fail(err, HR_ERR_CONFLICT, "/contact", "this contact has redeemed this code already");
	}
	if (redeemed >= out->max_redemptions) {
		*why = HR_CODE_EXHAUSTED;
		return hr_fail(err, HR_ERR_CONFLICT, "/code", "the code has reached its limit of %d redemptions",
			       out->max_redemptions);
	}
	char id[32], pid[32], own[32];
	snprintf(id, sizeof id, "%lld", (long long)out->code_id);
	snprintf(pid, sizeof pid, "%lld", (long long)out->pool_id);
	snprintf(own, sizeof own, "%lld", (long long)owner);
	const char *qu[] = {id, cid, pid, out->pool, out->kind, owner ? own : NULL};
	if (!hr_db_query(c,
			 "WITH u AS (UPDATE codes SET redeemed = redeemed + 1, redemptions = redemptions || "
			 "jsonb_build_array(jsonb_build_object('contact_id', $2::bigint, 'at', now())) "
			 "WHERE id = $1 RETURNING redeemed), "
			 "e AS (INSERT INTO events (contact_id, name, properties, occurred_at) VALUES ($2, "
			 "'code_redeemed', jsonb_strip_nulls(jsonb_build_object('code_id', $1::bigint, 'pool_id', "
			 "$3::bigint, 'pool', $4::text, 'kind', $5::text, 'referrer_id', $6::bigint)), herald_clock.now())) "
			 "SELECT redeemed FROM u",
			 6, qu, &res, err))
		return false;
	out->redeemed = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (!referral || !owner)
		return true;
	out->referrer_id = owner;
	snprintf(out->credit_attribute, sizeof out->credit_attribute, "%s", pool.credit_attribute);
	char amount[32];
	snprintf(amount, sizeof amount, "%lld", (long long)pool.credit_amount);
	/* A non-numeric value in the attribute is replaced, not added to: the
	 * pool owns this attribute.  The owner's row lock orders concurrent credits. */
	const char *qc[] = {own, pool.credit_attribute, amount, id, cid, out->pool};
	if (!hr_db_query(c,
			 "WITH u AS (UPDATE contacts SET attributes = jsonb_set(attributes, ARRAY[$2::text], "
			 "to_jsonb(CASE WHEN jsonb_typeof(attributes -> $2::text) = 'number' "
			 "THEN (attributes ->> $2::text)::numeric ELSE 0 END + $3::numeric)), updated_at = now() "
			 "WHERE id = $1 RETURNING attributes -> $2::text AS balance), "
			 "e AS (INSERT INTO events (contact_id, name, properties, occurred_at) SELECT $1, "
			 "'referral_credited', jsonb_build_object('code_id', $4::bigint, 'pool', $6::text, "
			 "'redeemer_id', $5::bigint, 'attribute', $2::text, 'amount', $3::numeric, 'balance', "
			 "u.balance), herald_clock.now() FROM u) SELECT balance::text FROM u",
			 6, qc, &res, err))
		return false;
	if (PQntuples(res) == 1)
		snprintf(out->credits, sizeof out->credits, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return true;
}
