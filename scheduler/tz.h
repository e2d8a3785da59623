/*
 * tz.h -- time zones for the campaign calendar: offsets at an instant, and the
 * instant of a local wall-clock time under herald's DST rules.
 *
 * Contract:
 * - Zones are IANA names ("Europe/Berlin", "Asia/Kathmandu", "UTC", aliases
 *   such as "US/Eastern").  The rules come from the system's zoneinfo
 *   (Debian's tzdata) through libical's builtin-timezone cache, so a tzdata
 *   update through apt applies after a restart and herald writes no tz rule
 *   itself.  hr_tz_find() refuses names that are not plain zone names
 *   (".." , leading '/', odd characters) before libical looks at the disk.
 * - A zone handle lives as long as the process (libical's cache owns it):
 *   never freed by the caller, safe to keep in immutable structures.
 * - Wall times are "floating seconds": the local date and time counted as if
 *   they were UTC (days since 1970-01-01 x 86400 + seconds of the day).
 * - DST rules (docs/calendar.md):
 *     a local time that does not exist (spring forward: 02:30 on the change
 *     day) becomes the first instant after the gap (03:00 local);
 *     a local time that exists twice (fall back) is its first occurrence.
 *   hr_tz_instant() assumes at most one offset change within a day either
 *   side of the time asked for, true of every zone in the supported range.
 * - Supported range: instants in [HR_TZ_MIN, HR_TZ_MAX) -- 1970 to the end of
 *   2037.  tests/calendar cross-checks libical's offsets against glibc at
 *   every hour and every transition of 2026..2037 in 20 zones; past 2037 a
 *   few zones (Chatham, Lord Howe, St Johns, Santiago) disagree with glibc
 *   around their transitions, as do some zones for past years (Tehran
 *   before 2022, Sao Paulo's DST years) -- libical 3.0 rebuilds rules from
 *   the TZif data imperfectly.
 *
 * Thread safety: every function is safe to call from any thread; libical
 * serialises its zone cache with its own mutexes (Debian builds it with
 * pthreads).  Errors: hr_tz_find() answers NULL; the rest cannot fail.
 */
#ifndef HERALD_SCHED_TZ_H
#define HERALD_SCHED_TZ_H

#include <stdbool.h>
#include <stdint.h>

#define HR_TZ_MIN INT64_C(0)          /* 1970-01-01T00:00:00Z */
#define HR_TZ_MAX INT64_C(2145916800) /* 2038-01-01T00:00:00Z */
#define HR_DAY 86400

typedef struct hr_tz hr_tz;

/* The zone called `name`; NULL when unknown or not a plausible zone name. */
const hr_tz *hr_tz_find(const char *name);
/* UTC, never NULL. */
const hr_tz *hr_tz_utc(void);
/* The zone's IANA name as libical knows it. */
const char *hr_tz_name(const hr_tz *z);

/* Seconds east of UTC in force at instant t (unix seconds). */
int32_t hr_tz_offset(const hr_tz *z, int64_t t);
/* Local wall time (floating seconds) at instant t. */
int64_t hr_tz_wall(const hr_tz *z, int64_t t);
/* The instant of wall time `wall` in zone z, under the DST rules above. */
int64_t hr_tz_instant(const hr_tz *z, int64_t wall);

/* Proleptic Gregorian calendar arithmetic (days since 1970-01-01). */
int64_t hr_days_from_civil(int64_t y, int m, int d);
void hr_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int hr_days_in_month(int64_t y, int m);
/* floor(a / b) for b > 0. */
int64_t hr_floor_div(int64_t a, int64_t b);

#endif
