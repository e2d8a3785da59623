/*
 * fair.h -- per-tenant fair share for the dispatcher: weighted deficit round
 * robin over the tenants that have backlog.
 *
 * Contract (DESIGN.md "Fairness"): one tenant's million-message campaign does
 * not starve another tenant's campaign.  Each tenant with backlog gets, per
 * round, quantum x weight messages; a tenant with 1,000,000 pending and nine
 * with 1,000 each all advance together, so the small ones finish after about
 * 10 x 1,000 dispatched messages, not after the big one.
 *
 * - Only tenants with backlog are in the round (a circular list); idle
 *   tenants cost nothing -- never scanned, never returned.
 * - hr_fair_next() hands out one turn: the tenant at the head, moved to the
 *   tail, with its allowance = min(deficit + quantum x weight, backlog).
 * - hr_fair_charge() records what the tenant actually dispatched: it lowers
 *   the deficit by `used`.  The backlog is only ever what
 *   hr_fair_set_backlog() last said (absolute, one source of truth): the
 *   dispatcher sets it whenever the tenant's pending count changes --
 *   after dispatching, on arrivals, when retries come due.  At zero the
 *   tenant leaves the round and its deficit is forgotten.
 * - A tenant that could not use its allowance (rate-limited) is simply
 *   charged less; the next tenant is served on the next call, so it blocks
 *   nobody.  Its unused deficit carries over capped at one quantum x weight,
 *   so it never saves up a burst.
 *
 * Usage by the dispatcher -- one hr_fair per lane, transactional first:
 *
 *     for (;;) {                       // one dispatch pass
 *         serve(fair[LANE_TXN]);       // until it has nothing it can send
 *         serve(fair[LANE_BULK]);      // only then bulk
 *         sleep until new work or the smallest wait_ns seen, whichever first
 *     }
 *     serve(f): for (n = hr_fair_active(f); n-- > 0 && hr_fair_next(f, &t, &a); ) {
 *         g = how many of t's ready messages the limiter grants (hr_limiter_take, up to a);
 *         dispatch g; hr_fair_set_backlog(f, t, pending(t)); hr_fair_charge(f, t, g);
 *     }
 *
 * hr_fair_active() bounds a pass to one round, so a lane whose tenants are
 * all rate-limited does not spin.  New arrivals: hr_fair_set_backlog() with
 * the tenant's pending count (absolute, not a delta); a tenant joining is
 * put at the tail and served within one round.
 *
 * Deterministic, no I/O, no clock.  Memory: one record per tenant ever seen.
 * Thread safety: none; owned by the dispatch thread.
 */
#ifndef HERALD_SCHED_FAIR_H
#define HERALD_SCHED_FAIR_H

#include <stdbool.h>
#include <stdint.h>

typedef struct hr_fair hr_fair;

/* quantum: messages per round per weight unit (0 is taken as 1). */
hr_fair *hr_fair_new(uint32_t quantum);
void hr_fair_free(hr_fair *f);

/* Weight of a tenant (default 1; 0 is taken as 1). */
void hr_fair_set_weight(hr_fair *f, uint32_t tenant_id, uint32_t weight);

/* The tenant's pending messages now; 0 = it leaves the round. */
void hr_fair_set_backlog(hr_fair *f, uint32_t tenant_id, uint64_t pending);

/* Next tenant to serve and how many messages it may dispatch now; false when nobody has backlog. */
bool hr_fair_next(hr_fair *f, uint32_t *tenant_id, uint32_t *allowance);

/* What the tenant actually dispatched (lowers its deficit; the backlog is set_backlog's). */
void hr_fair_charge(hr_fair *f, uint32_t tenant_id, uint32_t used);

/* Tenants in the round (with backlog). */
uint32_t hr_fair_active(const hr_fair *f);

/* The tenant's pending count as last set (0 for unknown tenants). */
uint64_t hr_fair_backlog(const hr_fair *f, uint32_t tenant_id);

#endif
