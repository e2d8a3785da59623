/*
 * clock.c -- herald time.  See clock.h.
 */
#include "clock.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"

static _Atomic int64_t cached_skew;

bool hr_clock_read(PGconn *c, int64_t *skew_us, hr_err *err)
{
	PGresult *r;
	if (!hr_db_query(c, "SELECT (extract(epoch FROM skew) * 1000000)::bigint FROM herald_clock.state", 0,
			 NULL, &r, err))
		return false;
	int n = PQntuples(r);
	if (n != 1) {
		PQclear(r);
		return hr_fail(err, HR_ERR_DB, NULL, "herald_clock.state has %d rows, expected 1", n);
	}
	*skew_us = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return true;
}

bool hr_clock_advance(PGconn *c, int64_t delta_us, int64_t *skew_us, hr_err *err)
{
	if (delta_us <= 0)
		return hr_fail(err, HR_ERR_INVALID, "duration", "the clock only moves forward");
	char d[32];
	snprintf(d, sizeof d, "%lld", (long long)delta_us);
	const char *p[] = {d};
	PGresult *r;
	/* One statement: the update and the notification commit together. */
	if (!hr_db_query(c,
			 "WITH u AS (UPDATE herald_clock.state SET skew = skew + make_interval(secs => $1::bigint / "
			 "1e6) RETURNING skew) "
			 "SELECT (extract(epoch FROM skew) * 1000000)::bigint, pg_notify('" HR_CLOCK_CHANNEL
			 "', '') FROM u",
			 1, p, &r, err))
		return false;
	*skew_us = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return true;
}

bool hr_clock_reset(PGconn *c, hr_err *err)
{
	return hr_db_exec(c,
			  "UPDATE herald_clock.state SET skew = '0'; SELECT pg_notify('" HR_CLOCK_CHANNEL "', '')",
			  err);
}

bool hr_clock_refresh(PGconn *c, hr_err *err)
{
	int64_t s;
	if (!hr_clock_read(c, &s, err))
		return false;
	atomic_store(&cached_skew, s);
	return true;
}

int64_t hr_clock_skew(void)
{
	return atomic_load(&cached_skew);
}

int64_t hr_clock_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + atomic_load(&cached_skew);
}

bool hr_duration_parse(const char *s, int64_t *us, hr_err *err)
{
	const int64_t max = (int64_t)3650 * 86400 * 1000000;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !(v > 0))
		return hr_fail(err, HR_ERR_INVALID, "duration",
			       "duration '%s': expected a positive number with a unit s, m, h, d or w", s);
	double unit = 1;
	if (*end && end[1] == '\0') {
		switch (*end) {
		case 's': unit = 1; break;
		case 'm': unit = 60; break;
		case 'h': unit = 3600; break;
		case 'd': unit = 86400; break;
		case 'w': unit = 7 * 86400; break;
		default:
			return hr_fail(err, HR_ERR_INVALID, "duration", "duration '%s': unknown unit '%c' (s, m, h, d, w)",
				       s, *end);
		}
	} else if (*end) {
		return hr_fail(err, HR_ERR_INVALID, "duration", "duration '%s': trailing characters after the unit", s);
	}
	double t = v * unit * 1e6;
	if (t > (double)max || t < 1)
		return hr_fail(err, HR_ERR_INVALID, "duration", "duration '%s': must be between 1 us and ten years", s);
	*us = (int64_t)t;
	return true;
}
