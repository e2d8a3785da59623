/*
 * test_rules_api.c -- /v1/rules over HTTP against the real herald-api: create,
 * read, list, replace, enable/disable, instances, delete; every bad rule is a
 * 422 whose pointer names the wrong part, and writes nothing.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "apitest.h"
#include "harness.h"

#define RULES "SELECT count(*) FROM %s.rules"

static const char *const GOOD =
	"{\"name\":\"checkins\",\"trigger\":{\"event\":\"checkin\",\"where\":{\"property\":\"place\",\"op\":\"eq\","
	"\"value\":\"shop\"}},\"reentry\":{\"once_per\":\"1d\"},\"exit\":[{\"event\":\"order\"}],"
	"\"steps\":[{\"wait\":{\"delay\":\"1h\",\"until\":\"10:00\"},\"if\":{\"attribute\":\"vip\",\"op\":\"eq\",\"value\":true},"
	"\"actions\":[{\"increment\":{\"attribute\":\"checkins\"}},{\"set\":{\"attribute\":\"rank\",\"value\":3},"
	"\"if\":{\"attribute\":\"checkins\",\"op\":\"gte\",\"value\":10}},{\"emit\":{\"event\":\"ranked\"}}]}]}";

START_TEST(rules_crud_enable_disable_and_instances)
{
	fx f;
	fx_open(&f);
	resp *r = call("POST", "/v1/rules", f.full, NULL, GOOD);
	ck_assert_int_eq(r->status, 201);
	long long id = (long long)json_integer_value(json_object_get(r->json, "id"));
	ck_assert_int_gt(id, 0);
	char path[96];
	snprintf(path, sizeof path, "/v1/rules/%lld", id);
	ck_assert_str_eq(r->location, path);
	ck_assert(json_is_true(json_object_get(r->json, "enabled")));
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "name")), "checkins");
	resp_free(r);
	r = call("GET", "/v1/rules", f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 1);
	resp_free(r);
	char p2[128];
	snprintf(p2, sizeof p2, "%s/disable", path);
	r = call("POST", p2, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert(json_is_false(json_object_get(r->json, "enabled")));
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.rules WHERE NOT enabled"), 1);
	snprintf(p2, sizeof p2, "%s/enable", path);
	r = call("POST", p2, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	r = call("PUT", path, f.full, NULL,
		 "{\"name\":\"renamed\",\"trigger\":{\"inactive\":{\"days\":14}},\"steps\":[{\"actions\":["
		 "{\"set\":{\"attribute\":\"churn\",\"value\":true}}]}]}");
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.rules WHERE name = 'renamed' AND trigger_kind = 'inactivity'"), 1);
	snprintf(p2, sizeof p2, "%s/instances", path);
	r = call("GET", p2, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert(json_is_array(json_object_get(r->json, "steps")));
	ck_assert(json_is_array(json_object_get(r->json, "data")));
	resp_free(r);
	snprintf(p2, sizeof p2, "%s/instances?state=nope", path);
	r = call("GET", p2, f.read, NULL, NULL);
	expect_problem(r, 400, NULL);
	resp_free(r);
	r = call("DELETE", path, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", "/v1/rules/abc", f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	/* a read key cannot write, a send key cannot either */
	r = call("POST", "/v1/rules", f.read, NULL, GOOD);
	ck_assert_int_eq(r->status, 403);
	resp_free(r);
	ck_assert_int_eq(count(&f, RULES), 0);
	fx_close(&f);
}
END_TEST

START_TEST(bad_rules_are_422_with_the_pointer_and_write_nothing)
{
	static const struct {
		const char *body, *pointer;
	} cases[] = {
		{"{\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}}]}]}", "/name"},
		{"{\"name\":\"n\",\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}}]}]}", "/trigger"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\",\"date\":{\"attribute\":\"b\"}},\"steps\":[]}", "/trigger"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\",\"where\":{\"property\":\"p\",\"op\":\"gt\",\"value\":\"a\"}},"
		 "\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}}]}]}", "/trigger/where/value"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[]}", "/steps"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"wait\":{\"delay\":\"soon\"},\"actions\":"
		 "[{\"emit\":{\"event\":\"y\"}}]}]}", "/steps/0/wait/delay"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"wait\":{\"until\":\"25:00\"},\"actions\":"
		 "[{\"emit\":{\"event\":\"y\"}}]}]}", "/steps/0/wait/until"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}},"
		 "{\"send\":{\"channel\":\"fax\",\"provider\":\"p\",\"content\":{\"text\":\"t\"}}}]}]}", "/steps/0/actions/1/send/channel"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"send\":{\"channel\":\"sms\","
		 "\"provider\":\"nope\",\"content\":{\"text\":\"t\"}}}]}]}", "/steps/0/actions/0/send/provider"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"teleport\":{}}]}]}", "/steps/0/actions/0/teleport"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"if\":{\"attribute\":\"a\",\"op\":\"zz\",\"value\":1},"
		 "\"actions\":[{\"emit\":{\"event\":\"y\"}}]}]}", "/steps/0/if/op"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"reentry\":\"twice\",\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}}]}]}", "/reentry"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"increment\":{\"attribute\":\"a.b\"}}]}]}",
		 "/steps/0/actions/0/increment/attribute"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"issue_code\":{\"pool\":0}}]}]}",
		 "/steps/0/actions/0/issue_code/pool"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"issue_code\":{\"pool\":\"friends\"}}]}]}",
		 "/steps/0/actions/0/issue_code/pool"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"issue_code\":{}}]}]}",
		 "/steps/0/actions/0/issue_code/pool"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"issue_code\":{\"pool\":1,\"n\":2}}]}]}",
		 "/steps/0/actions/0/issue_code/n"},
		/* a well-formed pool id that is no pool of this tenant */
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}}]},"
		 "{\"actions\":[{\"emit\":{\"event\":\"y\"}},{\"issue_code\":{\"pool\":999999}}]}]}",
		 "/steps/1/actions/1/issue_code/pool"},
		{"{\"name\":\"n\",\"trigger\":{\"event\":\"x\"},\"exit\":[{\"nope\":1}],\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"y\"}}]}]}", "/exit/0/nope"},
	};
	fx f;
	fx_open(&f);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		resp *r = call("POST", "/v1/rules", f.full, NULL, cases[i].body);
		json_t *errs = json_object_get(r->json, "errors");
		const char *got = json_string_value(json_object_get(json_array_get(errs, 0), "pointer"));
		ck_assert_msg(r->status == 422 && got && !strcmp(got, cases[i].pointer), "case %zu: got %ld %s, want 422 %s",
			      i, r->status, got ? got : "(none)", cases[i].pointer);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, RULES), 0);
	fx_close(&f);
}
END_TEST

/* issue_code names a pool of the tenant: refused (422, nothing written) when there is no such pool,
 * accepted when it exists. */
START_TEST(issue_code_needs_a_pool_of_the_tenant)
{
	fx f;
	fx_open(&f);
	resp *r = call("POST", "/v1/code-pools", f.full, NULL, "{\"name\":\"friends\",\"kind\":\"referral\"}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long mine = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	char body[512];
	const char *fmt = "{\"name\":\"refer\",\"trigger\":{\"event\":\"order\"},\"steps\":[{\"wait\":{\"delay\":\"1d\"},"
			  "\"actions\":[{\"issue_code\":{\"pool\":%lld}},{\"emit\":{\"event\":\"code_sent\"}}]}]}";
	snprintf(body, sizeof body, fmt, mine + 1);
	r = call("POST", "/v1/rules", f.full, NULL, body);
	expect_problem(r, 422, "/steps/0/actions/0/issue_code/pool");
	resp_free(r);
	ck_assert_int_eq(count(&f, RULES), 0);
	snprintf(body, sizeof body, fmt, mine);
	r = call("POST", "/v1/rules", f.full, NULL, body);
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.rules WHERE definition @> "
				   "'{\"steps\":[{\"actions\":[{\"issue_code\":{}}]}]}'"), 1);
	fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("api_rules");
	TCase *tc = th_tcase("rules");
	tcase_set_timeout(tc, 60);
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, rules_crud_enable_disable_and_instances);
	tcase_add_test(tc, bad_rules_are_422_with_the_pointer_and_write_nothing);
	tcase_add_test(tc, issue_code_needs_a_pool_of_the_tenant);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(suite());
}
