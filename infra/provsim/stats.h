/*
 * stats.h -- provsim's counters: totals, per tenant, per account, per
 * recipient, and the duplicate detector.
 *
 * Counters are relaxed atomic increments on per-entry cache lines (see
 * registry.h): no lock on the request path except the duplicate detector's
 * striped mutex (one of 1024, held for a 16-slot scan).
 *
 * Memory is bounded and fixed at start-up:
 *  - tenants and accounts: registries of fixed size (overflow entry beyond);
 *  - recipients: an open-addressing table of `recipient_slots` 16-byte slots
 *    keyed by a 64-bit hash of the recipient (a collision merges two
 *    recipients' counts: probability ~n^2/2^65, negligible for 10 M);
 *    recipients that find no slot are counted in "recipients_untracked";
 *  - duplicates: a set of the most recent (account, message_id) hashes,
 *    `dedupe_slots` 8-byte slots in buckets of 16.  A bucket that is full
 *    evicts a pseudo-random slot, so an id is remembered as long as fewer
 *    than 16 newer ids have landed in its bucket: at least the last
 *    ~dedupe_slots/4 ids with near certainty, usually far more.  An id that
 *    was evicted and comes again is counted as new (a missed duplicate);
 *    no id is ever wrongly called a duplicate except on a 64-bit collision.
 *    The receipts file keeps the exact record for offline checks.
 *
 * Reset zeroes everything; while traffic flows it is best-effort (a request
 * racing the reset may be counted on either side).
 *
 * Thread safety: all functions are thread-safe except ps_stats_free().
 */
#ifndef HERALD_PROVSIM_STATS_H
#define HERALD_PROVSIM_STATS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "registry.h"

typedef struct ps_stats ps_stats;

ps_stats *ps_stats_new(size_t tenant_slots, size_t account_slots, size_t recipient_slots,
		       size_t dedupe_slots);
void ps_stats_free(ps_stats *s);

ps_registry *ps_stats_accounts(ps_stats *s);
ps_registry *ps_stats_tenants(ps_stats *s);

/* Counts event c in the totals, on the account and (when not NULL) the tenant. */
void ps_stats_count(ps_stats *s, ps_entry *account, ps_entry *tenant, enum ps_ctr c);

/*
 * Counts one accepted request everywhere (totals, account, tenant,
 * recipient) and returns whether its message_id was already accepted on
 * this account (then also counted as a duplicate).
 */
bool ps_stats_accept(ps_stats *s, ps_entry *account, ps_entry *tenant, const char *to,
		     size_t to_len, const char *msg_id, size_t id_len);

/* Extra figures shown under "dlr" in the stats. */
void ps_stats_set_dlr_source(ps_stats *s, void (*fn)(void *arg, json_t *out), void *arg);

/* GET /v1/stats and GET /v1/stats/recipient/{to} bodies.  Caller decrefs. */
json_t *ps_stats_json(ps_stats *s);
json_t *ps_stats_recipient_json(ps_stats *s, const char *to);

void ps_stats_reset(ps_stats *s);

#endif
