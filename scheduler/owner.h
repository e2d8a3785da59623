/*
 * owner.h -- which tenants this herald-scheduler serves, when several run
 * against one control database.
 *
 * Tenants hash to OWNER_SHARDS shards (owner_shard_of: a mix of the tenant
 * id, so consecutive ids spread).  A scheduler serves a shard while it holds
 * a session-level advisory lock on it, (OWNER_LOCK_SHARD, shard), on its
 * loop's connection; and announces itself with a lock (OWNER_LOCK_PRESENCE,
 * its backend pid).  Postgres does the rest: a lock is held by one session
 * at a time, and a session that ends -- the process died, even by SIGKILL --
 * leaves its locks at once.  pg_locks shows every holder, so no table and no
 * clock are involved.
 *
 * owner_tick (about once a second, from the loop) rebalances: K = schedulers
 * present, share = ceil(OWNER_SHARDS / K).  Below its share a scheduler
 * try-locks free shards (a dead peer's included); above it, it marks shards
 * RELEASING: it leases nothing more for their tenants and unlocks each
 * shard only when the hooks say nothing of it is in flight (no lease out, no
 * batch loading, every result of it landed), then forgets their work.  The
 * next owner starts those tenants like a restarted scheduler: from low
 * water, skipping every message that has a result -- which, because the
 * unlock waited for the landing, is every message this one finished.
 *
 * Shard states: FREE (not ours) -> OWNED (locked, served) -> RELEASING
 * (locked, draining) -> FREE; RELEASING -> OWNED again if the share grows
 * before the drain is over (a peer died meanwhile).
 *
 * Threads: owner_tick and the hooks run on the loop thread, which holds the
 * connection.  owner_owns() and owner_hold()/owner_unhold() may be called
 * from any thread (the campaign runner, the rule engine): states are
 * atomics.  A thread that acts for a tenant outside the loop brackets the
 * act with owner_hold() (false = not ours: do nothing) and owner_unhold();
 * a shard is not unlocked while a hold on it is open, so that act can never
 * overlap the next owner's.
 *
 * Errors: owner_join and owner_tick return false with err filled; a failed
 * tick on a broken connection means our locks are gone, and the caller
 * must stop serving (herald-scheduler exits).
 */
#ifndef HERALD_SCHED_OWNER_H
#define HERALD_SCHED_OWNER_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "err.h"

#define OWNER_SHARDS 256
/* Advisory lock key spaces (the first int4 of pg_advisory_lock(int4, int4)). */
#define OWNER_LOCK_PRESENCE 1213333505 /* 0x48520001: (this, backend pid) = a scheduler is here */
#define OWNER_LOCK_SHARD 1213333506    /* 0x48520002: (this, shard) = the shard's owner */

typedef enum owner_state { SHARD_FREE = 0, SHARD_OWNED = 1, SHARD_RELEASING = 2 } owner_state;

/* What the scheduler does when a shard changes hands (all on the loop thread). */
typedef struct owner_hooks {
	void *arg;
	/* Locked: start serving its tenants (read low water, recover). */
	void (*taken)(void *arg, int shard);
	/* Entered (draining true) or left (false) RELEASING: stop / resume leasing. */
	void (*draining)(void *arg, int shard, bool draining);
	/* Nothing of the shard in flight: it may be unlocked now. */
	bool (*drained)(void *arg, int shard);
	/* Unlocked: forget its tenants' work (another scheduler owns it now). */
	void (*released)(void *arg, int shard);
	/* The number of schedulers present changed (shared rate limits are split). */
	void (*peers)(void *arg, int schedulers);
} owner_hooks;

typedef struct owner owner;

owner *owner_new(const owner_hooks *hooks);
void owner_free(owner *o);

/* Announce this scheduler on db (the connection whose session holds the locks). */
bool owner_join(owner *o, PGconn *db, hr_err *err) HR_MUST_CHECK;
/* One rebalance: count peers, take or release shards, unlock drained ones. */
bool owner_tick(owner *o, PGconn *db, hr_err *err) HR_MUST_CHECK;
/* The same in two steps, so the loop need not wait: send the tick's read;
 * then, each turn, owner_tick_poll: 0 = not answered yet (only when !wait),
 * 1 = tick done, -1 = failed (err).  Nothing else may use db meanwhile:
 * owner_tick_pending() says whether a read is out (finish it with wait). */
bool owner_tick_send(owner *o, PGconn *db, hr_err *err) HR_MUST_CHECK;
int owner_tick_poll(owner *o, PGconn *db, bool wait, hr_err *err) HR_MUST_CHECK;
bool owner_tick_pending(const owner *o);

int owner_shard_of(uint32_t tenant_id);
owner_state owner_shard_state(const owner *o, int shard);
/* The tenant's shard is OWNED (not RELEASING): act for it.  Any thread. */
bool owner_owns(const owner *o, uint32_t tenant_id);
/* Any thread: pin the tenant's shard while acting for it outside the loop.
 * false = not ours (nothing pinned).  Every true needs one owner_unhold. */
bool owner_hold(owner *o, uint32_t tenant_id) HR_MUST_CHECK;
void owner_unhold(owner *o, uint32_t tenant_id);

/* For metrics and logs (loop thread). */
int owner_count(const owner *o, owner_state st);
int owner_schedulers(const owner *o);

#endif
