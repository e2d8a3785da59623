/*
 * test_codes.c -- one-time codes, promo and referral codes, over HTTP against
 * the real herald-api and PostgreSQL.
 *
 * OTP: the code travels in the outbox row on the transactional lane, only its
 * HMAC is stored; verify answers right / wrong / expired / exhausted / used /
 * superseded, a wrong attempt counts; the per-recipient send limit answers 429.
 * Codes: a referral code of limit 3 takes 3 redemptions and refuses the 4th,
 * also when 8 redeem at once (a second herald-api with 8 threads), credits the
 * referrer exactly 3 times and emits the events; a promo pool never issues one
 * code twice under concurrent issuing.  Every refusal is a precise problem and
 * writes nothing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "alloc.h"
#include "apitest.h"
#include "codes.h"
#include "db.h"
#include "harness.h"
#include "providers.h"

static long long jint(resp *r, const char *name)
{
	return (long long)json_integer_value(json_object_get(r->json, name));
}

static const char *jstr(resp *r, const char *name)
{
	const char *s = json_string_value(json_object_get(r->json, name));
	return s ? s : "";
}

static void expect_type(resp *r, long status, const char *type, const char *pointer)
{
	expect_problem(r, status, pointer);
	char want[96];
	snprintf(want, sizeof want, "urn:herald:problem:%s", type);
	ck_assert_msg(strcmp(jstr(r, "type"), want) == 0, "type: got %s, want %s (%s)", jstr(r, "type"), want, r->body);
}

static void sql(fx *f, const char *fmt)
{
	char q[1024];
	snprintf(q, sizeof q, fmt, f->t.schema, f->t.schema, f->t.schema);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", q,
		      PQerrorMessage(f->c));
	PQclear(r);
}

/* One text value from SQL (%s = the tenant schema); heap. */
static char *value(fx *f, const char *fmt, long long arg)
{
	char q[1024];
	snprintf(q, sizeof q, fmt, f->t.schema, arg);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", q, PQerrorMessage(f->c));
	char *v = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* The code carried by an OTP's message (what the recipient reads). */
static char *sent_code(fx *f, long long otp_id)
{
	char q[512];
	snprintf(q, sizeof q,
		 "SELECT o.data -> 0 ->> 'code' FROM %s.otp_codes c JOIN %s.outbox o ON o.id = c.message_id / 4096 "
		 "WHERE c.id = %lld",
		 f->t.schema, f->t.schema, otp_id);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", q, PQerrorMessage(f->c));
	char *v = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static long long otp_send(fx *f, const char *body)
{
	resp *r = call("POST", "/v1/otp", f->send, NULL, body);
	ck_assert_msg(r->status == 202, "send: %ld %s", r->status, r->body);
	long long id = jint(r, "id");
	resp_free(r);
	return id;
}

static resp *otp_verify(fx *f, long long id, const char *code)
{
	char body[128];
	snprintf(body, sizeof body, "{\"id\": %lld, \"code\": \"%s\"}", id, code);
	return call("POST", "/v1/otp/verify", f->send, NULL, body);
}

/* A code that differs from c in its last digit. */
static void wrong_of(const char *c, char *out)
{
	strcpy(out, c);
	size_t n = strlen(out);
	out[n - 1] = (char)('0' + (out[n - 1] - '0' + 1) % 10);
}

/* ---- OTP ---- */

START_TEST(otp_send_enqueues_transactional_and_stores_only_an_hmac)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "sms", "sms");
	resp *r = call("POST", "/v1/otp", f.send, NULL,
		       "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+1 415 555 0101\", \"purpose\": \"login\"}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	ck_assert_str_eq(jstr(r, "status"), "pending");
	ck_assert_str_eq(jstr(r, "to"), "+14155550101");
	long long id = jint(r, "id"), msg = jint(r, "message_id");
	resp_free(r);
	ck_assert_int_gt(msg, 0);
	char *code = sent_code(&f, id);
	ck_assert_int_eq(strlen(code), 4);
	ck_assert_int_eq(strspn(code, "0123456789"), 4);
	/* the message: transactional lane, the code in its data, the default text using it */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE lane = 'transactional' AND channel = 'sms' "
				   "AND addresses[1] = '+14155550101' AND content->>'text' LIKE '%%{{ code }}%%'"),
			 1);
	/* stored: HMAC-SHA256 under the key derived from the master key, never the code or its bare hash */
	char *salt = value(&f, "SELECT salt FROM %s.otp_codes WHERE id = %lld", id);
	char *stored = value(&f, "SELECT code_hash FROM %s.otp_codes WHERE id = %lld", id);
	uint8_t master[32], key[32];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, master, &err));
	hr_otp_key(master, key);
	char want[65], bare[65];
	hr_otp_hash(key, f.t.id, salt, code, want);
	hr_sha256_hex(code, strlen(code), bare);
	ck_assert_str_eq(stored, want);
	ck_assert_str_ne(stored, bare);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.otp_codes WHERE code_hash ~ '^[0-9]{4}$'"), 0);
	/* length 8 by email, a contact reference and inline content */
	fx_provider(&f, "mail", "email");
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"o-1\", \"email\": \"Otp@Example.com\"}");
	resp_free(r);
	id = otp_send(&f, "{\"channel\": \"email\", \"provider\": \"mail\", \"contact\": {\"external_id\": \"o-1\"}, "
			  "\"length\": 8, \"content\": {\"subject\": \"Code\", \"text\": \"{{ code }} for {{ name }}\"}, "
			  "\"data\": {\"name\": \"Ann\"}}");
	char *code8 = sent_code(&f, id);
	ck_assert_int_eq(strlen(code8), 8);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE addresses[1] = 'otp@example.com' "
				   "AND data->0->>'name' = 'Ann' AND contact_ids[1] IS NOT NULL"),
			 1);
	hr_free(code8);
	hr_free(salt);
	hr_free(stored);
	hr_free(code);
	fx_close(&f);
}
END_TEST

START_TEST(otp_verify_right_wrong_expired_exhausted_used_superseded)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "sms", "sms");
	char bad[16];
	/* wrong (counted even though the answer is an error), then right, then used */
	long long id = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550102\"}");
	char *code = sent_code(&f, id);
	wrong_of(code, bad);
	resp *r = otp_verify(&f, id, bad);
	expect_type(r, 422, "otp-wrong", "/code");
	ck_assert_int_eq(jint(r, "attempts_left"), 4);
	resp_free(r);
	char q[128];
	snprintf(q, sizeof q, "SELECT attempts FROM %%s.otp_codes WHERE id = %lld", id);
	ck_assert_int_eq(count(&f, q), 1);
	r = otp_verify(&f, id, code);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert(json_is_true(json_object_get(r->json, "verified")));
	ck_assert_str_eq(jstr(r, "to"), "+14155550102");
	resp_free(r);
	r = otp_verify(&f, id, code);
	expect_type(r, 409, "otp-used", "/code");
	resp_free(r);
	hr_free(code);
	/* attempts exhausted: 2 allowed, both wrong; then even the right code is refused */
	id = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550103\", \"max_attempts\": 2}");
	code = sent_code(&f, id);
	wrong_of(code, bad);
	r = otp_verify(&f, id, bad);
	expect_type(r, 422, "otp-wrong", "/code");
	resp_free(r);
	r = otp_verify(&f, id, bad);
	expect_type(r, 422, "otp-wrong", "/code");
	ck_assert_int_eq(jint(r, "attempts_left"), 0);
	resp_free(r);
	r = otp_verify(&f, id, code);
	expect_type(r, 409, "otp-attempts-exhausted", "/code");
	resp_free(r);
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.otp_codes WHERE id = %lld AND status = 'locked' AND attempts = 2",
		 id);
	ck_assert_int_eq(count(&f, q), 1);
	hr_free(code);
	/* expired */
	id = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550104\", \"ttl_s\": 30}");
	code = sent_code(&f, id);
	snprintf(q, sizeof q, "UPDATE %%s.otp_codes SET expires_at = now() - interval '1 second' WHERE id = %lld", id);
	sql(&f, q);
	r = otp_verify(&f, id, code);
	expect_type(r, 410, "otp-expired", "/code");
	resp_free(r);
	hr_free(code);
	/* superseded: a second code for the same recipient and purpose replaces the first */
	long long a = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550105\"}");
	long long b = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550105\"}");
	long long other = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550105\", "
				       "\"purpose\": \"reset\"}");
	char *ca = sent_code(&f, a), *cb = sent_code(&f, b);
	r = otp_verify(&f, a, ca);
	expect_type(r, 410, "otp-superseded", "/code");
	resp_free(r);
	char body[160];
	snprintf(body, sizeof body, "{\"to\": \"+1 (415) 555-0105\", \"code\": \"%s\"}", cb);
	r = call("POST", "/v1/otp/verify", f.send, NULL, body);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r, "id"), b);
	resp_free(r);
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.otp_codes WHERE id = %lld AND status = 'pending'", other);
	ck_assert_int_eq(count(&f, q), 1); /* another purpose is not superseded */
	hr_free(ca);
	hr_free(cb);
	/* by contact */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"v-1\", \"phone\": \"+14155550106\"}");
	long long cid = jint(r, "id");
	resp_free(r);
	id = otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"contact\": {\"external_id\": \"v-1\"}}");
	code = sent_code(&f, id);
	snprintf(body, sizeof body, "{\"contact\": {\"external_id\": \"v-1\"}, \"code\": \"%s\"}", code);
	r = call("POST", "/v1/otp/verify", f.send, NULL, body);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r, "contact_id"), cid);
	resp_free(r);
	hr_free(code);
	/* nothing sent for this purpose */
	r = call("POST", "/v1/otp/verify", f.send, NULL, "{\"to\": \"+14155550199\", \"code\": \"1234\"}");
	expect_type(r, 404, "otp-not-found", "/to");
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(otp_send_rate_per_recipient_and_bad_input_write_nothing)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "sms", "sms");
	fx_provider(&f, "mail", "email");
	for (int i = 0; i < 5; i++)
		otp_send(&f, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550110\"}");
	resp *r = call("POST", "/v1/otp", f.send, NULL, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550110\"}");
	expect_type(r, 429, "otp-rate-limited", "/to");
	ck_assert_int_ge(atoi(r->retry_after), 1);
	ck_assert_int_le(atoi(r->retry_after), 600);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.otp_codes"), 5);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 5);
	static const struct {
		const char *body, *pointer;
	} bad[] = {
		{"{\"channel\": \"push\", \"provider\": \"sms\", \"to\": \"+14155550111\"}", "/channel"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"length\": 3}", "/length"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"length\": 11}", "/length"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"ttl_s\": \"60\"}", "/ttl_s"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"data\": {\"code\": \"0000\"}}", "/data/code"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\"}", "/to"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": null}", "/to"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": null, \"contact\": null}", "/to"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"12\"}", "/to"},
		{"{\"channel\": \"sms\", \"provider\": \"mail\", \"to\": \"+14155550111\"}", "/provider"},
		{"{\"channel\": \"sms\", \"provider\": \"nope\", \"to\": \"+14155550111\"}", "/provider"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"purpose\": \"Log In'--\"}", "/purpose"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"contact\": {\"external_id\": \"missing\"}}", "/contact"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"template\": {\"id\": 99, \"version\": 1}}", "/template"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"not an address\"}", "/to"},
		{"{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\", \"bogus\": 1}", "/bogus"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("POST", "/v1/otp", f.send, NULL, bad[i].body);
		expect_type(r, 422, "validation", bad[i].pointer);
		resp_free(r);
	}
	static const struct {
		const char *body, *pointer;
	} vbad[] = {
		{"{\"to\": \"+14155550110\", \"code\": \"12a4\"}", "/code"},
		{"{\"to\": \"+14155550110\", \"code\": \"123\"}", "/code"},
		{"{\"to\": \"+14155550110\"}", "/code"},
		{"{\"id\": 1, \"to\": \"+14155550110\", \"code\": \"1234\"}", "/id"},
		{"{\"code\": \"1234\"}", "/to"},
		{"{\"id\": null, \"code\": \"1234\"}", "/to"},
		{"{\"id\": null, \"to\": null, \"contact\": null, \"code\": \"1234\"}", "/to"},
		{"{\"id\": \"1\", \"code\": \"1234\"}", "/id"},
		{"{\"contact\": {\"external_id\": \"missing\"}, \"code\": \"1234\"}", "/contact"},
	};
	for (size_t i = 0; i < sizeof vbad / sizeof *vbad; i++) {
		r = call("POST", "/v1/otp/verify", f.send, NULL, vbad[i].body);
		expect_type(r, 422, "validation", vbad[i].pointer);
		resp_free(r);
	}
	r = call("POST", "/v1/otp", f.read, NULL, "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550111\"}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.otp_codes"), 5);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.otp_codes WHERE attempts > 0"), 0);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 5);
	fx_close(&f);
}
END_TEST

/* ---- referral and promo codes ---- */

static long long contact(fx *f, const char *ext)
{
	char body[128];
	snprintf(body, sizeof body, "{\"external_id\": \"%s\"}", ext);
	resp *r = call("PUT", "/v1/contacts", f->full, NULL, body);
	ck_assert_msg(r->status == 201 || r->status == 200, "%s", r->body);
	long long id = jint(r, "id");
	resp_free(r);
	return id;
}

static long long pool(fx *f, const char *body)
{
	resp *r = call("POST", "/v1/code-pools", f->full, NULL, body);
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long id = jint(r, "id");
	resp_free(r);
	return id;
}

static resp *redeem(fx *f, int port, const char *code, const char *ext)
{
	char body[256];
	snprintf(body, sizeof body, "{\"code\": \"%s\", \"contact\": {\"external_id\": \"%s\"}}", code, ext);
	return call_at(port, "POST", "/v1/codes/redeem", f->send, NULL, body, -1);
}

START_TEST(referral_code_takes_three_redemptions_credits_and_emits_events)
{
	fx f;
	fx_open(&f);
	long long referrer = contact(&f, "ref");
	for (int i = 0; i < 5; i++) {
		char e[16];
		snprintf(e, sizeof e, "friend-%d", i);
		contact(&f, e);
	}
	long long pid = pool(&f, "{\"name\": \"friends\", \"kind\": \"referral\"}");
	char path[128];
	snprintf(path, sizeof path, "/v1/code-pools/%lld/issue", pid);
	resp *r = call("POST", path, f.send, NULL, "{\"contact\": {\"external_id\": \"ref\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	ck_assert_int_eq(jint(r, "max_redemptions"), 3);
	char code[80];
	snprintf(code, sizeof code, "%s", jstr(r, "code"));
	resp_free(r);
	ck_assert_int_eq(strlen(code), 10);
	ck_assert_int_eq(strspn(code, "ABCDEFGHJKMNPQRSTUVWXYZ23456789"), 10);
	/* issuing again gives the same code */
	r = call("POST", path, f.send, NULL, "{\"contact\": {\"external_id\": \"ref\"}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_str_eq(jstr(r, "code"), code);
	resp_free(r);
	char lower[80];
	for (size_t i = 0; i <= strlen(code); i++)
		lower[i] = (char)(code[i] >= 'A' && code[i] <= 'Z' ? code[i] - 'A' + 'a' : code[i]);
	for (int i = 0; i < 3; i++) {
		char e[16];
		snprintf(e, sizeof e, "friend-%d", i);
		r = redeem(&f, 0, i == 1 ? lower : code, e); /* codes are case-insensitive */
		ck_assert_msg(r->status == 200, "%s", r->body);
		ck_assert_int_eq(jint(r, "redeemed"), i + 1);
		ck_assert_int_eq(jint(r, "remaining"), 2 - i);
		json_t *ref = json_object_get(r->json, "referrer");
		ck_assert_int_eq(json_integer_value(json_object_get(ref, "contact_id")), referrer);
		ck_assert_int_eq((int)json_number_value(json_object_get(ref, "balance")), i + 1);
		resp_free(r);
	}
	long events = count(&f, "SELECT count(*) FROM %s.events");
	/* refusals: each precise, none writes */
	r = redeem(&f, 0, code, "friend-3");
	expect_type(r, 409, "code-exhausted", "/code");
	resp_free(r);
	r = redeem(&f, 0, code, "friend-0");
	expect_type(r, 409, "code-already-redeemed", "/contact");
	resp_free(r);
	r = redeem(&f, 0, code, "ref");
	expect_type(r, 422, "code-own", "/contact");
	resp_free(r);
	r = redeem(&f, 0, "NOSUCHCODE", "friend-4");
	expect_type(r, 422, "code-unknown", "/code");
	resp_free(r);
	r = redeem(&f, 0, "bad code!", "friend-4");
	expect_type(r, 422, "validation", "/code");
	resp_free(r);
	r = redeem(&f, 0, code, "nobody");
	expect_type(r, 422, "validation", "/contact");
	resp_free(r);
	r = call("POST", "/v1/codes/redeem", f.send, NULL, "{\"code\": 5}");
	expect_problem(r, 422, "/code");
	expect_problem(r, 422, "/contact");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events"), events);
	/* the referrer credited exactly 3 times; who redeemed is recorded */
	char q[256];
	snprintf(q, sizeof q, "SELECT (attributes->>'referral_credits')::int FROM %%s.contacts WHERE id = %lld", referrer);
	ck_assert_int_eq(count(&f, q), 3);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'code_redeemed'"), 3);
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.events WHERE name = 'referral_credited' AND contact_id = %lld",
		 referrer);
	ck_assert_int_eq(count(&f, q), 3);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'code_issued'"), 1);
	snprintf(path, sizeof path, "/v1/codes/%s", code);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r, "redeemed"), 3);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "redemptions")), 3);
	ck_assert_int_eq(jint(r, "contact_id"), referrer);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(concurrent_redemptions_exactly_three_and_issues_never_share_a_code)
{
	fx f;
	fx_open(&f);
	srv wide;
	srv_start(&wide, the_dsn, "HERALD_API_THREADS=8");
	long long referrer = contact(&f, "ref");
	for (int i = 0; i < 16; i++) {
		char e[16];
		snprintf(e, sizeof e, "c-%d", i);
		contact(&f, e);
	}
	long long pid = pool(&f, "{\"name\": \"friends\", \"kind\": \"referral\", \"settings\": {\"credit_attribute\": "
				 "\"bonus\", \"credit_amount\": 5, \"prefix\": \"ref-\"}}");
	char path[128];
	snprintf(path, sizeof path, "/v1/code-pools/%lld/issue", pid);
	resp *r = call("POST", path, f.send, NULL, "{\"contact\": {\"external_id\": \"ref\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	char code[80], fmt[160];
	snprintf(code, sizeof code, "%s", jstr(r, "code"));
	resp_free(r);
	ck_assert_int_eq(strncmp(code, "REF-", 4), 0);
	/* 8 friends redeem at once: exactly 3 succeed, 5 are refused cleanly */
	snprintf(fmt, sizeof fmt, "{\"code\": \"%s\", \"contact\": {\"external_id\": \"c-%%d\"}}", code);
	resp **j = call_at_once(wide.port, 8, "POST", "/v1/codes/redeem", f.send, fmt);
	int ok = 0, refused = 0;
	for (int i = 0; i < 8; i++) {
		ok += j[i]->status == 200;
		refused += j[i]->status == 409;
	}
	resps_free(j, 8);
	ck_assert_msg(ok == 3 && refused == 5, "ok %d, refused %d", ok, refused);
	char q[256];
	snprintf(q, sizeof q, "SELECT (attributes->>'bonus')::int FROM %%s.contacts WHERE id = %lld", referrer);
	ck_assert_int_eq(count(&f, q), 15);
	snprintf(q, sizeof q, "SELECT redeemed FROM %%s.codes WHERE code = '%s'", code);
	ck_assert_int_eq(count(&f, q), 3);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'code_redeemed'"), 3);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'referral_credited'"), 3);
	/* a promo pool of 10 codes, 16 contacts asking at once: 10 distinct codes, 6 pool-empty */
	long long promo = pool(&f, "{\"name\": \"spring\", \"kind\": \"promo\"}");
	snprintf(path, sizeof path, "/v1/code-pools/%lld/generate", promo);
	r = call("POST", path, f.full, NULL, "{\"count\": 10}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/code-pools/%lld/issue", promo);
	j = call_at_once(wide.port, 16, "POST", path, f.send, "{\"contact\": {\"external_id\": \"c-%d\"}}");
	ok = refused = 0;
	for (int i = 0; i < 16; i++) {
		ok += j[i]->status == 201;
		refused += j[i]->status == 409;
		for (int k = 0; k < i && j[i]->status == 201; k++)
			ck_assert_msg(j[k]->status != 201 || strcmp(jstr(j[k], "code"), jstr(j[i], "code")) != 0,
				      "code %s issued twice", jstr(j[i], "code"));
	}
	resps_free(j, 16);
	ck_assert_msg(ok == 10 && refused == 6, "issued %d, refused %d", ok, refused);
	snprintf(q, sizeof q, "SELECT count(DISTINCT contact_id) FROM %%s.codes WHERE pool_id = %lld", promo);
	ck_assert_int_eq(count(&f, q), 10);
	ck_assert_int_eq(srv_stop(&wide), 0);
	fx_close(&f);
}
END_TEST

START_TEST(promo_pools_upload_generate_issue_redeem_and_validate)
{
	fx f;
	fx_open(&f);
	fx g;
	fx_open(&g);
	contact(&f, "p-1");
	contact(&f, "p-2");
	long long pid = pool(&f, "{\"name\": \"summer\", \"kind\": \"promo\"}");
	char path[96];
	snprintf(path, sizeof path, "/v1/code-pools/%lld/codes", pid);
	/* a bad code refuses the whole upload */
	resp *r = call("POST", path, f.full, NULL, "{\"codes\": [\"ok-1\", \"x y\", 7, \"ok-2\"]}");
	expect_type(r, 422, "validation", "/codes/1");
	expect_problem(r, 422, "/codes/2");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.codes"), 0);
	r = call("POST", path, f.full, NULL, "{\"codes\": [\"abc-1\", \"ABC-1\", \"def\"]}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r, "added"), 2);
	json_t *d = json_array_get(json_object_get(r->json, "duplicates"), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(d, "index")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(d, "reason")), "repeated in the request");
	resp_free(r);
	r = call("POST", path, f.full, NULL, "{\"codes\": [\"DEF\", \"ghi\"]}");
	ck_assert_int_eq(jint(r, "added"), 1);
	d = json_array_get(json_object_get(r->json, "duplicates"), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(d, "index")), 0);
	ck_assert_str_eq(json_string_value(json_object_get(d, "reason")), "exists already");
	resp_free(r);
	snprintf(path, sizeof path, "/v1/code-pools/%lld/generate", pid);
	r = call("POST", path, f.full, NULL, "{\"count\": 100}");
	ck_assert_int_eq(r->status, 201);
	resp_free(r);
	r = call("POST", path, f.full, NULL, "{\"count\": 0}");
	expect_type(r, 422, "validation", "/count");
	resp_free(r);
	snprintf(path, sizeof path, "/v1/code-pools/%lld", pid);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r, "codes"), 103);
	ck_assert_int_eq(jint(r, "available"), 103);
	resp_free(r);
	/* issue, redeem once (promo limit 1), a second redeemer is refused */
	snprintf(path, sizeof path, "/v1/code-pools/%lld/issue", pid);
	r = call("POST", path, f.send, NULL, "{\"contact\": {\"external_id\": \"p-1\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	char code[80];
	snprintf(code, sizeof code, "%s", jstr(r, "code"));
	resp_free(r);
	r = redeem(&f, 0, code, "p-1");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_ptr_null(json_object_get(r->json, "referrer"));
	resp_free(r);
	r = redeem(&f, 0, code, "p-2");
	expect_type(r, 409, "code-exhausted", "/code");
	resp_free(r);
	/* pools: validation, duplicates, lists, other tenants */
	static const struct {
		const char *body, *pointer;
	} bad[] = {
		{"{\"name\": \"x\", \"kind\": \"gift\"}", "/kind"},
		{"{\"kind\": \"promo\"}", "/name"},
		{"{\"name\": \"Bad Name\", \"kind\": \"promo\"}", "/name"},
		{"{\"name\": \"p\", \"kind\": \"promo\", \"settings\": {\"credit_attribute\": \"x\"}}", "/settings/credit_attribute"},
		{"{\"name\": \"p\", \"kind\": \"referral\", \"settings\": {\"redemption_limit\": 0}}", "/settings/redemption_limit"},
		{"{\"name\": \"p\", \"kind\": \"referral\", \"settings\": {\"code_length\": 5}}", "/settings/code_length"},
		{"{\"name\": \"p\", \"kind\": \"referral\", \"settings\": {\"prefix\": \"a b\"}}", "/settings/prefix"},
		{"{\"name\": \"p\", \"kind\": \"referral\", \"settings\": {\"credit_attribute\": \"a;drop\"}}", "/settings/credit_attribute"},
		{"{\"name\": \"p\", \"kind\": \"referral\", \"settings\": {\"nope\": 1}}", "/settings/nope"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("POST", "/v1/code-pools", f.full, NULL, bad[i].body);
		expect_type(r, 422, "validation", bad[i].pointer);
		resp_free(r);
	}
	r = call("POST", "/v1/code-pools", f.full, NULL, "{\"name\": \"summer\", \"kind\": \"referral\"}");
	expect_type(r, 409, "conflict", "/name");
	resp_free(r);
	r = call("POST", "/v1/code-pools", f.send, NULL, "{\"name\": \"other\", \"kind\": \"promo\"}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.code_pools"), 1);
	pool(&f, "{\"name\": \"second\", \"kind\": \"promo\"}");
	r = call("GET", "/v1/code-pools?limit=1", f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 1);
	char next[256];
	snprintf(next, sizeof next, "/v1/code-pools?limit=1&cursor=%s", jstr(r, "next_cursor"));
	resp_free(r);
	r = call("GET", next, f.read, NULL, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 0), "name")),
			 "second");
	ck_assert(json_is_null(json_object_get(r->json, "next_cursor")));
	resp_free(r);
	r = call("GET", "/v1/code-pools?cursor=zz", f.read, NULL, NULL);
	expect_type(r, 400, "bad-parameter", "cursor");
	resp_free(r);
	/* another tenant sees none of it */
	snprintf(path, sizeof path, "/v1/code-pools/%lld", pid);
	r = call("GET", path, g.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/codes/%s", code);
	r = call("GET", path, g.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = redeem(&g, 0, code, "p-1");
	expect_problem(r, 422, "/contact");
	resp_free(r);
	/* an empty promo pool */
	long long empty = pool(&f, "{\"name\": \"empty\", \"kind\": \"promo\"}");
	snprintf(path, sizeof path, "/v1/code-pools/%lld/issue", empty);
	r = call("POST", path, f.send, NULL, "{\"contact\": {\"external_id\": \"p-1\"}}");
	expect_type(r, 409, "pool-empty", NULL);
	resp_free(r);
	r = call("POST", "/v1/code-pools/999999/issue", f.send, NULL, "{\"contact\": {\"external_id\": \"p-1\"}}");
	expect_problem(r, 404, NULL);
	resp_free(r);
	fx_close(&g);
	fx_close(&f);
}
END_TEST

Suite *codes_suite(void);
Suite *codes_suite(void)
{
	Suite *s = suite_create("codes");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, otp_send_enqueues_transactional_and_stores_only_an_hmac);
	tcase_add_test(tc, otp_verify_right_wrong_expired_exhausted_used_superseded);
	tcase_add_test(tc, otp_send_rate_per_recipient_and_bad_input_write_nothing);
	tcase_add_test(tc, referral_code_takes_three_redemptions_credits_and_emits_events);
	tcase_add_test(tc, concurrent_redemptions_exactly_three_and_issues_never_share_a_code);
	tcase_add_test(tc, promo_pools_upload_generate_issue_redeem_and_validate);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(codes_suite());
}
