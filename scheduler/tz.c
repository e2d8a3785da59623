/*
 * tz.c -- zone offsets and local-time instants over libical's zones.
 *
 * Only one libical question is asked: "what offset is in force at this UTC
 * instant?" (icaltimezone_get_utc_offset_of_utc_time), which has one answer
 * for every instant.  The DST rules for local times that do not exist or
 * exist twice are herald's own (tz.h), built on that question alone, so they
 * do not depend on how libical resolves ambiguous local times.
 */
#include "tz.h"

#include <string.h>

#include <libical/ical.h>

/* hr_tz is libical's icaltimezone; the cast is the whole wrapper. */
static icaltimezone *ical(const hr_tz *z)
{
	return (icaltimezone *)(uintptr_t)z;
}

int64_t hr_floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms). */
int64_t hr_days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = hr_floor_div(y, 400);
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void hr_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
	days += 719468;
	int64_t era = hr_floor_div(days, 146097);
	int64_t doe = days - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

int hr_days_in_month(int64_t y, int m)
{
	static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dim[m - 1];
}

/*
 * A zone name as the tz database spells them: components of letters, digits,
 * '_', '-', '+', separated by single '/'.  Anything else (paths, "..", empty
 * components) is refused here so that libical, which falls back to opening
 * <zoneinfo>/<name>, never opens a file outside the zoneinfo tree.
 */
static bool plausible_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64 || name[0] == '/' || name[n - 1] == '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			  ch == '_' || ch == '-' || ch == '+' || ch == '/';
		if (!ok || (ch == '/' && name[i + 1] == '/'))
			return false;
	}
	return true;
}

const hr_tz *hr_tz_find(const char *name)
{
	if (!name || !plausible_name(name))
		return NULL;
	if (strcmp(name, "UTC") == 0)
		return hr_tz_utc();
	return (const hr_tz *)icaltimezone_get_builtin_timezone(name);
}

const hr_tz *hr_tz_utc(void)
{
	return (const hr_tz *)icaltimezone_get_utc_timezone();
}

const char *hr_tz_name(const hr_tz *z)
{
	const char *loc = icaltimezone_get_location(ical(z));
	return loc ? loc : "UTC";
}

int32_t hr_tz_offset(const hr_tz *z, int64_t t)
{
	if (z == hr_tz_utc())
		return 0;
	/* Outside the range libical expands (and herald supports), use its edge. */
	if (t < HR_TZ_MIN)
		t = HR_TZ_MIN;
	if (t > INT64_C(253402300799)) /* 9999-12-31T23:59:59Z */
		t = INT64_C(253402300799);
	int64_t days = hr_floor_div(t, HR_DAY), sod = t - days * HR_DAY, y;
	int m, d;
	hr_civil_from_days(days, &y, &m, &d);
	struct icaltimetype tt = {
		.year = (int)y, .month = m, .day = d,
		.hour = (int)(sod / 3600), .minute = (int)(sod / 60 % 60), .second = (int)(sod % 60),
		.zone = icaltimezone_get_utc_timezone(),
	};
	int is_daylight = 0;
	return icaltimezone_get_utc_offset_of_utc_time(ical(z), &tt, &is_daylight);
}

int64_t hr_tz_wall(const hr_tz *z, int64_t t)
{
	return t + hr_tz_offset(z, t);
}

int64_t hr_tz_instant(const hr_tz *z, int64_t wall)
{
	/*
	 * Offsets are within a day of zero, so every instant whose wall time
	 * could be `wall` lies in (wall - 1 day, wall + 1 day).  The offsets in
	 * force just before and just after that window are the only candidates
	 * (one change at most in the window, tz.h).
	 */
	int32_t before = hr_tz_offset(z, wall - HR_DAY), after = hr_tz_offset(z, wall + HR_DAY);
	int64_t u1 = wall - before, u2 = wall - after;
	bool ok1 = hr_tz_offset(z, u1) == before, ok2 = hr_tz_offset(z, u2) == after;
	if (ok1 && ok2)
		return u1 < u2 ? u1 : u2; /* exists twice (or once, u1 == u2): the first */
	if (ok1)
		return u1;
	if (ok2)
		return u2;
	/*
	 * The wall time fell into a gap (before < after): the change happened
	 * in (u2, u1].  Binary search the first instant under the new offset;
	 * its wall time is the first valid local time after the gap.
	 */
	int64_t lo = u2, hi = u1; /* offset(lo) == before side, offset(hi) == after side */
	while (hi - lo > 1) {
		int64_t mid = lo + (hi - lo) / 2;
		if (hr_tz_offset(z, mid) == after)
			hi = mid;
		else
			lo = mid;
	}
	return hi;
}
