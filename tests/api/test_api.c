/*
 * test_api.c -- herald-api over HTTP: routing, errors, auth, the agency API,
 * contacts and consent, events, messages.  Every error case asserts the
 * status, the problem's pointer and that nothing was written.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "apitest.h"
#include "db.h"
#include "harness.h"
#include "providers.h"
#include "strbuf.h"

#define CONTACTS "SELECT count(*) FROM %s.contacts"

static long long ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long jint(resp *r, const char *name)
{
	return (long long)json_integer_value(json_object_get(r->json, name));
}

static const char *jstr(resp *r, const char *name)
{
	const char *s = json_string_value(json_object_get(r->json, name));
	return s ? s : "";
}

/* ---- server, routing, errors ---- */

START_TEST(openapi_is_served_without_auth)
{
	resp *r = call("GET", "/v1/openapi.yaml", NULL, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_ptr_nonnull(strstr(r->body, "openapi: 3.1"));
	resp_free(r);
}
END_TEST

START_TEST(unknown_route_404_wrong_method_405)
{
	fx f;
	fx_open(&f);
	resp *r = call("GET", "/v1/nope", f.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("DELETE", "/v1/contacts", f.full, NULL, NULL);
	expect_problem(r, 405, NULL);
	ck_assert_ptr_nonnull(strstr(r->allow, "PUT"));
	ck_assert_ptr_nonnull(strstr(r->allow, "GET"));
	resp_free(r);
	/* path tricks never match a route or a row */
	static const char *const tricks[] = {"/v1/contacts/../tenants", "/v1/contacts/1%00", "/v1/contacts/1'--",
					     "/v1/contacts/%2e%2e", "/v1/contacts/1;DROP", "/v1/contacts/-1",
					     "/v1/contacts/99999999999999999999999", "/v1/messages/%27"};
	for (size_t i = 0; i < sizeof tricks / sizeof *tricks; i++) {
		r = call("GET", tricks[i], f.full, NULL, NULL);
		ck_assert_msg(r->status == 404, "%s: got %ld", tricks[i], r->status);
		expect_problem(r, 404, NULL);
		resp_free(r);
	}
	fx_close(&f);
}
END_TEST

START_TEST(malformed_bodies_are_400_or_422_and_write_nothing)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"a@b.co\",\n  \"phone\": }");
	expect_problem(r, 400, "");
	json_t *e = json_array_get(json_object_get(r->json, "errors"), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(e, "line")), 2);
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "line 2"));
	resp_free(r);
	/* invalid UTF-8 */
	r = call_at(0, "PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"a\xff\xfe\"}", -1);
	expect_problem(r, 400, "");
	resp_free(r);
	/* NUL inside a string */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"a\\u0000b\"}");
	expect_problem(r, 400, "");
	resp_free(r);
	/* not an object */
	r = call("PUT", "/v1/contacts", f.full, NULL, "[1,2]");
	expect_problem(r, 422, "");
	resp_free(r);
	/* wrong types, unknown field: every bad field is listed */
	r = call("PUT", "/v1/contacts", f.full, NULL,
		 "{\"external_id\": 5, \"attributes\": [], \"locale\": true, \"bogus\": 1, \"email\": \"x@y.io\"}");
	expect_problem(r, 422, "/external_id");
	expect_problem(r, 422, "/attributes");
	expect_problem(r, 422, "/locale");
	expect_problem(r, 422, "/bogus");
	resp_free(r);
	/* duplicate keys */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"a@b.co\", \"email\": \"c@d.co\"}");
	expect_problem(r, 400, "");
	resp_free(r);
	/* oversized: 2 MiB > the 1 MiB default */
	size_t big = 2u << 20;
	char *huge = hr_malloc(big + 64);
	memset(huge, ' ', big + 63);
	memcpy(huge, "{\"external_id\": \"x\"", 19);
	huge[big + 62] = '}';
	huge[big + 63] = '\0';
	r = call("PUT", "/v1/contacts", f.full, NULL, huge);
	expect_problem(r, 413, NULL);
	resp_free(r);
	hr_free(huge);
	/* wrong content type */
	r = call_at(0, "POST", "/v1/tenants", f.agency_key, NULL, NULL, 0);
	expect_problem(r, 415, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, CONTACTS), 0);
	fx_close(&f);
}
END_TEST

/* ---- auth ---- */

START_TEST(auth_missing_bad_revoked_keys_are_401)
{
	fx f;
	fx_open(&f);
	resp *r = call("GET", "/v1/contacts", NULL, NULL, NULL);
	expect_problem(r, 401, NULL);
	resp_free(r);
	r = call("GET", "/v1/contacts", "hk_nonsense", NULL, NULL);
	expect_problem(r, 401, NULL);
	resp_free(r);
	/* a valid-looking key with a wrong secret */
	char wrong[64];
	snprintf(wrong, sizeof wrong, "%s", f.full);
	wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'a' ? 'b' : 'a';
	r = call("GET", "/v1/contacts", wrong, NULL, NULL);
	expect_problem(r, 401, NULL);
	resp_free(r);
	/* revoked before first use: refused at once */
	char key_id[16];
	snprintf(key_id, sizeof key_id, "%.12s", f.read + 3);
	hr_err err = {0};
	ck_assert(hr_apikey_revoke(f.c, key_id, &err));
	r = call("GET", "/v1/contacts", f.read, NULL, NULL);
	expect_problem(r, 401, NULL);
	resp_free(r);
	/* revoked after use: refused within api_key_cache_ms (the suite's server: 5 s default) */
	r = call("GET", "/v1/contacts", f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	snprintf(key_id, sizeof key_id, "%.12s", f.full + 3);
	ck_assert(hr_apikey_revoke(f.c, key_id, &err));
	long long t0 = ms_now();
	long st = 200;
	while (st == 200 && ms_now() - t0 < 7000) {
		r = call("GET", "/v1/contacts", f.full, NULL, NULL);
		st = r->status;
		resp_free(r);
		struct timespec d = {0, 50000000};
		nanosleep(&d, NULL);
	}
	ck_assert_int_eq(st, 401);
	ck_assert_int_le(ms_now() - t0, 5000 + 1500);
	fx_close(&f);
}
END_TEST

START_TEST(scopes_read_send_full_agency)
{
	fx f;
	fx_open(&f);
	const char *body = "{\"email\": \"scope@example.com\"}";
	resp *r = call("PUT", "/v1/contacts", f.read, NULL, body);
	expect_problem(r, 403, NULL);
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.send, NULL, body);
	expect_problem(r, 403, NULL);
	resp_free(r);
	r = call("GET", "/v1/contacts", f.send, NULL, NULL);
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, CONTACTS), 0);
	r = call("GET", "/v1/contacts", f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	/* tenant keys cannot use the agency API */
	r = call("GET", "/v1/tenants", f.full, NULL, NULL);
	expect_problem(r, 403, NULL);
	resp_free(r);
	/* an agency key needs Herald-Tenant for the tenant API */
	r = call("GET", "/v1/contacts", f.agency_key, NULL, NULL);
	expect_problem(r, 400, NULL);
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.agency_key, f.t.slug, body);
	ck_assert_int_eq(r->status, 201);
	resp_free(r);
	/* a tenant key naming another tenant */
	r = call("GET", "/v1/contacts", f.full, "someone-else", NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, CONTACTS), 1);
	fx_close(&f);
}
END_TEST

START_TEST(agency_key_on_another_agencys_tenant_is_404)
{
	fx a, b;
	fx_open(&a);
	fx_open(&b);
	resp *r = call("GET", "/v1/contacts", a.agency_key, b.t.slug, NULL);
	expect_problem(r, 404, NULL);
	char *d1 = hr_strdup(r->body);
	resp_free(r);
	r = call("GET", "/v1/contacts", a.agency_key, "no-such-tenant", NULL);
	expect_problem(r, 404, NULL);
	ck_assert_str_eq(r->body, d1); /* indistinguishable from a missing tenant */
	resp_free(r);
	hr_free(d1);
	r = call("POST", "/v1/tenants/x/suspend", a.agency_key, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	char path[128];
	snprintf(path, sizeof path, "/v1/tenants/%s/suspend", b.t.slug);
	r = call("POST", path, a.agency_key, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/tenants/%s/keys", b.t.slug);
	long keys = count(&a, "SELECT count(*) FROM herald.api_keys");
	r = call("POST", path, a.agency_key, NULL, "{\"scope\": \"full\"}");
	expect_problem(r, 404, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&a, "SELECT count(*) FROM herald.api_keys"), keys);
	ck_assert_int_eq(count(&b, "SELECT count(*) FROM herald.tenants WHERE status = 'active' AND schema_name = '%s'"), 1);
	fx_close(&a);
	fx_close(&b);
}
END_TEST

START_TEST(rate_limit_answers_429_with_retry_after)
{
	fx f;
	fx_open(&f);
	srv s;
	srv_start(&s, the_dsn, "HERALD_API_KEY_RPS=2");
	long got429 = 0;
	char ra[16] = "";
	for (int i = 0; i < 6 && !got429; i++) {
		resp *r = call_at(s.port, "GET", "/v1/contacts", f.full, NULL, NULL, -1);
		if (r->status == 429) {
			expect_problem(r, 429, NULL);
			got429 = 1;
			snprintf(ra, sizeof ra, "%s", r->retry_after);
		}
		resp_free(r);
	}
	ck_assert_int_eq(got429, 1);
	ck_assert_int_ge(atoi(ra), 1);
	ck_assert_int_eq(srv_stop(&s), 0);
	fx_close(&f);
}
END_TEST

/* ---- agency API ---- */

START_TEST(agency_creates_lists_suspends_tenants_and_keys)
{
	fx f;
	fx_open(&f);
	char slug[48], body[256], path[160];
	th_slug("nt", slug, sizeof slug);
	snprintf(body, sizeof body, "{\"slug\": \"%s\", \"name\": \"New\", \"settings\": {\"default_country_code\": \"44\"}}", slug);
	resp *r = call("POST", "/v1/tenants", f.agency_key, NULL, body);
	ck_assert_msg(r->status == 201, "%s", r->body);
	ck_assert_str_eq(jstr(r, "slug"), slug);
	resp_free(r);
	/* duplicate */
	r = call("POST", "/v1/tenants", f.agency_key, NULL, body);
	expect_problem(r, 409, NULL);
	resp_free(r);
	/* bad slug, SQL metacharacters, bad settings: 422 with pointers, nothing created */
	long before = count(&f, "SELECT count(*) FROM herald.tenants");
	static const char *const bad[] = {
		"{\"slug\": \"x'; DROP TABLE herald.tenants; --\"}", "{\"slug\": \"../etc\"}", "{\"slug\": \"A\"}",
		"{\"slug\": 12}", "{}", "{\"slug\": \"okslug\", \"settings\": {\"default_country_code\": \"0x\"}}",
		"{\"slug\": \"okslug\", \"settings\": {\"transactional_policy\": \"always\"}}",
		"{\"slug\": \"okslug\", \"extra\": 1}"};
	static const char *const ptr[] = {"/slug", "/slug", "/slug", "/slug", "/slug",
					  "/settings/default_country_code", "/settings/transactional_policy", "/extra"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("POST", "/v1/tenants", f.agency_key, NULL, bad[i]);
		expect_problem(r, 422, ptr[i]);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM herald.tenants"), before);
	r = call("GET", "/v1/tenants", f.agency_key, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 2);
	resp_free(r);
	/* a key for the new tenant, shown once, works */
	snprintf(path, sizeof path, "/v1/tenants/%s/keys", slug);
	r = call("POST", path, f.agency_key, NULL, "{\"scope\": \"all\"}");
	expect_problem(r, 422, "/scope");
	resp_free(r);
	r = call("POST", path, f.agency_key, NULL, "{\"scope\": \"full\", \"name\": \"backend\"}");
	ck_assert_int_eq(r->status, 201);
	char key[64];
	snprintf(key, sizeof key, "%s", jstr(r, "key"));
	resp_free(r);
	r = call("PUT", "/v1/contacts", key, NULL, "{\"phone\": \"020 7946 0018\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	ck_assert_str_eq(jstr(r, "phone"), "+442079460018"); /* the tenant's default country code */
	resp_free(r);
	/* suspend: the key stops (cache is 5 s: use a fresh key whose first use is after the suspension) */
	snprintf(path, sizeof path, "/v1/tenants/%s/suspend", slug);
	r = call("POST", path, f.agency_key, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(jstr(r, "status"), "suspended");
	resp_free(r);
	r = call("GET", "/v1/contacts", f.agency_key, slug, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/tenants/%s/resume", slug);
	r = call("POST", path, f.agency_key, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	r = call("GET", "/v1/contacts", f.agency_key, slug, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(agency_puts_provider_accounts)
{
	fx f;
	fx_open(&f);
	char path[160];
	snprintf(path, sizeof path, "/v1/tenants/%s/providers/sms-main", f.t.slug);
	resp *r = call("PUT", path, f.agency_key, NULL,
		       "{\"channel\": \"sms\", \"transport\": \"http\", \"config\": {\"url\": \"http://x\"}, "
		       "\"secret\": {\"token\": \"s3cret\"}, \"rate_per_s\": 50}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_ptr_null(strstr(r->body, "s3cret"));
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM herald.provider_accounts WHERE name = 'sms-main'"), 1);
	r = call("PUT", path, f.agency_key, NULL, "{\"channel\": \"fax\", \"transport\": \"http\", \"rate_per_s\": 0}");
	expect_problem(r, 422, "/channel");
	expect_problem(r, 422, "/rate_per_s");
	resp_free(r);
	snprintf(path, sizeof path, "/v1/tenants/%s/providers/Bad'Name", f.t.slug);
	r = call("PUT", path, f.agency_key, NULL, "{\"channel\": \"sms\", \"transport\": \"http\"}");
	expect_problem(r, 422, "name");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM herald.provider_accounts p JOIN herald.tenants t ON "
				   "t.id = p.tenant_id WHERE t.schema_name = '%s'"), 1);
	fx_close(&f);
}
END_TEST

/* ---- contacts ---- */

START_TEST(contacts_upsert_normalise_get_list)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/contacts", f.full, NULL,
		       "{\"external_id\": \"u-1\", \"email\": \"  Ann.Lee@Example.COM \", \"phone\": \"+1 (415) 555-0100\", "
		       "\"attributes\": {\"city\": \"SF\"}, \"time_zone\": \"America/Los_Angeles\", \"locale\": \"en-US\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long id = jint(r, "id");
	ck_assert_str_eq(jstr(r, "email"), "ann.lee@example.com");
	ck_assert_str_eq(jstr(r, "phone"), "+14155550100");
	ck_assert_ptr_nonnull(strstr(r->location, "/v1/contacts/"));
	resp_free(r);
	/* same person by email, attributes merged */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"ann.lee@example.com\", \"attributes\": {\"plan\": \"pro\"}}");
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(jint(r, "id"), id);
	json_t *a = json_object_get(r->json, "attributes");
	ck_assert_str_eq(json_string_value(json_object_get(a, "city")), "SF");
	ck_assert_str_eq(json_string_value(json_object_get(a, "plan")), "pro");
	resp_free(r);
	char path[64];
	snprintf(path, sizeof path, "/v1/contacts/%lld", id);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(jstr(r, "time_zone"), "America/Los_Angeles");
	resp_free(r);
	/* list with cursor */
	for (int i = 0; i < 4; i++) {
		char b[96];
		snprintf(b, sizeof b, "{\"external_id\": \"p-%d\"}", i);
		r = call("PUT", "/v1/contacts", f.full, NULL, b);
		ck_assert_int_eq(r->status, 201);
		resp_free(r);
	}
	int seen = 0;
	char next[128] = "";
	for (int page = 0; page < 5; page++) {
		char p[256];
		snprintf(p, sizeof p, "/v1/contacts?limit=2%s%s", next[0] ? "&cursor=" : "", next);
		r = call("GET", p, f.read, NULL, NULL);
		ck_assert_msg(r->status == 200, "%s", r->body);
		seen += (int)json_array_size(json_object_get(r->json, "data"));
		json_t *n = json_object_get(r->json, "next_cursor");
		snprintf(next, sizeof next, "%s", json_is_string(n) ? json_string_value(n) : "");
		resp_free(r);
		if (!next[0])
			break;
	}
	ck_assert_int_eq(seen, 5);
	r = call("GET", "/v1/contacts?cursor=abc'--", f.read, NULL, NULL);
	expect_problem(r, 400, "cursor");
	resp_free(r);
	r = call("GET", "/v1/contacts?limit=100000", f.read, NULL, NULL);
	expect_problem(r, 400, "limit");
	resp_free(r);
	r = call("GET", "/v1/contacts/987654", f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(contacts_invalid_fields_are_422_and_write_nothing)
{
	fx f;
	fx_open(&f);
	static const struct {
		const char *body, *pointer;
	} cases[] = {
		{"{\"phone\": \"12345\"}", "/phone"},            /* national, tenant has no country code */
		{"{\"phone\": \"+0123456789\"}", "/phone"},
		{"{\"phone\": \"+1 415 555 01OO\"}", "/phone"},
		{"{\"phone\": \"+1234567890123456\"}", "/phone"},
		{"{\"email\": \"no-at-sign\"}", "/email"},
		{"{\"email\": \"a@b\"}", "/email"},
		{"{\"email\": \"a..b@example.com\"}", "/email"},
		{"{\"email\": \"x'; DROP TABLE contacts; --@example.com\"}", "/email"},
		{"{\"email\": \"a@exa_mple.com\"}", "/email"},
		{"{\"email\": \"ok@example.com\", \"time_zone\": \"Mars/Olympus\"}", "/time_zone"},
		{"{\"email\": \"ok@example.com\", \"time_zone\": \"../../etc/passwd\"}", "/time_zone"},
		{"{\"email\": \"ok@example.com\", \"time_zone\": \"Europe\"}", "/time_zone"},
		{"{\"email\": \"ok@example.com\", \"locale\": \"english please\"}", "/locale"},
		{"{\"email\": \"ok@example.com\", \"external_id\": \"\"}", "/external_id"},
		{"{\"email\": \"ok@example.com\", \"external_id\": \"a\\u0001b\"}", "/external_id"},
		{"{\"attributes\": {\"a\": 1}}", ""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		resp *r = call("PUT", "/v1/contacts", f.full, NULL, cases[i].body);
		ck_assert_msg(r->status == 422, "%s: got %ld %s", cases[i].body, r->status, r->body);
		expect_problem(r, 422, cases[i].pointer);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, CONTACTS), 0);
	/* metacharacters in values that are valid are stored verbatim */
	resp *r = call("PUT", "/v1/contacts", f.full, NULL,
		       "{\"external_id\": \"x'); DROP TABLE contacts; --\\\"../%00\", \"attributes\": {\"q\": \"' OR 1=1 --\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	ck_assert_str_eq(jstr(r, "external_id"), "x'); DROP TABLE contacts; --\"../%00");
	resp_free(r);
	ck_assert_int_eq(count(&f, CONTACTS), 1);
	fx_close(&f);
}
END_TEST

START_TEST(contacts_with_same_phone_are_merged_into_the_oldest)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"crm-1\", \"attributes\": {\"a\": 1}}");
	long long a = jint(r, "id");
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.full, NULL,
		 "{\"phone\": \"+44 20 7946 0018\", \"email\": \"b@example.com\", \"attributes\": {\"a\": 2, \"b\": 2}}");
	long long b = jint(r, "id");
	resp_free(r);
	char body[256];
	snprintf(body, sizeof body, "{\"consent\": 1}");
	char path[96];
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", b);
	r = call("POST", path, f.full, NULL,
		 "{\"channel\": \"sms\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"pos\"}");
	ck_assert_int_eq(r->status, 201);
	resp_free(r);
	/* the same phone written differently, with crm-1's external id: one person */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"crm-1\", \"phone\": \"0044 (20) 7946-0018\"}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r, "id"), a);
	ck_assert_str_eq(jstr(r, "phone"), "+442079460018");
	ck_assert_str_eq(jstr(r, "email"), "b@example.com");
	json_t *m = json_object_get(r->json, "merged");
	ck_assert_int_eq(json_array_size(m), 1);
	ck_assert_int_eq(json_integer_value(json_array_get(m, 0)), b);
	json_t *attrs = json_object_get(r->json, "attributes");
	ck_assert_int_eq(json_integer_value(json_object_get(attrs, "a")), 1); /* the survivor's value wins */
	ck_assert_int_eq(json_integer_value(json_object_get(attrs, "b")), 2); /* gaps filled */
	resp_free(r);
	snprintf(path, sizeof path, "/v1/contacts/%lld", b);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(r->json, "merged_into")), a);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", a);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "current")), 1);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "history")), 1);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts WHERE merged_into IS NULL"), 1);
	fx_close(&f);
}
END_TEST

START_TEST(consents_record_history_and_validate)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"c@example.com\"}");
	long long id = jint(r, "id");
	resp_free(r);
	char path[96];
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", id);
	r = call("POST", path, f.full, NULL,
		 "{\"channel\": \"email\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"form\", "
		 "\"actor\": \"advisor-7\", \"detail\": {\"ip\": \"10.0.0.1\"}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	r = call("POST", path, f.full, NULL,
		 "{\"channel\": \"email\", \"purpose\": \"marketing\", \"granted\": false, \"source\": \"unsubscribe link\"}");
	ck_assert_int_eq(r->status, 201);
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	json_t *cur = json_object_get(r->json, "current");
	ck_assert_int_eq(json_array_size(cur), 1);
	ck_assert(json_is_false(json_object_get(json_array_get(cur, 0), "granted")));
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "history")), 2);
	resp_free(r);
	long before = count(&f, "SELECT count(*) FROM %s.consent_log");
	static const struct {
		const char *body, *pointer;
	} bad[] = {
		{"{\"channel\": \"fax\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"x\"}", "/channel"},
		{"{\"channel\": \"sms\", \"purpose\": \"Mark'eting\", \"granted\": true, \"source\": \"x\"}", "/purpose"},
		{"{\"channel\": \"sms\", \"purpose\": \"marketing\", \"granted\": \"yes\", \"source\": \"x\"}", "/granted"},
		{"{\"channel\": \"sms\", \"purpose\": \"marketing\", \"granted\": true}", "/source"},
		{"{\"channel\": \"sms\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"x\", \"detail\": 3}", "/detail"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("POST", path, f.full, NULL, bad[i].body);
		expect_problem(r, 422, bad[i].pointer);
		resp_free(r);
	}
	r = call("POST", "/v1/contacts/424242/consents", f.full, NULL,
		 "{\"channel\": \"sms\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"x\"}");
	expect_problem(r, 404, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.consent_log"), before);
	fx_close(&f);
}
END_TEST

START_TEST(another_tenants_ids_are_404)
{
	fx a, b;
	fx_open(&a);
	fx_open(&b);
	resp *r = call("PUT", "/v1/contacts", b.full, NULL, "{\"email\": \"secret@b.com\"}");
	long long id = jint(r, "id");
	resp_free(r);
	/* a has no contact with that id (ids are per schema: make sure a has none at all) */
	char path[96];
	snprintf(path, sizeof path, "/v1/contacts/%lld", id);
	r = call("GET", path, a.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	ck_assert_ptr_null(strstr(r->body, "secret"));
	resp_free(r);
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", id);
	r = call("POST", path, a.full, NULL, "{\"channel\": \"sms\", \"purpose\": \"m\", \"granted\": true, \"source\": \"x\"}");
	expect_problem(r, 404, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&b, "SELECT count(*) FROM %s.consent_log"), 0);
	fx_close(&a);
	fx_close(&b);
}
END_TEST


/* ---- events ---- */

START_TEST(events_single_and_batch_validated_whole)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"ev-1\", \"email\": \"ev@example.com\"}");
	long long id = jint(r, "id");
	resp_free(r);
	r = call("POST", "/v1/events", f.send, NULL,
		 "{\"name\": \"order_placed\", \"contact\": {\"external_id\": \"ev-1\"}, \"properties\": {\"total\": 12.5}, "
		 "\"occurred_at\": \"2026-01-02T03:04:05.123+02:00\"}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	char body[512];
	snprintf(body, sizeof body,
		 "{\"events\": [{\"name\": \"a\", \"contact\": {\"id\": %lld}}, {\"name\": \"b\", \"contact\": {\"email\": \"EV@example.com\"}}, "
		 "{\"name\": \"anon\"}]}", id);
	r = call("POST", "/v1/events", f.send, NULL, body);
	ck_assert_msg(r->status == 202, "%s", r->body);
	ck_assert_int_eq(jint(r, "accepted"), 3);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events"), 4);
	char q[160];
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.events WHERE contact_id = %lld", id);
	ck_assert_int_eq(count(&f, q), 3);
	/* one bad item among good ones: 422 naming each bad item, nothing written */
	r = call("POST", "/v1/events", f.send, NULL,
		 "{\"events\": [{\"name\": \"ok\"}, {\"name\": 5}, {\"name\": \"x\", \"occurred_at\": \"yesterday\"}, "
		 "{\"name\": \"y\", \"contact\": {\"phone\": \"abc\"}}, {\"name\": \"z\", \"contact\": {\"external_id\": \"nobody\"}}, "
		 "{\"name\": \"w\", \"properties\": []}, 7, {\"name\": \"v\", \"extra\": true}]}");
	expect_problem(r, 422, "/events/1/name");
	expect_problem(r, 422, "/events/2/occurred_at");
	expect_problem(r, 422, "/events/3/contact/phone");
	expect_problem(r, 422, "/events/5/properties");
	expect_problem(r, 422, "/events/6");
	expect_problem(r, 422, "/events/7/extra");
	resp_free(r);
	r = call("POST", "/v1/events", f.send, NULL,
		 "{\"events\": [{\"name\": \"ok\"}, {\"name\": \"z\", \"contact\": {\"external_id\": \"nobody'--\"}}]}");
	expect_problem(r, 422, "/events/1/contact");
	resp_free(r);
	r = call("POST", "/v1/events", f.send, NULL, "{\"events\": []}");
	expect_problem(r, 422, "/events");
	resp_free(r);
	r = call("POST", "/v1/events", f.read, NULL, "{\"name\": \"x\"}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events"), 4);
	fx_close(&f);
}
END_TEST

/* One event of events_large_batch_written_exactly: names with quotes, backslashes and
 * unicode; properties with tabs, newlines, CR, backslashes, COPY's own markers (\N, \.),
 * numbers; some with a time (with an offset, a fraction), some without; every
 * third for the contact. */
static void ev_item(char *o, size_t cap, int i, long long contact)
{
	char at[64] = "", who[64] = "";
	if (i % 2)
		snprintf(at, sizeof at, ", \"occurred_at\": \"2026-0%d-1%dT0%d:04:05.%03d+02:00\"", 1 + i % 9, i % 10,
			 i % 10, i);
	if (i % 3 == 0)
		snprintf(who, sizeof who, ", \"contact\": {\"id\": %lld}", contact);
	snprintf(o, cap,
		 "{\"name\": \"ev \\\"%d\\\" \\\\ caf\\u00e9 \\u2603 \\\\N\"%s%s, \"properties\": {\"s\": "
		 "\"tab\\there\\nline\\r\\\\back\\\\.\\\\N \\\"q\\\" \\u00fc\\ud83d\\ude00\", \"n\": %d, \"f\": 12.50, "
		 "\"big\": 9007199254740993, \"a\": [null, true, {\"k\\tk\": \"\\\\\"}]}}",
		 i, at, who, i);
}


/* Decimal numbers are stored and shown as the client sent them: 19.99, not jansson's
 * 19.989999999999998 (common/jsonout.h); through an event alone, a batch by COPY, a
 * contact's attributes and the answers that show them, and a message's data. */
START_TEST(numbers_are_stored_and_shown_as_sent)
{
	fx f;
	fx_open(&f);
	static const char props[] = "{\"revenue\": 19.99, \"tax\": 0.1, \"x\": 0.30000000000000004, \"one\": 1.0, "
				    "\"tiny\": 1e-7, \"n\": 3}";
	char one[256], *batch = hr_malloc(40 * 256 + 32);
	snprintf(one, sizeof one, "{\"name\": \"order\", \"properties\": %s}", props);
	resp *r = call("POST", "/v1/events", f.send, NULL, one);
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	size_t len = (size_t)sprintf(batch, "{\"events\": [");
	for (int i = 0; i < 40; i++) /* 40: the COPY path */
		len += (size_t)sprintf(batch + len, "%s%s", i ? ", " : "", one);
	sprintf(batch + len, "]}");
	r = call("POST", "/v1/events", f.send, NULL, batch);
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	hr_free(batch);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE properties->>'revenue' = '19.99' "
				   "AND properties->>'tax' = '0.1' AND properties->>'x' = '0.30000000000000004' "
				   "AND properties->>'one' = '1.0' AND (properties->>'tiny')::numeric = 0.0000001 "
				   "AND properties->>'n' = '3'"),
			 41);
	ck_assert_int_eq(count(&f, "SELECT sum((properties->>'revenue')::numeric) * 100 FROM %s.events"), 41 * 1999);
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"num-1\", \"email\": \"n@example.com\", \"attributes\": {\"ltv\": 0.1, \"score\": 2.5e-5}}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	ck_assert_msg(strstr(r->body, "\"ltv\":0.1,") && strstr(r->body, "\"score\":2.5e-05"), "%s", r->body);
	char path[64];
	snprintf(path, sizeof path, "/v1/contacts/%lld", jint(r, "id"));
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts WHERE attributes->>'ltv' = '0.1'"), 1);
	/* a message's data, as the outbox keeps it for the worker: to an address (one statement)
	 * and to a contact (the general way, common/outbox.c) */
	fx_provider(&f, "mail", "email");
	static const char *const sends[] = {"\"to\": \"n@example.com\"", "\"contact\": {\"external_id\": \"num-1\"}"};
	for (int i = 0; i < 2; i++) {
		char send[512];
		snprintf(send, sizeof send,
			 "{\"channel\": \"email\", \"provider\": \"mail\", %s, "
			 "\"content\": {\"subject\": \"Order\", \"text\": \"{{ total }}\"}, \"data\": {\"total\": 19.99}}",
			 sends[i]);
		resp *m = call("POST", "/v1/messages", f.send, NULL, send);
		ck_assert_msg(m->status == 202, "%s", m->body);
		resp_free(m);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE data->0->>'total' = '19.99'"), 2);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_msg(strstr(r->body, "\"ltv\":0.1,"), "%s", r->body);
	resp_free(r);
	fx_close(&f);
}
END_TEST

/*
 * A batch of anonymous events is read without a JSON tree (api/eventscan.c), an event alone
 * by jansson: the jsonb stored must be the same, to the text PostgreSQL shows -- numbers'
 * digits, escapes, nesting, whitespace.  test_eventscan.c holds the reader against jansson;
 * this holds what reaches the database.
 */
START_TEST(events_scanned_as_parsed)
{
	static const char *const props[] = {
		"{\"k\":1,\"revenue\":19.99,\"r\":1.0,\"e\":1E2,\"t\":1e-7,\"neg\":-0.5,\"big\":123456789012345678}",
		"{\"k\":2,\"s\":\"caf\\u00e9 \\ud83d\\ude00 \\n\\t\\\"\\\\\\/ \\u007f\",\"raw\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}",
		"{\"k\":3,\"nested\":{\"a\":[1,{\"b\":[true,false,null]}],\"c\":{}},\"arr\":[]}",
		" { \"k\" : 4 , \"ws\" : [ 1 , 2.25 ] } ",
		"{\"k\":5,\"u\":2.50,\"z\":0.0,\"under\":1e-400}",
	};
	enum { KINDS = sizeof props / sizeof *props, REPEAT = 8 }; /* 40 in the batch: the COPY path */
	fx f;
	fx_open(&f);
	hr_sbuf batch = {0};
	hr_sbuf_add(&batch, "{\"events\": [");
	for (int i = 0; i < KINDS; i++) {
		char one[512];
		snprintf(one, sizeof one, "{\"name\": \"single\", \"properties\": %s}", props[i]);
		resp *r = call("POST", "/v1/events", f.send, NULL, one);
		ck_assert_msg(r->status == 202, "%s: %s", one, r->body);
		resp_free(r);
		for (int j = 0; j < REPEAT; j++)
			hr_sbuf_addf(&batch, "%s{\"name\":\"batch\",\"properties\":%s}", i || j ? "," : "", props[i]);
	}
	hr_sbuf_add(&batch, "]}");
	resp *r = call("POST", "/v1/events", f.send, NULL, batch.p);
	ck_assert_msg(r->status == 202, "%s", r->body);
	ck_assert_int_eq(jint(r, "accepted"), KINDS * REPEAT);
	resp_free(r);
	hr_free(batch.p);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events s JOIN %s.events b "
				   "ON s.properties->'k' = b.properties->'k' AND s.properties::text = b.properties::text "
				   "WHERE s.name = 'single' AND b.name = 'batch'"),
			 KINDS * REPEAT);
	/* and the values themselves, as sent */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE properties->>'revenue' = '19.99' "
				   "AND properties->>'e' = '100.0'"),
			 1 + REPEAT);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE properties->>'u' = '2.5' "
				   "AND properties->>'under' = '0.0'"),
			 1 + REPEAT);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE properties->>'s' = "
				   "E'caf\\u00e9 \\U0001F600 \\n\\t\"\\\\/ \\u007f' AND properties->>'raw' = "
				   "E'caf\\u00e9 \\U0001F600'"),
			 1 + REPEAT);
	fx_close(&f);
}
END_TEST

START_TEST(events_large_batch_written_exactly)
{
	/* A batch large enough for the COPY path writes exactly what single events (the INSERT
	 * path) write; a bad event in such a batch still writes nothing. */
	enum { N = 150 };
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"big-1\"}");
	long long id = jint(r, "id");
	resp_free(r);
	size_t cap = N * 512 + 64, len = 0;
	char *body = hr_malloc(cap), one[512];
	len += (size_t)snprintf(body, cap, "{\"events\": [");
	for (int i = 0; i < N; i++) {
		ev_item(one, sizeof one, i, id);
		len += (size_t)snprintf(body + len, cap - len, "%s%s", i ? ", " : "", one);
	}
	snprintf(body + len, cap - len, "]}");
	r = call("POST", "/v1/events", f.send, NULL, body);
	ck_assert_msg(r->status == 202, "%s", r->body);
	ck_assert_int_eq(jint(r, "accepted"), N);
	resp_free(r);
	/* two keys, so that neither passes api_key_rps's burst (100) and gets a 429 */
	for (int i = 0; i < N; i++) {
		ev_item(one, sizeof one, i, id);
		r = call("POST", "/v1/events", i % 2 ? f.full : f.send, NULL, one);
		ck_assert_msg(r->status == 202, "%s", r->body);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events"), 2 * N);
	/* row k of the batch against row k of the singles, column by column */
	char q[1024];
	snprintf(q, sizeof q,
		 "WITH e AS (SELECT row_number() OVER (ORDER BY id) - 1 AS k, * FROM %%s.events) "
		 "SELECT count(*) FROM e a JOIN e b ON b.k = a.k + %d WHERE a.name = b.name "
		 "AND a.properties::text = b.properties::text AND a.contact_id IS NOT DISTINCT FROM b.contact_id "
		 "AND (mod(a.k, 2) = 0 OR a.occurred_at = b.occurred_at)",
		 N);
	ck_assert_int_eq(count(&f, q), N);
	/* and against what was sent */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'ev \"7\" \\ café ☃ \\N' "
				   "AND properties->>'s' = E'tab\\there\\nline\\r\\\\back\\\\.\\\\N \"q\" ü😀' "
				   "AND properties->'n' = '7' AND properties->'f' = '12.5' "
				   "AND properties->>'big' = '9007199254740993' "
				   "AND properties->'a' = '[null, true, {\"k\\tk\": \"\\\\\"}]' "
				   "AND occurred_at = '2026-08-17T05:04:05.007+00:00'"),
			 2);
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.events WHERE contact_id = %lld", id);
	ck_assert_int_eq(count(&f, q), 2 * ((N + 2) / 3));
	/* no occurred_at: the herald clock of the transaction */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events "
				   "WHERE occurred_at = received_at + (SELECT skew FROM herald_clock.state)"),
			 N);
	/* a bad event late in a large batch (February 30th): its pointer, nothing written */
	char *bad = strstr(body, "2026-02-19T09:04:05.109");
	ck_assert_ptr_nonnull(bad);
	memcpy(bad + 8, "30", 2);
	r = call("POST", "/v1/events", f.send, NULL, body);
	expect_problem(r, 422, "/events/109/occurred_at");
	resp_free(r);
	memcpy(bad + 8, "19", 2);
	/* an unknown contact after the good ones: found by the lookup, nothing written */
	snprintf(body + len, cap - len, ", {\"name\": \"last\", \"contact\": {\"external_id\": \"nobody\"}}]}");
	r = call("POST", "/v1/events", f.send, NULL, body);
	expect_problem(r, 422, "/events/150/contact");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events"), 2 * N);
	hr_free(body);
	fx_close(&f);
}
END_TEST

/* ---- messages ---- */

static void sql(fx *f, const char *fmt)
{
	char q[1024];
	snprintf(q, sizeof q, fmt, f->t.schema, f->t.schema, f->t.schema);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", q,
		      PQerrorMessage(f->c));
	PQclear(r);
}

/*
 * Before herald-api says "listening", every pooled connection has run the
 * hot path once (api.h, api_warm_prepared) acting as an existing tenant and
 * rolled it back: a cold PostgreSQL backend reads its catalogs on first use,
 * which stalled the first sends after a start.  Seen from PostgreSQL: each
 * pooled connection of this server (application_name names it) last ran the
 * warm-up's ROLLBACK, none is unused, and the warm-up wrote nothing.
 */
START_TEST(pool_is_warmed_before_listening)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "mail", "email");
	/* the warm-up acts as the oldest active tenant: an earlier test's, or this one's */
	PGresult *t = PQexec(f.c, "SELECT schema_name FROM herald.tenants WHERE status = 'active' ORDER BY id LIMIT 1");
	ck_assert_int_eq(PQntuples(t), 1);
	bool own = strcmp(PQgetvalue(t, 0, 0), f.t.schema) == 0;
	char *rows = hr_sprintf("SELECT count(*) FROM %s.outbox", PQgetvalue(t, 0, 0));
	PQclear(t);
	long before = count(&f, rows);
	char *dsn = hr_sprintf("%s application_name=herald-warm-test", the_dsn);
	srv s;
	srv_start(&s, dsn, "HERALD_API_THREADS=3");
	/* no request yet: pg_stat_activity shows each connection's last statement, '' if none */
	long warmed = count(&f, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'herald-warm-test' "
				"AND query = 'ROLLBACK'");
	long unused = count(&f, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'herald-warm-test' "
				"AND query = ''");
	ck_assert_msg(warmed == 3 && unused == 0, "got %ld warmed and %ld unused connections, want 3 and 0", warmed,
		      unused);
	ck_assert_int_eq(count(&f, rows), before);
	/* warmed, it serves: the send statement prepared by the warm-up runs by name */
	const char *body = "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"warm@x.example\", "
			   "\"content\": {\"subject\": \"Hi\", \"text\": \"t\"}}";
	for (int i = 0; i < 4; i++) {
		resp *r = call_at(s.port, "POST", "/v1/messages", f.send, NULL, body, -1);
		ck_assert_msg(r->status == 202, "%ld %s", r->status, r->body);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 4 + (own ? before : 0));
	ck_assert_int_eq(srv_stop(&s), 0);
	hr_free(dsn);
	hr_free(rows);
	fx_close(&f);
}
END_TEST

/* api_threads 0 (the default): 4 pooled connections per CPU core, at least 4, at most 64. */
START_TEST(api_threads_default_is_four_per_core)
{
	fx f;
	fx_open(&f);
	char *dsn = hr_sprintf("%s application_name=herald-threads-test", the_dsn);
	srv s;
	srv_start(&s, dsn, "HERALD_API_THREADS=0");
	long cores = sysconf(_SC_NPROCESSORS_ONLN), want = cores * 4 < 4 ? 4 : cores * 4 > 64 ? 64 : cores * 4;
	/* the pool's connections end their warm-up with ROLLBACK; the notifier's and webhooks' do not */
	long pooled = count(&f, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
				"'herald-threads-test' AND query = 'ROLLBACK'");
	ck_assert_msg(pooled == want, "%ld pooled connections on %ld cores, want %ld", pooled, cores, want);
	ck_assert_int_eq(srv_stop(&s), 0);
	hr_free(dsn);
	fx_close(&f);
}
END_TEST

START_TEST(messages_enqueue_get_status_and_idempotency)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "mail", "email");
	const char *body = "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"Dev@Example.com\", "
			   "\"content\": {\"subject\": \"Hi\", \"text\": \"code {{ code }}\"}, \"data\": {\"code\": \"1234\"}}";
	resp *r = call("POST", "/v1/messages", f.send, NULL, body);
	ck_assert_msg(r->status == 202, "%s", r->body);
	long long id = jint(r, "id");
	resp_free(r);
	char path[64];
	snprintf(path, sizeof path, "/v1/messages/%lld", id);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_str_eq(jstr(r, "status"), "queued");
	ck_assert_str_eq(jstr(r, "to"), "dev@example.com");
	resp_free(r);
	char q[256];
	snprintf(q, sizeof q, "INSERT INTO %%s.results (message_id, status, attempts, provider_id) VALUES (%lld, 'sent', 1, 'p-1')", id);
	sql(&f, q);
	r = call("GET", path, f.send, NULL, NULL);
	ck_assert_str_eq(jstr(r, "status"), "sent");
	ck_assert_str_eq(jstr(r, "provider_id"), "p-1");
	ck_assert_int_eq(jint(r, "attempts"), 1);
	resp_free(r);
	/* by contact reference, with a template */
	sql(&f, "INSERT INTO %s.templates (id, name, channel) VALUES (7, 'welcome', 'email'); "
		"INSERT INTO %s.template_versions (template_id, version, content) VALUES (7, 1, '{}')");
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"m-1\", \"email\": \"m1@example.com\"}");
	resp_free(r);
	r = call("POST", "/v1/messages", f.send, NULL,
		 "{\"channel\": \"email\", \"provider\": \"mail\", \"contact\": {\"external_id\": \"m-1\"}, "
		 "\"template\": {\"id\": 7, \"version\": 1}}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE addresses[1] = 'm1@example.com' "
				   "AND template_id = 7 AND contact_ids[1] IS NOT NULL"), 1);
	fx_close(&f);
}
END_TEST

START_TEST(messages_idempotency_replay_and_conflict)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "sms", "sms");
	const char *body = "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+1 415 555 0101\", "
			   "\"content\": {\"text\": \"hi\"}}";
	extra_header = "Idempotency-Key: order-42";
	resp *a = call("POST", "/v1/messages", f.send, NULL, body);
	ck_assert_msg(a->status == 202, "%s", a->body);
	/* the same request with keys in another order is the same request */
	resp *b = call("POST", "/v1/messages", f.send, NULL,
		       "{\"to\": \"+1 415 555 0101\", \"provider\": \"sms\", \"channel\": \"sms\", \"content\": {\"text\": \"hi\"}}");
	ck_assert_msg(b->status == 202, "%s", b->body);
	ck_assert_int_eq(jint(a, "id"), jint(b, "id"));
	resp *c = call("POST", "/v1/messages", f.send, NULL,
		       "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+1 415 555 0102\", \"content\": {\"text\": \"hi\"}}");
	expect_problem(c, 409, NULL);
	extra_header = "Idempotency-Key: bad key with spaces";
	resp *d = call("POST", "/v1/messages", f.send, NULL, body);
	expect_problem(d, 422, "Idempotency-Key");
	extra_header = NULL;
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 1);
	resp_free(a);
	resp_free(b);
	resp_free(c);
	resp_free(d);
	fx_close(&f);
}
END_TEST

START_TEST(messages_blocked_by_suppression_and_consent)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "mail", "email");
	sql(&f, "INSERT INTO %s.suppressions (channel, address, reason) VALUES ('email', 'gone@example.com', 'hard_bounce')");
	resp *r = call("POST", "/v1/messages", f.send, NULL,
		       "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"GONE@example.com\", \"content\": {\"text\": \"x\"}}");
	expect_problem(r, 422, "/to");
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "suppressed"));
	resp_free(r);
	/* bulk needs consent */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"fan@example.com\"}");
	long long id = jint(r, "id");
	resp_free(r);
	const char *bulk = "{\"channel\": \"email\", \"provider\": \"mail\", \"lane\": \"bulk\", "
			   "\"contact\": {\"email\": \"fan@example.com\"}, \"content\": {\"text\": \"sale\"}}";
	r = call("POST", "/v1/messages", f.send, NULL, bulk);
	expect_problem(r, 422, "/contact");
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "consent"));
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 0);
	char path[96];
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", id);
	r = call("POST", path, f.full, NULL, "{\"channel\": \"email\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"form\"}");
	resp_free(r);
	r = call("POST", "/v1/messages", f.send, NULL, bulk);
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE lane = 'bulk'"), 1);
	fx_close(&f);
}
END_TEST

/*
 * A send to an address (`to`) is one statement that looks everything up and
 * inserts only when nothing refuses it (messages.c, send_direct): each of its
 * refusals, in order, and what an accepted send wrote.
 */
START_TEST(messages_to_address_checks_in_one_statement)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "mail", "email");
	const char *fan = "{\"channel\": \"email\", \"provider\": \"mail\", \"lane\": \"bulk\", "
			  "\"to\": \"Fan@Example.com\", \"content\": {\"text\": \"sale\"}, \"data\": {\"n\": 1}}";
	/* bulk to an address that is no contact: no consent */
	resp *r = call("POST", "/v1/messages", f.send, NULL, fan);
	expect_problem(r, 422, "/to");
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "not a known contact"));
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"fan@example.com\"}");
	long long id = jint(r, "id");
	resp_free(r);
	/* a contact without consent, then with it withdrawn */
	r = call("POST", "/v1/messages", f.send, NULL, fan);
	expect_problem(r, 422, "/to");
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "no consent for email / marketing"));
	ck_assert_ptr_null(strstr(jstr(r, "detail"), "withdrawn"));
	resp_free(r);
	char path[96];
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", id);
	r = call("POST", path, f.full, NULL, "{\"channel\": \"email\", \"purpose\": \"marketing\", \"granted\": false, \"source\": \"form\"}");
	resp_free(r);
	r = call("POST", "/v1/messages", f.send, NULL, fan);
	expect_problem(r, 422, "/to");
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "(withdrawn)"));
	resp_free(r);
	/* a template of another channel is refused before the consent */
	sql(&f, "INSERT INTO %s.templates (id, name, channel) VALUES (8, 'sms-only', 'sms'); "
		"INSERT INTO %s.template_versions (template_id, version, content) VALUES (8, 1, '{}')");
	r = call("POST", "/v1/messages", f.send, NULL,
		 "{\"channel\": \"email\", \"provider\": \"mail\", \"lane\": \"bulk\", \"to\": \"fan@example.com\", "
		 "\"template\": {\"id\": 8, \"version\": 1}}");
	expect_problem(r, 422, "/template");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 0);
	/* granted: written with the contact and the data of its one message */
	r = call("POST", path, f.full, NULL, "{\"channel\": \"email\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"form\"}");
	resp_free(r);
	extra_header = "Idempotency-Key: fan-1";
	r = call("POST", "/v1/messages", f.send, NULL, fan);
	extra_header = NULL;
	ck_assert_msg(r->status == 202, "%s", r->body);
	long long mid = jint(r, "id");
	resp_free(r);
	char q[512];
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.outbox WHERE id * 4096 = %lld AND lane = 'bulk' AND origin = 'api' "
		 "AND addresses = '{fan@example.com}' AND contact_ids = '{%lld}' AND data = '[{\"n\": 1}]' "
		 "AND idempotency_key = 'fan-1' AND request_hash IS NOT NULL AND content = '{\"text\": \"sale\"}'",
		 mid, id);
	ck_assert_int_eq(count(&f, q), 1);
	/* a suppression refuses it before the consent; with transactional_policy "none" a transactional send goes */
	sql(&f, "INSERT INTO %s.suppressions (channel, address, reason) VALUES ('email', 'fan@example.com', 'complaint')");
	r = call("POST", "/v1/messages", f.send, NULL, fan);
	expect_problem(r, 422, "/to");
	ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), "suppressed (complaint)"));
	resp_free(r);
	snprintf(q, sizeof q, "UPDATE herald.tenants SET settings = settings || '{\"transactional_policy\": \"none\"}' "
		 "WHERE id = %lld", (long long)f.t.id);
	PQclear(PQexec(f.c, q));
	r = call("POST", "/v1/messages", f.send, NULL,
		 "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"fan@example.com\", \"content\": {\"text\": \"receipt\"}}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 2);
	fx_close(&f);
}
END_TEST

START_TEST(messages_invalid_and_other_tenants_ids)
{
	fx f, g;
	fx_open(&f);
	fx_open(&g);
	fx_provider(&f, "mail", "email");
	fx_provider(&f, "sms", "sms");
	static const struct {
		const char *body, *pointer;
	} bad[] = {
		{"{\"channel\": \"fax\", \"provider\": \"mail\", \"to\": \"a@b.co\", \"content\": {}}", "/channel"},
		{"{\"channel\": \"email\", \"provider\": \"nope\", \"to\": \"a@b.co\", \"content\": {}}", "/provider"},
		{"{\"channel\": \"email\", \"provider\": \"sms\", \"to\": \"a@b.co\", \"content\": {}}", "/provider"},
		{"{\"channel\": \"email\", \"provider\": \"x'; --\", \"to\": \"a@b.co\", \"content\": {}}", "/provider"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"not-an-address\", \"content\": {}}", "/to"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"content\": {}}", "/to"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"a@b.co\"}", "/template"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"a@b.co\", \"template\": {\"id\": 99, \"version\": 1}}", "/template"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"a@b.co\", \"content\": {}, \"lane\": \"fast\"}", "/lane"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"a@b.co\", \"content\": {}, \"data\": [1]}", "/data"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"contact\": {\"id\": 123456}, \"content\": {}}", "/contact"},
		{"{\"channel\": \"email\", \"provider\": \"mail\", \"contact\": {\"id\": \"1\"}, \"content\": {}}", "/contact/id"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		resp *r = call("POST", "/v1/messages", f.send, NULL, bad[i].body);
		ck_assert_msg(r->status == 422, "%s: got %ld %s", bad[i].body, r->status, r->body);
		expect_problem(r, 422, bad[i].pointer);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 0);
	resp *r = call("POST", "/v1/messages", f.send, NULL,
		       "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"a@b.co\", \"content\": {}}");
	ck_assert_int_eq(r->status, 202);
	char path[64];
	snprintf(path, sizeof path, "/v1/messages/%lld", jint(r, "id"));
	resp_free(r);
	r = call("GET", path, g.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", path, g.agency_key, f.t.slug, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", "/v1/messages/4097", f.full, NULL, NULL); /* a batch that has no message 1 */
	expect_problem(r, 404, NULL);
	resp_free(r);
	fx_close(&f);
	fx_close(&g);
}
END_TEST

Suite *api_suite(void);
Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, openapi_is_served_without_auth);
	tcase_add_test(tc, unknown_route_404_wrong_method_405);
	tcase_add_test(tc, malformed_bodies_are_400_or_422_and_write_nothing);
	tcase_add_test(tc, auth_missing_bad_revoked_keys_are_401);
	tcase_add_test(tc, scopes_read_send_full_agency);
	tcase_add_test(tc, agency_key_on_another_agencys_tenant_is_404);
	tcase_add_test(tc, rate_limit_answers_429_with_retry_after);
	tcase_add_test(tc, pool_is_warmed_before_listening);
	tcase_add_test(tc, api_threads_default_is_four_per_core);
	tcase_add_test(tc, agency_creates_lists_suspends_tenants_and_keys);
	tcase_add_test(tc, agency_puts_provider_accounts);
	tcase_add_test(tc, contacts_upsert_normalise_get_list);
	tcase_add_test(tc, contacts_invalid_fields_are_422_and_write_nothing);
	tcase_add_test(tc, contacts_with_same_phone_are_merged_into_the_oldest);
	tcase_add_test(tc, consents_record_history_and_validate);
	tcase_add_test(tc, another_tenants_ids_are_404);
	tcase_add_test(tc, events_single_and_batch_validated_whole);
	tcase_add_test(tc, events_large_batch_written_exactly);
	tcase_add_test(tc, numbers_are_stored_and_shown_as_sent);
	tcase_add_test(tc, events_scanned_as_parsed);
	tcase_add_test(tc, messages_enqueue_get_status_and_idempotency);
	tcase_add_test(tc, messages_idempotency_replay_and_conflict);
	tcase_add_test(tc, messages_blocked_by_suppression_and_consent);
	tcase_add_test(tc, messages_to_address_checks_in_one_statement);
	tcase_add_test(tc, messages_invalid_and_other_tenants_ids);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(api_suite());
}
