/*
 * auth.h -- API key verification with a short cache, and per-key rate limits.
 *
 * Verified keys are cached in memory for api_key_cache_ms, keyed by the
 * SHA-256 of the presented key (the key itself is never kept), so a request
 * costs no control-database round trip for its key while the entry is fresh.
 * A revoked key, or a key of a suspended tenant or agency, therefore keeps
 * working for at most api_key_cache_ms after the change; failures are never
 * cached (a key that starts working does so at once).
 *
 * Rate limit: a token bucket per key (api_key_rps per second, burst of one
 * second's worth), and per tenant and agency with an api_rps limit, in this
 * process's memory only -- a cluster of N API servers admits up to N times
 * the rate.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef HERALD_API_AUTH_H
#define HERALD_API_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "err.h"
#include "tenancy.h"

typedef struct api_keys api_keys;

api_keys *api_keys_new(long cache_ms, long rps);
void api_keys_free(api_keys *k);

/* Authenticate; failures as hr_apikey_verify (HR_ERR_NOTFOUND = unknown/revoked). */
bool api_keys_verify(api_keys *k, PGconn *c, const char *key, hr_principal *out, hr_err *err) HR_MUST_CHECK;

/* Take one request from the key's bucket; false = over the limit, *retry_after in seconds. */
bool api_keys_take(api_keys *k, int64_t key_pk, int *retry_after);

/*
 * The api_rps limits (common/limits.h), buckets like the keys': one request
 * from the tenant's bucket (tenant_rps: the tenant's own limit) and from its
 * agency's (agency_rps: the agency's own, shared by all its tenants); a
 * limit below 0 is none.  false = over one of them: *which names it ("this
 * tenant" / "this agency") and *retry_after is in seconds; no token is taken
 * from either bucket then.
 */
bool api_limits_take(api_keys *k, int64_t tenant_id, int64_t tenant_rps, int64_t agency_id, int64_t agency_rps,
		     int *retry_after, const char **which);

#endif
