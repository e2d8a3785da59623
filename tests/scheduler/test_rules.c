/*
 * test_rules.c -- the trigger-rule engine end to end: the real
 * herald-scheduler (dispatcher + rule engine) and real herald-worker pools
 * (email and SMS, sink transport) on real Postgres, under herald time
 * (`heraldctl clock advance` through hr_clock_advance): nothing sleeps through
 * a rule's delay.  Rules are stored as the API stores them (validated by
 * hr_rule_parse) and events are inserted with the API's NOTIFY; the API's own
 * paths are tests/api/test_rules_api.c.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "db.h"
#include "harness.h"
#include "owner.h"
#include "providers.h"
#include "psim.h"
#include "rule.h"
#include "stack.h"

typedef struct env {
	fixture f;
	sproc s;
	pid_t w[2];
	const char *schema;
} env;

static pid_t worker(env *e, const char *name, const char *channel, const char *lane)
{
	char log[512];
	snprintf(log, sizeof log, "%s/%s.log", e->f.dir, name);
	const char *argv[] = {WORKER_PATH, "--channel", channel, "--lane", lane, "--scheduler",
			      e->s.ep[strcmp(lane, "bulk") == 0], "--metrics-port", "-1", NULL};
	return th_spawn(argv, NULL, log, NULL);
}

/* The processes, on a fixture already open. */
static void up_procs(env *e)
{
	e->schema = e->f.t[0].schema;
	sched_start(&e->s, e->f.dsn, e->f.dir, NULL, NULL);
	e->w[0] = worker(e, "email", "email", "bulk");
	e->w[1] = worker(e, "sms", "sms", "bulk");
}

static void up(env *e)
{
	fixture_open(&e->f, 1);
	up_procs(e);
}

static void down(env *e)
{
	for (int i = 0; i < 2; i++) {
		kill(e->w[i], SIGTERM);
		waitpid(e->w[i], NULL, 0);
	}
	ck_assert_int_eq(sched_stop(&e->s, SIGTERM), 0);
	fixture_close(&e->f);
}

static void sql(env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sql(env *e, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	hr_err err = {0};
	ck_assert_msg(hr_db_exec(e->f.c, buf, &err), "%s: %s", buf, err.msg);
}

static long num(env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long num(env *e, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	PGresult *r;
	hr_err err = {0};
	ck_assert_msg(hr_db_query(e->f.c, buf, 0, NULL, &r, &err), "%s: %s", buf, err.msg);
	long v = PQgetisnull(r, 0, 0) ? -1 : atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static void dump_log(env *e)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "grep -v ' info: ' %s | grep -A25 -m3 -e 'ERROR: Addr' -e warn >&2", e->s.log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no warning in the scheduler log)\n");
}

/* Wait (real time, with a deadline) until the query answers want. */
#define WAIT_EQ(e, want, ...)                                                                     \
	do {                                                                                      \
		int64_t dl_ = sched_now_ms() + 30000;                                             \
		long got_;                                                                        \
		while ((got_ = num(e, __VA_ARGS__)) != (want) && sched_now_ms() < dl_) {          \
			struct timespec d_ = {0, 20000000};                                       \
			nanosleep(&d_, NULL);                                                     \
		}                                                                                 \
		if (got_ != (want))                                                               \
			dump_log(e);                                                              \
		ck_assert_msg(got_ == (want), "%s: got %ld, want %ld", #__VA_ARGS__, got_, (long)(want)); \
	} while (0)

/* A contact with marketing consent for email and sms; its id. */
static long contact(env *e, const char *name, const char *attrs)
{
	static int seq;
	long id = num(e,
		      "INSERT INTO %s.contacts (email, phone, attributes) VALUES ('%s@example.com', "
		      "'+44207946%04d', '%s') RETURNING id",
		      e->schema, name, ++seq, attrs ? attrs : "{}");
	sql(e,
	    "INSERT INTO %s.consents (contact_id, channel, purpose, granted, at) VALUES "
	    "(%ld, 'email', 'marketing', true, now()), (%ld, 'sms', 'marketing', true, now())",
	    e->schema, id, id);
	return id;
}

static long rule(env *e, const char *json)
{
	hr_rule *r;
	hr_err err = {0};
	ck_assert_msg(hr_rule_parse(json, &r, &err), "%s: %s", err.field, err.msg);
	char *lit = PQescapeLiteral(e->f.c, json, strlen(json));
	const char *kind = r->trigger == HR_TRIG_EVENT ? "event" : r->trigger == HR_TRIG_DATE ? "date" : "inactivity";
	char ev[200] = "NULL";
	if (r->trigger == HR_TRIG_EVENT)
		snprintf(ev, sizeof ev, "'%s'", r->on.name);
	long id = num(e,
		      "INSERT INTO %s.rules (name, trigger_kind, trigger_event, definition) VALUES ('r', '%s', %s, %s) "
		      "RETURNING id",
		      e->schema, kind, ev, lit);
	PQfreemem(lit);
	hr_rule_free(r);
	sql(e, "NOTIFY herald_events, '%ld'", (long)e->f.t[0].id);
	return id;
}

/* An event as the API inserts it (occurred_at NULL = herald now), with its NOTIFY. */
static void event(env *e, long contact_id, const char *name, const char *props, const char *at)
{
	char cs[32] = "NULL";
	if (contact_id)
		snprintf(cs, sizeof cs, "%ld", contact_id);
	sql(e,
	    "BEGIN; INSERT INTO %s.events (contact_id, name, properties, occurred_at) VALUES (%s, '%s', '%s', %s); "
	    "NOTIFY herald_events, '%ld'; COMMIT",
	    e->schema, cs, name, props ? props : "{}",
	    at ? at : "herald_clock.now()", (long)e->f.t[0].id);
}

static void advance(env *e, const char *d)
{
	int64_t us, skew;
	hr_err err = {0};
	ck_assert(hr_duration_parse(d, &us, &err));
	ck_assert_msg(hr_clock_advance(e->f.c, us, &skew, &err), "%s", err.msg);
}

/* Messages the rules put in the outbox for a contact on a channel. */
static long sent_to(env *e, long cid, const char *channel)
{
	return num(e,
		   "SELECT count(*) FROM %s.outbox o, unnest(o.contact_ids) c WHERE o.origin = 'rule' AND c = %ld "
		   "AND o.channel = '%s'",
		   e->schema, cid, channel);
}

#define STATE(e, rid, cid) "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND contact_id = %ld AND state = '%s'"

static const char *const CART =
	"{\"name\":\"abandoned cart\",\"trigger\":{\"event\":\"cart\",\"where\":{\"property\":\"total\",\"op\":\"gt\",\"value\":0}},"
	"\"reentry\":\"always\",\"exit\":[{\"event\":\"order\"}],"
	"\"steps\":[{\"wait\":{\"delay\":\"1h\"},\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"main\","
	"\"content\":{\"from\":\"shop@example.com\",\"subject\":\"Your cart\",\"text\":\"{{ event.item }} is waiting\"}}}]},"
	"{\"wait\":{\"delay\":\"1d\"},\"unless\":[{\"event\":\"email_opened\"}],"
	"\"actions\":[{\"send\":{\"channel\":\"sms\",\"provider\":\"sms\",\"content\":{\"text\":\"Still there?\"}}}]}]}";

START_TEST(abandoned_cart_exit_and_the_same_second_race)
{
	env e;
	up(&e);
	long rid = rule(&e, CART);
	long a = contact(&e, "ann", NULL), b = contact(&e, "bob", NULL), c = contact(&e, "cid", NULL),
	     d = contact(&e, "dan", NULL), z = contact(&e, "zed", NULL);
	event(&e, a, "cart", "{\"total\":10,\"item\":\"shoes\"}", NULL);
	event(&e, b, "cart", "{\"total\":10}", NULL);
	event(&e, c, "cart", "{\"total\":10}", NULL);
	event(&e, d, "cart", "{\"total\":10}", NULL);
	event(&e, z, "cart", "{\"total\":0}", NULL); /* the property filter keeps zed out */
	WAIT_EQ(&e, 4, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld", e.schema, rid);
	/* bob buys before the step; cid's order is stamped the very second the step is due and is committed
	 * before the step runs: exit events committed before the step's check always win */
	event(&e, b, "order", NULL, NULL);
	sql(&e, "INSERT INTO %s.events (contact_id, name, occurred_at) SELECT contact_id, 'order', due_at "
		"FROM %s.rule_instances WHERE contact_id = %ld", e.schema, e.schema, c);
	advance(&e, "3599s");
	ck_assert_int_eq(num(&e, STATE(e, rid, a), e.schema, rid, a, "active"), 1); /* not due yet */
	advance(&e, "2s");
	WAIT_EQ(&e, 1, STATE(e, rid, a), e.schema, rid, a, "active");
	WAIT_EQ(&e, 1, "SELECT step FROM %s.rule_instances WHERE contact_id = %ld", e.schema, a);
	WAIT_EQ(&e, 1, STATE(e, rid, b), e.schema, rid, b, "exited");
	WAIT_EQ(&e, 1, STATE(e, rid, c), e.schema, rid, c, "exited");
	WAIT_EQ(&e, 1, "SELECT step FROM %s.rule_instances WHERE contact_id = %ld", e.schema, d);
	ck_assert_int_eq(sent_to(&e, a, "email"), 1);
	ck_assert_int_eq(sent_to(&e, b, "email"), 0);
	ck_assert_int_eq(sent_to(&e, c, "email"), 0);
	ck_assert_int_eq(sent_to(&e, d, "email"), 1);
	ck_assert_int_eq(sent_to(&e, z, "email"), 0);
	/* the template sees the trigger event */
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.outbox o WHERE o.origin = 'rule' AND o.data @> "
				 "'[{\"event\":{\"item\":\"shoes\"}}]'", e.schema), 1);
	/* dan's order comes after his step ran (same herald second as the step's due time, committed later):
	 * the reminder stands, and the order ends the instance before step 2 */
	sql(&e, "INSERT INTO %s.events (contact_id, name, occurred_at) SELECT contact_id, 'order', "
		"entered_at + interval '1 hour' FROM %s.rule_instances WHERE contact_id = %ld", e.schema, e.schema, d);
	/* ann opens the first email: step 2 ("if not opened") skips her */
	long mid = num(&e, "SELECT message_ids[1] FROM %s.rule_instances WHERE contact_id = %ld", e.schema, a);
	ck_assert_int_gt(mid, 0);
	char props[64];
	snprintf(props, sizeof props, "{\"message_id\":%ld}", mid);
	event(&e, a, "email_opened", props, NULL);
	long f2 = contact(&e, "fay", NULL);
	event(&e, f2, "cart", "{\"total\":5}", NULL);
	WAIT_EQ(&e, 1, STATE(e, rid, f2), e.schema, rid, f2, "active");
	advance(&e, "1h");
	WAIT_EQ(&e, 1, "SELECT step FROM %s.rule_instances WHERE contact_id = %ld", e.schema, f2);
	advance(&e, "1d");
	WAIT_EQ(&e, 1, STATE(e, rid, a), e.schema, rid, a, "done");
	WAIT_EQ(&e, 1, STATE(e, rid, f2), e.schema, rid, f2, "done");
	WAIT_EQ(&e, 1, STATE(e, rid, d), e.schema, rid, d, "exited");
	ck_assert_int_eq(sent_to(&e, a, "sms"), 0);  /* opened */
	ck_assert_int_eq(sent_to(&e, f2, "sms"), 1); /* not opened */
	ck_assert_int_eq(sent_to(&e, d, "sms"), 0);  /* bought */
	/* every rule message gets its result through the real workers */
	WAIT_EQ(&e, 4, "SELECT count(*) FROM %s.results r JOIN %s.outbox o ON o.id = r.message_id / 4096 "
		       "WHERE o.origin = 'rule'", e.schema, e.schema);
	PGresult *rr;
	char qq[300];
	snprintf(qq, sizeof qq, "SELECT string_agg(r.status || ' ' || coalesce(r.reason, ''), '; ') FROM %s.results r", e.schema);
	rr = PQexec(e.f.c, qq);
	ck_assert_msg(num(&e, "SELECT count(*) FROM %s.results r JOIN %s.outbox o ON o.id = r.message_id / 4096 "
			      "WHERE o.origin = 'rule' AND r.status = 'sent'", e.schema, e.schema) == 4,
		      "results: %s", PQgetvalue(rr, 0, 0));
	PQclear(rr);
	down(&e);
}
END_TEST

START_TEST(birthday_and_inactivity_triggers)
{
	env e;
	up(&e);
	/* today (herald time, UTC) + 3 days is the birthday of `bea` */
	char bday[64];
	long off = num(&e, "SELECT extract(epoch FROM herald_clock.now())::bigint");
	time_t tt = (time_t)off + 3 * 86400;
	struct tm tm;
	gmtime_r(&tt, &tm);
	snprintf(bday, sizeof bday, "{\"birthday\":\"1990-%02d-%02d\"}", tm.tm_mon + 1, tm.tm_mday);
	long bea = contact(&e, "bea", bday), cal = contact(&e, "cal", "{\"birthday\":\"not a date\"}");
	long pia = contact(&e, "pia", NULL), quin = contact(&e, "quin", NULL);
	long rb = rule(&e, "{\"name\":\"birthday\",\"trigger\":{\"date\":{\"attribute\":\"birthday\",\"days_before\":3}},"
			   "\"reentry\":\"always\",\"steps\":[{\"wait\":{\"until\":\"10:00\"},\"actions\":["
			   "{\"send\":{\"channel\":\"email\",\"provider\":\"main\",\"content\":{\"from\":\"shop@example.com\",\"subject\":\"Hi\",\"text\":\"Soon!\"}}}]}]}");
	long ri = rule(&e, "{\"name\":\"winback\",\"trigger\":{\"inactive\":{\"days\":14}},\"reentry\":\"always\","
			   "\"steps\":[{\"actions\":[{\"set\":{\"attribute\":\"churn_risk\",\"value\":true}}]}]}");
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld", e.schema, rb);
	ck_assert_int_eq(num(&e, STATE(e, rb, bea), e.schema, rb, bea, "active"), 1);
	ck_assert_int_eq(num(&e, STATE(e, rb, cal), e.schema, rb, cal, "active"), 0);
	/* due at the next 10:00 UTC (no zone) */
	ck_assert_int_eq(num(&e, "SELECT extract(hour FROM due_at AT TIME ZONE 'UTC')::int * 60 + "
				 "extract(minute FROM due_at AT TIME ZONE 'UTC')::int FROM %s.rule_instances "
				 "WHERE rule_id = %ld", e.schema, rb), 600);
	advance(&e, "10d");
	event(&e, pia, "visit", NULL, NULL);
	advance(&e, "5d");
	/* quin: no event for 15 days -> in; pia came back 5 days ago -> not */
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.contacts WHERE id = %ld AND attributes @> '{\"churn_risk\":true}'",
		e.schema, quin);
	WAIT_EQ(&e, 1, STATE(e, rb, bea), e.schema, rb, bea, "done");
	ck_assert_int_eq(sent_to(&e, bea, "email"), 1);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND contact_id = %ld",
			     e.schema, ri, pia), 0);
	/* a second day later: the same inactivity spell does not enter quin again */
	advance(&e, "1d");
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rules WHERE id = %ld AND daily_on = "
		       "(herald_clock.now() AT TIME ZONE 'UTC')::date", e.schema, ri);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND contact_id = %ld",
			     e.schema, ri, quin), 1);
	down(&e);
}
END_TEST

START_TEST(counters_ranks_and_reentry_policies)
{
	env e;
	up(&e);
	long rid = rule(&e, "{\"name\":\"checkins\",\"trigger\":{\"event\":\"checkin\"},\"reentry\":\"always\","
			    "\"steps\":[{\"actions\":[{\"increment\":{\"attribute\":\"checkins\"}},"
			    "{\"increment\":{\"attribute\":\"balance\",\"by\":2.1}},"
			    "{\"set\":{\"attribute\":\"rank\",\"value\":3},\"if\":{\"and\":["
			    "{\"attribute\":\"checkins\",\"op\":\"gte\",\"value\":3},"
			    "{\"attribute\":\"invites\",\"op\":\"gte\",\"value\":1}]}}]}]}");
	long once = rule(&e, "{\"name\":\"welcome\",\"trigger\":{\"event\":\"signup\"},\"reentry\":\"once\","
			     "\"steps\":[{\"actions\":[{\"increment\":{\"attribute\":\"welcomed\"}}]}]}");
	long per = rule(&e, "{\"name\":\"daily\",\"trigger\":{\"event\":\"visit\"},\"reentry\":{\"once_per\":\"1d\"},"
			    "\"steps\":[{\"actions\":[{\"increment\":{\"attribute\":\"visits\"}}]}]}");
	long k = contact(&e, "kim", "{\"invites\":1}"), l = contact(&e, "lou", NULL);
	for (int i = 0; i < 3; i++) {
		event(&e, k, "checkin", NULL, NULL);
		event(&e, l, "checkin", NULL, NULL);
		event(&e, k, "signup", NULL, NULL);
		event(&e, k, "visit", NULL, NULL);
	}
	WAIT_EQ(&e, 6, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND state = 'done'", e.schema, rid);
	WAIT_EQ(&e, 3, "SELECT (attributes->>'checkins')::int FROM %s.contacts WHERE id = %ld", e.schema, k);
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'rank')::int FROM %s.contacts WHERE id = %ld", e.schema, k), 3);
	/* 3 x 2.1 is 6.3 exactly: the step adds the number as written (common/jsonout.h) */
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.contacts WHERE id = %ld AND attributes->>'balance' = '6.3'",
			     e.schema, k), 1);
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'checkins')::int FROM %s.contacts WHERE id = %ld", e.schema, l), 3);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.contacts WHERE id = %ld AND attributes ? 'rank'", e.schema, l), 0);
	WAIT_EQ(&e, 1, "SELECT (attributes->>'welcomed')::int FROM %s.contacts WHERE id = %ld", e.schema, k);
	WAIT_EQ(&e, 1, "SELECT (attributes->>'visits')::int FROM %s.contacts WHERE id = %ld", e.schema, k);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld", e.schema, once), 1);
	advance(&e, "25h");
	event(&e, k, "visit", NULL, NULL);
	event(&e, k, "signup", NULL, NULL);
	WAIT_EQ(&e, 2, "SELECT (attributes->>'visits')::int FROM %s.contacts WHERE id = %ld", e.schema, k);
	WAIT_EQ(&e, 0, "SELECT rules_event_seen - (SELECT max(id) FROM %s.events) FROM %s.dispatch_state", e.schema, e.schema);
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'welcomed')::int FROM %s.contacts WHERE id = %ld", e.schema, k), 1);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld", e.schema, per), 2);
	down(&e);
}
END_TEST

START_TEST(emitted_events_chain_and_the_loop_guard_stops_them)
{
	env e;
	up(&e);
	rule(&e, "{\"name\":\"ping\",\"trigger\":{\"event\":\"ping\"},\"reentry\":\"always\","
		 "\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"pong\",\"properties\":{\"from\":\"ping\"}}}]}]}");
	rule(&e, "{\"name\":\"pong\",\"trigger\":{\"event\":\"pong\"},\"reentry\":\"always\","
		 "\"steps\":[{\"actions\":[{\"emit\":{\"event\":\"ping\"}},{\"increment\":{\"attribute\":\"pongs\"}}]}]}");
	long p = contact(&e, "pat", NULL);
	event(&e, p, "ping", NULL, NULL);
	/* ping(0) -> pong(1) -> ping(2) -> pong(3) -> ping(4) -> pong(5): chain 5 triggers nothing */
	WAIT_EQ(&e, 6, "SELECT count(*) FROM %s.events WHERE contact_id = %ld", e.schema, p);
	WAIT_EQ(&e, 0, "SELECT rules_event_seen - (SELECT max(id) FROM %s.events) FROM %s.dispatch_state", e.schema, e.schema);
	WAIT_EQ(&e, 0, "SELECT count(*) FROM %s.rule_instances WHERE state = 'active'", e.schema);
	struct timespec d = {0, 500000000};
	nanosleep(&d, NULL);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.events WHERE contact_id = %ld", e.schema, p), 6);
	ck_assert_int_eq(num(&e, "SELECT max(chain) FROM %s.events", e.schema), HR_RULE_MAX_CHAIN);
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'pongs')::int FROM %s.contacts WHERE id = %ld", e.schema, p), 2);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.events WHERE name = 'pong' AND properties @> '{\"from\":\"ping\"}'",
			     e.schema), 3);
	down(&e);
}
END_TEST

/*
 * Event ids are taken before their transactions commit, and some are never
 * committed (a rolled-back insert): entering stops before a gap younger than
 * its grace.  The events after it must be entered once the gap has aged,
 * with no further notification -- before, they waited for the tenant's next
 * event, which in the scenarios came a minute later (an abandoned-cart email
 * an hour of herald time late).
 */
START_TEST(events_behind_a_young_id_gap_are_entered_without_another_notification)
{
	env e;
	up(&e);
	long rid = rule(&e, "{\"name\":\"welcome\",\"trigger\":{\"event\":\"signup\"},"
			    "\"steps\":[{\"wait\":{\"delay\":\"1d\"},\"actions\":[{\"emit\":{\"event\":\"welcomed\"}}]}]}");
	long a = contact(&e, "gia", NULL), b = contact(&e, "hal", NULL), c = contact(&e, "ida", NULL);
	WAIT_EQ(&e, 0, "SELECT rules_event_seen - coalesce((SELECT max(id) FROM %s.events), 0) FROM %s.dispatch_state",
		e.schema, e.schema);
	/* gia's event (not announced), an id nobody commits, hal's event (announced): entering takes gia's
	 * and stops before the gap */
	sql(&e, "INSERT INTO %s.events (contact_id, name, occurred_at) VALUES (%ld, 'signup', herald_clock.now())", e.schema, a);
	num(&e, "SELECT nextval(pg_get_serial_sequence('%s.events', 'id'))", e.schema);
	event(&e, b, "signup", NULL, NULL);
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND contact_id = %ld", e.schema, rid, a);
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND contact_id = %ld", e.schema, rid, b);
	/* a gap right after what was entered: nothing at all can be entered until it ages */
	num(&e, "SELECT nextval(pg_get_serial_sequence('%s.events', 'id'))", e.schema);
	event(&e, c, "signup", NULL, NULL);
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND contact_id = %ld", e.schema, rid, c);
	WAIT_EQ(&e, 0, "SELECT rules_event_seen - (SELECT max(id) FROM %s.events) FROM %s.dispatch_state", e.schema, e.schema);
	down(&e);
}
END_TEST

START_TEST(price_drop_reaches_viewers_and_carters_of_the_item)
{
	env e;
	up(&e);
	long rid = rule(&e, "{\"name\":\"price drop\",\"trigger\":{\"event\":\"price_drop\",\"audience\":{"
			    "\"events\":[\"viewed\",\"carted\"],\"match\":\"item\",\"days\":7}},\"reentry\":\"always\","
			    "\"steps\":[{\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"main\","
			    "\"content\":{\"from\":\"shop@example.com\",\"subject\":\"Hi\",\"text\":\"{{ event.item }} is cheaper\"}}}]}]}");
	long v = contact(&e, "vic", NULL), w = contact(&e, "wes", NULL), x = contact(&e, "xia", NULL),
	     o = contact(&e, "old", NULL);
	event(&e, o, "viewed", "{\"item\":\"sku-1\"}", "herald_clock.now() - interval '8 days'");
	event(&e, v, "viewed", "{\"item\":\"sku-1\"}", NULL);
	event(&e, v, "carted", "{\"item\":\"sku-1\"}", NULL);
	event(&e, w, "carted", "{\"item\":\"sku-1\"}", NULL);
	event(&e, x, "viewed", "{\"item\":\"sku-2\"}", NULL);
	event(&e, 0, "price_drop", "{\"item\":\"sku-1\"}", NULL);
	WAIT_EQ(&e, 2, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND state = 'done'", e.schema, rid);
	ck_assert_int_eq(sent_to(&e, v, "email"), 1); /* viewed and carted: one message */
	ck_assert_int_eq(sent_to(&e, w, "email"), 1);
	ck_assert_int_eq(sent_to(&e, x, "email"), 0); /* another item */
	ck_assert_int_eq(sent_to(&e, o, "email"), 0); /* viewed 8 days ago */
	down(&e);
}
END_TEST

START_TEST(sigkill_between_steps_loses_no_step_and_runs_none_twice)
{
	env e;
	up(&e);
	long rid = rule(&e, "{\"name\":\"two\",\"trigger\":{\"event\":\"go\"},\"steps\":["
			    "{\"actions\":[{\"increment\":{\"attribute\":\"s1\"}},{\"send\":{\"channel\":\"email\","
			    "\"provider\":\"main\",\"content\":{\"from\":\"shop@example.com\",\"subject\":\"Hi\",\"text\":\"one\"}}}]},"
			    "{\"wait\":{\"delay\":\"1d\"},\"actions\":[{\"increment\":{\"attribute\":\"s2\"}}]}]}");
	sql(&e, "INSERT INTO %s.contacts (email) SELECT 'k' || g || '@example.com' FROM generate_series(1, 3000) g",
	    e.schema);
	sql(&e, "INSERT INTO %s.consents SELECT id, 'email', 'marketing', true, now() FROM %s.contacts", e.schema,
	    e.schema);
	sql(&e, "BEGIN; INSERT INTO %s.events (contact_id, name, occurred_at) SELECT id, 'go', herald_clock.now() "
		"FROM %s.contacts; NOTIFY herald_events, '%ld'; COMMIT", e.schema, e.schema, (long)e.f.t[0].id);
	/* kill the scheduler while step 1 runs (some batches done, maybe not all) */
	int64_t dl = sched_now_ms() + 30000;
	while (num(&e, "SELECT count(*) FROM %s.rule_instances WHERE step = 1", e.schema) < 1 && sched_now_ms() < dl) {
		struct timespec d = {0, 2000000};
		nanosleep(&d, NULL);
	}
	ck_assert_int_eq(sched_stop(&e.s, SIGKILL), 128 + SIGKILL);
	long at_kill = num(&e, "SELECT count(*) FROM %s.rule_instances WHERE step = 1", e.schema);
	ck_assert_int_gt(at_kill, 0);
	sched_start(&e.s, e.f.dsn, e.f.dir, NULL, NULL);
	WAIT_EQ(&e, 3000, "SELECT count(*) FROM %s.rule_instances WHERE step = 1 AND rule_id = %ld", e.schema, rid);
	/* between the steps */
	ck_assert_int_eq(sched_stop(&e.s, SIGKILL), 128 + SIGKILL);
	advance(&e, "1d");
	sched_start(&e.s, e.f.dsn, e.f.dir, NULL, NULL);
	WAIT_EQ(&e, 3000, "SELECT count(*) FROM %s.rule_instances WHERE state = 'done'", e.schema);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.contacts WHERE attributes @> '{\"s1\":1,\"s2\":1}'", e.schema), 3000);
	ck_assert_int_eq(num(&e, "SELECT sum(cardinality(addresses)) FROM %s.outbox WHERE origin = 'rule'", e.schema), 3000);
	ck_assert_int_eq(num(&e, "SELECT count(DISTINCT c) FROM %s.outbox o, unnest(o.contact_ids) c WHERE origin = 'rule'",
			     e.schema), 3000);
	down(&e);
}
END_TEST


/* The recipient's texts in the simulator's inbox, newest first, joined by " | ". */
static void inbox(psim *p, const char *phone, char *out, size_t n)
{
	char path[128];
	snprintf(path, sizeof path, "/v1/inbox/%%2B%s", phone + 1);
	json_t *j = psim_get_json(p, path);
	json_t *m = json_object_get(j, "messages");
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < json_array_size(m) && o < n; i++)
		o += (size_t)snprintf(out + o, n - o, "%s%s", i ? " | " : "",
				      json_string_value(json_object_get(json_array_get(m, i), "text")));
	json_decref(j);
}

static void text(env *e, char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void text(env *e, char *out, size_t n, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	PGresult *r;
	hr_err err = {0};
	ck_assert_msg(hr_db_query(e->f.c, buf, 0, NULL, &r, &err), "%s: %s", buf, err.msg);
	ck_assert_msg(PQntuples(r) == 1, "%s: %d rows", buf, PQntuples(r));
	snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
}

/* "The day after a purchase, SMS the buyer a personal referral code" (DESIGN.md scenario 1), and a
 * promo pool that runs dry in the middle of a batch: the contact without a code gets none of the
 * step's later actions, an event says why, and everyone else in the batch goes on. */
START_TEST(issue_code_then_send_it_referral_and_an_empty_promo_pool)
{
	env e;
	psim ps;
	const char *args[] = {"--inbox", "16", NULL};
	psim_start(&ps, args);
	fixture_open(&e.f, 1);
	provider_psim(&e.f, 0, "simsms", ps.port);
	up_procs(&e);
	long friends = num(&e, "INSERT INTO %s.code_pools (name, kind, settings) VALUES ('friends', 'referral', "
			       "'{\"prefix\":\"FR-\",\"code_length\":6}') RETURNING id", e.schema);
	long welcome = num(&e, "INSERT INTO %s.code_pools (name, kind) VALUES ('welcome', 'promo') RETURNING id", e.schema);
	sql(&e, "INSERT INTO %s.codes (pool_id, code, max_redemptions) VALUES (%ld, 'WELCOME1', 1)", e.schema, welcome);
	char def[1024];
	snprintf(def, sizeof def,
		 "{\"name\":\"refer a friend\",\"trigger\":{\"event\":\"order\"},\"steps\":[{\"wait\":{\"delay\":\"1d\"},"
		 "\"actions\":[{\"issue_code\":{\"pool\":%ld}},{\"send\":{\"channel\":\"sms\",\"provider\":\"simsms\","
		 "\"content\":{\"text\":\"Give friends your code {{ code }} ({{ code_pool }})\"}}}]}]}", friends);
	long rref = rule(&e, def);
	snprintf(def, sizeof def,
		 "{\"name\":\"welcome\",\"trigger\":{\"event\":\"signup\"},\"steps\":[{\"actions\":["
		 "{\"issue_code\":{\"pool\":%ld}},{\"send\":{\"channel\":\"sms\",\"provider\":\"simsms\","
		 "\"content\":{\"text\":\"Welcome! Your code: {{ code }}\"}}},{\"increment\":{\"attribute\":\"welcomed\"}}]},"
		 "{\"actions\":[{\"increment\":{\"attribute\":\"step2\"}}]}]}", welcome);
	long rwel = rule(&e, def);
	long ann = contact(&e, "ann", NULL), bea = contact(&e, "bea", NULL), cy = contact(&e, "cy", NULL);
	char ann_phone[32], bea_phone[32], cy_phone[32];
	text(&e, ann_phone, sizeof ann_phone, "SELECT phone FROM %s.contacts WHERE id = %ld", e.schema, ann);
	text(&e, bea_phone, sizeof bea_phone, "SELECT phone FROM %s.contacts WHERE id = %ld", e.schema, bea);
	text(&e, cy_phone, sizeof cy_phone, "SELECT phone FROM %s.contacts WHERE id = %ld", e.schema, cy);
	event(&e, ann, "order", "{\"total\":30}", NULL);
	WAIT_EQ(&e, 1, STATE(e, rref, ann), e.schema, rref, ann, "active");
	/* not before the day is over: no code yet */
	advance(&e, "23h");
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.codes WHERE contact_id = %ld", e.schema, ann), 0);
	advance(&e, "1h");
	WAIT_EQ(&e, 1, STATE(e, rref, ann), e.schema, rref, ann, "done");
	/* a personal code of the referral pool, owned by ann, and the SMS that carries it */
	char code[80], want[200], got[2048];
	text(&e, code, sizeof code, "SELECT code FROM %s.codes WHERE pool_id = %ld AND contact_id = %ld", e.schema,
	     friends, ann);
	ck_assert_msg(!strncmp(code, "FR-", 3) && strlen(code) == 9, "code %s", code);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.events WHERE contact_id = %ld AND name = 'code_issued'",
			     e.schema, ann), 1);
	snprintf(want, sizeof want, "Give friends your code %s (friends)", code);
	int64_t dl = sched_now_ms() + 30000;
	do {
		inbox(&ps, ann_phone, got, sizeof got);
		if (strcmp(got, want) == 0)
			break;
		struct timespec d = {0, 50000000};
		nanosleep(&d, NULL);
	} while (sched_now_ms() < dl);
	ck_assert_msg(strcmp(got, want) == 0, "ann's inbox: '%s', want '%s'", got, want);
	/* the promo pool has one code for two sign-ups in one batch */
	sql(&e, "BEGIN; INSERT INTO %s.events (contact_id, name, occurred_at) VALUES (%ld, 'signup', herald_clock.now()), "
		"(%ld, 'signup', herald_clock.now()); NOTIFY herald_events, '%ld'; COMMIT",
	    e.schema, bea, cy, (long)e.f.t[0].id);
	WAIT_EQ(&e, 2, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND state = 'done'", e.schema, rwel);
	long lucky = num(&e, "SELECT contact_id FROM %s.codes WHERE code = 'WELCOME1'", e.schema);
	ck_assert_msg(lucky == bea || lucky == cy, "WELCOME1 went to %ld", lucky);
	long other = lucky == bea ? cy : bea;
	const char *lucky_phone = lucky == bea ? bea_phone : cy_phone, *other_phone = lucky == bea ? cy_phone : bea_phone;
	/* the lucky one: SMS with the code, the counter; the other: neither, but an event that says why */
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'welcomed')::int FROM %s.contacts WHERE id = %ld", e.schema, lucky), 1);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.contacts WHERE id = %ld AND attributes ? 'welcomed'", e.schema,
			     other), 0);
	ck_assert_int_eq(sent_to(&e, other, "sms"), 0);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.events WHERE contact_id = %ld AND name = 'code_not_issued' AND "
				 "properties @> '{\"reason\":\"pool_empty\",\"pool_id\":%ld,\"rule_id\":%ld}'",
			     e.schema, other, welcome, rwel), 1);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.events WHERE name = 'code_not_issued'", e.schema), 1);
	/* both went on to the next step (which has no code in it) */
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.contacts WHERE id IN (%ld, %ld) AND attributes @> '{\"step2\":1}'",
			     e.schema, bea, cy), 2);
	dl = sched_now_ms() + 30000;
	do {
		inbox(&ps, lucky_phone, got, sizeof got);
		if (strcmp(got, "Welcome! Your code: WELCOME1") == 0)
			break;
		struct timespec d = {0, 50000000};
		nanosleep(&d, NULL);
	} while (sched_now_ms() < dl);
	ck_assert_msg(strcmp(got, "Welcome! Your code: WELCOME1") == 0, "inbox: '%s'", got);
	WAIT_EQ(&e, 2, "SELECT count(*) FROM %s.results r JOIN %s.outbox o ON o.id = r.message_id / 4096 "
		       "WHERE o.origin = 'rule' AND r.status = 'sent'", e.schema, e.schema);
	inbox(&ps, other_phone, got, sizeof got);
	ck_assert_str_eq(got, "");
	down(&e);
	psim_stop(&ps);
}
END_TEST

/* With several schedulers (scheduler/owner.h) the rule engine acts only for tenants whose shard its
 * scheduler owns.  Here the test's own session holds every shard's lock, as a peer that owns them all
 * would: the scheduler owns nothing, and its engine neither enters nor runs anything of the tenant;
 * when the locks go, the scheduler takes the shards and the waiting event is acted on. */
/* Bulk messages the tenant's frequency cap already counts for a contact: one campaign message now. */
static void campaign_message(env *e, long cid, const char *address)
{
	sql(e,
	    "INSERT INTO %s.outbox (channel, lane, content, provider, origin, herald_at, addresses, contact_ids) "
	    "VALUES ('email', 'bulk', '{\"from\":\"shop@example.com\",\"subject\":\"Sale\",\"text\":\"sale\"}', 'main', "
	    "'campaign', herald_clock.now(), ARRAY['%s'], ARRAY[%ld::bigint])",
	    e->schema, address, cid);
}

#define CAPPED(e, cid, ch) \
	"SELECT count(*) FROM %s.events WHERE contact_id = %ld AND name = 'frequency_capped' " \
	"AND properties ->> 'channel' = '%s'", (e)->schema, (long)(cid), ch

START_TEST(frequency_cap_applies_to_bulk_rule_sends)
{
	env e;
	up(&e);
	sql(&e, "UPDATE herald.tenants SET settings = '{\"frequency_cap\":{\"max\":1,\"per\":\"day\"}}' WHERE id = %lld",
	    (long long)e.f.t[0].id);
	/* r1: two bulk sends in one step (the sends-only path), then one more a day later */
	long r1 = rule(&e, "{\"name\":\"visits\",\"trigger\":{\"event\":\"visit\"},\"reentry\":\"always\","
			   "\"steps\":[{\"wait\":{\"delay\":\"1h\"},\"actions\":["
			   "{\"send\":{\"channel\":\"email\",\"provider\":\"main\",\"content\":{\"from\":\"shop@example.com\","
			   "\"subject\":\"Hi\",\"text\":\"hi\"}}},"
			   "{\"send\":{\"channel\":\"sms\",\"provider\":\"sms\",\"content\":{\"text\":\"hi\"}}}]},"
			   "{\"wait\":{\"delay\":\"1d\"},\"actions\":[{\"send\":{\"channel\":\"email\",\"provider\":\"main\","
			   "\"content\":{\"from\":\"shop@example.com\",\"subject\":\"Again\",\"text\":\"again\"}}}]}]}");
	/* r2: a counter, a transactional send (exempt) and a bulk one (the general path) */
	long r2 = rule(&e, "{\"name\":\"signup\",\"trigger\":{\"event\":\"signup\"},"
			   "\"steps\":[{\"wait\":{\"delay\":\"1h\"},\"actions\":[{\"increment\":{\"attribute\":\"n\"}},"
			   "{\"send\":{\"channel\":\"sms\",\"provider\":\"sms\",\"lane\":\"transactional\","
			   "\"content\":{\"text\":\"your code\"}}},"
			   "{\"send\":{\"channel\":\"email\",\"provider\":\"main\",\"content\":{\"from\":\"shop@example.com\","
			   "\"subject\":\"Welcome\",\"text\":\"welcome\"}}}]}]}");
	long a = contact(&e, "capa", NULL), b = contact(&e, "capb", NULL), c = contact(&e, "capc", NULL);
	campaign_message(&e, a, "capa@example.com"); /* a and c are at their cap already */
	campaign_message(&e, c, "capc@example.com");
	event(&e, a, "visit", NULL, NULL);
	event(&e, b, "visit", NULL, NULL); /* b visits twice: both instances fall due in one batch */
	event(&e, b, "visit", NULL, NULL);
	event(&e, c, "signup", NULL, NULL);
	WAIT_EQ(&e, 4, "SELECT count(*) FROM %s.rule_instances", e.schema);
	advance(&e, "3601s");
	WAIT_EQ(&e, 3, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND step = 1", e.schema, r1);
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND state = 'done'", e.schema, r2);
	/* a: both bulk sends capped, recorded, and a moves on to step 2 */
	ck_assert_int_eq(sent_to(&e, a, "email") + sent_to(&e, a, "sms"), 0);
	ck_assert_int_eq(num(&e, CAPPED(&e, a, "email")), 1);
	ck_assert_int_eq(num(&e, CAPPED(&e, a, "sms")), 1);
	ck_assert_int_eq(num(&e, STATE(e, r1, a), e.schema, r1, a, "active"), 1);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.events WHERE contact_id = %ld AND name = 'frequency_capped' "
				 "AND (properties ->> 'rule_id')::bigint = %ld AND properties ->> 'step' = '0' "
				 "AND (properties ->> 'max')::int = 1 AND (properties ->> 'period_s')::int = 86400",
			     e.schema, a, r1), 2);
	/* b: one message in all -- the first instance's email; its sms and the second instance's two are capped */
	ck_assert_int_eq(sent_to(&e, b, "email"), 1);
	ck_assert_int_eq(sent_to(&e, b, "sms"), 0);
	ck_assert_int_eq(num(&e, CAPPED(&e, b, "email")), 1);
	ck_assert_int_eq(num(&e, CAPPED(&e, b, "sms")), 2);
	/* c: the counter and the transactional sms happen; the bulk email is capped */
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'n')::int FROM %s.contacts WHERE id = %ld", e.schema, c), 1);
	ck_assert_int_eq(sent_to(&e, c, "sms"), 1);
	ck_assert_int_eq(sent_to(&e, c, "email"), 0);
	ck_assert_int_eq(num(&e, CAPPED(&e, c, "email")), 1);
	ck_assert_int_eq(num(&e, CAPPED(&e, c, "sms")), 0);
	/* rule messages carry their herald time, so campaigns count them too */
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.outbox WHERE origin = 'rule' AND herald_at IS NULL", e.schema), 0);
	/* a day later the window has moved on: step 2 reaches a, and one of b's two instances */
	advance(&e, "25h");
	WAIT_EQ(&e, 3, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND state = 'done'", e.schema, r1);
	ck_assert_int_eq(sent_to(&e, a, "email"), 1);
	ck_assert_int_eq(sent_to(&e, b, "email"), 2);
	ck_assert_int_eq(num(&e, CAPPED(&e, b, "email")), 2);
	/* every bulk message that went out gets its result (no transactional worker runs here) */
	WAIT_EQ(&e, 5, "SELECT count(*) FROM %s.results r JOIN %s.outbox o ON o.id = r.message_id / 4096 "
		       "WHERE o.lane = 'bulk' AND r.status = 'sent'", e.schema, e.schema);
	down(&e);
}
END_TEST

START_TEST(rules_act_only_for_tenants_of_owned_shards)
{
	env e;
	fixture_open(&e.f, 1);
	e.schema = e.f.t[0].schema;
	sql(&e, "SELECT pg_advisory_lock(%d, s) FROM generate_series(0, %d) s", OWNER_LOCK_SHARD, OWNER_SHARDS - 1);
	up_procs(&e);
	long rid = rule(&e, "{\"name\":\"hello\",\"trigger\":{\"event\":\"hello\"},"
			    "\"steps\":[{\"actions\":[{\"increment\":{\"attribute\":\"hellos\"}}]}]}");
	long k = contact(&e, "kai", NULL);
	event(&e, k, "hello", NULL, NULL);
	/* the engine wakes on the NOTIFY; a second is several rebalances and many engine turns */
	struct timespec d = {1, 500000000};
	nanosleep(&d, NULL);
	ck_assert_int_eq(num(&e, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld", e.schema, rid), 0);
	ck_assert_int_eq(num(&e, "SELECT rules_event_seen FROM %s.dispatch_state", e.schema), 0);
	sql(&e, "SELECT pg_advisory_unlock_all()");
	WAIT_EQ(&e, 1, "SELECT count(*) FROM %s.rule_instances WHERE rule_id = %ld AND state = 'done'", e.schema, rid);
	ck_assert_int_eq(num(&e, "SELECT (attributes->>'hellos')::int FROM %s.contacts WHERE id = %ld", e.schema, k), 1);
	down(&e);
}
END_TEST

int main(void)
{
	th_pg_dsn();
	char *root = psim_root_new();
	Suite *s = suite_create("scheduler_rules");
	TCase *tc = th_tcase("rules");
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, abandoned_cart_exit_and_the_same_second_race);
	tcase_add_test(tc, birthday_and_inactivity_triggers);
	tcase_add_test(tc, counters_ranks_and_reentry_policies);
	tcase_add_test(tc, emitted_events_chain_and_the_loop_guard_stops_them);
	tcase_add_test(tc, events_behind_a_young_id_gap_are_entered_without_another_notification);
	tcase_add_test(tc, price_drop_reaches_viewers_and_carters_of_the_item);
	tcase_add_test(tc, sigkill_between_steps_loses_no_step_and_runs_none_twice);
	tcase_add_test(tc, issue_code_then_send_it_referral_and_an_empty_promo_pool);
	tcase_add_test(tc, rules_act_only_for_tenants_of_owned_shards);
	tcase_add_test(tc, frequency_cap_applies_to_bulk_rule_sends);
	suite_add_tcase(s, tc);
	int rc = th_run(s);
	psim_root_remove(root);
	return rc;
}
