/*
 * audience.c -- see audience.h.  The SQL is built from fixed fragments; the
 * only caller text is `where`, itself built by segment.c (or rules.c) from
 * fixed fragments with every user value a parameter.
 */
#include "audience.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"

hr_audience_cap hr_audience_cap_from_settings(const json_t *settings)
{
	hr_audience_cap cap = {0, 0};
	json_t *fc = json_object_get(settings, "frequency_cap");
	json_t *max = json_object_get(fc, "max");
	const char *per = json_string_value(json_object_get(fc, "per"));
	if (json_is_integer(max) && json_integer_value(max) > 0 && per) {
		cap.max = (int)json_integer_value(max);
		cap.period_s = !strcmp(per, "week") ? 7 * 86400 : 86400;
	}
	return cap;
}

static const char *address_column(const char *channel)
{
	if (!strcmp(channel, "email"))
		return "email";
	if (!strcmp(channel, "sms") || !strcmp(channel, "messenger"))
		return "phone";
	return NULL;
}

/* A Postgres array literal of n items written by item(i, buf). */
static char *array_text(int n, const char *const *s, const int64_t *v)
{
	size_t cap = 16, len = 0;
	char *out = hr_malloc(cap);
	out[len++] = '{';
	for (int i = 0; i < n; i++) {
		size_t need = len + (s ? 2 * strlen(s[i]) + 4 : 24) + 2;
		if (need > cap) {
			cap = need * 2;
			out = hr_realloc(out, cap);
		}
		if (i)
			out[len++] = ',';
		if (s) {
			out[len++] = '"';
			for (const char *p = s[i]; *p; p++) {
				if (*p == '"' || *p == '\\')
					out[len++] = '\\';
				out[len++] = *p;
			}
			out[len++] = '"';
		} else {
			len += (size_t)snprintf(out + len, cap - len, "%lld", (long long)v[i]);
		}
	}
	out = hr_realloc(out, len + 2);
	out[len++] = '}';
	out[len] = '\0';
	return out;
}

static bool notify(PGconn *c, int64_t tenant_id, hr_err *err)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)tenant_id);
	const char *p[] = {tid};
	return hr_db_query(c, "SELECT pg_notify('herald_outbox', $1)", 1, p, NULL, err);
}

/*
 * The fan-out statement's planner settings (docs/campaigns.md, "How a run
 * materialises"), set for that statement only: set_config(..., true) would
 * last to the end of the caller's transaction, so the previous values are
 * put back after it (on an error the caller rolls back, which undoes them).
 *
 *   jit off          compiling its ~60 expressions took longer (1.4 s at
 *                    1,000,000 recipients) than it saved;
 *   enable_nestloop  off: a segment's subqueries leave the planner guessing a
 *                    few thousand rows where there may be millions, and it
 *                    then probed consents and suppressions once per contact
 *                    and joined the frequency cap by a nested loop (contacts x
 *                    capped contacts); hash joins cost one pass over each;
 *   enable_sort      off in the one-due case: the batches are grouped by
 *                    hashing (the input is in batch order already), no sort;
 *   work_mem         FANOUT_WORK_MEM: the hash tables and the batches of a
 *                    million recipients (~100 MB) stay in memory.
 */
#define FANOUT_WORK_MEM "256MB"

typedef struct planner_saved {
	char jit[16], work_mem[32], nestloop[16], sort[16];
} planner_saved;

static bool planner_set(PGconn *c, bool hashagg, planner_saved *sv, hr_err *err)
{
	const char *p[] = {FANOUT_WORK_MEM, hashagg ? "off" : NULL};
	PGresult *r;
	if (!hr_db_query(c,
			 "WITH old AS MATERIALIZED (SELECT current_setting('jit') AS j, current_setting('work_mem') AS w, "
			 "current_setting('enable_nestloop') AS n, current_setting('enable_sort') AS s) "
			 "SELECT old.j, old.w, old.n, old.s, set_config('jit', 'off', true), "
			 "set_config('work_mem', $1, true), set_config('enable_nestloop', 'off', true), "
			 "set_config('enable_sort', coalesce($2, old.s), true) FROM old",
			 2, p, &r, err))
		return false;
	snprintf(sv->jit, sizeof sv->jit, "%s", PQgetvalue(r, 0, 0));
	snprintf(sv->work_mem, sizeof sv->work_mem, "%s", PQgetvalue(r, 0, 1));
	snprintf(sv->nestloop, sizeof sv->nestloop, "%s", PQgetvalue(r, 0, 2));
	snprintf(sv->sort, sizeof sv->sort, "%s", PQgetvalue(r, 0, 3));
	PQclear(r);
	return true;
}

static bool planner_restore(PGconn *c, const planner_saved *sv, hr_err *err)
{
	const char *p[] = {sv->jit, sv->work_mem, sv->nestloop, sv->sort};
	return hr_db_query(c,
			   "SELECT set_config('jit', $1, true), set_config('work_mem', $2, true), "
			   "set_config('enable_nestloop', $3, true), set_config('enable_sort', $4, true)",
			   4, p, NULL, err);
}

bool hr_audience_materialise(PGconn *c, int64_t tenant_id, const hr_audience *a, hr_audience_result *out,
			     hr_err *err)
{
	memset(out, 0, sizeof *out);
	const char *col = address_column(a->channel);
	if (!col)
		return hr_fail(err, HR_ERR_INVALID, "channel", "contacts hold no %s address", a->channel);
	if (a->nzones < 1 || a->nslots < 1 || strcmp(a->zones[0], "") != 0)
		return hr_fail(err, HR_ERR_INVALID, "dues", "the due table needs the default zone first");
	bool simple = a->nzones == 1 && a->nslots == 1, spread = a->nslots > 1;
	int n = a->nparams, np = n;
	/* our parameters follow the caller's */
	enum { P_CH, P_TPL, P_VER, P_CONTENT, P_PROV, P_ORIGIN, P_OID, P_CAPMAX, P_CAPSINCE, P_ZONES, P_SLOTS,
	       P_DUES, P_NSLOTS, P_COUNT };
	const char **p = hr_calloc((size_t)(n + P_COUNT), sizeof *p);
	for (int i = 0; i < n; i++)
		p[i] = a->params[i];
	char tpl[32], ver[16], oid[32], capmax[16], since[32], nslots[16];
	snprintf(tpl, sizeof tpl, "%lld", (long long)a->template_id);
	snprintf(ver, sizeof ver, "%d", a->template_version);
	snprintf(oid, sizeof oid, "%lld", (long long)a->origin_id);
	snprintf(capmax, sizeof capmax, "%d", a->cap.max);
	snprintf(since, sizeof since, "%lld", (long long)a->cap.period_s);
	snprintf(nslots, sizeof nslots, "%d", a->nslots);
	int total = a->nzones * a->nslots;
	int64_t *slots = hr_malloc((size_t)total * sizeof *slots);
	const char **zones = hr_malloc((size_t)total * sizeof *zones);
	for (int z = 0; z < a->nzones; z++)
		for (int s = 0; s < a->nslots; s++) {
			slots[z * a->nslots + s] = s;
			zones[z * a->nslots + s] = a->zones[z];
		}
	char *zt = array_text(total, zones, NULL), *st = array_text(total, NULL, slots),
	     *dt = array_text(total, NULL, a->dues);
	p[np + P_CH] = a->channel;
	p[np + P_TPL] = a->template_id ? tpl : NULL;
	p[np + P_VER] = a->template_id ? ver : NULL;
	p[np + P_CONTENT] = a->content;
	p[np + P_PROV] = a->provider;
	p[np + P_ORIGIN] = a->origin;
	p[np + P_OID] = a->origin_id ? oid : NULL;
	p[np + P_CAPMAX] = capmax;
	p[np + P_CAPSINCE] = since;
	p[np + P_ZONES] = zt;
	p[np + P_SLOTS] = st;
	p[np + P_DUES] = dt;
	p[np + P_NSLOTS] = nslots;
#define PN(k) (np + (k) + 1)
	/* The cap's count: bulk campaign and rule messages with a herald time in
	 * the period, in the outbox or still held. */
	char *capped = a->cap.max > 0
			       ? hr_sprintf("capped AS (SELECT u.cid AS id FROM ("
					    "SELECT unnest(o.contact_ids) AS cid FROM outbox o WHERE o.herald_at > "
					    "herald_clock.now() - make_interval(secs => $%d::int) AND o.lane = 'bulk' "
					    "AND o.origin IN ('campaign', 'rule') UNION ALL "
					    "SELECT unnest(h.contact_ids) FROM campaign_batches h WHERE h.due_at > "
					    "herald_clock.now() - make_interval(secs => $%d::int)) u "
					    "WHERE u.cid IS NOT NULL GROUP BY u.cid HAVING count(*) >= $%d::int), ",
					    PN(P_CAPSINCE), PN(P_CAPSINCE), PN(P_CAPMAX))
			       : hr_strdup("");
	char *recipients = hr_sprintf(
		"r AS (SELECT c.id, c.%s AS address%s%s FROM contacts c "
		"WHERE c.merged_into IS NULL AND c.%s IS NOT NULL AND %s "
		"AND EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = c.id AND k.channel = $%d "
		"AND k.purpose = 'marketing' AND k.granted) "
		"AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.channel = $%d AND s.address = c.%s)%s), ",
		col, simple ? "" : ", coalesce(c.time_zone, '') AS tz",
		spread ? ", row_number() OVER (ORDER BY c.id) - 1 AS i, count(*) OVER () AS n" : "", col,
		a->where ? a->where : "true", PN(P_CH), PN(P_CH), col,
		a->cap.max > 0 ? " AND NOT EXISTS (SELECT 1 FROM capped x WHERE x.id = c.id)" : "");
	char *dues;
	if (simple) {
		/* One due instant for everybody: no join, no sort (the fan-out's fast
		 * path); batch numbers follow the recipients' order, grouped by hashing. */
		dues = hr_sprintf("k AS (SELECT r.id, r.address, (row_number() OVER () - 1) / 4096 AS chunk FROM r), "
				  "g AS (SELECT to_timestamp(($%d::float8[])[1]) AS due, array_agg(k.address) AS a, "
				  "array_agg(k.id) AS ids FROM k GROUP BY k.chunk), ",
				  PN(P_DUES));
	} else {
		const char *slot = spread ? "(r.i * $%d::bigint / r.n)::int" : "0 * $%d::int";
		char *slot_expr = hr_sprintf(slot, PN(P_NSLOTS));
		dues = hr_sprintf("m AS (SELECT u.z, u.s, to_timestamp(u.d) AS due FROM unnest($%d::text[], "
				  "$%d::int[], $%d::float8[]) u(z, s, d)), "
				  "d AS (SELECT r.id, r.address, coalesce(mz.due, m0.due) AS due FROM r "
				  "LEFT JOIN m mz ON mz.z = r.tz AND mz.s = %s "
				  "LEFT JOIN m m0 ON m0.z = '' AND m0.s = %s), "
				  "k AS (SELECT d.*, (row_number() OVER (PARTITION BY d.due) - 1) / 4096 AS chunk "
				  "FROM d), "
				  "g AS (SELECT k.due, array_agg(k.address) AS a, array_agg(k.id) AS ids FROM k "
				  "GROUP BY k.due, k.chunk), ",
				  PN(P_ZONES), PN(P_SLOTS), PN(P_DUES), slot_expr, slot_expr);
		hr_free(slot_expr);
	}
	char *held = a->hold_later
			     ? hr_sprintf(", held AS (INSERT INTO campaign_batches (run_id, due_at, addresses, "
					  "contact_ids) SELECT $%d::bigint, g.due, g.a, g.ids FROM g "
					  "WHERE g.due > herald_clock.now() RETURNING cardinality(addresses) AS n) ",
					  PN(P_OID))
			     : hr_strdup(" ");
	char *sql = hr_sprintf(
		"WITH %s%s%s"
		"now_b AS (INSERT INTO outbox (channel, lane, template_id, template_version, content, provider, "
		"origin, origin_id, due_at, herald_at, addresses, contact_ids) "
		"SELECT $%d, 'bulk', $%d::bigint, $%d::int, $%d::jsonb, $%d, $%d, $%d::bigint, now(), g.due, g.a, "
		"g.ids FROM g WHERE %s RETURNING cardinality(addresses) AS n)%s"
		"SELECT (SELECT coalesce(sum(n), 0) FROM now_b) + %s, (SELECT count(*) FROM now_b), %s, "
		/* every parameter is typed even when this variant does not use it */
		"$%d::text[] IS NULL OR $%d::int[] IS NULL OR $%d::int IS NULL OR $%d::int IS NULL OR $%d::int IS NULL",
		capped, recipients, dues, PN(P_CH), PN(P_TPL), PN(P_VER), PN(P_CONTENT), PN(P_PROV), PN(P_ORIGIN),
		PN(P_OID), a->hold_later ? "g.due <= herald_clock.now()" : "true", held,
		a->hold_later ? "(SELECT coalesce(sum(n), 0) FROM held)" : "0",
		a->hold_later ? "(SELECT count(*) FROM held)" : "0", PN(P_ZONES),
		PN(P_SLOTS), PN(P_NSLOTS), PN(P_CAPMAX), PN(P_CAPSINCE));
#undef PN
	PGresult *r = NULL;
	planner_saved sv;
	bool ok = planner_set(c, simple, &sv, err) && hr_db_query(c, sql, np + P_COUNT, p, &r, err);
	if (ok && !planner_restore(c, &sv, err)) {
		PQclear(r);
		ok = false;
	}
	if (ok) {
		out->recipients = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		out->batches_now = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
		out->batches_held = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
		PQclear(r);
		if (out->batches_now > 0)
			ok = notify(c, tenant_id, err);
	}
	hr_free(sql);
	hr_free(held);
	hr_free(dues);
	hr_free(recipients);
	hr_free(capped);
	hr_free(zt);
	hr_free(st);
	hr_free(dt);
	hr_free(zones);
	hr_free(slots);
	hr_free(p);
	return ok;
}

bool hr_audience_release(PGconn *c, int64_t tenant_id, int64_t *batches, hr_err *err)
{
	PGresult *r;
	*batches = 0;
	if (!hr_db_query(c,
			 "WITH b AS (DELETE FROM campaign_batches h USING campaign_runs r, campaigns c "
			 "WHERE r.id = h.run_id AND c.id = r.campaign_id AND c.state = 'active' "
			 "AND h.due_at <= herald_clock.now() RETURNING h.id, h.run_id, h.due_at, h.addresses, "
			 "h.contact_ids, r.channel, r.template_id, r.template_version, r.provider), "
			 "u AS (SELECT b.id, x.addr, x.cid FROM b, unnest(b.addresses, b.contact_ids) x(addr, cid) "
			 "WHERE EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = x.cid AND k.channel = b.channel "
			 "AND k.purpose = 'marketing' AND k.granted) AND NOT EXISTS (SELECT 1 FROM suppressions s "
			 "WHERE s.channel = b.channel AND s.address = x.addr)), "
			 "g AS (SELECT u.id, array_agg(u.addr) AS a, array_agg(u.cid) AS ids FROM u GROUP BY u.id), "
			 "ins AS (INSERT INTO outbox (channel, lane, template_id, template_version, provider, origin, "
			 "origin_id, due_at, herald_at, addresses, contact_ids) SELECT b.channel, 'bulk', b.template_id, "
			 "b.template_version, b.provider, 'campaign', b.run_id, now(), b.due_at, g.a, g.ids "
			 "FROM b JOIN g ON g.id = b.id RETURNING 1) "
			 "SELECT count(*) FROM ins",
			 0, NULL, &r, err))
		return false;
	*batches = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return *batches == 0 || notify(c, tenant_id, err);
}

char *hr_audience_cap_counted_sql(int p_since)
{
	return hr_sprintf("SELECT unnest(o.contact_ids) AS cid FROM outbox o WHERE o.herald_at > "
			  "herald_clock.now() - make_interval(secs => $%d::int) AND o.lane = 'bulk' "
			  "AND o.origin IN ('campaign', 'rule') UNION ALL "
			  "SELECT unnest(h.contact_ids) FROM campaign_batches h WHERE h.due_at > "
			  "herald_clock.now() - make_interval(secs => $%d::int)",
			  p_since, p_since);
}
