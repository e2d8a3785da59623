/*
 * rules.c -- the trigger-rule engine (see rules.h and docs/rules.md).
 *
 * Everything is set-based SQL on the tenant's schema, as the tenant's role:
 * one INSERT ... SELECT enters every contact a batch of events triggers for
 * one rule; one statement per action acts on every instance of a (rule,
 * step) that is due; nothing loops over contacts in C.
 *
 * Step transaction (one per batch of due instances, exactly once):
 *   1. SELECT the due instances FOR UPDATE SKIP LOCKED (another engine, or
 *      this one after a crash, can never run them twice);
 *   2. exit: instances whose contact did an exit event since entering end
 *      ('exited') -- every exit event committed before this statement counts,
 *      whatever its occurred_at, so an order the API acknowledged before the
 *      step started always wins (docs/rules.md, "Exit events and the race");
 *   3. the step's conditions (`if`, `unless`) pick the instances that act;
 *   4. each action, in order, on them (and on its own `if`); bulk sends under
 *      the tenant's frequency cap;
 *   5. every instance moves to its next step (due time from herald time) or
 *      ends ('done'), one write each; COMMIT.
 * A step whose actions are all sends does 2-5 in ONE statement per (rule,
 * step) group (run_step_sends); others run 2-3, one statement per action,
 * then 5 (run_step).  Ingest and steps are two threads (lanes, below).
 * A crash before COMMIT loses nothing (the rows are still due); after it,
 * nothing is redone (they are not).
 *
 * Herald time: due_at and "today" are herald time (herald_clock.now() in SQL,
 * hr_clock_now() here); the thread sleeps (real time) until the earliest due
 * time minus the skew, and a herald_clock NOTIFY re-reads the skew and
 * re-evaluates every tenant.
 */
#include "rules.h"

#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "alloc.h"
#include "audience.h"
#include "clock.h"
#include "codes.h"
#include "db.h"
#include "jsonout.h"
#include "log.h"
#include "model.h"
#include "rule.h"
#include "segment.h"

#define EVENT_BATCH 20000   /* events read per ingest transaction */
#define STEP_BATCH 2000     /* due instances per step transaction */
#define GAP_GRACE "5 s"     /* an id gap younger than this may still commit */
#define MAXP 256

typedef struct rtenant {
	uint32_t id;
	char schema[64], role[64];
	bool need_events;         /* notified: new events or rules */
	int64_t next_due_us;      /* herald time of the earliest active step, INT64_MAX = none */
	int64_t next_daily_us;    /* herald time of the next daily evaluation, INT64_MAX = none */
	int64_t retry_us;         /* after an error or a young id gap: look again then (0 = no) */
	bool owned;               /* its shard was ours at the last look */
	hr_audience_cap cap;      /* its frequency cap (settings), read at the start of each turn */
	struct rtenant *next;
} rtenant;

/*
 * The engine runs two lanes, each a thread with its own connection and its
 * own view of the tenants, so entering and steps overlap (two Postgres
 * backends) and a long ingest never delays a due step:
 *   ingest: events -> instances, date and inactivity rules (LISTEN
 *           herald_events); after entering anybody it NOTIFYs herald_rules_due
 *           with the tenant id, in the entering transaction;
 *   steps:  due instances (LISTEN herald_rules_due: re-read the tenant's next
 *           due time).
 * Both LISTEN herald_clock and herald_tenants, and both hold the tenant's
 * shard (owner_hold, counted) for their turn.  The lanes share nothing but
 * the stop flag and the owner; FOR UPDATE SKIP LOCKED and the entry keys
 * keep them apart in the database as they keep two schedulers apart.
 */
typedef struct rlane {
	const char *name;         /* "ingest" | "steps", for logs */
	bool ingest;              /* enters contacts (events, date, inactivity) */
	bool steps;               /* runs due steps */
	const char *listen;       /* its LISTEN statements */
	owner *own;               /* shard ownership (owner.h); NULL = every tenant */
	PGconn *db;
	pthread_t thread;
	volatile int stop;
	rtenant *tenants;
} rlane;

struct rules_engine {
	char *dsn;
	rlane lane[2];
};

/* ---- parameters ---------------------------------------------------------- */

typedef struct pv {
	const char *v[MAXP];
	char *own[MAXP];
	int n;
} pv;

static int pv_add(pv *p, const char *v)
{
	if (p->n >= MAXP)
		hr_panic("rules: more than %d parameters", MAXP);
	p->v[p->n] = v;
	p->own[p->n] = NULL;
	return ++p->n;
}

static int pv_own(pv *p, char *v)
{
	int i = pv_add(p, v);
	p->own[i - 1] = v;
	return i;
}

static void pv_free(pv *p)
{
	for (int i = 0; i < p->n; i++)
		hr_free(p->own[i]);
	p->n = 0;
}

/* Compile a segment (or property) condition with its parameters appended to p; heap SQL or NULL. */
static char *cond_sql(pv *p, const char *json, bool props, hr_err *err)
{
	/* Rounded up: an event of this very second (occurred_at 12:00:04.68) must
	 * not look like the future to a condition evaluated at 12:00:04.90. */
	hr_segment_opts o = {.now_unix = (hr_clock_now() + 999999) / 1000000, .first_param = p->n + 1};
	hr_segment_sql s;
	bool ok = props ? hr_segment_compile_where(json, &o, &s, err) : hr_segment_compile(json, &o, &s, err);
	if (!ok)
		return NULL;
	for (int i = 0; i < s.nparams; i++) {
		pv_own(p, s.params[i]);
		s.params[i] = NULL;
	}
	char *w = s.where;
	s.where = NULL;
	s.nparams = 0;
	hr_segment_sql_free(&s);
	return w;
}

/* A growing SQL string. */
typedef struct sb {
	char *p;
	size_t len, cap;
} sb;

static void sb_add(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sb *b, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		b->cap = (b->len + (size_t)n + 1) * 2;
		b->p = hr_realloc(b->p, b->cap);
	}
}

/* ---- due times ----------------------------------------------------------- */

/*
 * SQL for the due time of step s from `base` (an SQL timestamptz): base +
 * delay, then (if the step waits until a local time) the first such time in
 * the contact's zone (`tz`, an SQL text expression; NULL = UTC) at or after it.
 */
static void due_sql(sb *q, const hr_rule_step *s, const char *base, const char *tz)
{
	if (s->at_minute < 0) {
		sb_add(q, "(%s + interval '%lld seconds')", base, (long long)s->delay_s);
		return;
	}
	sb_add(q,
	       "(SELECT CASE WHEN d.cand >= d.loc THEN d.cand ELSE d.cand + interval '1 day' END AT TIME ZONE d.z "
	       "FROM (SELECT z, (%s + interval '%lld seconds') AT TIME ZONE z AS loc, "
	       "date_trunc('day', (%s + interval '%lld seconds') AT TIME ZONE z) + interval '%d minutes' AS cand "
	       "FROM (SELECT coalesce(%s, 'UTC') AS z) zz) d)",
	       base, (long long)s->delay_s, base, (long long)s->delay_s, s->at_minute, tz);
}

/* ---- tenants -------------------------------------------------------------- */

static bool begin(rlane *e, rtenant *t, hr_err *err)
{
	return hr_db_tenant_begin(e->db, t->schema, t->role, err);
}

static bool load_tenants(rlane *e, hr_err *err)
{
	PGresult *r;
	if (!store_tenants(e->db, &r, err))
		return false;
	for (int i = 0; i < PQntuples(r); i++) {
		uint32_t id = (uint32_t)strtoul(PQgetvalue(r, i, 0), NULL, 10);
		rtenant *t = e->tenants;
		while (t && t->id != id)
			t = t->next;
		if (t)
			continue;
		t = hr_calloc(1, sizeof *t);
		t->id = id;
		snprintf(t->schema, sizeof t->schema, "%s", PQgetvalue(r, i, 3));
		snprintf(t->role, sizeof t->role, "%s", PQgetvalue(r, i, 4));
		/* A new tenant is looked at once: events it has, steps due, today's date rules. */
		t->need_events = true;
		t->next_due_us = 0;
		t->next_daily_us = 0;
		t->next = e->tenants;
		e->tenants = t;
	}
	PQclear(r);
	return true;
}

/* The enabled rules of the tenant (in its transaction). */
typedef struct loaded {
	int n;
	int64_t id[512];
	hr_rule *rule[512];
	char created[512][40];
	char daily_on[512][16]; /* "" = never */
} loaded;

static void loaded_free(loaded *l)
{
	for (int i = 0; i < l->n; i++)
		hr_rule_free(l->rule[i]);
	l->n = 0;
}

static bool load_rules(rlane *e, const char *where, loaded *l, hr_err *err)
{
	char *sql = hr_sprintf("SELECT id, definition::text, created_at, coalesce(daily_on::text, '') FROM rules "
			       "WHERE enabled AND %s ORDER BY id LIMIT 512",
			       where);
	PGresult *r;
	bool ok = hr_db_query(e->db, sql, 0, NULL, &r, err);
	hr_free(sql);
	l->n = 0;
	if (!ok)
		return false;
	for (int i = 0; i < PQntuples(r); i++) {
		hr_err perr = {0};
		hr_rule *rule;
		if (!hr_rule_parse(PQgetvalue(r, i, 1), &rule, &perr)) {
			/* The API validated it; a rule the language no longer accepts is skipped, loudly. */
			hr_warn("rules: rule %s does not parse (%s: %s); skipped", PQgetvalue(r, i, 0), perr.field, perr.msg);
			continue;
		}
		l->id[l->n] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		l->rule[l->n] = rule;
		snprintf(l->created[l->n], sizeof l->created[0], "%s", PQgetvalue(r, i, 2));
		snprintf(l->daily_on[l->n], sizeof l->daily_on[0], "%s", PQgetvalue(r, i, 3));
		l->n++;
	}
	PQclear(r);
	return true;
}

/* The steps lane (of every scheduler) re-reads the tenant's next due time when this commits. */
static bool notify_due(rlane *e, rtenant *t, hr_err *err)
{
	char tid[16];
	snprintf(tid, sizeof tid, "%u", t->id);
	const char *p[] = {tid};
	return hr_db_query(e->db, "SELECT pg_notify('herald_rules_due', $1)", 1, p, NULL, err);
}

/* ---- entering: event triggers ---------------------------------------------- */

/* "once per period": nobody who entered within the period before `at`. */
static void period_guard(sb *q, const hr_rule *r, const char *rule_p, const char *contact, const char *at)
{
	if (r->reentry != HR_REENTRY_PERIOD)
		return;
	sb_add(q,
	       " AND NOT EXISTS (SELECT 1 FROM rule_instances p WHERE p.rule_id = %s AND p.contact_id = %s "
	       "AND p.entered_at > %s - interval '%lld seconds')",
	       rule_p, contact, at, (long long)r->period_s);
}

static bool enter_event_rule(rlane *e, int64_t rid, const hr_rule *r, const char *created,
			     const char *lo, const char *hi, long *entered, hr_err *err)
{
	pv p = {0};
	sb q = {0};
	char rs[32], chain[8];
	snprintf(rs, sizeof rs, "%lld", (long long)rid);
	snprintf(chain, sizeof chain, "%d", HR_RULE_MAX_CHAIN);
	int prule = pv_add(&p, rs), plo = pv_add(&p, lo), phi = pv_add(&p, hi), pname = pv_add(&p, r->on.name),
	    pcreated = pv_add(&p, created), pchain = pv_add(&p, chain);
	char *filter = NULL;
	bool ok = false;
	if (r->on.where && !(filter = cond_sql(&p, r->on.where, true, err)))
		goto done;
	bool aud = r->naudience > 0;
	const char *contact = aud ? "a.contact_id" : "e.contact_id";
	char rule_p[32];
	snprintf(rule_p, sizeof rule_p, "$%d::bigint", prule);
	const char *key = r->reentry == HR_REENTRY_ONCE ? "''" : "e.id::text";
	sb_add(&q,
	       "WITH ins AS (INSERT INTO rule_instances (rule_id, contact_id, entry_key, step, due_at, entered_at, "
	       "event_id, chain, context) SELECT DISTINCT ON (%s%s) %s, %s, %s, 0, ",
	       contact, r->reentry == HR_REENTRY_ALWAYS ? ", e.id" : "", rule_p, contact, key);
	due_sql(&q, &r->steps[0], "e.occurred_at", "c.time_zone");
	sb_add(&q, ", e.occurred_at, e.id, coalesce(e.chain, 0), e.properties FROM events e ");
	if (aud) {
		char *names = NULL;
		size_t nl = 2;
		for (int i = 0; i < r->naudience; i++)
			nl += 2 * strlen(r->audience_events[i]) + 4;
		names = hr_malloc(nl);
		size_t o = 0;
		names[o++] = '{';
		for (int i = 0; i < r->naudience; i++) {
			o += (size_t)snprintf(names + o, nl - o, "%s\"", i ? "," : "");
			for (const char *s = r->audience_events[i]; *s; s++) {
				if (*s == '"' || *s == '\\')
					names[o++] = '\\';
				names[o++] = *s;
			}
			names[o++] = '"';
		}
		names[o++] = '}';
		names[o] = '\0';
		int pn = pv_own(&p, names), pm = pv_add(&p, r->audience_match);
		sb_add(&q,
		       "JOIN events a ON a.name = ANY($%d::text[]) AND a.contact_id IS NOT NULL "
		       "AND a.properties -> $%d::text = e.properties -> $%d::text "
		       "AND a.occurred_at > e.occurred_at - interval '%d days' AND a.occurred_at <= e.occurred_at ",
		       pn, pm, pm, r->audience_days);
	}
	sb_add(&q,
	       "JOIN contacts c ON c.id = %s AND c.merged_into IS NULL "
	       "WHERE e.id > $%d::bigint AND e.id <= $%d::bigint AND e.name = $%d::text AND e.received_at >= $%d::timestamptz "
	       "AND coalesce(e.chain, 0) < $%d::int",
	       contact, plo, phi, pname, pcreated, pchain);
	if (!aud)
		sb_add(&q, " AND e.contact_id IS NOT NULL");
	if (filter)
		sb_add(&q, " AND %s", filter);
	period_guard(&q, r, rule_p, contact, "e.occurred_at");
	sb_add(&q, " ORDER BY %s, e.id ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins", contact);
	PGresult *res;
	if (!hr_db_query(e->db, q.p, p.n, p.v, &res, err))
		goto done;
	*entered += strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	ok = true;
done:
	hr_free(filter);
	hr_free(q.p);
	pv_free(&p);
	return ok;
}

/*
 * Read the tenant's new events from its watermark and enter them into every
 * event rule, in one transaction with the watermark's advance.  Event ids come
 * from a sequence, so an id can commit after a higher one: the watermark stops
 * before a gap younger than GAP_GRACE (its event may still commit) and the
 * tenant is looked at again a second later; re-reading an event is harmless
 * (entry keys make entering idempotent).  Returns whether more may be waiting.
 */
static bool ingest(rlane *e, rtenant *t, bool *more, hr_err *err)
{
	*more = false;
	loaded l = {0};
	PGresult *r = NULL;
	if (!begin(e, t, err))
		return false;
	char nb[16];
	snprintf(nb, sizeof nb, "%d", EVENT_BATCH);
	const char *pb[] = {nb};
	if (!hr_db_query(e->db,
			 "WITH w AS (SELECT rules_event_seen AS wm FROM dispatch_state FOR UPDATE), "
			 "v AS (SELECT id, received_at FROM events WHERE id > (SELECT wm FROM w) ORDER BY id LIMIT $1::int), "
			 "g AS (SELECT id, received_at, lag(id, 1, (SELECT wm FROM w)) OVER (ORDER BY id) AS prev FROM v) "
			 "SELECT (SELECT wm FROM w), coalesce((SELECT min(prev) FROM g WHERE id <> prev + 1 "
			 "AND received_at > now() - interval '" GAP_GRACE "'), (SELECT max(id) FROM v), (SELECT wm FROM w)), "
			 "(SELECT count(*) FROM v), (SELECT max(id) FROM v)",
			 1, pb, &r, err))
		goto fail;
	char lo[32], hi[32];
	snprintf(lo, sizeof lo, "%s", PQgetvalue(r, 0, 0));
	snprintf(hi, sizeof hi, "%s", PQgetvalue(r, 0, 1));
	long seen = strtol(PQgetvalue(r, 0, 2), NULL, 10);
	/* Stopped before a young gap: the events after it are looked at again in
	 * a second (serve), when the gap has filled or aged. */
	bool gap = seen > 0 && strcmp(hi, PQgetvalue(r, 0, 3)) != 0;
	PQclear(r);
	r = NULL;
	if (gap)
		t->retry_us = hr_clock_now() + 1000000;
	if (strcmp(lo, hi) == 0) {
		hr_db_rollback(e->db);
		return true;
	}
	if (!load_rules(e, "trigger_kind = 'event'", &l, err))
		goto fail;
	long entered = 0;
	for (int i = 0; i < l.n; i++)
		if (!enter_event_rule(e, l.id[i], l.rule[i], l.created[i], lo, hi, &entered, err))
			goto fail;
	const char *pw[] = {hi};
	if (!hr_db_query(e->db, "UPDATE dispatch_state SET rules_event_seen = $1", 1, pw, NULL, err) ||
	    (entered && !notify_due(e, t, err)) || !hr_db_commit(e->db, err))
		goto fail;
	loaded_free(&l);
	*more = seen >= EVENT_BATCH;
	if (entered)
		t->next_due_us = 0; /* read the next due time again */
	return true;
fail:
	PQclear(r);
	loaded_free(&l);
	hr_db_rollback(e->db);
	return false;
}

/* ---- entering: date and inactivity triggers --------------------------------- */

static bool enter_daily_rule(rlane *e, int64_t rid, const hr_rule *r, const char *daily_on, hr_err *err)
{
	pv p = {0};
	sb q = {0};
	char rs[32];
	snprintf(rs, sizeof rs, "%lld", (long long)rid);
	int prule = pv_add(&p, rs);
	char rule_p[32];
	snprintf(rule_p, sizeof rule_p, "$%d::bigint", prule);
	bool ok = false;
	char days[16], names[2048] = "", key[96]; /* parameter texts live until the query */
	sb_add(&q, "INSERT INTO rule_instances (rule_id, contact_id, entry_key, step, due_at, entered_at, context) ");
	if (r->trigger == HR_TRIG_DATE) {
		/* Every herald day since the last evaluation (at most a year back), today included;
		 * the entry key names the occurrence (once per birthday), or '' for "once". */
		int pattr = pv_add(&p, r->date_attribute);
		int pfrom = pv_add(&p, daily_on[0] ? daily_on : NULL);
		if (r->reentry == HR_REENTRY_ONCE)
			snprintf(key, sizeof key, "''");
		else
			snprintf(key, sizeof key, "to_char(gd.d + %d, 'YYYY-MM-DD')", r->days_before);
		sb_add(&q, "SELECT DISTINCT ON (c.id) %s, c.id, %s, 0, ", rule_p, key);
		due_sql(&q, &r->steps[0], "herald_clock.now()", "c.time_zone");
		sb_add(&q,
		       ", herald_clock.now(), jsonb_build_object('date', c.attributes ->> $%d::text) FROM contacts c, "
		       "generate_series(greatest(coalesce($%d::date + 1, (herald_clock.now() AT TIME ZONE 'UTC')::date), "
		       "(herald_clock.now() AT TIME ZONE 'UTC')::date - 366), (herald_clock.now() AT TIME ZONE 'UTC')::date, "
		       "interval '1 day') g(ts), LATERAL (SELECT g.ts::date AS d) gd "
		       "WHERE c.merged_into IS NULL AND c.attributes ->> $%d::text ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' "
		       "AND substr(c.attributes ->> $%d::text, 6, 5) = to_char(gd.d + %d, 'MM-DD')",
		       pattr, pfrom, pattr, pattr, r->days_before);
		period_guard(&q, r, rule_p, "c.id", "herald_clock.now()");
	} else {
		snprintf(days, sizeof days, "%d", r->inactive_days);
		int pdays = pv_add(&p, days);
		if (r->ninactive) {
			size_t o = 0;
			names[o++] = '{';
			for (int i = 0; i < r->ninactive && o < sizeof names - 300; i++) {
				o += (size_t)snprintf(names + o, sizeof names - o, "%s\"", i ? "," : "");
				for (const char *s = r->inactive_events[i]; *s && o < sizeof names - 4; s++) {
					if (*s == '"' || *s == '\\')
						names[o++] = '\\';
					names[o++] = *s;
				}
				names[o++] = '"';
			}
			names[o++] = '}';
			names[o] = '\0';
		}
		int pnames = pv_add(&p, r->ninactive ? names : NULL);
		sb_add(&q, "SELECT %s, c.id, %s, 0, ", rule_p,
		       r->reentry == HR_REENTRY_ONCE ? "''" : "'since:' || extract(epoch FROM l.last)::bigint");
		due_sql(&q, &r->steps[0], "herald_clock.now()", "c.time_zone");
		sb_add(&q,
		       ", herald_clock.now(), jsonb_build_object('last_active', l.last) FROM contacts c "
		       "CROSS JOIN LATERAL (SELECT greatest(c.created_at, (SELECT max(e.occurred_at) FROM events e "
		       "WHERE e.contact_id = c.id AND ($%d::text[] IS NULL OR e.name = ANY($%d::text[])))) AS last) l "
		       "WHERE c.merged_into IS NULL AND l.last <= herald_clock.now() - $%d::int * interval '1 day'",
		       pnames, pnames, pdays);
		period_guard(&q, r, rule_p, "c.id", "herald_clock.now()");
	}
	sb_add(&q, " ON CONFLICT DO NOTHING");
	ok = hr_db_query(e->db, q.p, p.n, p.v, NULL, err);
	if (ok) {
		const char *pu[] = {rs};
		ok = hr_db_query(e->db, "UPDATE rules SET daily_on = (herald_clock.now() AT TIME ZONE 'UTC')::date WHERE id = $1",
				 1, pu, NULL, err);
	}
	hr_free(q.p);
	pv_free(&p);
	return ok;
}

/* Date and inactivity rules not yet evaluated for this herald day; one transaction per rule. */
static bool daily(rlane *e, rtenant *t, hr_err *err)
{
	loaded l = {0};
	if (!begin(e, t, err))
		return false;
	bool ok = load_rules(e,
			     "trigger_kind IN ('date', 'inactivity') AND (daily_on IS NULL OR "
			     "daily_on < (herald_clock.now() AT TIME ZONE 'UTC')::date)",
			     &l, err);
	hr_db_rollback(e->db);
	for (int i = 0; ok && i < l.n; i++) {
		ok = begin(e, t, err) && enter_daily_rule(e, l.id[i], l.rule[i], l.daily_on[i], err) &&
		     notify_due(e, t, err) && hr_db_commit(e->db, err);
		if (!ok)
			hr_db_rollback(e->db);
		else
			t->next_due_us = 0;
	}
	loaded_free(&l);
	/* Next evaluation: the next herald midnight (UTC). */
	int64_t now = hr_clock_now(), day = 86400LL * 1000000;
	t->next_daily_us = (now / day + 1) * day;
	return ok;
}

/* ---- running due steps -------------------------------------------------------- */

static char *ids_array(PGresult *r, int col, int from, int to)
{
	sb b = {0};
	sb_add(&b, "{");
	for (int i = from; i < to; i++)
		sb_add(&b, "%s%s", i > from ? "," : "", PQgetvalue(r, i, col));
	sb_add(&b, "}");
	return b.p;
}

/* Address of a contact `c` for a channel. */
static const char *address_sql(const char *channel)
{
	if (!strcmp(channel, "email"))
		return "c.email";
	if (!strcmp(channel, "sms") || !strcmp(channel, "messenger"))
		return "c.phone";
	return "(c.attributes ->> 'push_token')";
}

/* One set, increment or emit action on the instances `act` (an int8[]
 * literal, parameter text); sends are send_ctes(). */
static bool run_action(rlane *e, rtenant *t, const hr_rule_action *a, const char *act, hr_err *err)
{
	pv p = {0};
	sb q = {0};
	char *cond = NULL;
	bool ok = false;
	int pids = pv_add(&p, act);
	if (a->cond && !(cond = cond_sql(&p, a->cond, false, err)))
		goto done;
	char tid[16], by[40]; /* parameter texts live until the query */
	snprintf(tid, sizeof tid, "%u", t->id);
	const char *c_and = cond ? " AND " : "";
	const char *c_sql = cond ? cond : "";
	switch (a->kind) {
	case HR_ACT_SET: {
		int pa = pv_add(&p, a->attribute), pvv = pv_add(&p, a->value);
		sb_add(&q,
		       "UPDATE contacts c SET attributes = CASE WHEN $%d::jsonb = 'null'::jsonb THEN c.attributes - $%d::text "
		       "ELSE jsonb_set(c.attributes, ARRAY[$%d::text], $%d::jsonb) END, updated_at = now() "
		       "WHERE c.id IN (SELECT contact_id FROM rule_instances WHERE id = ANY($%d::bigint[]))%s%s",
		       pvv, pa, pa, pvv, pids, c_and, c_sql);
		break;
	}
	case HR_ACT_INCREMENT: {
		hr_num_text(by, sizeof by, a->by);
		int pa = pv_add(&p, a->attribute), pb = pv_add(&p, by);
		/* k instances of one contact in this batch add k times. */
		sb_add(&q,
		       "UPDATE contacts c SET attributes = jsonb_set(c.attributes, ARRAY[$%d::text], to_jsonb("
		       "CASE WHEN jsonb_typeof(c.attributes -> $%d::text) = 'number' THEN (c.attributes ->> $%d::text)::numeric "
		       "ELSE 0 END + $%d::numeric * n.k)), updated_at = now() "
		       "FROM (SELECT contact_id, count(*) AS k FROM rule_instances WHERE id = ANY($%d::bigint[]) "
		       "GROUP BY contact_id) n WHERE c.id = n.contact_id%s%s",
		       pa, pa, pa, pb, pids, c_and, c_sql);
		break;
	}
	case HR_ACT_EMIT: {
		int pn = pv_add(&p, a->event), pp = pv_add(&p, a->properties), pt = pv_add(&p, tid);
		sb_add(&q,
		       "WITH ins AS (INSERT INTO events (contact_id, name, properties, occurred_at, chain) "
		       "SELECT i.contact_id, $%d::text, $%d::jsonb, herald_clock.now(), i.chain + 1 "
		       "FROM rule_instances i JOIN contacts c ON c.id = i.contact_id WHERE i.id = ANY($%d::bigint[])%s%s "
		       "RETURNING 1) SELECT pg_notify('herald_events', $%d) FROM (SELECT 1 FROM ins LIMIT 1) x",
		       pn, pp, pids, c_and, c_sql, pt);
		break;
	}
	case HR_ACT_ISSUE_CODE:
		hr_panic("rules: issue_code goes through issue_codes()");
	case HR_ACT_SEND:
	case HR_ACT_WEBHOOK:
		hr_panic("rules: sends go through send_ctes()");
	}
	ok = hr_db_query(e->db, q.p, p.n, p.v, NULL, err);
done:
	hr_free(cond);
	hr_free(q.p);
	pv_free(&p);
	return ok;
}

/*
 * issue_code: a code of the pool for the contact of every instance in `act`
 * (that matches the action's `if`), through hr_code_issue in the step's
 * transaction -- the contact's held code, else a free one, else (referral) a
 * new personal one.  The codes go into *codes ({"<instance>": {"code",
 * "code_pool", "code_pool_id"}}) for the step's later sends.  A contact that
 * gets no code (promo pool empty, pool deleted, contact merged away) leaves
 * `act` -- the step's later actions skip it -- and gets the event
 * `code_not_issued` {rule_id, pool_id, reason}; the rest of the batch goes on.
 * act is rewritten in place (heap).
 */
static bool issue_codes(rlane *e, rtenant *t, int64_t rid, const hr_rule_action *a, char **act,
			json_t *codes, hr_err *err)
{
	pv p = {0};
	sb q = {0}, keep = {0}, failed = {0};
	char *cond = NULL;
	PGresult *res = NULL;
	bool ok = false;
	pv_add(&p, *act);
	if (a->cond && !(cond = cond_sql(&p, a->cond, false, err)))
		goto done;
	/* Every instance of act, and whether this action is for it (its `if`). */
	sb_add(&q,
	       "SELECT i.id, i.contact_id, c.merged_into IS NULL, %s FROM rule_instances i "
	       "JOIN contacts c ON c.id = i.contact_id WHERE i.id = ANY($1::bigint[]) ORDER BY i.id",
	       cond ? cond : "true");
	if (!hr_db_query(e->db, q.p, p.n, p.v, &res, err))
		goto done;
	hr_code_pool pool;
	hr_err perr = {0};
	bool have_pool = hr_code_pool_get(e->db, a->pool_id, NULL, &pool, &perr);
	if (!have_pool && perr.kind != HR_ERR_NOTFOUND) {
		*err = perr;
		goto done;
	}
	const char *reason = have_pool ? "pool_empty" : "no_pool";
	bool issued = false;
	int nfailed = 0;
	sb_add(&keep, "{");
	sb_add(&failed, "{");
	for (int i = 0; i < PQntuples(res); i++) {
		const char *iid = PQgetvalue(res, i, 0);
		bool mine = PQgetvalue(res, i, 3)[0] == 't', live = PQgetvalue(res, i, 2)[0] == 't';
		hr_code code;
		hr_code_refusal why = HR_CODE_OK;
		bool got = false;
		if (mine && live && have_pool) {
			hr_err ierr = {0};
			got = hr_code_issue(e->db, &pool, strtoll(PQgetvalue(res, i, 1), NULL, 10), &code, &why, &ierr);
			if (!got && why != HR_CODE_POOL_EMPTY) {
				*err = ierr;
				goto done;
			}
		}
		if (mine && !got) {
			sb_add(&failed, "%s%s", nfailed++ ? "," : "", iid);
			if (!live)
				reason = "contact_merged";
			continue;
		}
		sb_add(&keep, "%s%s", keep.len > 1 ? "," : "", iid);
		if (got) {
			issued |= code.issued_now;
			json_object_set_new(codes, iid,
					    json_pack("{s:s, s:s, s:I}", "code", code.code, "code_pool", pool.name,
						      "code_pool_id", (json_int_t)pool.id));
		}
	}
	sb_add(&keep, "}");
	sb_add(&failed, "}");
	char tid[16], rs[32], pid[32];
	snprintf(tid, sizeof tid, "%u", t->id);
	snprintf(rs, sizeof rs, "%lld", (long long)rid);
	snprintf(pid, sizeof pid, "%lld", (long long)a->pool_id);
	if (nfailed) {
		hr_warn("rules: rule %lld: no code of pool %lld for %d contact(s) (%s); their step's later actions are "
			"skipped", (long long)rid, (long long)a->pool_id, nfailed, reason);
		const char *pf[] = {failed.p, rs, pid, reason};
		if (!hr_db_query(e->db,
				 "INSERT INTO events (contact_id, name, properties, occurred_at, chain) "
				 "SELECT i.contact_id, 'code_not_issued', jsonb_build_object('rule_id', $2::bigint, "
				 "'pool_id', $3::bigint, 'reason', $4::text), herald_clock.now(), i.chain + 1 "
				 "FROM rule_instances i WHERE i.id = ANY($1::bigint[])",
				 4, pf, NULL, err))
			goto done;
	}
	/* code_issued / code_not_issued are events other rules may react to */
	const char *pt[] = {tid};
	if ((issued || nfailed) && !hr_db_query(e->db, "SELECT pg_notify('herald_events', $1)", 1, pt, NULL, err))
		goto done;
	hr_free(*act);
	*act = keep.p;
	keep.p = NULL;
	ok = true;
done:
	PQclear(res);
	hr_free(cond);
	hr_free(q.p);
	hr_free(keep.p);
	hr_free(failed.p);
	pv_free(&p);
	return ok;
}

/* `unless`: an event of this name since the instance entered, about this instance's messages (or none). */
static bool unless_sql(sb *q, pv *p, const hr_rule_step *s, hr_err *err)
{
	for (int i = 0; i < s->nunless; i++) {
		int pn = pv_add(p, s->unless[i].name);
		char *w = NULL;
		if (s->unless[i].where && !(w = cond_sql(p, s->unless[i].where, true, err)))
			return false;
		sb_add(q,
		       " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.contact_id = i.contact_id AND e.name = $%d::text "
		       "AND e.occurred_at >= i.entered_at AND (NOT (e.properties ? 'message_id') OR "
		       "(e.properties ->> 'message_id') ~ '^[0-9]{1,18}$' AND (e.properties ->> 'message_id')::bigint = "
		       "ANY(i.message_ids))%s%s)",
		       pn, w ? " AND " : "", w ? w : "");
		hr_free(w);
	}
	return true;
}

/*
 * The step's verdict on each instance of $1 (p's first parameter), one row
 * each, read-only: the columns sends need, `x` = an exit event happened
 * since entry (every exit event committed before this statement counts,
 * whatever its occurred_at: docs/rules.md, "Exit events and the race"), `a` =
 * the step's `if` holds and no `unless` event happened (its actions are for
 * the instance unless it exited).
 */
static bool verdict_sql(sb *q, pv *p, const hr_rule *r, const hr_rule_step *s, hr_err *err)
{
	/* Contacts are looked up by id per instance (LATERAL ... OFFSET 0 keeps it a nested loop): a
	 * batch is at most STEP_BATCH rows, and a hash join would read every contact each time. */
	sb_add(q, "SELECT i.id, i.contact_id, i.context, i.rule_id, i.step, i.chain, (false");
	for (int k = 0; k < r->nexits; k++) {
		int pn = pv_add(p, r->exits[k].name);
		char *w = NULL;
		if (r->exits[k].where && !(w = cond_sql(p, r->exits[k].where, true, err)))
			return false;
		sb_add(q,
		       " OR EXISTS (SELECT 1 FROM events e WHERE e.contact_id = i.contact_id AND e.name = $%d::text "
		       "AND e.occurred_at >= i.entered_at%s%s)",
		       pn, w ? " AND " : "", w ? w : "");
		hr_free(w);
	}
	sb_add(q, ") AS x, (c.id IS NOT NULL");
	if (s->cond) {
		char *cond = cond_sql(p, s->cond, false, err);
		if (!cond)
			return false;
		sb_add(q, " AND %s", cond);
		hr_free(cond);
	}
	if (!unless_sql(q, p, s, err))
		return false;
	sb_add(q, ") AS a FROM rule_instances i LEFT JOIN LATERAL (SELECT * FROM contacts c WHERE c.id = i.contact_id "
		  "OFFSET 0) c ON true WHERE i.id = ANY($1::bigint[])");
	return true;
}

/*
 * The CTEs of send (or webhook) action number k, appended to a WITH list,
 * over `src`: a relation of the instances it is for (id, contact_id,
 * context, rule_id, step, chain).
 *   sK   recipients: an address for the channel, the action's `if`, an
 *        unsuppressed address and, in the bulk lane, a granted consent
 *        (api/messages.c's policy); `per` numbers a contact's instances here;
 *   sKc  (bulk, tenant cap) each recipient's messages the frequency cap
 *        counts -- hr_audience_cap_counted_sql(), the campaigns' own
 *        definition -- plus those earlier bulk sends of this same statement
 *        give them (`prev`: " UNION ALL SELECT cid FROM sJr"..., grown here);
 *   sKx  (cap) the recipients over the cap: no message, an event
 *        `frequency_capped` for the contact instead (docs/rules.md);
 *   sKr  the recipients that get the message, numbered n (message order);
 *   sKg  one outbox id per 4,096 messages (nextval), so every message id
 *        (batch id x 4096 + index) is known without reading rows back;
 *   sKo  the outbox rows (herald_at = herald now: the cap counts them);
 *   sKm  (instance id, message id) pairs.
 * Parameters go to p.  The caller sums count(*) of sKo and sKx.
 */
static bool send_ctes(sb *q, pv *p, hr_audience_cap cap, int64_t rid, const hr_rule_action *a, int k,
		      const char *src, const char *codes, sb *prev, hr_err *err)
{
	bool webhook = a->kind == HR_ACT_WEBHOOK;
	bool bulk = !webhook && !strcmp(a->lane, "bulk");
	bool capped = bulk && cap.max > 0;
	char *cond = NULL;
	if (a->cond && !(cond = cond_sql(p, a->cond, false, err)))
		return false;
	int pch = pv_add(p, a->channel), pl = pv_add(p, a->lane),
	    ptpl = pv_own(p, a->template_id ? hr_sprintf("%lld", (long long)a->template_id) : NULL),
	    pver = pv_own(p, a->template_id ? hr_sprintf("%d", a->template_version) : NULL), pco = pv_add(p, a->content),
	    ppr = pv_add(p, a->provider), prule = pv_own(p, hr_sprintf("%lld", (long long)rid)),
	    pcodes = pv_add(p, codes);
	char addr_expr[32];
	if (webhook)
		snprintf(addr_expr, sizeof addr_expr, "$%d::text", pv_add(p, a->to ? a->to : "account"));
	const char *addr = webhook ? addr_expr : address_sql(a->channel);
	/* Every check on the contact is a column of a LATERAL subquery evaluated per instance (OFFSET 0
	 * keeps it one): as WHERE clauses the planner may turn them into joins, and with a small
	 * table's missing statistics it once chose a consent scan around the whole batch, 40 s. */
	sb_add(q,
	       ", s%d AS (SELECT s.id AS iid, c.id AS cid, s.chain, c.addr, "
	       "jsonb_build_object('event', s.context, 'rule', jsonb_build_object('id', s.rule_id, 'instance', s.id, "
	       "'step', s.step)) || coalesce($%d::jsonb -> s.id::text, '{}'::jsonb) AS data, "
	       "row_number() OVER (PARTITION BY c.id ORDER BY s.id) AS per "
	       "FROM %s s JOIN LATERAL (SELECT c.id, %s AS addr, %s AS ok_if",
	       k, pcodes, src, addr, cond ? cond : "true");
	hr_free(cond);
	if (!webhook) {
		sb_add(q, ", NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.channel = $%d AND x.address = %s) AS ok_s",
		       pch, addr);
		if (bulk)
			sb_add(q,
			       ", EXISTS (SELECT 1 FROM consents y WHERE y.contact_id = c.id AND y.channel = $%d "
			       "AND y.purpose = $%d AND y.granted) AS ok_c",
			       pch, pv_add(p, a->purpose ? a->purpose : "marketing"));
	}
	sb_add(q, " FROM contacts c WHERE c.id = s.contact_id OFFSET 0) c ON true WHERE c.addr IS NOT NULL AND c.ok_if%s%s)",
	       webhook ? "" : " AND c.ok_s", bulk ? " AND c.ok_c" : "");
	if (capped) {
		int pmax = pv_own(p, hr_sprintf("%d", cap.max)), psince = pv_own(p, hr_sprintf("%lld", (long long)cap.period_s));
		char *counted = hr_audience_cap_counted_sql(psince);
		sb_add(q,
		       ", s%dc AS (SELECT u.cid, count(*) AS cnt FROM (%s%s) u WHERE u.cid IN (SELECT cid FROM s%d) "
		       "GROUP BY u.cid), "
		       "s%dx AS (INSERT INTO events (contact_id, name, properties, occurred_at, chain) "
		       "SELECT s.cid, 'frequency_capped', jsonb_build_object('rule_id', $%d::bigint, 'step', s.step, "
		       "'instance', s.iid, 'channel', $%d::text, 'max', $%d::int, 'period_s', $%d::int), "
		       "herald_clock.now(), s.chain + 1 FROM (SELECT s.cid, s.iid, s.chain, i.step FROM s%d s "
		       "JOIN %s i ON i.id = s.iid LEFT JOIN s%dc n ON n.cid = s.cid WHERE s.per + coalesce(n.cnt, 0) > "
		       "$%d::int) s RETURNING 1), "
		       "s%dr AS (SELECT s.*, row_number() OVER (ORDER BY s.iid) - 1 AS n FROM s%d s LEFT JOIN s%dc n "
		       "ON n.cid = s.cid WHERE s.per + coalesce(n.cnt, 0) <= $%d::int)",
		       k, counted, prev->p ? prev->p : "", k, k, prule, pch, pmax, psince, k, src, k, pmax, k, k, k, pmax);
		hr_free(counted);
		sb_add(prev, " UNION ALL SELECT cid FROM s%dr", k);
	} else {
		sb_add(q, ", s%dr AS (SELECT s.*, row_number() OVER (ORDER BY s.iid) - 1 AS n FROM s%d s)", k, k);
	}
	sb_add(q,
	       ", s%dg AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS oid, z.chunk "
	       "FROM (SELECT DISTINCT n / 4096 AS chunk FROM s%dr) z), "
	       "s%do AS (INSERT INTO outbox (id, channel, lane, template_id, template_version, content, provider, "
	       "origin, origin_id, herald_at, addresses, contact_ids, data) SELECT g.oid, $%d, $%d, $%d::bigint, "
	       "$%d::int, $%d::jsonb, $%d, 'rule', $%d::bigint, herald_clock.now(), array_agg(r.addr ORDER BY r.n), "
	       "array_agg(r.cid ORDER BY r.n), jsonb_agg(r.data ORDER BY r.n) FROM s%dr r JOIN s%dg g "
	       "ON g.chunk = r.n / 4096 GROUP BY g.oid RETURNING 1), "
	       "s%dm AS (SELECT r.iid, g.oid * 4096 + r.n %% 4096 AS mid FROM s%dr r JOIN s%dg g ON g.chunk = r.n / 4096)",
	       k, k, k, pch, pl, ptpl, pver, pco, ppr, prule, k, k, k, k, k);
	return true;
}

/* What a step transaction wrote that others must hear of (NOTIFYs before COMMIT). */
typedef struct stepout {
	long outbox; /* outbox rows */
	long events; /* events (frequency_capped) */
} stepout;

/*
 * The UPDATE that ends a step for every instance of `b` (id, x = exited):
 * exited ones are marked so, the others move to the next step (its due time
 * from herald now) or end ('done'); each gets the message ids of `mids`
 * (iid, m) appended.  One write per instance per step.
 */
static void advance_sql(sb *q, const hr_rule *r, int step)
{
	bool last = step + 1 >= r->nsteps;
	sb_add(q,
	       "UPDATE rule_instances i SET state = CASE WHEN b.x THEN 'exited' ELSE '%s' END, "
	       "step = CASE WHEN b.x THEN i.step ELSE %d END, ",
	       last ? "done" : "active", step + 1);
	if (!last) {
		sb_add(q, "due_at = CASE WHEN b.x THEN i.due_at ELSE ");
		due_sql(q, &r->steps[step + 1], "herald_clock.now()",
			"(SELECT time_zone FROM contacts WHERE id = i.contact_id)");
		sb_add(q, " END, ");
	}
	sb_add(q, "message_ids = i.message_ids || coalesce(mids.m, '{}'::bigint[]), updated_at = clock_timestamp() "
		  "FROM b LEFT JOIN mids ON mids.iid = b.id WHERE i.id = ANY($1::bigint[]) AND i.id = b.id");
}

static bool sends_only(const hr_rule_step *s)
{
	for (int k = 0; k < s->nactions; k++)
		if (s->actions[k].kind != HR_ACT_SEND && s->actions[k].kind != HR_ACT_WEBHOOK)
			return false;
	return true;
}

/*
 * A step whose actions are all sends, as ONE statement: the verdict (exit
 * check, conditions), every send (consent, suppression, frequency cap,
 * outbox rows), and the advance -- one snapshot, one write per instance.
 */
static bool run_step_sends(rlane *e, rtenant *t, int64_t rid, const hr_rule *r, int step, const char *ids,
			   stepout *out, hr_err *err)
{
	const hr_rule_step *s = &r->steps[step];
	pv p = {0};
	sb q = {0}, prev = {0}, tail = {0};
	PGresult *res = NULL;
	bool ok = false;
	pv_add(&p, ids);
	sb_add(&q, "WITH b AS (");
	if (!verdict_sql(&q, &p, r, s, err))
		goto done;
	sb_add(&q, "), src AS (SELECT * FROM b WHERE a AND NOT x)");
	sb_add(&tail, "SELECT NULL::bigint AS iid, NULL::bigint AS mid WHERE false");
	for (int k = 0; k < s->nactions; k++) {
		if (!send_ctes(&q, &p, t->cap, rid, &s->actions[k], k, "src", NULL, &prev, err))
			goto done;
		sb_add(&tail, " UNION ALL SELECT iid, mid FROM s%dm", k);
	}
	sb_add(&q, ", mids AS (SELECT iid, array_agg(mid ORDER BY mid) AS m FROM (%s) z GROUP BY iid), u AS (", tail.p);
	advance_sql(&q, r, step);
	sb_add(&q, " RETURNING 1) SELECT (SELECT count(*) FROM u), 0");
	for (int k = 0; k < s->nactions; k++)
		sb_add(&q, " + (SELECT count(*) FROM s%do)", k);
	sb_add(&q, ", 0");
	for (int k = 0; k < s->nactions; k++)
		if (s->actions[k].kind == HR_ACT_SEND && !strcmp(s->actions[k].lane, "bulk") && t->cap.max > 0)
			sb_add(&q, " + (SELECT count(*) FROM s%dx)", k);
	if (!hr_db_query(e->db, q.p, p.n, p.v, &res, err))
		goto done;
	out->outbox += strtol(PQgetvalue(res, 0, 1), NULL, 10);
	out->events += strtol(PQgetvalue(res, 0, 2), NULL, 10);
	ok = true;
done:
	PQclear(res);
	hr_free(q.p);
	hr_free(prev.p);
	hr_free(tail.p);
	pv_free(&p);
	return ok;
}

/* One send action of the general path on the instances `act`; its (instance, message id) pairs are appended
 * to iids / mids (comma-separated). */
static bool send_action(rlane *e, rtenant *t, int64_t rid, const hr_rule_action *a, const char *act,
			const char *codes, sb *iids, sb *mids, stepout *out, hr_err *err)
{
	pv p = {0};
	sb q = {0}, prev = {0};
	PGresult *res = NULL;
	bool ok = false;
	pv_add(&p, act);
	sb_add(&q, "WITH src AS (SELECT i.id, i.contact_id, i.context, i.rule_id, i.step, i.chain FROM rule_instances i "
		   "WHERE i.id = ANY($1::bigint[]))");
	if (!send_ctes(&q, &p, t->cap, rid, a, 0, "src", codes, &prev, err))
		goto done;
	sb_add(&q,
	       " SELECT coalesce(string_agg(iid::text, ',' ORDER BY mid), ''), coalesce(string_agg(mid::text, ',' "
	       "ORDER BY mid), ''), (SELECT count(*) FROM s0o), %s FROM s0m",
	       prev.p ? "(SELECT count(*) FROM s0x)" : "0");
	if (!hr_db_query(e->db, q.p, p.n, p.v, &res, err))
		goto done;
	if (PQgetvalue(res, 0, 0)[0]) {
		sb_add(iids, "%s%s", iids->len > 1 ? "," : "", PQgetvalue(res, 0, 0));
		sb_add(mids, "%s%s", mids->len > 1 ? "," : "", PQgetvalue(res, 0, 1));
	}
	out->outbox += strtol(PQgetvalue(res, 0, 2), NULL, 10);
	out->events += strtol(PQgetvalue(res, 0, 3), NULL, 10);
	ok = true;
done:
	PQclear(res);
	hr_free(q.p);
	hr_free(prev.p);
	pv_free(&p);
	return ok;
}

/*
 * Run step `step` of rule r for the instances `ids` (all locked by this
 * transaction).  Sends-only steps are one statement (run_step_sends); steps
 * with set, increment, emit or issue_code run their actions in order, each
 * seeing what the previous one changed: the verdict, one statement per
 * action, then the advance.
 */
static bool run_step(rlane *e, rtenant *t, int64_t rid, const hr_rule *r, int step, const char *ids,
		     stepout *out, hr_err *err)
{
	if (step >= r->nsteps) {
		/* The rule was edited to fewer steps: these instances are past its end. */
		const char *p[] = {ids};
		return hr_db_query(e->db,
				   "UPDATE rule_instances SET state = 'done', updated_at = clock_timestamp() "
				   "WHERE id = ANY($1::bigint[])",
				   1, p, NULL, err);
	}
	const hr_rule_step *s = &r->steps[step];
	if (sends_only(s))
		return run_step_sends(e, t, rid, r, step, ids, out, err);
	pv p = {0};
	sb q = {0}, exited = {0}, act = {0}, iids = {0}, mids = {0};
	bool ok = false;
	PGresult *res = NULL;
	pv_add(&p, ids);
	if (!verdict_sql(&q, &p, r, s, err))
		goto done;
	sb_add(&q, " ORDER BY i.id");
	if (!hr_db_query(e->db, q.p, p.n, p.v, &res, err))
		goto done;
	sb_add(&exited, "{");
	sb_add(&act, "{");
	sb_add(&iids, "{");
	sb_add(&mids, "{");
	for (int i = 0; i < PQntuples(res); i++) {
		bool x = PQgetvalue(res, i, 6)[0] == 't', a = PQgetvalue(res, i, 7)[0] == 't';
		sb *to = x ? &exited : a ? &act : NULL;
		if (to)
			sb_add(to, "%s%s", to->len > 1 ? "," : "", PQgetvalue(res, i, 0));
	}
	sb_add(&exited, "}");
	sb_add(&act, "}");
	if (strcmp(act.p, "{}") != 0) {
		json_t *codes = json_object();
		char *ctext = NULL;
		bool aok = true;
		for (int k = 0; k < s->nactions && aok; k++) {
			const hr_rule_action *a = &s->actions[k];
			if (a->kind == HR_ACT_ISSUE_CODE) {
				aok = issue_codes(e, t, rid, a, &act.p, codes, err);
				act.len = strlen(act.p);
				act.cap = act.len + 1;
				free(ctext);
				ctext = json_dumps(codes, JSON_COMPACT);
			} else if (strcmp(act.p, "{}") == 0) {
				continue;
			} else if (a->kind == HR_ACT_SEND || a->kind == HR_ACT_WEBHOOK) {
				aok = send_action(e, t, rid, a, act.p, ctext, &iids, &mids, out, err);
			} else {
				aok = run_action(e, t, a, act.p, err);
			}
		}
		free(ctext);
		json_decref(codes);
		if (!aok)
			goto done;
	}
	sb_add(&iids, "}");
	sb_add(&mids, "}");
	/* Advance every instance (acted or not): one write each. */
	q.len = 0;
	q.p[0] = '\0';
	sb_add(&q, "WITH b AS (SELECT id, id = ANY($2::bigint[]) AS x FROM unnest($1::bigint[]) id), "
		   "mids AS (SELECT iid, array_agg(mid ORDER BY mid) AS m FROM unnest($3::bigint[], $4::bigint[]) "
		   "z(iid, mid) GROUP BY iid) ");
	advance_sql(&q, r, step);
	const char *pa[] = {ids, exited.p, iids.p, mids.p};
	ok = hr_db_query(e->db, q.p, 4, pa, NULL, err);
done:
	PQclear(res);
	hr_free(q.p);
	hr_free(exited.p);
	hr_free(act.p);
	hr_free(iids.p);
	hr_free(mids.p);
	pv_free(&p);
	return ok;
}

/* One batch of due instances in one transaction.  *n gets how many were due. */
static bool run_due(rlane *e, rtenant *t, int *n, hr_err *err)
{
	*n = 0;
	loaded l = {0};
	PGresult *r = NULL;
	if (!begin(e, t, err))
		return false;
	char lim[16];
	snprintf(lim, sizeof lim, "%d", STEP_BATCH);
	const char *p[] = {lim};
	/* Due now, of enabled rules (a disabled rule's instances wait), grouped by (rule, step). */
	if (!hr_db_query(e->db,
			 "SELECT id, rule_id, step FROM (SELECT i.id, i.rule_id, i.step FROM rule_instances i "
			 "WHERE i.state = 'active' AND i.due_at <= herald_clock.now() "
			 "AND EXISTS (SELECT 1 FROM rules r WHERE r.id = i.rule_id AND r.enabled) "
			 "ORDER BY i.due_at LIMIT $1::int FOR UPDATE OF i SKIP LOCKED) d ORDER BY rule_id, step, id",
			 1, p, &r, err))
		goto fail;
	*n = PQntuples(r);
	if (*n == 0) {
		PQclear(r);
		hr_db_rollback(e->db);
		return true;
	}
	if (!load_rules(e, "true", &l, err))
		goto fail;
	stepout out = {0, 0};
	for (int i = 0; i < *n;) {
		int64_t rid = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		int step = atoi(PQgetvalue(r, i, 2));
		int j = i;
		while (j < *n && strtoll(PQgetvalue(r, j, 1), NULL, 10) == rid && atoi(PQgetvalue(r, j, 2)) == step)
			j++;
		const hr_rule *rule = NULL;
		for (int k = 0; k < l.n && !rule; k++)
			if (l.id[k] == rid)
				rule = l.rule[k];
		char *ids = ids_array(r, 0, i, j);
		bool ok;
		if (rule) {
			ok = run_step(e, t, rid, rule, step, ids, &out, err);
		} else {
			/* Its definition no longer parses: end these instances rather than retry them forever. */
			const char *pd[] = {ids};
			ok = hr_db_query(e->db,
					 "UPDATE rule_instances SET state = 'done', updated_at = clock_timestamp() "
					 "WHERE id = ANY($1::bigint[])",
					 1, pd, NULL, err);
		}
		hr_free(ids);
		if (!ok)
			goto fail;
		i = j;
	}
	/* The dispatcher hears of the messages, the engine itself of frequency_capped events. */
	char tid[16];
	snprintf(tid, sizeof tid, "%u", t->id);
	const char *pt[] = {tid};
	if ((out.outbox && !hr_db_query(e->db, "SELECT pg_notify('herald_outbox', $1)", 1, pt, NULL, err)) ||
	    (out.events && !hr_db_query(e->db, "SELECT pg_notify('herald_events', $1)", 1, pt, NULL, err)) ||
	    !hr_db_commit(e->db, err))
		goto fail;
	PQclear(r);
	loaded_free(&l);
	return true;
fail:
	PQclear(r);
	loaded_free(&l);
	hr_db_rollback(e->db);
	return false;
}

/* The earliest due step of the tenant (herald time, µs), INT64_MAX when none. */
static bool read_next_due(rlane *e, rtenant *t, hr_err *err)
{
	PGresult *r;
	if (!begin(e, t, err))
		return false;
	bool ok = hr_db_query(e->db,
			      "SELECT (extract(epoch FROM i.due_at) * 1000000)::bigint FROM rule_instances i "
			      "WHERE i.state = 'active' AND EXISTS (SELECT 1 FROM rules r WHERE r.id = i.rule_id AND r.enabled) "
			      "ORDER BY i.due_at LIMIT 1",
			      0, NULL, &r, err);
	hr_db_rollback(e->db);
	if (!ok)
		return false;
	t->next_due_us = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : INT64_MAX;
	PQclear(r);
	return true;
}

/* The tenant's frequency cap, from its settings (read as herald's own role, outside the tenant's
 * transaction: the tenant role cannot read the control schema). */
static bool read_cap(rlane *e, rtenant *t, hr_err *err)
{
	char tid[16];
	snprintf(tid, sizeof tid, "%u", t->id);
	const char *p[] = {tid};
	PGresult *r;
	if (!hr_db_query(e->db, "SELECT settings::text FROM herald.tenants WHERE id = $1", 1, p, &r, err))
		return false;
	json_t *settings = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
	PQclear(r);
	t->cap = hr_audience_cap_from_settings(settings);
	json_decref(settings);
	return true;
}

/* The shard is being handed over: finish the batch in hand, start no other
 * (the rest is still due, for the next owner).  Flags stay set for when the
 * shard comes back. */
static bool draining(rlane *e, rtenant *t)
{
	if (!e->own || owner_owns(e->own, t->id))
		return false;
	t->need_events = true;
	t->next_due_us = 0;
	return true;
}

/* Everything the tenant needs now, of what the lane does. */
static bool serve(rlane *e, rtenant *t, hr_err *err)
{
	/* Read herald time first: a clock advance may still sit unread in the
	 * connection's notification queue while the events committed after it are
	 * already visible -- with a stale clock those events would look like the
	 * future to every "within the last N days" condition.  A retry (after an
	 * error, or a young id gap in the events) redoes the lane's reading as a
	 * notification would: nothing else may come to wake it, and the events
	 * behind the gap would wait for the tenant's next one. */
	bool again = t->retry_us && hr_clock_now() >= t->retry_us;
	if (hr_clock_skew() != 0 || t->need_events || again) {
		if (!hr_clock_refresh(e->db, err))
			return false;
	}
	int64_t now = hr_clock_now();
	t->retry_us = 0;
	if (t->need_events || again) {
		bool notified = t->need_events;
		t->need_events = false;
		if (e->ingest) {
			bool more = true;
			while (more && !e->stop && !draining(e, t))
				if (!ingest(e, t, &more, err))
					return false;
			/* a notify about a new or changed rule: date rules are looked at today */
			if (notified)
				t->next_daily_us = 0;
		} else {
			t->next_due_us = 0; /* instances entered or the clock moved: read the next due time again */
		}
	}
	if (e->ingest) {
		if (now >= t->next_daily_us && !daily(e, t, err))
			return false;
		t->next_due_us = INT64_MAX; /* the steps lane's business */
		return true;
	}
	t->next_daily_us = INT64_MAX; /* the ingest lane's business */
	if (now >= t->next_due_us) {
		if (!read_cap(e, t, err))
			return false;
		int n = STEP_BATCH;
		while (n == STEP_BATCH && !e->stop && !draining(e, t))
			if (!run_due(e, t, &n, err))
				return false;
		if (!read_next_due(e, t, err))
			return false;
	}
	return true;
}

static void take_notifies(rlane *e)
{
	PGnotify *n;
	bool tenants = false;
	while ((n = PQnotifies(e->db))) {
		if (!strcmp(n->relname, "herald_events") || !strcmp(n->relname, "herald_rules_due")) {
			uint32_t id = (uint32_t)strtoul(n->extra, NULL, 10);
			rtenant *t = e->tenants;
			while (t && t->id != id)
				t = t->next;
			if (t)
				t->need_events = true;
			else
				tenants = true;
		} else if (!strcmp(n->relname, "herald_clock")) {
			hr_err err = {0};
			if (!hr_clock_refresh(e->db, &err))
				hr_warn("rules: reading the clock: %s", err.msg);
			/* a new herald time: due steps and the day may have moved */
			for (rtenant *t = e->tenants; t; t = t->next)
				t->need_events = true;
		} else {
			tenants = true;
		}
		PQfreemem(n);
	}
	if (tenants) {
		hr_err err = {0};
		if (!load_tenants(e, &err))
			hr_warn("rules: reading tenants: %s", err.msg);
	}
}

static void *run(void *arg)
{
	rlane *e = arg;
	while (!e->stop) {
		int64_t now = hr_clock_now(), wake = INT64_MAX;
		for (rtenant *t = e->tenants; t && !e->stop; t = t->next) {
			/* Another scheduler's tenant: nothing now (its notifications are noted);
			 * looked at afresh when its shard becomes ours. */
			bool mine = !e->own || owner_owns(e->own, t->id);
			if (mine && !t->owned) {
				t->need_events = true;
				t->next_due_us = 0;
				t->next_daily_us = 0;
			}
			t->owned = mine;
			if (!mine)
				continue;
			bool due = t->need_events || now >= t->next_due_us || now >= t->next_daily_us ||
				   (t->retry_us && now >= t->retry_us);
			/* The hold keeps the shard ours until the tenant's turn is over. */
			if (due && (!e->own || owner_hold(e->own, t->id))) {
				hr_err err = {0};
				if (!serve(e, t, &err)) {
					if (PQstatus(e->db) != CONNECTION_OK)
						PQreset(e->db);
					hr_warn("rules: %s: tenant %u: %s", e->name, t->id, err.msg);
					t->retry_us = hr_clock_now() + 1000000;
				}
				if (e->own)
					owner_unhold(e->own, t->id);
				take_notifies(e);
			}
			int64_t w = t->next_due_us < t->next_daily_us ? t->next_due_us : t->next_daily_us;
			if (t->retry_us && t->retry_us < w)
				w = t->retry_us;
			if (t->need_events)
				w = 0;
			if (w < wake)
				wake = w;
		}
		/* Sleep until the earliest due time (herald time -> real wait) or a notification. */
		now = hr_clock_now();
		int64_t ms = wake == INT64_MAX ? 200 : (wake - now) / 1000;
		if (ms > 200)
			ms = 200; /* to see e->stop; no query runs on these wake-ups */
		if (ms < 0)
			ms = 0;
		struct pollfd pfd = {.fd = PQsocket(e->db), .events = POLLIN};
		if (ms > 0 && poll(&pfd, 1, (int)ms) < 0)
			continue;
		if (!PQconsumeInput(e->db)) {
			hr_warn("rules: connection lost: %s", PQerrorMessage(e->db));
			PQreset(e->db);
			hr_err err = {0};
			if (PQstatus(e->db) != CONNECTION_OK ||
			    !hr_db_exec(e->db, e->listen, &err)) {
				struct timespec d = {1, 0};
				nanosleep(&d, NULL);
			}
			for (rtenant *t = e->tenants; t; t = t->next)
				t->need_events = true;
			continue;
		}
		take_notifies(e);
	}
	return NULL;
}

static void lane_close(rlane *l)
{
	PQfinish(l->db);
	l->db = NULL;
	while (l->tenants) {
		rtenant *t = l->tenants;
		l->tenants = t->next;
		hr_free(t);
	}
}

rules_engine *rules_start(const char *dsn, owner *own, hr_err *err)
{
	rules_engine *e = hr_calloc(1, sizeof *e);
	e->dsn = hr_strdup(dsn);
	e->lane[0] = (rlane){.name = "ingest", .ingest = true, .own = own,
			     .listen = "LISTEN herald_events; LISTEN herald_clock; LISTEN herald_tenants"};
	e->lane[1] = (rlane){.name = "steps", .steps = true, .own = own,
			     .listen = "LISTEN herald_rules_due; LISTEN herald_clock; LISTEN herald_tenants"};
	int started = 0;
	for (int i = 0; i < 2; i++) {
		rlane *l = &e->lane[i];
		if (!hr_db_connect(dsn, &l->db, err) || !hr_db_exec(l->db, l->listen, err) ||
		    !hr_clock_refresh(l->db, err) || !load_tenants(l, err))
			goto fail;
	}
	for (; started < 2; started++)
		if (pthread_create(&e->lane[started].thread, NULL, run, &e->lane[started]) != 0) {
			hr_fail(err, HR_ERR_IO, "", "cannot start the rule engine's %s thread", e->lane[started].name);
			goto fail;
		}
	return e;
fail:
	for (int i = 0; i < started; i++) {
		e->lane[i].stop = 1;
		pthread_join(e->lane[i].thread, NULL);
	}
	for (int i = 0; i < 2; i++)
		lane_close(&e->lane[i]);
	hr_free(e->dsn);
	hr_free(e);
	return NULL;
}

void rules_stop(rules_engine *e)
{
	if (!e)
		return;
	for (int i = 0; i < 2; i++)
		e->lane[i].stop = 1;
	for (int i = 0; i < 2; i++) {
		pthread_join(e->lane[i].thread, NULL);
		lane_close(&e->lane[i]);
	}
	hr_free(e->dsn);
	hr_free(e);
}
