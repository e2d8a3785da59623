/*
 * clock.h -- herald's clock: real time plus an operator-set skew.
 *
 * Every decision about *when* (calendars, rule delays, quiet hours, frequency
 * caps) uses herald time.  In SQL that is herald_clock.now() (control
 * migration 0002_clock.sql); in C it is hr_clock_now() with the skew a
 * process last read with hr_clock_refresh().  In production the skew is 0.
 * Tests and the demo advance it (`heraldctl clock advance 1d`), which also
 * NOTIFYs channel `herald_clock` so a listening scheduler refreshes at once
 * instead of at its next periodic refresh.
 *
 * The skew only moves forward: time that went backwards would make a rule
 * step or a campaign run due twice.
 */
#ifndef HERALD_CLOCK_H
#define HERALD_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "err.h"

/* The NOTIFY channel a clock change is announced on. */
#define HR_CLOCK_CHANNEL "herald_clock"

/* Read the skew (microseconds) from the database. */
bool hr_clock_read(PGconn *c, int64_t *skew_us, hr_err *err) HR_MUST_CHECK;

/* Advance the skew by delta_us (> 0) and NOTIFY herald_clock; *skew_us gets the new skew. */
bool hr_clock_advance(PGconn *c, int64_t delta_us, int64_t *skew_us, hr_err *err) HR_MUST_CHECK;

/* Reset the skew to 0 (only while nothing depends on it: tests, the demo) and NOTIFY. */
bool hr_clock_reset(PGconn *c, hr_err *err) HR_MUST_CHECK;

/*
 * Process-wide skew cache: hr_clock_refresh() reads the skew into it,
 * hr_clock_now() is CLOCK_REALTIME + that skew, in microseconds since the epoch.
 * Thread-safe (an atomic).
 */
bool hr_clock_refresh(PGconn *c, hr_err *err) HR_MUST_CHECK;
int64_t hr_clock_now(void);
int64_t hr_clock_skew(void);

/*
 * A duration: a number followed by a unit, s m h d or w ("90s", "15m",
 * "2h", "3d", "1w"), or plain seconds.  Returns false (err names it) when
 * malformed, zero or negative, or over ten years.
 */
bool hr_duration_parse(const char *s, int64_t *us, hr_err *err) HR_MUST_CHECK;

#endif
