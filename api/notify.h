/*
 * notify.h -- herald-api's wake-ups for the scheduler, sent after commit.
 *
 * Why not NOTIFY inside the request's transaction (as hr_outbox_enqueue does
 * for campaigns and rules): PostgreSQL serialises the commits of all
 * transactions that issued a NOTIFY with one cluster-wide lock, held until
 * the commit record is flushed (async.c, PreCommit_Notify).  Every API send
 * and event batch then committed one after the other, each waiting for its
 * own fsync -- no group commit -- and one backend descheduled while holding
 * the lock stalled every other request (bench/api: the p99 of sends).
 *
 * So a handler whose transaction wrote work for the scheduler marks it
 * (api_req.notify_outbox / notify_events); after COMMIT succeeds the server
 * calls api_notify(), which queues (channel, tenant) for this module's
 * thread.  That thread coalesces what is pending and sends it in one
 * statement on its own connection with synchronous_commit off: a wake-up is
 * a hint, the commit of the work it announces was already durable.
 *
 * Crash window: herald-api killed after a commit and before the wake-up left
 * leaves the work unannounced (never lost: it is committed).  At start the
 * notifier announces every active tenant on both channels once, so the
 * restarted API makes the scheduler look; a scheduler that restarts reads
 * every tenant anyway.
 *
 * Thread safety: api_notify() may be called from any thread.
 */
#ifndef HERALD_API_NOTIFY_H
#define HERALD_API_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct api_notifier api_notifier;

typedef enum api_channel {
	API_NOTIFY_OUTBOX, /* herald_outbox: new outbox batches (scheduler/store.c) */
	API_NOTIFY_EVENTS, /* herald_events: new events (scheduler/rules.c) */
} api_channel;

/* Connect, announce every active tenant, start the thread. */
bool api_notifier_start(const char *dsn, api_notifier **out, hr_err *err) HR_MUST_CHECK;
/* Queue a wake-up on ch with the tenant's id; returns at once. */
void api_notify(api_notifier *nt, api_channel ch, int64_t tenant_id);
/* Send what is pending, stop the thread, close. */
void api_notifier_stop(api_notifier *nt);

#endif
