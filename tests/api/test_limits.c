/*
 * test_limits.c -- quotas and limits of agencies and tenants (common/limits.h,
 * api/quota.c) over HTTP against the real herald-api and PostgreSQL.
 *
 * An agency key sets a tenant's limits (PUT /v1/tenants/{slug}/limits, every
 * wrong member a 422 naming it, nothing stored); the operator sets the
 * agency's (hr_limits_store, as `heraldctl agency limits` does); the limit in
 * effect is the smaller one.  messages_per_day: sends, one-time codes and
 * template test sends count, a refused or replayed send does not, past the
 * limit 429 quota-exceeded with Retry-After and nothing written, the next
 * (herald) day counts afresh.  contacts: past the limit a new contact is 409,
 * updating one is not, and concurrent creations take exactly the room left.
 * api_rps: 429 naming the tenant or the agency.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apitest.h"
#include "db.h"
#include "harness.h"
#include "limits.h"

/* The operator's command: an agency's limits, from JSON text. */
static void agency_limits(fx *f, const char *json)
{
	json_t *lim = json_loads(json, 0, NULL);
	ck_assert(lim);
	hr_err err = {0};
	ck_assert_msg(hr_limits_store(f->c, "agency", f->agency, lim, &err), "%s", err.msg);
	json_decref(lim);
}

static void sql(fx *f, const char *q)
{
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", q, PQerrorMessage(f->c));
	PQclear(r);
}

static char *limits_path(fx *f)
{
	static char p[128];
	snprintf(p, sizeof p, "/v1/tenants/%s/limits", f->t.slug);
	return p;
}

static json_int_t at(resp *r, const char *a, const char *b, const char *c)
{
	json_t *v = json_object_get(r->json, a);
	if (b)
		v = json_object_get(v, b);
	if (c)
		v = json_object_get(v, c);
	return json_is_integer(v) ? json_integer_value(v) : -1;
}

static void expect_type(resp *r, long status, const char *type)
{
	expect_problem(r, status, NULL);
	const char *t = json_string_value(json_object_get(r->json, "type"));
	ck_assert_msg(t && strstr(t, type), "type %s, want %s: %s", t ? t : "(none)", type, r->body);
}

START_TEST(limits_put_get_validate_and_take_the_smaller)
{
	fx f, g;
	fx_open(&f);
	fx_open(&g);
	resp *r = call("GET", limits_path(&f), f.agency_key, NULL, NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(json_object_size(json_object_get(r->json, "effective")), 0);
	resp_free(r);
	r = call("PUT", limits_path(&f), f.agency_key, NULL,
		 "{\"api_rps\": 50, \"contacts\": 1000, \"messages_per_day\": {\"email\": 500, \"sms\": 20}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(at(r, "limits", "messages_per_day", "sms"), 20);
	ck_assert_int_eq(at(r, "effective", "api_rps", NULL), 50);
	resp_free(r);
	/* The agency's own limits: the smaller of each pair is in effect. */
	agency_limits(&f, "{\"messages_per_day\": {\"sms\": 100, \"push\": 7}, \"contacts\": 300}");
	r = call("GET", limits_path(&f), f.agency_key, NULL, NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(at(r, "effective", "messages_per_day", "sms"), 20);
	ck_assert_int_eq(at(r, "effective", "messages_per_day", "email"), 500);
	ck_assert_int_eq(at(r, "effective", "messages_per_day", "push"), 7);
	ck_assert_int_eq(at(r, "effective", "contacts", NULL), 300);
	ck_assert_int_eq(at(r, "agency", "contacts", NULL), 300);
	ck_assert_int_eq(at(r, "limits", "contacts", NULL), 1000);
	resp_free(r);

	/* Each wrong member is a 422 naming it; the stored limits stay as they were. */
	static const char *const bad[][2] = {
		{"{\"messages_per_day\": {\"fax\": 1}}", "/messages_per_day/fax"},
		{"{\"messages_per_day\": {\"sms\": -1}}", "/messages_per_day/sms"},
		{"{\"messages_per_day\": {\"sms\": 1.5}}", "/messages_per_day/sms"},
		{"{\"messages_per_day\": [1]}", "/messages_per_day"},
		{"{\"api_rps\": 0}", "/api_rps"},
		{"{\"api_rps\": \"10\"}", "/api_rps"},
		{"{\"contacts\": 1e3}", "/contacts"},
		{"{\"contacts\": 10000000000000}", "/contacts"},
		{"{\"rate_per_s\": 0}", "/rate_per_s"},
		{"{\"sender_rates\": {\"\": 5}}", "/sender_rates/"},
		{"{\"bogus\": 1}", "/bogus"},
		{"{\"contacts'; DROP TABLE x; --\": 1}", "/contacts'; DROP TABLE x; --"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		r = call("PUT", limits_path(&f), f.agency_key, NULL, bad[i][0]);
		expect_problem(r, 422, bad[i][1]);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM herald.tenants WHERE limits = '{\"api_rps\": 50, "
				   "\"contacts\": 1000, \"messages_per_day\": {\"sms\": 20, \"email\": 500}}'"),
			 1);
	/* Only agency keys, only the agency's own tenants. */
	r = call("PUT", limits_path(&f), f.full, NULL, "{}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	r = call("GET", limits_path(&f), g.agency_key, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("PUT", limits_path(&f), g.agency_key, NULL, "{}");
	expect_problem(r, 404, NULL);
	resp_free(r);
	/* An empty object lifts the tenant's own limits; the agency's stay. */
	r = call("PUT", limits_path(&f), f.agency_key, NULL, "{}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(at(r, "effective", "messages_per_day", "sms"), 100);
	ck_assert_int_eq(at(r, "effective", "api_rps", NULL), -1);
	resp_free(r);
	fx_close(&g);
	fx_close(&f);
}
END_TEST

static long send_mail(fx *f, const char *to, const char *idem)
{
	char body[256];
	snprintf(body, sizeof body,
		 "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"%s\", \"content\": {\"subject\": \"s\", "
		 "\"text\": \"t\"}}",
		 to);
	char h[96];
	if (idem)
		snprintf(h, sizeof h, "Idempotency-Key: %s", idem);
	extra_header = idem ? h : NULL;
	resp *r = call("POST", "/v1/messages", f->send, NULL, body);
	extra_header = NULL;
	long st = r->status;
	if (st == 429) {
		expect_type(r, 429, "quota-exceeded");
		int ra = atoi(r->retry_after);
		ck_assert_msg(ra >= 1 && ra <= 86400, "Retry-After %s", r->retry_after);
	}
	resp_free(r);
	return st;
}

START_TEST(messages_per_day_counts_sends_and_refuses_past_the_limit)
{
	fx f;
	fx_open(&f);
	fx_provider(&f, "mail", "email");
	fx_provider(&f, "sms", "sms");
	resp *r = call("PUT", limits_path(&f), f.agency_key, NULL, "{\"messages_per_day\": {\"email\": 3}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(send_mail(&f, "a@example.com", "k-1"), 202);
	/* A replay is the same answer, not another message. */
	ck_assert_int_eq(send_mail(&f, "a@example.com", "k-1"), 202);
	/* A refused send counts nothing. */
	char q[256];
	snprintf(q, sizeof q, "INSERT INTO %s.suppressions (channel, address, reason) VALUES ('email', "
			      "'gone@example.com', 'hard_bounce')", f.t.schema);
	sql(&f, q);
	ck_assert_int_eq(send_mail(&f, "gone@example.com", NULL), 422);
	/* A one-time code by email and a plain send take the other two. */
	r = call("POST", "/v1/otp", f.send, NULL,
		 "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"b@example.com\", \"purpose\": \"login\"}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(send_mail(&f, "c@example.com", NULL), 202);
	/* Past the limit: 429, nothing written -- also for a code; the replay still answers. */
	ck_assert_int_eq(send_mail(&f, "d@example.com", NULL), 429);
	ck_assert_int_eq(send_mail(&f, "a@example.com", "k-1"), 202);
	ck_assert_int_eq(send_mail(&f, "e@example.com", "k-2"), 429);
	r = call("POST", "/v1/otp", f.send, NULL,
		 "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"b@example.com\", \"purpose\": \"login\"}");
	expect_type(r, 429, "quota-exceeded");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox"), 3);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.otp_codes"), 1);
	ck_assert_int_eq(count(&f, "SELECT sum(used) FROM %s.quota_usage WHERE channel = 'email'"), 3);
	/* Another channel has its own count (none here). */
	r = call("POST", "/v1/messages", f.send, NULL,
		 "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550101\", \"content\": {\"text\": \"t\"}}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	/* The agency's limit applies as well: at 0 no sms goes. */
	agency_limits(&f, "{\"messages_per_day\": {\"sms\": 0}}");
	r = call("POST", "/v1/messages", f.send, NULL,
		 "{\"channel\": \"sms\", \"provider\": \"sms\", \"to\": \"+14155550102\", \"content\": {\"text\": \"t\"}}");
	expect_type(r, 429, "quota-exceeded");
	resp_free(r);
	/* The next (herald) day counts afresh. */
	sql(&f, "UPDATE herald_clock.state SET skew = skew + interval '1 day'");
	long st = send_mail(&f, "d@example.com", NULL);
	sql(&f, "UPDATE herald_clock.state SET skew = skew - interval '1 day'");
	ck_assert_int_eq(st, 202);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.quota_usage WHERE channel = 'email'"), 2);
	fx_close(&f);
}
END_TEST

START_TEST(contacts_limit_refuses_a_new_contact_not_an_update)
{
	fx f;
	fx_open(&f);
	agency_limits(&f, "{\"contacts\": 2}");
	resp *r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"c-1\", \"email\": \"c1@example.com\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"c-2\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"c-3\"}");
	expect_type(r, 409, "quota-exceeded");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 2);
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"c-2\", \"attributes\": {\"vip\": true}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	/* A tenant limit above the agency's does not lift it. */
	r = call("PUT", limits_path(&f), f.agency_key, NULL, "{\"contacts\": 10}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"c-3\"}");
	expect_type(r, 409, "quota-exceeded");
	resp_free(r);
	agency_limits(&f, "{}");
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"c-3\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	/* At the limit's edge, 8 new contacts at once (8 API threads): exactly the room left is taken. */
	agency_limits(&f, "{\"contacts\": 5}");
	srv wide;
	srv_start(&wide, the_dsn, "HERALD_API_THREADS=8");
	resp **j = call_at_once(wide.port, 8, "PUT", "/v1/contacts", f.full, "{\"external_id\": \"w-%d\"}");
	int created = 0, refused = 0;
	for (int i = 0; i < 8; i++) {
		created += j[i]->status == 201;
		refused += j[i]->status == 409;
	}
	resps_free(j, 8);
	ck_assert_msg(created == 2 && refused == 6, "created %d, refused %d", created, refused);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 5);
	ck_assert_int_eq(srv_stop(&wide), 0);
	agency_limits(&f, "{}");
	fx_close(&f);
}
END_TEST

/* Requests in a quick row until a 429; its detail must name `who`.  Returns the 200s before it. */
static int until_429(fx *f, const char *key, const char *tenant, const char *who)
{
	int ok = 0;
	for (int i = 0; i < 40; i++) {
		resp *r = call("GET", "/v1/contacts", key, tenant, NULL);
		if (r->status == 429) {
			expect_type(r, 429, "rate-limited");
			const char *d = json_string_value(json_object_get(r->json, "detail"));
			ck_assert_msg(d && strstr(d, who), "detail %s, want %s", d ? d : "(none)", who);
			ck_assert_int_ge(atoi(r->retry_after), 1);
			resp_free(r);
			return ok;
		}
		ck_assert_msg(r->status == 200, "%s", r->body);
		resp_free(r);
		ok++;
	}
	ck_abort_msg("40 requests without a 429 (%s)", who);
	(void)f;
	return ok;
}

START_TEST(api_rps_of_the_tenant_and_of_the_agency)
{
	fx f;
	fx_open(&f);
	/* No limit: 40 in a row all pass (the key's own limit is the server's default, higher). */
	for (int i = 0; i < 40; i++) {
		resp *r = call("GET", "/v1/contacts", f.read, NULL, NULL);
		ck_assert_msg(r->status == 200, "%s", r->body);
		resp_free(r);
	}
	resp *r = call("PUT", limits_path(&f), f.agency_key, NULL, "{\"api_rps\": 2}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	/* A burst of 2, then about 2 a second: the read and the full key share the tenant's. */
	int ok = until_429(&f, f.read, NULL, "this tenant");
	ck_assert_int_le(ok, 6);
	r = call("PUT", limits_path(&f), f.agency_key, NULL, "{}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	/* The agency's: shared by its tenants, and the agency key acting on one of them. */
	agency_limits(&f, "{\"api_rps\": 3}");
	ok = until_429(&f, f.agency_key, f.t.slug, "this agency");
	ck_assert_int_le(ok, 8);
	agency_limits(&f, "{}");
	fx_close(&f);
}
END_TEST

Suite *limits_suite(void);
Suite *limits_suite(void)
{
	Suite *s = suite_create("limits");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, limits_put_get_validate_and_take_the_smaller);
	tcase_add_test(tc, messages_per_day_counts_sends_and_refuses_past_the_limit);
	tcase_add_test(tc, contacts_limit_refuses_a_new_contact_not_an_update);
	tcase_add_test(tc, api_rps_of_the_tenant_and_of_the_agency);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(limits_suite());
}
