/*
 * calendar.h -- a campaign's calendar: WHEN each recipient gets the message.
 *
 * Contract (docs/calendar.md has the JSON format, examples and the rules):
 *
 * - A calendar is parsed once from its JSON definition and is then immutable.
 *   hr_calendar_parse() validates everything -- field types, unknown fields,
 *   the time zone, the RRULE (parts, ranges, COUNT/UNTIL, that it has runs),
 *   the spread window, quiet hours -- and on failure names the offending
 *   field as a JSON pointer ("/quiet_hours/from") in err->field, kind
 *   HR_ERR_INVALID.  Unknown fields are errors, not ignored.
 *
 * - A *run* is one fan-out of the campaign to its audience.  Runs are the
 *   calendar's occurrences at or after the campaign's activation instant
 *   (`activated_at`, owned by the caller):
 *     "now"        one run, at activated_at;
 *     "at"         one run, at the given instant, or at activated_at when
 *                  that is later (a late activation sends at once);
 *     "recurring"  every RRULE occurrence that starts at or after
 *                  activated_at (earlier ones are skipped, never caught up).
 *   With local_time_per_recipient, a run starts when its local time first
 *   happens anywhere on Earth (the wall time read as UTC+14:00); each
 *   recipient's due instant comes from hr_calendar_due().
 *
 * - hr_calendar_due() gives one recipient's due instant within a run: the
 *   wall time in the recipient's zone (local-time sends; a missing or
 *   unknown recipient zone falls back to the calendar's zone), plus its
 *   share of the spread window (recipient i of N at start + floor(i x W / N):
 *   the first at start, the last before start + W, evenly), then moved out
 *   of quiet hours (read in the recipient's zone) to their end.  It is a
 *   pure function: the same arguments always give the same instant, so a
 *   scheduler that restarts mid fan-out recomputes identical due times.
 *
 * - Times are unix seconds (int64_t).  Supported instants: 1970 to the end
 *   of 2037 (tz.h explains the bound); recurring calendars have no runs
 *   after 2037 and at most HR_CALENDAR_MAX_RUNS occurrences in all.
 *
 * Ownership: hr_calendar_parse() returns a calendar the caller frees with
 * hr_calendar_free().  No function keeps a pointer to its arguments.
 * Thread safety: a parsed calendar is immutable; every function may be
 * called from any thread, concurrently, on the same calendar.
 * Cost: hr_calendar_due() is a few zone look-ups (no allocation).  A
 * recurring rule is expanded once, when parsed (up to HR_CALENDAR_MAX_RUNS
 * runs, 8 bytes each; libical's expander costs ~2 us per occurrence, so an
 * hourly rule of 90,000 runs takes ~0.2 s to parse); hr_calendar_next_run()
 * is then a binary search.
 */
#ifndef HERALD_SCHED_CALENDAR_H
#define HERALD_SCHED_CALENDAR_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

/* Most occurrences a recurring rule may have from its start to the end of 2037. */
#define HR_CALENDAR_MAX_RUNS 100000
/* Longest spread window, in minutes (7 days). */
#define HR_CALENDAR_MAX_SPREAD_MIN 10080
/* A per-recipient local time happens first in UTC+14 (Kiritimati) ... */
#define HR_CALENDAR_LEAD_S (14 * 3600)
/* ... and last in UTC-12: a run's local-time dues lie within 26 h of its start. */
#define HR_CALENDAR_LAG_S (12 * 3600)

typedef struct hr_calendar hr_calendar;

typedef enum hr_calendar_kind {
	HR_CAL_NOW,       /* once, when the campaign is activated */
	HR_CAL_AT,        /* once, at a given time */
	HR_CAL_RECURRING, /* RFC 5545 RRULE from a local start in the calendar's zone */
} hr_calendar_kind;

/*
 * Parse and validate a calendar.  tenant_tz is the tenant's zone, used when
 * the JSON has no "time_zone" (NULL or "" = UTC).  On success *out is a new
 * calendar; on failure *out is NULL and err (kind INVALID) names the JSON
 * pointer of the offending field ("" for the document itself).
 */
bool hr_calendar_parse(const char *json, const char *tenant_tz, hr_calendar **out, hr_err *err) HR_MUST_CHECK;
void hr_calendar_free(hr_calendar *c);

hr_calendar_kind hr_calendar_kind_of(const hr_calendar *c);
/* The calendar's zone name: its "time_zone", else the tenant's, else "UTC". */
const char *hr_calendar_zone(const hr_calendar *c);

/*
 * The first run that starts strictly after `after`, for a campaign activated
 * at `activated_at`.  The scheduler passes activated_at - 1 for the first run
 * and the previous run's instant afterwards.  false when there is none.
 */
bool hr_calendar_next_run(const hr_calendar *c, int64_t activated_at, int64_t after, int64_t *run_at) HR_MUST_CHECK;

/*
 * One recipient's due instant in the run that starts at run_at (as returned
 * by hr_calendar_next_run).  recipient_tz may be NULL or unknown: the
 * calendar's zone is used.  index counts from 0 to total - 1 over the run's
 * recipients (a caller bug such as index >= total is clamped to the last
 * slot).  Never earlier than run_at.
 */
int64_t hr_calendar_due(const hr_calendar *c, int64_t run_at, const char *recipient_tz, uint64_t index,
			uint64_t total);

/*
 * Runs starting in [from, to), for a calendar view: writes up to max of them
 * to out, in order, and returns how many it wrote.  When it returns max,
 * there may be more: ask again from out[max - 1] + 1.
 */
int hr_calendar_runs(const hr_calendar *c, int64_t activated_at, int64_t from, int64_t to, int64_t *out,
		     int max);

/* Whether `name` is a time zone herald knows (for validating contacts' zones at import). */
bool hr_calendar_zone_known(const char *name);

#endif
