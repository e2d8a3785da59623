/*
 * store.c -- the scheduler loop's Postgres side: the tenant list, LISTEN for
 * new work, reading outbox headers and materialising due batches, and crash
 * recovery.
 *
 * No polling of idle tenants: work is announced by NOTIFY herald_outbox
 * '<tenant id>' in the enqueuing transaction (common/outbox.c).  At start
 * every tenant is read once (its dispatch_state.low_water tells where its
 * unfinished work starts); after that a tenant costs nothing until notified.
 *
 * Loading is two-phase.  Headers (id, due_at) are read in id order from
 * last_seen; due ones go to the tenant's FIFO, later ones to its future
 * heap, so a batch scheduled for tomorrow never holds back one due now.
 * A due batch is materialised (its messages, each with the JSON the template
 * sees: the message's data merged with its contact) only when the tenant has
 * room (max_loaded), keeping memory bounded however large the backlog.
 * Nothing is read synchronously on the loop's thread: headers and
 * transactional batches are read together, one round trip per tenant, on
 * TX_SLOTS connections of their own (see tx_poll); bulk batches on up to
 * BULK_SLOTS others, so 4,096 rows never hold up the loop (see bulk_poll).
 * The loop polls their sockets with the workers'.  NOTIFYs come on a
 * connection that does nothing but LISTEN; the loop's own connection keeps
 * the shard locks (owner.c), limits and provider accounts.
 *
 * Recovery: batches that existed when this scheduler started (or took the
 * tenant's shard over from another scheduler, owner.h) may have been
 * partly sent by a scheduler that died; their messages that already have a
 * result are skipped (exactly one result per message), the rest re-sent.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "alloc.h"
#include "db.h"
#include "log.h"
#include "providers.h"
#include "model.h"

tenant *tenant_find(sched *s, uint32_t id)
{
	for (tenant *t = s->tenants[id % 1024]; t; t = t->hnext)
		if (t->id == id)
			return t;
	return NULL;
}

static bool loads_connect(sched *s, hr_err *err);

/*
 * The read connections' backends, named for operators (pg_stat_activity's
 * application_name): "herald-scheduler transactional" and "herald-scheduler
 * bulk".  A bulk backend is also given a nice value BULK_BACKEND_NICE
 * above the server's own (10 for a server at 0; at most 19) when this
 * process may: Postgres on this host (a Unix socket or a loopback
 * address, and /proc/PID/cmdline is a postgres backend) and the right to
 * renice it (the same OS user as Postgres, root, or CAP_SYS_NICE).
 *
 * Why (docs/benchmarks.md, bench/lanes): behind a draining bulk backlog a
 * transactional read needs 2-6 ms of CPU in its backend, but waited up to
 * 1.4 s for a CPU (/proc/PID/schedstat) while the four bulk loads, each
 * turning 4,096 rows into JSON, held the CPU share of Postgres's processes.
 * At nice 10 a bulk backend weighs about a tenth of a transactional one, so
 * the transactional read runs first and the bulk loads take what is left.
 * Where the scheduler may not renice them, operators can (docs/scheduler.md).
 */
static bool loopback_host(const char *h)
{
	return !h || !*h || h[0] == '/' || h[0] == '@' || strcmp(h, "localhost") == 0 ||
	       strncmp(h, "127.", 4) == 0 || strcmp(h, "::1") == 0;
}

static char bulk_cgroup[512];

void store_set_bulk_cgroup(const char *dir)
{
	snprintf(bulk_cgroup, sizeof bulk_cgroup, "%s", dir ? dir : "");
}

/*
 * sched_bulk_cgroup: the backend into that cgroup (its cgroup.procs; cgroup
 * v1's cpu controller or v2 alike).  Why a cgroup as well as nice: with
 * Postgres on this host, its backends are one group for the kernel's
 * scheduler (a session's autogroup, or Postgres's own cgroup), and niced bulk
 * backends still spend that group's share -- a transactional read that wakes
 * when they have used it waited 5-12 ms for a CPU behind a draining backlog
 * (bench/lanes).  In a cgroup of their own with a low cpu.shares (cpu.weight)
 * they spend only that one's.
 */
static void backend_to_cgroup(int pid)
{
	static bool told;
	if (!bulk_cgroup[0])
		return;
	char path[600];
	snprintf(path, sizeof path, "%s/cgroup.procs", bulk_cgroup);
	FILE *f = fopen(path, "w");
	bool ok = f && fprintf(f, "%d\n", pid) > 0;
	if (f && fclose(f) != 0)
		ok = false;
	if (!ok && !told) {
		told = true;
		hr_warn("scheduler: cannot move the bulk lane's Postgres backends into %s (%s); see docs/operations.md",
			path, strerror(errno));
	}
}

void store_backend_lower(PGconn *db)
{
	static bool told;
	int nice = BULK_BACKEND_NICE;
	int pid = PQbackendPID(db);
	char path[64], cmd[16] = "";
	snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	FILE *f = loopback_host(PQhost(db)) ? fopen(path, "r") : NULL;
	if (f) {
		size_t n = fread(cmd, 1, sizeof cmd - 1, f);
		cmd[n] = '\0';
		fclose(f);
	}
	if (strncmp(cmd, "postgres", 8) != 0)
		return; /* not a backend we can see: another host, or another pid namespace */
	backend_to_cgroup(pid);
	errno = 0;
	int now = getpriority(PRIO_PROCESS, (id_t)pid); /* -1 is a valid answer: errno tells */
	if (errno != 0)
		return;
	nice += now; /* relative to the server's own: it may run niced already */
	if (nice > 19)
		nice = 19;
	if (setpriority(PRIO_PROCESS, (id_t)pid, nice) != 0 && !told) {
		told = true;
		hr_info("scheduler: cannot renice the bulk lane's Postgres backends (%s); see docs/scheduler.md, "
			"\"Postgres backends and CPU priority\"",
			strerror(errno));
	}
}

/* Connect one read connection (tx or bulk), name it, and renice a bulk one. */
static bool read_connect(sched *s, PGconn **db, bool bulk, hr_err *err)
{
	if (!hr_db_connect(s->dsn, db, err))
		return false;
	if (!hr_db_exec(*db,
			bulk ? "SET application_name = 'herald-scheduler bulk'"
			     : "SET application_name = 'herald-scheduler transactional'",
			err)) {
		PQfinish(*db);
		*db = NULL;
		return false;
	}
	if (bulk)
		store_backend_lower(*db);
	return true;
}

/* The loop's connection, the LISTEN connection, and those of the reads
 * (connected now: a connect under load takes 100 ms or more, which the first
 * transactional message or the first bulk batch would otherwise wait for). */
bool store_connect(sched *s, hr_err *err)
{
	return hr_db_connect(s->dsn, &s->db, err) && hr_db_connect(s->dsn, &s->listen, err) &&
	       loads_connect(s, err);
}

static bool tenant_exec(sched *s, tenant *t, hr_err *err)
{
	sched_db_sync(s);
	return hr_db_tenant_begin(s->db, t->schema, t->role, err);
}

/* sql with $1 and $2 replaced (heap string). */
static char *bind2(const char *sql, const char *p1, const char *p2)
{
	size_t cap = strlen(sql) + strlen(p1) * 4 + strlen(p2) * 4 + 1, len = 0;
	char *out = hr_malloc(cap);
	for (const char *q = sql; *q; q++) {
		const char *v = q[0] == '$' && q[1] == '1' ? p1 : q[0] == '$' && q[1] == '2' ? p2 : NULL;
		if (v) {
			len += (size_t)snprintf(out + len, cap - len, "%s", v);
			q++;
		} else {
			out[len++] = *q;
		}
	}
	out[len] = '\0';
	return out;
}

/* Read low water and the current max id of one tenant's outbox. */
static bool tenant_start(sched *s, tenant *t, hr_err *err)
{
	PGresult *r;
	if (!tenant_exec(s, t, err))
		return false;
	bool ok = hr_db_query(s->db,
			      "SELECT (SELECT low_water FROM dispatch_state), coalesce((SELECT max(id) FROM outbox), 0)",
			      0, NULL, &r, err);
	hr_db_rollback(s->db);
	if (!ok)
		return false;
	int64_t low = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	int64_t max = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
	PQclear(r);
	t->last_seen = low > 0 ? low - 1 : 0;
	t->ngaps = 0; /* reading from the low water covers them */
	t->recover_until = max;
	t->recovering = max > t->last_seen;
	t->need_load = t->recovering;
	return true;
}

/*
 * The tenants this scheduler serves -- the one place that decides it, for the
 * dispatcher and the rule engine alike (scheduler HA will restrict it to the
 * tenants this process owns).
 */
bool store_tenants(PGconn *c, PGresult **r, hr_err *err)
{
	return hr_db_query(c,
			   "SELECT t.id, t.agency_id, t.slug, t.schema_name, t.role_name, t.status = 'active' "
			   "FROM herald.tenants t JOIN herald.db_servers d ON d.id = t.db_server_id "
			   "WHERE d.dsn IS NULL ORDER BY t.id",
			   0, NULL, r, err);
}

bool store_load_tenants(sched *s, hr_err *err)
{
	PGresult *r;
	sched_db_sync(s);
	if (!store_tenants(s->db, &r, err))
		return false;
	bool ok = true;
	for (int i = 0; ok && i < PQntuples(r); i++) {
		uint32_t id = (uint32_t)strtoul(PQgetvalue(r, i, 0), NULL, 10);
		tenant *t = tenant_find(s, id);
		bool fresh = t == NULL;
		if (fresh) {
			t = hr_calloc(1, sizeof *t);
			t->id = id;
			t->hnext = s->tenants[id % 1024];
			s->tenants[id % 1024] = t;
			s->ntenants++;
		}
		t->agency_id = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		snprintf(t->slug, sizeof t->slug, "%s", PQgetvalue(r, i, 2));
		snprintf(t->schema, sizeof t->schema, "%s", PQgetvalue(r, i, 3));
		snprintf(t->role, sizeof t->role, "%s", PQgetvalue(r, i, 4));
		t->active = strcmp(PQgetvalue(r, i, 5), "t") == 0;
		snprintf(t->scope_tenant, sizeof t->scope_tenant, "tenant:%u", id);
		snprintf(t->scope_agency, sizeof t->scope_agency, "agency:%lld", (long long)t->agency_id);
		t->shard = owner_shard_of(id);
		/* A tenant of a shard another scheduler owns costs nothing here until we take it. */
		if (fresh && owner_shard_state(s->owner, t->shard) != SHARD_FREE)
			ok = tenant_start(s, t, err);
	}
	PQclear(r);
	return ok;
}

bool store_tenant_take(sched *s, tenant *t, hr_err *err)
{
	/* Whatever this scheduler knew of t is stale: another may have served it since. */
	t->last_seen = t->recover_until = 0;
	t->ndue = t->duehead = t->ndue_tx = t->nfuture = t->ngaps = 0;
	t->more_rows = false;
	return tenant_start(s, t, err);
}

/*
 * NOTIFYs arrive on a connection of their own that runs no query after
 * LISTEN.  On the loop's connection they waited behind its statements (the
 * shard tick every second, limits and provider accounts): Postgres delivers
 * a notification only when the listening session is idle, and a statement
 * there could wait 100-700 ms for a CPU behind a draining backlog
 * (docs/benchmarks.md, bench/lanes).  Queries would also read notifications
 * into libpq's queue, where they no longer make the socket readable.
 */
bool store_listen(sched *s, hr_err *err)
{
	return hr_db_exec(s->listen, "LISTEN herald_outbox; LISTEN herald_tenants", err);
}

/* Act on the NOTIFYs libpq holds. */
static void take_notifies(sched *s)
{
	PGnotify *n;
	bool reload_tenants = false;
	while ((n = PQnotifies(s->listen))) {
		if (strcmp(n->relname, "herald_outbox") == 0) {
			tenant *t = tenant_find(s, (uint32_t)strtoul(n->extra, NULL, 10));
			if (s->trace) /* bench/lanes matches these to the enqueuers' commits */
				hr_info("trace: notify tenant=%s pid=%d at_us=%lld", n->extra, n->be_pid,
					(long long)wall_us());
			if (t) {
				if (!t->need_load)
					t->notified_us = wall_us();
				t->need_load = true;
			}
			else
				reload_tenants = true; /* a tenant created after we started */
		} else {
			reload_tenants = true;
		}
		PQfreemem(n);
	}
	if (reload_tenants) {
		hr_err err = {0};
		if (!store_load_tenants(s, &err))
			hr_warn("scheduler: reloading tenants: %s", err.msg);
		/* Newly seen tenants start with need_load from tenant_start. */
		for (int i = 0; i < 1024; i++)
			for (tenant *t = s->tenants[i]; t; t = t->hnext)
				if (t->last_seen == 0 && t->recover_until == 0)
					t->need_load = true;
	}
}

bool store_poll_notify(sched *s)
{
	if (!PQconsumeInput(s->listen))
		return false;
	take_notifies(s);
	return true;
}

static void push_due(tenant *t, int64_t id, bool tx)
{
	if (t->ndue + t->duehead == t->capdue) {
		if (t->duehead > 0) {
			memmove(t->due_ids, t->due_ids + t->duehead, (size_t)t->ndue * sizeof *t->due_ids);
			memmove(t->due_tx, t->due_tx + t->duehead, (size_t)t->ndue);
			t->duehead = 0;
		} else {
			t->capdue = t->capdue ? t->capdue * 2 : 256;
			t->due_ids = hr_realloc(t->due_ids, (size_t)t->capdue * sizeof *t->due_ids);
			t->due_tx = hr_realloc(t->due_tx, (size_t)t->capdue);
		}
	}
	t->due_ids[t->duehead + t->ndue] = id;
	t->due_tx[t->duehead + t->ndue++] = tx;
	t->ndue_tx += tx;
}

/* Take the FIFO's entry at position k (0 = head), keeping the rest in order. */
static int64_t take_due(tenant *t, int k)
{
	int64_t id = t->due_ids[t->duehead + k];
	t->ndue_tx -= t->due_tx[t->duehead + k];
	if (k == 0) {
		t->duehead++;
	} else {
		int at = t->duehead + k, rest = t->ndue - k - 1;
		memmove(t->due_ids + at, t->due_ids + at + 1, (size_t)rest * sizeof *t->due_ids);
		memmove(t->due_tx + at, t->due_tx + at + 1, (size_t)rest);
	}
	t->ndue--;
	return id;
}

static void push_future(tenant *t, int64_t due_ms, int64_t id, bool tx)
{
	if (t->nfuture == t->capfuture) {
		t->capfuture = t->capfuture ? t->capfuture * 2 : 64;
		t->future = hr_realloc(t->future, (size_t)t->capfuture * sizeof *t->future);
	}
	int i = t->nfuture++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (t->future[p].due_ms <= due_ms)
			break;
		t->future[i] = t->future[p];
		i = p;
	}
	t->future[i].due_ms = due_ms;
	t->future[i].id = id;
	t->future[i].tx = tx;
}

/* Move future batches that are now due to the FIFO.  Returns the next due time (0 = none). */
int64_t store_promote_future(tenant *t, int64_t now);
int64_t store_promote_future(tenant *t, int64_t now)
{
	while (t->nfuture > 0 && t->future[0].due_ms <= now) {
		push_due(t, t->future[0].id, t->future[0].tx);
		/* pop */
		int64_t due = t->future[t->nfuture - 1].due_ms, id = t->future[t->nfuture - 1].id;
		bool tx = t->future[t->nfuture - 1].tx;
		int n = --t->nfuture, i = 0;
		for (;;) {
			int c = 2 * i + 1;
			if (c >= n)
				break;
			if (c + 1 < n && t->future[c + 1].due_ms < t->future[c].due_ms)
				c++;
			if (t->future[c].due_ms >= due)
				break;
			t->future[i] = t->future[c];
			i = c;
		}
		if (n > 0) {
			t->future[i].due_ms = due;
			t->future[i].id = id;
			t->future[i].tx = tx;
		}
	}
	return t->nfuture ? t->future[0].due_ms : 0;
}

/*
 * Phase 1: the headers after last_seen (HEADERS_SQL's rows) go to the FIFO or
 * the future heap.
 *
 * Ids come from a sequence when a row is inserted, but transactions commit in
 * any order: when id 11 is read, id 10 may belong to a transaction still open
 * (an API send, a campaign run inserting for seconds).  Passing it by would
 * lose it -- and the low water would pass it too.  So a hole below a new id
 * is kept as a gap, read again by every header read (its transaction NOTIFYs
 * when it commits), and the low water stays below it.  A gap is dropped once
 * the reading snapshot's xmin has reached the xmax of the snapshot that found
 * it -- every transaction that could have held those ids then has ended (a
 * rollback, or ids a failed statement took) -- and at least GAP_GRACE_MS
 * later: the sequence is read just before the inserting transaction takes its
 * xid, and the grace covers that instant.
 */
#define HEADERS_LIMIT 2000
#define GAP_GRACE_MS 10000

static void gap_push(tenant *t, id_gap g)
{
	if (t->ngaps == t->capgaps) {
		t->capgaps = t->capgaps ? t->capgaps * 2 : 8;
		t->gaps = hr_realloc(t->gaps, (size_t)t->capgaps * sizeof *t->gaps);
	}
	t->gaps[t->ngaps++] = g;
}

/* Take id out of the gap holding it; false when no gap holds it. */
static bool gap_take(tenant *t, int64_t id)
{
	for (int g = 0; g < t->ngaps; g++) {
		id_gap *p = &t->gaps[g];
		if (id < p->lo || id > p->hi)
			continue;
		if (p->lo == p->hi) {
			t->gaps[g] = t->gaps[--t->ngaps];
		} else if (id == p->lo) {
			p->lo++;
		} else if (id == p->hi) {
			p->hi--;
		} else { /* split: both sides stay gaps (p may move when the array grows) */
			id_gap upper = *p;
			upper.lo = id + 1;
			p->hi = id - 1;
			gap_push(t, upper);
		}
		return true;
	}
	return false;
}

/* " OR id BETWEEN lo AND hi" for every gap: HEADERS_SQL's $2. */
static char *gaps_sql(const tenant *t)
{
	size_t cap = 1 + (size_t)t->ngaps * 64, len = 0;
	char *out = hr_malloc(cap);
	out[0] = '\0';
	for (int g = 0; g < t->ngaps; g++)
		len += (size_t)snprintf(out + len, cap - len, " OR id BETWEEN %lld AND %lld", (long long)t->gaps[g].lo,
					(long long)t->gaps[g].hi);
	return out;
}

/* sent_ms: when the read was sent; it ends only gaps found before that (it
 * asked for them: a read sent earlier may have stopped at its LIMIT below).
 * newest: no read sent after it was applied before it; an older one may only
 * set more_rows (its snapshot may be older: it cannot say nothing is left). */
static void apply_headers(tenant *t, PGresult *r, int64_t sent_ms, bool newest)
{
	int n = PQntuples(r), rows = 0;
	int64_t now = now_ms();
	int64_t xmin = n > 0 ? strtoll(PQgetvalue(r, 0, 4), NULL, 10) : 0;
	int64_t xmax = n > 0 ? strtoll(PQgetvalue(r, 0, 5), NULL, 10) : 0;
	bool full = false;
	for (int i = 0; i < n; i++) {
		if (PQgetisnull(r, i, 0))
			continue;
		rows++;
		int64_t id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		if (id <= t->last_seen) {
			/* A late commit inside a gap -- or, from a read sent before another
			 * that was applied first (tx reads overlap), an id already taken. */
			if (!gap_take(t, id))
				continue;
		} else if (id > t->last_seen + 1) {
			if (t->ngaps >= ID_GAPS_MAX) {
				full = true; /* stop before the hole: read from here again once a gap ends */
				break;
			}
			gap_push(t, (id_gap){t->last_seen + 1, id - 1, xmax, now});
		}
		bool tx = strcmp(PQgetvalue(r, i, 3), "t") == 0;
		if (strcmp(PQgetvalue(r, i, 2), "t") == 0)
			push_due(t, id, tx);
		else
			push_future(t, strtoll(PQgetvalue(r, i, 1), NULL, 10), id, tx);
		if (id > t->last_seen)
			t->last_seen = id;
	}
	for (int g = 0; g < t->ngaps;)
		if (xmin >= t->gaps[g].xmax && now - t->gaps[g].found_ms >= GAP_GRACE_MS &&
		    sent_ms > t->gaps[g].found_ms) {
			t->gaps[g] = t->gaps[--t->ngaps];
			t->gaps_ended = true;
		} else
			g++;
	t->gaps_checked_ms = now;
	bool more = rows == HEADERS_LIMIT || full;
	t->more_rows = newest ? more : t->more_rows || more;
}

/*
 * Resolved provider accounts, cached for provider_cache_ms: without the cache
 * every loaded batch cost the loop a control-schema query and an AES-GCM
 * open.  A changed account applies to batches loaded after the entry ages
 * out; a missing one is never cached.  Entries hold secrets: wiped on free.
 */
struct provider_entry {
	uint32_t tenant_id;
	char *name;
	char *json;
	int64_t fetched_ms;
	struct provider_entry *next;
};

static void provider_entry_free(struct provider_entry *e)
{
	memset(e->json, 0, strlen(e->json));
	hr_free(e->json);
	hr_free(e->name);
	hr_free(e);
}

void store_providers_free(sched *s)
{
	for (int i = 0; i < 256; i++)
		while (s->providers[i]) {
			struct provider_entry *e = s->providers[i];
			s->providers[i] = e->next;
			provider_entry_free(e);
		}
}

static char *resolve_provider(sched *s, tenant *t, const char *name, hr_err *err)
{
	unsigned h = t->id;
	for (const char *p = name; *p; p++)
		h = h * 31 + (unsigned char)*p;
	struct provider_entry **pp = &s->providers[h % 256];
	int64_t now = now_ms();
	for (; *pp; pp = &(*pp)->next) {
		struct provider_entry *e = *pp;
		if (e->tenant_id != t->id || strcmp(e->name, name) != 0)
			continue;
		if (now - e->fetched_ms < s->provider_cache_ms)
			return hr_strdup(e->json);
		*pp = e->next; /* stale: read it again below */
		provider_entry_free(e);
		break;
	}
	char *json = NULL;
	/* Provider accounts live in the control schema: read outside the tenant role. */
	sched_db_sync(s);
	if (!hr_provider_resolve(s->db, s->master_key, t->id, name, false, &json, err))
		return NULL;
	struct provider_entry *e = hr_calloc(1, sizeof *e);
	e->tenant_id = t->id;
	e->name = hr_strdup(name);
	e->json = hr_strdup(json);
	e->fetched_ms = now;
	e->next = s->providers[h % 256];
	s->providers[h % 256] = e;
	return json;
}

bool store_load_limits(sched *s, hr_err *err)
{
	PGresult *r;
	sched_db_sync(s);
	if (!hr_db_query(s->db,
			 "SELECT 'account:' || tenant_id || '/' || name, rate_per_s FROM herald.provider_accounts "
			 "WHERE rate_per_s IS NOT NULL UNION ALL "
			 "SELECT 'tenant:' || id, (limits->>'rate_per_s')::float FROM herald.tenants "
			 "WHERE limits ? 'rate_per_s' UNION ALL "
			 "SELECT 'agency:' || id, (limits->>'rate_per_s')::float FROM herald.agencies "
			 "WHERE limits ? 'rate_per_s' UNION ALL "
			 "SELECT 'sender:' || t.id || '/' || lower(r.key), r.value::float FROM herald.tenants t, "
			 "jsonb_each_text(CASE WHEN jsonb_typeof(t.limits->'sender_rates') = 'object' "
			 "THEN t.limits->'sender_rates' ELSE '{}'::jsonb END) r",
			 0, NULL, &r, err))
		return false;
	for (int i = 0; i < PQntuples(r); i++)
		hr_limiter_set_rate(s->limiter, PQgetvalue(r, i, 0), strtod(PQgetvalue(r, i, 1), NULL));
	PQclear(r);
	s->limits_loaded_ms = now_ms();
	return true;
}

/* Phase 2 reads a batch's header and its messages ($1 = id, $2 = recovering). */
#define HEADER_SQL                                                                                          \
	"SELECT o.channel, o.lane, coalesce(o.template_id, 0), coalesce(o.template_version, 0), "           \
	"coalesce(o.content, (SELECT v.content FROM template_versions v WHERE "                              \
	"v.template_id = o.template_id AND v.version = o.template_version))::text, "                        \
	"o.provider, cardinality(o.addresses), (extract(epoch FROM o.due_at) * 1000)::bigint "             \
	"FROM outbox o WHERE o.id = $1"
#define ROWS_SQL                                                                                            \
	"SELECT u.ord - 1, u.addr, "                                                                        \
	"(coalesce(o.data -> (u.ord::int - 1), '{}'::jsonb) || CASE WHEN c.id IS NULL THEN '{}'::jsonb "    \
	"ELSE jsonb_build_object('contact', c.attributes || jsonb_strip_nulls(jsonb_build_object("         \
	"'id', c.id, 'email', c.email, 'phone', c.phone, 'external_id', c.external_id, "                    \
	"'time_zone', c.time_zone, 'locale', c.locale))) END)::text "                                       \
	"FROM outbox o CROSS JOIN LATERAL unnest(o.addresses) WITH ORDINALITY u(addr, ord) "               \
	"LEFT JOIN contacts c ON c.id = o.contact_ids[u.ord] "                                             \
	"WHERE o.id = $1 AND NOT ($2::bool AND EXISTS (SELECT 1 FROM results x "                           \
	"WHERE x.message_id = o.id * 4096 + u.ord - 1)) ORDER BY u.ord"

/* Column offsets: HEADER_SQL's row starts at column 0, the multi-batch reads' (TX_*) at 1. */
static void batch_build(sched *s, tenant *t, int64_t id, PGresult *h, int hrow, int hcol, PGresult *r, int r0,
			int r1, int rcol, hr_err *err);

/* Make the batch from its header (row hrow of h, from column hcol) and message
 * rows r0..r1-1 of r (from column rcol); hand it to the loop. */
static void batch_build(sched *s, tenant *t, int64_t id, PGresult *h, int hrow, int hcol, PGresult *r, int r0,
			int r1, int rcol, hr_err *err)
{
	batch *b;
	b = hr_calloc(1, sizeof *b);
	b->id = id;
	b->t = t;
	b->channel = (uint8_t)hr_channel_parse(PQgetvalue(h, hrow, hcol + 0));
	b->lane = (uint8_t)hr_lane_parse(PQgetvalue(h, hrow, hcol + 1));
	b->template_id = strtoll(PQgetvalue(h, hrow, hcol + 2), NULL, 10);
	b->template_version = atoi(PQgetvalue(h, hrow, hcol + 3));
	b->content = hr_strdup(PQgetisnull(h, hrow, hcol + 4) ? "{}" : PQgetvalue(h, hrow, hcol + 4));
	b->provider = hr_strdup(PQgetvalue(h, hrow, hcol + 5));
	b->n = atoi(PQgetvalue(h, hrow, hcol + 6));
	b->due_ms = strtoll(PQgetvalue(h, hrow, hcol + 7), NULL, 10);
	b->scope_account = hr_sprintf("account:%u/%s", t->id, b->provider);
	b->address = hr_calloc((size_t)b->n, sizeof *b->address);
	b->data = hr_calloc((size_t)b->n, sizeof *b->data);
	b->state = hr_malloc((size_t)b->n);
	b->attempts = hr_calloc((size_t)b->n, 1);
	memset(b->state, MSG_DONE, (size_t)b->n); /* only rows returned are to be sent */
	b->remaining = 0;
	for (int i = r0; i < r1; i++) {
		int idx = atoi(PQgetvalue(r, i, rcol + 0));
		if (idx < 0 || idx >= b->n || b->state[idx] == MSG_PENDING)
			continue;
		b->address[idx] = hr_strdup(PQgetvalue(r, i, rcol + 1));
		b->data[idx] = hr_strdup(PQgetvalue(r, i, rcol + 2));
		b->state[idx] = MSG_PENDING;
		b->remaining++;
	}
	b->cursor = 0;
	if (b->remaining > 0) {
		b->provider_json = resolve_provider(s, t, b->provider, err);
		if (!b->provider_json) {
			/* The batch cannot be sent as configured: every message fails permanently. */
			hr_warn("scheduler: tenant=%s batch=%lld provider '%s': %s", t->slug, (long long)id,
				b->provider, err->msg);
			b->provider_json = NULL;
		}
	}
	tenant_add_batch(s, t, b);
}

/*
 * Bulk batches are materialised asynchronously, on connections of their own,
 * so that the loop never waits for 4,096 rows (10-30 ms idle, over 100 ms on
 * a busy machine) while a transactional message is waiting to be dispatched.
 * Each slot runs one batch's BEGIN / SET LOCAL ROLE / search_path / header /
 * rows / ROLLBACK as one simple-protocol round trip (the parameters are an
 * integer and a boolean we made, written into the text); the loop collects
 * the results when they are there.  The batch's id stays in the tenant's
 * FIFO (so low_water() keeps counting it) until its batch is added; a failed
 * load drops the connection and the id is loaded again later.
 */
#define BULK_SLOTS 4

static struct bulk_slot {
	PGconn *db;
	tenant *t;                /* NULL = idle */
	int64_t id;
	PGresult *h, *r;          /* header and rows, once they arrived */
	int nres;                 /* results collected of the six statements */
	bool failed;
} bulk[BULK_SLOTS];

static bool bulk_busy(const tenant *t, int64_t id)
{
	for (int i = 0; i < BULK_SLOTS; i++)
		if (bulk[i].t == t && bulk[i].id == id)
			return true;
	return false;
}

static void bulk_poll(sched *s);

static bool bulk_send(sched *s, struct bulk_slot *k, tenant *t, int64_t id, hr_err *err)
{
	if (!k->db && !read_connect(s, &k->db, true, err))
		return false;
	char idtext[32];
	snprintf(idtext, sizeof idtext, "%lld", (long long)id);
	bool recover = t->recovering && id <= t->recover_until;
	char *qs = hr_db_ident(k->db, t->schema), *qr = hr_db_ident(k->db, t->role);
	char *hq = bind2(HEADER_SQL, idtext, "false"), *rq = bind2(ROWS_SQL, idtext, recover ? "true" : "false");
	char *sql = hr_sprintf("BEGIN; SET LOCAL ROLE %s; SET LOCAL search_path TO %s; %s; %s; ROLLBACK", qr, qs,
			       hq, rq);
	bool ok = PQsendQuery(k->db, sql) == 1;
	if (!ok) {
		hr_db_fail(k->db, NULL, "loading a batch", err);
		PQfinish(k->db);
		k->db = NULL;
	} else {
		k->t = t;
		k->id = id;
		k->nres = 0;
		k->failed = false;
	}
	hr_free(sql);
	hr_free(hq);
	hr_free(rq);
	hr_free(qs);
	hr_free(qr);
	return ok;
}

/*
 * Read what arrived for one asynchronous read (several statements): result i
 * goes to *keep[i - first] for first <= i < first + n, the others are
 * cleared.  A failed statement or a broken connection sets *failed and is
 * logged once.  True when the read is over.
 */
static bool read_collect(PGconn *db, const tenant *t, const char *what, int first, int n, PGresult **keep[],
			 int *nres, bool *failed)
{
	if (!PQconsumeInput(db)) {
		*failed = true;
		return true;
	}
	while (!PQisBusy(db)) {
		PGresult *r = PQgetResult(db);
		if (!r)
			return true;
		ExecStatusType st = PQresultStatus(r);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !*failed) {
			*failed = true;
			hr_err err = {0};
			hr_db_fail(db, r, what, &err);
			hr_warn("scheduler: tenant=%s: %s: %s", t->slug, what, err.msg);
		}
		if (*nres >= first && *nres < first + n)
			*keep[*nres - first] = r;
		else
			PQclear(r);
		(*nres)++;
	}
	return false;
}

/* Collect what arrived on every busy slot; add the batches that are complete. */
static void bulk_poll(sched *s)
{
	for (int i = 0; i < BULK_SLOTS; i++) {
		struct bulk_slot *k = &bulk[i];
		if (!k->t)
			continue;
		char what[48];
		snprintf(what, sizeof what, "loading batch %lld", (long long)k->id);
		PGresult **keep[] = {&k->h, &k->r};
		bool done = read_collect(k->db, k->t, what, 3, 2, keep, &k->nres, &k->failed);
		if (!done)
			continue;
		tenant *t = k->t;
		if (!k->failed && k->nres == 6) {
			for (int j = 0; j < t->ndue; j++)
				if (t->due_ids[t->duehead + j] == k->id) {
					take_due(t, j);
					break;
				}
			hr_err err = {0};
			if (PQntuples(k->h) == 1)
				batch_build(s, t, k->id, k->h, 0, 0, k->r, 0, PQntuples(k->r), 0, &err);
		} else {
			/* The transaction may be left open: start over on a new connection. */
			PQfinish(k->db);
			k->db = NULL;
		}
		PQclear(k->h);
		PQclear(k->r);
		k->h = k->r = NULL;
		k->t = NULL;
	}
}

/*
 * The transactional path: headers and transactional batches, read
 * asynchronously on connections of their own (TX_SLOTS), one round trip per
 * tenant and turn, whatever number of messages were announced meanwhile.
 *
 * Measured behind a draining million-message backlog (docs/benchmarks.md,
 * bench/lanes): Postgres answers a trivial read in 1-2 ms idle but up to
 * 200 ms with the bulk loads and the lander's COPY on two cores, and the
 * loop used to wait for those reads -- a header read, then one round trip per
 * transactional batch -- with every other announced message queued behind
 * them.  Now one job reads, in one REPEATABLE READ snapshot: the new headers
 * (HEADERS_SQL), and the headers and rows of up to TX_BATCHES_MAX due
 * transactional batches, those of the FIFO and those among the new headers
 * (TX_BATCHES_BODY; prepared, TX_PREPARE).  The loop polls the slots' sockets with the
 * workers' and goes on meanwhile.  NOTIFYs heard while a tenant's job is out
 * are read by its next job (need_load stays set).  A failed job changes
 * nothing: the ids stay in the FIFO, the headers are read again.
 */
#define TX_SLOTS 4
#define TX_PER_TENANT 3
#define TX_BATCHES_MAX 64
/* $1 = last_seen, $2 = the gaps' ranges (" OR id BETWEEN lo AND hi ..."); always one
 * row at least, for the snapshot's xmin and xmax (columns 4, 5; id NULL = no row). */
#define HEADERS_HEAD                                                                                        \
	"SELECT o.id, o.ms, o.due, o.tx, pg_snapshot_xmin(pg_current_snapshot())::text, "                    \
	"pg_snapshot_xmax(pg_current_snapshot())::text FROM (SELECT 1) one LEFT JOIN LATERAL ("              \
	"SELECT id, (extract(epoch FROM due_at) * 1000)::bigint AS ms, due_at <= now() AS due, "              \
	"lane = 'transactional' AS tx FROM outbox WHERE id > $1"
#define HEADERS_TAIL " ORDER BY id LIMIT 2000) o ON true ORDER BY o.id"
#define HEADERS_SQL HEADERS_HEAD "$2" HEADERS_TAIL
/*
 * The transactional batches statement is prepared on each read
 * connection (its planning was about two thirds of a read's CPU in its
 * backend: 0.7 of ~1 ms warm) and run with EXECUTE in the same one round
 * trip.  The names are unqualified: PostgreSQL plans a prepared statement
 * again when search_path differs from the one it was planned under, so a
 * connection that reads another tenant next re-plans once, as before.
 * plan_cache_mode stays auto: PostgreSQL keeps the generic plan only when its
 * estimated cost is no worse than the custom plans' -- forced, a generic plan
 * of `id > $1` could scan a large outbox.  $1 last_seen, $2 FIFO ids, $3
 * limit, $4 the recovery bound.
 *
 * The new-headers statement is prepared too (herald_tx_new, HEADERS_SQL
 * without gaps, which is nearly always): a read's backend CPU, run back to
 * back on an idle server, was 0.33 ms, 0.21 ms with it prepared -- on the
 * transactional path, where every hop waits for a CPU behind a backlog, it is
 * the read's largest share.  A tenant with gaps to look into reads them by
 * the plain statement, planned each time.
 */
#define TX_IDS_PREP                                                                                         \
	"WITH ids AS (SELECT id FROM outbox WHERE lane = 'transactional' AND due_at <= now() AND "           \
	"(id = ANY($2) OR (id > $1 AND id <= (SELECT max(w.id) FROM (SELECT id FROM outbox "                 \
	"WHERE id > $1 ORDER BY id LIMIT 2000) w))) ORDER BY id LIMIT $3) "
#define TX_PREPARE                                                                                          \
	"PREPARE herald_tx_new(bigint) AS " HEADERS_HEAD HEADERS_TAIL "; "                                   \
	"PREPARE herald_tx_batches(bigint, bigint[], int, bigint) AS " TX_IDS_PREP TX_BATCHES_BODY("$4") "; "
#define TX_PREPARED 2 /* statements in TX_PREPARE: a read that prepares has as many more results */
/*
 * The due transactional batches, header and message rows in one result (one
 * statement: the ids are found once): per batch, its messages in order, each
 * row repeating the header (columns 1-8: channel, lane, template id and
 * version, content, provider, size, due ms), then the message (9-11: index,
 * address, the JSON the template sees); a batch none of whose messages is
 * left to send (recovery: each has a result) is one row with the message
 * columns NULL.  A transactional batch is nearly always one message, so
 * repeating its header costs nothing; a read's backend CPU, against header
 * and rows as two statements, was about a sixth lower run back to back on an
 * idle server and a third lower behind a backlog (p50 1.3-1.7 -> 0.86-0.97 ms,
 * bench/lanes; docs/benchmarks.md).
 */
#define TX_BATCHES_BODY(recover)                                                                            \
	"SELECT o.id, o.channel, o.lane, coalesce(o.template_id, 0), coalesce(o.template_version, 0), "     \
	"coalesce(o.content, (SELECT v.content FROM template_versions v WHERE "                              \
	"v.template_id = o.template_id AND v.version = o.template_version))::text, "                        \
	"o.provider, cardinality(o.addresses), (extract(epoch FROM o.due_at) * 1000)::bigint, "            \
	"m.ord, m.addr, m.data FROM outbox o LEFT JOIN LATERAL (SELECT u.ord - 1 AS ord, u.addr, "          \
	"(coalesce(o.data -> (u.ord::int - 1), '{}'::jsonb) || CASE WHEN c.id IS NULL THEN '{}'::jsonb "    \
	"ELSE jsonb_build_object('contact', c.attributes || jsonb_strip_nulls(jsonb_build_object("         \
	"'id', c.id, 'email', c.email, 'phone', c.phone, 'external_id', c.external_id, "                    \
	"'time_zone', c.time_zone, 'locale', c.locale))) END)::text AS data "                               \
	"FROM unnest(o.addresses) WITH ORDINALITY u(addr, ord) LEFT JOIN contacts c ON c.id = o.contact_ids[u.ord] " \
	"WHERE NOT (o.id <= " recover " AND EXISTS (SELECT 1 FROM results x "                                \
	"WHERE x.message_id = o.id * 4096 + u.ord - 1))) m ON true "                                        \
	"WHERE o.id IN (SELECT id FROM ids) ORDER BY o.id, m.ord"

/*
 * sched_trace: the CPU time a read's Postgres backend used, and the time it
 * waited for a CPU, while the read was out (/proc/PID/schedstat: on-CPU ns,
 * run-queue ns) -- tells a slow query from a starved backend.  Only when
 * Postgres runs on this host as a user whose /proc entries we may read
 * (bench/lanes); false otherwise.
 */
static bool backend_schedstat(PGconn *db, int64_t v[2])
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/schedstat", PQbackendPID(db));
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	long long cpu, runq;
	bool ok = fscanf(f, "%lld %lld", &cpu, &runq) == 2;
	fclose(f);
	v[0] = cpu;
	v[1] = runq;
	return ok;
}

static struct tx_slot {
	PGconn *db;
	tenant *t;                /* NULL = idle */
	bool headers;             /* the job reads new headers too */
	int64_t sent_ms;          /* apply_headers: which gaps it may end */
	uint32_t seq;             /* t->reads_sent when sent */
	int64_t sent_us, notified_us; /* sched_trace */
	int64_t sched0[2];        /* sched_trace: the backend's schedstat when sent */
	PGresult *res[2];         /* new headers, the transactional batches (TX_BATCHES_BODY) */
	int nres;                 /* results collected of the six statements (eight when preparing) */
	bool prepared;            /* TX_PREPARE ran on db (set once a read that ran it succeeded) */
	bool failed;
} txs[TX_SLOTS];

/* Reads of t out now. */
static int tx_out(const tenant *t)
{
	int n = 0;
	for (int i = 0; i < TX_SLOTS; i++)
		n += txs[i].t == t;
	return n;
}

static bool tx_send(sched *s, struct tx_slot *k, tenant *t, bool headers, int limit, hr_err *err)
{
	if (!k->db && !read_connect(s, &k->db, false, err))
		return false;
	/* The FIFO's transactional ids, oldest first: loaded before newer ones. */
	size_t cap = 16 + (size_t)limit * 21, len = 0;
	char *fifo = hr_malloc(cap);
	fifo[len++] = '{';
	for (int j = 0, n = 0; j < t->ndue && n < limit; j++)
		if (t->due_tx[t->duehead + j])
			len += (size_t)snprintf(fifo + len, cap - len, "%s%lld", n++ ? "," : "",
						(long long)t->due_ids[t->duehead + j]);
	fifo[len++] = '}';
	fifo[len] = '\0';
	char after[32], recover[32];
	/* Without new headers only FIFO ids qualify: the window after last_seen is left out. */
	snprintf(after, sizeof after, "%lld", headers ? (long long)t->last_seen : (long long)INT64_MAX);
	snprintf(recover, sizeof recover, "%lld", t->recovering ? (long long)t->recover_until : 0LL);
	char *qs = hr_db_ident(k->db, t->schema), *qr = hr_db_ident(k->db, t->role);
	char *gq = gaps_sql(t);
	/* New headers: without gaps to look into (nearly always), the prepared statement. */
	char *hq = !headers ? hr_strdup("SELECT 1 WHERE false")
		   : *gq    ? bind2(HEADERS_SQL, after, gq)
			    : hr_sprintf("EXECUTE herald_tx_new(%s)", after);
	hr_free(gq);
	/* The search_path is set first: PREPARE resolves the tables then. */
	char *sql = hr_sprintf("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL ROLE %s; "
			       "SET LOCAL search_path TO %s; %s%s; EXECUTE herald_tx_batches(%s, '%s', %d, %s); "
			       "ROLLBACK",
			       qr, qs, k->prepared ? "" : TX_PREPARE, hq, after, fifo, limit, recover);
	bool ok = PQsendQuery(k->db, sql) == 1;
	if (!ok) {
		hr_db_fail(k->db, NULL, "reading the outbox", err);
		PQfinish(k->db);
		k->db = NULL;
		k->prepared = false;
	} else {
		k->t = t;
		k->headers = headers;
		k->sent_ms = now_ms();
		k->seq = ++t->reads_sent;
		k->nres = 0;
		k->failed = false;
		k->notified_us = t->notified_us;
		k->sent_us = s->trace ? wall_us() : 0;
		if (!s->trace || !backend_schedstat(k->db, k->sched0))
			k->sched0[0] = -1;
	}
	hr_free(sql);
	hr_free(hq);
	hr_free(qs);
	hr_free(qr);
	hr_free(fifo);
	return ok;
}

/* Apply a finished job: headers first (their due transactional ids join the
 * FIFO), then every transactional batch read leaves the FIFO as a batch. */
static void tx_apply(sched *s, struct tx_slot *k)
{
	tenant *t = k->t;
	/* Sequence numbers compared modulo 2^32. */
	bool newest = (int32_t)(k->seq - t->read_applied) > 0;
	if (newest)
		t->read_applied = k->seq;
	if (k->headers)
		apply_headers(t, k->res[0], k->sent_ms, newest);
	PGresult *m = k->res[1];
	int nm = PQntuples(m);
	for (int i = 0, i1; i < nm; i = i1) {
		int64_t id = strtoll(PQgetvalue(m, i, 0), NULL, 10);
		for (i1 = i + 1; i1 < nm && strtoll(PQgetvalue(m, i1, 0), NULL, 10) == id;)
			i1++;
		/* no message left to send: one row, its message columns NULL */
		int r1 = PQgetisnull(m, i, 9) ? i : i1;
		/* Rows of a batch the FIFO no longer holds are not ours to build. */
		for (int j = 0; j < t->ndue; j++)
			if (t->due_ids[t->duehead + j] == id) {
				take_due(t, j);
				hr_err err = {0};
				batch_build(s, t, id, m, i, 1, m, i, r1, 9, &err);
				if (s->trace)
					hr_info("trace: loaded tenant=%s batch=%lld lane=transactional notified_us=%lld "
						"sent_us=%lld loaded_us=%lld",
						t->slug, (long long)id, (long long)k->notified_us, (long long)k->sent_us,
						(long long)wall_us());
				break;
			}
	}
}

static void tx_poll(sched *s)
{
	for (int i = 0; i < TX_SLOTS; i++) {
		struct tx_slot *k = &txs[i];
		if (!k->t)
			continue;
		PGresult **keep[] = {&k->res[0], &k->res[1]};
		/* A read that prepares (TX_PREPARE) has TX_PREPARED more results, after the SETs. */
		int extra = k->prepared ? 0 : TX_PREPARED;
		bool done = read_collect(k->db, k->t, "reading the outbox", 3 + extra, 2, keep, &k->nres, &k->failed);
		if (!done)
			continue;
		tenant *t = k->t;
		int64_t sched1[2];
		if (s->trace && k->sched0[0] >= 0 && backend_schedstat(k->db, sched1))
			hr_info("trace: read tenant=%s sent_us=%lld done_us=%lld backend_cpu_us=%lld backend_runq_us=%lld",
				t->slug, (long long)k->sent_us, (long long)wall_us(),
				(long long)(sched1[0] - k->sched0[0]) / 1000, (long long)(sched1[1] - k->sched0[1]) / 1000);
		if (!k->failed && k->nres == 6 + extra) {
			k->prepared = true;
			tx_apply(s, k);
		} else {
			/* Nothing applied: read again.  The transaction may be left open: new connection. */
			if (k->headers)
				t->need_load = true;
			PQfinish(k->db);
			k->db = NULL;
			k->prepared = false;
		}
		k->t = NULL;
		for (int j = 0; j < 2; j++) {
			PQclear(k->res[j]);
			k->res[j] = NULL;
		}
	}
}

void store_poll_loads(sched *s)
{
	tx_poll(s);
	bulk_poll(s);
}

bool store_tenant_loading(const tenant *t)
{
	if (tx_out(t) > 0)
		return true;
	for (int i = 0; i < BULK_SLOTS; i++)
		if (bulk[i].t == t)
			return true;
	return false;
}

static bool loads_connect(sched *s, hr_err *err)
{
	for (int i = 0; i < TX_SLOTS; i++)
		if (!txs[i].db && !read_connect(s, &txs[i].db, false, err))
			return false;
	for (int i = 0; i < BULK_SLOTS; i++)
		if (!bulk[i].db && !read_connect(s, &bulk[i].db, true, err))
			return false;
	return true;
}

int store_poll_fds(int *fds, int max)
{
	int n = 0;
	for (int i = 0; i < TX_SLOTS && n < max; i++)
		if (txs[i].t)
			fds[n++] = PQsocket(txs[i].db);
	for (int i = 0; i < BULK_SLOTS && n < max; i++)
		if (bulk[i].t)
			fds[n++] = PQsocket(bulk[i].db);
	return n;
}

/*
 * Transactional batches are materialised before bulk ones, whatever their
 * order in the outbox, and may go over the tenant's max_loaded by up to
 * max_loaded more: one message waiting behind a million-message bulk
 * backlog of its own tenant would otherwise wait for the backlog.  Headers
 * are read whenever new rows were announced (not only when the FIFO is
 * short), so a new transactional batch is seen at once; the FIFO is capped
 * at HEADERS_MAX ids (9 bytes each) per tenant.
 */
#define HEADERS_MAX 65536

bool store_load_batches(sched *s, tenant *t, int room, hr_err *err)
{
	store_poll_loads(s);
	bool headers = t->ndue < HEADERS_MAX && (t->need_load || (t->more_rows && t->ndue < room));
	int tx_room = room + s->max_loaded;
	int limit = tx_room < TX_BATCHES_MAX ? tx_room : TX_BATCHES_MAX;
	if (limit < 0)
		limit = 0;
	/* A NOTIFY heard while reads of t are out gets a read of its own at once
	 * (up to TX_PER_TENANT): one read kept waiting for a CPU in Postgres would
	 * otherwise hold back every transactional message announced meanwhile.
	 * Reads may then return in any order: apply_headers skips ids already
	 * taken, tx_apply builds only batches still in the FIFO. */
	int out = tx_out(t);
	if ((headers || (t->ndue_tx > 0 && limit > 0)) &&
	    (out == 0 || (t->need_load && out < TX_PER_TENANT))) {
		for (int i = 0; i < TX_SLOTS; i++)
			if (!txs[i].t) {
				if (!tx_send(s, &txs[i], t, headers, limit, err))
					return false;
				if (headers)
					t->need_load = false;
				break;
			}
	}
	/* An id leaves the FIFO only once its batch is loaded: low_water() counts
	 * the FIFO, so a failed load must not let the low water pass it. */
	room -= t->ndue_tx < limit ? t->ndue_tx : limit; /* the transactional ones go first */
	for (int k = 0, i = 0; room > 0 && k < t->ndue && i < BULK_SLOTS; k++) {
		int64_t id = t->due_ids[t->duehead + k];
		if (t->due_tx[t->duehead + k])
			continue;
		if (bulk_busy(t, id)) {
			room--; /* on its way */
			continue;
		}
		while (i < BULK_SLOTS && bulk[i].t)
			i++;
		if (i == BULK_SLOTS)
			break;
		if (!bulk_send(s, &bulk[i], t, id, err))
			return false;
		room--;
	}
	if (t->last_seen >= t->recover_until && tx_out(t) == 0)
		t->recovering = t->recovering && t->ndue > 0;
	return true;
}
