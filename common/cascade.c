/*
 * cascade.c -- see cascade.h and docs/cascade.md.
 *
 * Everything here is set-based per batch: a due batch of 4,096 campaign
 * messages costs one statement, whatever the number of undelivered ones.
 */
#include "cascade.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

/* Due batches advanced per call; more make the runner's next instant "now" and it comes back at once. */
#define ADVANCE_MAX 256

bool hr_cascade_mark(PGconn *c, int64_t *mark, hr_err *err)
{
	PGresult *r;
	if (!hr_db_query(c, "SELECT coalesce(max(id), 0) FROM outbox", 0, NULL, &r, err))
		return false;
	*mark = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return true;
}

bool hr_cascade_arm_campaigns(PGconn *c, int64_t mark, int64_t *armed, hr_err *err)
{
	char m[32];
	snprintf(m, sizeof m, "%lld", (long long)mark);
	const char *p[] = {m};
	PGresult *r;
	/* The fallback's template version is pinned now, like the run pins its own. */
	if (!hr_db_query(c,
			 "WITH a AS (UPDATE outbox o SET cascade = jsonb_build_array(jsonb_build_object('channel', "
			 "k.fallback, 'provider', k.messages -> k.fallback ->> 'provider', 'template_id', t.id, "
			 "'template_version', t.current_version, 'purpose', 'marketing', 'after_s', k.fallback_after_s)), "
			 "cascade_at = coalesce(o.herald_at, herald_clock.now()) + make_interval(secs => k.fallback_after_s) "
			 "FROM campaign_runs x JOIN campaigns k ON k.id = x.campaign_id JOIN templates t ON t.id = "
			 "(k.messages -> k.fallback ->> 'template')::bigint AND t.channel = k.fallback "
			 "WHERE o.id > $1::bigint AND o.origin = 'campaign' AND o.origin_id = x.id AND o.cascade IS NULL "
			 "AND o.cascade_prev IS NULL AND o.channel = x.channel AND k.fallback IS NOT NULL RETURNING 1) "
			 "SELECT count(*) FROM a",
			 1, p, &r, err))
		return false;
	*armed = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return true;
}

/*
 * One due batch ($1) to its fallback batch.  $2 tenant id (NOTIFY payload),
 * $3 check suppressions, $4 check consent.  Messages of a cancelled
 * campaign's run do not fall back.  Returns the new batch id (NULL: nobody
 * left to send to), its size, and how many messages were undelivered.
 */
#define ADVANCE_SQL                                                                                         \
	"WITH b AS (SELECT o.id, o.lane, o.origin, o.origin_id, o.herald_at, o.addresses, o.contact_ids, "      \
	"o.data, o.cascade -> 0 AS s, o.cascade - 0 AS rest FROM outbox o WHERE o.id = $1::bigint "            \
	"AND o.cascade_at IS NOT NULL AND jsonb_array_length(o.cascade) > 0), "                                \
	"live AS (SELECT b.* FROM b WHERE b.origin <> 'campaign' OR NOT EXISTS (SELECT 1 FROM campaign_runs x " \
	"JOIN campaigns k ON k.id = x.campaign_id WHERE x.id = b.origin_id AND k.state = 'cancelled')), "      \
	"m AS (SELECT i, l.contact_ids[i + 1] AS cid, l.data -> i AS d FROM live l, "                          \
	"generate_series(0, cardinality(l.addresses) - 1) i WHERE NOT EXISTS (SELECT 1 FROM events e "         \
	"WHERE e.message_id = l.id * 4096 + i AND e.name = 'message_delivered')), "                            \
	"r AS (SELECT m.i, m.cid, m.d, coalesce(b.s ->> 'to', CASE b.s ->> 'channel' WHEN 'email' THEN "        \
	"c.email WHEN 'sms' THEN c.phone WHEN 'messenger' THEN c.phone END) AS addr FROM m CROSS JOIN b "      \
	"LEFT JOIN contacts c ON c.id = m.cid), "                                                              \
	"ok AS (SELECT r.* FROM r CROSS JOIN b WHERE r.addr IS NOT NULL "                                      \
	"AND (NOT $3::bool OR NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.channel = b.s ->> 'channel' "   \
	"AND s.address = r.addr)) AND (NOT $4::bool OR EXISTS (SELECT 1 FROM consents k WHERE "                \
	"k.contact_id = r.cid AND k.channel = b.s ->> 'channel' AND k.purpose = coalesce(b.s ->> 'purpose', "  \
	"'marketing') AND k.granted))), "                                                                      \
	"ins AS (INSERT INTO outbox (channel, lane, template_id, template_version, content, provider, origin, " \
	"origin_id, due_at, herald_at, addresses, contact_ids, data, cascade, cascade_at, cascade_prev) "      \
	"SELECT b.s ->> 'channel', b.lane, (b.s ->> 'template_id')::bigint, (b.s ->> 'template_version')::int, " \
	"b.s -> 'content', b.s ->> 'provider', b.origin, b.origin_id, now(), CASE WHEN b.herald_at IS NOT "    \
	"NULL THEN herald_clock.now() END, a.addrs, a.cids, CASE WHEN b.data IS NOT NULL THEN a.datas END, "   \
	"CASE WHEN jsonb_array_length(b.rest) > 0 THEN b.rest END, CASE WHEN jsonb_array_length(b.rest) > 0 "  \
	"THEN herald_clock.now() + make_interval(secs => (b.rest -> 0 ->> 'after_s')::double precision) END, " \
	"b.id FROM b, (SELECT array_agg(addr ORDER BY i) AS addrs, array_agg(cid ORDER BY i) AS cids, "        \
	"jsonb_agg(coalesce(d, '{}') ORDER BY i) AS datas, count(*) AS n FROM ok) a WHERE a.n > 0 "            \
	"RETURNING id, cardinality(addresses) AS n), "                                                         \
	"up AS (UPDATE outbox o SET cascade_at = NULL, cascade_next = (SELECT id FROM ins) "                   \
	"WHERE o.id = $1::bigint RETURNING 1) "                                                                \
	"SELECT (SELECT id FROM ins), (SELECT n FROM ins), (SELECT count(*) FROM m), "                         \
	"(SELECT count(*) FROM (SELECT pg_notify('herald_outbox', $2) FROM ins) z), (SELECT count(*) FROM up)"

bool hr_cascade_advance(PGconn *c, int64_t tenant_id, const json_t *settings, int64_t *batches,
			int64_t *messages, hr_err *err)
{
	*batches = *messages = 0;
	PGresult *due;
	char lim[16];
	snprintf(lim, sizeof lim, "%d", ADVANCE_MAX);
	const char *pd[] = {lim};
	if (!hr_db_query(c,
			 "SELECT id, lane FROM outbox WHERE cascade_at <= herald_clock.now() ORDER BY cascade_at, id "
			 "LIMIT $1::int FOR UPDATE SKIP LOCKED",
			 1, pd, &due, err))
		return false;
	/* Consent policy as api/messages.c: bulk needs consent and no suppression; transactional follows the tenant. */
	const char *policy = json_string_value(json_object_get(settings, "transactional_policy"));
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)tenant_id);
	bool ok = true;
	for (int i = 0; ok && i < PQntuples(due); i++) {
		bool bulk = strcmp(PQgetvalue(due, i, 1), "bulk") == 0;
		bool supp = bulk || !policy || strcmp(policy, "none") != 0;
		bool consent = bulk || (policy && !strcmp(policy, "consent"));
		const char *p[] = {PQgetvalue(due, i, 0), tid, supp ? "true" : "false", consent ? "true" : "false"};
		PGresult *r;
		ok = hr_db_query(c, ADVANCE_SQL, 4, p, &r, err);
		if (!ok)
			break;
		if (!PQgetisnull(r, 0, 0)) {
			(*batches)++;
			*messages += strtoll(PQgetvalue(r, 0, 1), NULL, 10);
		}
		PQclear(r);
	}
	PQclear(due);
	return ok;
}

bool hr_cascade_settle(PGconn *c, int64_t tenant_id, const char *batch_ids, hr_err *err)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)tenant_id);
	const char *p[] = {batch_ids, tid};
	return hr_db_query(c,
			   "WITH s AS (UPDATE outbox o SET cascade_at = herald_clock.now() WHERE o.id = ANY($1::bigint[]) "
			   "AND o.cascade_at > herald_clock.now() AND NOT EXISTS (SELECT 1 FROM "
			   "generate_series(0, cardinality(o.addresses) - 1) i WHERE NOT EXISTS (SELECT 1 FROM results x "
			   "WHERE x.message_id = o.id * 4096 + i AND x.status <> 'sent') AND NOT EXISTS (SELECT 1 FROM "
			   "events e WHERE e.message_id = o.id * 4096 + i AND e.name IN ('message_delivered', "
			   "'message_bounced'))) RETURNING 1) "
			   "SELECT pg_notify('herald_campaigns', $2) WHERE EXISTS (SELECT 1 FROM s)",
			   2, p, NULL, err);
}
