/*
 * events.c -- POST /v1/events: one event, or {"events": [...]} (up to
 * API_MAX_EVENTS).
 *
 * A batch is validated whole before anything is written: every bad item is
 * reported by its pointer (/events/3/occurred_at) in one 422.  Contact
 * references of the whole batch are resolved with one query, and the events
 * are inserted with the COMMIT: a batch of EVENTS_COPY_MIN or more by COPY
 * (copy_commit: two round trips after the one that opens the tenant
 * transaction), a smaller one by one prepared statement over unnest() of
 * arrays (api_commit_prepared: one round trip); an event naming a contact
 * adds one for the lookup.  After the commit the server NOTIFYs
 * `herald_events` with the tenant id (api/notify.h: not in the transaction,
 * where the NOTIFY lock serialised every batch's commit): the rule engine
 * hears of committed events at once and never polls a tenant that has none.
 *
 * The common batch (anonymous events: no contact reference) is read without
 * a JSON tree by events_scan, the route's scan hook (eventscan.h); any other
 * body, and every body with something wrong, is parsed and validated by
 * jansson and parse_item as before.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "copytext.h"
#include "db.h"
#include "eventscan.h"

#define API_MAX_EVENTS EVSCAN_MAX_EVENTS
/* From this many events a batch goes in by COPY (copy_commit), below by the
 * prepared INSERT: one round trip more, less work per event (docs/benchmarks.md). */
#define EVENTS_COPY_MIN 32

/* A growing Postgres array literal: {"a","b",NULL}. */
typedef struct pga {
	char *p;
	size_t len, cap;
} pga;

static void pga_add(pga *a, const char *s)
{
	size_t need = a->len + (s ? 2 * strlen(s) : 4) + 8;
	if (need > a->cap) {
		a->cap = need * 2;
		a->p = hr_realloc(a->p, a->cap);
	}
	char *o = a->p + a->len;
	*o++ = a->len ? ',' : '{';
	if (!s) {
		memcpy(o, "NULL", 4);
		o += 4;
	} else {
		*o++ = '"';
		for (; *s; s++) {
			if (*s == '"' || *s == '\\')
				*o++ = '\\';
			*o++ = *s;
		}
		*o++ = '"';
	}
	a->len = (size_t)(o - a->p);
	*o = '\0';
}

static char *pga_end(pga *a)
{
	if (!a->len) {
		a->p = hr_realloc(a->p, 3);
		memcpy(a->p, "{}", 3);
		return a->p;
	}
	/* pga_add always leaves room for two more bytes. */
	a->p[a->len++] = '}';
	a->p[a->len] = '\0';
	return a->p;
}

typedef struct item {
	const char *name;
	const char *kind; /* contact ref kind, NULL = anonymous */
	char ref[256];
	char *props;      /* JSON text */
	const char *at;   /* NULL = now */
	const char *contact; /* the resolved contact id, NULL = none */
} item;

static void parse_item(jv *v, json_t *o, const char *base, const char *cc, item *it)
{
	static const char *const allowed[] = {"name", "contact", "properties", "occurred_at", NULL};
	if (!json_is_object(o)) {
		jv_add(v, base, NULL, "must be an object");
		return;
	}
	jv_only(v, o, base, allowed);
	it->name = jv_str(v, o, base, "name", true, 128);
	json_t *ref = json_object_get(o, "contact");
	if (ref && !json_is_null(ref)) {
		char *b = jv_ptr(base, "contact");
		contact_ref_parse(v, ref, b, cc, &it->kind, it->ref);
		hr_free(b);
	}
	json_t *props = jv_obj(v, o, base, "properties", false);
	it->props = props ? api_dump(props) : NULL;
	it->at = jv_str(v, o, base, "occurred_at", false, 40);
	if (it->at && !jv_rfc3339(it->at)) {
		jv_add(v, base, "occurred_at", "must be an RFC 3339 date-time, e.g. 2026-01-02T03:04:05Z");
		it->at = NULL;
	}
}

/*
 * A batch by COPY, and the COMMIT, in one simple query -- COPY cannot go in a
 * pipeline, and a simple query goes on with its next statement once the rows
 * are in.  Round trip one: the clock (when an event has no occurred_at) and
 * the server's request for rows; round trip two: the rows, answered by the
 * COPY's and the COMMIT's results.  COPY inserts the rows in groups
 * (heap_multi_insert) and parses no arrays.  An error in the COPY skips the
 * COMMIT and leaves the transaction aborted (the server rolls it back).  The
 * clock goes through to_json: ISO 8601 whatever the session's DateStyle.
 */
static bool copy_commit(api_req *r, const item *it, size_t n, hr_err *err)
{
#define COPY_SQL "COPY events (contact_id, name, properties, occurred_at) FROM STDIN; COMMIT"
	PGconn *c = r->db;
	bool need_now = false;
	for (size_t i = 0; i < n; i++)
		need_now |= !it[i].at;
	if (PQsendQuery(c, need_now ? "SELECT to_json(herald_clock.now()) #>> '{}'; " COPY_SQL : COPY_SQL) != 1)
		return hr_db_fail(c, NULL, "events: COPY", err);
#undef COPY_SQL
	char *now = NULL;
	hr_copybuf rows = {0};
	bool ok = true, asked = false;
	int done = 0; /* commands completed after the rows: the COPY, the COMMIT */
	PGresult *x;
	while ((x = PQgetResult(c))) {
		ExecStatusType st = PQresultStatus(x);
		if (st == PGRES_TUPLES_OK && !asked && !now && PQntuples(x) == 1) {
			now = hr_strdup(PQgetvalue(x, 0, 0));
		} else if (st == PGRES_COPY_IN && !asked) {
			asked = true;
			for (size_t i = 0; ok && i < n; i++) {
				hr_copy_field(&rows, it[i].contact, false);
				hr_copy_field(&rows, it[i].name, false);
				hr_copy_field(&rows, it[i].props ? it[i].props : "{}", false);
				hr_copy_field(&rows, it[i].at ? it[i].at : now, true);
				if (!it[i].at && !now)
					ok = hr_fail(err, HR_ERR_DB, NULL, "events: COPY: no clock");
			}
			/* A failed put leaves the connection broken: PQgetResult then ends. */
			if (ok && PQputCopyData(c, rows.p, (int)rows.len) != 1)
				ok = hr_db_fail(c, NULL, "events: COPY", err);
			if (PQputCopyEnd(c, ok ? NULL : "events: COPY abandoned") != 1 && ok)
				ok = hr_db_fail(c, NULL, "events: COPY", err);
		} else if (st == PGRES_COMMAND_OK && asked) {
			done++;
		} else if (ok) {
			ok = hr_db_fail(c, x, "events: COPY", err);
		}
		PQclear(x);
	}
	if (ok && done != 2)
		ok = hr_fail(err, HR_ERR_DB, NULL, "events: COPY: %d of 2 commands completed", done);
	hr_free(now);
	hr_copy_free(&rows);
	if (ok)
		r->committed = true;
	return ok;
}

static void scan_free(void *p)
{
	evscan_free(p);
	hr_free(p);
}

bool events_scan(api_req *r, const char *buf, size_t len)
{
	evscan *s = hr_malloc(sizeof *s);
	s->text = (hr_sbuf){0};
	if (!evscan_read(s, buf, len)) {
		scan_free(s);
		return false;
	}
	r->state = s;
	r->state_free = scan_free;
	return true;
}

/* The events events_scan read, as items (pointing into its text). */
static item *scanned_items(const evscan *s)
{
	item *it = hr_calloc(s->n, sizeof *it);
	for (size_t i = 0; i < s->n; i++) {
		const evscan_event *e = &s->ev[i];
		it[i].name = s->text.p + e->name;
		it[i].props = e->props == EVSCAN_NONE ? NULL : s->text.p + e->props;
		it[i].at = e->at == EVSCAN_NONE ? NULL : s->text.p + e->at;
	}
	return it;
}

/* The events of a body jansson read, validated (bad ones reported in v); NULL when the
 * body is no list of events at all (r then holds the answer). */
static item *parsed_items(api_req *r, jv *v, size_t *n)
{
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	json_t *list = json_object_get(r->json, "events");
	bool batch = list != NULL;
	*n = 1;
	if (batch) {
		static const char *const allowed[] = {"events", NULL};
		jv_only(v, r->json, "", allowed);
		*n = json_array_size(list);
		if (!json_is_array(list) || *n < 1 || *n > API_MAX_EVENTS)
			jv_add(v, "", "events", "must be an array of 1 to %d events", API_MAX_EVENTS);
		if (!jv_ok(v)) {
			api_problem_invalid(r, v->errors);
			v->errors = NULL;
			return NULL;
		}
	}
	item *it = hr_calloc(*n, sizeof *it);
	for (size_t i = 0; i < *n; i++) {
		char base[32];
		snprintf(base, sizeof base, "/events/%zu", i);
		parse_item(v, batch ? json_array_get(list, i) : r->json, batch ? base : "", cc, &it[i]);
	}
	return it;
}

void events_post(api_req *r)
{
	const evscan *scanned = r->state; /* only events_scan sets it on this route */
	bool batch = scanned || json_object_get(r->json, "events");
	jv v;
	jv_init(&v);
	size_t n = scanned ? scanned->n : 0;
	item *it = scanned ? scanned_items(scanned) : parsed_items(r, &v, &n);
	if (!it) {
		jv_free(&v);
		return;
	}
	pga kinds = {0}, refs = {0}, names = {0}, props = {0}, ats = {0}, ids = {0};
	char *ka = NULL, *ra = NULL;
	PGresult *res = NULL, *ins = NULL; /* res: the contacts, which it[].contact points into */
	hr_err err = {0};
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		v.errors = NULL;
		goto done;
	}
	/* Resolve every contact reference at once (no round trip for an anonymous batch). */
	bool refs_any = false;
	for (size_t i = 0; i < n; i++) {
		pga_add(&kinds, it[i].kind ? it[i].kind : "none");
		pga_add(&refs, it[i].kind ? it[i].ref : "");
		refs_any |= it[i].kind != NULL;
	}
	ka = pga_end(&kinds);
	ra = pga_end(&refs);
	const char *pr[] = {ka, ra};
	if (refs_any && !hr_db_query(r->db,
			 "SELECT r.ord, x.id FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(kind, val, ord) "
			 "LEFT JOIN LATERAL ("
			 "SELECT coalesce(c.merged_into, c.id) AS id FROM contacts c WHERE r.kind = 'id' "
			 "AND c.id = CASE WHEN r.kind = 'id' THEN r.val::bigint END "
			 "UNION ALL SELECT coalesce(c.merged_into, c.id) FROM contacts c "
			 "WHERE r.kind = 'external_id' AND c.external_id = r.val "
			 "UNION ALL SELECT coalesce(c.merged_into, c.id) FROM contacts c WHERE r.kind = 'email' AND c.email = r.val "
			 "UNION ALL SELECT coalesce(c.merged_into, c.id) FROM contacts c WHERE r.kind = 'phone' AND c.phone = r.val "
			 "LIMIT 1) x ON true ORDER BY r.ord",
			 2, pr, &res, &err))
		goto fail;
	for (size_t i = 0; i < n; i++) {
		bool missing = it[i].kind && PQgetisnull(res, (int)i, 1); /* it[i].kind: res exists */
		if (missing) {
			char base[32];
			snprintf(base, sizeof base, "/events/%zu", i);
			jv_add(&v, batch ? base : "", "contact", "no such contact");
		}
		it[i].contact = it[i].kind && !missing ? PQgetvalue(res, (int)i, 1) : NULL;
	}
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		v.errors = NULL;
		goto done;
	}
	if (n >= EVENTS_COPY_MIN) {
		if (!copy_commit(r, it, n, &err))
			goto fail;
	} else {
		for (size_t i = 0; i < n; i++) {
			pga_add(&ids, it[i].contact);
			pga_add(&names, it[i].name);
			pga_add(&props, it[i].props ? it[i].props : "{}");
			pga_add(&ats, it[i].at);
		}
		const char *pi[] = {pga_end(&ids), pga_end(&names), pga_end(&props), pga_end(&ats)};
		/* The INSERT (prepared: its planning was ~10 % of PostgreSQL's work per batch) and
		 * the COMMIT in one round trip; the 202 comes after both. */
		if (!api_commit_prepared(r, API_PREP_EVENTS,
					 "INSERT INTO events (contact_id, name, properties, occurred_at) "
					 "SELECT c, nm, p, coalesce(at, herald_clock.now()) FROM unnest($1::bigint[], "
					 "$2::text[], $3::jsonb[], $4::timestamptz[]) AS e(c, nm, p, at)",
					 4, pi, &ins, &err))
			goto fail;
	}
	/* The server wakes the rule engine (scheduler/rules.c) after the commit (api/notify.h). */
	r->notify_events = true;
	api_json(r, 202, json_pack("{s:I}", "accepted", (json_int_t)n));
	goto done;
fail:
	api_problem_err(r, &err);
done:
	PQclear(res);
	PQclear(ins);
	for (size_t i = 0; i < n && !scanned; i++)
		hr_free(it[i].props); /* api_dump's; a scanned batch's are in its text */
	hr_free(it);
	hr_free(ids.p);
	hr_free(names.p);
	hr_free(props.p);
	hr_free(ats.p);
	hr_free(kinds.p);
	hr_free(refs.p);
	jv_free(&v);
}
