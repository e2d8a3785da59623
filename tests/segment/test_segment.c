/*
 * test_segment.c -- common/segment.c against a real tenant schema.
 *
 * Golden cases: each rule runs, compiled, as the tenant role over a fixture
 * of 7 contacts and their events; the exact set of matching contact ids is
 * compared ("got {1,4}, want {1,4,7}").  Error cases check the JSON pointer
 * and the message.  SQL metacharacters in values, paths and event names must
 * match literally and harm nothing.  The fan-out plan on 100,000 contacts must
 * probe the events index, never scan events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"
#include "segment.h"

/* Frozen "now": 2024-06-15T12:00:00Z. */
#define NOW 1718452800LL
#define DAY 86400LL

static const char *fixture =
	"INSERT INTO contacts (id, email, phone, external_id, time_zone, locale, created_at, attributes) VALUES "
	"(1, 'ann@example.com', '+380501111111', 'A1', 'Europe/Kyiv', 'uk', '2024-01-10T00:00:00Z', "
	" '{\"city\":\"Kyiv\",\"utm_source\":\"google\",\"lead_score\":80,\"favourite_categories\":[\"shoes\",\"bags\"],"
	"   \"birthday\":\"1990-06-18\",\"vip\":true,\"address\":{\"city\":\"Kyiv\",\"zip\":\"01001\"}}'),"
	"(2, 'bob@example.com', NULL, NULL, NULL, 'en', '2024-06-10T00:00:00Z', "
	" '{\"city\":\"Lviv\",\"utm_source\":\"facebook\",\"lead_score\":35,\"favourite_categories\":[\"books\"],"
	"   \"birthday\":\"1985-06-30\",\"vip\":false}'),"
	"(3, 'carol@shop.test', NULL, NULL, NULL, NULL, '2023-03-01T00:00:00Z', "
	" '{\"city\":\"kyiv\",\"utm_source\":\"google\",\"lead_score\":\"90\",\"birthday\":\"1992-02-29\","
	"   \"last_seen\":\"2024-06-01T10:00:00Z\"}'),"
	"(4, NULL, '+380502222222', NULL, NULL, NULL, '2024-06-15T11:00:00Z', "
	" '{\"city\":\"Odesa\",\"lead_score\":55.5,\"discount\":0.1,\"birthday\":\"2000-02-30\",\"last_seen\":\"2024-06-14\"}'),"
	"(5, 'eve''\"@x.test', NULL, NULL, NULL, NULL, '2024-01-01T00:00:00Z', "
	" '{\"note\":\"''; DROP TABLE contacts; --\",\"path''\\\"\\\\\":\"x\",\"city\":\"O''Brien\\\\town\","
	"   \"lead_score\":null}'),"
	"(6, NULL, NULL, NULL, NULL, NULL, '2024-01-01T00:00:00Z', '{}'),"
	"(7, NULL, NULL, NULL, NULL, NULL, '2024-01-01T00:00:00Z', "
	" '{\"city\":\"Kharkiv\",\"favourite_categories\":\"shoes\",\"birthday\":\"not a date\","
	"   \"last_seen\":\"2024-13-01\"}');"
	"INSERT INTO events (contact_id, name, properties, occurred_at) VALUES "
	"(1, 'order', '{\"revenue\":100,\"category\":\"shoes\"}', '2024-03-01T10:00:00Z'),"
	"(1, 'order', '{\"revenue\":50}', '2024-03-20T10:00:00Z'),"
	"(1, 'view', '{\"category\":\"shoes\"}', '2024-06-10T10:00:00Z'),"
	"(1, 'login', '{}', '2024-06-14T10:00:00Z'),"
	"(2, 'order', '{\"revenue\":500,\"category\":\"books\"}', '2024-05-20T10:00:00Z'),"
	"(2, 'view', '{\"category\":\"books\"}', '2024-06-01T10:00:00Z'),"
	"(3, 'order', '{\"revenue\":20}', '2024-06-14T10:00:00Z'),"
	"(3, 'order', '{\"revenue\":\"30\"}', '2024-06-13T10:00:00Z'),"
	"(3, 'order', '{\"revenue\":10}', '2024-06-12T10:00:00Z'),"
	"(3, 'login', '{}', '2024-05-01T10:00:00Z'),"
	"(4, 'view', '{\"category\":\"shoes\"}', '2024-06-12T09:00:00Z'),"
	"(4, 'view', '{\"category\":\"shoes\"}', '2024-06-12T10:00:00Z'),"
	"(4, 'view', '{\"category\":\"shoes\"}', '2024-06-12T11:00:00Z'),"
	"(4, 'login', '{}', '2024-05-20T10:00:00Z'),"
	"(5, 'order', '{\"note\":\"''; DROP TABLE events; --\"}', '2024-01-01T10:00:00Z'),"
	"(7, 'login', '{}', '2024-06-15T10:00:00Z'),"
	"(NULL, 'order', '{\"revenue\":999}', '2024-06-15T10:00:00Z');";

/* Segments the lookup callback knows. */
static const struct {
	int64_t id;
	const char *json;
} segments[] = {
	{1, "{\"or\":[{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"Kyiv\"},"
	    "{\"attribute\":\"utm_source\",\"op\":\"eq\",\"value\":\"google\"}]}"},
	{2, "{\"attribute\":\"lead_score\",\"op\":\"gte\",\"value\":50}"},
	{3, "{\"attribute\":\"city\",\"op\":\"bogus\",\"value\":1}"},
	{4, "{\"and\":[{\"segment\":2},{\"segment\":3}]}"},
	{10, "{\"and\":[{\"attribute\":\"vip\",\"op\":\"eq\",\"value\":true},{\"segment\":11}]}"},
	{11, "{\"or\":[{\"segment\":12}]}"},
	{12, "{\"not\":{\"segment\":10}}"},
	{13, "{\"segment\":13}"},
	{14, "not json"},
};

static bool lookup(void *ud, int64_t id, char **json, hr_err *err)
{
	int *calls = ud;
	if (calls)
		(*calls)++;
	if (id == 666)
		return hr_fail(err, HR_ERR_DB, NULL, "connection lost");
	for (size_t i = 0; i < sizeof segments / sizeof segments[0]; i++) {
		if (segments[i].id == id) {
			*json = hr_strdup(segments[i].json);
			return true;
		}
	}
	return hr_fail(err, HR_ERR_NOTFOUND, NULL, "no such segment");
}

static PGconn *tenant_with_fixture(hr_tenant *t)
{
	PGconn *c = th_control();
	hr_err err = {0};
	th_tenant(c, t);
	ck_assert_msg(hr_db_tenant_begin(c, t->schema, t->role, &err), "%s", err.msg);
	ck_assert_msg(hr_db_exec(c, fixture, &err), "fixture: %s", err.msg);
	ck_assert_msg(hr_db_commit(c, &err), "%s", err.msg);
	return c;
}

/* Matching ids "1,4,7" (heap), running the compiled rule as the tenant role; NULL on SQL error. */
static char *matching(PGconn *c, const hr_tenant *t, const hr_segment_sql *s, hr_err *err)
{
	char *sql = hr_sprintf("SELECT coalesce(string_agg(c.id::text, ',' ORDER BY c.id), '') "
			       "FROM contacts c WHERE %s", s->where);
	char *out = NULL;
	PGresult *r = NULL;
	if (!hr_db_tenant_begin(c, t->schema, t->role, err))
		goto done;
	if (hr_db_query(c, sql, s->nparams, (const char *const *)s->params, &r, err))
		out = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	hr_db_rollback(c);
done:
	hr_free(sql);
	return out;
}

/* ---- golden cases ---- */

static const struct golden {
	const char *name;
	const char *rule;
	const char *want; /* matching contact ids */
	long long now;    /* 0: NOW */
} golden[] = {
	/* attributes: equality, lists, text */
	{"city eq", "{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"Kyiv\"}", "1", 0},
	{"city ne includes missing", "{\"attribute\":\"city\",\"op\":\"ne\",\"value\":\"Kyiv\"}", "2,3,4,5,6,7", 0},
	{"city in", "{\"attribute\":\"city\",\"op\":\"in\",\"value\":[\"Kyiv\",\"Lviv\"]}", "1,2", 0},
	{"city not_in", "{\"attribute\":\"city\",\"op\":\"not_in\",\"value\":[\"Kyiv\",\"Lviv\"]}", "3,4,5,6,7", 0},
	{"city matches is case-insensitive and anchored", "{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"kyiv\"}", "1,3", 0},
	{"matches *", "{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"*v\"}", "1,2,3,7", 0},
	{"matches ?", "{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"?yiv\"}", "1,3", 0},
	{"matches % and _ literally", "{\"or\":[{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"%\"},"
				      "{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"_yiv\"}]}", "", 0},
	{"matches \\\\ is a backslash", "{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"o'brien\\\\\\\\town\"}", "5", 0},
	{"contains", "{\"attribute\":\"city\",\"op\":\"contains\",\"value\":\"yi\"}", "1,3", 0},
	{"starts_with is case-sensitive", "{\"attribute\":\"city\",\"op\":\"starts_with\",\"value\":\"K\"}", "1,7", 0},
	{"ends_with", "{\"attribute\":\"city\",\"op\":\"ends_with\",\"value\":\"iv\"}", "1,2,3,7", 0},
	{"utm source", "{\"attribute\":\"utm_source\",\"op\":\"eq\",\"value\":\"google\"}", "1,3", 0},
	{"boolean", "{\"attribute\":\"vip\",\"op\":\"eq\",\"value\":true}", "1", 0},
	{"nested path string", "{\"attribute\":\"address.city\",\"op\":\"eq\",\"value\":\"Kyiv\"}", "1", 0},
	{"nested path array", "{\"attribute\":[\"address\",\"zip\"],\"op\":\"eq\",\"value\":\"01001\"}", "1", 0},
	{"includes (array attribute only)", "{\"attribute\":\"favourite_categories\",\"op\":\"includes\",\"value\":\"shoes\"}", "1", 0},
	/* numbers: JSON numbers only ("90" is a string) */
	{"lead score gte", "{\"attribute\":\"lead_score\",\"op\":\"gte\",\"value\":50}", "1,4", 0},
	{"lead score between", "{\"attribute\":\"lead_score\",\"op\":\"between\",\"value\":[30,60]}", "2,4", 0},
	{"lead score lt", "{\"attribute\":\"lead_score\",\"op\":\"lt\",\"value\":40}", "2", 0},
	{"number eq matches 55.5", "{\"attribute\":\"lead_score\",\"op\":\"eq\",\"value\":55.50}", "4", 0},
	/* 0.1 as written, not jansson's 0.10000000000000001 (common/jsonout.h) */
	{"decimal eq as written", "{\"attribute\":\"discount\",\"op\":\"eq\",\"value\":0.1}", "4", 0},
	{"decimal gte as written", "{\"attribute\":\"discount\",\"op\":\"gte\",\"value\":0.1}", "4", 0},
	{"decimal in as written", "{\"attribute\":\"discount\",\"op\":\"in\",\"value\":[0.2,0.1]}", "4", 0},
	{"exists (null is absent)", "{\"attribute\":\"lead_score\",\"op\":\"exists\"}", "1,2,3,4", 0},
	{"not_exists", "{\"attribute\":\"lead_score\",\"op\":\"not_exists\"}", "5,6,7", 0},
	/* dates in attributes: bad ones ("2000-02-30", "2024-13-01", "not a date") never match, never fail */
	{"before", "{\"attribute\":\"last_seen\",\"op\":\"before\",\"value\":\"2024-06-05\"}", "3", 0},
	{"within_last", "{\"attribute\":\"last_seen\",\"op\":\"within_last\",\"days\":14}", "4", 0},
	{"not within_last", "{\"not\":{\"attribute\":\"last_seen\",\"op\":\"within_last\",\"days\":14}}", "1,2,3,5,6,7", 0},
	{"after with leap day", "{\"attribute\":\"birthday\",\"op\":\"after\",\"value\":\"1991-01-01\"}", "3", 0},
	{"gt date with zone", "{\"attribute\":\"last_seen\",\"op\":\"gt\",\"value\":\"2024-06-01T12:59:00+03:00\"}", "3,4", 0},
	{"lte relative date", "{\"attribute\":\"last_seen\",\"op\":\"lte\",\"value\":{\"days_ago\":10}}", "3", 0},
	{"within_next", "{\"attribute\":\"last_seen\",\"op\":\"within_next\",\"days\":1}", "", 0},
	{"between dates", "{\"attribute\":\"last_seen\",\"op\":\"between\",\"value\":[\"2024-06-01\",{\"days_ago\":0}]}", "3,4", 0},
	{"birthday within 7 days", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":7}", "1", 0},
	{"birthday within 15 days", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":15}", "1,2", 0},
	{"leap birthday on Feb 28 of a common year", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":0}", "3", 1677571200LL},
	{"leap birthday not on Feb 28 of a leap year", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":0}", "", 1709107200LL},
	{"leap birthday on Feb 29", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":0}", "3", 1709193600LL},
	{"leap birthday not on Mar 1", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":0}", "", 1677657600LL},
	{"window over new year", "{\"attribute\":\"birthday\",\"op\":\"anniversary_within_next\",\"days\":200}", "1,2,3", 1703980800LL},
	/* fields */
	{"email ends_with", "{\"field\":\"email\",\"op\":\"ends_with\",\"value\":\"@example.com\"}", "1,2", 0},
	{"email not_exists", "{\"field\":\"email\",\"op\":\"not_exists\"}", "4,6,7", 0},
	{"phone eq", "{\"field\":\"phone\",\"op\":\"eq\",\"value\":\"+380502222222\"}", "4", 0},
	{"external_id ne", "{\"field\":\"external_id\",\"op\":\"ne\",\"value\":\"A1\"}", "2,3,4,5,6,7", 0},
	{"locale in", "{\"field\":\"locale\",\"op\":\"in\",\"value\":[\"uk\",\"ru\"]}", "1", 0},
	{"time zone", "{\"field\":\"time_zone\",\"op\":\"matches\",\"value\":\"europe/*\"}", "1", 0},
	{"created within 7 days", "{\"field\":\"created_at\",\"op\":\"within_last\",\"days\":7}", "2,4", 0},
	{"created anniversary today", "{\"field\":\"created_at\",\"op\":\"anniversary_within_next\",\"days\":0}", "4", 0},
	{"created before", "{\"field\":\"created_at\",\"op\":\"before\",\"value\":\"2024-01-01\"}", "3", 0},
	/* events */
	{"did order", "{\"event\":\"order\"}", "1,2,3,5", 0},
	{"did not order", "{\"event\":\"order\",\"did\":false}", "4,6,7", 0},
	{"ordered in the last 30 days", "{\"event\":\"order\",\"when\":{\"op\":\"within_last\",\"days\":30}}", "2,3", 0},
	{"has not come back for 14 days", "{\"event\":\"login\",\"did\":false,\"when\":{\"op\":\"within_last\",\"days\":14}}", "2,3,4,5,6", 0},
	{"at least 2 orders", "{\"event\":\"order\",\"count\":{\"op\":\"gte\",\"value\":2}}", "1,3", 0},
	{"at most 1 order (zero included)", "{\"event\":\"order\",\"count\":{\"op\":\"lte\",\"value\":1}}", "2,4,5,6,7", 0},
	{"exactly 2 orders", "{\"event\":\"order\",\"count\":{\"op\":\"between\",\"value\":[2,2]}}", "1", 0},
	{"revenue sum", "{\"event\":\"order\",\"sum\":{\"property\":\"revenue\",\"op\":\"gte\",\"value\":100}}", "1,2", 0},
	{"revenue sum between (none = 0, strings ignored)", "{\"event\":\"order\",\"sum\":{\"property\":\"revenue\",\"op\":\"between\",\"value\":[0,40]}}", "3,4,5,6,7", 0},
	{"count and sum", "{\"event\":\"order\",\"count\":{\"op\":\"gte\",\"value\":2},\"sum\":{\"property\":\"revenue\",\"op\":\"gt\",\"value\":100}}", "1", 0},
	{"favourite category: 3 views", "{\"event\":\"view\",\"where\":{\"property\":\"category\",\"op\":\"eq\",\"value\":\"shoes\"},\"count\":{\"op\":\"gte\",\"value\":3}}", "4", 0},
	{"viewed shoes in 30 days", "{\"event\":\"view\",\"where\":{\"property\":\"category\",\"op\":\"eq\",\"value\":\"shoes\"},\"when\":{\"op\":\"within_last\",\"days\":30}}", "1,4", 0},
	{"did not buy again within 30 days of first order",
	 "{\"and\":[{\"event\":\"order\",\"when\":{\"op\":\"before\",\"value\":{\"days_ago\":30}}},"
	 "{\"event\":\"order\",\"did\":false,\"when\":{\"op\":\"within_days_of_first\",\"days\":30}}]}", "5", 0},
	{"within_days_of_first alone", "{\"event\":\"order\",\"did\":false,\"when\":{\"op\":\"within_days_of_first\",\"days\":30}}", "2,4,5,6,7", 0},
	{"within_days_of_first of another event", "{\"event\":\"login\",\"when\":{\"op\":\"within_days_of_first\",\"days\":30,\"event\":\"view\"}}", "1", 0},
	{"when between dates", "{\"event\":\"order\",\"when\":{\"op\":\"between\",\"value\":[\"2024-03-01\",\"2024-03-31\"]}}", "1", 0},
	{"when after", "{\"event\":\"order\",\"when\":{\"op\":\"after\",\"value\":\"2024-06-13T12:00:00Z\"}}", "3", 0},
	{"property or", "{\"event\":\"order\",\"where\":{\"or\":[{\"property\":\"revenue\",\"op\":\"gte\",\"value\":400},"
			"{\"property\":\"category\",\"op\":\"eq\",\"value\":\"shoes\"}]}}", "1,2", 0},
	{"property not", "{\"event\":\"order\",\"where\":{\"not\":{\"property\":\"category\",\"op\":\"exists\"}}}", "1,3,5", 0},
	/* nesting */
	{"and/or", "{\"and\":[{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"k*\"},{\"or\":["
		   "{\"attribute\":\"lead_score\",\"op\":\"gte\",\"value\":70},"
		   "{\"event\":\"order\",\"count\":{\"op\":\"gte\",\"value\":3}}]}]}", "1,3", 0},
	{"not or", "{\"not\":{\"or\":[{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"Kyiv\"},{\"event\":\"order\"}]}}", "4,6,7", 0},
	{"double not", "{\"not\":{\"not\":{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"Kyiv\"}}}", "1", 0},
	/* segments */
	{"segment", "{\"segment\":1}", "1,3", 0},
	{"segment and not segment", "{\"and\":[{\"segment\":1},{\"not\":{\"segment\":2}}]}", "3", 0},
	/* SQL metacharacters match literally */
	{"value with quotes and DROP", "{\"attribute\":\"note\",\"op\":\"eq\",\"value\":\"'; DROP TABLE contacts; --\"}", "5", 0},
	{"path with quote, double quote, backslash", "{\"attribute\":[\"path'\\\"\\\\\"],\"op\":\"eq\",\"value\":\"x\"}", "5", 0},
	{"value with backslash", "{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"O'Brien\\\\town\"}", "5", 0},
	{"in with quotes", "{\"field\":\"email\",\"op\":\"in\",\"value\":[\"eve'\\\"@x.test\",\"x'); DROP TABLE events; --\"]}", "5", 0},
	{"event name injection", "{\"event\":\"'; DROP TABLE events; --\"}", "", 0},
	{"property injection", "{\"event\":\"order\",\"where\":{\"property\":\"note\",\"op\":\"contains\",\"value\":\"DROP TABLE events\"}}", "5", 0},
	{"path with braces and commas", "{\"attribute\":[\"{a,b}\",\"\\\"}\"],\"op\":\"exists\"}", "", 0},
};

START_TEST(golden_rules)
{
	hr_tenant t;
	PGconn *c = tenant_with_fixture(&t);
	int failures = 0;
	for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
		const struct golden *g = &golden[i];
		hr_segment_opts o = {.now_unix = g->now ? g->now : NOW, .lookup = lookup};
		hr_segment_sql s;
		hr_err err = {0};
		if (!hr_segment_compile(g->rule, &o, &s, &err)) {
			fprintf(stderr, "FAIL %s: compile: %s: %s\n", g->name, err.field, err.msg);
			failures++;
			continue;
		}
		char *got = matching(c, &t, &s, &err);
		if (!got) {
			fprintf(stderr, "FAIL %s: SQL error %s\n  %s\n", g->name, err.msg, s.where);
			failures++;
		} else if (strcmp(got, g->want)) {
			fprintf(stderr, "FAIL %s: got {%s}, want {%s}\n  %s\n", g->name, got, g->want, s.where);
			failures++;
		}
		hr_free(got);
		hr_segment_sql_free(&s);
	}
	/* Nothing was dropped or changed by any of it. */
	PGresult *r;
	hr_err err = {0};
	ck_assert(hr_db_tenant_begin(c, t.schema, t.role, &err));
	ck_assert_msg(hr_db_query(c, "SELECT (SELECT count(*) FROM contacts) || '/' || (SELECT count(*) FROM events)",
				  0, NULL, &r, &err), "%s", err.msg);
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "7/17");
	PQclear(r);
	hr_db_rollback(c);
	PQfinish(c);
	ck_assert_msg(failures == 0, "%d of %zu golden rules failed (details above)", failures,
		      sizeof golden / sizeof golden[0]);
}
END_TEST

/* The generated SQL names no user text: it is all in the parameters. */
START_TEST(user_text_never_in_sql)
{
	const char *rule = "{\"and\":[{\"attribute\":[\"x'y\"],\"op\":\"eq\",\"value\":\"DROP'TABLE\"},"
			   "{\"event\":\"ev'il\",\"where\":{\"property\":\"p\\\"q\",\"op\":\"matches\",\"value\":\"a'*\"}}]}";
	hr_segment_opts o = {.now_unix = NOW};
	hr_segment_sql s;
	hr_err err = {0};
	ck_assert_msg(hr_segment_compile(rule, &o, &s, &err), "%s", err.msg);
	ck_assert_ptr_null(strstr(s.where, "DROP"));
	ck_assert_ptr_null(strstr(s.where, "ev'il"));
	ck_assert_ptr_null(strstr(s.where, "x'y"));
	ck_assert_ptr_null(strstr(s.where, "p\"q"));
	ck_assert_int_eq(s.nparams, 5);
	ck_assert_str_eq(s.params[0], "{\"x'y\"}");
	ck_assert_str_eq(s.params[1], "\"DROP'TABLE\"");
	ck_assert_str_eq(s.params[2], "ev'il");
	ck_assert_str_eq(s.params[3], "{\"p\\\"q\"}");
	ck_assert_str_eq(s.params[4], "a'%");
	hr_segment_sql_free(&s);
}
END_TEST

/* first_param: the expression composes with the caller's own parameters. */
START_TEST(first_param_offsets_numbering)
{
	hr_tenant t;
	PGconn *c = tenant_with_fixture(&t);
	hr_segment_opts o = {.now_unix = NOW, .first_param = 3};
	hr_segment_sql s;
	hr_err err = {0};
	ck_assert_msg(hr_segment_compile("{\"or\":[{\"attribute\":\"city\",\"op\":\"matches\",\"value\":\"*v\"},"
					 "{\"event\":\"order\"}]}", &o, &s, &err), "%s", err.msg);
	ck_assert_ptr_null(strstr(s.where, "$1"));
	ck_assert_ptr_nonnull(strstr(s.where, "$3"));
	const char *params[16] = {"1", "5"};
	for (int i = 0; i < s.nparams; i++)
		params[2 + i] = s.params[i];
	char *sql = hr_sprintf("SELECT string_agg(c.id::text, ',' ORDER BY c.id) FROM contacts c "
			       "WHERE c.id > $1::bigint AND c.id < $2::bigint AND %s", s.where);
	PGresult *r;
	ck_assert(hr_db_tenant_begin(c, t.schema, t.role, &err));
	ck_assert_msg(hr_db_query(c, sql, 2 + s.nparams, params, &r, &err), "%s", err.msg);
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "2,3");
	PQclear(r);
	hr_db_rollback(c);
	hr_free(sql);
	hr_segment_sql_free(&s);
	PQfinish(c);
}
END_TEST

/* ---- errors ---- */

static char *repeat(const char *head, const char *unit, int n, const char *mid, const char *tail, int m)
{
	size_t len = strlen(head) + strlen(unit) * (size_t)n + strlen(mid) + strlen(tail) * (size_t)m + 1;
	char *s = hr_malloc(len);
	strcpy(s, head);
	for (int i = 0; i < n; i++)
		strcat(s, unit);
	strcat(s, mid);
	for (int i = 0; i < m; i++)
		strcat(s, tail);
	return s;
}

static const struct bad {
	const char *rule;
	const char *field;
	const char *msg; /* substring */
} bad[] = {
	{"{\"and\":[{\"attribute\":\"a\",\"op\":\"eq\",\"value\":1},{\"attribute\":\"a\",\"op\":\"eq\",\"value\":1},"
	 "{\"attribute\":\"a\",\"op\":\"gt\",\"value\":\"soon\"}]}", "/and/2/value", "bad date"},
	{"{\"or\":[{\"attribute\":\"a\",\"op\":\"bogus\",\"value\":1}]}", "/or/0/op", "unknown operator \"bogus\""},
	{"{\"attribute\":\"a\",\"op\":\"eq\"}", "", "needs \"value\""},
	{"{\"attribute\":\"a\"}", "", "missing \"op\""},
	{"{\"attribute\":\"a\",\"op\":7}", "/op", "expected an operator name"},
	{"{\"attribute\":\"a\",\"op\":\"eq\",\"valeu\":1}", "", "unknown key \"valeu\""},
	{"{\"attribute\":\"a\",\"op\":\"eq\",\"value\":null}", "/value", "exists / not_exists"},
	{"{\"attribute\":\"a\",\"op\":\"eq\",\"value\":{\"x\":1}}", "/value", "expected a string, number or boolean"},
	{"{\"attribute\":\"a\",\"op\":\"in\",\"value\":[]}", "/value", "empty list"},
	{"{\"attribute\":\"a\",\"op\":\"in\",\"value\":\"x\"}", "/value", "expected an array"},
	{"{\"attribute\":\"a\",\"op\":\"in\",\"value\":[1,[2]]}", "/value/1", "expected a string, number or boolean"},
	{"{\"field\":\"email\",\"op\":\"in\",\"value\":[\"a\",2]}", "/value/1", "expected a string"},
	{"{\"attribute\":\"a\",\"op\":\"exists\",\"value\":1}", "/value", "takes no value"},
	{"{\"attribute\":\"a\",\"op\":\"gt\",\"value\":true}", "/value", "expected a date"},
	{"{\"attribute\":\"a\",\"op\":\"gt\",\"value\":\"2023-02-29\"}", "/value", "bad date"},
	{"{\"attribute\":\"a\",\"op\":\"gt\",\"value\":\"2024-01-01T25:00\"}", "/value", "bad date"},
	{"{\"attribute\":\"a\",\"op\":\"gt\",\"value\":{\"weeks_ago\":1}}", "/value", "days_ago"},
	{"{\"attribute\":\"a\",\"op\":\"gt\",\"value\":{\"days_ago\":-1}}", "/value/days_ago", "whole number of days"},
	{"{\"attribute\":\"a\",\"op\":\"before\",\"value\":5}", "/value", "expected a date"},
	{"{\"attribute\":\"a\",\"op\":\"between\",\"value\":[5]}", "/value", "[low, high]"},
	{"{\"attribute\":\"a\",\"op\":\"between\",\"value\":[5,1]}", "/value", "low bound is above"},
	{"{\"attribute\":\"a\",\"op\":\"between\",\"value\":[1,\"2024-01-01\"]}", "/value", "both bounds"},
	{"{\"attribute\":\"a\",\"op\":\"between\",\"value\":[\"2024-02-01\",\"2024-01-01\"]}", "/value", "low bound is above"},
	{"{\"attribute\":\"a\",\"op\":\"within_last\"}", "", "needs \"days\""},
	{"{\"attribute\":\"a\",\"op\":\"within_last\",\"days\":-3}", "/days", "whole number of days"},
	{"{\"attribute\":\"a\",\"op\":\"within_last\",\"days\":1.5}", "/days", "whole number of days"},
	{"{\"attribute\":\"a\",\"op\":\"within_last\",\"days\":1,\"value\":1}", "/value", "takes \"days\""},
	{"{\"attribute\":\"a\",\"op\":\"anniversary_within_next\",\"days\":400}", "/days", "from 0 to 366"},
	{"{\"attribute\":\"a\",\"op\":\"eq\",\"value\":1,\"days\":1}", "/days", "takes no \"days\""},
	{"{\"attribute\":\"a\",\"op\":\"contains\",\"value\":3}", "/value", "expected a string"},
	{"{\"attribute\":\"a\",\"op\":\"contains\",\"value\":\"\"}", "/value", "empty string"},
	{"{\"attribute\":\"a\",\"op\":\"matches\",\"value\":\"*a*b*c*d*e*f*g*h*i\"}", "/value", "more than 8 '*'"},
	{"{\"attribute\":\"a\",\"op\":\"within_days_of_first\",\"days\":3}", "/op", "does not apply to an attribute"},
	{"{\"attribute\":\"\",\"op\":\"exists\"}", "/attribute", "empty path"},
	{"{\"attribute\":\"a..b\",\"op\":\"exists\"}", "/attribute", "segment 1 is empty"},
	{"{\"attribute\":[\"a\",1],\"op\":\"exists\"}", "/attribute/1", "expected a string"},
	{"{\"attribute\":\"a.b.c.d.e.f.g.h.i\",\"op\":\"exists\"}", "/attribute", "more than 8 segments"},
	{"{\"attribute\":5,\"op\":\"exists\"}", "/attribute", "expected a path"},
	{"{\"field\":\"password\",\"op\":\"exists\"}", "/field", "unknown field"},
	{"{\"field\":\"email\",\"op\":\"gt\",\"value\":1}", "/op", "does not apply to field email"},
	{"{\"field\":\"email\",\"op\":\"includes\",\"value\":\"a\"}", "/op", "does not apply to field email"},
	{"{\"field\":\"created_at\",\"op\":\"eq\",\"value\":\"2024-01-01\"}", "/op", "does not apply to field created_at"},
	{"{\"field\":\"created_at\",\"op\":\"gt\",\"value\":5}", "/value", "expected a date"},
	{"{\"event\":\"\"}", "/event", "empty string"},
	{"{\"event\":5}", "/event", "expected a string"},
	{"{\"event\":\"order\",\"did\":\"no\"}", "/did", "true or false"},
	{"{\"event\":\"order\",\"times\":3}", "", "unknown key \"times\""},
	{"{\"event\":\"order\",\"count\":{\"op\":\"most\",\"value\":3}}", "/count/op", "unknown operator"},
	{"{\"event\":\"order\",\"count\":{\"op\":\"gte\",\"value\":-1}}", "/count/value", "whole number"},
	{"{\"event\":\"order\",\"count\":{\"op\":\"between\",\"value\":[3,1]}}", "/count/value", "low bound"},
	{"{\"event\":\"order\",\"count\":3}", "/count", "expected {"},
	{"{\"event\":\"order\",\"sum\":{\"op\":\"gte\",\"value\":3}}", "/sum", "missing \"property\""},
	{"{\"event\":\"order\",\"sum\":{\"property\":\"revenue\",\"op\":\"gte\",\"value\":\"3\"}}", "/sum/value", "expected a number"},
	{"{\"event\":\"order\",\"when\":{\"op\":\"eq\",\"value\":\"2024-01-01\"}}", "/when/op", "does not apply to the event time"},
	{"{\"event\":\"order\",\"when\":{\"op\":\"within_last\",\"days\":3,\"event\":\"x\"}}", "/when/event", "only within_days_of_first"},
	{"{\"event\":\"order\",\"when\":5}", "/when", "expected {"},
	{"{\"event\":\"order\",\"where\":{\"attribute\":\"city\",\"op\":\"exists\"}}", "/where", "expected a property condition"},
	{"{\"event\":\"order\",\"where\":{\"and\":[{\"property\":\"x\",\"op\":\"nope\"}]}}", "/where/and/0/op", "unknown operator"},
	{"{\"property\":\"x\",\"op\":\"exists\"}", "", "belong in an event's \"where\""},
	{"{\"and\":[]}", "/and", "empty list of conditions"},
	{"{\"or\":{}}", "/or", "expected an array"},
	{"{\"and\":[{\"attribute\":\"a\",\"op\":\"exists\"}],\"or\":[]}", "", "must be the only key"},
	{"{\"not\":[]}", "/not", "expected a condition"},
	{"{}", "", "unknown condition"},
	{"[1]", "", "expected a condition"},
	{"{\"and\":[1]}", "/and/0", "expected a condition"},
	{"{\"attribute\":", "", "invalid JSON"},
	{"{\"attribute\":\"a\",\"attribute\":\"b\",\"op\":\"exists\"}", "", "invalid JSON"},
	{"{\"segment\":0}", "/segment", "positive integer"},
	{"{\"segment\":\"1\"}", "/segment", "positive integer"},
	{"{\"segment\":99}", "/segment", "segment 99: no such segment"},
	{"{\"and\":[{\"segment\":1},{\"segment\":3}]}", "/and/1/segment", "in segment 3 at /op: unknown operator \"bogus\""},
	{"{\"segment\":4}", "/segment", "in segment 4 at /and/1/segment: in segment 3 at /op: unknown operator"},
	{"{\"segment\":10}", "/segment", "segment cycle: 10 -> 11 -> 12 -> 10"},
	{"{\"not\":{\"segment\":13}}", "/not/segment", "segment cycle: 13 -> 13"},
	{"{\"segment\":14}", "/segment", "in segment 14: invalid JSON"},
};

START_TEST(bad_rules)
{
	hr_segment_opts o = {.now_unix = NOW, .lookup = lookup};
	const struct bad *b = &bad[_i];
	hr_segment_sql s;
	hr_err err = {0};
	ck_assert_msg(!hr_segment_compile(b->rule, &o, &s, &err), "accepted %s: %s", b->rule, s.where);
	ck_assert_ptr_null(s.where);
	ck_assert_int_eq(err.kind, HR_ERR_INVALID);
	ck_assert_msg(!strcmp(err.field, b->field), "%s: got pointer '%s', want '%s' (%s)", b->rule, err.field,
		      b->field, err.msg);
	ck_assert_msg(strstr(err.msg, b->msg), "%s: got message '%s', want '%s'", b->rule, err.msg, b->msg);
	hr_segment_sql_free(&s); /* safe on a failed compile */
}
END_TEST

START_TEST(limits)
{
	hr_segment_opts o = {.now_unix = NOW, .lookup = lookup};
	hr_segment_sql s;
	hr_err err = {0};
	const char *leaf = "{\"attribute\":\"a\",\"op\":\"exists\"}";

	/* Depth: 10 levels of "not" are fine, 11 are not. */
	char *ok = repeat("", "{\"not\":", 10, leaf, "}", 10);
	ck_assert_msg(hr_segment_compile(ok, &o, &s, &err), "%s: %s", err.field, err.msg);
	hr_segment_sql_free(&s);
	char *deep = repeat("", "{\"not\":", 11, leaf, "}", 11);
	ck_assert(!hr_segment_compile(deep, &o, &s, &err));
	ck_assert_str_eq(err.field, "/not/not/not/not/not/not/not/not/not/not");
	ck_assert_ptr_nonnull(strstr(err.msg, "nested deeper than 10"));

	/* Conditions: 200 are fine, 201 are not -- pointer at the 201st. */
	char *many = repeat("{\"or\":[", "{\"attribute\":\"a\",\"op\":\"exists\"},", 199, leaf, "]}", 1);
	ck_assert_msg(hr_segment_compile(many, &o, &s, &err), "%s", err.msg);
	hr_segment_sql_free(&s);
	char *toomany = repeat("{\"or\":[", "{\"attribute\":\"a\",\"op\":\"exists\"},", 200, leaf, "]}", 1);
	ck_assert(!hr_segment_compile(toomany, &o, &s, &err));
	ck_assert_str_eq(err.field, "/or/200");
	ck_assert_ptr_nonnull(strstr(err.msg, "too many conditions"));

	/* in: 1000 values fine, 1001 not. */
	char *in = repeat("{\"attribute\":\"a\",\"op\":\"in\",\"value\":[", "1,", 1000, "1", "]}", 1);
	ck_assert(!hr_segment_compile(in, &o, &s, &err));
	ck_assert_str_eq(err.field, "/value");
	ck_assert_ptr_nonnull(strstr(err.msg, "more than 1000"));

	/* Long strings and whole rules. */
	char *longv = repeat("{\"attribute\":\"a\",\"op\":\"eq\",\"value\":\"", "x", 1025, "\"}", "", 0);
	ck_assert(!hr_segment_compile(longv, &o, &s, &err));
	ck_assert_str_eq(err.field, "/value");
	char *huge = repeat("{\"attribute\":\"a\",\"op\":\"eq\",\"value\":\"", " ", 70000, "\"}", "", 0);
	ck_assert(!hr_segment_compile(huge, &o, &s, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 65536"));

	/* A diamond of references is bounded by the condition limit, not expanded forever. */
	int calls = 0;
	o.lookup_ud = &calls;
	char *refs = repeat("{\"or\":[", "{\"segment\":1},", 120, "{\"segment\":1}", "]}", 1);
	ck_assert(!hr_segment_compile(refs, &o, &s, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "too many conditions"));
	ck_assert_int_le(calls, 101);

	/* No lookup: references are refused; lookup failures keep their kind. */
	o.lookup = NULL;
	ck_assert(!hr_segment_compile("{\"segment\":1}", &o, &s, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "not available"));
	o.lookup = lookup;
	ck_assert(!hr_segment_compile("{\"or\":[{\"segment\":666}]}", &o, &s, &err));
	ck_assert_int_eq(err.kind, HR_ERR_DB);
	ck_assert_str_eq(err.field, "/or/0/segment");
	ck_assert(!hr_segment_compile(NULL, &o, &s, NULL)); /* err may be NULL */

	hr_free(ok);
	hr_free(deep);
	hr_free(many);
	hr_free(toomany);
	hr_free(in);
	hr_free(longv);
	hr_free(huge);
	hr_free(refs);
}
END_TEST

/* ---- the fan-out plan ---- */

static char *plan(PGconn *c, const hr_tenant *t, const char *rule)
{
	hr_segment_opts o = {.now_unix = NOW};
	hr_segment_sql s;
	hr_err err = {0};
	ck_assert_msg(hr_segment_compile(rule, &o, &s, &err), "%s", err.msg);
	char *sql = hr_sprintf("EXPLAIN SELECT c.id FROM contacts c WHERE %s", s.where);
	PGresult *r;
	ck_assert(hr_db_tenant_begin(c, t->schema, t->role, &err));
	ck_assert_msg(hr_db_query(c, sql, s.nparams, (const char *const *)s.params, &r, &err), "%s", err.msg);
	size_t len = 1;
	for (int i = 0; i < PQntuples(r); i++)
		len += strlen(PQgetvalue(r, i, 0)) + 1;
	char *out = hr_calloc(1, len);
	for (int i = 0; i < PQntuples(r); i++) {
		strcat(out, PQgetvalue(r, i, 0));
		strcat(out, "\n");
	}
	PQclear(r);
	hr_db_rollback(c);
	hr_free(sql);
	hr_segment_sql_free(&s);
	return out;
}

START_TEST(fanout_probes_the_events_index)
{
	PGconn *c = th_control();
	hr_tenant t;
	hr_err err = {0};
	th_tenant(c, &t);
	ck_assert(hr_db_tenant_begin(c, t.schema, t.role, &err));
	ck_assert_msg(hr_db_exec(c,
		"INSERT INTO contacts (attributes) SELECT jsonb_build_object('city', 'c' || (i % 50), "
		"'lead_score', i % 100) FROM generate_series(1, 100000) i;"
		"INSERT INTO events (contact_id, name, properties, occurred_at) "
		"SELECT (i::bigint * 7919) % 100000 + 1, (ARRAY['view','cart','order','login'])[1 + i % 4], "
		"jsonb_build_object('revenue', i % 500, 'category', 'k' || (i % 7)), "
		"timestamptz '2024-01-01' + (i % 165) * interval '1 day' FROM generate_series(1, 300000) i;",
		&err), "%s", err.msg);
	ck_assert(hr_db_commit(c, &err));
	char *schema = hr_db_ident(c, t.schema);
	char *an = hr_sprintf("ANALYZE %s.contacts; ANALYZE %s.events", schema, schema);
	ck_assert_msg(hr_db_exec(c, an, &err), "%s", err.msg);
	hr_free(an);
	hr_free(schema);

	static const char *rules[] = {
		"{\"event\":\"order\",\"when\":{\"op\":\"within_last\",\"days\":60}}",
		"{\"event\":\"login\",\"did\":false,\"when\":{\"op\":\"within_last\",\"days\":14}}",
		"{\"event\":\"order\",\"count\":{\"op\":\"gte\",\"value\":2}}",
		"{\"event\":\"order\",\"sum\":{\"property\":\"revenue\",\"op\":\"gte\",\"value\":500}}",
		"{\"and\":[{\"attribute\":\"city\",\"op\":\"eq\",\"value\":\"c7\"},"
		"{\"event\":\"view\",\"where\":{\"property\":\"category\",\"op\":\"eq\",\"value\":\"k3\"}}]}",
		"{\"or\":[{\"attribute\":\"lead_score\",\"op\":\"gte\",\"value\":90},{\"event\":\"cart\"}]}",
		"{\"event\":\"order\",\"did\":false,\"when\":{\"op\":\"within_days_of_first\",\"days\":30}}",
	};
	for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
		char *p = plan(c, &t, rules[i]);
		ck_assert_msg(!strstr(p, "Seq Scan on events"), "rule %zu scans events:\n%s", i, p);
		ck_assert_msg(strstr(p, "events_contact"), "rule %zu does not use the index:\n%s", i, p);
		hr_free(p);
	}
	PQfinish(c);
}
END_TEST

int main(void)
{
	th_pg_dsn(); /* the parent owns the cluster */
	Suite *s = suite_create("segment");
	TCase *tc = th_tcase("compile");
	tcase_add_test(tc, user_text_never_in_sql);
	tcase_add_loop_test(tc, bad_rules, 0, sizeof bad / sizeof bad[0]);
	tcase_add_test(tc, limits);
	suite_add_tcase(s, tc);
	tc = th_tcase("database");
	tcase_add_test(tc, golden_rules);
	tcase_add_test(tc, first_param_offsets_numbering);
	tcase_add_test(tc, fanout_probes_the_events_index);
	suite_add_tcase(s, tc);
	return th_run(s);
}
