/*
 * limits.h -- quotas and limits of agencies and tenants (herald.agencies.limits,
 * herald.tenants.limits): what may be set, and the limit in effect.
 *
 * A limits object (JSON), every member optional:
 *   "api_rps": N                requests per second to the API (tenant routes)
 *   "contacts": N               contacts a tenant may hold
 *   "messages_per_day": {"email": N, "sms": N, ...}
 *                               messages per UTC day and channel sent through the API
 *   "rate_per_s": X             sending rate (the scheduler's pacing, docs/ratelimit.md)
 *   "sender_rates": {"sender": X, ...}   per sender identity (tenants only)
 * An agency's limits apply to each of its tenants (api_rps: to all of them
 * together); the limit in effect for a tenant is the smaller of its own and
 * its agency's.  An absent member is no limit.
 */
#ifndef HERALD_LIMITS_H
#define HERALD_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "err.h"

enum { HR_LIMIT_CHANNELS = 5 };
/* "email", "sms", "messenger", "push", "webhook": the index of a channel, or -1. */
int hr_limit_channel(const char *channel);
extern const char *const hr_limit_channel_names[HR_LIMIT_CHANNELS];

typedef struct hr_limits {
	int64_t api_rps;                       /* -1 = none */
	int64_t contacts;                      /* -1 = none */
	int64_t per_day[HR_LIMIT_CHANNELS];    /* -1 = none */
} hr_limits;

/* Nothing limited. */
void hr_limits_none(hr_limits *l);
/* Check a limits object; err->field is the JSON pointer of the first wrong member under base
 * (e.g. "/messages_per_day/fax").  agency: sender_rates is a tenant's only. */
bool hr_limits_check(json_t *lim, const char *base, bool agency, hr_err *err) HR_MUST_CHECK;
/* Fold a stored limits object (JSON text, already checked when stored) into *l: each limit
 * becomes the smaller of the two.  Text that does not parse limits nothing. */
void hr_limits_fold(hr_limits *l, const char *json_text);
/* The limits of one level as JSON, and the limit in effect (both levels folded). */
json_t *hr_limits_json(const hr_limits *l);

/* Replace the limits of agency `slug` (kind "agency") or tenant `slug` (kind "tenant"),
 * after hr_limits_check; HR_ERR_NOTFOUND when there is none. */
bool hr_limits_store(PGconn *c, const char *kind, const char *slug, json_t *lim, hr_err *err) HR_MUST_CHECK;

#endif
