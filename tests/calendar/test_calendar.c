/*
 * test_calendar.c -- golden tests of the campaign calendar (scheduler/calendar.c)
 * and its time-zone layer (scheduler/tz.c).
 *
 * Expected instants were computed independently (Python's zoneinfo over the
 * same tzdata, then the DST rules of docs/calendar.md applied by hand) and
 * are written out as RFC 3339 UTC strings so a reader can check them.
 * tz_offsets_match_glibc cross-checks libical's offsets against glibc's
 * localtime_r (TZ switched per zone: safe here, check forks every test and
 * the test is single-threaded).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calendar.h"
#include "harness.h"
#include "tz.h"

/* ---- helpers ---- */

/* "2026-12-01T09:00:00Z" -> unix seconds. */
static int64_t T(const char *s)
{
	int y, mo, d, h, mi, se;
	ck_assert_msg(sscanf(s, "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &se) == 6, "bad test time %s", s);
	return hr_days_from_civil(y, mo, d) * HR_DAY + h * 3600 + mi * 60 + se;
}

/* unix seconds -> "2026-12-01T09:00:00Z" (a rotating set of buffers). */
static const char *F(int64_t t)
{
	static char bufs[8][32];
	static int i;
	char *b = bufs[i++ % 8];
	int64_t days = hr_floor_div(t, HR_DAY), sod = t - days * HR_DAY, y;
	int m, d;
	hr_civil_from_days(days, &y, &m, &d);
	snprintf(b, 32, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)y, m, d, (int)(sod / 3600),
		 (int)(sod / 60 % 60), (int)(sod % 60));
	return b;
}

static hr_calendar *cal(const char *json, const char *tenant_tz)
{
	hr_calendar *c = NULL;
	hr_err err = {0};
	bool ok = hr_calendar_parse(json, tenant_tz, &c, &err);
	ck_assert_msg(ok, "%s: got error %s: %s, want accepted", json, err.field, err.msg);
	return c;
}

#define ASSERT_TIME(got, want, ...)                                                                  \
	do {                                                                                           \
		int64_t g_ = (got), w_ = T(want);                                                      \
		if (g_ != w_) {                                                                        \
			char ctx_[512];                                                                \
			snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                      \
			ck_abort_msg("%s: got %s, want %s", ctx_, F(g_), want);                        \
		}                                                                                      \
	} while (0)

/* ---- parsing: every error names its JSON pointer ---- */

static const struct {
	const char *json, *tenant_tz;
	const char *field, *msg; /* msg: substring of the message */
} bad[] = {
	{"", NULL, "", "not valid JSON"},
	{"{\"kind\":\"now\",}", NULL, "", "not valid JSON"},
	{"[1]", NULL, "", "a calendar is a JSON object"},
	{"{\"kind\":\"now\",\"kind\":\"at\"}", NULL, "", "duplicate"},
	{"{}", NULL, "/kind", "required"},
	{"{\"kind\":\"weekly\"}", NULL, "/kind", "want \"now\", \"at\" or \"recurring\""},
	{"{\"kind\":3}", NULL, "/kind", "want \"now\""},
	{"{\"kind\":\"now\",\"when\":1}", NULL, "/when", "unknown field"},
	{"{\"kind\":\"now\",\"a/b~c\":1}", NULL, "/a~1b~0c", "unknown field"},
	{"{\"kind\":\"now\",\"time_zone\":\"Mars/Olympus\"}", NULL, "/time_zone", "unknown time zone \"Mars/Olympus\""},
	{"{\"kind\":\"now\",\"time_zone\":\"../../etc/passwd\"}", NULL, "/time_zone", "unknown time zone"},
	{"{\"kind\":\"now\",\"time_zone\":\"/usr/share/zoneinfo/UTC\"}", NULL, "/time_zone", "unknown time zone"},
	{"{\"kind\":\"now\",\"time_zone\":7}", NULL, "/time_zone", "must be a string"},
	{"{\"kind\":\"now\"}", "Nowhere/Land", "/time_zone", "the tenant's time zone \"Nowhere/Land\" is unknown"},
	{"{\"kind\":\"now\",\"local_time_per_recipient\":\"yes\"}", NULL, "/local_time_per_recipient", "true or false"},
	{"{\"kind\":\"now\",\"local_time_per_recipient\":true}", NULL, "/local_time_per_recipient", "use kind \"at\""},
	{"{\"kind\":\"now\",\"spread_minutes\":-1}", NULL, "/spread_minutes", "0..10080"},
	{"{\"kind\":\"now\",\"spread_minutes\":10081}", NULL, "/spread_minutes", "0..10080"},
	{"{\"kind\":\"now\",\"spread_minutes\":1.5}", NULL, "/spread_minutes", "whole number"},
	{"{\"kind\":\"now\",\"spread_minutes\":\"240\"}", NULL, "/spread_minutes", "whole number"},
	{"{\"kind\":\"now\",\"quiet_hours\":\"21-9\"}", NULL, "/quiet_hours", "must be an object"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"to\":\"09:00\"}}", NULL, "/quiet_hours/from", "required"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"21:00\"}}", NULL, "/quiet_hours/to", "required"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"24:00\",\"to\":\"09:00\"}}", NULL, "/quiet_hours/from", "HH:MM"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"21:00\",\"to\":\"9:00\"}}", NULL, "/quiet_hours/to", "HH:MM"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"21:00\",\"to\":900}}", NULL, "/quiet_hours/to", "HH:MM"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"21:00\",\"to\":\"21:00\"}}", NULL, "/quiet_hours", "equal"},
	{"{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"21:00\",\"to\":\"09:00\",\"tz\":\"UTC\"}}", NULL,
	 "/quiet_hours/tz", "unknown field"},
	{"{\"kind\":\"now\",\"at\":\"2026-12-01T10:00:00Z\"}", NULL, "/at", "only for kind \"at\""},
	{"{\"kind\":\"at\"}", NULL, "/at", "required"},
	{"{\"kind\":\"at\",\"at\":12}", NULL, "/at", "must be a string"},
	{"{\"kind\":\"at\",\"at\":\"tomorrow\"}", NULL, "/at", "RFC 3339"},
	{"{\"kind\":\"at\",\"at\":\"2026-02-29T10:00:00Z\"}", NULL, "/at", "day 29 does not exist in 2026-02"},
	{"{\"kind\":\"at\",\"at\":\"2026-13-01T10:00:00Z\"}", NULL, "/at", "month 13"},
	{"{\"kind\":\"at\",\"at\":\"2026-12-01T24:00:00Z\"}", NULL, "/at", "time 24:00"},
	{"{\"kind\":\"at\",\"at\":\"2026-12-31T23:59:60Z\"}", NULL, "/at", "leap seconds"},
	{"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00+5\"}", NULL, "/at", "offset"},
	{"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00Zjunk\"}", NULL, "/at", "unexpected \"junk\""},
	{"{\"kind\":\"at\",\"at\":\"2038-01-19T03:14:08Z\"}", NULL, "/at", "1970..2037"},
	{"{\"kind\":\"at\",\"at\":\"1969-12-31T23:00:00Z\"}", NULL, "/at", "1970..2037"},
	{"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00Z\",\"local_time_per_recipient\":true}", NULL, "/at",
	 "without offset"},
	{"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00Z\",\"rrule\":\"FREQ=DAILY\"}", NULL, "/rrule",
	 "only for kind \"recurring\""},
	{"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00Z\",\"start\":\"2026-12-01T10:00:00\"}", NULL, "/start",
	 "only for kind \"recurring\""},
	{"{\"kind\":\"recurring\",\"start\":\"2026-12-01T00:00:00\"}", NULL, "/rrule", "required"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY\"}", NULL, "/start", "required"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY\",\"start\":\"2026-12-01T00:00:00Z\"}", NULL, "/start",
	 "drop the offset"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY\",\"start\":\"2026-12-01\"}", NULL, "/start", "RFC 3339"},
	{"{\"kind\":\"recurring\",\"rrule\":\"\",\"start\":\"2026-12-01T00:00:00\"}", NULL, "/rrule", "empty rule"},
	{"{\"kind\":\"recurring\",\"rrule\":\"BYDAY=MO\",\"start\":\"2026-12-01T00:00:00\"}", NULL, "/rrule",
	 "FREQ is required"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=FORTNIGHTLY\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "FREQ=FORTNIGHTLY: want HOURLY"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=MINUTELY\",\"start\":\"2026-12-01T00:00:00\"}", NULL, "/rrule",
	 "more often than hourly"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;;BYHOUR=1\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "empty rule part"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYHOUR\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "\"BYHOUR\" is not NAME=VALUE"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;FOO=1\",\"start\":\"2026-12-01T00:00:00\"}", NULL, "/rrule",
	 "unknown rule part FOO"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;RSCALE=GREGORIAN\",\"start\":\"2026-12-01T00:00:00\"}",
	 NULL, "/rrule", "unknown rule part RSCALE"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;FREQ=WEEKLY\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "FREQ given twice"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYHOUR=25\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "BYHOUR=25: \"25\" is not in 0..23"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYMINUTE=0,60\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "\"60\" is not in 0..59"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=MONTHLY;BYMONTHDAY=0\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "\"0\" is not in +/-1..31"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=YEARLY;BYMONTH=13\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "BYMONTH=13"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO,XX\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "\"XX\" is not a weekday"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO,\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "empty list item"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=MONTHLY;BYDAY=60FR\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "\"60FR\" is not a weekday"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;WKST=XY\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "WKST=XY"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;INTERVAL=0\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "INTERVAL=0: want a whole number in 1..1000"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=0\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "COUNT=0: want a whole number in 1..100000"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=x\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "COUNT=X"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z\",\"start\":\"2026-12-01T00:00:00\"}",
	 NULL, "/rrule", "COUNT and UNTIL exclude each other"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=2027-01-01\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "UNTIL=2027-01-01: want YYYYMMDD"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=20270230\",\"start\":\"2026-12-01T00:00:00\"}", NULL,
	 "/rrule", "day 30 does not exist in 2027-02"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=20261101T000000Z\",\"start\":\"2026-12-01T00:00:00\"}",
	 NULL, "/rrule", "UNTIL is before start"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30\",\"start\":\"2026-12-01T00:00:00\"}",
	 NULL, "/rrule", "no runs"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=HOURLY\",\"start\":\"2026-01-01T00:00:00\"}", NULL,
	 "/rrule", "more than 100000 runs"},
	{"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY\",\"start\":\"2026-12-01T00:00:00\",\"at\":\"2026-12-01T00:00:00Z\"}",
	 NULL, "/at", "only for kind \"at\""},
};

START_TEST(parse_errors_name_their_pointer)
{
	hr_calendar *c = (hr_calendar *)1;
	hr_err err = {0};
	bool ok = hr_calendar_parse(bad[_i].json, bad[_i].tenant_tz, &c, &err);
	ck_assert_msg(!ok, "%s: got accepted, want error at %s", bad[_i].json, bad[_i].field);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(err.kind, HR_ERR_INVALID);
	ck_assert_msg(strcmp(err.field, bad[_i].field) == 0, "%s: got field '%s', want '%s' (%s)", bad[_i].json,
		      err.field, bad[_i].field, err.msg);
	ck_assert_msg(strstr(err.msg, bad[_i].msg), "%s: got message '%s', want '%s'", bad[_i].json, err.msg,
		      bad[_i].msg);
}
END_TEST

static const char *const good[] = {
	"{\"kind\":\"now\"}",
	"{\"kind\":\"now\",\"spread_minutes\":240,\"quiet_hours\":null}",
	"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00.123+05:30\"}",
	"{\"kind\":\"at\",\"at\":\"2026-12-01t10:00:00z\"}",
	"{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00\",\"local_time_per_recipient\":true}",
	"{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO;BYHOUR=10\",\"start\":\"2026-12-01T00:00:00\","
	"\"time_zone\":\"Europe/Berlin\",\"local_time_per_recipient\":false,\"spread_minutes\":0,"
	"\"quiet_hours\":{\"from\":\"21:00\",\"to\":\"09:00\"}}",
	"{\"kind\":\"recurring\",\"rrule\":\"RRULE:freq=monthly;byday=-1fr;count=12\",\"start\":\"2026-12-01T09:00:00\"}",
	"{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=20261231\",\"start\":\"2026-12-01T08:00:00\"}",
	"{\"kind\":\"recurring\",\"rrule\":\"FREQ=HOURLY;UNTIL=20270101T000000Z\",\"start\":\"2026-01-01T00:00:00\"}",
	"{\"kind\":\"recurring\",\"rrule\":\"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29\",\"start\":\"2026-01-01T09:00:00\"}",
};

START_TEST(parse_accepts_valid_calendars)
{
	hr_calendar_free(cal(good[_i], "Europe/Berlin"));
}
END_TEST

START_TEST(zone_defaults)
{
	hr_calendar *c = cal("{\"kind\":\"now\"}", NULL);
	ck_assert_str_eq(hr_calendar_zone(c), "UTC");
	hr_calendar_free(c);
	c = cal("{\"kind\":\"now\"}", "Asia/Kolkata");
	ck_assert_str_eq(hr_calendar_zone(c), "Asia/Kolkata");
	hr_calendar_free(c);
	c = cal("{\"kind\":\"now\",\"time_zone\":\"Europe/Berlin\"}", "Asia/Kolkata");
	ck_assert_str_eq(hr_calendar_zone(c), "Europe/Berlin");
	hr_calendar_free(c);
	ck_assert(hr_calendar_zone_known("Australia/Adelaide"));
	ck_assert(hr_calendar_zone_known("US/Eastern"));
	ck_assert(!hr_calendar_zone_known("Europe/Atlantis"));
	ck_assert(!hr_calendar_zone_known("Europe//Berlin"));
	ck_assert(!hr_calendar_zone_known(""));
	ck_assert(!hr_calendar_zone_known(NULL));
}
END_TEST

/* ---- 10:00 local in each recipient's zone ---- */

static const struct {
	const char *zone, *dec1, *jul1; /* 10:00 local on 2026-12-01 and on 2026-07-01, as UTC */
} zones[] = {
	{"Europe/Berlin", "2026-12-01T09:00:00Z", "2026-07-01T08:00:00Z"},
	{"America/New_York", "2026-12-01T15:00:00Z", "2026-07-01T14:00:00Z"},
	{"Asia/Kolkata", "2026-12-01T04:30:00Z", "2026-07-01T04:30:00Z"},
	{"Asia/Kathmandu", "2026-12-01T04:15:00Z", "2026-07-01T04:15:00Z"},
	{"Australia/Adelaide", "2026-11-30T23:30:00Z", "2026-07-01T00:30:00Z"},
	{"Australia/Lord_Howe", "2026-11-30T23:00:00Z", "2026-06-30T23:30:00Z"},
	{"Pacific/Kiritimati", "2026-11-30T20:00:00Z", "2026-06-30T20:00:00Z"},
	{"Etc/GMT+12", "2026-12-01T22:00:00Z", "2026-07-01T22:00:00Z"},
	{"Pacific/Pago_Pago", "2026-12-01T21:00:00Z", "2026-07-01T21:00:00Z"},
	{"Pacific/Chatham", "2026-11-30T20:15:00Z", "2026-06-30T21:15:00Z"},
	{"America/Sao_Paulo", "2026-12-01T13:00:00Z", "2026-07-01T13:00:00Z"},
	{"America/Santiago", "2026-12-01T13:00:00Z", "2026-07-01T14:00:00Z"},
	{"Asia/Tehran", "2026-12-01T06:30:00Z", "2026-07-01T06:30:00Z"},
	{"America/St_Johns", "2026-12-01T13:30:00Z", "2026-07-01T12:30:00Z"},
	{"Europe/London", "2026-12-01T10:00:00Z", "2026-07-01T09:00:00Z"},
	{"Asia/Tokyo", "2026-12-01T01:00:00Z", "2026-07-01T01:00:00Z"},
	{"Pacific/Auckland", "2026-11-30T21:00:00Z", "2026-06-30T22:00:00Z"},
	{"America/Los_Angeles", "2026-12-01T18:00:00Z", "2026-07-01T17:00:00Z"},
	{"UTC", "2026-12-01T10:00:00Z", "2026-07-01T10:00:00Z"},
	{"Africa/Casablanca", "2026-12-01T09:00:00Z", "2026-07-01T09:00:00Z"},
	{"Pacific/Marquesas", "2026-12-01T19:30:00Z", "2026-07-01T19:30:00Z"},
	{"Asia/Shanghai", "2026-12-01T02:00:00Z", "2026-07-01T02:00:00Z"},
	{"Asia/Calcutta", "2026-12-01T04:30:00Z", "2026-07-01T04:30:00Z"}, /* an alias */
};

START_TEST(local_time_in_each_recipients_zone)
{
	static const struct {
		const char *local, *run;
	} days[] = {{"2026-12-01T10:00:00", "2026-11-30T20:00:00Z"}, {"2026-07-01T10:00:00", "2026-06-30T20:00:00Z"}};
	for (int d = 0; d < 2; d++) {
		char json[256];
		snprintf(json, sizeof json,
			 "{\"kind\":\"at\",\"at\":\"%s\",\"local_time_per_recipient\":true}", days[d].local);
		hr_calendar *c = cal(json, "Europe/Berlin");
		int64_t run;
		/* The run starts when 10:00 first happens on Earth: UTC+14. */
		ck_assert(hr_calendar_next_run(c, T("2026-01-01T00:00:00Z"), T("2026-01-01T00:00:00Z"), &run));
		ASSERT_TIME(run, days[d].run, "run of %s", days[d].local);
		const char *want = d == 0 ? zones[_i].dec1 : zones[_i].jul1;
		int64_t due = hr_calendar_due(c, run, zones[_i].zone, 0, 1);
		ASSERT_TIME(due, want, "%s at %s local", zones[_i].zone, days[d].local);
		ck_assert_msg(due >= run, "%s: due %s before the run %s", zones[_i].zone, F(due), F(run));
		hr_calendar_free(c);
	}
}
END_TEST

START_TEST(recipients_without_a_known_zone_use_the_calendars)
{
	hr_calendar *c = cal("{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00\",\"local_time_per_recipient\":true}",
			     "America/New_York");
	int64_t run;
	ck_assert(hr_calendar_next_run(c, 0, 0, &run));
	const char *fallbacks[] = {NULL, "", "Mars/Olympus", "../../etc/passwd", "america/new_york "};
	for (size_t i = 0; i < sizeof fallbacks / sizeof fallbacks[0]; i++)
		ASSERT_TIME(hr_calendar_due(c, run, fallbacks[i], 0, 1), "2026-12-01T15:00:00Z", "zone '%s'",
			    fallbacks[i] ? fallbacks[i] : "(null)");
	hr_calendar_free(c);
}
END_TEST

/* ---- DST edge cases ---- */

static const struct {
	const char *zone, *local, *want, *why;
} dst[] = {
	{"Europe/Berlin", "2026-03-29T01:59:59", "2026-03-29T00:59:59Z", "last second before the gap"},
	{"Europe/Berlin", "2026-03-29T02:00:00", "2026-03-29T01:00:00Z", "gap start -> 03:00 CEST"},
	{"Europe/Berlin", "2026-03-29T02:30:00", "2026-03-29T01:00:00Z", "in the gap -> 03:00 CEST"},
	{"Europe/Berlin", "2026-03-29T03:00:00", "2026-03-29T01:00:00Z", "first valid time"},
	{"Europe/Berlin", "2026-10-25T02:30:00", "2026-10-25T00:30:00Z", "twice -> first (CEST)"},
	{"Europe/Berlin", "2026-10-25T01:59:59", "2026-10-24T23:59:59Z", "before the overlap"},
	{"Europe/Berlin", "2026-10-25T03:00:00", "2026-10-25T02:00:00Z", "after the overlap (CET)"},
	{"America/New_York", "2026-03-08T02:30:00", "2026-03-08T07:00:00Z", "gap -> 03:00 EDT"},
	{"America/New_York", "2026-03-08T10:00:00", "2026-03-08T14:00:00Z", "same day, after"},
	{"America/New_York", "2026-11-01T01:30:00", "2026-11-01T05:30:00Z", "twice -> first (EDT)"},
	{"America/New_York", "2026-11-01T02:00:00", "2026-11-01T07:00:00Z", "after the overlap (EST)"},
	{"Australia/Adelaide", "2026-10-04T02:30:00", "2026-10-03T16:30:00Z", "southern spring gap -> 03:00 ACDT"},
	{"Australia/Adelaide", "2026-04-05T02:30:00", "2026-04-04T16:00:00Z", "southern fall back -> first (ACDT)"},
	{"Australia/Lord_Howe", "2026-10-04T02:15:00", "2026-10-03T15:30:00Z", "30-minute gap -> 02:30"},
	{"Australia/Lord_Howe", "2026-04-05T01:45:00", "2026-04-04T14:45:00Z", "30-minute overlap -> first"},
	{"Asia/Kolkata", "2026-03-29T02:30:00", "2026-03-28T21:00:00Z", "no DST"},
};

START_TEST(dst_gaps_and_overlaps)
{
	char json[256];
	snprintf(json, sizeof json, "{\"kind\":\"at\",\"at\":\"%s\",\"time_zone\":\"%s\"}", dst[_i].local, dst[_i].zone);
	hr_calendar *c = cal(json, NULL);
	int64_t run;
	ck_assert(hr_calendar_next_run(c, 0, 0, &run));
	ASSERT_TIME(run, dst[_i].want, "%s %s (%s)", dst[_i].zone, dst[_i].local, dst[_i].why);
	hr_calendar_free(c);
	/* The same rule for a local time per recipient. */
	snprintf(json, sizeof json, "{\"kind\":\"at\",\"at\":\"%s\",\"local_time_per_recipient\":true}", dst[_i].local);
	c = cal(json, "UTC");
	ck_assert(hr_calendar_next_run(c, 0, 0, &run));
	ASSERT_TIME(hr_calendar_due(c, run, dst[_i].zone, 0, 1), dst[_i].want, "per recipient %s %s", dst[_i].zone,
		    dst[_i].local);
	hr_calendar_free(c);
}
END_TEST

static const char *const prop_zones[] = {
	"Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide",
	"Australia/Lord_Howe", "Pacific/Kiritimati", "Etc/GMT+12", "Pacific/Chatham", "America/Sao_Paulo",
	"America/Santiago", "Asia/Tehran", "America/St_Johns", "Europe/London", "Pacific/Auckland",
	"America/Los_Angeles", "UTC", "Africa/Casablanca", "Pacific/Marquesas", "Europe/Dublin",
};

/* Every local time every 15 minutes of 2026-2027: the first instant showing it, or the first after a gap. */
START_TEST(tz_instant_rules_hold_everywhere)
{
	const hr_tz *z = hr_tz_find(prop_zones[_i]);
	ck_assert_ptr_nonnull(z);
	int gaps = 0, overlaps = 0;
	/* (check records every ck_assert: hot loops test with if and ck_abort_msg) */
	for (int64_t w = T("2026-01-01T00:00:00Z"), end = T("2028-01-01T00:00:00Z"); w < end; w += 900) {
		int64_t u = hr_tz_instant(z, w);
		if (hr_tz_wall(z, u) == w) {
			for (int64_t d = 1800; d <= 3600; d += 1800)
				if (hr_tz_wall(z, u - d) == w) {
					ck_abort_msg("%s %s: got %s, but %s shows it earlier", prop_zones[_i], F(w),
						     F(u), F(u - d));
				}
			overlaps += hr_tz_wall(z, u + 3600) == w || hr_tz_wall(z, u + 1800) == w;
		} else {
			gaps++;
			if (!(hr_tz_wall(z, u) > w && hr_tz_wall(z, u - 1) < w))
				ck_abort_msg("%s %s: got %s (wall %s), want the first instant after the gap",
					     prop_zones[_i], F(w), F(u), F(hr_tz_wall(z, u)));
		}
	}
	/* Zones with DST have gaps and overlaps each year; the others have none. */
	bool has_dst = strcmp(prop_zones[_i], "Europe/Berlin") == 0 || strcmp(prop_zones[_i], "America/New_York") == 0 ||
		       strcmp(prop_zones[_i], "Australia/Lord_Howe") == 0;
	if (has_dst)
		ck_assert_msg(gaps > 0 && overlaps > 0, "%s: got %d gaps, %d overlaps, want some", prop_zones[_i],
			      gaps, overlaps);
	if (strcmp(prop_zones[_i], "Asia/Kolkata") == 0)
		ck_assert_msg(gaps == 0 && overlaps == 0, "Asia/Kolkata: got %d gaps, %d overlaps", gaps, overlaps);
}
END_TEST

/* libical's offsets equal glibc's over the supported future, exact at every transition. */
START_TEST(tz_offsets_match_glibc)
{
	const hr_tz *z = hr_tz_find(prop_zones[_i]);
	ck_assert_ptr_nonnull(z);
	setenv("TZ", prop_zones[_i], 1);
	tzset();
	long transitions = 0;
	int32_t prev = 0;
	const int64_t from = T("2026-01-01T00:00:00Z");
	for (int64_t t = from; t < HR_TZ_MAX; t += 3600) {
		struct tm tm;
		time_t tt = (time_t)t;
		localtime_r(&tt, &tm);
		int32_t want = (int32_t)tm.tm_gmtoff;
		if (t > from && want != prev) {
			/* Find the exact second of the change with glibc, check both sides. */
			int64_t lo = t - 3600, hi = t;
			while (hi - lo > 1) {
				int64_t mid = lo + (hi - lo) / 2;
				tt = (time_t)mid;
				localtime_r(&tt, &tm);
				if (tm.tm_gmtoff == want)
					hi = mid;
				else
					lo = mid;
			}
			if (hr_tz_offset(z, hi) != want || hr_tz_offset(z, lo) != prev)
				ck_abort_msg("%s change at %s: got %d/%d, want %d/%d", prop_zones[_i], F(hi),
					     hr_tz_offset(z, lo), hr_tz_offset(z, hi), prev, want);
			transitions++;
		}
		if (hr_tz_offset(z, t) != want)
			ck_abort_msg("%s at %s: got offset %d, want %d", prop_zones[_i], F(t), hr_tz_offset(z, t),
				     want);
		prev = want;
	}
	unsetenv("TZ");
	/* The walk really saw the changes: two a year in Europe, none in India. */
	if (strcmp(prop_zones[_i], "Europe/Berlin") == 0)
		ck_assert_msg(transitions == 24, "Europe/Berlin: got %ld changes in 2026..2037, want 24", transitions);
	if (strcmp(prop_zones[_i], "Asia/Kolkata") == 0)
		ck_assert_msg(transitions == 0, "Asia/Kolkata: got %ld changes, want 0", transitions);
}
END_TEST

/* ---- quiet hours ---- */

static const struct {
	const char *quiet_from, *quiet_to, *zone, *due, *want, *why;
} quiet[] = {
	{"21:00", "09:00", "Europe/Berlin", "2026-12-01T22:30:00Z", "2026-12-02T08:00:00Z", "23:30 -> 09:00 next day"},
	{"21:00", "09:00", "Europe/Berlin", "2026-12-01T07:00:00Z", "2026-12-01T08:00:00Z", "08:00 -> 09:00 same day"},
	{"21:00", "09:00", "Europe/Berlin", "2026-12-01T11:00:00Z", "2026-12-01T11:00:00Z", "12:00 untouched"},
	{"21:00", "09:00", "Europe/Berlin", "2026-12-01T20:00:00Z", "2026-12-02T08:00:00Z", "21:00 is quiet"},
	{"21:00", "09:00", "Europe/Berlin", "2026-12-01T19:59:59Z", "2026-12-01T19:59:59Z", "20:59:59 is not"},
	{"21:00", "09:00", "Europe/Berlin", "2026-12-01T08:00:00Z", "2026-12-01T08:00:00Z", "09:00 is not"},
	{"21:00", "09:00", "Europe/Berlin", "2026-11-30T23:00:00Z", "2026-12-01T08:00:00Z", "midnight -> 09:00"},
	{"21:00", "09:00", "America/New_York", "2026-12-01T22:30:00Z", "2026-12-01T22:30:00Z", "17:30 in New York"},
	{"21:00", "09:00", "America/New_York", "2026-12-02T03:00:00Z", "2026-12-02T14:00:00Z", "22:00 in New York"},
	{"21:00", "09:00", "Asia/Kathmandu", "2026-12-01T16:00:00Z", "2026-12-02T03:15:00Z", "21:45 in Kathmandu"},
	{"21:00", "09:00", "Australia/Adelaide", "2026-12-01T11:00:00Z", "2026-12-01T22:30:00Z", "21:30 ACDT"},
	{"12:00", "14:00", "Europe/Berlin", "2026-12-01T11:30:00Z", "2026-12-01T13:00:00Z", "12:30 in a midday pause"},
	{"12:00", "14:00", "Europe/Berlin", "2026-12-01T13:00:00Z", "2026-12-01T13:00:00Z", "14:00 after it"},
	/* Quiet hours over the DST change: the end is read on that day's clock. */
	{"21:00", "09:00", "Europe/Berlin", "2026-03-28T22:00:00Z", "2026-03-29T07:00:00Z", "spring: 09:00 CEST"},
	{"21:00", "09:00", "Europe/Berlin", "2026-10-24T21:00:00Z", "2026-10-25T08:00:00Z", "fall: 09:00 CET"},
	{"01:00", "02:30", "Europe/Berlin", "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "end in the gap -> 03:00"},
	{"23:00", "02:30", "Europe/Berlin", "2026-10-24T22:00:00Z", "2026-10-25T00:30:00Z", "end twice -> first"},
	{"23:00", "02:30", "Europe/Berlin", "2026-10-25T01:10:00Z", "2026-10-25T01:30:00Z", "02:10 CET -> 02:30 CET"},
	{"23:00", "02:30", "Europe/Berlin", "2026-10-25T01:40:00Z", "2026-10-25T01:40:00Z", "02:40 CET is not quiet"},
};

START_TEST(quiet_hours_move_to_their_end)
{
	char json[256];
	snprintf(json, sizeof json, "{\"kind\":\"now\",\"quiet_hours\":{\"from\":\"%s\",\"to\":\"%s\"}}",
		 quiet[_i].quiet_from, quiet[_i].quiet_to);
	hr_calendar *c = cal(json, "Europe/Berlin");
	ASSERT_TIME(hr_calendar_due(c, T(quiet[_i].due), quiet[_i].zone, 0, 1), quiet[_i].want, "%s-%s %s %s (%s)",
		    quiet[_i].quiet_from, quiet[_i].quiet_to, quiet[_i].zone, quiet[_i].due, quiet[_i].why);
	hr_calendar_free(c);
}
END_TEST

/* ---- recurring ---- */

static void expect_runs(const char *json, const char *tenant, const char *activated, const char *const *want,
			int nwant)
{
	hr_calendar *c = cal(json, tenant);
	int64_t got[64], act = T(activated);
	int n = hr_calendar_runs(c, act, act, T("2038-01-01T00:00:00Z"), got, 64);
	ck_assert_msg(n >= nwant, "%s: got %d runs, want at least %d", json, n, nwant);
	for (int i = 0; i < nwant; i++)
		ASSERT_TIME(got[i], want[i], "%s: run %d", json, i);
	/* next_run walks the same sequence. */
	int64_t after = act - 1, run;
	for (int i = 0; i < nwant; i++) {
		ck_assert(hr_calendar_next_run(c, act, after, &run));
		ASSERT_TIME(run, want[i], "%s: next_run %d", json, i);
		after = run;
	}
	hr_calendar_free(c);
}

START_TEST(weekly_keeps_local_time_across_dst)
{
	static const char *const berlin[] = {"2026-10-05T08:00:00Z", "2026-10-12T08:00:00Z", "2026-10-19T08:00:00Z",
					     "2026-10-26T09:00:00Z", "2026-11-02T09:00:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO;BYHOUR=10\","
		    "\"start\":\"2026-10-01T00:00:00\",\"time_zone\":\"Europe/Berlin\"}",
		    NULL, "2026-01-01T00:00:00Z", berlin, 5);
	static const char *const ny[] = {"2026-03-02T15:00:00Z", "2026-03-09T14:00:00Z", "2026-03-16T14:00:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO;BYHOUR=10\","
		    "\"start\":\"2026-03-01T00:00:00\"}",
		    "America/New_York", "2026-01-01T00:00:00Z", ny, 3);
	/* Southern hemisphere: Adelaide leaves DST on 2026-04-05. */
	static const char *const adl[] = {"2026-03-29T23:30:00Z", "2026-04-06T00:30:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO;BYHOUR=10\","
		    "\"start\":\"2026-03-28T00:00:00\",\"time_zone\":\"Australia/Adelaide\"}",
		    NULL, "2026-01-01T00:00:00Z", adl, 2);
}
END_TEST

START_TEST(daily_through_a_gap_and_an_overlap)
{
	static const char *const spring[] = {"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=3\",\"start\":\"2026-03-28T02:30:00\"}",
		    "Europe/Berlin", "2026-01-01T00:00:00Z", spring, 3);
	static const char *const fall[] = {"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=3\",\"start\":\"2026-10-24T02:30:00\"}",
		    "Europe/Berlin", "2026-01-01T00:00:00Z", fall, 3);
	/* Hourly through the gap: 02:00 does not exist and runs with 03:00, once. */
	static const char *const hourly[] = {"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=HOURLY;COUNT=4\",\"start\":\"2026-03-29T01:00:00\"}",
		    "Europe/Berlin", "2026-01-01T00:00:00Z", hourly, 3);
	hr_calendar *c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=HOURLY;COUNT=4\",\"start\":\"2026-03-29T01:00:00\"}",
			     "Europe/Berlin");
	int64_t got[8];
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, HR_TZ_MAX, got, 8), 3);
	hr_calendar_free(c);
}
END_TEST

START_TEST(runs_count_until_and_activation)
{
	/* COUNT counts from start, also the runs skipped before activation. */
	static const char *const count[] = {"2026-12-03T09:00:00Z", "2026-12-04T09:00:00Z"};
	expect_runs("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=4\",\"start\":\"2026-12-01T10:00:00\"}",
		    "Europe/Berlin", "2026-12-02T09:00:01Z", count, 2);
	hr_calendar *c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;COUNT=4\",\"start\":\"2026-12-01T10:00:00\"}",
			     "Europe/Berlin");
	int64_t run, runs[8];
	ck_assert(!hr_calendar_next_run(c, 0, T("2026-12-04T09:00:00Z"), &run));
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, HR_TZ_MAX, runs, 8), 4);
	/* Paging with max. */
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, HR_TZ_MAX, runs, 3), 3);
	ck_assert_int_eq(hr_calendar_runs(c, 0, runs[2] + 1, HR_TZ_MAX, runs, 3), 1);
	ASSERT_TIME(runs[0], "2026-12-04T09:00:00Z", "page 2");
	ck_assert_int_eq(hr_calendar_runs(c, 0, T("2026-12-02T09:00:00Z"), T("2026-12-03T09:00:00Z"), runs, 8), 1);
	hr_calendar_free(c);

	/* UNTIL as an instant and as a local date (inclusive). */
	c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=20261203T090000Z\",\"start\":\"2026-12-01T10:00:00\"}",
		"Europe/Berlin");
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, HR_TZ_MAX, runs, 8), 3);
	hr_calendar_free(c);
	c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=20261203T085959Z\",\"start\":\"2026-12-01T10:00:00\"}",
		"Europe/Berlin");
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, HR_TZ_MAX, runs, 8), 2);
	hr_calendar_free(c);
	c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;UNTIL=20261205\",\"start\":\"2026-12-01T10:00:00\"}",
		"Europe/Berlin");
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, HR_TZ_MAX, runs, 8), 5);
	hr_calendar_free(c);

	/* An unbounded rule ends with 2037. */
	c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=YEARLY\",\"start\":\"2030-06-01T10:00:00\"}", "UTC");
	ck_assert_int_eq(hr_calendar_runs(c, 0, 0, INT64_MAX, runs, 8), 8);
	ASSERT_TIME(runs[7], "2037-06-01T10:00:00Z", "last yearly run");
	ck_assert(!hr_calendar_next_run(c, 0, runs[7], &run));
	hr_calendar_free(c);

	/* now: one run at activation.  at: at its time, or at a late activation. */
	c = cal("{\"kind\":\"now\"}", NULL);
	ck_assert(hr_calendar_next_run(c, T("2026-12-01T10:00:00Z"), T("2026-12-01T09:59:59Z"), &run));
	ASSERT_TIME(run, "2026-12-01T10:00:00Z", "now");
	ck_assert(!hr_calendar_next_run(c, T("2026-12-01T10:00:00Z"), run, &run));
	hr_calendar_free(c);
	c = cal("{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00+01:00\"}", NULL);
	ck_assert(hr_calendar_next_run(c, T("2026-11-01T00:00:00Z"), T("2026-10-31T23:59:59Z"), &run));
	ASSERT_TIME(run, "2026-12-01T09:00:00Z", "at");
	ck_assert(!hr_calendar_next_run(c, T("2026-11-01T00:00:00Z"), run, &run));
	ck_assert(hr_calendar_next_run(c, T("2026-12-01T09:30:00Z"), T("2026-12-01T09:29:59Z"), &run));
	ASSERT_TIME(run, "2026-12-01T09:30:00Z", "late activation sends at once");
	hr_calendar_free(c);
}
END_TEST

START_TEST(recurring_local_time_per_recipient)
{
	hr_calendar *c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=WEEKLY;BYDAY=MO;BYHOUR=10\","
			     "\"start\":\"2026-10-19T00:00:00\",\"local_time_per_recipient\":true}",
			     "Europe/Berlin");
	int64_t run;
	ck_assert(hr_calendar_next_run(c, 0, 0, &run));
	ASSERT_TIME(run, "2026-10-18T20:00:00Z", "first run starts with UTC+14");
	ASSERT_TIME(hr_calendar_due(c, run, "Europe/Berlin", 0, 1), "2026-10-19T08:00:00Z", "Berlin, CEST");
	ASSERT_TIME(hr_calendar_due(c, run, "Asia/Kolkata", 0, 1), "2026-10-19T04:30:00Z", "Kolkata");
	ASSERT_TIME(hr_calendar_due(c, run, "Pacific/Kiritimati", 0, 1), "2026-10-18T20:00:00Z", "Kiritimati");
	ASSERT_TIME(hr_calendar_due(c, run, NULL, 0, 1), "2026-10-19T08:00:00Z", "no zone: Berlin");
	ck_assert(hr_calendar_next_run(c, 0, run, &run));
	ASSERT_TIME(hr_calendar_due(c, run, "Europe/Berlin", 0, 1), "2026-10-26T09:00:00Z", "Berlin, CET");
	ASSERT_TIME(hr_calendar_due(c, run, "America/New_York", 0, 1), "2026-10-26T14:00:00Z", "New York, EDT");
	ck_assert(hr_calendar_next_run(c, 0, run, &run));
	ASSERT_TIME(hr_calendar_due(c, run, "America/New_York", 0, 1), "2026-11-02T15:00:00Z", "New York, EST");
	ASSERT_TIME(hr_calendar_due(c, run, "Australia/Adelaide", 0, 1), "2026-11-01T23:30:00Z", "Adelaide, ACDT");
	hr_calendar_free(c);

	/* A local "at" activated late: zones already past 10:00 get it at activation. */
	c = cal("{\"kind\":\"at\",\"at\":\"2026-12-01T10:00:00\",\"local_time_per_recipient\":true}", "UTC");
	ck_assert(hr_calendar_next_run(c, T("2026-12-01T05:00:00Z"), T("2026-12-01T04:59:59Z"), &run));
	ASSERT_TIME(run, "2026-12-01T05:00:00Z", "late run");
	ASSERT_TIME(hr_calendar_due(c, run, "Asia/Tokyo", 0, 1), "2026-12-01T05:00:00Z", "Tokyo: late, at once");
	ASSERT_TIME(hr_calendar_due(c, run, "Europe/Berlin", 0, 1), "2026-12-01T09:00:00Z", "Berlin: on time");
	hr_calendar_free(c);
}
END_TEST

/* ---- spreading ---- */

START_TEST(spread_a_million_over_four_hours)
{
	hr_calendar *c = cal("{\"kind\":\"now\",\"spread_minutes\":240}", "Europe/Berlin");
	const uint64_t n = 1000000;
	const int64_t start = T("2026-12-01T08:00:00Z"), window = 4 * 3600;
	int64_t run;
	ck_assert(hr_calendar_next_run(c, start, start - 1, &run));
	ck_assert_int_eq(run, start);
	uint32_t *per_second = calloc((size_t)window, sizeof *per_second);
	int64_t prev = INT64_MIN;
	for (uint64_t i = 0; i < n; i++) {
		int64_t due = hr_calendar_due(c, run, "Asia/Kolkata", i, n);
		if (i == 0)
			ASSERT_TIME(due, "2026-12-01T08:00:00Z", "first recipient");
		if (due < prev)
			ck_abort_msg("recipient %llu: got %s, before the previous %s", (unsigned long long)i, F(due),
				     F(prev));
		if (due < start || due >= start + window)
			ck_abort_msg("recipient %llu: got %s, outside the window", (unsigned long long)i, F(due));
		per_second[due - start]++;
		prev = due;
	}
	ck_assert_msg(prev == start + window - 1, "last recipient: got %s, want the window's last second", F(prev));
	uint32_t lo = UINT32_MAX, hi = 0;
	for (int64_t s = 0; s < window; s++) {
		lo = per_second[s] < lo ? per_second[s] : lo;
		hi = per_second[s] > hi ? per_second[s] : hi;
	}
	/* 1,000,000 / 14,400 s = 69.4 per second: every second gets 69 or 70. */
	ck_assert_msg(lo == 69 && hi == 70, "per second: got %u..%u, want 69..70", lo, hi);
	free(per_second);
	/* Clamped caller bugs and degenerate sizes. */
	ck_assert_int_eq(hr_calendar_due(c, run, NULL, 5, 0), start);
	ck_assert_int_eq(hr_calendar_due(c, run, NULL, 0, 1), start);
	ck_assert_int_eq(hr_calendar_due(c, run, NULL, UINT64_MAX, UINT64_MAX), start + window - 1);
	ck_assert_int_eq(hr_calendar_due(c, run, NULL, n + 7, n), start + window - 1);
	hr_calendar_free(c);
}
END_TEST

START_TEST(spread_then_quiet_hours)
{
	/* 20:00-22:00 Berlin spread over 2 h with quiet from 21:00: the second half waits for 09:00. */
	hr_calendar *c = cal("{\"kind\":\"now\",\"spread_minutes\":120,\"quiet_hours\":{\"from\":\"21:00\",\"to\":\"09:00\"}}",
			     "Europe/Berlin");
	int64_t run = T("2026-12-01T19:00:00Z");
	ASSERT_TIME(hr_calendar_due(c, run, NULL, 0, 4), "2026-12-01T19:00:00Z", "0/4");
	ASSERT_TIME(hr_calendar_due(c, run, NULL, 1, 4), "2026-12-01T19:30:00Z", "1/4");
	ASSERT_TIME(hr_calendar_due(c, run, NULL, 2, 4), "2026-12-02T08:00:00Z", "2/4");
	ASSERT_TIME(hr_calendar_due(c, run, NULL, 3, 4), "2026-12-02T08:00:00Z", "3/4");
	hr_calendar_free(c);
}
END_TEST

/* ---- concurrency: the same calendar from several threads gives the same answers ---- */

typedef struct worker_arg {
	const hr_calendar *c;
	int64_t run;
	int64_t sum;
} worker_arg;

static void *due_worker(void *p)
{
	worker_arg *a = p;
	for (uint64_t i = 0; i < 20000; i++)
		a->sum += hr_calendar_due(a->c, a->run, prop_zones[i % (sizeof prop_zones / sizeof prop_zones[0])], i,
					  20000) % 1000003;
	return NULL;
}

START_TEST(concurrent_due_is_consistent)
{
	hr_calendar *c = cal("{\"kind\":\"recurring\",\"rrule\":\"FREQ=DAILY;BYHOUR=10\",\"start\":\"2026-12-01T00:00:00\","
			     "\"local_time_per_recipient\":true,\"spread_minutes\":60,"
			     "\"quiet_hours\":{\"from\":\"21:00\",\"to\":\"09:00\"}}",
			     "Europe/Berlin");
	int64_t run;
	ck_assert(hr_calendar_next_run(c, 0, 0, &run));
	worker_arg solo = {c, run, 0}, args[4];
	due_worker(&solo);
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (worker_arg){c, run, 0};
		ck_assert_int_eq(pthread_create(&th[i], NULL, due_worker, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(args[i].sum == solo.sum, "thread %d: got checksum %lld, want %lld", i,
			      (long long)args[i].sum, (long long)solo.sum);
	}
	hr_calendar_free(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("calendar");
	TCase *tc = th_tcase("parse");
	tcase_add_loop_test(tc, parse_errors_name_their_pointer, 0, (int)(sizeof bad / sizeof bad[0]));
	tcase_add_loop_test(tc, parse_accepts_valid_calendars, 0, (int)(sizeof good / sizeof good[0]));
	tcase_add_test(tc, zone_defaults);
	suite_add_tcase(s, tc);

	tc = th_tcase("zones");
	tcase_add_loop_test(tc, local_time_in_each_recipients_zone, 0, (int)(sizeof zones / sizeof zones[0]));
	tcase_add_test(tc, recipients_without_a_known_zone_use_the_calendars);
	tcase_add_loop_test(tc, dst_gaps_and_overlaps, 0, (int)(sizeof dst / sizeof dst[0]));
	tcase_add_loop_test(tc, tz_instant_rules_hold_everywhere, 0, (int)(sizeof prop_zones / sizeof prop_zones[0]));
	tcase_add_loop_test(tc, tz_offsets_match_glibc, 0, (int)(sizeof prop_zones / sizeof prop_zones[0]));
	suite_add_tcase(s, tc);

	tc = th_tcase("runs");
	tcase_add_loop_test(tc, quiet_hours_move_to_their_end, 0, (int)(sizeof quiet / sizeof quiet[0]));
	tcase_add_test(tc, weekly_keeps_local_time_across_dst);
	tcase_add_test(tc, daily_through_a_gap_and_an_overlap);
	tcase_add_test(tc, runs_count_until_and_activation);
	tcase_add_test(tc, recurring_local_time_per_recipient);
	tcase_add_test(tc, spread_a_million_over_four_hours);
	tcase_add_test(tc, spread_then_quiet_hours);
	tcase_add_test(tc, concurrent_due_is_consistent);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return th_run(s);
}
