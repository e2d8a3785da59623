/*
 * messages.c -- transactional sends: POST /v1/messages and GET /v1/messages/{id}.
 *
 * POST: validate (messages_pre, before the tenant transaction: it also checks
 * the provider account in the control schema), then in the request's tenant
 * transaction: resolve the recipient, check the template version, replay or
 * refuse an Idempotency-Key seen before, check suppressions and consent,
 * enqueue a batch of one (hr_outbox_enqueue; the server NOTIFYs the scheduler
 * after the commit, api/notify.h) and answer 202 with the message id -- the
 * server commits before sending it.  The common send, to an address with no
 * fallback, does all of that in one statement sent with the COMMIT
 * (send_direct): two round trips in all with the one that opens the tenant
 * transaction, where the steps one at a time were five.
 *
 * Consent policy: a bulk-lane send needs a granted consent for (contact,
 * channel, purpose -- default "marketing") and an unsuppressed address.  A
 * transactional send follows the tenant's settings.transactional_policy:
 * "suppressions" (default: suppressed addresses are refused), "consent" (as
 * bulk) or "none".  A refused send is a 422 of type "blocked" saying why.
 *
 * GET shows the message's status -- its latest delivery receipt (delivered,
 * bounced for a hard bounce, complained; api/callbacks.c) when there is one,
 * else its result (sent, failed, bounced, dead) or queued -- and `events`:
 * every receipt and engagement event recorded for it (events.message_id).
 *
 * Quotas: a channel with a messages_per_day limit (common/limits.h) takes the
 * general way, and the send is counted after every check (api/quota.c).
 *
 * Idempotency: the key goes to outbox.idempotency_key (unique) and the SHA-256
 * of the canonical body (keys sorted) to outbox.request_hash.  Same key, same
 * body: the same 202 again (Idempotent-Replayed); same key, other body: 409.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "outbox.h"

typedef struct msg_in {
	const char *channel, *provider, *lane, *purpose, *to;
	int64_t template_id, template_version;
	char *content, *data;  /* JSON text or NULL */
	const char *ref_kind;  /* contact reference, or NULL */
	char ref[256];
	char hash[65];
	const char *idem;
	cascade_in *cascade;   /* "fallback" (cascade.c), or NULL */
} msg_in;

static void msg_free(void *p)
{
	msg_in *m = p;
	hr_free(m->content);
	hr_free(m->data);
	cascade_free(m->cascade);
	hr_free(m);
}

static bool channel_valid(const char *c)
{
	return !strcmp(c, "email") || !strcmp(c, "sms") || !strcmp(c, "messenger") || !strcmp(c, "push") ||
	       !strcmp(c, "webhook");
}

void messages_pre(api_req *r)
{
	static const char *const allowed[] = {"channel", "provider", "template", "content", "to", "contact",
					      "data", "lane", "purpose", "fallback", NULL};
	msg_in *m = hr_calloc(1, sizeof *m);
	r->state = m;
	r->state_free = msg_free;
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	jv v;
	jv_init(&v);
	hr_err err = {0};
	jv_only(&v, r->json, "", allowed);
	m->channel = jv_str(&v, r->json, "", "channel", true, 16);
	m->provider = jv_str(&v, r->json, "", "provider", true, 40);
	m->lane = jv_str(&v, r->json, "", "lane", false, 16);
	m->purpose = jv_str(&v, r->json, "", "purpose", false, 64);
	if (!m->lane)
		m->lane = "transactional";
	if (!m->purpose)
		m->purpose = "marketing";
	if (m->channel && !channel_valid(m->channel))
		jv_add(&v, "", "channel", "must be email, sms, messenger, push or webhook");
	if (strcmp(m->lane, "transactional") && strcmp(m->lane, "bulk"))
		jv_add(&v, "", "lane", "must be transactional or bulk");
	if (m->provider && !hr_slug_valid(m->provider, "provider", &err))
		jv_add(&v, "", "provider", "is not an account name");
	json_t *tpl = jv_obj(&v, r->json, "", "template", false);
	json_t *content = jv_obj(&v, r->json, "", "content", false);
	if (tpl) {
		static const char *const tallowed[] = {"id", "version", NULL};
		bool p1, p2;
		jv_only(&v, tpl, "/template", tallowed);
		jv_int(&v, tpl, "/template", "id", true, 1, INT64_MAX, &p1, &m->template_id);
		jv_int(&v, tpl, "/template", "version", true, 1, 1000000, &p2, &m->template_version);
	}
	if (!!tpl == !!content)
		jv_add(&v, "", tpl ? "content" : "template", "give exactly one of template and content");
	else if (content)
		m->content = api_dump(content);
	json_t *data = jv_obj(&v, r->json, "", "data", false);
	if (data)
		m->data = api_dump(data);
	m->to = jv_str(&v, r->json, "", "to", false, 512);
	json_t *ref = json_object_get(r->json, "contact"), *to = json_object_get(r->json, "to");
	bool has_ref = ref && !json_is_null(ref), has_to = to && !json_is_null(to);
	if (has_ref)
		contact_ref_parse(&v, ref, "/contact", cc, &m->ref_kind, m->ref);
	/* An invalid `to` or contact has its own error already; here only which of them is given. */
	if (!has_to && !has_ref)
		jv_add(&v, "", "to", "give to (an address) or contact");
	else if (has_to && has_ref)
		jv_add(&v, "", "to", "give to or contact, not both");
	m->idem = api_header(r, "Idempotency-Key");
	if (m->idem) {
		size_t n = strlen(m->idem);
		bool ok = n >= 1 && n <= 255;
		for (size_t i = 0; i < n && ok; i++)
			ok = m->idem[i] > 0x20 && m->idem[i] < 0x7f;
		if (!ok) {
			json_t *e = json_pack("{s:s, s:s}", "parameter", "Idempotency-Key", "detail",
					      "must be 1 to 255 printable ASCII characters");
			json_array_append_new(v.errors, e);
		}
	}
	m->cascade = cascade_parse(&v, r->json, m->channel ? m->channel : "", has_ref, m->purpose, cc);
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	/* The provider account must exist for this tenant and serve this channel (cached: api.h). */
	if (!api_provider_check(r, "", m->provider, m->channel))
		return;
	if (!cascade_pre_accounts(r, m->cascade))
		return;
	/* The request's fingerprint: canonical JSON (sorted keys) of the body. */
	char *canon = json_dumps(r->json, JSON_COMPACT | JSON_SORT_KEYS);
	hr_sha256_hex(canon, strlen(canon), m->hash);
	free(canon);
}

#define SUPP_SQL "SELECT reason FROM suppressions WHERE channel = $1 AND address = $2"

static void blocked(api_req *r, const char *pointer, const char *why)
{
	json_t *errors = json_array();
	json_array_append_new(errors, json_pack("{s:s, s:s}", "pointer", pointer, "detail", why));
	api_problem(r, 422, "blocked", "The message may not be sent", why, errors);
}

/* A send refused for want of consent: an unknown contact, or none (withdrawn) for the channel and purpose. */
static void refused_consent(api_req *r, const msg_in *m, const char *who, bool known, bool withdrawn)
{
	char why[160];
	if (!known)
		snprintf(why, sizeof why, "no consent: the address is not a known contact");
	else
		snprintf(why, sizeof why, "no consent for %s / %s%s", m->channel, m->purpose,
			 withdrawn ? " (withdrawn)" : "");
	blocked(r, who, why);
}

static void accepted(api_req *r, long long id, bool replay)
{
	snprintf(r->location, sizeof r->location, "/v1/messages/%lld", id);
	json_t *out = json_pack("{s:I, s:s}", "id", (json_int_t)id, "status", "queued");
	if (replay)
		json_object_set_new(out, "replayed", json_true());
	api_json(r, 202, out);
}

/* The address to send to: `to` normalised for email and SMS, else as given. */
static bool to_address(const msg_in *m, const char *cc, char addr[520], hr_err *err)
{
	addr[0] = '\0';
	if (!strcmp(m->channel, "email") ? !hr_email_normalize(m->to, addr, err)
	    : !strcmp(m->channel, "sms") ? !hr_phone_normalize(m->to, cc, addr, err) : false)
		return false;
	if (!addr[0])
		snprintf(addr, 520, "%s", m->to);
	return true;
}

/*
 * The common send -- an address in `to`, no fallback cascade -- as one
 * statement pipelined with the COMMIT (api_commit_prepared), so that a send is
 * two round trips in all with the one that opens the tenant transaction.
 * The statement looks up what the general path below asks for one query at a
 * time -- an earlier request with the Idempotency-Key, the template version,
 * the contact behind the address, its suppression and consent -- and
 * INSERTs the outbox row only when none of them refuses the send; the answer
 * is then decided from what it found, in the general path's order (a replay
 * first, then the template, the suppression, the consent).  A refused send
 * committed a transaction that wrote nothing.  $1 idempotency key, $2
 * address, $3 channel, $4 check suppressions, $5 check consent, $6 purpose,
 * $7/$8 template id/version, $9 lane, $10 content, $11 provider, $12 data
 * (one message's object), $13 request hash.
 */
#define SEND_SQL(contact)                                                                                      \
	"WITH rp AS (SELECT id * 4096 AS id, request_hash FROM outbox WHERE idempotency_key = $1::text), "     \
	"c AS (" contact "), "                                                                                 \
	"s AS (SELECT reason FROM suppressions WHERE $4::bool AND channel = $3 AND address = $2::text), "      \
	"k AS (SELECT granted FROM consents WHERE $5::bool AND contact_id = (SELECT id FROM c) "                \
	"AND channel = $3 AND purpose = $6), "                                                                 \
	"t AS (SELECT 1 FROM template_versions v JOIN templates t ON t.id = v.template_id "                    \
	"WHERE v.template_id = $7::bigint AND v.version = $8::int AND t.channel = $3), "                       \
	"ins AS (INSERT INTO outbox (channel, lane, template_id, template_version, content, provider, origin, " \
	"addresses, contact_ids, data, idempotency_key, request_hash) "                                        \
	"SELECT $3, $9, $7::bigint, $8::int, $10::jsonb, $11, 'api', ARRAY[$2::text], (SELECT ARRAY[id] FROM c), " \
	"CASE WHEN $12::jsonb IS NOT NULL THEN jsonb_build_array($12::jsonb) END, $1::text, "                  \
	"CASE WHEN $1::text IS NOT NULL THEN $13 END "                                                         \
	"WHERE NOT EXISTS (SELECT 1 FROM rp) AND ($7::bigint IS NULL OR EXISTS (SELECT 1 FROM t)) "            \
	"AND NOT EXISTS (SELECT 1 FROM s) AND (NOT $5::bool OR coalesce((SELECT granted FROM k), false)) "     \
	"RETURNING id) "                                                                                       \
	"SELECT (SELECT id FROM rp), (SELECT request_hash FROM rp), $7::bigint IS NULL OR EXISTS (SELECT 1 FROM t), " \
	"(SELECT reason FROM s), (SELECT id FROM c), (SELECT granted FROM k), (SELECT id * 4096 FROM ins)"

static const char *const send_sql[] = {
	SEND_SQL("SELECT coalesce(merged_into, id) AS id FROM contacts WHERE email = $2::text"),
	SEND_SQL("SELECT coalesce(merged_into, id) AS id FROM contacts WHERE phone = $2::text"),
	SEND_SQL("SELECT NULL::bigint AS id WHERE false"), /* push, webhook: contacts hold no such address */
};

/*
 * An email send that writes nothing -- consent is asked for and an
 * unknown address has none, so the INSERT's WHERE refuses -- but is parsed,
 * planned and run like any: the catalogs it reads are then in the
 * backend's caches (api_warm_prepared).
 */
bool api_messages_warm(PGconn *c, uint32_t *prepared, hr_err *err)
{
	const char *p[] = {NULL, "warm-up@herald.invalid", "email", "t", "t", "marketing", NULL, NULL,
			   "transactional", "{}", "warm-up", NULL, NULL};
	return api_warm_prepared(c, prepared, API_PREP_SEND, send_sql[0], 13, p, err);
}

static void send_direct(api_req *r, const msg_in *m, const char *addr, bool check_supp, bool check_consent)
{
	const char *const *sql = send_sql;
	int k = !strcmp(m->channel, "email") ? 0 : !strcmp(m->channel, "sms") || !strcmp(m->channel, "messenger") ? 1 : 2;
	char tid[32], ver[16];
	snprintf(tid, sizeof tid, "%lld", (long long)m->template_id);
	snprintf(ver, sizeof ver, "%lld", (long long)m->template_version);
	const char *p[] = {m->idem, addr, m->channel, check_supp ? "t" : "f", check_consent ? "t" : "f", m->purpose,
			   m->template_id ? tid : NULL, m->template_id ? ver : NULL, m->lane, m->content, m->provider,
			   m->data, m->hash};
	PGresult *res;
	hr_err err = {0};
	if (!api_commit_prepared(r, API_PREP_SEND + (unsigned)k, sql[k], 13, p, &res, &err)) {
		if (err.kind == HR_ERR_CONFLICT) /* a concurrent request with the same key won */
			api_problem(r, 409, "idempotency-conflict", "Idempotency-Key in use",
				    "a concurrent request used this Idempotency-Key; retry to get its answer", NULL);
		else
			api_problem_err(r, &err);
		return;
	}
	if (!PQgetisnull(res, 0, 0)) {
		if (strcmp(PQgetvalue(res, 0, 1), m->hash) == 0)
			accepted(r, strtoll(PQgetvalue(res, 0, 0), NULL, 10), true);
		else
			api_problem(r, 409, "idempotency-conflict", "Idempotency-Key reused",
				    "this Idempotency-Key was used with a different request", NULL);
	} else if (strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
		jv v;
		jv_init(&v);
		jv_add(&v, "/template", NULL, "no such template version for this channel");
		api_problem_invalid(r, v.errors);
	} else if (!PQgetisnull(res, 0, 3)) {
		char why[96];
		snprintf(why, sizeof why, "the address is suppressed (%s)", PQgetvalue(res, 0, 3));
		blocked(r, "/to", why);
	} else if (check_consent && (PQgetisnull(res, 0, 5) || strcmp(PQgetvalue(res, 0, 5), "t") != 0)) {
		refused_consent(r, m, "/to", !PQgetisnull(res, 0, 4), !PQgetisnull(res, 0, 5));
	} else if (PQgetisnull(res, 0, 6)) {
		api_problem(r, 500, "internal", "Internal error", "the send was neither refused nor written", NULL);
	} else {
		r->notify_outbox = true; /* after the commit (api/notify.h) */
		accepted(r, strtoll(PQgetvalue(res, 0, 6), NULL, 10), false);
	}
	PQclear(res);
}

void messages_post(api_req *r)
{
	msg_in *m = r->state;
	hr_err err = {0};
	PGresult *res = NULL;
	char addr[520] = "", cid[32] = "";
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	bool email = !strcmp(m->channel, "email"), phone = !strcmp(m->channel, "sms") || !strcmp(m->channel, "messenger");
	const char *policy = json_string_value(json_object_get(r->tenant_settings, "transactional_policy"));
	bool bulk = !strcmp(m->lane, "bulk");
	bool check_supp = bulk || !policy || strcmp(policy, "none") != 0;
	bool check_consent = bulk || (policy && !strcmp(policy, "consent"));
	PGresult *supp = NULL; /* the suppression lookup, when it went with the contact's */
	/* The common send in one statement; an invalid `to` goes the general way (a replay comes first). */
	hr_err nerr = {0};
	/* A channel with a daily limit goes the general way: a replay must come before the count. */
	int ch = hr_limit_channel(m->channel);
	bool counted = ch >= 0 && r->limits.per_day[ch] >= 0;
	if (m->to && !m->cascade && !counted && to_address(m, cc, addr, &nerr)) {
		send_direct(r, m, addr, check_supp, check_consent);
		return;
	}
	/* Idempotency first: a replay must not depend on today's consent. */
	if (m->idem) {
		const char *pk[] = {m->idem};
		if (!hr_db_query(r->db, "SELECT id * 4096, request_hash FROM outbox WHERE idempotency_key = $1", 1, pk,
				 &res, &err))
			goto fail;
		if (PQntuples(res) == 1) {
			bool same = strcmp(PQgetvalue(res, 0, 1), m->hash) == 0;
			long long id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
			PQclear(res);
			if (same)
				accepted(r, id, true);
			else
				api_problem(r, 409, "idempotency-conflict", "Idempotency-Key reused",
					    "this Idempotency-Key was used with a different request", NULL);
			return;
		}
		PQclear(res);
		res = NULL;
	}
	if (m->to) {
		if (!to_address(m, cc, addr, &err)) {
			jv v;
			jv_init(&v);
			jv_add(&v, "", "to", "%s", err.msg);
			api_problem_invalid(r, v.errors);
			return;
		}
		/* The contact behind the address, if any (for consent), and the
		 * address's suppression: one round trip (hr_db_pipeline). */
		if (email || phone) {
			const char *pa[] = {addr}, *ps[] = {m->channel, addr};
			hr_db_stmt q[] = {
				{email ? "SELECT coalesce(merged_into, id) FROM contacts WHERE email = $1"
				       : "SELECT coalesce(merged_into, id) FROM contacts WHERE phone = $1",
				 1, pa, NULL},
				{SUPP_SQL, 2, ps, NULL},
			};
			if (!hr_db_pipeline(r->db, q, check_supp ? 2 : 1, &err))
				goto fail;
			res = q[0].res;
			supp = q[1].res;
			if (PQntuples(res) == 1)
				snprintf(cid, sizeof cid, "%s", PQgetvalue(res, 0, 0));
			PQclear(res);
			res = NULL;
		}
	} else {
		static const char *const q[] = {"id", "external_id", "email", "phone"};
		int k = 0;
		while (strcmp(q[k], m->ref_kind))
			k++;
		char *sql = hr_sprintf("SELECT s.id, s.email, s.phone FROM contacts c JOIN contacts s ON "
				       "s.id = coalesce(c.merged_into, c.id) WHERE c.%s = $1%s",
				       q[k], k == 0 ? "::bigint" : "");
		const char *pc[] = {m->ref};
		bool ok = hr_db_query(r->db, sql, 1, pc, &res, &err);
		hr_free(sql);
		if (!ok)
			goto fail;
		if (PQntuples(res) != 1) {
			PQclear(res);
			jv v;
			jv_init(&v);
			jv_add(&v, "/contact", NULL, "no such contact");
			api_problem_invalid(r, v.errors);
			return;
		}
		snprintf(cid, sizeof cid, "%s", PQgetvalue(res, 0, 0));
		int col = email ? 1 : phone ? 2 : -1;
		if (col > 0 && !PQgetisnull(res, 0, col))
			snprintf(addr, sizeof addr, "%s", PQgetvalue(res, 0, col));
		PQclear(res);
		res = NULL;
		if (!addr[0]) {
			blocked(r, "/contact", col > 0 ? "the contact has no address for this channel"
						       : "give `to` for this channel: contacts hold no such address");
			return;
		}
	}
	if (m->template_id) {
		char tid[32], ver[16];
		snprintf(tid, sizeof tid, "%lld", (long long)m->template_id);
		snprintf(ver, sizeof ver, "%lld", (long long)m->template_version);
		const char *pt[] = {tid, ver, m->channel};
		if (!hr_db_query(r->db,
				 "SELECT 1 FROM template_versions v JOIN templates t ON t.id = v.template_id "
				 "WHERE v.template_id = $1 AND v.version = $2 AND t.channel = $3",
				 3, pt, &res, &err))
			goto fail;
		bool found = PQntuples(res) == 1;
		PQclear(res);
		res = NULL;
		if (!found) {
			jv v;
			jv_init(&v);
			jv_add(&v, "/template", NULL, "no such template version for this channel");
			api_problem_invalid(r, v.errors);
			PQclear(supp);
			return;
		}
	}
	/* Suppressions (fetched already with the contact for a `to`) and consent. */
	const char *who = m->to ? "/to" : "/contact";
	if (check_supp) {
		const char *ps[] = {m->channel, addr};
		if (supp)
			res = supp, supp = NULL;
		else if (!hr_db_query(r->db, SUPP_SQL, 2, ps, &res, &err))
			goto fail;
		if (PQntuples(res) == 1) {
			char why[96];
			snprintf(why, sizeof why, "the address is suppressed (%s)", PQgetvalue(res, 0, 0));
			PQclear(res);
			blocked(r, who, why);
			return;
		}
		PQclear(res);
		res = NULL;
	}
	if (check_consent) {
		if (!cid[0]) {
			refused_consent(r, m, who, false, false);
			return;
		}
		const char *pc[] = {cid, m->channel, m->purpose};
		if (!hr_db_query(r->db, "SELECT granted FROM consents WHERE contact_id = $1 AND channel = $2 AND purpose = $3",
				 3, pc, &res, &err))
			goto fail;
		bool granted = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
		bool withdrawn = PQntuples(res) == 1 && !granted;
		PQclear(res);
		res = NULL;
		if (!granted) {
			refused_consent(r, m, who, true, withdrawn);
			return;
		}
	}
	/* Counted last: a send refused above counts nothing (and its transaction is rolled back). */
	if (!api_quota_send(r, m->channel))
		return;
	if (!cascade_prepare(r, m->cascade, cid))
		return;
	const char *addrs[] = {addr};
	int64_t cids[] = {cid[0] ? strtoll(cid, NULL, 10) : 0};
	const char *datas[] = {m->data};
	hr_outbox_batch b = {.channel = m->channel, .lane = m->lane, .template_id = m->template_id,
			     .template_version = (int)m->template_version, .content = m->content,
			     .provider = m->provider, .origin = "api", .idempotency_key = m->idem, .n = 1,
			     .no_notify = true,
			     .addresses = addrs, .contact_ids = cid[0] ? cids : NULL, .data = m->data ? datas : NULL};
	int64_t id;
	if (!hr_outbox_enqueue(r->db, r->tenant.id, &b, &id, &err))
		goto fail;
	if (m->idem) {
		char batch[32];
		snprintf(batch, sizeof batch, "%lld", (long long)(id / HR_OUTBOX_MAX));
		const char *ph[] = {m->hash, batch};
		if (!hr_db_query(r->db, "UPDATE outbox SET request_hash = $1 WHERE id = $2", 2, ph, NULL, &err))
			goto fail;
	}
	if (!cascade_attach(r, m->cascade, id))
		return;
	r->notify_outbox = true; /* after the commit (api/notify.h) */
	accepted(r, (long long)id, false);
	return;
fail:
	PQclear(res);
	PQclear(supp);
	if (err.kind == HR_ERR_CONFLICT) /* a concurrent request with the same key won */
		api_problem(r, 409, "idempotency-conflict", "Idempotency-Key in use",
			    "a concurrent request used this Idempotency-Key; retry to get its answer", NULL);
	else
		api_problem_err(r, &err);
}

void messages_get(api_req *r)
{
	const char *s = r->param[0];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		api_problem(r, 404, "not-found", "Not found", "no such message", NULL);
		return;
	}
	long long id = strtoll(s, NULL, 10);
	char batch[32], idx[16];
	snprintf(batch, sizeof batch, "%lld", id / HR_OUTBOX_MAX);
	snprintf(idx, sizeof idx, "%lld", id % HR_OUTBOX_MAX);
	const char *p[] = {s, batch, idx};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT jsonb_build_object('id', $1::bigint, 'status', coalesce((SELECT CASE e.name "
			 "WHEN 'message_delivered' THEN 'delivered' WHEN 'message_bounced' THEN 'bounced' "
			 "ELSE 'complained' END FROM events e WHERE e.message_id = $1::bigint AND (e.name IN "
			 "('message_delivered', 'message_complained') OR (e.name = 'message_bounced' AND "
			 "e.properties->>'bounce' = 'hard')) ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1), "
			 "r.status, 'queued'), 'events', coalesce((SELECT jsonb_agg(jsonb_build_object('id', e.id, "
			 "'type', e.name, 'at', e.occurred_at, 'contact_id', e.contact_id, 'detail', "
			 "e.properties - 'message_id' - 'channel') ORDER BY e.occurred_at, e.id) FROM events e "
			 "WHERE e.message_id = $1::bigint), '[]'::jsonb), "
			 "'channel', o.channel, 'lane', o.lane, 'provider', o.provider, "
			 "'to', o.addresses[$3::int + 1], 'attempts', coalesce(r.attempts, 0), "
			 "'provider_id', r.provider_id, 'reason', r.reason, 'created_at', o.created_at, "
			 "'due_at', o.due_at, 'finished_at', r.at)::text "
			 "FROM outbox o LEFT JOIN results r ON r.message_id = $1::bigint "
			 "WHERE o.id = $2::bigint AND cardinality(o.addresses) > $3::int",
			 3, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0) {
		api_problem(r, 404, "not-found", "Not found", "no such message", NULL);
	} else {
		json_t *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
		if (cascade_describe(r, id, out)) /* cost, and the steps of its cascade */
			api_json(r, 200, out);
		else
			json_decref(out);
	}
	PQclear(res);
}
