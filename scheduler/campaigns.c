/*
 * campaigns.c -- the campaign runner (see campaigns.h and docs/campaigns.md).
 *
 * Due instants.  A run's recipients get their due instant from the calendar
 * (hr_calendar_due): it depends on the recipient's zone (local-time sends,
 * quiet hours) and on the recipient's place in the run (spread windows).
 * The runner computes, in C, a table of dues per (zone present among the
 * contacts, spread slot) and hands it to the one fan-out statement, which
 * joins each recipient to its entry.  A spread window is cut into at most
 * 1,024 slots of at least a minute; a batch never spans two dues.
 *
 * Herald time vs the dispatcher.  Batches due now go to the outbox with
 * due_at = now() (the dispatcher works on the database's real clock); the
 * others wait in campaign_batches and are moved to the outbox by
 * hr_audience_release() when herald time reaches them.  So moving herald
 * time forward (tests, the demo) makes them due at once, and pausing a
 * campaign simply stops the moves (nothing of it waits in the outbox).
 */
#include "campaigns.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "audience.h"
#include "cascade.h"
#include "clock.h"
#include "db.h"
#include "log.h"
#include "segment.h"

#define MAX_SLOTS 1024
#define MAX_DUES 100000 /* zones x slots */
#define RETRY_US (5 * 1000000LL)

bool campaigns_calendar(const char *calendar_json, const json_t *tenant_settings, hr_calendar **out, hr_err *err)
{
	*out = NULL;
	json_error_t je;
	json_t *cal = json_loads(calendar_json, 0, &je);
	if (!cal)
		return hr_fail(err, HR_ERR_INVALID, "", "the calendar is not JSON: %s", je.text);
	json_t *qh = json_object_get(tenant_settings, "quiet_hours");
	if (json_is_object(cal) && qh && !json_object_get(cal, "quiet_hours"))
		json_object_set(cal, "quiet_hours", qh);
	if (json_is_object(cal) && json_is_null(json_object_get(cal, "quiet_hours")))
		json_object_del(cal, "quiet_hours");
	char *text = json_dumps(cal, JSON_COMPACT);
	json_decref(cal);
	const char *tz = json_string_value(json_object_get(tenant_settings, "time_zone"));
	bool ok = hr_calendar_parse(text, tz, out, err);
	free(text);
	return ok;
}

typedef struct ctenant {
	uint32_t id;
	char slug[48], schema[64], role[64];
	bool active, dirty;
	int64_t next_us; /* herald time; INT64_MAX = nothing due ever */
} ctenant;

struct campaigns {
	char *dsn;
	PGconn *db;
	campaigns_tenants_fn tenants_fn;
	campaigns_hold_fn hold;
	campaigns_unhold_fn unhold;
	void *hold_ud;
	pthread_t thread;
	int wake[2];
	atomic_bool stop;
	ctenant *t;
	int nt;
	bool reload;
};

static void reload_tenants(campaigns *c, hr_err *err, bool *ok)
{
	PGresult *r;
	*ok = c->tenants_fn(c->db, &r, err);
	if (!*ok)
		return;
	int n = PQntuples(r);
	ctenant *t = hr_calloc((size_t)(n ? n : 1), sizeof *t);
	for (int i = 0; i < n; i++) {
		t[i].id = (uint32_t)strtoul(PQgetvalue(r, i, 0), NULL, 10);
		snprintf(t[i].slug, sizeof t[i].slug, "%s", PQgetvalue(r, i, 2));
		snprintf(t[i].schema, sizeof t[i].schema, "%s", PQgetvalue(r, i, 3));
		snprintf(t[i].role, sizeof t[i].role, "%s", PQgetvalue(r, i, 4));
		t[i].active = strcmp(PQgetvalue(r, i, 5), "t") == 0;
		t[i].dirty = true;
		t[i].next_us = INT64_MAX;
	}
	PQclear(r);
	hr_free(c->t);
	c->t = t;
	c->nt = n;
	c->reload = false;
}

/* Drain NOTIFYs; true when any arrived. */
static bool take_notifies(campaigns *c)
{
	PGnotify *n;
	bool any = false;
	while ((n = PQnotifies(c->db))) {
		any = true;
		if (!strcmp(n->relname, HR_CAMPAIGNS_CHANNEL)) {
			uint32_t id = (uint32_t)strtoul(n->extra, NULL, 10);
			bool found = false;
			for (int i = 0; i < c->nt; i++)
				if (c->t[i].id == id)
					c->t[i].dirty = found = true;
			if (!found)
				c->reload = true;
		} else if (!strcmp(n->relname, HR_CLOCK_CHANNEL)) {
			hr_err err = {0};
			if (!hr_clock_refresh(c->db, &err))
				hr_warn("campaigns: reading herald time: %s", err.msg);
		} else {
			c->reload = true;
		}
		PQfreemem(n);
	}
	return any;
}

static int64_t col_i64(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? INT64_MAX : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* The tenant's next due instant, read in its (open) transaction. */
#define NEXT_SQL                                                                                            \
	"SELECT (extract(epoch FROM least((SELECT min(next_run_at) FROM campaigns WHERE state = 'active'), "  \
	"(SELECT min(h.due_at) FROM campaign_batches h JOIN campaign_runs r ON r.id = h.run_id "               \
	"JOIN campaigns c ON c.id = r.campaign_id WHERE c.state = 'active'), " HR_CASCADE_NEXT_SQL ")) * 1000000)::bigint"

static bool read_next(campaigns *c, ctenant *t, hr_err *err)
{
	PGresult *r;
	if (!hr_db_tenant_begin(c->db, t->schema, t->role, err))
		return false;
	bool ok = hr_db_query(c->db, NEXT_SQL, 0, NULL, &r, err);
	hr_db_rollback(c->db);
	if (!ok)
		return false;
	t->next_us = col_i64(r, 0, 0);
	PQclear(r);
	return true;
}

static bool lookup_segment(void *ud, int64_t id, char **json, hr_err *err)
{
	PGconn *db = ud;
	char sid[32];
	snprintf(sid, sizeof sid, "%lld", (long long)id);
	const char *p[] = {sid};
	PGresult *r;
	if (!hr_db_query(db, "SELECT rule::text FROM segments WHERE id = $1", 1, p, &r, err))
		return false;
	bool found = PQntuples(r) == 1;
	if (found)
		*json = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return found ? true : hr_fail(err, HR_ERR_NOTFOUND, "", "no segment %lld", (long long)id);
}

/* Whether the calendar's dues depend on the recipient's zone, and its spread. */
static void calendar_shape(const char *calendar_json, const json_t *settings, bool *zoned, int *spread_min)
{
	json_t *cal = json_loads(calendar_json, 0, NULL);
	json_t *qh = json_object_get(cal, "quiet_hours");
	bool quiet = qh ? !json_is_null(qh) : json_is_object(json_object_get(settings, "quiet_hours"));
	*zoned = quiet || json_is_true(json_object_get(cal, "local_time_per_recipient"));
	json_t *sp = json_object_get(cal, "spread_minutes");
	*spread_min = json_is_integer(sp) ? (int)json_integer_value(sp) : 0;
	json_decref(cal);
}

/* Record why a run sent nothing. */
static bool run_error(PGconn *db, const char *run_id, const char *why, hr_err *err)
{
	const char *p[] = {run_id, why};
	return hr_db_query(db, "UPDATE campaign_runs SET error = $2 WHERE id = $1", 2, p, NULL, err);
}

/*
 * One run of one campaign (row i of the due campaigns r), in the tenant's
 * open transaction.  Returns false only on database errors (the transaction
 * is then lost); a campaign that cannot run records its error in the run.
 */
static bool run_campaign(campaigns *c, ctenant *t, const json_t *settings, PGresult *r, int i, hr_err *err)
{
	const char *cid = PQgetvalue(r, i, 0), *channel = PQgetvalue(r, i, 1), *cal_json = PQgetvalue(r, i, 3),
		   *rule = PQgetvalue(r, i, 6);
	int64_t activated = col_i64(r, i, 4), run_at = col_i64(r, i, 5);
	json_t *msgs = json_loads(PQgetvalue(r, i, 2), 0, NULL);
	json_t *m = json_object_get(msgs, channel);
	char *provider = hr_strdup(json_string_value(json_object_get(m, "provider")) ? json_string_value(
						       json_object_get(m, "provider")) : "");
	json_int_t tpl = json_integer_value(json_object_get(m, "template"));
	char run_at_s[32], tpl_s[32];
	snprintf(run_at_s, sizeof run_at_s, "%lld", (long long)run_at);
	snprintf(tpl_s, sizeof tpl_s, "%lld", (long long)tpl);
	const char *p[] = {cid, run_at_s, channel, tpl_s, provider};
	PGresult *rr;
	bool ok = hr_db_query(c->db,
			      "INSERT INTO campaign_runs (campaign_id, run_at, started_at, channel, template_id, "
			      "template_version, provider) VALUES ($1, to_timestamp($2), herald_clock.now(), $3, $4, "
			      "(SELECT current_version FROM templates WHERE id = $4 AND channel = $3), $5) "
			      "ON CONFLICT (campaign_id, run_at) DO NOTHING RETURNING id, template_version IS NULL",
			      5, p, &rr, err);
	json_decref(msgs);
	if (!ok) {
		hr_free(provider);
		return false;
	}
	hr_calendar *cal = NULL;
	hr_err cerr = {0};
	bool have_cal = campaigns_calendar(cal_json, settings, &cal, &cerr);
	if (PQntuples(rr) == 1) { /* else: this run exists already (cannot happen under the row lock) */
		char run_id[32];
		snprintf(run_id, sizeof run_id, "%s", PQgetvalue(rr, 0, 0));
		bool no_template = strcmp(PQgetvalue(rr, 0, 1), "t") == 0;
		hr_segment_sql seg = {0};
		hr_segment_opts so = {.now_unix = hr_clock_now() / 1000000, .lookup = lookup_segment,
				      .lookup_ud = c->db, .first_param = 1};
		hr_err serr = {0};
		if (!have_cal) {
			char why[1024];
			snprintf(why, sizeof why, "calendar %s: %s", cerr.field, cerr.msg);
			ok = run_error(c->db, run_id, why, err);
		} else if (no_template) {
			ok = run_error(c->db, run_id, "the template is gone or serves another channel", err);
		} else if (!hr_segment_compile(rule, &so, &seg, &serr)) {
			if (serr.kind == HR_ERR_DB) {
				*err = serr;
				ok = false;
			} else {
				char why[1024];
				snprintf(why, sizeof why, "segment %s: %s", serr.field, serr.msg);
				ok = run_error(c->db, run_id, why, err);
			}
		} else {
			bool zoned;
			int spread;
			calendar_shape(cal_json, settings, &zoned, &spread);
			char **zones = hr_calloc(1, sizeof *zones);
			zones[0] = hr_strdup("");
			int nz = 1;
			if (zoned) {
				PGresult *zr;
				ok = hr_db_query(c->db,
						 "SELECT DISTINCT time_zone FROM contacts WHERE time_zone IS NOT NULL "
						 "AND time_zone <> '' AND merged_into IS NULL LIMIT 2000",
						 0, NULL, &zr, err);
				if (ok) {
					zones = hr_realloc(zones, (size_t)(PQntuples(zr) + 1) * sizeof *zones);
					for (int k = 0; k < PQntuples(zr); k++)
						zones[nz++] = hr_strdup(PQgetvalue(zr, k, 0));
					PQclear(zr);
				}
			}
			int nslots = spread > 0 ? spread : 1;
			if (nslots > MAX_SLOTS)
				nslots = MAX_SLOTS;
			if (nslots > MAX_DUES / nz)
				nslots = MAX_DUES / nz > 0 ? MAX_DUES / nz : 1;
			int64_t *dues = hr_malloc((size_t)nz * (size_t)nslots * sizeof *dues);
			for (int z = 0; z < nz; z++)
				for (int s = 0; s < nslots; s++)
					dues[z * nslots + s] = hr_calendar_due(cal, run_at, z ? zones[z] : NULL,
									       (uint64_t)s, (uint64_t)nslots);
			hr_audience a = {.channel = channel, .where = seg.where, .nparams = seg.nparams,
					 .params = (const char *const *)seg.params,
					 .cap = hr_audience_cap_from_settings(settings), .nzones = nz,
					 .zones = (const char *const *)zones, .nslots = nslots, .dues = dues,
					 .template_id = (int64_t)tpl, .provider = provider, .origin = "campaign",
					 .origin_id = strtoll(run_id, NULL, 10), .hold_later = true};
			hr_audience_result res = {0};
			/* the template version was pinned in the run row */
			PGresult *vr = NULL;
			const char *pv[] = {run_id};
			if (ok)
				ok = hr_db_query(c->db, "SELECT template_version FROM campaign_runs WHERE id = $1", 1,
						 pv, &vr, err);
			if (ok) {
				a.template_version = atoi(PQgetvalue(vr, 0, 0));
				PQclear(vr);
				ok = hr_audience_materialise(c->db, t->id, &a, &res, err);
			}
			if (ok) {
				char n[32];
				snprintf(n, sizeof n, "%lld", (long long)res.recipients);
				const char *pu[] = {run_id, n};
				ok = hr_db_query(c->db, "UPDATE campaign_runs SET recipients = $2 WHERE id = $1", 2, pu,
						 NULL, err);
				hr_info("campaigns: tenant=%s campaign=%s run=%s recipients=%lld batches=%lld held=%lld",
					t->slug, cid, run_id, (long long)res.recipients, (long long)res.batches_now,
					(long long)res.batches_held);
			}
			hr_free(dues);
			for (int z = 0; z < nz; z++)
				hr_free(zones[z]);
			hr_free(zones);
		}
		hr_segment_sql_free(&seg);
	}
	PQclear(rr);
	hr_free(provider);
	/* Advance to the next run (none: the campaign completes once nothing is held). */
	int64_t next = 0;
	bool more = have_cal && hr_calendar_next_run(cal, activated, run_at, &next);
	hr_calendar_free(cal);
	if (!ok)
		return false;
	char next_s[32];
	snprintf(next_s, sizeof next_s, "%lld", (long long)next);
	const char *pn[] = {cid, more ? next_s : NULL};
	return hr_db_query(c->db,
			   "UPDATE campaigns SET next_run_at = to_timestamp($2::bigint), updated_at = now() WHERE id = $1",
			   2, pn, NULL, err);
}

/* Everything due for one tenant, in one transaction. */
static bool process(campaigns *c, ctenant *t, hr_err *err)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%u", t->id);
	const char *pt[] = {tid};
	PGresult *r;
	if (!hr_db_query(c->db, "SELECT settings::text FROM herald.tenants WHERE id = $1", 1, pt, &r, err))
		return false;
	json_t *settings = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
	PQclear(r);
	if (!settings)
		settings = json_object();
	int64_t mark = 0, armed = 0, fb_batches = 0, fb_msgs = 0; /* the channel cascade (cascade.h) */
	bool ok = hr_db_tenant_begin(c->db, t->schema, t->role, err);
	if (ok)
		ok = hr_cascade_mark(c->db, &mark, err);
	if (ok)
		ok = hr_db_query(c->db,
				 "SELECT c.id, c.channel, c.messages::text, c.calendar::text, "
				 "extract(epoch FROM c.activated_at)::bigint, extract(epoch FROM c.next_run_at)::bigint, "
				 "s.rule::text FROM campaigns c JOIN segments s ON s.id = c.segment_id "
				 "WHERE c.state = 'active' AND c.next_run_at <= herald_clock.now() "
				 "ORDER BY c.next_run_at, c.id FOR UPDATE OF c SKIP LOCKED",
				 0, NULL, &r, err);
	if (ok) {
		for (int i = 0; ok && i < PQntuples(r); i++)
			ok = run_campaign(c, t, settings, r, i, err);
		PQclear(r);
	}
	int64_t released = 0;
	if (ok)
		ok = hr_audience_release(c->db, t->id, &released, err);
	if (ok)
		ok = hr_cascade_arm_campaigns(c->db, mark, &armed, err) &&
		     hr_cascade_advance(c->db, t->id, settings, &fb_batches, &fb_msgs, err);
	if (ok)
		ok = hr_db_exec(c->db,
				"UPDATE campaigns c SET state = 'completed', updated_at = now() WHERE state = 'active' "
				"AND next_run_at IS NULL AND NOT EXISTS (SELECT 1 FROM campaign_batches h "
				"JOIN campaign_runs r ON r.id = h.run_id WHERE r.campaign_id = c.id)",
				err);
	if (ok)
		ok = hr_db_query(c->db, NEXT_SQL, 0, NULL, &r, err);
	if (ok) {
		t->next_us = col_i64(r, 0, 0);
		PQclear(r);
		ok = hr_db_commit(c->db, err);
	}
	if (!ok)
		hr_db_rollback(c->db);
	else if (released > 0)
		hr_info("campaigns: tenant=%s released=%lld batch(es)", t->slug, (long long)released);
	if (ok && fb_batches > 0)
		hr_info("campaigns: tenant=%s cascade: %lld fallback batch(es), %lld message(s)", t->slug,
			(long long)fb_batches, (long long)fb_msgs);
	json_decref(settings);
	return ok;
}

static bool open_db(campaigns *c, hr_err *err)
{
	bool ok = true;
	if (!hr_db_connect(c->dsn, &c->db, err))
		return false;
	if (!hr_db_exec(c->db, "LISTEN " HR_CAMPAIGNS_CHANNEL "; LISTEN " HR_CLOCK_CHANNEL "; LISTEN herald_tenants",
			err) ||
	    !hr_clock_refresh(c->db, err))
		ok = false;
	if (ok)
		reload_tenants(c, err, &ok);
	if (!ok) {
		PQfinish(c->db);
		c->db = NULL;
	}
	return ok;
}

/* Sleep up to ms, or until the database or campaigns_stop() speaks. */
static void wait_for(campaigns *c, int64_t ms)
{
	struct pollfd fds[2] = {{.fd = c->wake[0], .events = POLLIN}, {.fd = c->db ? PQsocket(c->db) : -1,
									.events = POLLIN}};
	if (ms > 60000)
		ms = 60000;
	if (poll(fds, c->db ? 2 : 1, (int)(ms < 0 ? 0 : ms)) > 0 && (fds[0].revents & POLLIN)) {
		char b[16];
		ssize_t n = read(c->wake[0], b, sizeof b);
		(void)n;
	}
}

static void *run(void *arg)
{
	campaigns *c = arg;
	int64_t backoff_ms = 100;
	while (!atomic_load(&c->stop)) {
		hr_err err = {0};
		if (!c->db) {
			if (!open_db(c, &err)) {
				hr_warn("campaigns: %s", err.msg);
				wait_for(c, backoff_ms);
				backoff_ms = backoff_ms < 5000 ? backoff_ms * 2 : 5000;
				continue;
			}
			backoff_ms = 100;
		}
		if (!PQconsumeInput(c->db)) {
			hr_warn("campaigns: connection lost: %s", PQerrorMessage(c->db));
			PQfinish(c->db);
			c->db = NULL;
			continue;
		}
		take_notifies(c);
		bool ok = true;
		if (c->reload)
			reload_tenants(c, &err, &ok);
		int64_t now = hr_clock_now(), earliest = INT64_MAX;
		bool others = false; /* tenants another scheduler serves now: look again soon */
		for (int i = 0; ok && i < c->nt && !atomic_load(&c->stop); i++) {
			ctenant *t = &c->t[i];
			if (!t->active)
				continue;
			if (c->hold && !c->hold(c->hold_ud, t->id)) {
				t->dirty = others = true; /* read afresh once it is ours */
				continue;
			}
			if (t->dirty) {
				if (!(ok = read_next(c, t, &err))) {
					if (c->unhold)
						c->unhold(c->hold_ud, t->id);
					break;
				}
				t->dirty = false;
			}
			if (t->next_us <= now) {
				hr_err perr = {0};
				if (!process(c, t, &perr)) {
					if (PQstatus(c->db) != CONNECTION_OK) {
						err = perr;
						ok = false;
						if (c->unhold)
							c->unhold(c->hold_ud, t->id);
						break;
					}
					hr_warn("campaigns: tenant=%s: %s", t->slug, perr.msg);
					t->next_us = now + RETRY_US;
				}
				now = hr_clock_now();
			}
			if (c->unhold)
				c->unhold(c->hold_ud, t->id);
			if (t->next_us < earliest)
				earliest = t->next_us;
		}
		if (!ok) {
			hr_warn("campaigns: %s", err.msg);
			PQfinish(c->db);
			c->db = NULL;
			continue;
		}
		if (take_notifies(c))
			continue; /* heard while working: act before sleeping */
		int64_t wait_ms = earliest == INT64_MAX ? 60000 : (earliest - hr_clock_now()) / 1000 + 1;
		if (others && wait_ms > 1000)
			wait_ms = 1000;
		wait_for(c, wait_ms < 5 ? 5 : wait_ms);
	}
	return NULL;
}

campaigns *campaigns_start(const char *dsn, campaigns_tenants_fn tenants, campaigns_hold_fn hold,
			   campaigns_unhold_fn unhold, void *ud, hr_err *err)
{
	campaigns *c = hr_calloc(1, sizeof *c);
	c->dsn = hr_strdup(dsn);
	c->tenants_fn = tenants;
	c->hold = hold;
	c->unhold = unhold;
	c->hold_ud = ud;
	if (pipe(c->wake) != 0) {
		hr_free(c->dsn);
		hr_free(c);
		hr_fail(err, HR_ERR_IO, "", "pipe: %m");
		return NULL;
	}
	if (!open_db(c, err)) {
		close(c->wake[0]);
		close(c->wake[1]);
		hr_free(c->dsn);
		hr_free(c);
		return NULL;
	}
	pthread_create(&c->thread, NULL, run, c);
	return c;
}

void campaigns_stop(campaigns *c)
{
	if (!c)
		return;
	atomic_store(&c->stop, true);
	ssize_t n = write(c->wake[1], "x", 1);
	(void)n;
	pthread_join(c->thread, NULL);
	if (c->db)
		PQfinish(c->db);
	close(c->wake[0]);
	close(c->wake[1]);
	hr_free(c->t);
	hr_free(c->dsn);
	hr_free(c);
}
