/*
 * limits.c -- see limits.h.
 */
#include "limits.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "jsonout.h"
#include "tenancy.h"

const char *const hr_limit_channel_names[HR_LIMIT_CHANNELS] = {"email", "sms", "messenger", "push", "webhook"};

/* Counts (contacts, messages) up to a trillion; requests per second up to a million. */
#define MAX_COUNT 1000000000000LL
#define MAX_RPS 1000000LL

int hr_limit_channel(const char *channel)
{
	for (int i = 0; channel && i < HR_LIMIT_CHANNELS; i++)
		if (strcmp(channel, hr_limit_channel_names[i]) == 0)
			return i;
	return -1;
}

void hr_limits_none(hr_limits *l)
{
	l->api_rps = -1;
	l->contacts = -1;
	for (int i = 0; i < HR_LIMIT_CHANNELS; i++)
		l->per_day[i] = -1;
}

static bool want_count(json_t *v, const char *ptr, int64_t min, int64_t max, hr_err *err)
{
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return hr_fail(err, HR_ERR_INVALID, ptr, "must be an integer from %lld to %lld", (long long)min,
			       (long long)max);
	return true;
}

static bool want_rate(json_t *v, const char *ptr, hr_err *err)
{
	if (!json_is_number(v) || !(json_number_value(v) > 0) || json_number_value(v) > (double)MAX_RPS)
		return hr_fail(err, HR_ERR_INVALID, ptr, "must be a number of messages per second above 0, at most %lld",
			       MAX_RPS);
	return true;
}

bool hr_limits_check(json_t *lim, const char *base, bool agency, hr_err *err)
{
	char ptr[128];
	if (!json_is_object(lim))
		return hr_fail(err, HR_ERR_INVALID, base[0] ? base : "/", "limits must be a JSON object");
	const char *k;
	json_t *v;
	json_object_foreach(lim, k, v) {
		snprintf(ptr, sizeof ptr, "%s/%s", base, k);
		if (strcmp(k, "api_rps") == 0) {
			if (!want_count(v, ptr, 1, MAX_RPS, err))
				return false;
		} else if (strcmp(k, "contacts") == 0) {
			if (!want_count(v, ptr, 0, MAX_COUNT, err))
				return false;
		} else if (strcmp(k, "rate_per_s") == 0) {
			if (!want_rate(v, ptr, err))
				return false;
		} else if (strcmp(k, "messages_per_day") == 0) {
			if (!json_is_object(v))
				return hr_fail(err, HR_ERR_INVALID, ptr,
					       "must be an object of channel to count, e.g. {\"sms\": 1000}");
			const char *ch;
			json_t *n;
			json_object_foreach(v, ch, n) {
				snprintf(ptr, sizeof ptr, "%s/messages_per_day/%s", base, ch);
				if (hr_limit_channel(ch) < 0)
					return hr_fail(err, HR_ERR_INVALID, ptr,
						       "is not a channel (email, sms, messenger, push, webhook)");
				if (!want_count(n, ptr, 0, MAX_COUNT, err))
					return false;
			}
		} else if (strcmp(k, "sender_rates") == 0 && !agency) {
			if (!json_is_object(v))
				return hr_fail(err, HR_ERR_INVALID, ptr,
					       "must be an object of sender identity to messages per second");
			const char *s;
			json_t *n;
			json_object_foreach(v, s, n) {
				snprintf(ptr, sizeof ptr, "%s/sender_rates/%s", base, s);
				if (!*s || strlen(s) > 254)
					return hr_fail(err, HR_ERR_INVALID, ptr, "a sender identity is 1 to 254 bytes");
				if (!want_rate(n, ptr, err))
					return false;
			}
		} else {
			return hr_fail(err, HR_ERR_INVALID, ptr,
				       agency ? "is not a limit (api_rps, contacts, messages_per_day, rate_per_s)"
					      : "is not a limit (api_rps, contacts, messages_per_day, rate_per_s, "
						"sender_rates)");
		}
	}
	return true;
}

static void fold_one(int64_t *into, json_t *v)
{
	if (!json_is_integer(v))
		return;
	int64_t n = json_integer_value(v);
	if (n >= 0 && (*into < 0 || n < *into))
		*into = n;
}

void hr_limits_fold(hr_limits *l, const char *json_text)
{
	if (!json_text || strcmp(json_text, "{}") == 0)
		return; /* the common case: nothing set, nothing parsed */
	json_t *o = json_loads(json_text, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	fold_one(&l->api_rps, json_object_get(o, "api_rps"));
	fold_one(&l->contacts, json_object_get(o, "contacts"));
	json_t *d = json_object_get(o, "messages_per_day");
	for (int i = 0; json_is_object(d) && i < HR_LIMIT_CHANNELS; i++)
		fold_one(&l->per_day[i], json_object_get(d, hr_limit_channel_names[i]));
	json_decref(o);
}

json_t *hr_limits_json(const hr_limits *l)
{
	json_t *o = json_object(), *d = json_object();
	if (l->api_rps >= 0)
		json_object_set_new(o, "api_rps", json_integer(l->api_rps));
	if (l->contacts >= 0)
		json_object_set_new(o, "contacts", json_integer(l->contacts));
	for (int i = 0; i < HR_LIMIT_CHANNELS; i++)
		if (l->per_day[i] >= 0)
			json_object_set_new(d, hr_limit_channel_names[i], json_integer(l->per_day[i]));
	if (json_object_size(d))
		json_object_set_new(o, "messages_per_day", d);
	else
		json_decref(d);
	return o;
}

bool hr_limits_store(PGconn *c, const char *kind, const char *slug, json_t *lim, hr_err *err)
{
	bool agency = strcmp(kind, "agency") == 0;
	if (!agency && strcmp(kind, "tenant") != 0)
		return hr_fail(err, HR_ERR_INTERNAL, "", "limits of '%s'", kind);
	if (!hr_slug_valid(slug, kind, err) || !hr_limits_check(lim, "", agency, err))
		return false;
	char *text = hr_json_dump(lim);
	const char *p[] = {slug, text};
	PGresult *r;
	bool ok = hr_db_query(c,
			      agency ? "UPDATE herald.agencies SET limits = $2::jsonb WHERE slug = $1 RETURNING id"
				     : "UPDATE herald.tenants SET limits = $2::jsonb, updated_at = now() WHERE slug = $1 "
				       "RETURNING id",
			      2, p, &r, err);
	hr_free(text);
	if (!ok)
		return false;
	int n = PQntuples(r);
	PQclear(r);
	if (n == 0)
		return hr_fail(err, HR_ERR_NOTFOUND, kind, "no %s '%s'", kind, slug);
	/* Rate limits (rate_per_s, sender_rates) reach the scheduler within its re-read (scheduler/dispatch.c). */
	return true;
}
