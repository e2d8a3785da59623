/*
 * reports.c -- what marketers read: message figures per template, campaign
 * (and run), rule (and step) and period; figures per custom dimension of the
 * contact; repeat purchases (the MAUDAU metrics).  docs/reports.md says what
 * each figure means for marketers; this comment says how it is computed.
 *
 *   GET /v1/reports/messages             every message of the period (by= template|channel|origin)
 *   GET /v1/reports/templates/{id}       the messages of one template
 *   GET /v1/reports/campaigns/{id}       the runs of one campaign that started in the period, per run
 *   GET /v1/reports/rules/{id}           one rule's messages, per step; contacts entering the rule
 *   GET /v1/reports/dimensions           per value of a contacts.attributes key (cursor pages)
 *   GET /v1/reports/repeat-purchases     first-time buyers and their second purchase
 *
 * Reports are read-only queries over the tenant's tables; nothing is
 * precomputed.  They stay fast because they are set-based over the outbox's
 * batches rather than over messages: a batch of up to 4,096 messages has the
 * message ids [id * 4096, id * 4096 + 4095], so the results and the events of
 * a batch are one range scan of results' primary key and of the
 * events_message index each, and a million-message campaign is ~250 such
 * scans.  Every figure is computed per batch first (distinct counts per
 * message cannot double count across batches: a message is in one batch),
 * and the per-batch figures are then summed by GROUPING SETS into the total,
 * the breakdown (run, step, template, ...) and the periods in one statement.
 *
 * Which messages: those due in the period ([from, to), by herald time: the
 * batch's herald_at, or due_at for API sends), except for campaigns, whose
 * report covers the runs that started in the period (with all their
 * messages, also those a spread run sends after `to`).  Events about those
 * messages count whenever they happened: an open on 2 March of a message of
 * 28 February is February's.
 *
 * Conversions: an order event (the `order_event` parameter, default `order`)
 * of a contact within `window_days` (default 7) after one of the contact's
 * email_clicked events.  Each order is attributed once, to the contact's last
 * click at or before it (over all of the tenant's messages), and counts for
 * the report holding that click's message; revenue is the sum of those
 * orders' `revenue` property (a JSON number, or a string holding a decimal).
 *
 * Parameters are validated before any SQL runs (a bad one is 422 naming it,
 * every bad one listed); values reach SQL only as bound parameters, also the
 * dimension key and event names.  Result sizes are bounded: a period is at
 * most 366 days (so at most 366 day rows), breakdowns are capped at
 * BREAKDOWN_MAX rows (`truncated` says so), the dimension report is paged by
 * cursor.  Another tenant's ids answer 404 like missing ones (the queries run
 * in the tenant's own schema).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "alloc.h"
#include "api.h"
#include "db.h"

#define BREAKDOWN_MAX 1000 /* rows of a breakdown (runs, templates, ...) */
#define PERIOD_MAX_DAYS 366

/* The time a batch's messages belong to: herald time for campaigns and rules, due time for API sends. */
#define MSG_AT "coalesce(o.herald_at, o.due_at)"

/* An order's revenue: a JSON number, or a string that is a plain decimal; anything else is 0. */
#define REVENUE(p)                                                                                         \
	"CASE WHEN jsonb_typeof(" p " -> 'revenue') = 'number' THEN (" p " ->> 'revenue')::numeric "        \
	"WHEN jsonb_typeof(" p " -> 'revenue') = 'string' AND (" p " ->> 'revenue') ~ "                     \
	"'^-?[0-9]{1,15}([.][0-9]{1,6})?$' THEN (" p " ->> 'revenue')::numeric ELSE 0 END"

/* ---- parameters ---------------------------------------------------------------- */

enum {
	P_PERIOD = 1 << 0,   /* from, to, time_zone */
	P_GROUPING = 1 << 1, /* grouping */
	P_EVENTS = 1 << 2,   /* order_event, window_days, reply_event */
	P_BY = 1 << 3,       /* by */
	P_DIMENSION = 1 << 4,/* dimension, cursor, limit */
	P_REPEAT = 1 << 5,   /* within_days */
};

typedef struct rq {
	json_t *errors;       /* [{parameter, detail}] */
	char tz[72];          /* IANA zone: time_zone, the tenant's, or UTC */
	char from[32], to[32];/* epoch seconds (text, for SQL) */
	char from_txt[72], to_txt[72]; /* as given, decoded */
	char grouping[8];     /* "" or day / week / month */
	char order_event[136], reply_event[136];
	char window[8];       /* days */
	char by[12];          /* "" or template / channel / origin */
	char dimension[72];
	char cursor[520];     /* decoded: the last value of the previous page */
	bool cursor_null;     /* the previous page ended at the "no value" row */
	bool has_cursor;
	int limit;
	char within[8];       /* days (repeat purchases) */
} rq;

static void bad(rq *q, const char *name, const char *detail)
{
	json_array_append_new(q->errors, json_pack("{s:s, s:s}", "parameter", name, "detail", detail));
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * A query argument, percent-decoded (the server keeps URLs raw, see
 * server.c); false when absent.  A decoded NUL or a value longer than the
 * buffer is an error of the parameter.
 */
static bool arg(api_req *r, rq *q, const char *name, char *out, size_t size)
{
	const char *s = api_query(r, name);
	if (!s)
		return false;
	size_t o = 0;
	for (const char *p = s; *p; p++) {
		int c = (unsigned char)*p;
		if (c == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
			c = hexval(p[1]) * 16 + hexval(p[2]);
			p += 2;
		}
		if (c == 0 || o + 1 >= size) {
			bad(q, name, c == 0 ? "must not contain NUL" : "is too long");
			out[0] = '\0';
			return false;
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return true;
}

/* Copy a validated string (it fits: the caller checked its length). */
static void put(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);
	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* A name of an event: 1-128 bytes, valid UTF-8 (checked by SQL's text input), no control characters. */
static bool event_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 128)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	/* UTF-8 well-formedness: json_string refuses invalid UTF-8. */
	json_t *j = json_string(s);
	bool ok = j != NULL;
	json_decref(j);
	return ok;
}

/* A contacts.attributes key: a letter or _, then letters, digits, _ . -; at most 64. */
static bool dimension_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 64 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

static bool digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* A real calendar day (Y-M-D, year 1900-9999). */
static bool day_ok(int y, int m, int d)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (y < 1900 || y > 9999 || m < 1 || m > 12 || d < 1)
		return false;
	int max = mdays[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
	return d <= max;
}

/* 'd' for YYYY-MM-DD, 't' for an RFC 3339 date-time, 0 for neither. */
static char time_kind(char *s)
{
	size_t n = strlen(s);
	if (n == 10 && digits(s, 4) && s[4] == '-' && digits(s + 5, 2) && s[7] == '-' && digits(s + 8, 2))
		return day_ok(atoi(s), atoi(s + 5), atoi(s + 8)) ? 'd' : 0;
	/* '+' arrives as ' ' (form encoding) when the client did not escape it */
	if (n >= 25 && s[n - 6] == ' ')
		s[n - 6] = '+';
	if (!jv_rfc3339(s))
		return 0;
	return day_ok(atoi(s), atoi(s + 5), atoi(s + 8)) ? 't' : 0;
}

/* Every query argument must be one this report knows. */
typedef struct known_ctx {
	rq *q;
	const char *const *names;
} known_ctx;

static enum MHD_Result known_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	(void)value;
	known_ctx *k = cls;
	for (const char *const *n = k->names; *n; n++)
		if (!strcmp(*n, key))
			return MHD_YES;
	json_t *j = json_string(key);
	if (j && strlen(key) <= 64)
		bad(k->q, key, "is not a parameter of this report");
	else
		bad(k->q, "?", "an unknown parameter");
	json_decref(j);
	return MHD_YES;
}

/*
 * Parse the parameters `flags` allows into q; false (with a 422 naming every
 * bad parameter, or a 5xx) when they are not valid.
 */
static bool rq_parse(api_req *r, rq *q, unsigned flags)
{
	memset(q, 0, sizeof *q);
	q->errors = json_array();
	const char *names[24];
	int nn = 0;
	if (flags & P_PERIOD)
		names[nn++] = "from", names[nn++] = "to", names[nn++] = "time_zone";
	if (flags & P_GROUPING)
		names[nn++] = "grouping";
	if (flags & P_EVENTS)
		names[nn++] = "order_event", names[nn++] = "window_days", names[nn++] = "reply_event";
	if (flags & P_BY)
		names[nn++] = "by";
	if (flags & P_DIMENSION)
		names[nn++] = "dimension", names[nn++] = "cursor", names[nn++] = "limit", names[nn++] = "order_event";
	if (flags & P_REPEAT)
		names[nn++] = "order_event", names[nn++] = "within_days";
	names[nn] = NULL;
	known_ctx kc = {q, names};
	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, known_arg, &kc);

	/* time zone: the parameter, the tenant's setting, UTC */
	const char *tz = json_string_value(json_object_get(r->tenant_settings, "time_zone"));
	snprintf(q->tz, sizeof q->tz, "%s", tz && hr_tz_valid(tz) ? tz : "UTC");
	char buf[600];
	if (arg(r, q, "time_zone", buf, 72)) {
		if (hr_tz_valid(buf))
			put(q->tz, sizeof q->tz, buf);
		else
			bad(q, "time_zone", "is not a known IANA time zone (e.g. Europe/Berlin)");
	}
	char fk = 0, tk = 0;
	if (flags & P_PERIOD) {
		if (arg(r, q, "from", q->from_txt, sizeof q->from_txt) && !(fk = time_kind(q->from_txt)))
			bad(q, "from", "must be a date (2026-03-01) or an RFC 3339 date-time (2026-03-01T00:00:00+02:00)");
		if (arg(r, q, "to", q->to_txt, sizeof q->to_txt) && !(tk = time_kind(q->to_txt)))
			bad(q, "to", "must be a date (2026-04-01) or an RFC 3339 date-time (2026-04-01T00:00:00+02:00)");
	}
	if (arg(r, q, "grouping", buf, sizeof buf)) {
		if (strcmp(buf, "day") && strcmp(buf, "week") && strcmp(buf, "month"))
			bad(q, "grouping", "must be day, week or month");
		else
			put(q->grouping, sizeof q->grouping, buf);
	}
	snprintf(q->order_event, sizeof q->order_event, "order");
	if (arg(r, q, "order_event", buf, sizeof buf)) {
		if (event_name_ok(buf))
			put(q->order_event, sizeof q->order_event, buf);
		else
			bad(q, "order_event", "must be an event name of 1-128 characters");
	}
	snprintf(q->reply_event, sizeof q->reply_event, "message_replied");
	if (arg(r, q, "reply_event", buf, sizeof buf)) {
		if (event_name_ok(buf))
			put(q->reply_event, sizeof q->reply_event, buf);
		else
			bad(q, "reply_event", "must be an event name of 1-128 characters");
	}
	snprintf(q->window, sizeof q->window, "7");
	if (arg(r, q, "window_days", buf, sizeof buf)) {
		size_t n = strlen(buf);
		int d = n >= 1 && n <= 2 && digits(buf, (int)n) ? atoi(buf) : 0;
		if (d < 1 || d > 90)
			bad(q, "window_days", "must be a whole number of days, 1 to 90");
		else
			snprintf(q->window, sizeof q->window, "%d", d);
	}
	snprintf(q->within, sizeof q->within, "30");
	if (arg(r, q, "within_days", buf, sizeof buf)) {
		size_t n = strlen(buf);
		int d = n >= 1 && n <= 3 && digits(buf, (int)n) ? atoi(buf) : 0;
		if (d < 1 || d > 365)
			bad(q, "within_days", "must be a whole number of days, 1 to 365");
		else
			snprintf(q->within, sizeof q->within, "%d", d);
	}
	if (arg(r, q, "by", buf, sizeof buf)) {
		if (strcmp(buf, "template") && strcmp(buf, "channel") && strcmp(buf, "origin"))
			bad(q, "by", "must be template, channel or origin");
		else
			put(q->by, sizeof q->by, buf);
	}
	if (flags & P_DIMENSION) {
		if (!arg(r, q, "dimension", q->dimension, sizeof q->dimension)) {
			if (!api_query(r, "dimension"))
				bad(q, "dimension", "is required: a key of the contacts' attributes, e.g. point_of_sale");
		} else if (!dimension_ok(q->dimension)) {
			bad(q, "dimension", "must be an attribute key: a letter or _, then letters, digits, _ . - (at most 64)");
		}
		q->limit = 100;
		if (arg(r, q, "limit", buf, sizeof buf)) {
			size_t n = strlen(buf);
			int l = n >= 1 && n <= 3 && digits(buf, (int)n) ? atoi(buf) : 0;
			if (l < 1 || l > 500)
				bad(q, "limit", "must be 1 to 500");
			else
				q->limit = l;
		}
		if (arg(r, q, "cursor", buf, sizeof buf) && buf[0]) {
			/* hex of "v1:n" (the no-value row) or "v1:s<value>" */
			size_t n = strlen(buf);
			bool ok = n >= 6 && n % 2 == 0 && n / 2 < sizeof q->cursor;
			char plain[520];
			for (size_t i = 0; ok && i < n / 2; i++) {
				int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);
				ok = hi >= 0 && lo >= 0 && (hi || lo);
				plain[i] = (char)(hi * 16 + lo);
			}
			if (ok) {
				plain[n / 2] = '\0';
				ok = !strncmp(plain, "v1:", 3) && (!strcmp(plain + 3, "n") || plain[3] == 's');
			}
			if (!ok) {
				bad(q, "cursor", "is not a cursor this API returned");
			} else {
				q->has_cursor = true;
				q->cursor_null = plain[3] == 'n';
				snprintf(q->cursor, sizeof q->cursor, "%s", q->cursor_null ? "" : plain + 4);
			}
		}
	}
	if (json_array_size(q->errors))
		goto invalid;
	/* JIT compiles for ~1 s before these index-driven plans start; they never gain that back */
	hr_err jerr = {0};
	if (!hr_db_query(r->db, "SET LOCAL jit = off", 0, NULL, NULL, &jerr)) {
		json_decref(q->errors);
		api_problem_err(r, &jerr);
		return false;
	}

	/* the period, in epoch seconds; dates are midnights in the time zone */
	if (flags & P_PERIOD) {
		const char *p[] = {fk ? q->from_txt : NULL, tk ? q->to_txt : NULL, q->tz, fk == 'd' ? "d" : "t",
				   tk == 'd' ? "d" : "t"};
		PGresult *res;
		hr_err err = {0};
		/* to defaults to now (herald time), from to 30 days before to */
		if (!hr_db_query(r->db,
				 "WITH t AS (SELECT CASE WHEN $2::text IS NULL THEN herald_clock.now() WHEN $5 = 'd' THEN "
				 "($2::date::timestamp AT TIME ZONE $3::text) ELSE $2::timestamptz END AS t) "
				 "SELECT extract(epoch FROM f.f)::numeric(20,6), extract(epoch FROM t.t)::numeric(20,6) FROM t, "
				 "LATERAL (SELECT CASE WHEN $1::text IS NULL THEN t.t - interval '30 days' WHEN $4 = 'd' THEN "
				 "($1::date::timestamp AT TIME ZONE $3::text) ELSE $1::timestamptz END AS f) f",
				 5, p, &res, &err)) {
			json_decref(q->errors);
			api_problem_err(r, &err);
			return false;
		}
		snprintf(q->from, sizeof q->from, "%s", PQgetvalue(res, 0, 0));
		snprintf(q->to, sizeof q->to, "%s", PQgetvalue(res, 0, 1));
		PQclear(res);
		double f = strtod(q->from, NULL), t = strtod(q->to, NULL);
		if (t <= f)
			bad(q, "to", "must be after from");
		else if (t - f > PERIOD_MAX_DAYS * 86400.0)
			bad(q, "to", "the period is at most 366 days");
		if (json_array_size(q->errors))
			goto invalid;
	}
	json_decref(q->errors);
	q->errors = NULL;
	return true;
invalid:;
	size_t n = json_array_size(q->errors);
	json_t *e0 = json_array_get(q->errors, 0);
	char *d = n == 1 ? hr_sprintf("%s: %s", json_string_value(json_object_get(e0, "parameter")),
				      json_string_value(json_object_get(e0, "detail")))
			 : hr_sprintf("%zu parameters are invalid; see errors", n);
	api_problem(r, 422, "bad-parameter", "Bad query parameter", d, q->errors);
	hr_free(d);
	q->errors = NULL;
	return false;
}

/* A path id: 1..18 digits (else 404, as for a missing row). */
static bool path_id(api_req *r, int i, const char *what)
{
	const char *s = r->param[i];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		char *d = hr_sprintf("no such %s", what);
		api_problem(r, 404, "not-found", "Not found", d, NULL);
		hr_free(d);
		return false;
	}
	return true;
}

/* Whether `sql` ($1 = the path id) finds a row; false with a 404 or a 5xx in r otherwise. */
static bool exists(api_req *r, const char *sql, const char *what)
{
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, sql, 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	bool found = PQntuples(res) > 0;
	PQclear(res);
	if (!found) {
		char *d = hr_sprintf("no such %s", what);
		api_problem(r, 404, "not-found", "Not found", d, NULL);
		hr_free(d);
	}
	return found;
}

/* ---- message figures --------------------------------------------------------------- */

/*
 * The figures statement.  Parameters: $1 from, $2 to (epoch), $3 time zone,
 * $4 grouping (NULL: none), $5 order event, $6 window days, $7 reply event,
 * $8 the report's id when `src` names it.  `src` is the FROM/WHERE of the
 * batches (outbox o), `k1` the breakdown key of a batch (text or NULL),
 * `at` the time a batch's period is read from.
 */
static char *figures_sql(const char *src, const char *k1, const char *at)
{
	return hr_sprintf(
		"WITH b AS MATERIALIZED (SELECT o.id, o.id * 4096 AS lo, o.id * 4096 + 4095 AS hi, "
		"cardinality(o.addresses) AS n, (%s)::text AS k1, CASE WHEN $4::text IS NULL THEN NULL ELSE "
		"to_char(date_trunc($4::text, (%s) AT TIME ZONE $3::text), 'YYYY-MM-DD') END AS k2 %s), "
		/* orders within the window after a click on one of these messages ... */
		"c AS (SELECT DISTINCT x.id, x.contact_id, x.occurred_at, x.properties FROM b "
		"JOIN events k ON k.message_id BETWEEN b.lo AND b.hi AND k.name = 'email_clicked' "
		"CROSS JOIN LATERAL (SELECT x.id, x.contact_id, x.occurred_at, x.properties FROM events x "
		"WHERE x.contact_id = k.contact_id AND x.name = $5::text AND x.occurred_at >= k.occurred_at "
		"AND x.occurred_at < k.occurred_at + $6::int * interval '1 day' OFFSET 0) x), "
		/* ... each attributed to the contact's last click before it: its batch */
		"a AS (SELECT l.mid / 4096 AS id, count(*) AS converted, sum(" REVENUE("c.properties") ") AS revenue "
		"FROM c CROSS JOIN LATERAL (SELECT y.message_id AS mid FROM events y WHERE y.contact_id = c.contact_id "
		"AND y.name = 'email_clicked' AND y.occurred_at <= c.occurred_at AND y.message_id IS NOT NULL "
		"ORDER BY y.occurred_at DESC, y.id DESC LIMIT 1) l GROUP BY 1), "
		/* per batch: results (one per message), then receipts and engagement per message in
		 * message id order (the index's), so no sort: a message counts once per kind */
		"f AS (SELECT b.id, b.k1, b.k2, b.n, r.sent, r.failed, e.* FROM b CROSS JOIN LATERAL "
		"(SELECT count(*) FILTER (WHERE s.status = 'sent') AS sent, count(*) FILTER (WHERE s.status <> 'sent') "
		"AS failed FROM results s WHERE s.message_id BETWEEN b.lo AND b.hi) r CROSS JOIN LATERAL "
		"(SELECT count(*) FILTER (WHERE m.de) AS delivered, count(*) FILTER (WHERE m.bo) AS bounced, "
		"count(*) FILTER (WHERE m.co) AS complained, count(*) FILTER (WHERE m.op) AS opened, "
		"count(*) FILTER (WHERE m.cl) AS clicked, count(*) FILTER (WHERE m.re) AS replied, "
		"count(*) FILTER (WHERE m.un) AS unsubscribed FROM (SELECT bool_or(v.name = 'message_delivered') AS de, "
		"bool_or(v.name = 'message_bounced') AS bo, bool_or(v.name = 'message_complained') AS co, "
		"bool_or(v.name IN ('email_opened', 'email_clicked')) AS op, bool_or(v.name = 'email_clicked') AS cl, "
		"bool_or(v.name = $7::text) AS re, bool_or(v.name = 'unsubscribed') AS un FROM events v "
		"WHERE v.message_id BETWEEN b.lo AND b.hi AND v.name IN ('message_delivered', 'message_bounced', "
		"'message_complained', 'email_opened', 'email_clicked', 'unsubscribed', $7::text) "
		"GROUP BY v.message_id) m) e) "
		"SELECT GROUPING(f.k1), GROUPING(f.k2), f.k1, f.k2, coalesce(sum(f.n), 0), coalesce(sum(f.sent), 0), "
		"coalesce(sum(f.failed), 0), coalesce(sum(f.delivered), 0), coalesce(sum(f.bounced), 0), "
		"coalesce(sum(f.complained), 0), coalesce(sum(f.opened), 0), coalesce(sum(f.clicked), 0), "
		"coalesce(sum(f.replied), 0), coalesce(sum(f.unsubscribed), 0), coalesce(sum(a.converted), 0), "
		"coalesce(sum(a.revenue), 0) FROM f LEFT JOIN a ON a.id = f.id "
		"GROUP BY GROUPING SETS ((), (f.k1), (f.k2)) ORDER BY 1 DESC, 2 DESC, 3, 4",
		k1, at, src);
}

static const char *const fig_names[] = {"messages", "sent",    "failed",  "delivered",    "bounced", "complained",
					"opened",   "clicked", "replied", "unsubscribed", "converted"};
#define NFIG (sizeof fig_names / sizeof fig_names[0])

static json_t *rate(long long n, long long d)
{
	return d > 0 ? json_real(round((double)n / (double)d * 10000.0) / 10000.0) : json_null();
}

/* Figures from counts (fig_names order) and revenue, with the rates. */
static json_t *figures_of(const long long v[NFIG], double revenue)
{
	json_t *o = json_object();
	for (size_t k = 0; k < NFIG; k++)
		json_object_set_new(o, fig_names[k], json_integer(v[k]));
	long long messages = v[0], sent = v[1], failed = v[2];
	json_object_set_new(o, "queued", json_integer(messages - sent - failed));
	json_object_set_new(o, "revenue", json_real(revenue));
	json_t *rates = json_object();
	json_object_set_new(rates, "delivery", rate(v[3], sent));
	json_object_set_new(rates, "open", rate(v[6], sent));
	json_object_set_new(rates, "click", rate(v[7], sent));
	json_object_set_new(rates, "click_to_open", rate(v[7], v[6]));
	json_object_set_new(rates, "reply", rate(v[8], sent));
	json_object_set_new(rates, "unsubscribe", rate(v[9], sent));
	json_object_set_new(rates, "conversion", rate(v[10], v[7]));
	json_object_set_new(o, "rates", rates);
	return o;
}

/* Figures of result row i (columns from 4 on). */
static json_t *figures(PGresult *res, int i)
{
	long long v[NFIG];
	for (size_t k = 0; k < NFIG; k++)
		v[k] = strtoll(PQgetvalue(res, i, 4 + (int)k), NULL, 10);
	return figures_of(v, strtod(PQgetvalue(res, i, 4 + (int)NFIG), NULL));
}

/* The figures of no message at all (a run that sent nothing, a step no one reached). */
static json_t *figures_zero(void)
{
	long long v[NFIG] = {0};
	return figures_of(v, 0);
}

/* The parts of a figures result. */
typedef struct figs {
	json_t *totals;     /* object */
	json_t *breakdown;  /* array of {key: k1, ...figures}; key name given */
	json_t *periods;    /* array of {period, ...figures}, or NULL without grouping */
	bool truncated;     /* breakdown over BREAKDOWN_MAX */
} figs;

static void figs_free(figs *f)
{
	json_decref(f->totals);
	json_decref(f->breakdown);
	json_decref(f->periods);
}

/* Integer keys stay numbers in the JSON (ids, steps); others are strings. */
static json_t *key_value(const char *s, bool numeric)
{
	return numeric ? json_integer(strtoll(s, NULL, 10)) : json_string(s);
}

/*
 * Run the figures statement.  extra: $8 (or NULL).  key: the breakdown's
 * member name (NULL: no breakdown); numeric: its values are integers.
 */
static bool run_figures(api_req *r, const rq *q, const char *src, const char *k1, const char *at,
			const char *extra, const char *key, bool numeric, figs *out)
{
	memset(out, 0, sizeof *out);
	char *sql = figures_sql(src, k1, at);
	const char *p[] = {q->from, q->to, q->tz, q->grouping[0] ? q->grouping : NULL, q->order_event, q->window,
			   q->reply_event, extra};
	PGresult *res;
	hr_err err = {0};
	bool ok = hr_db_query(r->db, sql, extra ? 8 : 7, p, &res, &err);
	hr_free(sql);
	if (!ok) {
		api_problem_err(r, &err);
		return false;
	}
	out->breakdown = json_array();
	if (q->grouping[0])
		out->periods = json_array();
	for (int i = 0; i < PQntuples(res); i++) {
		bool g1 = PQgetvalue(res, i, 0)[0] == '1', g2 = PQgetvalue(res, i, 1)[0] == '1';
		if (g1 && g2) {
			out->totals = figures(res, i);
		} else if (!g1 && key) {
			if (PQgetisnull(res, i, 2))
				continue; /* a NULL key (e.g. inline content, no template): only in the totals */
			if (json_array_size(out->breakdown) >= BREAKDOWN_MAX) {
				out->truncated = true;
				continue;
			}
			json_t *o = figures(res, i);
			json_object_set_new(o, key, key_value(PQgetvalue(res, i, 2), numeric));
			json_array_append_new(out->breakdown, o);
		} else if (!g2 && out->periods && !PQgetisnull(res, i, 3)) {
			json_t *o = figures(res, i);
			json_object_set_new(o, "period", json_string(PQgetvalue(res, i, 3)));
			json_array_append_new(out->periods, o);
		}
	}
	PQclear(res);
	if (!out->totals) /* GROUPING SETS with () always yields the total row; be safe */
		out->totals = json_object();
	return true;
}

/* {from, to, time_zone, grouping} of the answer. */
static json_t *period_json(api_req *r, const rq *q)
{
	const char *p[] = {q->from, q->to};
	PGresult *res;
	hr_err err = {0};
	json_t *o = json_object();
	if (hr_db_query(r->db,
			"SELECT to_char(to_timestamp($1::numeric) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
			"to_char(to_timestamp($2::numeric) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
			2, p, &res, &err)) {
		json_object_set_new(o, "from", json_string(PQgetvalue(res, 0, 0)));
		json_object_set_new(o, "to", json_string(PQgetvalue(res, 0, 1)));
		PQclear(res);
	}
	json_object_set_new(o, "time_zone", json_string(q->tz));
	json_object_set_new(o, "grouping", q->grouping[0] ? json_string(q->grouping) : json_null());
	return o;
}

/* The answer's common members: period, parameters of attribution, totals, periods. */
static json_t *answer(api_req *r, const rq *q, figs *f)
{
	json_t *o = json_object();
	json_object_set_new(o, "period", period_json(r, q));
	json_object_set_new(o, "attribution",
			    json_pack("{s:s, s:i, s:s}", "order_event", q->order_event, "window_days", atoi(q->window),
				      "reply_event", q->reply_event));
	json_object_set_new(o, "totals", f->totals);
	f->totals = NULL;
	if (f->periods) {
		json_object_set_new(o, "periods", f->periods);
		f->periods = NULL;
	}
	return o;
}

#define IN_PERIOD(at) " AND " at " >= to_timestamp($1::numeric) AND " at " < to_timestamp($2::numeric)"

void reports_messages(api_req *r)
{
	rq q;
	if (!rq_parse(r, &q, P_PERIOD | P_GROUPING | P_EVENTS | P_BY))
		return;
	const char *k1 = !strcmp(q.by, "template") ? "o.template_id"
			 : !strcmp(q.by, "channel") ? "o.channel"
			 : !strcmp(q.by, "origin")  ? "o.origin"
						    : "NULL";
	figs f;
	if (!run_figures(r, &q, "FROM outbox o WHERE true" IN_PERIOD(MSG_AT), k1, MSG_AT, NULL,
			 q.by[0] ? q.by : NULL, !strcmp(q.by, "template"), &f))
		return;
	json_t *o = answer(r, &q, &f);
	if (q.by[0]) {
		json_object_set_new(o, "by", json_string(q.by));
		json_object_set_new(o, "breakdown", f.breakdown);
		json_object_set_new(o, "truncated", json_boolean(f.truncated));
		f.breakdown = NULL;
	}
	figs_free(&f);
	api_json(r, 200, o);
}

void reports_template(api_req *r)
{
	rq q;
	if (!path_id(r, 0, "template") || !rq_parse(r, &q, P_PERIOD | P_GROUPING | P_EVENTS) ||
	    !exists(r, "SELECT 1 FROM templates WHERE id = $1::bigint", "template"))
		return;
	figs f;
	if (!run_figures(r, &q, "FROM outbox o WHERE o.template_id = $8::bigint" IN_PERIOD(MSG_AT), "NULL", MSG_AT,
			 r->param[0], NULL, false, &f))
		return;
	json_t *o = answer(r, &q, &f);
	json_object_set_new(o, "template_id", json_integer(strtoll(r->param[0], NULL, 10)));
	figs_free(&f);
	api_json(r, 200, o);
}

static int period_cmp(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "period")),
		      json_string_value(json_object_get(*(json_t *const *)b, "period")));
}

/* Periods in order again (labels are YYYY-MM-DD, so text order is time order). */
static void sort_periods(json_t *periods)
{
	size_t n = json_array_size(periods);
	json_t **v = hr_malloc((n ? n : 1) * sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(periods, i));
	qsort(v, n, sizeof *v, period_cmp);
	json_array_clear(periods);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(periods, v[i]);
	hr_free(v);
}

/* The breakdown row whose `key` member is the integer id (or NULL). */
static json_t *find_by(json_t *arr, const char *key, long long id)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		json_t *k = json_object_get(v, key);
		if (json_is_integer(k) && json_integer_value(k) == id)
			return v;
	}
	return NULL;
}

/*
 * GET /v1/reports/campaigns/{id}: the runs that started in [from, to), each
 * with its audience (recipients materialised at run time) and its messages'
 * figures; totals and periods (by run time) over those runs.
 */
void reports_campaign(api_req *r)
{
	rq q;
	if (!path_id(r, 0, "campaign") || !rq_parse(r, &q, P_PERIOD | P_GROUPING | P_EVENTS) ||
	    !exists(r, "SELECT 1 FROM campaigns WHERE id = $1::bigint", "campaign"))
		return;
	figs f;
	if (!run_figures(r, &q,
			 "FROM campaign_runs x JOIN outbox o ON o.origin = 'campaign' AND o.origin_id = x.id "
			 "WHERE x.campaign_id = $8::bigint" IN_PERIOD("x.run_at"),
			 "x.id", "x.run_at", r->param[0], "run_id", true, &f))
		return;
	/* every run of the period, also those that sent nothing, with its audience */
	const char *p[] = {r->param[0], q.from, q.to, q.tz, q.grouping[0] ? q.grouping : NULL};
	PGresult *res;
	hr_err err = {0};
	char lim[16];
	snprintf(lim, sizeof lim, "%d", BREAKDOWN_MAX + 1);
	if (!hr_db_query(r->db,
			 "SELECT x.id, to_char(x.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), x.recipients, "
			 "x.error, x.channel, CASE WHEN $5::text IS NULL THEN NULL ELSE to_char(date_trunc($5::text, "
			 "x.run_at AT TIME ZONE $4::text), 'YYYY-MM-DD') END FROM campaign_runs x "
			 "WHERE x.campaign_id = $1::bigint AND x.run_at >= to_timestamp($2::numeric) "
			 "AND x.run_at < to_timestamp($3::numeric) ORDER BY x.run_at, x.id",
			 5, p, &res, &err)) {
		figs_free(&f);
		api_problem_err(r, &err);
		return;
	}
	json_t *runs = json_array();
	long long audience = 0;
	bool truncated = false, periods_added = false;
	for (int i = 0; i < PQntuples(res); i++) {
		long long id = strtoll(PQgetvalue(res, i, 0), NULL, 10), n = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		audience += n;
		/* the period's audience; a run whose messages are all held still has its period */
		if (f.periods && !PQgetisnull(res, i, 5)) {
			size_t k;
			json_t *pv, *hit = NULL;
			json_array_foreach(f.periods, k, pv) {
				if (!strcmp(json_string_value(json_object_get(pv, "period")), PQgetvalue(res, i, 5)))
					hit = pv;
			}
			if (!hit) {
				hit = figures_zero();
				json_object_set_new(hit, "period", json_string(PQgetvalue(res, i, 5)));
				json_array_append_new(f.periods, hit);
				periods_added = true;
			}
			json_object_set_new(hit, "audience", json_integer(json_integer_value(json_object_get(hit, "audience")) + n));
		}
		if (json_array_size(runs) >= BREAKDOWN_MAX) {
			truncated = true;
			continue;
		}
		json_t *fr = find_by(f.breakdown, "run_id", id);
		json_t *o = fr ? json_deep_copy(fr) : figures_zero();
		json_object_set_new(o, "run_id", json_integer(id));
		json_object_set_new(o, "run_at", json_string(PQgetvalue(res, i, 1)));
		json_object_set_new(o, "channel", json_string(PQgetvalue(res, i, 4)));
		json_object_set_new(o, "audience", json_integer(n));
		json_object_set_new(o, "error", PQgetisnull(res, i, 3) ? json_null() : json_string(PQgetvalue(res, i, 3)));
		json_array_append_new(runs, o);
	}
	PQclear(res);
	if (periods_added)
		sort_periods(f.periods);
	json_object_set_new(f.totals, "audience", json_integer(audience));
	json_t *o = answer(r, &q, &f);
	json_object_set_new(o, "campaign_id", json_integer(strtoll(r->param[0], NULL, 10)));
	json_object_set_new(o, "runs", runs);
	json_object_set_new(o, "truncated", json_boolean(truncated));
	figs_free(&f);
	/* per channel, with the cascade's fallbacks and their cost (cascade.c) */
	const char *pc[] = {q.from, q.to, r->param[0]};
	json_t *channels = cascade_channel_costs(r,
		"FROM campaign_runs x JOIN outbox o ON o.origin = 'campaign' AND o.origin_id = x.id "
		"WHERE x.campaign_id = $3::bigint" IN_PERIOD("x.run_at"), 3, pc);
	if (!channels) {
		json_decref(o);
		return;
	}
	json_object_set_new(o, "channels", channels);
	api_json(r, 200, o);
}

/* A rule batch's step: every message of a batch comes from one step (data[0].rule.step). */
#define RULE_STEP                                                                                          \
	"CASE WHEN jsonb_typeof(o.data -> 0 -> 'rule' -> 'step') = 'number' THEN (o.data -> 0 -> 'rule' ->> " \
	"'step')::numeric::bigint END"

/*
 * GET /v1/reports/rules/{id}: the rule's messages due in the period, per
 * step; the audience is the contacts that entered the rule in the period,
 * and per step those of them whose way went past the step (it ran for them,
 * whether its conditions let it act or not).
 */
void reports_rule(api_req *r)
{
	rq q;
	if (!path_id(r, 0, "rule") || !rq_parse(r, &q, P_PERIOD | P_GROUPING | P_EVENTS) ||
	    !exists(r, "SELECT 1 FROM rules WHERE id = $1::bigint", "rule"))
		return;
	figs f;
	if (!run_figures(r, &q, "FROM outbox o WHERE o.origin = 'rule' AND o.origin_id = $8::bigint" IN_PERIOD(MSG_AT),
			 RULE_STEP, MSG_AT, r->param[0], "step", true, &f))
		return;
	const char *p[] = {r->param[0], q.from, q.to};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "WITH i AS (SELECT i.step, i.state FROM rule_instances i WHERE i.rule_id = $1::bigint "
			 "AND i.entered_at >= to_timestamp($2::numeric) AND i.entered_at < to_timestamp($3::numeric)) "
			 "SELECT -1, count(*), count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE state = 'done'), "
			 "count(*) FILTER (WHERE state = 'exited') FROM i "
			 "UNION ALL SELECT s, (SELECT count(*) FROM i WHERE i.step > s), 0, 0, 0 FROM rules ru, "
			 "generate_series(0, CASE WHEN jsonb_typeof(ru.definition -> 'steps') = 'array' THEN "
			 "jsonb_array_length(ru.definition -> 'steps') ELSE 0 END - 1) s WHERE ru.id = $1::bigint ORDER BY 1",
			 3, p, &res, &err)) {
		figs_free(&f);
		api_problem_err(r, &err);
		return;
	}
	json_t *steps = json_array();
	for (int i = 0; i < PQntuples(res); i++) {
		long long s = strtoll(PQgetvalue(res, i, 0), NULL, 10), n = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		if (s < 0) {
			json_object_set_new(f.totals, "audience", json_integer(n));
			json_object_set_new(f.totals, "active", json_integer(strtoll(PQgetvalue(res, i, 2), NULL, 10)));
			json_object_set_new(f.totals, "completed", json_integer(strtoll(PQgetvalue(res, i, 3), NULL, 10)));
			json_object_set_new(f.totals, "exited", json_integer(strtoll(PQgetvalue(res, i, 4), NULL, 10)));
			continue;
		}
		json_t *fr = find_by(f.breakdown, "step", s);
		json_t *o = fr ? json_deep_copy(fr) : figures_zero();
		json_object_set_new(o, "step", json_integer(s));
		json_object_set_new(o, "audience", json_integer(n));
		json_array_append_new(steps, o);
	}
	PQclear(res);
	json_t *o = answer(r, &q, &f);
	json_object_set_new(o, "rule_id", json_integer(strtoll(r->param[0], NULL, 10)));
	json_object_set_new(o, "steps", steps);
	figs_free(&f);
	const char *pc[] = {q.from, q.to, r->param[0]};
	json_t *channels = cascade_channel_costs(r, "FROM outbox o WHERE o.origin = 'rule' AND o.origin_id = $3::bigint"
						 IN_PERIOD(MSG_AT), 3, pc);
	if (!channels) {
		json_decref(o);
		return;
	}
	json_object_set_new(o, "channels", channels);
	api_json(r, 200, o);
}

/* ---- per custom dimension ----------------------------------------------------------- */

/*
 * Codes issued to a contact in the period, and redemptions in the period of
 * codes issued to a contact (the code owner's value counts: "codes of this
 * advisor's contacts were redeemed").  redemptions is herald's own array of
 * {contact_id, at}; an entry without a valid time is not counted.
 */
#define DIM_CODES                                                                                           \
	"UNION ALL SELECT k.contact_id, 0, 0, 0, count(*), 0, 0, 0 FROM codes k WHERE k.contact_id IS NOT NULL " \
	"AND k.issued_at >= to_timestamp($1::numeric) AND k.issued_at < to_timestamp($2::numeric) GROUP BY 1 "   \
	"UNION ALL SELECT k.contact_id, 0, 0, 0, 0, count(*), 0, 0 FROM codes k CROSS JOIN LATERAL "              \
	"jsonb_array_elements(CASE WHEN jsonb_typeof(k.redemptions) = 'array' THEN k.redemptions ELSE '[]' END) x " \
	"WHERE k.redeemed > 0 AND k.contact_id IS NOT NULL AND jsonb_typeof(x -> 'at') = 'string' "             \
	"AND (x ->> 'at') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+([+-][0-9:]+|Z)?$' "                           \
	"AND (x ->> 'at')::timestamptz >= to_timestamp($1::numeric) "                                           \
	"AND (x ->> 'at')::timestamptz < to_timestamp($2::numeric) GROUP BY 1 "

static const char *const dim_names[] = {"registrations", "consents", "messages", "codes_issued", "codes_redeemed",
					"sales"};
#define NDIM (sizeof dim_names / sizeof dim_names[0])

static json_t *dim_row(PGresult *res, int i)
{
	json_t *o = json_object();
	for (size_t k = 0; k < NDIM; k++)
		json_object_set_new(o, dim_names[k], json_integer(strtoll(PQgetvalue(res, i, 2 + (int)k), NULL, 10)));
	json_object_set_new(o, "revenue", json_real(strtod(PQgetvalue(res, i, 2 + (int)NDIM), NULL)));
	return o;
}

/* Cursors are opaque to clients: hex of "v1:n" (after the no-value row) or "v1:s<value>". */
static json_t *dim_cursor(const char *value, bool null)
{
	char *plain = null ? hr_strdup("v1:n") : hr_sprintf("v1:s%s", value);
	size_t n = strlen(plain);
	char *hex = hr_malloc(2 * n + 1);
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)plain[i]);
	json_t *j = json_string(hex);
	hr_free(hex);
	hr_free(plain);
	return j;
}

/*
 * GET /v1/reports/dimensions?dimension=KEY: per value of the contacts'
 * attribute KEY (the contact's current value; no value is a row of its own,
 * first), what happened in the period: contacts registered (created, not
 * merged away), consent grants, messages, codes issued to and redeemed from
 * codes of the value's contacts, sales (order events) and revenue.  Each
 * fact is counted for the contact it belongs to, so the query aggregates
 * facts per contact first and joins contacts once.  Pages of `limit` values
 * in byte order; `totals` is over every value.
 */
void reports_dimensions(api_req *r)
{
	rq q;
	if (!rq_parse(r, &q, P_PERIOD | P_DIMENSION))
		return;
	char lim[16];
	snprintf(lim, sizeof lim, "%d", q.limit + 1);
	const char *p[] = {q.from, q.to, q.dimension, q.order_event, lim,
			   q.has_cursor && !q.cursor_null ? q.cursor : NULL,
			   !q.has_cursor ? "none" : q.cursor_null ? "n" : "s"};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(
		    r->db,
		    "WITH f AS ("
		    "SELECT c.id AS cid, 1::bigint AS reg, 0::bigint AS con, 0::bigint AS msg, 0::bigint AS iss, "
		    "0::bigint AS red, 0::bigint AS sal, 0::numeric AS rev FROM contacts c WHERE c.merged_into IS NULL "
		    "AND c.created_at >= to_timestamp($1::numeric) AND c.created_at < to_timestamp($2::numeric) "
		    "UNION ALL SELECT l.contact_id, 0, count(*), 0, 0, 0, 0, 0 FROM consent_log l WHERE l.granted "
		    "AND l.at >= to_timestamp($1::numeric) AND l.at < to_timestamp($2::numeric) GROUP BY 1 "
		    "UNION ALL SELECT u.cid, 0, 0, count(*), 0, 0, 0, 0 FROM outbox o CROSS JOIN LATERAL "
		    "unnest(o.contact_ids) u(cid) WHERE o.origin <> 'test' AND u.cid IS NOT NULL" IN_PERIOD(MSG_AT)
		    " GROUP BY 1 "
		    "UNION ALL SELECT e.contact_id, 0, 0, 0, 0, 0, count(*), sum(" REVENUE("e.properties") ") FROM events e "
		    "WHERE e.name = $4::text AND e.contact_id IS NOT NULL AND e.occurred_at >= to_timestamp($1::numeric) "
		    "AND e.occurred_at < to_timestamp($2::numeric) GROUP BY 1 "
		    DIM_CODES
		    "), g AS (SELECT GROUPING(c.attributes ->> $3::text) AS g, c.attributes ->> $3::text AS v, sum(f.reg), "
		    "sum(f.con), sum(f.msg), sum(f.iss), sum(f.red), sum(f.sal), sum(f.rev) FROM f JOIN contacts c "
		    "ON c.id = f.cid GROUP BY GROUPING SETS ((), (c.attributes ->> $3::text))) "
		    "SELECT * FROM g WHERE g = 1 OR $7::text = 'none' OR ($7::text = 'n' AND v IS NOT NULL) "
		    "OR v COLLATE \"C\" > $6::text COLLATE \"C\" ORDER BY g DESC, v COLLATE \"C\" NULLS FIRST "
		    "LIMIT $5::int + 1",
		    7, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	json_t *data = json_array(), *totals = NULL, *next = json_null();
	int rows = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		if (PQgetvalue(res, i, 0)[0] == '1') {
			totals = dim_row(res, i);
			continue;
		}
		if (rows == q.limit) {
			json_decref(next);
			json_t *last = json_array_get(data, json_array_size(data) - 1);
			json_t *v = json_object_get(last, "value");
			next = dim_cursor(json_string_value(v), json_is_null(v));
			break;
		}
		json_t *o = dim_row(res, i);
		json_t *v = PQgetisnull(res, i, 1) ? json_null() : json_string(PQgetvalue(res, i, 1));
		json_object_set_new(o, "value", v ? v : json_null());
		json_array_append_new(data, o);
		rows++;
	}
	PQclear(res);
	if (!totals) { /* no fact at all in the period */
		totals = json_object();
		for (size_t k = 0; k < NDIM; k++)
			json_object_set_new(totals, dim_names[k], json_integer(0));
		json_object_set_new(totals, "revenue", json_real(0));
	}
	json_t *o = json_object();
	json_object_set_new(o, "period", period_json(r, &q));
	json_object_set_new(o, "dimension", json_string(q.dimension));
	json_object_set_new(o, "order_event", json_string(q.order_event));
	json_object_set_new(o, "totals", totals);
	json_object_set_new(o, "data", data);
	json_object_set_new(o, "next_cursor", next);
	api_json(r, 200, o);
}

/* ---- repeat purchases (MAUDAU) -------------------------------------------------------- */

/*
 * GET /v1/reports/repeat-purchases: the contacts whose first order ever
 * happened in the period (first-time buyers), how many of them ordered again
 * within `within_days` (default 30) of that first order, how many ordered
 * again at all (until now), and the median time from the first to the second
 * order among those.  Grouping: cohorts by the day/week/month of the first
 * order.  Only the period's orders are scanned; "first ever" and "the second
 * order" are index probes (events_contact) per buyer.  Two orders at the
 * same instant are ordered by id.
 */
void reports_repeat(api_req *r)
{
	rq q;
	if (!rq_parse(r, &q, P_PERIOD | P_GROUPING | P_REPEAT))
		return;
	const char *p[] = {q.from, q.to, q.order_event, q.within, q.tz, q.grouping[0] ? q.grouping : NULL};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(
		    r->db,
		    "WITH p AS (SELECT DISTINCT ON (e.contact_id) e.contact_id, e.id, e.occurred_at FROM events e "
		    "WHERE e.name = $3::text AND e.contact_id IS NOT NULL AND e.occurred_at >= to_timestamp($1::numeric) "
		    "AND e.occurred_at < to_timestamp($2::numeric) ORDER BY e.contact_id, e.occurred_at, e.id), "
		    "f AS (SELECT p.* FROM p WHERE NOT EXISTS (SELECT 1 FROM events x WHERE x.contact_id = p.contact_id "
		    "AND x.name = $3::text AND x.occurred_at <= p.occurred_at AND (x.occurred_at < p.occurred_at "
		    "OR x.id < p.id))), "
		    "s AS (SELECT CASE WHEN $6::text IS NULL THEN NULL ELSE to_char(date_trunc($6::text, f.occurred_at "
		    "AT TIME ZONE $5::text), 'YYYY-MM-DD') END AS k, n.occurred_at - f.occurred_at AS dt FROM f "
		    "LEFT JOIN LATERAL (SELECT x.occurred_at FROM events x WHERE x.contact_id = f.contact_id "
		    "AND x.name = $3::text AND x.occurred_at >= f.occurred_at AND (x.occurred_at > f.occurred_at "
		    "OR x.id > f.id) ORDER BY x.occurred_at, x.id LIMIT 1) n ON true) "
		    "SELECT GROUPING(k), k, count(*), count(*) FILTER (WHERE dt <= $4::int * interval '1 day'), "
		    "count(dt), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM dt)) "
		    "FROM s GROUP BY GROUPING SETS ((), (k)) ORDER BY 1 DESC, 2",
		    6, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	json_t *totals = NULL, *periods = q.grouping[0] ? json_array() : NULL;
	for (int i = 0; i < PQntuples(res); i++) {
		long long first = strtoll(PQgetvalue(res, i, 2), NULL, 10), within = strtoll(PQgetvalue(res, i, 3), NULL, 10),
			  again = strtoll(PQgetvalue(res, i, 4), NULL, 10);
		json_t *o = json_object();
		json_object_set_new(o, "first_time_buyers", json_integer(first));
		json_object_set_new(o, "second_purchase_within", json_integer(within));
		json_object_set_new(o, "second_purchase_rate", rate(within, first));
		json_object_set_new(o, "second_purchase_ever", json_integer(again));
		if (PQgetisnull(res, i, 5)) {
			json_object_set_new(o, "median_seconds_to_second_purchase", json_null());
			json_object_set_new(o, "median_days_to_second_purchase", json_null());
		} else {
			double s = strtod(PQgetvalue(res, i, 5), NULL);
			json_object_set_new(o, "median_seconds_to_second_purchase", json_integer((json_int_t)llround(s)));
			json_object_set_new(o, "median_days_to_second_purchase", json_real(round(s / 86400.0 * 100.0) / 100.0));
		}
		if (PQgetvalue(res, i, 0)[0] == '1') {
			json_decref(totals);
			totals = o;
		} else if (periods && !PQgetisnull(res, i, 1)) {
			json_object_set_new(o, "period", json_string(PQgetvalue(res, i, 1)));
			json_array_append_new(periods, o);
		} else {
			json_decref(o);
		}
	}
	PQclear(res);
	json_t *o = json_object();
	json_object_set_new(o, "period", period_json(r, &q));
	json_object_set_new(o, "order_event", json_string(q.order_event));
	json_object_set_new(o, "within_days", json_integer(atoi(q.within)));
	json_object_set_new(o, "totals", totals ? totals : json_object());
	if (periods)
		json_object_set_new(o, "periods", periods);
	api_json(r, 200, o);
}
