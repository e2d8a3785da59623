/*
 * ratelimit.h -- herald's hierarchical, cluster-wide rate limiter.
 *
 * Contract (DESIGN.md "Rate limits"; docs/ratelimit.md for operators):
 *
 * - A *scope* is a string naming one thing that has a rate: "agency:3",
 *   "tenant:42", "tenant:42/email", "account:42/smtp-main" (provider account),
 *   "sender:42/example.com" (from-domain or SMS sender), "domain:gmail.com"
 *   (recipient domain).  A message is subject to several scopes at once and
 *   its rate is the smallest that applies.  Unconfigured scopes are
 *   unlimited.  Scopes passed to one hr_limiter_take() call must be distinct.
 *
 * - Even pacing.  Each scope is a GCRA (virtual scheduling) meter: tokens
 *   accrue continuously at the effective rate and at most `burst` tokens
 *   can be taken back to back, burst = max(1, rate x burst window), the
 *   window being 10 ms by default.  So no interval of length W ever grants
 *   more than rate x W + burst -- at start, after an idle period, after a
 *   hold -- and a 500/s scope never gives more than 505 in a second.
 *
 * - AIMD under provider throttling.  hr_limiter_throttled() multiplies the
 *   scope's effective rate by HR_AIMD_BETA (floor: HR_AIMD_FLOOR per second
 *   or the configured rate if lower) and grants nothing on that scope before
 *   now + retry_after.  Only one decrease per round trip: a throttle answer
 *   for a message dispatched before the last decrease only extends the hold
 *   (the message was sent at the old rate; punishing it again would collapse
 *   the rate).  hr_limiter_succeeded() adds HR_AIMD_ALPHA x ceiling per
 *   second of successful sending (HR_AIMD_ALPHA / effective rate of the
 *   ceiling per message), up to the ceiling -- the configured rate, times
 *   the share for shared scopes.  AIMD needs a ceiling: on an unconfigured scope a
 *   throttle only holds the scope for retry_after.
 *
 * - Cluster-wide.  Limits are enforced here, where the scheduler dispatches,
 *   never in workers: workers send what they are given, so adding workers
 *   cannot make herald exceed a limit.  With K schedulers each owning a share
 *   of the tenants, hr_limiter_set_share(l, 1.0 / K) makes each enforce 1/K
 *   of every *shared* scope (agency, recipient domain, accounts used by
 *   several tenants), so the sum of the K never exceeds the limit.  Scopes
 *   owned by one tenant ("tenant:", "sender:", "account:<tenant id>/...")
 *   live on exactly one scheduler and keep their full rate.
 *
 * Time is passed in (now_ns: monotonic nanoseconds); there is no I/O, no
 * clock, no randomness, so a fake clock drives it in tests.  Cost: O(number
 * of scopes) per take through an open-addressing hash table; take never
 * allocates.  Memory: one entry per configured or throttled scope.
 *
 * Thread safety: none; one limiter belongs to one dispatch thread.
 * Errors: none to report; scope names are trusted (built by the scheduler).
 */
#ifndef HERALD_SCHED_RATELIMIT_H
#define HERALD_SCHED_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* Multiplicative decrease factor on a throttle (see docs/ratelimit.md). */
#define HR_AIMD_BETA 0.8
/* Additive increase, as a fraction of the configured rate per second of success. */
#define HR_AIMD_ALPHA 0.02
/* The effective rate never goes below this (per second), unless configured lower. */
#define HR_AIMD_FLOOR 1.0
/* Default burst window: at most rate x 10 ms tokens back to back. */
#define HR_BURST_MS_DEFAULT 10

typedef struct hr_limiter hr_limiter;

/* Whether a scope's limit is split between schedulers (see hr_limiter_set_share). */
typedef enum hr_scope_kind {
	HR_SCOPE_AUTO,	 /* from the name: "tenant:", "sender:", "account:<digits>/" owned, else shared */
	HR_SCOPE_OWNED,	 /* belongs to one tenant, so to one scheduler: full rate */
	HR_SCOPE_SHARED, /* several schedulers send on it: rate x share */
} hr_scope_kind;

hr_limiter *hr_limiter_new(void);
void hr_limiter_free(hr_limiter *l);

/*
 * Configure a scope's rate in messages per second; 0 (or less) removes the
 * scope with its state (unlimited again).  Changing the rate keeps the AIMD
 * reduction as a fraction of the new ceiling.
 */
void hr_limiter_set_rate(hr_limiter *l, const char *scope, double per_second);
void hr_limiter_set_rate_kind(hr_limiter *l, const char *scope, double per_second, hr_scope_kind kind);

/* This scheduler's fraction (0, 1] of every shared scope; 1 by default. */
void hr_limiter_set_share(hr_limiter *l, double fraction);

/*
 * Burst window in milliseconds (default 10): a scope grants at most
 * max(1, rate x burst_ms / 1000) tokens back to back.  The dispatcher must
 * come back at least once per window (or when *wait_ns says) to reach the
 * full rate; a bigger window tolerates a coarser loop but paces less evenly.
 */
void hr_limiter_set_burst_ms(hr_limiter *l, uint32_t burst_ms);

/*
 * Take up to n tokens from all the scopes at once (all-or-nothing per
 * token); returns how many were granted, 0..n.  When fewer than n were
 * granted, *wait_ns (if not NULL) is how long until the next token is
 * available on every scope; else 0.  Unknown scopes are unlimited.
 */
uint32_t hr_limiter_take(hr_limiter *l, const char *const *scopes, int nscopes, uint32_t n, uint64_t now_ns,
			 uint64_t *wait_ns);

/*
 * The provider throttled (429, 421, 4xx-temporary) a message dispatched at
 * sent_ns on this scope: multiplicative decrease of the effective rate
 * (once per round trip, see above) and nothing granted before now +
 * retry_after_ms.  The caller re-queues the message; nothing is dropped.
 */
void hr_limiter_throttled(hr_limiter *l, const char *scope, uint64_t now_ns, uint64_t sent_ns,
			  uint32_t retry_after_ms);

/* n sends succeeded on this scope: additive increase toward the configured rate. */
void hr_limiter_succeeded(hr_limiter *l, const char *scope, uint32_t n, uint64_t now_ns);

/* The rate this scheduler enforces on the scope now (per second); 0 = unlimited. */
double hr_limiter_effective_rate(const hr_limiter *l, const char *scope);

/* Number of scopes with state (configured or held). */
uint32_t hr_limiter_count(const hr_limiter *l);

#endif
