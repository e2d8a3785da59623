/*
 * audience.h -- recipients to outbox batches, set-based, with the marketing
 * policy applied in the same statement.  Shared by the campaign runner
 * (scheduler/campaigns.c) and the trigger rules (scheduler/rules.c).
 *
 * hr_audience_materialise() runs ONE statement, in the caller's transaction
 * (the connection must be inside hr_db_tenant_begin for the tenant):
 *
 *   contacts c WHERE <where>                 -- e.g. a compiled segment
 *     AND not merged, has an address for the channel
 *     AND consent (contact, channel, "marketing") granted
 *     AND the address is not suppressed on the channel
 *     AND the frequency cap is not reached
 *   -> each recipient's due instant (a table of dues per zone and spread slot)
 *   -> grouped into batches of up to 4,096 per due instant (array_agg)
 *   -> INSERT INTO outbox the batches due now (due_at = now(): the dispatcher
 *      works on real time; herald_at = the herald due instant)
 *   -> INSERT INTO campaign_batches the ones due later (when a run id is
 *      given; hr_audience_release() moves them to the outbox when due)
 *
 * The statement runs with planner settings of its own (jit off, no nested
 * loops, a larger work_mem, hash grouping for one due), restored after it:
 * docs/campaigns.md "How a run materialises".
 *
 * A contact is a row of contacts, so nobody is in one statement's result
 * twice (email and phone are unique; merged contacts are skipped).
 *
 * Frequency cap (tenant setting "frequency_cap": {"max": N, "per": "day" |
 * "week"}): a contact who already has N bulk messages from campaigns or rules
 * whose herald time is after (now - period) -- sent, or held for later --
 * is left out.  Transactional messages (origin api) never count and are never
 * capped.  Two statements of one transaction see each other's rows, so two
 * campaigns run together by the runner respect the cap between them.
 *
 * Addresses: email -> contacts.email; sms and messenger -> contacts.phone
 * (what api/messages.c does); push and webhook have no contact address and
 * are refused (HR_ERR_INVALID).
 *
 * Errors: false + hr_err (HR_ERR_DB from Postgres, HR_ERR_INVALID for bad
 * arguments).  The caller rolls back.  Thread safety: no globals.
 */
#ifndef HERALD_AUDIENCE_H
#define HERALD_AUDIENCE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "err.h"

typedef struct hr_audience_cap {
	int max;          /* at most this many bulk messages per contact; 0 = no cap */
	int64_t period_s; /* ... whose herald time lies in the last period_s seconds */
} hr_audience_cap;

typedef struct hr_audience {
	const char *channel;         /* email | sms | messenger */
	const char *where;           /* SQL boolean over `contacts c`, NULL = every contact */
	int nparams;                 /* where's parameters are $1..$nparams */
	const char *const *params;
	hr_audience_cap cap;
	/* Due instants (unix seconds, herald time): dues[z * nslots + s] for zone
	 * zones[z] ("" = contacts with no or another zone; must be present) and
	 * spread slot s (recipient i of n is in slot i * nslots / n). */
	int nzones;
	const char *const *zones;
	int nslots;                  /* >= 1; 1 = no spread */
	const int64_t *dues;
	/* The batches' header. */
	int64_t template_id;         /* 0 = none (content must then be given) */
	int template_version;
	const char *content;         /* inline Liquid sources (JSON object text), or NULL */
	const char *provider;
	const char *origin;          /* campaign | rule */
	int64_t origin_id;           /* campaign: the run id */
	bool hold_later;             /* batches due later go to campaign_batches (run = origin_id) */
} hr_audience;

typedef struct hr_audience_result {
	int64_t recipients;          /* messages materialised */
	int64_t batches_now;         /* outbox rows written */
	int64_t batches_held;        /* campaign_batches rows written */
} hr_audience_result;

/* The frequency cap of a tenant's settings object (no setting: max 0). */
hr_audience_cap hr_audience_cap_from_settings(const json_t *settings);

/* Materialise (see above); NOTIFYs herald_outbox with tenant_id when it wrote outbox rows. */
bool hr_audience_materialise(PGconn *c, int64_t tenant_id, const hr_audience *a, hr_audience_result *out,
			     hr_err *err) HR_MUST_CHECK;

/*
 * Move the held batches (campaign_batches) of active campaigns whose due
 * instant has come to the outbox, consent and suppressions checked again
 * (they may have changed since the run started).  *batches gets the outbox
 * rows written; NOTIFYs herald_outbox when there were any.
 */
bool hr_audience_release(PGconn *c, int64_t tenant_id, int64_t *batches, hr_err *err) HR_MUST_CHECK;

/*
 * What the frequency cap counts, as SQL for the caller's statement: one row
 * (column `cid`, the contact id) per bulk campaign or rule message whose
 * herald time lies within the last $<p_since>::int seconds -- in the outbox,
 * or held for later (campaign_batches).  The same definition as
 * hr_audience_materialise's; the rule engine (scheduler/rules.c) applies it
 * to rule sends.  Heap string.
 */
char *hr_audience_cap_counted_sql(int p_since);

#endif
