/*
 * owner.c -- shards of tenants between schedulers, by advisory locks.  See
 * owner.h for the protocol.
 *
 * A tick is two round trips when nothing changes (the pg_locks read is one;
 * the shared-lock read is cheap: a few hundred rows at most), plus one per
 * shard unlocked and one for all the shards taken at once.
 */
#include "owner.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "db.h"
#include "log.h"

struct owner {
	owner_hooks h;
	_Atomic int state[OWNER_SHARDS]; /* owner_state */
	atomic_int holds[OWNER_SHARDS];  /* open owner_hold()s per shard */
	int schedulers;                  /* present at the last tick (0 = no tick yet) */
	bool pending;                    /* a tick's pg_locks read is out (owner_tick_send) */
	unsigned rot;                    /* where the search for free shards starts */
};

owner *owner_new(const owner_hooks *hooks)
{
	owner *o = hr_calloc(1, sizeof *o);
	o->h = *hooks;
	o->rot = (unsigned)getpid() * 2654435761u;
	return o;
}

void owner_free(owner *o)
{
	hr_free(o);
}

/* murmur3's finaliser: tenant ids are consecutive, their shards must not be. */
int owner_shard_of(uint32_t id)
{
	id ^= id >> 16;
	id *= 0x85ebca6bu;
	id ^= id >> 13;
	id *= 0xc2b2ae35u;
	id ^= id >> 16;
	return (int)(id % OWNER_SHARDS);
}

owner_state owner_shard_state(const owner *o, int shard)
{
	return (owner_state)atomic_load(&o->state[shard]);
}

bool owner_owns(const owner *o, uint32_t tenant_id)
{
	return atomic_load(&o->state[owner_shard_of(tenant_id)]) == SHARD_OWNED;
}

/*
 * The hold is counted before the state is read, and the loop sets RELEASING
 * before it reads the holds (both sequentially consistent): either the
 * holder sees RELEASING and backs off, or the loop sees the hold and waits.
 */
bool owner_hold(owner *o, uint32_t tenant_id)
{
	int sh = owner_shard_of(tenant_id);
	atomic_fetch_add(&o->holds[sh], 1);
	if (atomic_load(&o->state[sh]) == SHARD_OWNED)
		return true;
	atomic_fetch_sub(&o->holds[sh], 1);
	return false;
}

void owner_unhold(owner *o, uint32_t tenant_id)
{
	atomic_fetch_sub(&o->holds[owner_shard_of(tenant_id)], 1);
}

int owner_count(const owner *o, owner_state st)
{
	int n = 0;
	for (int i = 0; i < OWNER_SHARDS; i++)
		n += atomic_load(&o->state[i]) == (int)st;
	return n;
}

int owner_schedulers(const owner *o)
{
	return o->schedulers;
}

bool owner_join(owner *o, PGconn *db, hr_err *err)
{
	(void)o;
	char key[16];
	snprintf(key, sizeof key, "%d", OWNER_LOCK_PRESENCE);
	const char *p[1] = {key};
	PGresult *r;
	if (!hr_db_query(db, "SELECT pg_advisory_lock($1::int, pg_backend_pid())", 1, p, &r, err))
		return false;
	PQclear(r);
	return true;
}

static void set_state(owner *o, int shard, owner_state st)
{
	atomic_store(&o->state[shard], (int)st);
}

/* Try-lock the given shards; mark the ones we got OWNED and start them. */
static bool take(owner *o, PGconn *db, const int *want, int n, hr_err *err)
{
	if (n == 0)
		return true;
	char *arr = hr_malloc((size_t)n * 5 + 3), key[16];
	size_t len = 0;
	arr[len++] = '{';
	for (int i = 0; i < n; i++)
		len += (size_t)sprintf(arr + len, "%s%d", i ? "," : "", want[i]);
	arr[len++] = '}';
	arr[len] = '\0';
	snprintf(key, sizeof key, "%d", OWNER_LOCK_SHARD);
	const char *p[2] = {key, arr};
	PGresult *r;
	bool ok = hr_db_query(db, "SELECT s FROM unnest($2::int[]) s WHERE pg_try_advisory_lock($1::int, s)", 2, p,
			      &r, err);
	hr_free(arr);
	if (!ok)
		return false;
	int got = PQntuples(r);
	for (int i = 0; i < got; i++) {
		int sh = atoi(PQgetvalue(r, i, 0));
		set_state(o, sh, SHARD_OWNED);
		o->h.taken(o->h.arg, sh);
	}
	PQclear(r);
	if (got)
		hr_info("owner: took shards=%d owned=%d schedulers=%d", got, owner_count(o, SHARD_OWNED),
			o->schedulers);
	return true;
}

static bool unlock(PGconn *db, int shard, hr_err *err)
{
	char key[16], sh[16];
	snprintf(key, sizeof key, "%d", OWNER_LOCK_SHARD);
	snprintf(sh, sizeof sh, "%d", shard);
	const char *p[2] = {key, sh};
	PGresult *r;
	if (!hr_db_query(db, "SELECT pg_advisory_unlock($1::int, $2::int)", 2, p, &r, err))
		return false;
	bool held = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if (!held) /* our session lost it: nothing else releases a session lock */
		hr_panic("owner: shard %d was not locked by this scheduler", shard);
	return true;
}

/*
 * The tick's read is sent (owner_tick_send) and its answer taken when it is
 * there (owner_tick_poll), so that the loop does not wait for it: behind a
 * draining backlog the backend answering it could wait 100-200 ms for a CPU.
 * The rest of a tick (taking, unlocking) is synchronous and rare.
 */
bool owner_tick_send(owner *o, PGconn *db, hr_err *err)
{
	char pkey[16], skey[16];
	snprintf(pkey, sizeof pkey, "%d", OWNER_LOCK_PRESENCE);
	snprintf(skey, sizeof skey, "%d", OWNER_LOCK_SHARD);
	const char *p[2] = {pkey, skey};
	/* Granted two-key advisory locks of this database: objsubid = 2. */
	if (!PQsendQueryParams(db,
			       "SELECT count(*) FILTER (WHERE classid = $1::int::oid), "
			       "coalesce(array_agg(objid::int) FILTER (WHERE classid = $2::int::oid "
			       "AND pid <> pg_backend_pid()), '{}') "
			       "FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
			       "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
			       2, NULL, p, NULL, NULL, 0))
		return hr_db_fail(db, NULL, "reading the shard locks", err);
	o->pending = true;
	return true;
}

bool owner_tick_pending(const owner *o)
{
	return o->pending;
}

static bool tick_apply(owner *o, PGconn *db, PGresult *r, hr_err *err);

int owner_tick_poll(owner *o, PGconn *db, bool wait, hr_err *err)
{
	if (!o->pending)
		return 1;
	if (!wait && (!PQconsumeInput(db) || PQisBusy(db))) {
		if (PQstatus(db) == CONNECTION_OK)
			return 0;
		o->pending = false;
		hr_db_fail(db, NULL, "reading the shard locks", err);
		return -1;
	}
	PGresult *r = PQgetResult(db), *extra;
	while ((extra = PQgetResult(db)))
		PQclear(extra);
	o->pending = false; /* before the hooks, which may query db */
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		hr_db_fail(db, r, "reading the shard locks", err);
		PQclear(r);
		return -1;
	}
	return tick_apply(o, db, r, err) ? 1 : -1;
}

bool owner_tick(owner *o, PGconn *db, hr_err *err)
{
	if (!o->pending && !owner_tick_send(o, db, err))
		return false;
	return owner_tick_poll(o, db, true, err) == 1;
}

/* The rest of a tick, from its pg_locks read r (cleared here). */
static bool tick_apply(owner *o, PGconn *db, PGresult *r, hr_err *err)
{
	int k = atoi(PQgetvalue(r, 0, 0));
	bool others[OWNER_SHARDS] = {false};
	for (char *q = PQgetvalue(r, 0, 1); *q;) {
		if (*q < '0' || *q > '9') {
			q++;
			continue;
		}
		long sh = strtol(q, &q, 10);
		if (sh >= 0 && sh < OWNER_SHARDS)
			others[sh] = true;
	}
	PQclear(r);
	if (k < 1)
		k = 1; /* our own presence lock is there; be safe if the view lags */
	if (k != o->schedulers) {
		hr_info("owner: schedulers=%d (was %d)", k, o->schedulers);
		o->schedulers = k;
		if (o->h.peers)
			o->h.peers(o->h.arg, k);
	}
	int share = (OWNER_SHARDS + k - 1) / k;
	int owned = owner_count(o, SHARD_OWNED);
	if (owned > share) {
		/* Give back the excess, highest shards first; each is unlocked once drained. */
		int give = owned - share;
		for (int sh = OWNER_SHARDS - 1; sh >= 0 && give > 0; sh--)
			if (owner_shard_state(o, sh) == SHARD_OWNED) {
				set_state(o, sh, SHARD_RELEASING);
				o->h.draining(o->h.arg, sh, true);
				give--;
			}
		hr_info("owner: releasing shards=%d share=%d schedulers=%d", owned - share, share, k);
	} else if (owned < share) {
		int need = share - owned;
		/* Shards still draining are ours: keep them first. */
		for (int sh = 0; sh < OWNER_SHARDS && need > 0; sh++)
			if (owner_shard_state(o, sh) == SHARD_RELEASING) {
				set_state(o, sh, SHARD_OWNED);
				o->h.draining(o->h.arg, sh, false);
				need--;
			}
		int want[OWNER_SHARDS], n = 0;
		o->rot = o->rot * 1103515245u + 12345u;
		for (int i = 0; i < OWNER_SHARDS && n < need; i++) {
			int sh = (int)((o->rot / 65536 + (unsigned)i) % OWNER_SHARDS);
			if (!others[sh] && owner_shard_state(o, sh) == SHARD_FREE)
				want[n++] = sh;
		}
		if (!take(o, db, want, n, err))
			return false;
	}
	int released = 0;
	for (int sh = 0; sh < OWNER_SHARDS; sh++) {
		if (owner_shard_state(o, sh) != SHARD_RELEASING || atomic_load(&o->holds[sh]) != 0 ||
		    !o->h.drained(o->h.arg, sh))
			continue;
		if (!unlock(db, sh, err))
			return false;
		set_state(o, sh, SHARD_FREE);
		o->h.released(o->h.arg, sh);
		released++;
	}
	if (released)
		hr_info("owner: released shards=%d owned=%d releasing=%d", released, owner_count(o, SHARD_OWNED),
			owner_count(o, SHARD_RELEASING));
	return true;
}
