/*
 * rules.h -- the trigger-rule engine: two threads inside herald-scheduler
 * (lanes: ingest -- events, date and inactivity rules to instances -- and
 * steps -- due instances), each with its own PostgreSQL connection.
 *
 * It turns events into rule instances and runs their steps when due; the
 * messages it sends go into the outbox like any other (the dispatcher takes
 * them from there).  How it works, and what it guarantees, is in
 * docs/rules.md; in short:
 * - event-driven: LISTEN herald_events (the API NOTIFYs it with the tenant id
 *   when events or rules are written); new events of a tenant are read from
 *   its watermark (dispatch_state.rules_event_seen) and every event rule
 *   enters its contacts with one INSERT ... SELECT per batch of events;
 * - date and inactivity rules are evaluated set-based once per herald day
 *   (UTC) per tenant, and when the clock moves (NOTIFY herald_clock);
 * - due steps are taken by the index on due_at, FOR UPDATE SKIP LOCKED, in
 *   batches; a step's exit check, conditions, actions and the instance's
 *   advance commit in one transaction (one statement when the step only
 *   sends), so a step runs exactly once even across crashes; the ingest lane
 *   NOTIFYs herald_rules_due when it entered anybody;
 * - bulk sends obey the tenant's frequency cap (hr_audience_cap_counted_sql);
 * - no polling: each tenant's next due time is kept in memory and the
 *   thread sleeps until the earliest (or a notification).
 *
 * Tenants come from store_tenants() (store.c), the dispatcher's enumeration;
 * with several schedulers (owner.h) the engine acts only for tenants whose
 * shard this scheduler owns, and holds the shard (owner_hold) for the whole of
 * a tenant's turn, so a shard is never handed over in the middle of a step.
 * Thread safety: rules_start/rules_stop from the main thread only; the
 * engine shares nothing else with the loop.
 */
#ifndef HERALD_SCHED_RULES_H
#define HERALD_SCHED_RULES_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "owner.h"

typedef struct rules_engine rules_engine;

/* Connect, LISTEN, read the tenants and start the thread.  own: the
 * scheduler's shard ownership (shared with the loop; NULL = every tenant). */
rules_engine *rules_start(const char *dsn, owner *own, hr_err *err);
/* Finish the step batch in progress (its transaction commits or rolls back), stop, free. */
void rules_stop(rules_engine *e);

#endif
