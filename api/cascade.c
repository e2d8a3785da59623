/*
 * cascade.c -- the API's half of the channel cascade (docs/cascade.md,
 * common/cascade.h for the scheduler's half).
 *
 * POST /v1/messages may carry
 *   "fallback": [{"channel": "sms", "provider": "acct", "template": {...} | "content": {...},
 *                 "to": "...", "after": "10m"}, ...]
 * an ordered list of up to four further channels.  `after` is the validity
 * window of the step before (the message's own channel for the first entry;
 * default 10m): when it ends without a delivery receipt, the entry is sent.
 * Channels are all distinct, the message's own included (422 naming
 * /fallback/<i>/channel otherwise).  Recipients: with a `contact`
 * reference, each step goes to the contact's address for its channel (email,
 * or the phone for sms and messenger) unless the step gives `to`; with a raw
 * `to`, each step must give its own `to`.
 *
 * cascade_parse() validates the list in messages_pre (errors join the
 * body's 422), cascade_pre_accounts() checks the provider accounts on the
 * control schema, cascade_prepare() checks templates and the contact's
 * addresses in the tenant transaction before anything is written, and
 * cascade_attach() stores the steps on the message's batch (outbox.cascade,
 * cascade_at = herald now + the first window) and NOTIFYs the campaign
 * runner, which advances the cascade when due.
 *
 * Cost: a provider account may have "price" (a decimal number per message)
 * and "currency" (ISO 4217) in its config.  A message costs its account's
 * price when the provider accepted it: a `sent` result, or a delivery
 * receipt (which can arrive before the lander wrote the result).  cascade_prices_pre()
 * reads the tenant's price list from the control schema before the tenant
 * transaction; cascade_describe() and cascade_channel_costs() compute with it
 * in SQL (numeric, exact).  Prices are the accounts' current ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "clock.h"
#include "db.h"
#include "outbox.h"

#define STEPS_MAX 4
#define DEFAULT_AFTER_S 600
#define AFTER_MIN_S 1
#define AFTER_MAX_S (7 * 86400)

typedef struct cstep {
	const char *channel, *provider; /* borrowed from the body */
	int64_t template_id, template_version;
	char *content;                  /* JSON text or NULL */
	char to[520];                   /* "" = the contact's address */
	int64_t after_s;
} cstep;

struct cascade_in {
	int n;
	cstep s[STEPS_MAX];
	bool by_contact;
	const char *purpose;
};

static bool channel_ok(const char *c)
{
	return !strcmp(c, "email") || !strcmp(c, "sms") || !strcmp(c, "messenger") || !strcmp(c, "push") ||
	       !strcmp(c, "webhook");
}

void cascade_free(cascade_in *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		hr_free(c->s[i].content);
	hr_free(c);
}

cascade_in *cascade_parse(jv *v, json_t *body, const char *channel, bool by_contact, const char *purpose,
			  const char *cc)
{
	json_t *list = json_object_get(body, "fallback");
	if (!list || json_is_null(list))
		return NULL;
	if (!json_is_array(list) || json_array_size(list) < 1 || json_array_size(list) > STEPS_MAX) {
		jv_add(v, "", "fallback", "must be an array of 1 to %d steps", STEPS_MAX);
		return NULL;
	}
	static const char *const allowed[] = {"channel", "provider", "template", "content", "to", "after", NULL};
	cascade_in *c = hr_calloc(1, sizeof *c);
	c->by_contact = by_contact;
	c->purpose = purpose;
	const char *seen[STEPS_MAX + 1] = {channel};
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e) {
		char base[32];
		snprintf(base, sizeof base, "/fallback/%zu", i);
		cstep *s = &c->s[c->n++];
		if (!json_is_object(e)) {
			jv_add(v, base, NULL, "must be an object");
			continue;
		}
		jv_only(v, e, base, allowed);
		s->channel = jv_str(v, e, base, "channel", true, 16);
		s->provider = jv_str(v, e, base, "provider", true, 40);
		hr_err err = {0};
		if (s->channel && !channel_ok(s->channel)) {
			jv_add(v, base, "channel", "must be email, sms, messenger, push or webhook");
		} else if (s->channel) {
			for (size_t k = 0; k <= i; k++)
				if (seen[k] && !strcmp(seen[k], s->channel)) {
					jv_add(v, base, "channel", k == 0 ? "is the message's own channel: a cascade never "
									    "sends twice on one channel"
									  : "is named twice: a cascade never sends twice on one channel");
					break;
				}
			seen[i + 1] = s->channel;
		}
		if (s->provider && !hr_slug_valid(s->provider, "provider", &err))
			jv_add(v, base, "provider", "is not an account name");
		json_t *tpl = jv_obj(v, e, base, "template", false);
		json_t *content = jv_obj(v, e, base, "content", false);
		if (tpl) {
			static const char *const tallowed[] = {"id", "version", NULL};
			char tb[48];
			snprintf(tb, sizeof tb, "%s/template", base);
			bool p1, p2;
			jv_only(v, tpl, tb, tallowed);
			jv_int(v, tpl, tb, "id", true, 1, INT64_MAX, &p1, &s->template_id);
			jv_int(v, tpl, tb, "version", true, 1, 1000000, &p2, &s->template_version);
		}
		if (!!tpl == !!content)
			jv_add(v, base, tpl ? "content" : "template", "give exactly one of template and content");
		else if (content)
			s->content = api_dump(content);
		const char *to = jv_str(v, e, base, "to", false, 512);
		if (to && s->channel) {
			bool bad = !strcmp(s->channel, "email") ? !hr_email_normalize(to, s->to, &err)
				   : !strcmp(s->channel, "sms") ? !hr_phone_normalize(to, cc, s->to, &err)
								 : false;
			if (bad)
				jv_add(v, base, "to", "%s", err.msg);
			else if (!s->to[0])
				snprintf(s->to, sizeof s->to, "%s", to);
		} else if (!to && !by_contact && json_object_get(e, "to") == NULL) {
			jv_add(v, base, "to", "give to: the message names no contact to take this channel's address from");
		}
		s->after_s = DEFAULT_AFTER_S;
		json_t *after = json_object_get(e, "after");
		if (after && json_is_string(after)) {
			int64_t us;
			if (!hr_duration_parse(json_string_value(after), &us, &err) || us < AFTER_MIN_S * 1000000LL ||
			    us > AFTER_MAX_S * 1000000LL || us % 1000000)
				jv_add(v, base, "after", "must be a duration of whole seconds from 1s to 7d, e.g. \"10m\"");
			else
				s->after_s = us / 1000000;
		} else if (after && json_is_integer(after)) {
			json_int_t n = json_integer_value(after);
			if (n < AFTER_MIN_S || n > AFTER_MAX_S)
				jv_add(v, base, "after", "must be 1 to %d seconds", AFTER_MAX_S);
			else
				s->after_s = n;
		} else if (after && !json_is_null(after)) {
			jv_add(v, base, "after", "must be a duration such as \"10m\" or a number of seconds");
		}
	}
	return c;
}

/* Each step's provider account exists for the tenant and serves its channel (api_provider_channel: cached,
 * and it may run while the transaction acts as the tenant). */
bool cascade_pre_accounts(api_req *r, const cascade_in *c)
{
	if (!c)
		return true;
	jv v;
	jv_init(&v);
	for (int i = 0; i < c->n; i++) {
		char have[16];
		hr_err err = {0};
		if (!api_provider_channel(r, c->s[i].provider, have, &err)) {
			jv_free(&v);
			api_problem_err(r, &err);
			return false;
		}
		if (!have[0] || strcmp(have, c->s[i].channel) != 0) {
			char base[32];
			snprintf(base, sizeof base, "/fallback/%d", i);
			jv_add(&v, base, "provider", have[0] ? "this account serves another channel" : "no such provider account");
		}
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return false;
	}
	jv_free(&v);
	return true;
}

bool cascade_prepare(api_req *r, const cascade_in *c, const char *contact_id)
{
	if (!c)
		return true;
	jv v;
	jv_init(&v);
	PGresult *res = NULL;
	hr_err err = {0};
	for (int i = 0; i < c->n; i++) {
		const cstep *s = &c->s[i];
		char base[32];
		snprintf(base, sizeof base, "/fallback/%d", i);
		if (s->template_id) {
			char tid[32], ver[16];
			snprintf(tid, sizeof tid, "%lld", (long long)s->template_id);
			snprintf(ver, sizeof ver, "%lld", (long long)s->template_version);
			const char *pt[] = {tid, ver, s->channel};
			if (!hr_db_query(r->db,
					 "SELECT 1 FROM template_versions v JOIN templates t ON t.id = v.template_id "
					 "WHERE v.template_id = $1 AND v.version = $2 AND t.channel = $3",
					 3, pt, &res, &err))
				goto fail;
			if (PQntuples(res) != 1) {
				char *b = jv_ptr(base, "template");
				jv_add(&v, b, NULL, "no such template version for this channel");
				hr_free(b);
			}
			PQclear(res);
			res = NULL;
		}
		if (s->to[0] || !c->by_contact)
			continue;
		bool email = !strcmp(s->channel, "email"), phone = !strcmp(s->channel, "sms") || !strcmp(s->channel, "messenger");
		if (!email && !phone) {
			jv_add(&v, base, "to", "give to for this channel: contacts hold no such address");
			continue;
		}
		const char *pc[] = {contact_id};
		if (!hr_db_query(r->db,
				 email ? "SELECT 1 FROM contacts WHERE id = $1::bigint AND email IS NOT NULL"
				       : "SELECT 1 FROM contacts WHERE id = $1::bigint AND phone IS NOT NULL",
				 1, pc, &res, &err))
			goto fail;
		if (PQntuples(res) != 1)
			jv_add(&v, base, "to", "the contact has no address for %s: give to", s->channel);
		PQclear(res);
		res = NULL;
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return false;
	}
	jv_free(&v);
	return true;
fail:
	PQclear(res);
	jv_free(&v);
	api_problem_err(r, &err);
	return false;
}

bool cascade_attach(api_req *r, const cascade_in *c, int64_t first_message_id)
{
	if (!c)
		return true;
	json_t *steps = json_array();
	for (int i = 0; i < c->n; i++) {
		const cstep *s = &c->s[i];
		json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "channel", s->channel, "provider", s->provider, "purpose",
				      c->purpose, "after_s", (json_int_t)s->after_s);
		if (s->template_id) {
			json_object_set_new(o, "template_id", json_integer(s->template_id));
			json_object_set_new(o, "template_version", json_integer(s->template_version));
		} else {
			json_object_set_new(o, "content", json_loads(s->content, 0, NULL));
		}
		if (s->to[0])
			json_object_set_new(o, "to", json_string(s->to));
		json_array_append_new(steps, o);
	}
	char *text = api_dump(steps);
	json_decref(steps);
	char batch[32], after[32], tid[32];
	snprintf(batch, sizeof batch, "%lld", (long long)(first_message_id / HR_OUTBOX_MAX));
	snprintf(after, sizeof after, "%lld", (long long)c->s[0].after_s);
	snprintf(tid, sizeof tid, "%lld", (long long)r->tenant.id);
	const char *p[] = {batch, text, after, tid};
	hr_err err = {0};
	bool ok = hr_db_query(r->db,
			      "WITH u AS (UPDATE outbox SET cascade = $2::jsonb, cascade_at = herald_clock.now() + "
			      "make_interval(secs => $3::int) WHERE id = $1::bigint RETURNING 1) "
			      "SELECT pg_notify('herald_campaigns', $4) FROM u",
			      4, p, NULL, &err);
	hr_free(text);
	if (!ok)
		api_problem_err(r, &err);
	return ok;
}

/* ---- cost -------------------------------------------------------------------- */

void cascade_prices_pre(api_req *r)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)r->tenant.id);
	const char *p[] = {tid};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT coalesce(jsonb_object_agg(name, jsonb_build_object('price', config -> 'price', "
			 "'currency', config -> 'currency')) FILTER (WHERE jsonb_typeof(config -> 'price') = 'number'), "
			 "'{}')::text FROM herald.provider_accounts WHERE tenant_id = $1",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	r->state = hr_strdup(PQgetvalue(res, 0, 0));
	r->state_free = hr_free;
	PQclear(res);
}

/* Receipt events: each says the provider accepted the message (it can come before the result lands). */
#define RECEIPTS "('message_delivered', 'message_bounced', 'message_complained')"

/* The status shown for message `m` (an SQL expression): as GET /v1/messages/{id} shows it. */
#define STEP_STATUS(m)                                                                                      \
	"coalesce((SELECT CASE e.name WHEN 'message_delivered' THEN 'delivered' WHEN 'message_bounced' THEN "  \
	"'bounced' ELSE 'complained' END FROM events e WHERE e.message_id = " m " AND e.name IN "             \
	"('message_delivered', 'message_bounced', 'message_complained') ORDER BY e.occurred_at DESC, e.id "   \
	"DESC LIMIT 1), x.status, 'queued')"

bool cascade_describe(api_req *r, long long message_id, json_t *out)
{
	const char *prices = r->state ? r->state : "{}";
	char batch[32], idx[16];
	snprintf(batch, sizeof batch, "%lld", message_id / HR_OUTBOX_MAX);
	snprintf(idx, sizeof idx, "%lld", message_id % HR_OUTBOX_MAX);
	const char *p[] = {batch, idx, prices};
	PGresult *res;
	hr_err err = {0};
	/* The chain: back to its first batch by cascade_prev, then forward by cascade_next; in each
	 * batch this recipient's message (by contact id; a batch of one without contact: message 0). */
	if (!hr_db_query(r->db,
			 "WITH RECURSIVE me AS (SELECT o.contact_ids[$2::int + 1] AS cid FROM outbox o "
			 "WHERE o.id = $1::bigint), "
			 "back AS (SELECT o.id, o.cascade_prev, 0 AS d FROM outbox o WHERE o.id = $1::bigint UNION ALL "
			 "SELECT q.id, q.cascade_prev, back.d - 1 FROM back JOIN outbox q ON q.id = back.cascade_prev "
			 "WHERE back.d > -8), "
			 "fwd AS (SELECT o.id, o.cascade_next, 0 AS k FROM outbox o WHERE o.id = (SELECT id FROM back "
			 "ORDER BY d LIMIT 1) UNION ALL SELECT q.id, q.cascade_next, fwd.k + 1 FROM fwd JOIN outbox q "
			 "ON q.id = fwd.cascade_next WHERE fwd.k < 8), "
			 "st AS (SELECT fwd.k, o.id, o.channel, o.provider, o.cascade, o.cascade_at, CASE WHEN o.id = "
			 "$1::bigint THEN $2::int WHEN (SELECT cid FROM me) IS NOT NULL THEN array_position(o.contact_ids, "
			 "(SELECT cid FROM me)) - 1 WHEN cardinality(o.addresses) = 1 THEN 0 END AS idx FROM fwd "
			 "JOIN outbox o ON o.id = fwd.id), "
			 "m AS (SELECT st.*, st.id * 4096 + st.idx AS mid FROM st WHERE st.idx IS NOT NULL), "
			 "s AS (SELECT m.k, m.mid, m.channel, m.provider, " STEP_STATUS("m.mid") " AS status, "
			 "CASE WHEN x.status = 'sent' OR EXISTS (SELECT 1 FROM events e WHERE e.message_id = m.mid "
			 "AND e.name IN " RECEIPTS ") THEN ($3::jsonb -> m.provider ->> 'price')::numeric END AS cost, "
			 "$3::jsonb -> m.provider ->> 'currency' AS cur, m.cascade_at, m.cascade -> 0 ->> 'channel' "
			 "AS next FROM m LEFT JOIN results x ON x.message_id = m.mid) "
			 "SELECT k, mid, channel, provider, status, cost::text, cur, "
			 "to_char(cascade_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), next, "
			 "(sum(cost) OVER (PARTITION BY cur))::text, (SELECT count(*) + count(cascade) FROM st), mid = $1::bigint * 4096 "
			 "+ $2::int FROM s ORDER BY k",
			 3, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	int n = PQntuples(res);
	json_t *steps = json_array(), *total = json_object();
	const char *wait_at = NULL, *wait_ch = NULL;
	for (int i = 0; i < n; i++) {
		json_t *s = json_pack("{s:I, s:s, s:s, s:s}", "message_id", (json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10),
				      "channel", PQgetvalue(res, i, 2), "provider", PQgetvalue(res, i, 3), "status",
				      PQgetvalue(res, i, 4));
		json_object_set_new(s, "cost", PQgetisnull(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5)));
		json_object_set_new(s, "currency", PQgetisnull(res, i, 6) ? json_null() : json_string(PQgetvalue(res, i, 6)));
		json_array_append_new(steps, s);
		if (!PQgetisnull(res, i, 6) && !PQgetisnull(res, i, 9))
			json_object_set_new(total, PQgetvalue(res, i, 6), json_string(PQgetvalue(res, i, 9)));
		if (!strcmp(PQgetvalue(res, i, 11), "t")) {
			json_object_set(out, "cost", json_object_get(s, "cost"));
			json_object_set(out, "currency", json_object_get(s, "currency"));
		}
		/* the recipient's last step decides whether the cascade still waits */
		wait_at = PQgetisnull(res, i, 7) ? NULL : PQgetvalue(res, i, 7);
		wait_ch = PQgetisnull(res, i, 8) ? NULL : PQgetvalue(res, i, 8);
	}
	/* a cascade: more than one batch in the chain, or a first batch that has (had) steps to come */
	bool chain = n > 0 && strtoll(PQgetvalue(res, 0, 10), NULL, 10) > 1;
	if (chain) {
		json_t *c = json_pack("{s:s, s:o, s:o}", "state", wait_at ? "waiting" : "finished", "steps", steps,
				      "cost", total);
		json_object_set_new(c, "next_channel", wait_ch && wait_at ? json_string(wait_ch) : json_null());
		json_object_set_new(c, "next_at", wait_at ? json_string(wait_at) : json_null());
		json_object_set_new(out, "cascade", c);
	} else {
		json_decref(steps);
		json_decref(total);
	}
	PQclear(res);
	return true;
}

json_t *cascade_channel_costs(api_req *r, const char *batches_sql, int nparams, const char *const *params)
{
	/* batches_sql selects outbox o (its own parameters $1..$nparams); the price list is the next one. */
	char pn[16];
	snprintf(pn, sizeof pn, "$%d", nparams + 1);
	char *sql = hr_sprintf(
		"WITH b AS (SELECT o.id, o.channel, o.provider, cardinality(o.addresses) AS n %s), "
		"f AS (SELECT b.channel, %s::jsonb -> b.provider ->> 'currency' AS cur, "
		"(%s::jsonb -> b.provider ->> 'price')::numeric AS price, b.n, (SELECT count(*) FROM (SELECT "
		"x.message_id FROM results x WHERE x.message_id BETWEEN b.id * 4096 AND b.id * 4096 + 4095 AND "
		"x.status = 'sent' UNION SELECT e.message_id FROM events e WHERE e.message_id BETWEEN b.id * 4096 "
		"AND b.id * 4096 + 4095 AND e.name IN " RECEIPTS ") u) AS sent, "
		"(SELECT count(DISTINCT e.message_id) FROM events e WHERE e.message_id BETWEEN b.id * 4096 AND "
		"b.id * 4096 + 4095 AND e.name = 'message_delivered') AS delivered FROM b) "
		"SELECT channel, cur, sum(n), sum(sent), sum(delivered), (sum(price * sent))::text FROM f "
		"GROUP BY channel, cur ORDER BY channel, cur NULLS FIRST",
		batches_sql, pn, pn);
	const char **p = hr_calloc((size_t)nparams + 1, sizeof *p);
	for (int i = 0; i < nparams; i++)
		p[i] = params[i];
	p[nparams] = r->state ? r->state : "{}";
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db, sql, nparams + 1, p, &res, &err);
	hr_free(sql);
	hr_free(p);
	if (!ok) {
		api_problem_err(r, &err);
		return NULL;
	}
	json_t *out = json_array();
	for (int i = 0; i < PQntuples(res); i++) {
		json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "channel", PQgetvalue(res, i, 0), "messages",
				      (json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10), "sent",
				      (json_int_t)strtoll(PQgetvalue(res, i, 3), NULL, 10), "delivered",
				      (json_int_t)strtoll(PQgetvalue(res, i, 4), NULL, 10));
		json_object_set_new(o, "currency", PQgetisnull(res, i, 1) ? json_null() : json_string(PQgetvalue(res, i, 1)));
		json_object_set_new(o, "cost", PQgetisnull(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5)));
		json_array_append_new(out, o);
	}
	PQclear(res);
	return out;
}
