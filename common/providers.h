/*
 * providers.h -- a tenant's provider accounts (SMTP relay, SMS gateway,
 * messenger, push, webhook) and the master key that protects their secrets.
 *
 * An account has a non-secret `config` (JSON object: url, from-domain,
 * sender...) and an optional secret (JSON object: password, auth header...).
 * The secret is sealed with AES-256-GCM under the operator's master key and
 * bound to (tenant id, account name), so a sealed value copied to another row
 * does not open.  Only the process that dispatches sends (the scheduler)
 * opens secrets, to hand the merged account to the worker for one batch.
 *
 * Master key: `master_key` (64 hex digits) or the file `master_key_file`
 * (default data_dir/master.key).  The embedded local stack creates that file
 * (0600) on first use; with an external database_url herald never invents a
 * key -- losing it would make every stored secret unreadable.
 *
 * Errors as everywhere: bool + hr_err (INVALID, NOTFOUND, CONFLICT, DB).
 */
#ifndef HERALD_PROVIDERS_H
#define HERALD_PROVIDERS_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "config.h"
#include "crypto.h"
#include "err.h"

bool hr_master_key_load(const hr_config *cfg, uint8_t key[HR_KEY_LEN], hr_err *err) HR_MUST_CHECK;

typedef struct hr_provider_spec {
	const char *name;      /* account name, slug rules */
	const char *channel;   /* email | sms | messenger | push | webhook */
	const char *transport; /* smtp | http | sink */
	const char *config;    /* JSON object text */
	const char *secret;    /* JSON object text, or NULL for none / keep (see below) */
	int rate_per_s;        /* 0 = no account limit */
} hr_provider_spec;

/*
 * Create or replace the tenant's account `spec->name`.  A NULL secret on an
 * existing account keeps the stored one.
 */
bool hr_provider_put(PGconn *c, const uint8_t key[HR_KEY_LEN], const char *tenant_slug,
		     const hr_provider_spec *spec, hr_err *err) HR_MUST_CHECK;

/*
 * The account as the worker needs it: config merged with the opened secret
 * and {"name","channel","transport","rate_per_s"} -- a JSON object text
 * (heap, caller frees).  mask_secrets replaces secret values by "********".
 */
bool hr_provider_resolve(PGconn *c, const uint8_t key[HR_KEY_LEN], int64_t tenant_id,
			 const char *name, bool mask_secrets, char **json, hr_err *err) HR_MUST_CHECK;

#endif
