/*
 * campaigns.h -- the campaign runner: a thread of herald-scheduler, with its
 * own PostgreSQL connection, that starts campaign runs when they are due and
 * releases the batches a run holds for later (docs/campaigns.md).
 *
 * No polling of idle tenants: the runner keeps each tenant's next due
 * instant (herald time) in memory -- the earliest next_run_at of its active
 * campaigns and the earliest held batch -- and sleeps until the earliest of
 * all.  A tenant's instant is read again when the API NOTIFYs
 * `herald_campaigns` with its id (a campaign was created, changed, paused,
 * resumed or cancelled), after the runner acted for it, and herald time is
 * re-read on NOTIFY `herald_clock` (heraldctl clock advance).
 *
 * The channel cascade (common/cascade.h) runs here too, in the same per-tenant
 * transaction: a run's (or release's) batches of a campaign with `fallback`
 * are armed, and due cascades are advanced; the next due instant includes the
 * earliest pending cascade.  The owner hold thus covers cascades as well.
 *
 * A run is one transaction: the run row (unique per campaign and run
 * instant), its recipients materialised by hr_audience_materialise() (one
 * statement: segment, consent, suppressions, frequency cap, batches of up to
 * 4,096), and the campaign's next_run_at.  A crash before COMMIT leaves
 * nothing; after it, the run exists exactly once.
 *
 * Thread safety: campaigns_start/stop from one thread (main); the runner
 * touches nothing else of the scheduler.  Errors: a failed tenant is logged
 * (warn) and retried 5 s later; a lost connection is reopened.
 */
#ifndef HERALD_SCHED_CAMPAIGNS_H
#define HERALD_SCHED_CAMPAIGNS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "calendar.h"
#include "err.h"

/* The NOTIFY channel the API announces campaign changes on (payload: tenant id). */
#define HR_CAMPAIGNS_CHANNEL "herald_campaigns"

typedef struct campaigns campaigns;

/*
 * Lists the tenants this scheduler handles (store_tenants in store.c):
 * rows of id, agency_id, slug, schema_name, role_name, active.
 */
typedef bool (*campaigns_tenants_fn)(PGconn *db, PGresult **r, hr_err *err);

/*
 * With several schedulers (owner.h), the runner acts for a tenant only
 * between hold(ud, id) == true and unhold(ud, id): owner_hold/owner_unhold,
 * so a run never overlaps the next owner's.  NULL hold = every tenant is ours.
 * A tenant that is not ours is looked at again every second (a cheap check).
 */
typedef bool (*campaigns_hold_fn)(void *ud, uint32_t tenant_id);
typedef void (*campaigns_unhold_fn)(void *ud, uint32_t tenant_id);

campaigns *campaigns_start(const char *dsn, campaigns_tenants_fn tenants, campaigns_hold_fn hold,
			   campaigns_unhold_fn unhold, void *ud, hr_err *err);
/* Stop the thread (an open run's transaction finishes first). */
void campaigns_stop(campaigns *c);

/*
 * A campaign's effective calendar: its JSON with the tenant's settings
 * applied -- the tenant's "time_zone" when the calendar names none, and the
 * tenant's "quiet_hours" when the calendar has no "quiet_hours" member (an
 * explicit null turns them off).  Used by the API (validation, the calendar
 * view) and by the runner, so both see the same runs.  Errors name the JSON
 * pointer inside the calendar (kind INVALID).
 */
bool campaigns_calendar(const char *calendar_json, const json_t *tenant_settings, hr_calendar **out,
			hr_err *err) HR_MUST_CHECK;

#endif
