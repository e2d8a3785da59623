/*
 * calendar.c -- campaign calendars: parsing and validation, runs, and each
 * recipient's due instant.  The contract is in calendar.h, the rules for
 * marketers and engineers in docs/calendar.md.
 *
 * Recurring rules are expanded by libical in floating local time (no zone):
 * each occurrence is a wall time, converted to an instant by tz.c under
 * herald's DST rules.  So a weekly 10:00 stays 10:00 across DST changes, and
 * the gap/overlap rules are ours, not whatever the expander does.  UNTIL is
 * taken out of the rule and applied here, because libical would compare a
 * UTC UNTIL with floating occurrences.
 *
 * The rule is expanded once, at parse time, into the sorted array of run
 * starts (at most HR_CALENDAR_MAX_RUNS, 8 bytes each): parsing must walk it
 * anyway to refuse rules without runs or with too many, and libical's
 * iterator is slow (it goes through ICU's calendar, ~2 us per step), so
 * hr_calendar_next_run() is then a binary search.
 */
#include "calendar.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <libical/ical.h>

#include "alloc.h"
#include "tz.h"

__extension__ typedef unsigned __int128 hr_u128;

typedef enum until_kind {
	UNTIL_NONE,
	UNTIL_INSTANT, /* UNTIL=...Z: an instant, compared with the occurrence's instant */
	UNTIL_WALL,    /* UNTIL=... without Z (or a date): a wall time in the calendar's zone */
} until_kind;

struct hr_calendar {
	hr_calendar_kind kind;
	char *zone_name;          /* as given (or the tenant's, or "UTC") */
	const hr_tz *zone;        /* DTSTART's and "at"'s zone; recipients' fallback */
	bool per_recipient;       /* the wall time is read in each recipient's zone */
	int64_t at;               /* AT: the instant (per_recipient: unused) */
	int64_t at_wall;          /* AT with per_recipient: the local time to send at */
	int64_t start_wall;       /* RECURRING: DTSTART, a wall time */
	until_kind until_kind;    /* RECURRING: how to read `until` */
	int64_t until;            /* instant or wall time, inclusive (RFC 5545) */
	int64_t *runs;            /* RECURRING: every run's start, strictly increasing */
	size_t nruns;
	int64_t spread_s;         /* spread window, seconds; 0 = none */
	bool quiet;               /* quiet hours set */
	int32_t quiet_from;       /* seconds of the day, recipient's wall clock */
	int32_t quiet_to;
};

/* ---- small helpers ---- */

static const struct {
	const char *name;
	hr_calendar_kind kind;
} kinds[] = {
	{"now", HR_CAL_NOW},
	{"at", HR_CAL_AT},
	{"recurring", HR_CAL_RECURRING},
};

static const char *const fields[] = {
	"kind", "at", "start", "rrule", "time_zone", "local_time_per_recipient", "spread_minutes", "quiet_hours",
};

/* RFC 6901 escaping of one reference token into a pointer "/<key>". */
static void pointer_of(const char *key, char *out, size_t len)
{
	size_t o = 0;
	if (len < 2)
		return;
	out[o++] = '/';
	for (const char *p = key; *p && o + 3 < len; p++) {
		if (*p == '~' || *p == '/') {
			out[o++] = '~';
			out[o++] = *p == '~' ? '0' : '1';
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

/* n decimal digits at s into *v. */
static bool digits(const char *s, int n, int *v)
{
	int x = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		x = x * 10 + (s[i] - '0');
	}
	*v = x;
	return true;
}

static struct icaltimetype ical_from_wall(int64_t wall)
{
	int64_t days = hr_floor_div(wall, HR_DAY), sod = wall - days * HR_DAY, y;
	int m, d;
	hr_civil_from_days(days, &y, &m, &d);
	struct icaltimetype t = {
		.year = (int)y, .month = m, .day = d,
		.hour = (int)(sod / 3600), .minute = (int)(sod / 60 % 60), .second = (int)(sod % 60),
	};
	return t; /* floating: zone NULL */
}

static int64_t wall_from_ical(struct icaltimetype t)
{
	return hr_days_from_civil(t.year, t.month, t.day) * HR_DAY + t.hour * 3600 + t.minute * 60 + t.second;
}

/*
 * Date and time checks shared by RFC 3339 and RFC 5545 forms; `why` gets a
 * short reason.  Years are limited to the supported range (tz.h).
 */
static bool civil_ok(int y, int mo, int d, int h, int mi, int s, char *why, size_t len)
{
	if (y < 1970 || y > 2037)
		return snprintf(why, len, "year %d is outside 1970..2037", y), false;
	if (mo < 1 || mo > 12)
		return snprintf(why, len, "month %02d does not exist", mo), false;
	if (d < 1 || d > hr_days_in_month(y, mo))
		return snprintf(why, len, "day %02d does not exist in %04d-%02d", d, y, mo), false;
	if (h > 23 || mi > 59)
		return snprintf(why, len, "time %02d:%02d does not exist", h, mi), false;
	if (s == 60)
		return snprintf(why, len, "leap seconds (:60) are not supported"), false;
	if (s > 59)
		return snprintf(why, len, "second %02d does not exist", s), false;
	return true;
}

/*
 * RFC 3339 date-time "YYYY-MM-DDTHH:MM:SS[.frac][Z|+hh:mm|-hh:mm]"; without
 * an offset it is a local (wall) time.  Fractions of a second are dropped.
 */
static bool parse_datetime(const char *s, int64_t *wall, bool *has_offset, int32_t *offset, char *why,
			   size_t len)
{
	int y, mo, d, h, mi, sec;
	if (strlen(s) < 19 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
	    !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) || s[13] != ':' ||
	    !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec)) {
		snprintf(why, len, "want an RFC 3339 date-time such as 2026-12-01T10:00:00Z or 2026-12-01T10:00:00");
		return false;
	}
	if (!civil_ok(y, mo, d, h, mi, sec, why, len))
		return false;
	const char *p = s + 19;
	if (*p == '.') {
		if (!isdigit((unsigned char)p[1]))
			return snprintf(why, len, "a fraction of a second needs digits"), false;
		for (p++; isdigit((unsigned char)*p); p++)
			;
	}
	*has_offset = false;
	*offset = 0;
	if (*p == 'Z' || *p == 'z') {
		*has_offset = true;
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om;
		if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
			return snprintf(why, len, "the offset must be Z or +hh:mm / -hh:mm"), false;
		*has_offset = true;
		*offset = (int32_t)((oh * 3600 + om * 60) * (*p == '-' ? -1 : 1));
		p += 6;
	}
	if (*p)
		return snprintf(why, len, "unexpected \"%s\" after the date-time", p), false;
	*wall = hr_days_from_civil(y, mo, d) * HR_DAY + h * 3600 + mi * 60 + sec;
	return true;
}

/* "HH:MM" into seconds of the day. */
static bool parse_hhmm(const char *s, int32_t *out)
{
	int h, m;
	if (strlen(s) != 5 || !digits(s, 2, &h) || s[2] != ':' || !digits(s + 3, 2, &m) || h > 23 || m > 59)
		return false;
	*out = h * 3600 + m * 60;
	return true;
}

/* ---- RRULE ---- */

typedef struct rule_part {
	const char *name;
	int lo, hi;     /* numeric range of list items (BY*), or of the value */
	bool is_signed; /* items may be negative (counted from the end) */
} rule_part;

/* RFC 5545 section 3.3.10, in the order the spec lists them. */
static const rule_part rule_parts[] = {
	{"FREQ", 0, 0, false},          {"UNTIL", 0, 0, false},       {"COUNT", 1, HR_CALENDAR_MAX_RUNS, false},
	{"INTERVAL", 1, 1000, false},   {"BYSECOND", 0, 59, false},   {"BYMINUTE", 0, 59, false},
	{"BYHOUR", 0, 23, false},       {"BYDAY", 0, 0, false},       {"BYMONTHDAY", 1, 31, true},
	{"BYYEARDAY", 1, 366, true},    {"BYWEEKNO", 1, 53, true},    {"BYMONTH", 1, 12, false},
	{"BYSETPOS", 1, 366, true},     {"WKST", 0, 0, false},
};

static bool weekday(const char *s)
{
	static const char *const days[] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};
	for (size_t i = 0; i < sizeof days / sizeof days[0]; i++)
		if (strcmp(s, days[i]) == 0)
			return true;
	return false;
}

/* A decimal integer in [lo, hi] (sign allowed when is_signed; never 0 then). */
static bool rule_int(const char *s, const rule_part *p, int *out)
{
	const char *q = s;
	bool neg = false;
	if (p->is_signed && (*q == '+' || *q == '-'))
		neg = *q++ == '-';
	if (!*q || strlen(q) > 6)
		return false;
	int v = 0;
	for (; *q; q++) {
		if (*q < '0' || *q > '9')
			return false;
		v = v * 10 + (*q - '0');
	}
	if (v < p->lo || v > p->hi)
		return false;
	*out = neg ? -v : v;
	return true;
}

/* Check one part's value; `why` gets the reason. */
static bool rule_value_ok(const rule_part *p, char *value, hr_calendar *c, char *why, size_t len)
{
	int v;
	if (strcmp(p->name, "FREQ") == 0) {
		static const char *const ok[] = {"HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"};
		for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
			if (strcmp(value, ok[i]) == 0)
				return true;
		if (strcmp(value, "SECONDLY") == 0 || strcmp(value, "MINUTELY") == 0)
			snprintf(why, len, "FREQ=%s: runs more often than hourly are not supported", value);
		else
			snprintf(why, len, "FREQ=%s: want HOURLY, DAILY, WEEKLY, MONTHLY or YEARLY", value);
		return false;
	}
	if (strcmp(p->name, "WKST") == 0) {
		if (weekday(value))
			return true;
		return snprintf(why, len, "WKST=%s: want a weekday MO..SU", value), false;
	}
	if (strcmp(p->name, "COUNT") == 0 || strcmp(p->name, "INTERVAL") == 0) {
		if (rule_int(value, p, &v))
			return true;
		return snprintf(why, len, "%s=%s: want a whole number in %d..%d", p->name, value, p->lo, p->hi), false;
	}
	if (strcmp(p->name, "UNTIL") == 0) {
		/* YYYYMMDD, YYYYMMDDTHHMMSS (a wall time) or ...Z (an instant). */
		int y, mo, d, h = 23, mi = 59, s = 59;
		size_t n = strlen(value);
		char sub[96];
		if (!(n == 8 || n == 15 || (n == 16 && value[15] == 'Z')) || !digits(value, 4, &y) ||
		    !digits(value + 4, 2, &mo) || !digits(value + 6, 2, &d) ||
		    (n > 8 && (value[8] != 'T' || !digits(value + 9, 2, &h) || !digits(value + 11, 2, &mi) ||
			       !digits(value + 13, 2, &s)))) {
			return snprintf(why, len, "UNTIL=%s: want YYYYMMDD, YYYYMMDDTHHMMSS or YYYYMMDDTHHMMSSZ",
					value), false;
		}
		if (!civil_ok(y, mo, d, h, mi, s, sub, sizeof sub))
			return snprintf(why, len, "UNTIL=%s: %s", value, sub), false;
		c->until = hr_days_from_civil(y, mo, d) * HR_DAY + h * 3600 + mi * 60 + s;
		c->until_kind = n == 16 ? UNTIL_INSTANT : UNTIL_WALL;
		return true;
	}
	/* BY* lists. */
	char *save = NULL;
	if (!*value || value[strlen(value) - 1] == ',')
		return snprintf(why, len, "%s=%s: empty list item", p->name, value), false;
	char copy[1024]; /* the whole rule is shorter */
	snprintf(copy, sizeof copy, "%s", value);
	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		if (strcmp(p->name, "BYDAY") == 0) {
			/* [+|-][1..53]MO..SU */
			size_t n = strlen(item);
			if (n >= 2 && weekday(item + n - 2)) {
				if (n == 2)
					continue;
				char num[8];
				rule_part ord = {"BYDAY", 1, 53, true};
				if (n - 2 < sizeof num) {
					memcpy(num, item, n - 2);
					num[n - 2] = '\0';
					if (rule_int(num, &ord, &v))
						continue;
				}
			}
			return snprintf(why, len, "BYDAY=%s: \"%s\" is not a weekday such as MO, 1MO or -1FR", value,
					item), false;
		}
		if (!rule_int(item, p, &v))
			return snprintf(why, len, "%s=%s: \"%s\" is not in %s%d..%d", p->name, value, item,
					p->is_signed ? "+/-" : "", p->lo, p->hi), false;
	}
	return true;
}

/*
 * Validate the rule's parts ourselves (precise errors, and the limits herald
 * adds), then let libical parse what remains without UNTIL.
 */
static bool parse_rrule(const char *text, hr_calendar *c, struct icalrecurrencetype *rule, hr_err *err)
{
	char buf[1024], ical_text[1024], why[512];
	size_t o = 0;
	unsigned seen = 0;
	if (strlen(text) >= sizeof buf)
		return hr_fail(err, HR_ERR_INVALID, "/rrule", "longer than %zu characters", sizeof buf - 1);
	for (size_t i = 0; text[i]; i++)
		buf[i] = (char)toupper((unsigned char)text[i]);
	buf[strlen(text)] = '\0';
	char *p = buf;
	if (strncmp(p, "RRULE:", 6) == 0)
		p += 6;
	if (!*p)
		return hr_fail(err, HR_ERR_INVALID, "/rrule", "empty rule: want e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=10");
	ical_text[0] = '\0';
	for (;;) {
		char *end = strchr(p, ';');
		if (end)
			*end = '\0';
		char *eq = strchr(p, '=');
		if (!*p)
			return hr_fail(err, HR_ERR_INVALID, "/rrule", "empty rule part (a stray ';')");
		if (!eq || eq == p || !eq[1])
			return hr_fail(err, HR_ERR_INVALID, "/rrule", "\"%s\" is not NAME=VALUE", p);
		*eq = '\0';
		const rule_part *rp = NULL;
		size_t idx = 0;
		for (; idx < sizeof rule_parts / sizeof rule_parts[0]; idx++)
			if (strcmp(p, rule_parts[idx].name) == 0) {
				rp = &rule_parts[idx];
				break;
			}
		if (!rp)
			return hr_fail(err, HR_ERR_INVALID, "/rrule",
				       "unknown rule part %s (RFC 5545 parts: FREQ, UNTIL, COUNT, INTERVAL, BYSECOND, "
				       "BYMINUTE, BYHOUR, BYDAY, BYMONTHDAY, BYYEARDAY, BYWEEKNO, BYMONTH, BYSETPOS, WKST)",
				       p);
		if (seen & (1u << idx))
			return hr_fail(err, HR_ERR_INVALID, "/rrule", "rule part %s given twice", p);
		seen |= 1u << idx;
		if (!rule_value_ok(rp, eq + 1, c, why, sizeof why))
			return hr_fail(err, HR_ERR_INVALID, "/rrule", "%s", why);
		if (strcmp(rp->name, "UNTIL") != 0) {
			/* Never longer than the input it is cut from; checked all the same. */
			int n = snprintf(ical_text + o, sizeof ical_text - o, "%s%s=%s", o ? ";" : "", p, eq + 1);
			if (n < 0 || (size_t)n >= sizeof ical_text - o)
				return hr_fail(err, HR_ERR_INVALID, "/rrule", "longer than %zu characters",
					       sizeof ical_text - 1);
			o += (size_t)n;
		}
		if (!end)
			break;
		p = end + 1;
	}
	if (!(seen & 1u))
		return hr_fail(err, HR_ERR_INVALID, "/rrule", "FREQ is required (e.g. FREQ=WEEKLY)");
	if ((seen & 2u) && (seen & 4u))
		return hr_fail(err, HR_ERR_INVALID, "/rrule", "COUNT and UNTIL exclude each other (RFC 5545)");
	*rule = icalrecurrencetype_from_string(ical_text);
	if (rule->freq == ICAL_NO_RECURRENCE)
		return hr_fail(err, HR_ERR_INVALID, "/rrule", "not a valid RFC 5545 RRULE (libical refused \"%s\")",
			       ical_text);
	return true;
}

/* ---- expanding a rule into runs ---- */

static bool until_allows(const hr_calendar *c, int64_t wall)
{
	switch (c->until_kind) {
	case UNTIL_INSTANT:
		return hr_tz_instant(c->zone, wall) <= c->until;
	case UNTIL_WALL:
		return wall <= c->until;
	case UNTIL_NONE:
		break;
	}
	return true;
}

/* The start of the run of an occurrence at wall time `wall`. */
static int64_t run_start(const hr_calendar *c, int64_t wall)
{
	return c->per_recipient ? wall - HR_CALENDAR_LEAD_S : hr_tz_instant(c->zone, wall);
}

/*
 * Every occurrence from DTSTART to COUNT, UNTIL or the end of 2037 into
 * c->runs.  false when there are more than HR_CALENDAR_MAX_RUNS.
 */
static bool expand_rule(hr_calendar *c, struct icalrecurrencetype rule)
{
	icalrecur_iterator *it = icalrecur_iterator_new(rule, ical_from_wall(c->start_wall));
	size_t cap = 0;
	int64_t prev = INT64_MIN;
	bool ok = true;
	if (!it)
		return true; /* libical refused the rule with this start: no runs */
	for (;;) {
		struct icaltimetype t = icalrecur_iterator_next(it);
		if (icaltime_is_null_time(t))
			break;
		int64_t wall = wall_from_ical(t);
		/* Occurrences only go forward; anything else would be an expander bug: stop. */
		if (wall <= prev || wall >= HR_TZ_MAX || !until_allows(c, wall))
			break;
		prev = wall;
		int64_t s = run_start(c, wall);
		/*
		 * An occurrence whose local time fell into a DST gap starts with
		 * the next one (an hourly rule's 02:00 and 03:00 on spring-forward
		 * day): one run.
		 */
		if (c->nruns > 0 && s <= c->runs[c->nruns - 1])
			continue;
		if (c->nruns == HR_CALENDAR_MAX_RUNS) {
			ok = false;
			break;
		}
		if (c->nruns == cap) {
			cap = cap ? cap * 2 : 64;
			c->runs = hr_realloc(c->runs, cap * sizeof *c->runs);
		}
		c->runs[c->nruns++] = s;
	}
	icalrecur_iterator_free(it);
	return ok;
}

/* ---- walking the runs ---- */

/*
 * Hand each run, in order, to fn until it returns false.  `hint`: the caller
 * wants no run before it (a recurring calendar starts its search there).
 */
static void walk_runs(const hr_calendar *c, int64_t activated_at, int64_t hint, bool (*fn)(void *ctx, int64_t run),
		      void *ctx)
{
	switch (c->kind) {
	case HR_CAL_NOW:
		(void)fn(ctx, activated_at);
		return;
	case HR_CAL_AT: {
		int64_t s = c->per_recipient ? c->at_wall - HR_CALENDAR_LEAD_S : c->at;
		(void)fn(ctx, s > activated_at ? s : activated_at);
		return;
	}
	case HR_CAL_RECURRING: {
		/* Runs before activation are skipped: start at the first >= both bounds. */
		int64_t from = activated_at > hint ? activated_at : hint;
		size_t lo = 0, hi = c->nruns;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (c->runs[mid] < from)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t i = lo; i < c->nruns; i++)
			if (!fn(ctx, c->runs[i]))
				return;
		return;
	}
	}
}

/* ---- parsing ---- */

/* Optional string member; *out NULL when absent. */
static bool get_string(json_t *root, const char *key, const char **out, hr_err *err)
{
	json_t *v = json_object_get(root, key);
	char ptr[64];
	*out = NULL;
	if (!v)
		return true;
	pointer_of(key, ptr, sizeof ptr);
	if (!json_is_string(v))
		return hr_fail(err, HR_ERR_INVALID, ptr, "must be a string");
	*out = json_string_value(v);
	return true;
}

static bool parse_kind_fields(json_t *root, hr_calendar *c, hr_err *err)
{
	const char *at, *start, *rrule;
	char why[256];
	bool has_offset;
	int32_t offset;
	if (!get_string(root, "at", &at, err) || !get_string(root, "start", &start, err) ||
	    !get_string(root, "rrule", &rrule, err))
		return false;
	const char *kind = json_string_value(json_object_get(root, "kind"));
	if (c->kind != HR_CAL_AT && at)
		return hr_fail(err, HR_ERR_INVALID, "/at", "only for kind \"at\" (this calendar is \"%s\")", kind);
	if (c->kind != HR_CAL_RECURRING && start)
		return hr_fail(err, HR_ERR_INVALID, "/start", "only for kind \"recurring\" (this calendar is \"%s\")",
			       kind);
	if (c->kind != HR_CAL_RECURRING && rrule)
		return hr_fail(err, HR_ERR_INVALID, "/rrule", "only for kind \"recurring\" (this calendar is \"%s\")",
			       kind);
	switch (c->kind) {
	case HR_CAL_NOW:
		if (c->per_recipient)
			return hr_fail(err, HR_ERR_INVALID, "/local_time_per_recipient",
				       "a \"now\" calendar has no local time to keep; use kind \"at\"");
		return true;
	case HR_CAL_AT: {
		int64_t wall;
		if (!at)
			return hr_fail(err, HR_ERR_INVALID, "/at", "required for kind \"at\"");
		if (!parse_datetime(at, &wall, &has_offset, &offset, why, sizeof why))
			return hr_fail(err, HR_ERR_INVALID, "/at", "%s: %s", at, why);
		if (c->per_recipient && has_offset)
			return hr_fail(err, HR_ERR_INVALID, "/at",
				       "%s: a local time per recipient is a date-time without offset "
				       "(e.g. 2026-12-01T10:00:00)", at);
		c->at_wall = wall;
		c->at = has_offset ? wall - offset : hr_tz_instant(c->zone, wall);
		if (c->at < HR_TZ_MIN || c->at >= HR_TZ_MAX)
			return hr_fail(err, HR_ERR_INVALID, "/at", "%s: outside 1970..2037", at);
		return true;
	}
	case HR_CAL_RECURRING: {
		if (!rrule)
			return hr_fail(err, HR_ERR_INVALID, "/rrule", "required for kind \"recurring\"");
		if (!start)
			return hr_fail(err, HR_ERR_INVALID, "/start",
				       "required for kind \"recurring\": the rule's first local date-time (DTSTART)");
		if (!parse_datetime(start, &c->start_wall, &has_offset, &offset, why, sizeof why))
			return hr_fail(err, HR_ERR_INVALID, "/start", "%s: %s", start, why);
		if (has_offset)
			return hr_fail(err, HR_ERR_INVALID, "/start",
				       "%s: start is a local date-time in time_zone; drop the offset", start);
		struct icalrecurrencetype rule;
		if (!parse_rrule(rrule, c, &rule, err))
			return false;
		bool before = (c->until_kind == UNTIL_WALL && c->until < c->start_wall) ||
			      (c->until_kind == UNTIL_INSTANT && c->until < hr_tz_instant(c->zone, c->start_wall));
		if (before)
			return hr_fail(err, HR_ERR_INVALID, "/rrule", "UNTIL is before start: the rule has no runs");
		if (!expand_rule(c, rule))
			return hr_fail(err, HR_ERR_INVALID, "/rrule",
				       "more than %d runs before the end of 2037: add COUNT or UNTIL, or use a "
				       "coarser rule", HR_CALENDAR_MAX_RUNS);
		if (c->nruns == 0)
			return hr_fail(err, HR_ERR_INVALID, "/rrule",
				       "the rule has no runs from %s to the end of 2037", start);
		return true;
	}
	}
	return hr_fail(err, HR_ERR_INTERNAL, "/kind", "unhandled kind");
}

static bool parse_quiet(json_t *root, hr_calendar *c, hr_err *err)
{
	json_t *q = json_object_get(root, "quiet_hours");
	const char *key;
	json_t *v;
	if (!q || json_is_null(q))
		return true;
	if (!json_is_object(q))
		return hr_fail(err, HR_ERR_INVALID, "/quiet_hours",
			       "must be an object such as {\"from\": \"21:00\", \"to\": \"09:00\"}, or null");
	json_object_foreach(q, key, v) {
		if (strcmp(key, "from") != 0 && strcmp(key, "to") != 0) {
			char tok[96], ptr[128];
			pointer_of(key, tok, sizeof tok);
			snprintf(ptr, sizeof ptr, "/quiet_hours%s", tok);
			return hr_fail(err, HR_ERR_INVALID, ptr, "unknown field (quiet hours have from and to)");
		}
	}
	const struct {
		const char *key, *ptr;
		int32_t *out;
	} ends[] = {{"from", "/quiet_hours/from", &c->quiet_from}, {"to", "/quiet_hours/to", &c->quiet_to}};
	for (size_t i = 0; i < 2; i++) {
		v = json_object_get(q, ends[i].key);
		if (!v)
			return hr_fail(err, HR_ERR_INVALID, ends[i].ptr, "required: a local time \"HH:MM\"");
		if (!json_is_string(v) || !parse_hhmm(json_string_value(v), ends[i].out))
			return hr_fail(err, HR_ERR_INVALID, ends[i].ptr, "want a local time \"HH:MM\" (00:00..23:59)");
	}
	if (c->quiet_from == c->quiet_to)
		return hr_fail(err, HR_ERR_INVALID, "/quiet_hours",
			       "from and to are equal: quiet hours would be empty or the whole day");
	c->quiet = true;
	return true;
}

bool hr_calendar_parse(const char *json, const char *tenant_tz, hr_calendar **out, hr_err *err)
{
	json_t *root = NULL, *v;
	json_error_t je;
	hr_calendar *c = NULL;
	const char *key, *kind, *zone;
	char ptr[128];

	*out = NULL;
	root = json_loads(json ? json : "", JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		hr_fail(err, HR_ERR_INVALID, "", "not valid JSON (line %d, column %d): %s", je.line, je.column,
			je.text);
		goto fail;
	}
	if (!json_is_object(root)) {
		hr_fail(err, HR_ERR_INVALID, "", "a calendar is a JSON object");
		goto fail;
	}
	json_object_foreach(root, key, v) {
		bool known = false;
		for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
			known = known || strcmp(key, fields[i]) == 0;
		if (!known) {
			pointer_of(key, ptr, sizeof ptr);
			hr_fail(err, HR_ERR_INVALID, ptr,
				"unknown field (a calendar has kind, at, start, rrule, time_zone, "
				"local_time_per_recipient, spread_minutes, quiet_hours)");
			goto fail;
		}
	}
	c = hr_calloc(1, sizeof *c);

	/* kind */
	v = json_object_get(root, "kind");
	if (!v) {
		hr_fail(err, HR_ERR_INVALID, "/kind", "required: \"now\", \"at\" or \"recurring\"");
		goto fail;
	}
	kind = json_string_value(v);
	size_t k = 0;
	for (; kind && k < sizeof kinds / sizeof kinds[0]; k++)
		if (strcmp(kind, kinds[k].name) == 0)
			break;
	if (!kind || k == sizeof kinds / sizeof kinds[0]) {
		hr_fail(err, HR_ERR_INVALID, "/kind", "want \"now\", \"at\" or \"recurring\"");
		goto fail;
	}
	c->kind = kinds[k].kind;

	/* time_zone: the calendar's, else the tenant's, else UTC */
	if (!get_string(root, "time_zone", &zone, err))
		goto fail;
	if (zone) {
		c->zone = hr_tz_find(zone);
		if (!c->zone) {
			hr_fail(err, HR_ERR_INVALID, "/time_zone",
				"unknown time zone \"%.64s\" (want an IANA name such as Europe/Berlin)", zone);
			goto fail;
		}
	} else {
		zone = tenant_tz && *tenant_tz ? tenant_tz : "UTC";
		c->zone = hr_tz_find(zone);
		if (!c->zone) {
			hr_fail(err, HR_ERR_INVALID, "/time_zone",
				"the tenant's time zone \"%.64s\" is unknown; set time_zone", zone);
			goto fail;
		}
	}
	c->zone_name = hr_strdup(zone);

	/* local_time_per_recipient */
	v = json_object_get(root, "local_time_per_recipient");
	if (v && !json_is_boolean(v)) {
		hr_fail(err, HR_ERR_INVALID, "/local_time_per_recipient", "must be true or false");
		goto fail;
	}
	c->per_recipient = v && json_is_true(v);

	/* spread_minutes */
	v = json_object_get(root, "spread_minutes");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > HR_CALENDAR_MAX_SPREAD_MIN) {
			hr_fail(err, HR_ERR_INVALID, "/spread_minutes", "want a whole number of minutes in 0..%d",
				HR_CALENDAR_MAX_SPREAD_MIN);
			goto fail;
		}
		c->spread_s = (int64_t)json_integer_value(v) * 60;
	}

	if (!parse_quiet(root, c, err))
		goto fail;
	if (!parse_kind_fields(root, c, err))
		goto fail;

	json_decref(root);
	*out = c;
	return true;
fail:
	json_decref(root);
	hr_calendar_free(c);
	return false;
}

void hr_calendar_free(hr_calendar *c)
{
	if (!c)
		return;
	hr_free(c->zone_name);
	hr_free(c->runs);
	hr_free(c);
}

hr_calendar_kind hr_calendar_kind_of(const hr_calendar *c)
{
	return c->kind;
}

const char *hr_calendar_zone(const hr_calendar *c)
{
	return c->zone_name;
}

bool hr_calendar_zone_known(const char *name)
{
	return hr_tz_find(name) != NULL;
}

/* ---- runs ---- */

typedef struct next_ctx {
	int64_t after;
	int64_t found;
	bool ok;
} next_ctx;

static bool take_next(void *ctx, int64_t run)
{
	next_ctx *n = ctx;
	if (run <= n->after)
		return true;
	n->found = run;
	n->ok = true;
	return false;
}

bool hr_calendar_next_run(const hr_calendar *c, int64_t activated_at, int64_t after, int64_t *run_at)
{
	next_ctx n = {after, 0, false};
	walk_runs(c, activated_at, after == INT64_MAX ? after : after + 1, take_next, &n);
	if (n.ok)
		*run_at = n.found;
	return n.ok;
}

typedef struct runs_ctx {
	int64_t from, to;
	int64_t *out;
	int max, n;
} runs_ctx;

static bool collect_run(void *ctx, int64_t run)
{
	runs_ctx *r = ctx;
	if (run >= r->to)
		return false;
	if (run >= r->from)
		r->out[r->n++] = run;
	return r->n < r->max;
}

int hr_calendar_runs(const hr_calendar *c, int64_t activated_at, int64_t from, int64_t to, int64_t *out, int max)
{
	runs_ctx r = {from, to, out, max, 0};
	if (max <= 0 || from >= to)
		return 0;
	walk_runs(c, activated_at, from, collect_run, &r);
	return r.n;
}

/* ---- one recipient ---- */

static int64_t spread_offset(int64_t window, uint64_t index, uint64_t total)
{
	if (window <= 0 || total <= 1)
		return 0;
	if (index >= total)
		index = total - 1;
	/* floor(i x W / N): i < N, so the result is < W and consecutive slots differ by W / N. */
	return (int64_t)((hr_u128)index * (uint64_t)window / total);
}

/*
 * Quiet hours [from, to) on the recipient's wall clock; when from > to they
 * cross midnight (21:00-09:00).  A due inside them moves to their end: `to`
 * on the same day when it is earlier in the day than `to`, else on the next
 * day.  `to` itself goes through the DST rules like any local time.
 */
static int64_t leave_quiet_hours(const hr_calendar *c, const hr_tz *z, int64_t due)
{
	int64_t wall = hr_tz_wall(z, due);
	int64_t day = hr_floor_div(wall, HR_DAY);
	int32_t tod = (int32_t)(wall - day * HR_DAY);
	int64_t end_day;
	if (c->quiet_from < c->quiet_to) {
		if (tod < c->quiet_from || tod >= c->quiet_to)
			return due;
		end_day = day;
	} else if (tod >= c->quiet_from) {
		end_day = day + 1;
	} else if (tod < c->quiet_to) {
		end_day = day;
	} else {
		return due;
	}
	int64_t end_wall = end_day * HR_DAY + c->quiet_to;
	int64_t end = hr_tz_instant(z, end_wall);
	/*
	 * The first occurrence of `to` can be earlier than the due only when
	 * `to` lies in a fall-back overlap and the due is in the repeated hour's
	 * second pass (02:10 CET with quiet hours to 02:30): the clock still
	 * shows a quiet time, so wait for `to` on this pass of the clock.
	 */
	if (end <= due)
		end = due + (end_wall - wall);
	return end;
}

int64_t hr_calendar_due(const hr_calendar *c, int64_t run_at, const char *recipient_tz, uint64_t index,
			uint64_t total)
{
	const hr_tz *z = c->zone;
	/* Look the zone up only when it matters: a look-up costs a lock and a search. */
	if ((c->per_recipient || c->quiet) && recipient_tz && *recipient_tz) {
		const hr_tz *r = hr_tz_find(recipient_tz);
		if (r)
			z = r;
	}
	int64_t due = run_at;
	if (c->per_recipient) {
		int64_t wall = c->kind == HR_CAL_AT ? c->at_wall : run_at + HR_CALENDAR_LEAD_S;
		due = hr_tz_instant(z, wall);
		/* Zones east of UTC+14 do not exist; a late "at" activation sends the passed zones at once. */
		if (due < run_at)
			due = run_at;
	}
	due += spread_offset(c->spread_s, index, total);
	if (c->quiet)
		due = leave_quiet_hours(c, z, due);
	return due;
}
