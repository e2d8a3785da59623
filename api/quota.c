/*
 * quota.c -- the count limits of a tenant (common/limits.h) where the API
 * creates what they count: messages per UTC day and channel (sends, one-time
 * codes, template test sends) and contacts.
 *
 * Both are checked in the request's own transaction, so a request that is
 * refused or rolled back counts nothing, and nothing is written for a refused
 * one.  Tenants without a limit pay nothing: no statement is sent.
 *
 * Messages: quota_usage holds one row per (day, channel); a send adds one
 * with an upsert that only adds while the row is under the limit.  The row is
 * locked until the send commits, so a limited tenant's concurrent sends of
 * one channel commit one after another (hundreds to thousands a second; no
 * limit, no lock).  Contacts: after an upsert created a contact, the live
 * contacts are counted (at most limit + 1 rows read) under a per-tenant
 * transaction lock, so concurrent creations never pass the limit together.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "api.h"
#include "db.h"

/* Seconds to the next UTC midnight (herald time is close enough for a Retry-After). */
static int to_midnight(void)
{
	time_t now = time(NULL);
	return (int)(86400 - now % 86400);
}

bool api_quota_send(api_req *r, const char *channel)
{
	int ch = hr_limit_channel(channel);
	if (ch < 0 || r->limits.per_day[ch] < 0)
		return true;
	int64_t limit = r->limits.per_day[ch];
	bool ok = false;
	if (limit > 0) {
		char lim[24];
		snprintf(lim, sizeof lim, "%lld", (long long)limit);
		const char *p[] = {channel, lim};
		PGresult *res;
		hr_err err = {0};
		if (!hr_db_query(r->db,
				 "INSERT INTO quota_usage AS q (day, channel, used) "
				 "VALUES ((herald_clock.now() AT TIME ZONE 'UTC')::date, $1, 1) "
				 "ON CONFLICT (day, channel) DO UPDATE SET used = q.used + 1 WHERE q.used < $2::bigint "
				 "RETURNING used",
				 2, p, &res, &err)) {
			api_problem_err(r, &err);
			return false;
		}
		ok = PQntuples(res) == 1;
		PQclear(res);
	}
	if (!ok) {
		char *d = hr_sprintf("the %s messages of today (UTC) have reached this tenant's limit of %lld a day",
				     channel, (long long)limit);
		r->retry_after = to_midnight();
		api_problem(r, 429, "quota-exceeded", "Quota exceeded", d, NULL);
		hr_free(d);
	}
	return ok;
}

bool api_quota_contacts(api_req *r)
{
	if (r->limits.contacts < 0)
		return true;
	char lim[24];
	snprintf(lim, sizeof lim, "%lld", (long long)r->limits.contacts + 1);
	const char *p[] = {lim};
	PGresult *res;
	hr_err err = {0};
	/* The tenant's creations count one at a time: after the lock, this statement's snapshot sees every
	 * contact committed before it, so two at the limit's edge cannot both pass. */
	if (!hr_db_query(r->db, "SELECT pg_advisory_xact_lock(hashtext('herald.contacts'), hashtext(current_schema()))",
			 0, NULL, NULL, &err) ||
	    !hr_db_query(r->db,
			 "SELECT count(*) FROM (SELECT 1 FROM contacts WHERE merged_into IS NULL LIMIT $1::bigint) c", 1,
			 p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	long long n = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (n <= r->limits.contacts)
		return true;
	char *d = hr_sprintf("this tenant holds its limit of %lld contacts; a new one cannot be added",
			     (long long)r->limits.contacts);
	api_problem(r, 409, "quota-exceeded", "Quota exceeded", d, NULL);
	hr_free(d);
	return false;
}
