/*
 * test_campaigns.c -- /v1/segments, /v1/campaigns and /v1/calendar over
 * HTTP against the real herald-api: success paths, every error path with its
 * status and pointer, and that an error writes nothing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "apitest.h"
#include "db.h"
#include "harness.h"
#include "providers.h"

static void sql(fx *f, const char *fmt)
{
	char q[2048];
	snprintf(q, sizeof q, fmt, f->t.schema, f->t.schema, f->t.schema, f->t.schema);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", q,
		      PQerrorMessage(f->c));
	PQclear(r);
}

static long long jid(resp *r)
{
	return (long long)json_integer_value(json_object_get(r->json, "id"));
}

static const char *jstr(resp *r, const char *name)
{
	const char *s = json_string_value(json_object_get(r->json, name));
	return s ? s : "";
}

/* A tenant with contacts in Kyiv (3, one merged away) and Lviv (1), an email template (id 1) and account. */
static void world(fx *f)
{
	fx_provider(f, "main", "email");
	fx_provider(f, "sms", "sms");
	sql(f, "INSERT INTO %s.contacts (email, attributes) VALUES ('a@x.io', '{\"city\":\"Kyiv\"}'), "
	       "('b@x.io', '{\"city\":\"Kyiv\"}'), ('c@x.io', '{\"city\":\"Lviv\"}'), ('d@x.io', '{\"city\":\"Kyiv\"}')");
	sql(f, "UPDATE %s.contacts SET merged_into = (SELECT min(id) FROM %s.contacts) WHERE email = 'd@x.io'");
	sql(f, "INSERT INTO %s.templates (name, channel) VALUES ('hello', 'email'), ('hi-sms', 'sms')");
	sql(f, "INSERT INTO %s.template_versions (template_id, version, content) SELECT id, 1, "
	       "'{\"subject\":\"hi\",\"text\":\"hi\"}' FROM %s.templates");
}

#define KYIV "{\"name\":\"kyiv\",\"rule\":{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"Kyiv\"}}"

START_TEST(segments_crud_preview_and_membership)
{
	fx f;
	fx_open(&f);
	world(&f);
	resp *r = call("POST", "/v1/segments", f.full, NULL, KYIV);
	ck_assert_int_eq(r->status, 201);
	long long kyiv = jid(r);
	ck_assert_str_eq(jstr(r, "name"), "kyiv");
	ck_assert_ptr_nonnull(strstr(r->location, "/v1/segments/"));
	resp_free(r);
	char path[128], body[512];
	snprintf(path, sizeof path, "/v1/segments/%lld/preview", kyiv);
	r = call("POST", path, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(json_integer_value(json_object_get(r->json, "count")), 2); /* the merged one is not */
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "sample")), 2);
	resp_free(r);
	/* membership of another segment */
	snprintf(body, sizeof body, "{\"name\":\"not-kyiv\",\"rule\":{\"not\":{\"segment\":%lld}}}", kyiv);
	r = call("POST", "/v1/segments", f.full, NULL, body);
	ck_assert_int_eq(r->status, 201);
	long long notk = jid(r);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/segments/%lld/preview?sample=0", notk);
	r = call("POST", path, f.full, NULL, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(r->json, "count")), 1);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "sample")), 0);
	resp_free(r);
	/* a referenced segment cannot be deleted; a loop is refused */
	snprintf(path, sizeof path, "/v1/segments/%lld", kyiv);
	r = call("DELETE", path, f.full, NULL, NULL);
	expect_problem(r, 409, NULL);
	resp_free(r);
	snprintf(body, sizeof body, "{\"name\":\"kyiv\",\"rule\":{\"and\":[{\"segment\":%lld}]}}", notk);
	r = call("PUT", path, f.full, NULL, body);
	expect_problem(r, 422, "/rule/and/0/segment");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.segments WHERE rule ? 'attribute'"), 1);
	/* replace, get, list */
	r = call("PUT", path, f.full, NULL,
		 "{\"name\":\"kyiv2\",\"rule\":{\"attribute\":\"city\",\"op\":\"in\",\"value\":[\"Kyiv\",\"Lviv\"]}}");
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(jstr(r, "name"), "kyiv2");
	resp_free(r);
	r = call("GET", "/v1/segments", f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "segments")), 2);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/segments/%lld", notk);
	r = call("DELETE", path, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.segments"), 1);
	fx_close(&f);
}
END_TEST

START_TEST(segment_errors_are_precise_and_write_nothing)
{
	fx f;
	fx_open(&f);
	struct {
		const char *body;
		long status;
		const char *pointer;
	} cases[] = {
		{"{\"name\":\"s\",\"rule\":{\"attribute\":\"city\",\"op\":\"eq\"}}", 422, "/rule"},
		{"{\"name\":\"s\",\"rule\":{\"and\":[{\"attribute\":\"a\",\"op\":\"eq\",\"value\":1},"
		 "{\"attribute\":\"b\",\"op\":\"gt\",\"value\":\"x\"}]}}", 422, "/rule/and/1/value"},
		{"{\"name\":\"s\",\"rule\":{\"segment\":999}}", 422, "/rule"},
		{"{\"name\":\"s\",\"rule\":{\"attribute\":\"a\",\"op\":\"eq\",\"valeu\":1}}", 422, "/rule"},
		{"{\"rule\":{\"attribute\":\"a\",\"op\":\"exists\"}}", 422, "/name"},
		{"{\"name\":\"s\"}", 422, "/rule"},
		{"{\"name\":\"s\",\"rule\":{\"attribute\":\"a\",\"op\":\"exists\"},\"x\":1}", 422, "/x"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		resp *r = call("POST", "/v1/segments", f.full, NULL, cases[i].body);
		ck_assert_msg(r->status == cases[i].status, "case %zu: got %ld, want %ld: %s", i, r->status,
			      cases[i].status, r->body);
		json_t *e = json_array_get(json_object_get(r->json, "errors"), 0);
		const char *ptr = json_string_value(json_object_get(e, "pointer"));
		ck_assert_msg(ptr && strncmp(ptr, cases[i].pointer, strlen(cases[i].pointer)) == 0,
			      "case %zu: pointer %s, want %s...", i, ptr ? ptr : "(none)", cases[i].pointer);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.segments"), 0);
	resp *r = call("GET", "/v1/segments/12", f.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("POST", "/v1/segments/abc/preview", f.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	fx_close(&f);
}
END_TEST

static long long make_segment(fx *f)
{
	resp *r = call("POST", "/v1/segments", f->full, NULL, KYIV);
	ck_assert_int_eq(r->status, 201);
	long long id = jid(r);
	resp_free(r);
	return id;
}

static resp *post_campaign(fx *f, long long seg, const char *messages, const char *calendar)
{
	char body[2048];
	snprintf(body, sizeof body,
		 "{\"name\":\"c\",\"segment_id\":%lld,\"channel\":\"email\",\"messages\":%s,\"calendar\":%s}", seg,
		 messages, calendar);
	return call("POST", "/v1/campaigns", f->full, NULL, body);
}

#define MSG "{\"email\":{\"template\":1,\"provider\":\"main\"}}"

START_TEST(campaign_errors_are_precise_and_write_nothing)
{
	fx f;
	fx_open(&f);
	world(&f);
	long long seg = make_segment(&f);
	struct {
		long long seg;
		const char *messages, *calendar;
		const char *pointer;
	} cases[] = {
		{999, MSG, "{\"kind\":\"now\"}", "/segment_id"},
		{0, "{\"email\":{\"template\":77,\"provider\":\"main\"}}", "{\"kind\":\"now\"}", "/messages/email/template"},
		{0, "{\"email\":{\"template\":2,\"provider\":\"main\"}}", "{\"kind\":\"now\"}", "/messages/email/template"},
		{0, "{\"email\":{\"template\":1,\"provider\":\"sms\"}}", "{\"kind\":\"now\"}", "/messages/email/provider"},
		{0, "{\"email\":{\"template\":1,\"provider\":\"nope\"}}", "{\"kind\":\"now\"}", "/messages/email/provider"},
		{0, "{\"sms\":{\"template\":2,\"provider\":\"sms\"}}", "{\"kind\":\"now\"}", "/messages"},
		{0, MSG, "{\"kind\":\"soon\"}", "/calendar/kind"},
		{0, MSG, "{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"25:00\",\"to\":\"07:00\"}}", "/calendar/quiet_hours/from"},
		{0, MSG, "{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYHOUR=25\",\"start\":\"2026-01-01T00:00:00\"}", "/calendar/rrule"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		resp *r = post_campaign(&f, cases[i].seg ? cases[i].seg : seg, cases[i].messages, cases[i].calendar);
		ck_assert_msg(r->status == 422, "case %zu: got %ld: %s", i, r->status, r->body);
		json_t *e = json_array_get(json_object_get(r->json, "errors"), 0);
		const char *ptr = json_string_value(json_object_get(e, "pointer"));
		ck_assert_msg(ptr && !strcmp(ptr, cases[i].pointer), "case %zu: pointer %s, want %s", i,
			      ptr ? ptr : "(none)", cases[i].pointer);
		resp_free(r);
	}
	resp *r = call("POST", "/v1/campaigns", f.full, NULL,
		       "{\"name\":\"c\",\"segment_id\":1,\"channel\":\"push\",\"messages\":{},\"calendar\":{\"kind\":\"now\"}}");
	expect_problem(r, 422, "/channel");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.campaigns"), 0);
	fx_close(&f);
}
END_TEST

static void expect_state(fx *f, long long id, const char *action, long status, const char *state)
{
	char path[128];
	snprintf(path, sizeof path, "/v1/campaigns/%lld/%s", id, action);
	resp *r = call("POST", path, f->full, NULL, NULL);
	ck_assert_msg(r->status == status, "%s: got %ld, want %ld: %s", action, r->status, status, r->body);
	if (status == 200)
		ck_assert_str_eq(jstr(r, "state"), state);
	else
		ck_assert_ptr_nonnull(strstr(jstr(r, "detail"), state));
	resp_free(r);
}

START_TEST(campaign_lifecycle_state_machine_and_calendar_view)
{
	fx f;
	fx_open(&f);
	world(&f);
	long long seg = make_segment(&f);
	resp *r = post_campaign(&f, seg, MSG,
				"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYHOUR=10\",\"start\":\"2026-01-01T00:00:00\","
				"\"time_zone\":\"Europe/Kyiv\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long id = jid(r);
	ck_assert_str_eq(jstr(r, "state"), "active");
	ck_assert(json_is_string(json_object_get(r->json, "next_run_at")));
	resp_free(r);
	expect_state(&f, id, "resume", 409, "active");
	expect_state(&f, id, "pause", 200, "paused");
	expect_state(&f, id, "pause", 409, "paused");
	expect_state(&f, id, "resume", 200, "active");
	char path[128];
	snprintf(path, sizeof path, "/v1/campaigns/%lld", id);
	r = call("DELETE", path, f.full, NULL, NULL);
	expect_problem(r, 409, NULL);
	resp_free(r);
	/* the calendar view: a daily run over 10 days */
	r = call("GET", "/v1/calendar?from=2037-01-01T00:00:00Z&to=2037-01-11T00:00:00Z", f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	json_t *runs = json_object_get(r->json, "runs");
	ck_assert_int_eq(json_array_size(runs), 10);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(runs, 0), "run_at")), "2037-01-01T08:00:00Z");
	resp_free(r);
	r = call("GET", "/v1/calendar?from=2037-01-01T00:00:00Z", f.read, NULL, NULL);
	expect_problem(r, 400, NULL);
	resp_free(r);
	r = call("GET", "/v1/calendar?from=2037-01-02T00:00:00Z&to=2037-01-01T00:00:00Z", f.read, NULL, NULL);
	expect_problem(r, 400, NULL);
	resp_free(r);
	/* runs list (none yet), replace, cancel, then nothing moves any more */
	snprintf(path, sizeof path, "/v1/campaigns/%lld/runs", id);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "runs")), 0);
	resp_free(r);
	char body[1024];
	snprintf(body, sizeof body,
		 "{\"name\":\"renamed\",\"segment_id\":%lld,\"channel\":\"email\",\"messages\":{\"email\":"
		 "{\"template\":1,\"provider\":\"main\"},\"sms\":{\"template\":2,\"provider\":\"sms\"}},"
		 "\"fallback\":\"sms\",\"calendar\":{\"kind\":\"at\",\"at\":\"2037-06-01T10:00:00Z\"}}",
		 seg);
	snprintf(path, sizeof path, "/v1/campaigns/%lld", id);
	r = call("PUT", path, f.full, NULL, body);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_str_eq(jstr(r, "fallback"), "sms");
	ck_assert_str_eq(jstr(r, "name"), "renamed");
	resp_free(r);
	expect_state(&f, id, "cancel", 200, "cancelled");
	expect_state(&f, id, "cancel", 409, "cancelled");
	expect_state(&f, id, "resume", 409, "cancelled");
	expect_state(&f, id, "pause", 409, "cancelled");
	r = call("PUT", path, f.full, NULL, body);
	expect_problem(r, 409, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.campaigns WHERE name = 'renamed' AND state = 'cancelled'"), 1);
	r = call("DELETE", path, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.campaigns"), 0);
	fx_close(&f);
}
END_TEST

START_TEST(other_tenants_ids_are_404)
{
	fx f, g;
	fx_open(&f);
	fx_open(&g);
	world(&f);
	long long seg = make_segment(&f);
	resp *r = post_campaign(&f, seg, MSG, "{\"kind\":\"at\",\"at\":\"2037-06-01T10:00:00Z\"}");
	ck_assert_int_eq(r->status, 201);
	long long id = jid(r);
	resp_free(r);
	const char *fmt[] = {"GET /v1/segments/%lld", "POST /v1/segments/%lld/preview", "DELETE /v1/segments/%lld",
			     "GET /v1/campaigns/%lld", "POST /v1/campaigns/%lld/pause",
			     "POST /v1/campaigns/%lld/cancel", "GET /v1/campaigns/%lld/runs", "DELETE /v1/campaigns/%lld"};
	for (size_t i = 0; i < sizeof fmt / sizeof fmt[0]; i++) {
		char line[128], method[8], path[120];
		snprintf(line, sizeof line, fmt[i], i < 3 ? seg : id);
		sscanf(line, "%7s %119s", method, path);
		r = call(method, path, g.full, NULL, NULL);
		ck_assert_msg(r->status == 404, "%s: %ld", line, r->status);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.campaigns WHERE state = 'active'"), 1);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.segments"), 1);
	fx_close(&f);
	fx_close(&g);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api_campaigns");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, segments_crud_preview_and_membership);
	tcase_add_test(tc, segment_errors_are_precise_and_write_nothing);
	tcase_add_test(tc, campaign_errors_are_precise_and_write_nothing);
	tcase_add_test(tc, campaign_lifecycle_state_machine_and_calendar_view);
	tcase_add_test(tc, other_tenants_ids_are_404);
	suite_add_tcase(s, tc);
	return th_run(s);
}
