/*
 * outbox.h -- putting messages into a tenant's outbox (the API, campaigns,
 * rules, heraldctl's demo sends and tests all come through here).
 *
 * A batch is 1..HR_OUTBOX_MAX messages sharing channel, lane, template (or
 * inline content) and provider account.  Message i of the batch gets id
 * batch_id * HR_OUTBOX_MAX + i.  Enqueueing is one INSERT plus a NOTIFY on
 * channel `herald_outbox` with the tenant id, in the caller's transaction, so
 * the scheduler hears of committed work at once and never polls idle tenants.
 * (Unless no_notify: then the caller must NOTIFY after its COMMIT.)
 *
 * The connection must be inside hr_db_tenant_begin() for the tenant.
 */
#ifndef HERALD_OUTBOX_H
#define HERALD_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "err.h"

#define HR_OUTBOX_MAX 4096

typedef struct hr_outbox_batch {
	const char *channel;        /* email | sms | messenger | push | webhook */
	const char *lane;           /* transactional | bulk */
	int64_t template_id;        /* 0 = inline content */
	int template_version;
	const char *content;        /* JSON object text (inline Liquid sources), or NULL */
	const char *provider;       /* provider account name */
	const char *origin;         /* api | campaign | rule | test */
	int64_t origin_id;
	const char *due_at;         /* timestamptz text, NULL = now */
	const char *idempotency_key;/* NULL = none */
	int n;
	const char *const *addresses;
	const int64_t *contact_ids; /* NULL = none; 0 entries = no contact */
	const char *const *data;    /* JSON object text per message, or NULL */
	bool no_notify;             /* the caller announces the batch after its commit
				     * (herald-api, api/notify.h), not in the transaction */
} hr_outbox_batch;

/* Insert one batch; *first_message_id receives the id of its message 0. */
bool hr_outbox_enqueue(PGconn *c, int64_t tenant_id, const hr_outbox_batch *b,
		       int64_t *first_message_id, hr_err *err) HR_MUST_CHECK;

#endif
