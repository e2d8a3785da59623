/*
 * segment.c -- see segment.h; the language is in docs/segments.md.
 *
 * One recursive pass over the parsed JSON appends SQL text to a buffer and
 * values to a parameter list.  The SQL text is built only from this file's
 * literals and "$N" numbers: user strings go to the parameter list.  A JSON
 * pointer of the node being compiled is kept alongside, for errors.
 */
#include "segment.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "jsonout.h"
#include "strbuf.h"

/* ---- compile context ---- */

#define PTR_MAX 512

typedef struct cx {
	const hr_segment_opts *o;
	hr_err *err;
	hr_sbuf sql;
	char **params;
	int nparams, cap;
	int nconds;
	int depth;
	int64_t stack[HR_SEGMENT_MAX_DEPTH + 1]; /* segments being expanded */
	int nstack;
	char ptr[PTR_MAX]; /* JSON pointer of the node being compiled */
	size_t plen;
} cx;

static size_t ptr_push(cx *x, const char *key)
{
	size_t mark = x->plen;
	int n = snprintf(x->ptr + x->plen, sizeof x->ptr - x->plen, "/%s", key);
	if (n > 0)
		x->plen = x->plen + (size_t)n < sizeof x->ptr ? x->plen + (size_t)n : sizeof x->ptr - 1;
	return mark;
}

static size_t ptr_push_idx(cx *x, size_t i)
{
	char k[24];
	snprintf(k, sizeof k, "%zu", i);
	return ptr_push(x, k);
}

static void ptr_pop(cx *x, size_t mark)
{
	x->plen = mark;
	x->ptr[mark] = '\0';
}

static bool fail(cx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(cx *x, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return hr_fail(x->err, HR_ERR_INVALID, x->ptr, "%s", msg);
}

/* Fail at a child key of the current node. */
static bool fail_at(cx *x, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail_at(cx *x, const char *key, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	size_t m = ptr_push(x, key);
	hr_fail(x->err, HR_ERR_INVALID, x->ptr, "%s", msg);
	ptr_pop(x, m);
	return false;
}

/* Add a parameter (takes ownership of v); returns its $N. */
static int param_own(cx *x, char *v)
{
	if (x->nparams == x->cap) {
		x->cap = x->cap ? x->cap * 2 : 16;
		x->params = hr_realloc(x->params, (size_t)x->cap * sizeof *x->params);
	}
	x->params[x->nparams++] = v;
	return x->o->first_param + x->nparams - 1;
}

static int param(cx *x, const char *v)
{
	return param_own(x, hr_strdup(v));
}

static bool count_condition(cx *x)
{
	if (++x->nconds > HR_SEGMENT_MAX_CONDITIONS)
		return fail(x, "too many conditions: at most %d (referenced segments included)",
			    HR_SEGMENT_MAX_CONDITIONS);
	return true;
}

/* Reject keys outside `allowed` (NULL-terminated): typos must not pass silently. */
static bool only_keys(cx *x, json_t *obj, const char *const *allowed)
{
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			if (!strcmp(k, *a))
				ok = true;
		if (!ok) {
			/* The key itself is user text: quote a bounded prefix of it in msg only. */
			return fail(x, "unknown key \"%.64s\"", k);
		}
	}
	return true;
}

/* ---- values ---- */

static bool string_value(cx *x, json_t *v, const char *key, bool allow_empty, const char **out)
{
	if (!json_is_string(v))
		return fail_at(x, key, "expected a string");
	size_t n = json_string_length(v);
	if (!allow_empty && n == 0)
		return fail_at(x, key, "empty string");
	if (n > HR_SEGMENT_MAX_STRING)
		return fail_at(x, key, "string longer than %d bytes", HR_SEGMENT_MAX_STRING);
	*out = json_string_value(v);
	return true;
}

/* A JSON scalar for jsonb comparison (string, number, boolean). */
static bool scalar_ok(cx *x, json_t *v, const char *key)
{
	if (json_is_string(v)) {
		if (json_string_length(v) > HR_SEGMENT_MAX_STRING)
			return fail_at(x, key, "string longer than %d bytes", HR_SEGMENT_MAX_STRING);
		return true;
	}
	if (json_is_number(v) || json_is_boolean(v))
		return true;
	if (json_is_null(v))
		return fail_at(x, key, "null is not a value: use the exists / not_exists operators");
	return fail_at(x, key, "expected a string, number or boolean");
}

static char *json_text(json_t *v)
{
	return hr_json_dump(v);
}

static bool number_text(cx *x, json_t *v, const char *key, char *out, size_t len)
{
	if (json_is_integer(v)) {
		snprintf(out, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return true;
	}
	if (json_is_real(v) && isfinite(json_real_value(v))) {
		hr_json_real(out, len, json_real_value(v));
		return true;
	}
	return fail_at(x, key, "expected a number");
}

/* A PostgreSQL array literal of text elements: every element quoted, \ and " escaped. */
static char *text_array(const char *const *elems, size_t n)
{
	hr_sbuf b = {0};
	hr_sbuf_add(&b, "{");
	for (size_t i = 0; i < n; i++) {
		hr_sbuf_add(&b, i ? ",\"" : "\"");
		for (const char *p = elems[i]; *p; p++) {
			if (*p == '"' || *p == '\\')
				hr_sbuf_add(&b, "\\");
			hr_sbuf_addn(&b, p, 1);
		}
		hr_sbuf_add(&b, "\"");
	}
	hr_sbuf_add(&b, "}");
	return b.p;
}

/* An attribute/property path: "a.b.c" or ["a", "b.c"]; becomes a text[] parameter. */
static bool path_param(cx *x, json_t *v, const char *key, int *out)
{
	const char *segs[HR_SEGMENT_MAX_PATH];
	char *split = NULL;
	size_t n = 0;
	bool ok = false;

	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (!*s) {
			fail_at(x, key, "empty path");
			goto fail;
		}
		if (json_string_length(v) > HR_SEGMENT_MAX_PATH * (HR_SEGMENT_MAX_PATH_SEG + 1)) {
			fail_at(x, key, "path too long");
			goto fail;
		}
		split = hr_strdup(s);
		for (char *p = split;; ) {
			char *dot = strchr(p, '.');
			if (dot)
				*dot = '\0';
			if (n == HR_SEGMENT_MAX_PATH) {
				fail_at(x, key, "path has more than %d segments", HR_SEGMENT_MAX_PATH);
				goto fail;
			}
			segs[n++] = p;
			if (!dot)
				break;
			p = dot + 1;
		}
	} else if (json_is_array(v)) {
		if (json_array_size(v) == 0) {
			fail_at(x, key, "empty path");
			goto fail;
		}
		if (json_array_size(v) > HR_SEGMENT_MAX_PATH) {
			fail_at(x, key, "path has more than %d segments", HR_SEGMENT_MAX_PATH);
			goto fail;
		}
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) {
			if (!json_is_string(e)) {
				char k[24];
				snprintf(k, sizeof k, "%zu", i);
				ptr_push(x, key);
				fail_at(x, k, "expected a string");
				goto fail;
			}
			segs[n++] = json_string_value(e);
		}
	} else {
		fail_at(x, key, "expected a path: \"a.b\" or [\"a\", \"b\"]");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(segs[i]);
		if (len == 0 || len > HR_SEGMENT_MAX_PATH_SEG) {
			fail_at(x, key, "path segment %zu is empty or longer than %d bytes", i,
				HR_SEGMENT_MAX_PATH_SEG);
			goto fail;
		}
	}
	*out = param_own(x, text_array(segs, n));
	ok = true;
fail:
	hr_free(split);
	return ok;
}

/* ---- dates ---- */

static bool leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int mdays(int64_t y, int m)
{
	static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && leap(y) ? 29 : d[m - 1];
}

/* Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int64_t floordiv(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

typedef struct ts {
	int64_t sec;   /* seconds since the epoch, UTC */
	int usec;      /* fraction */
} ts;

/* Canonical UTC text PostgreSQL reads as timestamptz in any DateStyle/TimeZone. */
static bool ts_text(ts t, char *out, size_t len)
{
	int64_t days = floordiv(t.sec, 86400), rem = t.sec - days * 86400;
	int64_t y;
	int m, d;
	civil_from_days(days, &y, &m, &d);
	if (y < 1 || y > 9999)
		return false;
	snprintf(out, len, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d, (int)(rem / 3600),
		 (int)(rem / 60 % 60), (int)(rem % 60), t.usec);
	return true;
}

static bool digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*v = *v * 10 + (s[i] - '0');
	}
	return true;
}

/*
 * YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]][Z|(+|-)HH[[:]MM]]], years 0001-9999;
 * no zone means UTC.  The same grammar as SAFE_TS below, which reads dates
 * stored in attributes.
 */
static bool parse_date(const char *s, ts *out)
{
	int y, mo, d, h = 0, mi = 0, se = 0, us = 0, oh = 0, om = 0, sign = 0;
	if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
	    !digits(s + 8, 2, &d))
		return false;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays(y, mo))
		return false;
	const char *p = s + 10;
	if (*p == 'T' || *p == ' ') {
		if (!digits(p + 1, 2, &h) || p[3] != ':' || !digits(p + 4, 2, &mi) || h > 23 || mi > 59)
			return false;
		p += 6;
		if (*p == ':') {
			if (!digits(p + 1, 2, &se) || se > 59)
				return false;
			p += 3;
			if (*p == '.') {
				int nd = 0;
				p++;
				while (*p >= '0' && *p <= '9' && nd < 6) {
					us = us * 10 + (*p++ - '0');
					nd++;
				}
				if (nd == 0)
					return false;
				for (; nd < 6; nd++)
					us *= 10;
			}
		}
		if (*p == 'Z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			sign = *p == '-' ? -1 : 1;
			if (!digits(p + 1, 2, &oh) || oh > 14)
				return false;
			p += 3;
			if (*p == ':')
				p++;
			if (*p) {
				if (!digits(p, 2, &om) || om > 59)
					return false;
				p += 2;
			}
		}
	}
	if (*p)
		return false;
	out->sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se -
		   (int64_t)sign * (oh * 3600 + om * 60);
	out->usec = us;
	char tmp[40];
	return ts_text(*out, tmp, sizeof tmp); /* still within years 1-9999 in UTC */
}

static ts now_plus_days(cx *x, int64_t days)
{
	ts t = {.sec = x->o->now_unix + days * 86400, .usec = 0};
	return t;
}

static bool days_value(cx *x, json_t *v, const char *key, int64_t max, int64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return fail_at(x, key, "expected a whole number of days from 0 to %" PRId64, max);
	*out = json_integer_value(v);
	return true;
}

/* A date value: "2024-05-01", "2024-05-01T10:00:00+03:00", {"days_ago": N}, {"days_from_now": N}. */
static bool date_value(cx *x, json_t *v, const char *key, ts *out)
{
	if (json_is_string(v)) {
		if (!parse_date(json_string_value(v), out))
			return fail_at(x, key, "bad date: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]");
		return true;
	}
	if (json_is_object(v) && json_object_size(v) == 1) {
		size_t m = ptr_push(x, key);
		json_t *ago = json_object_get(v, "days_ago"), *from = json_object_get(v, "days_from_now");
		int64_t d = 0;
		bool ok = false;
		if (ago) {
			ok = days_value(x, ago, "days_ago", HR_SEGMENT_MAX_DAYS, &d);
			d = -d;
		} else if (from)
			ok = days_value(x, from, "days_from_now", HR_SEGMENT_MAX_DAYS, &d);
		else
			fail(x, "expected {\"days_ago\": N} or {\"days_from_now\": N}");
		ptr_pop(x, m);
		if (!ok)
			return false;
		*out = now_plus_days(x, d);
		char tmp[40];
		if (!ts_text(*out, tmp, sizeof tmp))
			return fail_at(x, key, "date out of range");
		return true;
	}
	return fail_at(x, key, "expected a date: \"YYYY-MM-DD\" or {\"days_ago\": N}");
}

static int ts_param(cx *x, ts t)
{
	char tmp[40];
	if (!ts_text(t, tmp, sizeof tmp))
		snprintf(tmp, sizeof tmp, "%s", t.sec < 0 ? "0001-01-01T00:00:00Z" : "9999-12-31T23:59:59Z");
	return param(x, tmp);
}

static int ts_cmp(ts a, ts b)
{
	return a.sec != b.sec ? (a.sec < b.sec ? -1 : 1) : (a.usec > b.usec) - (a.usec < b.usec);
}

/* ---- operands and operators ---- */

typedef enum okind { K_JSON = 1, K_TEXT = 2, K_TIME = 4 } okind;

/*
 * What a condition is about.  K_JSON: a path in a jsonb column (base), the
 * path a text[] parameter; K_TEXT / K_TIME: a column expression from the
 * fixed table below.
 */
typedef struct operand {
	okind kind;
	const char *base; /* "c.attributes" / "e.properties" (K_JSON) */
	int path;         /* $N of the path (K_JSON) */
	const char *col;  /* column expression (K_TEXT, K_TIME) */
	const char *what; /* for messages: "attribute", "field email" */
} operand;

static const struct field {
	const char *name;
	const char *col;
	okind kind;
} fields[] = {
	{"email", "c.email", K_TEXT},
	{"phone", "c.phone", K_TEXT},
	{"external_id", "c.external_id", K_TEXT},
	{"time_zone", "c.time_zone", K_TEXT},
	{"locale", "c.locale", K_TEXT},
	{"created_at", "c.created_at", K_TIME},
};

typedef enum op {
	OP_EQ, OP_NE, OP_IN, OP_NOT_IN, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_BETWEEN,
	OP_BEFORE, OP_AFTER, OP_EXISTS, OP_NOT_EXISTS, OP_CONTAINS, OP_STARTS_WITH,
	OP_ENDS_WITH, OP_MATCHES, OP_INCLUDES, OP_WITHIN_LAST, OP_WITHIN_NEXT,
	OP_ANNIVERSARY, OP_AFTER_FIRST,
} op;

typedef enum argk { A_NONE, A_VALUE, A_LIST, A_PAIR, A_DAYS } argk;

static const struct opdef {
	const char *name;
	op op;
	unsigned kinds; /* operand kinds it applies to */
	argk arg;
} ops[] = {
	{"eq", OP_EQ, K_JSON | K_TEXT, A_VALUE},
	{"ne", OP_NE, K_JSON | K_TEXT, A_VALUE},
	{"in", OP_IN, K_JSON | K_TEXT, A_LIST},
	{"not_in", OP_NOT_IN, K_JSON | K_TEXT, A_LIST},
	{"gt", OP_GT, K_JSON | K_TIME, A_VALUE},
	{"gte", OP_GTE, K_JSON | K_TIME, A_VALUE},
	{"lt", OP_LT, K_JSON | K_TIME, A_VALUE},
	{"lte", OP_LTE, K_JSON | K_TIME, A_VALUE},
	{"between", OP_BETWEEN, K_JSON | K_TIME, A_PAIR},
	{"before", OP_BEFORE, K_JSON | K_TIME, A_VALUE},
	{"after", OP_AFTER, K_JSON | K_TIME, A_VALUE},
	{"exists", OP_EXISTS, K_JSON | K_TEXT | K_TIME, A_NONE},
	{"not_exists", OP_NOT_EXISTS, K_JSON | K_TEXT | K_TIME, A_NONE},
	{"contains", OP_CONTAINS, K_JSON | K_TEXT, A_VALUE},
	{"starts_with", OP_STARTS_WITH, K_JSON | K_TEXT, A_VALUE},
	{"ends_with", OP_ENDS_WITH, K_JSON | K_TEXT, A_VALUE},
	{"matches", OP_MATCHES, K_JSON | K_TEXT, A_VALUE},
	{"includes", OP_INCLUDES, K_JSON, A_VALUE},
	{"within_last", OP_WITHIN_LAST, K_JSON | K_TIME, A_DAYS},
	{"within_next", OP_WITHIN_NEXT, K_JSON | K_TIME, A_DAYS},
	{"anniversary_within_next", OP_ANNIVERSARY, K_JSON | K_TIME, A_DAYS},
	/* Only in an event's "when" (see event()). */
	{"within_days_of_first", OP_AFTER_FIRST, 0, A_DAYS},
};

static const char *cmp_sql(op o)
{
	switch (o) {
	case OP_GT: case OP_AFTER: return ">";
	case OP_GTE: return ">=";
	case OP_LT: case OP_BEFORE: return "<";
	case OP_LTE: return "<=";
	default: return "=";
	}
}

/* The jsonb at the path / its text (numbers and strings alike) -- appended to the SQL. */
static void X(cx *x, const operand *od)
{
	hr_sbuf_addf(&x->sql, "(%s #> $%d::text[])", od->base, od->path);
}

static void S(cx *x, const operand *od)
{
	hr_sbuf_addf(&x->sql, "(%s #>> $%d::text[])", od->base, od->path);
}

/* The value as text, only when it is a JSON string (or the text column). */
static void T(cx *x, const operand *od)
{
	if (od->kind != K_JSON) {
		hr_sbuf_add(&x->sql, od->col);
		return;
	}
	hr_sbuf_add(&x->sql, "(CASE WHEN jsonb_typeof(");
	X(x, od);
	hr_sbuf_add(&x->sql, ") = 'string' THEN ");
	S(x, od);
	hr_sbuf_add(&x->sql, " END)");
}

/* The value as numeric, only when it is a JSON number. */
static void N(cx *x, const operand *od)
{
	hr_sbuf_add(&x->sql, "(CASE WHEN jsonb_typeof(");
	X(x, od);
	hr_sbuf_add(&x->sql, ") = 'number' THEN ");
	X(x, od);
	hr_sbuf_add(&x->sql, "::numeric END)");
}

/*
 * The value as timestamptz, only when it is a string in parse_date()'s
 * grammar and a real calendar date -- a cast that cannot fail at run time.
 * Nested CASEs because SQL does not promise the evaluation order of AND.
 */
#define DATE_RE                                                                               \
	"'^(000[1-9]|00[1-9][0-9]|0[1-9][0-9][0-9]|[1-9][0-9]{3})-(0[1-9]|1[0-2])-"           \
	"(0[1-9]|[12][0-9]|3[01])([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,6})?)?" \
	"(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)?)?$'"

static void TS(cx *x, const operand *od)
{
	if (od->kind != K_JSON) {
		hr_sbuf_add(&x->sql, od->col);
		return;
	}
	hr_sbuf_add(&x->sql, "(CASE WHEN ");
	S(x, od);
	hr_sbuf_add(&x->sql, " ~ " DATE_RE " THEN CASE WHEN substr(");
	S(x, od);
	hr_sbuf_add(&x->sql, ", 9, 2)::int <= extract(day from (substr(");
	S(x, od);
	hr_sbuf_add(&x->sql, ", 1, 8) || '01')::date + interval '1 month' - interval '1 day')::int THEN CASE WHEN ");
	S(x, od);
	hr_sbuf_add(&x->sql, " ~ '[T ][0-9:.]+[Z+-]' THEN ");
	S(x, od);
	hr_sbuf_add(&x->sql, "::timestamptz ELSE ");
	S(x, od);
	hr_sbuf_add(&x->sql, "::timestamp AT TIME ZONE 'UTC' END END END)");
}

/* `matches`: a case-insensitive glob (* any run, ? one character, \ quotes) to an ILIKE pattern. */
static bool like_pattern(cx *x, const char *glob, char **out)
{
	hr_sbuf b = {0};
	int stars = 0;
	if (strlen(glob) > HR_SEGMENT_MAX_PATTERN)
		return fail_at(x, "value", "pattern longer than %d bytes", HR_SEGMENT_MAX_PATTERN);
	for (const char *p = glob; *p; p++) {
		if (*p == '*') {
			if (p > glob && p[-1] == '*')
				continue; /* ** is * */
			if (++stars > HR_SEGMENT_MAX_STARS) {
				hr_free(b.p);
				return fail_at(x, "value", "pattern has more than %d '*'", HR_SEGMENT_MAX_STARS);
			}
			hr_sbuf_add(&b, "%");
		} else if (*p == '?') {
			hr_sbuf_add(&b, "_");
		} else {
			if (*p == '\\' && p[1])
				p++;
			if (*p == '%' || *p == '_' || *p == '\\')
				hr_sbuf_add(&b, "\\");
			hr_sbuf_addn(&b, p, 1);
		}
	}
	if (!b.p)
		hr_sbuf_add(&b, "");
	*out = b.p;
	return true;
}

/* Month-days ("MM-DD") from today to today + days, UTC; Feb 29 counts as Feb 28 in other years. */
static int anniversary_param(cx *x, int64_t days)
{
	const char **md = hr_calloc((size_t)days * 2 + 2, sizeof *md);
	char (*buf)[6] = hr_calloc((size_t)days + 2, sizeof *buf);
	size_t n = 0;
	int64_t today = floordiv(x->o->now_unix, 86400);
	bool feb29 = false;
	for (int64_t i = 0; i <= days && i < 366; i++) {
		int64_t y;
		int m, d;
		civil_from_days(today + i, &y, &m, &d);
		snprintf(buf[i], sizeof buf[i], "%02d-%02d", m, d);
		md[n++] = buf[i];
		if ((m == 2 && d == 28 && !leap(y)) || (m == 2 && d == 29))
			feb29 = true;
	}
	/* A leap-day birthday is celebrated on Feb 28 in common years. */
	if (feb29) {
		bool have = false;
		for (size_t i = 0; i < n; i++)
			have = have || !strcmp(md[i], "02-29");
		if (!have)
			md[n++] = "02-29";
	}
	int p = param_own(x, text_array(md, n));
	hr_free(buf);
	hr_free(md);
	return p;
}

/* Numeric or date comparison against one value. */
typedef struct cmpv {
	bool is_date;
	int p;     /* $N */
	double num; /* for between's order check */
	ts t;
} cmpv;

static bool cmp_value(cx *x, const operand *od, json_t *v, const char *key, bool dates_only, cmpv *out)
{
	if (json_is_number(v) && !dates_only && od->kind == K_JSON) {
		char tmp[64];
		if (!number_text(x, v, key, tmp, sizeof tmp))
			return false;
		out->is_date = false;
		out->num = json_number_value(v);
		out->p = param(x, tmp);
		return true;
	}
	if (json_is_number(v))
		return fail_at(x, key, "expected a date (this operator compares dates)");
	if (!date_value(x, v, key, &out->t))
		return false;
	out->is_date = true;
	out->p = ts_param(x, out->t);
	return true;
}

static void cmp_subject(cx *x, const operand *od, bool is_date)
{
	if (is_date)
		TS(x, od);
	else
		N(x, od);
}

/* One leaf condition on an operand: {"op": ..., "value"/"days": ...}. */
static bool leaf(cx *x, json_t *node, const operand *od, const char *const *keys, bool in_when,
		 int event_name)
{
	json_t *opj = json_object_get(node, "op");
	const struct opdef *def = NULL;
	hr_sbuf *q = &x->sql;

	if (!only_keys(x, node, keys))
		return false;
	if (!count_condition(x))
		return false;
	if (!opj)
		return fail(x, "missing \"op\"");
	if (!json_is_string(opj))
		return fail_at(x, "op", "expected an operator name");
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (!strcmp(ops[i].name, json_string_value(opj)))
			def = &ops[i];
	if (!def)
		return fail_at(x, "op", "unknown operator \"%.64s\"", json_string_value(opj));
	if (!(def->kinds & od->kind) && !(in_when && def->op == OP_AFTER_FIRST))
		return fail_at(x, "op", "operator %s does not apply to %s", def->name, od->what);

	json_t *val = json_object_get(node, "value"), *days = json_object_get(node, "days");
	if (def->arg == A_DAYS) {
		if (!days)
			return fail(x, "operator %s needs \"days\"", def->name);
		if (val)
			return fail_at(x, "value", "operator %s takes \"days\", not \"value\"", def->name);
	} else {
		if (days)
			return fail_at(x, "days", "operator %s takes no \"days\"", def->name);
		if (def->arg == A_NONE && val)
			return fail_at(x, "value", "operator %s takes no value", def->name);
		if (def->arg != A_NONE && !val)
			return fail(x, "operator %s needs \"value\"", def->name);
	}
	if (json_object_get(node, "event") && def->op != OP_AFTER_FIRST)
		return fail_at(x, "event", "only within_days_of_first takes \"event\"");

	switch (def->op) {
	case OP_EQ:
	case OP_NE: {
		const char *s;
		if (od->kind == K_TEXT) {
			if (!string_value(x, val, "value", true, &s))
				return false;
			hr_sbuf_addf(q, def->op == OP_EQ ? "(%s = $%d::text)" : "(%s IS DISTINCT FROM $%d::text)",
				od->col, param(x, s));
			return true;
		}
		if (!scalar_ok(x, val, "value"))
			return false;
		int p = param_own(x, json_text(val));
		hr_sbuf_add(q, "(");
		X(x, od);
		hr_sbuf_addf(q, def->op == OP_EQ ? " = $%d::jsonb)" : " IS DISTINCT FROM $%d::jsonb)", p);
		return true;
	}
	case OP_IN:
	case OP_NOT_IN: {
		if (!json_is_array(val))
			return fail_at(x, "value", "expected an array of values");
		if (json_array_size(val) == 0)
			return fail_at(x, "value", "empty list");
		if (json_array_size(val) > HR_SEGMENT_MAX_IN)
			return fail_at(x, "value", "more than %d values", HR_SEGMENT_MAX_IN);
		size_t i;
		json_t *e;
		size_t m = ptr_push(x, "value");
		json_array_foreach(val, i, e) {
			char k[24];
			snprintf(k, sizeof k, "%zu", i);
			bool ok = od->kind == K_TEXT
					  ? (json_is_string(e) && json_string_length(e) <= HR_SEGMENT_MAX_STRING) ||
						    fail_at(x, k, "expected a string (of at most %d bytes)",
							    HR_SEGMENT_MAX_STRING)
					  : scalar_ok(x, e, k);
			if (!ok) {
				ptr_pop(x, m);
				return false;
			}
		}
		ptr_pop(x, m);
		int p = param_own(x, json_text(val));
		hr_sbuf_add(q, def->op == OP_IN ? "(" : "NOT COALESCE(");
		if (od->kind == K_TEXT)
			hr_sbuf_addf(q, "%s IN (SELECT jsonb_array_elements_text($%d::jsonb))", od->col, p);
		else {
			X(x, od);
			hr_sbuf_addf(q, " IN (SELECT jsonb_array_elements($%d::jsonb))", p);
		}
		hr_sbuf_add(q, def->op == OP_IN ? ")" : ", false)");
		return true;
	}
	case OP_GT: case OP_GTE: case OP_LT: case OP_LTE:
	case OP_BEFORE: case OP_AFTER: {
		cmpv v;
		if (!cmp_value(x, od, val, "value", def->op == OP_BEFORE || def->op == OP_AFTER, &v))
			return false;
		hr_sbuf_add(q, "(");
		cmp_subject(x, od, v.is_date);
		hr_sbuf_addf(q, " %s $%d::%s)", cmp_sql(def->op), v.p, v.is_date ? "timestamptz" : "numeric");
		return true;
	}
	case OP_BETWEEN: {
		if (!json_is_array(val) || json_array_size(val) != 2)
			return fail_at(x, "value", "expected [low, high]");
		cmpv lo, hi;
		size_t m = ptr_push(x, "value");
		bool ok = cmp_value(x, od, json_array_get(val, 0), "0", false, &lo) &&
			  cmp_value(x, od, json_array_get(val, 1), "1", false, &hi);
		if (ok && lo.is_date != hi.is_date)
			ok = fail(x, "both bounds must be numbers or both dates");
		if (ok && (lo.is_date ? ts_cmp(lo.t, hi.t) > 0 : lo.num > hi.num))
			ok = fail(x, "low bound is above the high bound");
		ptr_pop(x, m);
		if (!ok)
			return false;
		const char *ty = lo.is_date ? "timestamptz" : "numeric";
		hr_sbuf_add(q, "(");
		cmp_subject(x, od, lo.is_date);
		hr_sbuf_addf(q, " >= $%d::%s AND ", lo.p, ty);
		cmp_subject(x, od, lo.is_date);
		hr_sbuf_addf(q, " <= $%d::%s)", hi.p, ty);
		return true;
	}
	case OP_EXISTS:
	case OP_NOT_EXISTS:
		if (od->kind == K_JSON) {
			hr_sbuf_add(q, def->op == OP_EXISTS ? "COALESCE(jsonb_typeof(" : "NOT COALESCE(jsonb_typeof(");
			X(x, od);
			hr_sbuf_add(q, ") <> 'null', false)");
		} else {
			hr_sbuf_addf(q, def->op == OP_EXISTS ? "(%s IS NOT NULL)" : "(%s IS NULL)", od->col);
		}
		return true;
	case OP_CONTAINS:
	case OP_STARTS_WITH:
	case OP_ENDS_WITH:
	case OP_MATCHES: {
		const char *s;
		if (!string_value(x, val, "value", false, &s))
			return false;
		int p;
		if (def->op == OP_MATCHES) {
			char *pat = NULL;
			if (!like_pattern(x, s, &pat))
				return false;
			p = param_own(x, pat);
		} else {
			p = param(x, s);
		}
		hr_sbuf_add(q, "(");
		if (def->op == OP_CONTAINS) {
			hr_sbuf_add(q, "strpos(");
			T(x, od);
			hr_sbuf_addf(q, ", $%d::text) > 0", p);
		} else if (def->op == OP_STARTS_WITH) {
			hr_sbuf_add(q, "starts_with(");
			T(x, od);
			hr_sbuf_addf(q, ", $%d::text)", p);
		} else if (def->op == OP_ENDS_WITH) {
			hr_sbuf_add(q, "right(");
			T(x, od);
			hr_sbuf_addf(q, ", length($%d::text)) = $%d::text", p, p);
		} else {
			T(x, od);
			hr_sbuf_addf(q, " ILIKE $%d::text", p);
		}
		hr_sbuf_add(q, ")");
		return true;
	}
	case OP_INCLUDES: {
		if (!scalar_ok(x, val, "value"))
			return false;
		int p = param_own(x, json_text(val));
		/* Containment is exact for a scalar element: ["a"] @> [["a"]] is false. */
		hr_sbuf_add(q, "COALESCE(jsonb_typeof(");
		X(x, od);
		hr_sbuf_add(q, ") = 'array' AND ");
		X(x, od);
		hr_sbuf_addf(q, " @> jsonb_build_array($%d::jsonb), false)", p);
		return true;
	}
	case OP_WITHIN_LAST:
	case OP_WITHIN_NEXT: {
		int64_t d;
		if (!days_value(x, days, "days", HR_SEGMENT_MAX_DAYS, &d))
			return false;
		ts a = now_plus_days(x, def->op == OP_WITHIN_LAST ? -d : 0);
		ts b = now_plus_days(x, def->op == OP_WITHIN_LAST ? 0 : d);
		int pa = ts_param(x, a), pb = ts_param(x, b);
		hr_sbuf_add(q, "(");
		TS(x, od);
		hr_sbuf_addf(q, " >= $%d::timestamptz AND ", pa);
		TS(x, od);
		hr_sbuf_addf(q, " <= $%d::timestamptz)", pb);
		return true;
	}
	case OP_ANNIVERSARY: {
		int64_t d;
		if (!days_value(x, days, "days", 366, &d))
			return false;
		int p = anniversary_param(x, d);
		if (od->kind == K_JSON) {
			hr_sbuf_add(q, "((CASE WHEN ");
			S(x, od);
			hr_sbuf_add(q, " ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN substr(");
			S(x, od);
			hr_sbuf_addf(q, ", 6, 5) END) = ANY($%d::text[]))", p);
		} else {
			hr_sbuf_addf(q, "(to_char(%s AT TIME ZONE 'UTC', 'MM-DD') = ANY($%d::text[]))", od->col, p);
		}
		return true;
	}
	case OP_AFTER_FIRST: {
		int64_t d;
		if (!days_value(x, days, "days", HR_SEGMENT_MAX_DAYS, &d))
			return false;
		json_t *ev = json_object_get(node, "event");
		int anchor = event_name;
		if (ev) {
			const char *s;
			if (!string_value(x, ev, "event", false, &s))
				return false;
			anchor = param(x, s);
		}
		char dd[24];
		snprintf(dd, sizeof dd, "%" PRId64, d);
		int pd = param(x, dd);
		/* The first occurrence of the anchor event; no anchor -> NULL -> no event matches. */
#define FIRST "(SELECT min(ea.occurred_at) FROM events ea WHERE ea.contact_id = c.id AND ea.name = $%d::text)"
		hr_sbuf_addf(q, "(e.occurred_at > " FIRST " AND e.occurred_at <= " FIRST
			   " + $%d::int * interval '86400 seconds')", anchor, anchor, pd);
#undef FIRST
		return true;
	}
	}
	return fail(x, "internal: unhandled operator"); /* unreachable */
}

/* ---- nodes ---- */

typedef enum scope { SC_CONTACT, SC_EVENT } scope;

static bool node(cx *x, json_t *n, scope sc);

static bool junction(cx *x, json_t *list, const char *key, scope sc)
{
	if (!json_is_array(list))
		return fail_at(x, key, "expected an array of conditions");
	if (json_array_size(list) == 0)
		return fail_at(x, key, "empty list of conditions");
	size_t m = ptr_push(x, key);
	size_t i;
	json_t *e;
	hr_sbuf_add(&x->sql, "(");
	json_array_foreach(list, i, e) {
		if (i)
			hr_sbuf_add(&x->sql, !strcmp(key, "and") ? " AND " : " OR ");
		size_t mi = ptr_push_idx(x, i);
		if (!node(x, e, sc))
			return false;
		ptr_pop(x, mi);
	}
	hr_sbuf_add(&x->sql, ")");
	ptr_pop(x, m);
	return true;
}

static bool count_or_sum(cx *x, json_t *o, const char *key, bool is_sum, int *path_p)
{
	static const char *const count_keys[] = {"op", "value", NULL};
	static const char *const sum_keys[] = {"property", "op", "value", NULL};
	static const struct { const char *name; const char *sql; } cmps[] = {
		{"eq", "="}, {"ne", "<>"}, {"gt", ">"}, {"gte", ">="}, {"lt", "<"}, {"lte", "<="}, {"between", NULL},
	};
	hr_sbuf *q = &x->sql;
	bool ok = false;
	size_t m = ptr_push(x, key);
	if (!json_is_object(o)) {
		fail(x, is_sum ? "expected {\"property\": ..., \"op\": ..., \"value\": ...}"
			       : "expected {\"op\": ..., \"value\": ...}");
		goto fail;
	}
	if (!only_keys(x, o, is_sum ? sum_keys : count_keys))
		goto fail;
	if (is_sum) {
		json_t *pr = json_object_get(o, "property");
		if (!pr) {
			fail(x, "missing \"property\"");
			goto fail;
		}
		if (!path_param(x, pr, "property", path_p))
			goto fail;
	}
	json_t *opj = json_object_get(o, "op"), *val = json_object_get(o, "value");
	const char *cmp = NULL;
	bool between = false;
	if (!opj) {
		fail(x, "missing \"op\"");
		goto fail;
	}
	size_t i;
	for (i = 0; i < sizeof cmps / sizeof cmps[0]; i++)
		if (json_is_string(opj) && !strcmp(cmps[i].name, json_string_value(opj)))
			break;
	if (i == sizeof cmps / sizeof cmps[0]) {
		fail_at(x, "op", "unknown operator: expected eq, ne, gt, gte, lt, lte or between");
		goto fail;
	}
	cmp = cmps[i].sql;
	between = cmp == NULL;
	if (!val) {
		fail(x, "missing \"value\"");
		goto fail;
	}
	json_t *bounds[2] = {val, NULL};
	int nb = 1;
	if (between) {
		if (!json_is_array(val) || json_array_size(val) != 2) {
			fail_at(x, "value", "expected [low, high]");
			goto fail;
		}
		bounds[0] = json_array_get(val, 0);
		bounds[1] = json_array_get(val, 1);
		nb = 2;
	}
	int p[2];
	for (int b = 0; b < nb; b++) {
		char tmp[64];
		const char *vk = between ? (b ? "value/1" : "value/0") : "value";
		if (!is_sum) {
			if (!json_is_integer(bounds[b]) || json_integer_value(bounds[b]) < 0 ||
			    json_integer_value(bounds[b]) > 1000000000) {
				fail_at(x, vk, "expected a whole number from 0 to 1000000000");
				goto fail;
			}
		}
		if (!number_text(x, bounds[b], vk, tmp, sizeof tmp))
			goto fail;
		p[b] = param(x, tmp);
	}
	if (between && json_number_value(bounds[0]) > json_number_value(bounds[1])) {
		fail_at(x, "value", "low bound is above the high bound");
		goto fail;
	}
	const char *ty = is_sum ? "numeric" : "bigint";
	for (int b = 0; b < nb; b++) {
		if (b)
			hr_sbuf_add(q, " AND ");
		if (is_sum)
			hr_sbuf_addf(q, "COALESCE(sum(CASE WHEN jsonb_typeof(e.properties #> $%d::text[]) = 'number' "
				   "THEN (e.properties #> $%d::text[])::numeric END), 0)",
				*path_p, *path_p);
		else
			hr_sbuf_add(q, "count(*)");
		hr_sbuf_addf(q, " %s $%d::%s", between ? (b ? "<=" : ">=") : cmp, p[b], ty);
	}
	ok = true;
fail:
	if (ok)
		ptr_pop(x, m);
	return ok;
}

/*
 * {"event": name, "did": bool, "where": rule over properties, "when": time
 * condition on occurred_at, "count": {...}, "sum": {...}} -> a correlated
 * subquery.  OFFSET 0 keeps the planner from flattening EXISTS into a join
 * that scans all of events: the cost must follow the contacts, probing the
 * (contact_id, name, occurred_at) index, not the whole event history.
 */
static bool event(cx *x, json_t *n)
{
	static const char *const keys[] = {"event", "did", "where", "when", "count", "sum", NULL};
	static const char *const when_keys[] = {"op", "value", "days", "event", NULL};
	hr_sbuf *q = &x->sql;
	const char *name;
	if (!only_keys(x, n, keys) || !count_condition(x))
		return false;
	if (!string_value(x, json_object_get(n, "event"), "event", false, &name))
		return false;
	json_t *did = json_object_get(n, "did"), *where = json_object_get(n, "where"),
	       *when = json_object_get(n, "when"), *cnt = json_object_get(n, "count"),
	       *sum = json_object_get(n, "sum");
	if (did && !json_is_boolean(did))
		return fail_at(x, "did", "expected true or false");
	bool negate = did && json_is_false(did);
	int pname = param(x, name);

	hr_sbuf_add(q, negate ? "NOT (" : "(");
	if (cnt || sum)
		hr_sbuf_add(q, "SELECT ");
	else
		hr_sbuf_add(q, "EXISTS (SELECT 1");
	/* The aggregate's select list goes before FROM: compile it first, into place. */
	if (cnt || sum) {
		int unused = 0, sum_path = 0;
		if (cnt && !count_or_sum(x, cnt, "count", false, &unused))
			return false;
		if (cnt && sum)
			hr_sbuf_add(q, " AND ");
		if (sum && !count_or_sum(x, sum, "sum", true, &sum_path))
			return false;
	}
	hr_sbuf_addf(q, " FROM events e WHERE e.contact_id = c.id AND e.name = $%d::text", pname);
	if (when) {
		size_t m = ptr_push(x, "when");
		if (!json_is_object(when))
			return fail(x, "expected {\"op\": ..., ...}");
		operand od = {.kind = K_TIME, .col = "e.occurred_at", .what = "the event time"};
		hr_sbuf_add(q, " AND ");
		if (!leaf(x, when, &od, when_keys, true, pname))
			return false;
		x->nconds--; /* part of this event condition, not another one */
		ptr_pop(x, m);
	}
	if (where) {
		size_t m = ptr_push(x, "where");
		hr_sbuf_add(q, " AND ");
		if (++x->depth > HR_SEGMENT_MAX_DEPTH)
			return fail(x, "nested deeper than %d levels", HR_SEGMENT_MAX_DEPTH);
		if (!node(x, where, SC_EVENT))
			return false;
		x->depth--;
		ptr_pop(x, m);
	}
	hr_sbuf_add(q, cnt || sum ? ")" : " OFFSET 0))");
	return true;
}

static bool compile_root(cx *x, const char *json);

static bool segment_ref(cx *x, json_t *n)
{
	static const char *const keys[] = {"segment", NULL};
	json_t *id = json_object_get(n, "segment");
	char *text = NULL;
	bool ok = false;
	if (!only_keys(x, n, keys))
		return false;
	if (!json_is_integer(id) || json_integer_value(id) <= 0)
		return fail_at(x, "segment", "expected a segment id (a positive integer)");
	int64_t sid = json_integer_value(id);
	size_t m = ptr_push(x, "segment");
	if (!x->o->lookup) {
		fail(x, "segment references are not available here");
		goto fail;
	}
	for (int i = 0; i < x->nstack; i++) {
		if (x->stack[i] == sid) {
			char chain[200] = "";
			size_t cl = 0;
			for (int j = i; j < x->nstack && cl < sizeof chain - 24; j++)
				cl += (size_t)snprintf(chain + cl, sizeof chain - cl, "%" PRId64 " -> ", x->stack[j]);
			fail(x, "segment cycle: %s%" PRId64, chain, sid);
			goto fail;
		}
	}
	if (x->nstack >= HR_SEGMENT_MAX_DEPTH) {
		fail(x, "segments nested deeper than %d levels", HR_SEGMENT_MAX_DEPTH);
		goto fail;
	}
	hr_err lerr = {0};
	if (!x->o->lookup(x->o->lookup_ud, sid, &text, &lerr)) {
		hr_err_kind k = lerr.kind == HR_ERR_NOTFOUND || lerr.kind == HR_ERR_NONE ? HR_ERR_INVALID
											: lerr.kind;
		hr_fail(x->err, k, x->ptr, "segment %" PRId64 ": %s", sid,
			lerr.msg[0] ? lerr.msg : "not found");
		goto fail;
	}
	/* Compile the referenced rule with its own pointers; errors are rewritten to point here. */
	char outer[PTR_MAX];
	memcpy(outer, x->ptr, x->plen + 1);
	size_t outer_len = x->plen;
	x->stack[x->nstack++] = sid;
	x->plen = 0;
	x->ptr[0] = '\0';
	bool inner = compile_root(x, text ? text : "");
	x->nstack--;
	memcpy(x->ptr, outer, outer_len + 1);
	x->plen = outer_len;
	if (!inner) {
		if (x->err) {
			hr_err in = *x->err;
			hr_fail(x->err, in.kind, x->ptr, "in segment %" PRId64 "%s%s: %s", sid,
				in.field[0] ? " at " : "", in.field, in.msg);
		}
		goto fail;
	}
	ok = true;
fail:
	hr_free(text);
	ptr_pop(x, m);
	return ok;
}

static bool node(cx *x, json_t *n, scope sc)
{
	static const char *const attr_keys[] = {"attribute", "op", "value", "days", NULL};
	static const char *const field_keys[] = {"field", "op", "value", "days", NULL};
	static const char *const prop_keys[] = {"property", "op", "value", "days", NULL};
	if (!json_is_object(n))
		return fail(x, "expected a condition (an object)");
	json_t *v;
	bool ok;
	if ((v = json_object_get(n, "and")) || (v = json_object_get(n, "or"))) {
		const char *key = json_object_get(n, "and") ? "and" : "or";
		if (json_object_size(n) != 1)
			return fail(x, "\"%s\" must be the only key of its object", key);
		if (++x->depth > HR_SEGMENT_MAX_DEPTH)
			return fail(x, "nested deeper than %d levels", HR_SEGMENT_MAX_DEPTH);
		ok = junction(x, v, key, sc);
		x->depth--;
		return ok;
	}
	if ((v = json_object_get(n, "not"))) {
		if (json_object_size(n) != 1)
			return fail(x, "\"not\" must be the only key of its object");
		if (++x->depth > HR_SEGMENT_MAX_DEPTH)
			return fail(x, "nested deeper than %d levels", HR_SEGMENT_MAX_DEPTH);
		size_t m = ptr_push(x, "not");
		/* A condition that is NULL (unknown) counts as false, so its negation is true. */
		hr_sbuf_add(&x->sql, "NOT COALESCE(");
		ok = node(x, v, sc);
		hr_sbuf_add(&x->sql, ", false)");
		if (ok)
			ptr_pop(x, m);
		x->depth--;
		return ok;
	}
	if (sc == SC_EVENT) {
		if (!(v = json_object_get(n, "property")))
			return fail(x, "expected a property condition, \"and\", \"or\" or \"not\"");
		operand od = {.kind = K_JSON, .base = "e.properties", .what = "a property"};
		if (!path_param(x, v, "property", &od.path))
			return false;
		return leaf(x, n, &od, prop_keys, false, 0);
	}
	if ((v = json_object_get(n, "attribute"))) {
		operand od = {.kind = K_JSON, .base = "c.attributes", .what = "an attribute"};
		if (!path_param(x, v, "attribute", &od.path))
			return false;
		return leaf(x, n, &od, attr_keys, false, 0);
	}
	if ((v = json_object_get(n, "field"))) {
		const struct field *f = NULL;
		for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
			if (json_is_string(v) && !strcmp(fields[i].name, json_string_value(v)))
				f = &fields[i];
		if (!f)
			return fail_at(x, "field", "unknown field: expected email, phone, external_id, "
						   "time_zone, locale or created_at");
		char what[48];
		snprintf(what, sizeof what, "field %s", f->name);
		operand od = {.kind = f->kind, .col = f->col, .what = what};
		return leaf(x, n, &od, field_keys, false, 0);
	}
	if (json_object_get(n, "event")) {
		if (++x->depth > HR_SEGMENT_MAX_DEPTH)
			return fail(x, "nested deeper than %d levels", HR_SEGMENT_MAX_DEPTH);
		ok = event(x, n);
		x->depth--;
		return ok;
	}
	if (json_object_get(n, "segment")) {
		if (++x->depth > HR_SEGMENT_MAX_DEPTH)
			return fail(x, "nested deeper than %d levels", HR_SEGMENT_MAX_DEPTH);
		hr_sbuf_add(&x->sql, "(");
		ok = segment_ref(x, n);
		hr_sbuf_add(&x->sql, ")");
		x->depth--;
		return ok;
	}
	if (json_object_get(n, "property"))
		return fail(x, "\"property\" conditions belong in an event's \"where\"");
	return fail(x, "unknown condition: expected \"and\", \"or\", \"not\", \"attribute\", \"field\", "
		       "\"event\" or \"segment\"");
}

static bool compile_root(cx *x, const char *json)
{
	size_t len = strlen(json);
	if (len > HR_SEGMENT_MAX_JSON)
		return fail(x, "rule longer than %d bytes", HR_SEGMENT_MAX_JSON);
	json_error_t je;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return fail(x, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
	bool ok = node(x, root, SC_CONTACT);
	json_decref(root);
	return ok;
}

/* compile_root for an event's `where` on its own (hr_segment_compile_where). */
static bool compile_where_root(cx *x, const char *json)
{
	size_t len = strlen(json);
	if (len > HR_SEGMENT_MAX_JSON)
		return fail(x, "rule longer than %d bytes", HR_SEGMENT_MAX_JSON);
	json_error_t je;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return fail(x, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
	bool ok = node(x, root, SC_EVENT);
	json_decref(root);
	return ok;
}

static bool compile_with(bool (*root)(cx *, const char *), const char *json, const hr_segment_opts *o,
			 hr_segment_sql *out, hr_err *err)
{
	hr_segment_opts opts = *o;
	if (opts.first_param <= 0)
		opts.first_param = 1;
	cx x = {.o = &opts, .err = err};
	memset(out, 0, sizeof *out);
	if (!json)
		return hr_fail(err, HR_ERR_INVALID, "/", "no rule");
	if (!root(&x, json))
		goto fail;
	out->where = x.sql.p;
	out->nparams = x.nparams;
	out->params = x.params;
	return true;
fail:
	hr_free(x.sql.p);
	for (int i = 0; i < x.nparams; i++)
		hr_free(x.params[i]);
	hr_free(x.params);
	return false;
}

bool hr_segment_compile(const char *json, const hr_segment_opts *o, hr_segment_sql *out, hr_err *err)
{
	return compile_with(compile_root, json, o, out, err);
}

bool hr_segment_compile_where(const char *json, const hr_segment_opts *o, hr_segment_sql *out, hr_err *err)
{
	return compile_with(compile_where_root, json, o, out, err);
}

void hr_segment_sql_free(hr_segment_sql *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->nparams; i++)
		hr_free(s->params[i]);
	hr_free(s->params);
	hr_free(s->where);
	memset(s, 0, sizeof *s);
}
