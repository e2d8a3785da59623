/*
 * cascade.h -- the channel cascade (docs/cascade.md): "messenger, and if not
 * delivered within 10 minutes, SMS".
 *
 * A cascade lives on outbox batches (tenant migration 0011): a batch whose
 * undelivered messages fall back carries the remaining steps (`cascade`, a
 * JSON array) and the herald instant they fall back at (`cascade_at`).  The
 * API sets them on a transactional send (api/cascade.c); the campaign runner
 * arms a campaign's batches with the campaign's fallback right after it
 * wrote them (hr_cascade_arm_campaigns).
 *
 * The campaign runner of the scheduler that owns the tenant advances due
 * batches (hr_cascade_advance), in the tenant transaction it already holds:
 * one statement per due batch selects, set-based, its messages with no
 * `message_delivered` event, resolves their address on the next channel
 * (the step's explicit `to`, else the contact's email or phone), drops the
 * suppressed and -- bulk, or the tenant's transactional policy "consent" --
 * those without consent, inserts ONE outbox batch for the rest (with the
 * steps after this one), and clears the due batch's cascade_at.  Insert and
 * clear commit together: a step is taken exactly once, also across a
 * scheduler failover (the next owner sees cascade_at cleared, or nothing).
 *
 * A batch whose every message already has a final outcome (delivered, or a
 * failed/dead/bounced result, or a bounce receipt) need not wait for its
 * window: hr_cascade_settle() (called by the results lander and by the
 * receipt endpoint) moves its cascade_at to now and NOTIFYs the campaign
 * runner.  A failed send on the first channel thus falls back at once.
 *
 * Steps never repeat a channel: the API refuses a list naming a channel
 * twice, and a campaign's fallback must differ from its channel.
 *
 * Errors: false + hr_err (HR_ERR_DB); the caller rolls back.  No globals.
 */
#ifndef HERALD_CASCADE_H
#define HERALD_CASCADE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "err.h"

/* The earliest pending cascade instant of the tenant (timestamptz or NULL), for the runner's next-due query. */
#define HR_CASCADE_NEXT_SQL "(SELECT min(cascade_at) FROM outbox WHERE cascade_at IS NOT NULL)"

/* The highest outbox id now (0 if none): batches written after it are this transaction's. */
bool hr_cascade_mark(PGconn *c, int64_t *mark, hr_err *err) HR_MUST_CHECK;

/*
 * Give campaign batches written after `mark` (by a run or a release of held
 * batches) the campaign's fallback step, due fallback_after_s after the
 * batch's herald time.  Batches of campaigns without fallback are untouched.
 */
bool hr_cascade_arm_campaigns(PGconn *c, int64_t mark, int64_t *armed, hr_err *err) HR_MUST_CHECK;

/*
 * Advance every due cascade of the tenant (see above).  settings: the
 * tenant's settings (transactional_policy).  *batches gets the fallback
 * batches written, *messages their messages; NOTIFYs herald_outbox when any.
 */
bool hr_cascade_advance(PGconn *c, int64_t tenant_id, const json_t *settings, int64_t *batches,
			int64_t *messages, hr_err *err) HR_MUST_CHECK;

/*
 * batch_ids: a Postgres bigint[] literal ("{1,2}") of batches some of whose
 * messages just got a final outcome.  Those with a pending cascade whose
 * messages all have one become due now; NOTIFYs herald_campaigns with the
 * tenant id when any did.
 */
bool hr_cascade_settle(PGconn *c, int64_t tenant_id, const char *batch_ids, hr_err *err) HR_MUST_CHECK;

#endif
