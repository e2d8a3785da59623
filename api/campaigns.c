/*
 * campaigns.c -- /v1/campaigns and /v1/calendar.
 *
 * A campaign = a segment + per channel a template and a provider account
 * (the campaign sends on `channel`; with `fallback`, the messages not
 * delivered within `fallback_after` -- default 10 minutes -- are sent again
 * on that channel: the channel cascade, docs/cascade.md) + a calendar (scheduler/calendar.h,
 * with the tenant's time zone and quiet hours applied: campaigns_calendar).
 * Creating one activates it at herald time now; the scheduler's campaign
 * runner (scheduler/campaigns.c) runs it when due.  Every change NOTIFYs
 * `herald_campaigns` with the tenant id in the request's transaction, so the
 * runner re-reads that tenant's next due instant after the commit.
 *
 * States (one function, transition(), moves them and refuses illegal moves
 * with a 409 that says why):
 *   active --pause--> paused --resume--> active
 *   active | paused --cancel--> cancelled       (held batches are deleted)
 *   active --(runner: no run left, nothing held)--> completed
 * Pausing stops everything not yet in the outbox: a run's later batches
 * wait in campaign_batches and the runner moves only those of active
 * campaigns; batches already in the outbox were due and are being sent.
 *
 * Validation that needs the control schema (provider accounts) and the
 * calendar (tenant settings) runs in campaigns_pre, before the tenant
 * transaction; segment and template ids are checked in the handler.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "api.h"
#include "campaigns.h"
#include "clock.h"
#include "db.h"

typedef struct camp_in {
	const char *name, *channel, *fallback;
	int64_t segment_id;
	char *messages, *calendar; /* JSON text */
	hr_calendar *cal;
	char fallback_after[16];   /* seconds (text) */
} camp_in;

static void camp_free(void *p)
{
	camp_in *m = p;
	hr_free(m->messages);
	hr_free(m->calendar);
	hr_calendar_free(m->cal);
	hr_free(m);
}

static bool campaign_channel(const char *c)
{
	return !strcmp(c, "email") || !strcmp(c, "sms") || !strcmp(c, "messenger");
}

void campaigns_pre(api_req *r)
{
	static const char *const allowed[] = {"name", "segment_id", "channel", "messages", "fallback",
					      "fallback_after", "calendar", NULL};
	camp_in *m = hr_calloc(1, sizeof *m);
	r->state = m;
	r->state_free = camp_free;
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	m->name = jv_str(&v, r->json, "", "name", true, 200);
	bool present;
	jv_int(&v, r->json, "", "segment_id", true, 1, INT64_MAX, &present, &m->segment_id);
	m->channel = jv_str(&v, r->json, "", "channel", true, 16);
	if (m->channel && !campaign_channel(m->channel))
		jv_add(&v, "", "channel", "must be email, sms or messenger (contacts hold those addresses)");
	m->fallback = jv_str(&v, r->json, "", "fallback", false, 16);
	/* the validity window of `channel` before `fallback`: "10m" or seconds, 1 minute to 7 days */
	json_t *fa = json_object_get(r->json, "fallback_after");
	int64_t fa_s = 600;
	if (json_is_string(fa)) {
		int64_t us;
		hr_err ferr = {0};
		if (!hr_duration_parse(json_string_value(fa), &us, &ferr) || us % 1000000)
			fa_s = -1;
		else
			fa_s = us / 1000000;
	} else if (json_is_integer(fa)) {
		fa_s = json_integer_value(fa);
	} else if (fa && !json_is_null(fa)) {
		fa_s = -1;
	}
	if (fa_s < 60 || fa_s > 7 * 86400)
		jv_add(&v, "", "fallback_after", "must be a duration from 1m to 7d, e.g. \"10m\", or seconds");
	snprintf(m->fallback_after, sizeof m->fallback_after, "%lld", (long long)fa_s);
	json_t *msgs = jv_obj(&v, r->json, "", "messages", true);
	json_t *cal = jv_obj(&v, r->json, "", "calendar", true);
	if (msgs) {
		const char *key;
		json_t *e;
		json_object_foreach(msgs, key, e) {
			char *base = jv_ptr("/messages", key);
			if (!campaign_channel(key)) {
				jv_add(&v, base, NULL, "not a channel: email, sms or messenger");
			} else if (!json_is_object(e)) {
				jv_add(&v, base, NULL, "must be an object {template, provider}");
			} else {
				static const char *const mallowed[] = {"template", "provider", NULL};
				int64_t tid;
				jv_only(&v, e, base, mallowed);
				jv_int(&v, e, base, "template", true, 1, INT64_MAX, &present, &tid);
				jv_str(&v, e, base, "provider", true, 40);
			}
			hr_free(base);
		}
		if (m->channel && campaign_channel(m->channel) && !json_object_get(msgs, m->channel))
			jv_add(&v, "/messages", NULL, "needs an entry for the campaign's channel '%s'", m->channel);
		if (m->fallback && !json_object_get(msgs, m->fallback))
			jv_add(&v, "", "fallback", "must be a channel of messages");
		else if (m->fallback && m->channel && !strcmp(m->fallback, m->channel))
			jv_add(&v, "", "fallback", "must differ from channel");
	}
	if (cal) {
		m->calendar = api_dump(cal);
		hr_err err = {0};
		if (!campaigns_calendar(m->calendar, r->tenant_settings, &m->cal, &err)) {
			char *ptr = hr_sprintf("/calendar%s", err.field);
			jv_add(&v, ptr, NULL, "%s", err.msg);
			hr_free(ptr);
		}
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	m->messages = api_dump(msgs);
	/* Each provider account must exist for this tenant and serve its channel. */
	const char *key;
	json_t *e;
	json_object_foreach(msgs, key, e) {
		const char *prov = json_string_value(json_object_get(e, "provider"));
		char *base = jv_ptr("/messages", key);
		bool ok = api_provider_check(r, base, prov, key);
		hr_free(base);
		if (!ok)
			return;
	}
}

/* Herald time now, in unix seconds, from the database. */
static bool herald_now(api_req *r, int64_t *now)
{
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT extract(epoch FROM herald_clock.now())::bigint", 0, NULL, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	*now = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return true;
}

static bool notify(api_req *r)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)r->tenant.id);
	const char *p[] = {tid};
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT pg_notify('" HR_CAMPAIGNS_CHANNEL "', $1)", 1, p, NULL, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	return true;
}

/* Segment and templates of the body exist (422 naming the field otherwise). */
static bool check_refs(api_req *r, camp_in *m)
{
	char sid[32];
	snprintf(sid, sizeof sid, "%lld", (long long)m->segment_id);
	const char *p[] = {sid, m->messages};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT EXISTS (SELECT 1 FROM segments WHERE id = $1), "
			 "(SELECT min(e.key) FROM jsonb_each($2::jsonb) e WHERE NOT EXISTS (SELECT 1 FROM templates t "
			 "WHERE t.id = (e.value->>'template')::bigint AND t.channel = e.key))",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	bool seg = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	char bad[32] = "";
	if (!PQgetisnull(res, 0, 1))
		snprintf(bad, sizeof bad, "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	if (seg && !bad[0])
		return true;
	jv v;
	jv_init(&v);
	if (!seg)
		jv_add(&v, "", "segment_id", "no such segment");
	if (bad[0]) {
		char *base = jv_ptr("/messages", bad);
		jv_add(&v, base, "template", "no such template for this channel");
		hr_free(base);
	}
	api_problem_invalid(r, v.errors);
	return false;
}

#define CAMPAIGN_JSON                                                                                       \
	"jsonb_build_object('id', id, 'name', name, 'segment_id', segment_id, 'channel', channel, "         \
	"'messages', messages, 'fallback', fallback, 'fallback_after', fallback_after_s, "                  \
	"'calendar', calendar, 'state', state, "                                                    \
	"'activated_at', activated_at, 'next_run_at', next_run_at, 'created_at', created_at, "             \
	"'updated_at', updated_at)::text"

static void answer(api_req *r, PGresult *res, int status)
{
	json_t *o = db_json(PQgetvalue(res, 0, 0));
	if (status == 201)
		snprintf(r->location, sizeof r->location, "/v1/campaigns/%lld",
			 (long long)json_integer_value(json_object_get(o, "id")));
	api_json(r, status, o);
}

void campaigns_create(api_req *r)
{
	camp_in *m = r->state;
	int64_t now;
	if (!check_refs(r, m) || !herald_now(r, &now))
		return;
	int64_t next = 0;
	bool more = hr_calendar_next_run(m->cal, now, now - 1, &next);
	char sid[32], act[32], nx[32];
	snprintf(sid, sizeof sid, "%lld", (long long)m->segment_id);
	snprintf(act, sizeof act, "%lld", (long long)now);
	snprintf(nx, sizeof nx, "%lld", (long long)next);
	const char *p[] = {m->name, sid, m->channel, m->messages, m->fallback, m->calendar, act, more ? nx : NULL,
			   more ? "active" : "completed", m->fallback_after};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "INSERT INTO campaigns (name, segment_id, channel, messages, fallback, calendar, state, "
			 "activated_at, next_run_at, fallback_after_s) VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $9, "
			 "to_timestamp($7::bigint), to_timestamp($8::bigint), $10::int) RETURNING " CAMPAIGN_JSON,
			 10, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (notify(r))
		answer(r, res, 201);
	PQclear(res);
}

/* Lock the campaign; 404 when missing.  Columns: state, activated_at, next_run_at (unix s), calendar. */
static PGresult *lock_campaign(api_req *r, const char *id)
{
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT state, extract(epoch FROM activated_at)::bigint, "
			 "extract(epoch FROM next_run_at)::bigint, calendar::text FROM campaigns WHERE id = $1 FOR UPDATE",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return NULL;
	}
	if (PQntuples(res) == 1)
		return res;
	PQclear(res);
	api_problem(r, 404, "not-found", "Not found", "no such campaign", NULL);
	return NULL;
}

void campaigns_put(api_req *r)
{
	camp_in *m = r->state;
	char id[24];
	if (!api_path_id(r, 0, id, "campaign"))
		return;
	PGresult *cur = lock_campaign(r, id);
	if (!cur)
		return;
	const char *state = PQgetvalue(cur, 0, 0);
	if (strcmp(state, "active") && strcmp(state, "paused")) {
		char d[128];
		snprintf(d, sizeof d, "the campaign is %s; only an active or paused campaign can be changed", state);
		api_problem(r, 409, "invalid-state", "Wrong campaign state", d, NULL);
		PQclear(cur);
		return;
	}
	int64_t activated = strtoll(PQgetvalue(cur, 0, 1), NULL, 10), now;
	PQclear(cur);
	if (!check_refs(r, m) || !herald_now(r, &now))
		return;
	/* The new calendar applies from now on: runs before now are not caught up. */
	int64_t next = 0;
	bool more = hr_calendar_next_run(m->cal, activated, now - 1, &next);
	char sid[32], nx[32];
	snprintf(sid, sizeof sid, "%lld", (long long)m->segment_id);
	snprintf(nx, sizeof nx, "%lld", (long long)next);
	const char *p[] = {id, m->name, sid, m->channel, m->messages, m->fallback, m->calendar, more ? nx : NULL,
			   m->fallback_after};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "UPDATE campaigns SET name = $2, segment_id = $3, channel = $4, messages = $5::jsonb, "
			 "fallback = $6, calendar = $7::jsonb, next_run_at = to_timestamp($8::bigint), "
			 "fallback_after_s = $9::int, updated_at = now() WHERE id = $1 RETURNING " CAMPAIGN_JSON,
			 9, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (notify(r))
		answer(r, res, 200);
	PQclear(res);
}

void campaigns_list(api_req *r)
{
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT coalesce(jsonb_agg(" CAMPAIGN_JSON "::jsonb ORDER BY id), '[]')::text FROM campaigns",
			 0, NULL, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	json_t *out = json_object();
	json_object_set_new(out, "campaigns", db_json(PQgetvalue(res, 0, 0)));
	PQclear(res);
	api_json(r, 200, out);
}

void campaigns_get(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "campaign"))
		return;
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT " CAMPAIGN_JSON " FROM campaigns WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 1)
		answer(r, res, 200);
	else
		api_problem(r, 404, "not-found", "Not found", "no such campaign", NULL);
	PQclear(res);
}

void campaigns_delete(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "campaign"))
		return;
	PGresult *cur = lock_campaign(r, id);
	if (!cur)
		return;
	const char *state = PQgetvalue(cur, 0, 0);
	if (!strcmp(state, "active") || !strcmp(state, "paused")) {
		char d[128];
		snprintf(d, sizeof d, "the campaign is %s; cancel it before deleting it", state);
		api_problem(r, 409, "invalid-state", "Wrong campaign state", d, NULL);
		PQclear(cur);
		return;
	}
	PQclear(cur);
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "DELETE FROM campaigns WHERE id = $1 RETURNING " CAMPAIGN_JSON, 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	answer(r, res, 200);
	PQclear(res);
}

typedef enum { PAUSE, RESUME, CANCEL } action;

/* The one function that moves a campaign between states. */
static void transition(api_req *r, action a)
{
	static const char *const verb[] = {"paused", "resumed", "cancelled"};
	char id[24];
	if (!api_path_id(r, 0, id, "campaign"))
		return;
	PGresult *cur = lock_campaign(r, id);
	if (!cur)
		return;
	char state[16];
	snprintf(state, sizeof state, "%s", PQgetvalue(cur, 0, 0));
	bool ok = a == PAUSE ? !strcmp(state, "active")
		: a == RESUME ? !strcmp(state, "paused")
			      : !strcmp(state, "active") || !strcmp(state, "paused");
	if (!ok) {
		char d[160];
		if (!strcmp(state, "cancelled") || !strcmp(state, "completed"))
			snprintf(d, sizeof d, "the campaign is %s and cannot be %s", state, verb[a]);
		else
			snprintf(d, sizeof d, "the campaign is %s; only %s campaign can be %s", state,
				 a == PAUSE ? "an active" : "a paused", verb[a]);
		api_problem(r, 409, "invalid-state", "Wrong campaign state", d, NULL);
		PQclear(cur);
		return;
	}
	int64_t activated = strtoll(PQgetvalue(cur, 0, 1), NULL, 10);
	bool has_next = !PQgetisnull(cur, 0, 2);
	int64_t next = has_next ? strtoll(PQgetvalue(cur, 0, 2), NULL, 10) : 0;
	char *cal_json = hr_strdup(PQgetvalue(cur, 0, 3));
	PQclear(cur);
	const char *p[] = {id, NULL};
	char nx[32];
	hr_err err = {0};
	const char *sql;
	if (a == PAUSE) {
		sql = "UPDATE campaigns SET state = 'paused', updated_at = now() WHERE id = $1 AND $2::text IS NULL";
	} else if (a == CANCEL) {
		sql = "WITH d AS (DELETE FROM campaign_batches h USING campaign_runs x WHERE x.id = h.run_id "
		      "AND x.campaign_id = $1) UPDATE campaigns SET state = 'cancelled', next_run_at = NULL, "
		      "updated_at = now() WHERE id = $1 AND $2::text IS NULL";
	} else {
		/* A recurring run missed while paused is skipped, not caught up; a one-shot run
		 * that was due while paused is sent now. */
		int64_t now;
		hr_calendar *cal = NULL;
		if (!herald_now(r, &now)) {
			hr_free(cal_json);
			return;
		}
		if (!campaigns_calendar(cal_json, r->tenant_settings, &cal, &err)) {
			char d[1200];
			snprintf(d, sizeof d, "the campaign's calendar is no longer valid (%s: %s); change it first",
				 err.field, err.msg);
			api_problem(r, 409, "invalid-state", "Wrong campaign state", d, NULL);
			hr_free(cal_json);
			return;
		}
		if (has_next && next < now && hr_calendar_kind_of(cal) == HR_CAL_RECURRING)
			has_next = hr_calendar_next_run(cal, activated, now - 1, &next);
		hr_calendar_free(cal);
		snprintf(nx, sizeof nx, "%lld", (long long)next);
		p[1] = has_next ? nx : NULL;
		sql = "UPDATE campaigns SET state = 'active', next_run_at = to_timestamp($2::bigint), "
		      "updated_at = now() WHERE id = $1";
	}
	hr_free(cal_json);
	if (!hr_db_query(r->db, sql, 2, p, NULL, &err)) {
		api_problem_err(r, &err);
		return;
	}
	PGresult *res;
	const char *pg[] = {id};
	if (!hr_db_query(r->db, "SELECT " CAMPAIGN_JSON " FROM campaigns WHERE id = $1", 1, pg, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (notify(r))
		answer(r, res, 200);
	PQclear(res);
}

void campaigns_pause(api_req *r)
{
	transition(r, PAUSE);
}

void campaigns_resume(api_req *r)
{
	transition(r, RESUME);
}

void campaigns_cancel(api_req *r)
{
	transition(r, CANCEL);
}

void campaigns_runs(api_req *r)
{
	char id[24];
	if (!api_path_id(r, 0, id, "campaign"))
		return;
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $1), coalesce((SELECT jsonb_agg("
			 "jsonb_build_object('id', x.id, 'run_at', x.run_at, 'started_at', x.started_at, 'channel', "
			 "x.channel, 'template_id', x.template_id, 'template_version', x.template_version, "
			 "'provider', x.provider, 'recipients', x.recipients, 'held', coalesce((SELECT "
			 "sum(cardinality(h.addresses)) FROM campaign_batches h WHERE h.run_id = x.id), 0), "
			 "'error', x.error) ORDER BY x.run_at) FROM campaign_runs x WHERE x.campaign_id = $1), "
			 "'[]')::text",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
		PQclear(res);
		api_problem(r, 404, "not-found", "Not found", "no such campaign", NULL);
		return;
	}
	json_t *out = json_object();
	json_object_set_new(out, "runs", db_json(PQgetvalue(res, 0, 1)));
	PQclear(res);
	api_json(r, 200, out);
}

static void bad_param(api_req *r, const char *name, const char *detail)
{
	json_t *e = json_array();
	json_array_append_new(e, json_pack("{s:s, s:s}", "parameter", name, "detail", detail));
	char *d = hr_sprintf("%s: %s", name, detail);
	api_problem(r, 400, "bad-parameter", "Bad query parameter", d, e);
	hr_free(d);
}

#define CALENDAR_MAX 5000 /* entries of one calendar view */

/*
 * GET /v1/calendar?from=&to=: every campaign's runs in [from, to): the runs
 * that happened (campaign_runs) and, for active and paused campaigns, the
 * runs their calendars plan from next_run_at on (hr_calendar_runs).
 */
void calendar_get(api_req *r)
{
	const char *from = api_query(r, "from"), *to = api_query(r, "to");
	if (!from || !jv_rfc3339(from)) {
		bad_param(r, "from", "an RFC 3339 date-time is required");
		return;
	}
	if (!to || !jv_rfc3339(to)) {
		bad_param(r, "to", "an RFC 3339 date-time is required");
		return;
	}
	const char *p[] = {from, to};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT extract(epoch FROM $1::timestamptz)::bigint, extract(epoch FROM $2::timestamptz)::bigint",
			 2, p, &res, &err)) {
		bad_param(r, "from", "not a valid date-time");
		return;
	}
	int64_t f = strtoll(PQgetvalue(res, 0, 0), NULL, 10), t = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	if (t <= f || t - f > 366 * 86400LL) {
		bad_param(r, "to", "must be after from, at most 366 days later");
		return;
	}
	json_t *items = json_array();
	bool truncated = false;
	/* runs that happened */
	if (!hr_db_query(r->db,
			 "SELECT coalesce(jsonb_agg(jsonb_build_object('campaign_id', c.id, 'name', c.name, 'state', "
			 "c.state, 'run_at', x.run_at, 'status', 'done', 'run_id', x.id, 'recipients', x.recipients) "
			 "ORDER BY x.run_at, c.id), '[]')::text FROM campaign_runs x JOIN campaigns c ON "
			 "c.id = x.campaign_id WHERE x.run_at >= $1::timestamptz AND x.run_at < $2::timestamptz",
			 2, p, &res, &err)) {
		json_decref(items);
		api_problem_err(r, &err);
		return;
	}
	json_t *done = db_json(PQgetvalue(res, 0, 0));
	PQclear(res);
	json_array_extend(items, done);
	json_decref(done);
	if (!hr_db_query(r->db,
			 "SELECT id, name, state, calendar::text, extract(epoch FROM activated_at)::bigint, "
			 "extract(epoch FROM next_run_at)::bigint FROM campaigns WHERE state IN ('active', 'paused') "
			 "AND next_run_at IS NOT NULL ORDER BY id",
			 0, NULL, &res, &err)) {
		json_decref(items);
		api_problem_err(r, &err);
		return;
	}
	int64_t *runs = hr_malloc(CALENDAR_MAX * sizeof *runs);
	for (int i = 0; i < PQntuples(res) && !truncated; i++) {
		hr_calendar *cal = NULL;
		hr_err cerr = {0};
		if (!campaigns_calendar(PQgetvalue(res, i, 3), r->tenant_settings, &cal, &cerr))
			continue; /* a calendar the tenant's settings broke plans nothing; its runs say why */
		int64_t activated = strtoll(PQgetvalue(res, i, 4), NULL, 10),
			next = strtoll(PQgetvalue(res, i, 5), NULL, 10);
		int64_t lo = next > f ? next : f;
		int room = CALENDAR_MAX - (int)json_array_size(items);
		int n = room > 0 ? hr_calendar_runs(cal, activated, lo, t, runs, room) : 0;
		if (n == room)
			truncated = true;
		for (int k = 0; k < n; k++) {
			char at[32];
			time_t tt = (time_t)runs[k];
			struct tm tm;
			gmtime_r(&tt, &tm);
			strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
			json_array_append_new(items,
					      json_pack("{s:I, s:s, s:s, s:s, s:s}", "campaign_id",
							(json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "name",
							PQgetvalue(res, i, 1), "state", PQgetvalue(res, i, 2), "run_at",
							at, "status", "planned"));
		}
		hr_calendar_free(cal);
	}
	hr_free(runs);
	PQclear(res);
	json_t *out = json_pack("{s:o, s:b}", "runs", items, "truncated", truncated);
	api_json(r, 200, out);
}
