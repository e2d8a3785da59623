/*
 * test_reports.c -- the reports of api/reports.c over HTTP against a real
 * herald-api and PostgreSQL, on a small dataset inserted directly (outbox,
 * results, events, contacts, consents, codes, campaigns) whose every figure
 * is known by hand: message figures per template, campaign and run, period
 * rows on the tenant's day boundaries (Europe/Berlin against UTC), each
 * order attributed once to the last click, the window, dimensions with
 * cursor pages, first-time buyers and their second purchase; bad parameters
 * (422 naming each), another tenant's ids (404), and that reading wrote
 * nothing.
 */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "apitest.h"
#include "db.h"
#include "harness.h"

/* Run SQL in the fixture tenant's schema. */
static void sql(fx *f, const char *text)
{
	char *q = hr_sprintf("SET search_path = %s, public; %s; RESET search_path", f->t.schema, text);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", text,
		      PQerrorMessage(f->c));
	PQclear(r);
	hr_free(q);
}

/* The member at a slash path ("totals/sent", "runs/0/audience"), or NULL. */
static json_t *at(json_t *v, const char *path)
{
	char buf[256];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *save = NULL, *tok = strtok_r(buf, "/", &save); tok && v; tok = strtok_r(NULL, "/", &save))
		v = json_is_array(v) ? json_array_get(v, (size_t)atoi(tok)) : json_object_get(v, tok);
	return v;
}

#define want_int(r, path, n)                                                                                     \
	do {                                                                                                     \
		json_t *v_ = at((r)->json, path);                                                                \
		ck_assert_msg(json_is_integer(v_) && json_integer_value(v_) == (n), "%s: got %s, want %lld in %s", \
			      path, v_ ? json_dumps(v_, JSON_ENCODE_ANY) : "nothing", (long long)(n), (r)->body); \
	} while (0)

#define want_num(r, path, x)                                                                                \
	do {                                                                                                \
		json_t *v_ = at((r)->json, path);                                                           \
		ck_assert_msg(json_is_number(v_) && fabs(json_number_value(v_) - (x)) < 1e-6,               \
			      "%s: got %s, want %g in %s", path, v_ ? json_dumps(v_, JSON_ENCODE_ANY) : "nothing", \
			      (double)(x), (r)->body);                                                      \
	} while (0)

#define want_str(r, path, s)                                                                                  \
	do {                                                                                                  \
		json_t *v_ = at((r)->json, path);                                                             \
		ck_assert_msg(json_is_string(v_) && strcmp(json_string_value(v_), (s)) == 0,                  \
			      "%s: got %s, want %s in %s", path, v_ ? json_dumps(v_, JSON_ENCODE_ANY) : "nothing", \
			      (s), (r)->body);                                                                \
	} while (0)

static resp *get(fx *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static resp *get(fx *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char path[512];
	vsnprintf(path, sizeof path, fmt, ap);
	va_end(ap);
	resp *r = call("GET", path, f->read, NULL, NULL);
	return r;
}

static resp *ok(resp *r)
{
	ck_assert_msg(r->status == 200 && r->json, "status %ld: %s", r->status, r->body);
	return r;
}

/*
 * The dataset (times UTC; the tenant's zone is Europe/Berlin, UTC+1 in March 2026).
 *
 * contacts  1 pos=P1 adv=A (Mar 1)   2 pos=P1 adv=B (Mar 2)   3 pos=P2 adv=A (Feb 20)
 *           4 (no attributes, Feb 28 23:30 = Mar 1 00:30 in Berlin)   5 pos=P1 merged into 1 (Mar 3)
 * batch 10  campaign 3 run 1, template 7, email, Mar 2 10:00, to 1, 2, 3   (messages 40960..40962)
 * batch 11  rule 5 step 0, template 7, email, Mar 2 23:30 (Mar 3 in Berlin), to 1, 4   (45056, 45057)
 * batch 12  API, inline, sms, due Mar 5 12:00, to 2   (49152)
 * batch 13  API, template 8, email, Apr 10, to 1   (53248) -- outside March
 * results   40960 sent, 40961 sent, 40962 failed, 45056 sent, 45057 dead, 49152 sent, 53248 sent
 * events    delivered 40960 40961 45056; opened 40960 (twice) 40961; clicked 40960 (c1 Mar 2 11:00),
 *           40961 (c2 Mar 2 12:00), 45056 (c1 Mar 4 09:00); unsubscribed 40961; replied 49152
 * orders    c1 Mar 1 08:00 5 (before any click), Mar 3 10:00 100 (last click 40960: campaign),
 *           Mar 5 10:00 50.5 (last click 45056: rule, though 40960's window is open too)
 *           c2 Mar 8 12:00 "20.25" (40961, within 7 days), Mar 20 12:00 30 (window over)
 *           c3 Feb 2 1, Mar 10 10 (no click)   c4 Mar 15 7, Apr 20 8
 */
static void seed(fx *f)
{
	char *q = hr_sprintf("UPDATE herald.tenants SET settings = settings || '{\"time_zone\": \"Europe/Berlin\"}' "
			     "WHERE slug = '%s'",
			     f->t.slug);
	PGresult *r = PQexec(f->c, q);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(f->c));
	PQclear(r);
	hr_free(q);
	sql(f, "INSERT INTO contacts (id, email, attributes, created_at) VALUES "
	       "(1, 'c1@x.com', '{\"pos\": \"P1\", \"adv\": \"A\"}', '2026-03-01T09:00:00Z'), "
	       "(2, 'c2@x.com', '{\"pos\": \"P1\", \"adv\": \"B\"}', '2026-03-02T09:00:00Z'), "
	       "(3, 'c3@x.com', '{\"pos\": \"P2\", \"adv\": \"A\"}', '2026-02-20T09:00:00Z'), "
	       "(4, 'c4@x.com', '{}', '2026-02-28T23:30:00Z')");
	sql(f, "INSERT INTO contacts (id, phone, attributes, merged_into, created_at) VALUES "
	       "(5, '+447700900005', '{\"pos\": \"P1\"}', 1, '2026-03-03T09:00:00Z')");
	sql(f, "INSERT INTO consent_log (contact_id, channel, purpose, granted, source, at) VALUES "
	       "(1, 'sms', 'marketing', true, 'pos', '2026-03-01T09:00:00Z'), "
	       "(1, 'email', 'marketing', true, 'pos', '2026-03-01T09:00:00Z'), "
	       "(2, 'sms', 'marketing', false, 'pos', '2026-03-02T09:00:00Z'), "
	       "(3, 'sms', 'marketing', true, 'pos', '2026-03-03T09:00:00Z')");
	sql(f, "INSERT INTO templates (id, name, channel) VALUES (7, 'welcome', 'email'), (8, 'news', 'email')");
	sql(f, "INSERT INTO segments (id, name, rule) VALUES (1, 'all', '{}'); "
	       "INSERT INTO campaigns (id, name, segment_id, channel, messages, calendar, state, activated_at) VALUES "
	       "(3, 'spring', 1, 'email', '{}', '{}', 'completed', '2026-03-01T00:00:00Z'); "
	       "INSERT INTO campaign_runs (id, campaign_id, run_at, started_at, channel, provider, recipients, error) "
	       "VALUES (1, 3, '2026-03-02T10:00:00Z', '2026-03-02T10:00:00Z', 'email', 'mail', 3, NULL), "
	       "(2, 3, '2026-03-09T10:00:00Z', '2026-03-09T10:00:00Z', 'email', 'mail', 0, 'segment broken'), "
	       "(3, 3, '2026-05-09T10:00:00Z', '2026-05-09T10:00:00Z', 'email', 'mail', 9, NULL)");
	sql(f, "INSERT INTO outbox (id, channel, lane, template_id, content, provider, origin, origin_id, due_at, "
	       "herald_at, addresses, contact_ids, data) VALUES "
	       "(10, 'email', 'bulk', 7, NULL, 'mail', 'campaign', 1, '2026-03-02T10:00:00Z', '2026-03-02T10:00:00Z', "
	       "'{c1@x.com,c2@x.com,c3@x.com}', '{1,2,3}', NULL), "
	       "(11, 'email', 'bulk', 7, NULL, 'mail', 'rule', 5, '2026-03-02T23:30:00Z', '2026-03-02T23:30:00Z', "
	       "'{c1@x.com,c4@x.com}', '{1,4}', '[{\"rule\": {\"id\": 5, \"instance\": 1, \"step\": 0}}, "
	       "{\"rule\": {\"id\": 5, \"instance\": 2, \"step\": 0}}]'), "
	       "(12, 'sms', 'transactional', NULL, '{\"text\": \"hi\"}', 'sms', 'api', NULL, '2026-03-05T12:00:00Z', "
	       "NULL, '{+447700900002}', '{2}', NULL), "
	       "(13, 'email', 'transactional', 8, NULL, 'mail', 'api', NULL, '2026-04-10T12:00:00Z', NULL, "
	       "'{c1@x.com}', '{1}', NULL)");
	sql(f, "INSERT INTO results (message_id, status, attempts) VALUES (40960, 'sent', 1), (40961, 'sent', 1), "
	       "(40962, 'failed', 1), (45056, 'sent', 1), (45057, 'dead', 5), (49152, 'sent', 1), (53248, 'sent', 1)");
	sql(f, "INSERT INTO events (contact_id, name, properties, occurred_at, message_id) VALUES "
	       "(1, 'message_delivered', '{}', '2026-03-02T10:01:00Z', 40960), "
	       "(2, 'message_delivered', '{}', '2026-03-02T10:01:00Z', 40961), "
	       "(1, 'message_delivered', '{}', '2026-03-02T23:31:00Z', 45056), "
	       "(1, 'email_opened', '{}', '2026-03-02T10:30:00Z', 40960), "
	       "(1, 'email_opened', '{}', '2026-03-02T10:40:00Z', 40960), "
	       "(2, 'email_opened', '{}', '2026-03-02T11:30:00Z', 40961), "
	       "(1, 'email_clicked', '{\"url\": \"https://x.com/a\"}', '2026-03-02T11:00:00Z', 40960), "
	       "(2, 'email_clicked', '{\"url\": \"https://x.com/a\"}', '2026-03-02T12:00:00Z', 40961), "
	       "(1, 'email_clicked', '{\"url\": \"https://x.com/b\"}', '2026-03-04T09:00:00Z', 45056), "
	       "(2, 'unsubscribed', '{}', '2026-03-02T13:00:00Z', 40961), "
	       "(2, 'message_replied', '{}', '2026-03-05T13:00:00Z', 49152)");
	sql(f, "INSERT INTO events (contact_id, name, properties, occurred_at) VALUES "
	       "(1, 'order', '{\"revenue\": 5}', '2026-03-01T08:00:00Z'), "
	       "(1, 'order', '{\"revenue\": 100}', '2026-03-03T10:00:00Z'), "
	       "(1, 'order', '{\"revenue\": 50.5}', '2026-03-05T10:00:00Z'), "
	       "(2, 'order', '{\"revenue\": \"20.25\"}', '2026-03-08T12:00:00Z'), "
	       "(2, 'order', '{\"revenue\": 30}', '2026-03-20T12:00:00Z'), "
	       "(3, 'order', '{\"revenue\": 1}', '2026-02-02T10:00:00Z'), "
	       "(3, 'order', '{\"revenue\": 10}', '2026-03-10T10:00:00Z'), "
	       "(4, 'order', '{\"revenue\": 7}', '2026-03-15T10:00:00Z'), "
	       "(4, 'order', '{\"revenue\": 8}', '2026-04-20T10:00:00Z'), "
	       "(2, 'purchase', '{\"revenue\": \"n/a\"}', '2026-03-03T10:00:00Z')");
	sql(f, "INSERT INTO code_pools (id, name, kind) VALUES (1, 'friends', 'referral'); "
	       "INSERT INTO codes (pool_id, code, contact_id, issued_at, max_redemptions, redeemed, redemptions) VALUES "
	       "(1, 'AAA1', 1, '2026-03-02T10:00:00Z', 3, 2, '[{\"contact_id\": 2, \"at\": \"2026-03-05T10:00:00+00:00\"}, "
	       "{\"contact_id\": 3, \"at\": \"2026-02-01T10:00:00+00:00\"}]'), "
	       "(1, 'BBB2', 3, '2026-02-25T10:00:00Z', 3, 1, '[{\"contact_id\": 4, \"at\": \"2026-03-06T10:00:00+00:00\"}]')");
}

#define MARCH "from=2026-03-01&to=2026-04-01"

START_TEST(message_figures_per_template_period_and_origin)
{
	fx f;
	fx_open(&f);
	seed(&f);
	/* every message of March (Berlin): batches 10, 11, 12 */
	resp *r = ok(get(&f, "/v1/reports/messages?" MARCH "&grouping=day&by=template"));
	want_str(r, "period/from", "2026-02-28T23:00:00Z");
	want_str(r, "period/to", "2026-03-31T22:00:00Z");
	want_str(r, "period/time_zone", "Europe/Berlin");
	want_int(r, "totals/messages", 6);
	want_int(r, "totals/sent", 4);
	want_int(r, "totals/failed", 2);
	want_int(r, "totals/queued", 0);
	want_int(r, "totals/delivered", 3);
	want_int(r, "totals/opened", 3); /* a click counts as an open (45056 has no open event) */
	want_int(r, "totals/clicked", 3);
	want_int(r, "totals/replied", 1);
	want_int(r, "totals/unsubscribed", 1);
	want_int(r, "totals/converted", 3);
	want_num(r, "totals/revenue", 170.75);
	want_num(r, "totals/rates/open", 0.75);
	want_num(r, "totals/rates/click_to_open", 1.0);
	want_num(r, "totals/rates/click", 0.75);
	want_num(r, "totals/rates/reply", 0.25);
	want_num(r, "totals/rates/conversion", 1.0);
	/* days in Berlin: batch 11 (23:30 UTC on the 2nd) is the 3rd's */
	ck_assert_int_eq(json_array_size(at(r->json, "periods")), 3);
	want_str(r, "periods/0/period", "2026-03-02");
	want_int(r, "periods/0/messages", 3);
	want_int(r, "periods/0/converted", 2);
	want_num(r, "periods/0/revenue", 120.25);
	want_str(r, "periods/1/period", "2026-03-03");
	want_int(r, "periods/1/messages", 2);
	want_int(r, "periods/1/converted", 1);
	want_num(r, "periods/1/revenue", 50.5);
	want_str(r, "periods/2/period", "2026-03-05");
	want_int(r, "periods/2/replied", 1);
	/* by template: 7 only (batch 12 has inline content: in the totals, not in a template's row) */
	ck_assert_int_eq(json_array_size(at(r->json, "breakdown")), 1);
	want_int(r, "breakdown/0/template", 7);
	want_int(r, "breakdown/0/messages", 5);
	want_int(r, "breakdown/0/converted", 3);
	resp_free(r);
	/* the same days in UTC: batches 10 and 11 are both the 2nd */
	r = ok(get(&f, "/v1/reports/messages?from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z&grouping=day"
		       "&time_zone=UTC"));
	ck_assert_int_eq(json_array_size(at(r->json, "periods")), 2);
	want_str(r, "periods/0/period", "2026-03-02");
	want_int(r, "periods/0/messages", 5);
	want_str(r, "periods/1/period", "2026-03-05");
	ck_assert_ptr_null(at(r->json, "breakdown"));
	resp_free(r);
	/* weeks and months; by origin */
	r = ok(get(&f, "/v1/reports/messages?from=2026-03-01&to=2026-05-01&grouping=month&by=origin"));
	want_str(r, "periods/0/period", "2026-03-01");
	want_int(r, "periods/0/messages", 6);
	want_str(r, "periods/1/period", "2026-04-01");
	want_int(r, "periods/1/messages", 1);
	want_str(r, "breakdown/0/origin", "api");
	want_int(r, "breakdown/0/messages", 2);
	want_str(r, "breakdown/1/origin", "campaign");
	want_str(r, "breakdown/2/origin", "rule");
	resp_free(r);
	r = ok(get(&f, "/v1/reports/messages?" MARCH "&grouping=week"));
	want_str(r, "periods/0/period", "2026-03-02"); /* ISO weeks start on Monday */
	want_int(r, "periods/0/messages", 6);
	resp_free(r);
	/* a one-day window: only c1's order 23 h after its click converts */
	r = ok(get(&f, "/v1/reports/messages?" MARCH "&window_days=1"));
	want_int(r, "totals/converted", 1);
	want_num(r, "totals/revenue", 100);
	want_int(r, "attribution/window_days", 1);
	resp_free(r);
	/* another order event name: 'purchase' has a click of c2 before it but revenue "n/a" counts 0 */
	r = ok(get(&f, "/v1/reports/messages?" MARCH "&order_event=purchase"));
	want_int(r, "totals/converted", 1);
	want_num(r, "totals/revenue", 0);
	resp_free(r);
	/* one template, any key that may read */
	r = ok(get(&f, "/v1/reports/templates/7?" MARCH));
	want_int(r, "template_id", 7);
	want_int(r, "totals/messages", 5);
	want_int(r, "totals/sent", 3);
	want_int(r, "totals/failed", 2);
	want_int(r, "totals/converted", 3);
	want_num(r, "totals/revenue", 170.75);
	resp_free(r);
	r = ok(get(&f, "/v1/reports/templates/8?" MARCH));
	want_int(r, "totals/messages", 0);
	ck_assert(json_is_null(at(r->json, "totals/rates/open")));
	resp_free(r);
	r = ok(get(&f, "/v1/reports/templates/8?from=2026-04-01&to=2026-05-01"));
	want_int(r, "totals/messages", 1);
	want_int(r, "totals/sent", 1);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(campaign_report_per_run_and_attribution_once)
{
	fx f;
	fx_open(&f);
	seed(&f);
	resp *r = ok(get(&f, "/v1/reports/campaigns/3?" MARCH "&grouping=week"));
	want_int(r, "campaign_id", 3);
	want_int(r, "totals/audience", 3);
	want_int(r, "totals/messages", 3);
	want_int(r, "totals/sent", 2);
	want_int(r, "totals/failed", 1);
	want_int(r, "totals/delivered", 2);
	want_int(r, "totals/opened", 2);
	want_int(r, "totals/clicked", 2);
	want_int(r, "totals/unsubscribed", 1);
	/* c1's 100 (last click 40960) and c2's "20.25"; c1's 50.5 belongs to the rule's later click */
	want_int(r, "totals/converted", 2);
	want_num(r, "totals/revenue", 120.25);
	want_num(r, "totals/rates/open", 1.0);
	want_num(r, "totals/rates/unsubscribe", 0.5);
	ck_assert_int_eq(json_array_size(at(r->json, "runs")), 2);
	want_int(r, "runs/0/run_id", 1);
	want_str(r, "runs/0/run_at", "2026-03-02T10:00:00Z");
	want_int(r, "runs/0/audience", 3);
	want_int(r, "runs/0/converted", 2);
	want_int(r, "runs/1/run_id", 2);
	want_int(r, "runs/1/audience", 0);
	want_int(r, "runs/1/messages", 0);
	want_str(r, "runs/1/error", "segment broken");
	want_str(r, "periods/0/period", "2026-03-02");
	want_int(r, "periods/0/audience", 3);
	want_int(r, "periods/0/messages", 3);
	resp_free(r);
	/* the May run is outside March */
	r = ok(get(&f, "/v1/reports/campaigns/3?from=2026-05-01&to=2026-06-01"));
	want_int(r, "totals/audience", 9);
	want_int(r, "totals/messages", 0);
	want_int(r, "runs/0/run_id", 3);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(dimension_report_per_value_with_cursor)
{
	fx f;
	fx_open(&f);
	seed(&f);
	/* point of sale, in Berlin: contact 4 (Feb 28 23:30 UTC) registered on March 1st */
	resp *r = ok(get(&f, "/v1/reports/dimensions?dimension=pos&" MARCH));
	want_str(r, "dimension", "pos");
	want_int(r, "totals/registrations", 3);
	want_int(r, "totals/consents", 3);
	want_int(r, "totals/messages", 6);
	want_int(r, "totals/codes_issued", 1);
	want_int(r, "totals/codes_redeemed", 2);
	want_int(r, "totals/sales", 7);
	want_num(r, "totals/revenue", 222.75);
	ck_assert_int_eq(json_array_size(at(r->json, "data")), 3);
	ck_assert(json_is_null(at(r->json, "data/0/value")));
	want_int(r, "data/0/registrations", 1);
	want_int(r, "data/0/messages", 1);
	want_int(r, "data/0/sales", 1);
	want_num(r, "data/0/revenue", 7);
	want_str(r, "data/1/value", "P1");
	want_int(r, "data/1/registrations", 2); /* 1 and 2; 5 was merged into 1 */
	want_int(r, "data/1/consents", 2);      /* 2's was a revocation */
	want_int(r, "data/1/messages", 4);
	want_int(r, "data/1/codes_issued", 1);
	want_int(r, "data/1/codes_redeemed", 1);
	want_int(r, "data/1/sales", 5);
	want_num(r, "data/1/revenue", 205.75);
	want_str(r, "data/2/value", "P2");
	want_int(r, "data/2/registrations", 0);
	want_int(r, "data/2/consents", 1);
	want_int(r, "data/2/codes_issued", 0);
	want_int(r, "data/2/codes_redeemed", 1);
	want_int(r, "data/2/sales", 1);
	want_num(r, "data/2/revenue", 10);
	ck_assert(json_is_null(at(r->json, "next_cursor")));
	resp_free(r);
	/* in UTC contact 4 registered in February */
	r = ok(get(&f, "/v1/reports/dimensions?dimension=pos&" MARCH "&time_zone=UTC"));
	want_int(r, "totals/registrations", 2);
	resp_free(r);
	/* pages of 2, then the rest */
	r = ok(get(&f, "/v1/reports/dimensions?dimension=adv&" MARCH "&limit=2"));
	ck_assert_int_eq(json_array_size(at(r->json, "data")), 2);
	ck_assert(json_is_null(at(r->json, "data/0/value")));
	want_str(r, "data/1/value", "A");
	want_int(r, "data/1/sales", 4);
	want_num(r, "data/1/revenue", 165.5);
	char cur[600];
	ck_assert(json_is_string(at(r->json, "next_cursor")));
	snprintf(cur, sizeof cur, "%s", json_string_value(at(r->json, "next_cursor")));
	resp_free(r);
	r = ok(get(&f, "/v1/reports/dimensions?dimension=adv&" MARCH "&limit=2&cursor=%s", cur));
	ck_assert_int_eq(json_array_size(at(r->json, "data")), 1);
	want_str(r, "data/0/value", "B");
	want_int(r, "data/0/sales", 2);
	want_num(r, "data/0/revenue", 50.25);
	want_int(r, "totals/sales", 7);
	ck_assert(json_is_null(at(r->json, "next_cursor")));
	resp_free(r);
	/* a key no contact has: everything under "no value" */
	r = ok(get(&f, "/v1/reports/dimensions?dimension=city&" MARCH));
	ck_assert_int_eq(json_array_size(at(r->json, "data")), 1);
	ck_assert(json_is_null(at(r->json, "data/0/value")));
	want_int(r, "data/0/sales", 7);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(repeat_purchases_maudau)
{
	fx f;
	fx_open(&f);
	seed(&f);
	/* first-time buyers in March: 1 (again after 2 d 2 h), 2 (12 d), 4 (36 d); 3 bought first in February */
	resp *r = ok(get(&f, "/v1/reports/repeat-purchases?" MARCH "&grouping=month"));
	want_int(r, "totals/first_time_buyers", 3);
	want_int(r, "totals/second_purchase_within", 2);
	want_num(r, "totals/second_purchase_rate", 0.6667);
	want_int(r, "totals/second_purchase_ever", 3);
	want_int(r, "totals/median_seconds_to_second_purchase", 12 * 86400);
	want_num(r, "totals/median_days_to_second_purchase", 12.0);
	want_int(r, "within_days", 30);
	want_str(r, "periods/0/period", "2026-03-01");
	want_int(r, "periods/0/first_time_buyers", 3);
	resp_free(r);
	r = ok(get(&f, "/v1/reports/repeat-purchases?" MARCH "&within_days=40"));
	want_int(r, "totals/second_purchase_within", 3);
	want_num(r, "totals/second_purchase_rate", 1.0);
	resp_free(r);
	r = ok(get(&f, "/v1/reports/repeat-purchases?from=2026-01-01&to=2026-02-01"));
	want_int(r, "totals/first_time_buyers", 0);
	ck_assert(json_is_null(at(r->json, "totals/second_purchase_rate")));
	ck_assert(json_is_null(at(r->json, "totals/median_days_to_second_purchase")));
	resp_free(r);
	fx_close(&f);
}
END_TEST

/* Every fact table's rows and newest row version: reading must not change them. */
static char *fingerprint(fx *f)
{
	const char *p[] = {f->t.schema};
	PGresult *r;
	hr_err e = {0};
	ck_assert_msg(hr_db_query(f->c,
				  "SELECT string_agg(table_name || '=' || (xpath('/row/c/text()', query_to_xml(format("
				  "'SELECT count(*) || '':'' || coalesce(max(xmin::text::bigint), 0) AS c FROM %I.%I', "
				  "table_schema, table_name), false, true, '')))[1]::text, ',' ORDER BY table_name) "
				  "FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema = $1",
				  1, p, &r, &e),
		      "%s", e.msg);
	char *fp = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return fp;
}

START_TEST(bad_parameters_are_422_naming_each)
{
	fx f;
	fx_open(&f);
	seed(&f);
	char *before = fingerprint(&f);
	static const struct {
		const char *path, *param;
	} bad[] = {
		{"/v1/reports/messages?grouping=hour", "grouping"},
		{"/v1/reports/messages?from=2026-04-01&to=2026-03-01", "to"},
		{"/v1/reports/messages?from=2026-03-01&to=2026-03-01", "to"},
		{"/v1/reports/messages?from=2025-01-01&to=2026-03-01", "to"},
		{"/v1/reports/messages?from=2026-02-30&to=2026-03-01", "from"},
		{"/v1/reports/messages?from=2026-03-01T00:00:00&to=2026-03-02", "from"},
		{"/v1/reports/messages?from=yesterday", "from"},
		{"/v1/reports/messages?to=2026-03-01T25:00:00Z", "to"},
		{"/v1/reports/messages?window_days=0", "window_days"},
		{"/v1/reports/messages?window_days=91", "window_days"},
		{"/v1/reports/messages?by=contact", "by"},
		{"/v1/reports/messages?time_zone=Mars/Olympus", "time_zone"},
		{"/v1/reports/messages?time_zone=..%2F..%2Fetc%2Fpasswd", "time_zone"},
		{"/v1/reports/messages?order_event=", "order_event"},
		{"/v1/reports/messages?reply_event=a%01b", "reply_event"},
		{"/v1/reports/messages?frm=2026-03-01", "frm"},
		{"/v1/reports/templates/7?by=template", "by"},
		{"/v1/reports/campaigns/3?grouping=year", "grouping"},
		{"/v1/reports/dimensions", "dimension"},
		{"/v1/reports/dimensions?dimension=pos'%3B%20DROP%20TABLE%20contacts%3B--", "dimension"},
		{"/v1/reports/dimensions?dimension=a%20b", "dimension"},
		{"/v1/reports/dimensions?dimension=pos&limit=501", "limit"},
		{"/v1/reports/dimensions?dimension=pos&limit=0", "limit"},
		{"/v1/reports/dimensions?dimension=pos&cursor=zz", "cursor"},
		{"/v1/reports/dimensions?dimension=pos&cursor=76313a78", "cursor"},
		{"/v1/reports/repeat-purchases?within_days=366", "within_days"},
		{"/v1/reports/repeat-purchases?grouping=quarter", "grouping"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		resp *r = get(&f, "%s", bad[i].path);
		expect_problem(r, 422, bad[i].param);
		resp_free(r);
	}
	/* several at once: each is named */
	resp *r = get(&f, "/v1/reports/dimensions?dimension=&limit=x&grouping=day&from=2026-13-01");
	expect_problem(r, 422, "dimension");
	expect_problem(r, 422, "limit");
	expect_problem(r, 422, "grouping");
	expect_problem(r, 422, "from");
	resp_free(r);
	/* a send key may not read reports */
	r = call("GET", "/v1/reports/messages", f.send, NULL, NULL);
	expect_problem(r, 403, NULL);
	resp_free(r);
	char *after = fingerprint(&f);
	ck_assert_str_eq(before, after);
	hr_free(before);
	hr_free(after);
	fx_close(&f);
}
END_TEST

START_TEST(another_tenants_ids_are_404)
{
	fx a, b;
	fx_open(&a);
	fx_open(&b);
	seed(&b);
	static const char *const paths[] = {"/v1/reports/templates/7", "/v1/reports/campaigns/3",
					    "/v1/reports/templates/0", "/v1/reports/campaigns/x1",
					    "/v1/reports/templates/99999999999999999999"};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		resp *r = get(&a, "%s", paths[i]);
		expect_problem(r, 404, NULL);
		ck_assert_ptr_null(strstr(r->body, "spring"));
		resp_free(r);
	}
	/* and b sees its own */
	resp *r = ok(get(&b, "/v1/reports/campaigns/3?" MARCH));
	want_int(r, "totals/messages", 3);
	resp_free(r);
	/* a's message report holds none of b's messages */
	r = ok(get(&a, "/v1/reports/messages?" MARCH));
	want_int(r, "totals/messages", 0);
	resp_free(r);
	fx_close(&a);
	fx_close(&b);
}
END_TEST

Suite *reports_suite(void);
Suite *reports_suite(void)
{
	Suite *s = suite_create("reports");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, message_figures_per_template_period_and_origin);
	tcase_add_test(tc, campaign_report_per_run_and_attribution_once);
	tcase_add_test(tc, dimension_report_per_value_with_cursor);
	tcase_add_test(tc, repeat_purchases_maudau);
	tcase_add_test(tc, bad_parameters_are_422_naming_each);
	tcase_add_test(tc, another_tenants_ids_are_404);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(reports_suite());
}
