/*
 * outbox.c -- see outbox.h.
 */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "db.h"
#include "jsonout.h"

/* Append s as a quoted element of a Postgres text[] literal. */
static void array_elem(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t need = *len + 2 * strlen(s) + 4;
	if (need > *cap) {
		*cap = need * 2;
		*buf = hr_realloc(*buf, *cap);
	}
	char *p = *buf + *len;
	if (*len > 1)
		*p++ = ',';
	*p++ = '"';
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p++ = '"';
	*len = (size_t)(p - *buf);
}

bool hr_outbox_enqueue(PGconn *c, int64_t tenant_id, const hr_outbox_batch *b,
		       int64_t *first_message_id, hr_err *err)
{
	if (b->n < 1 || b->n > HR_OUTBOX_MAX)
		return hr_fail(err, HR_ERR_INVALID, "addresses", "a batch holds 1 to %d messages, not %d",
			       HR_OUTBOX_MAX, b->n);
	size_t len = 1, cap = 256;
	char *addrs = hr_malloc(cap);
	addrs[0] = '{';
	for (int i = 0; i < b->n; i++)
		array_elem(&addrs, &len, &cap, b->addresses[i]);
	addrs = hr_realloc(addrs, len + 2);
	addrs[len++] = '}';
	addrs[len] = '\0';

	char *ids = NULL;
	if (b->contact_ids) {
		size_t ilen = 1, icap = (size_t)b->n * 21 + 3;
		ids = hr_malloc(icap);
		ids[0] = '{';
		for (int i = 0; i < b->n; i++)
			ilen += (size_t)(b->contact_ids[i] ? snprintf(ids + ilen, icap - ilen, "%s%lld",
								   i ? "," : "", (long long)b->contact_ids[i])
							 : snprintf(ids + ilen, icap - ilen, "%sNULL", i ? "," : ""));
		snprintf(ids + ilen, icap - ilen, "}");
	}
	char *data = NULL;
	if (b->data) {
		json_t *arr = json_array();
		for (int i = 0; i < b->n; i++) {
			json_error_t je;
			json_t *o = json_loads(b->data[i] ? b->data[i] : "{}", 0, &je);
			if (!o || !json_is_object(o)) {
				json_decref(o);
				json_decref(arr);
				hr_free(addrs);
				hr_free(ids);
				return hr_fail(err, HR_ERR_INVALID, "data",
					       "data of message %d is not a JSON object", i);
			}
			json_array_append_new(arr, o);
		}
		data = hr_json_dump(arr);
		json_decref(arr);
	}
	char tpl[32], ver[16], oid[32], tid[32];
	snprintf(tpl, sizeof tpl, "%lld", (long long)b->template_id);
	snprintf(ver, sizeof ver, "%d", b->template_version);
	snprintf(oid, sizeof oid, "%lld", (long long)b->origin_id);
	snprintf(tid, sizeof tid, "%lld", (long long)tenant_id);
	const char *p[] = {b->channel, b->lane, b->template_id ? tpl : NULL, b->template_id ? ver : NULL,
			   b->content, b->provider, b->origin, b->origin_id ? oid : NULL, b->due_at,
			   addrs, ids, data, b->idempotency_key, b->no_notify ? NULL : tid};
	PGresult *r;
	bool ok = hr_db_query(c,
			      "WITH ins AS (INSERT INTO outbox (channel, lane, template_id, template_version, "
			      "content, provider, origin, origin_id, due_at, addresses, contact_ids, data, "
			      "idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9::timestamptz, "
			      "now()), $10, $11, $12, $13) RETURNING id) "
			      "SELECT id * 4096, CASE WHEN $14::text IS NOT NULL THEN pg_notify('herald_outbox', $14) END "
			      "FROM ins",
			      14, p, &r, err);
	hr_free(addrs);
	hr_free(ids);
	hr_free(data);
	if (!ok)
		return false;
	if (first_message_id)
		*first_message_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return true;
}
