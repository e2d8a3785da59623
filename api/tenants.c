/*
 * tenants.c -- the agency API: create and list tenants, suspend and resume
 * them, hand out their keys, store their provider accounts, set their limits.
 *
 * Only agency keys reach these handlers (routes.c).  A tenant of another
 * agency answers 404 exactly like a missing one (hr_principal_tenant).
 * Each operation is one transaction of common/tenancy.c or providers.c on
 * the control database; nothing is changed when one fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "providers.h"

static json_t *tenant_json(const hr_tenant *t)
{
	return json_pack("{s:s, s:s, s:i}", "slug", t->slug, "status", t->status, "schema_version",
			 t->schema_version);
}

/* The tenant named in the path, if it is this agency's; else a 404 is set. */
static bool own_tenant(api_req *r, hr_tenant *t)
{
	hr_err err = {0};
	if (!hr_slug_valid(r->param[0], "slug", &err) || !hr_principal_tenant(r->db, &r->who, r->param[0], t, &err)) {
		if (err.kind == HR_ERR_DB)
			api_problem_err(r, &err);
		else
			api_problem(r, 404, "not-found", "Not found", "no such tenant", NULL);
		return false;
	}
	return true;
}

/* settings: {"default_country_code": "44", "transactional_policy": "suppressions",
 *            "track_opens": true, "track_clicks": true} (tracking: workers/tracking.h) */
static void check_settings(jv *v, json_t *s)
{
	static const char *const allowed[] = {"default_country_code", "transactional_policy", "track_opens",
					      "track_clicks", "time_zone", "quiet_hours", "frequency_cap", NULL};
	jv_only(v, s, "/settings", allowed);
	const char *cc = jv_str(v, s, "/settings", "default_country_code", false, 4);
	if (cc) {
		const char *d = cc[0] == '+' ? cc + 1 : cc;
		size_t n = strlen(d);
		bool ok = n >= 1 && n <= 3 && d[0] != '0' && strspn(d, "0123456789") == n;
		if (!ok)
			jv_add(v, "/settings", "default_country_code", "must be 1 to 3 digits, e.g. \"44\"");
	}
	bool present, on;
	jv_bool(v, s, "/settings", "track_opens", false, &present, &on);
	jv_bool(v, s, "/settings", "track_clicks", false, &present, &on);
	const char *pol = jv_str(v, s, "/settings", "transactional_policy", false, 32);
	if (pol && strcmp(pol, "none") && strcmp(pol, "suppressions") && strcmp(pol, "consent"))
		jv_add(v, "/settings", "transactional_policy", "must be none, suppressions or consent");
	/* Campaign settings (docs/campaigns.md): the zone, quiet hours and frequency cap of the tenant. */
	const char *tz = jv_str(v, s, "/settings", "time_zone", false, 64);
	if (tz && !hr_tz_valid(tz))
		jv_add(v, "/settings", "time_zone", "is not a known IANA time zone");
	json_t *qh = jv_obj(v, s, "/settings", "quiet_hours", false);
	if (qh) {
		static const char *const qallowed[] = {"from", "to", NULL};
		jv_only(v, qh, "/settings/quiet_hours", qallowed);
		static const char *const ends[] = {"from", "to"};
		for (int i = 0; i < 2; i++) {
			const char *hm = jv_str(v, qh, "/settings/quiet_hours", ends[i], true, 5);
			int hh, mm;
			char tail;
			if (hm && (strlen(hm) != 5 || sscanf(hm, "%2d:%2d%c", &hh, &mm, &tail) != 2 || hh > 23 ||
				   mm > 59 || hh < 0 || mm < 0))
				jv_add(v, "/settings/quiet_hours", ends[i], "want a local time \"HH:MM\" (00:00..23:59)");
		}
	}
	json_t *fc = jv_obj(v, s, "/settings", "frequency_cap", false);
	if (fc) {
		static const char *const fallowed[] = {"max", "per", NULL};
		bool given;
		int64_t max;
		jv_only(v, fc, "/settings/frequency_cap", fallowed);
		jv_int(v, fc, "/settings/frequency_cap", "max", true, 1, 1000, &given, &max);
		const char *per = jv_str(v, fc, "/settings/frequency_cap", "per", true, 8);
		if (per && strcmp(per, "day") && strcmp(per, "week"))
			jv_add(v, "/settings/frequency_cap", "per", "must be day or week");
	}
}

void tenants_create(api_req *r)
{
	static const char *const allowed[] = {"slug", "name", "settings", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	const char *slug = jv_str(&v, r->json, "", "slug", true, 40);
	const char *name = jv_str(&v, r->json, "", "name", false, 200);
	json_t *settings = jv_obj(&v, r->json, "", "settings", false);
	hr_err err = {0};
	if (slug && !hr_slug_valid(slug, "slug", &err))
		jv_add(&v, "", "slug", "%s", err.msg);
	if (settings)
		check_settings(&v, settings);
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	hr_tenant t;
	if (!hr_tenant_create(r->db, api_migrations(r), r->who.agency_slug, slug, name, &t, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (settings) {
		/* Validated above, so only the database can fail here; the tenant then exists without them. */
		char *s = api_dump(settings);
		const char *p[] = {s, slug};
		bool ok = hr_db_query(r->db, "UPDATE herald.tenants SET settings = $1::jsonb WHERE slug = $2", 2, p,
				      NULL, &err);
		hr_free(s);
		if (!ok) {
			api_problem_err(r, &err);
			return;
		}
	}
	json_t *out = tenant_json(&t);
	json_object_set_new(out, "name", json_string(name ? name : slug));
	json_object_set_new(out, "settings", settings ? json_incref(settings) : json_object());
	snprintf(r->location, sizeof r->location, "/v1/tenants/%s", slug);
	api_json(r, 201, out);
}

void tenants_list(api_req *r)
{
	char id[32];
	snprintf(id, sizeof id, "%lld", (long long)r->who.agency_id);
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT slug, name, status, schema_version, settings, "
			 "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
			 "FROM herald.tenants WHERE agency_id = $1 ORDER BY slug",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	json_t *arr = json_array();
	for (int i = 0; i < PQntuples(res); i++) {
		json_t *s = json_loads(PQgetvalue(res, i, 4), 0, NULL);
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:o, s:s}", "slug", PQgetvalue(res, i, 0),
						     "name", PQgetvalue(res, i, 1), "status", PQgetvalue(res, i, 2),
						     "schema_version", atoi(PQgetvalue(res, i, 3)), "settings",
						     s ? s : json_object(), "created_at", PQgetvalue(res, i, 5)));
	}
	PQclear(res);
	api_json(r, 200, json_pack("{s:o}", "data", arr));
}

static void set_status(api_req *r, const char *status)
{
	hr_tenant t;
	if (!own_tenant(r, &t))
		return;
	hr_err err = {0};
	if (!hr_tenant_set_status(r->db, t.slug, status, &err)) {
		api_problem_err(r, &err);
		return;
	}
	api_json(r, 200, json_pack("{s:s, s:s}", "slug", t.slug, "status", status));
}

void tenants_suspend(api_req *r)
{
	set_status(r, "suspended");
}

void tenants_resume(api_req *r)
{
	set_status(r, "active");
}

void tenants_key_create(api_req *r)
{
	hr_tenant t;
	if (!own_tenant(r, &t))
		return;
	static const char *const allowed[] = {"scope", "name", NULL};
	jv v;
	jv_init(&v);
	jv_only(&v, r->json, "", allowed);
	const char *scope = jv_str(&v, r->json, "", "scope", true, 8);
	const char *name = jv_str(&v, r->json, "", "name", false, 200);
	if (scope && strcmp(scope, "full") && strcmp(scope, "send") && strcmp(scope, "read"))
		jv_add(&v, "", "scope", "must be full, send or read");
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	char key[HR_KEY_LEN_TOTAL + 1], key_id[HR_KEY_ID_LEN + 1];
	hr_err err = {0};
	if (!hr_apikey_create(r->db, r->who.agency_slug, t.slug, scope, name, key, key_id, &err)) {
		api_problem_err(r, &err);
		return;
	}
	/* The only time the secret is ever shown. */
	api_json(r, 201, json_pack("{s:s, s:s, s:s, s:s}", "key", key, "key_id", key_id, "scope", scope, "tenant",
				   t.slug));
}

void tenants_provider_put(api_req *r)
{
	hr_tenant t;
	if (!own_tenant(r, &t))
		return;
	static const char *const allowed[] = {"channel", "transport", "config", "secret", "rate_per_s", NULL};
	jv v;
	jv_init(&v);
	hr_err err = {0};
	if (!hr_slug_valid(r->param[1], "name", &err)) {
		json_t *errors = json_array();
		json_array_append_new(errors, json_pack("{s:s, s:s}", "parameter", "name", "detail", err.msg));
		jv_free(&v);
		api_problem(r, 422, "validation", "The request is not valid", "the account name in the path is not valid",
			    errors);
		return;
	}
	jv_only(&v, r->json, "", allowed);
	const char *channel = jv_str(&v, r->json, "", "channel", true, 16);
	const char *transport = jv_str(&v, r->json, "", "transport", true, 16);
	json_t *config = jv_obj(&v, r->json, "", "config", false);
	json_t *secret = jv_obj(&v, r->json, "", "secret", false);
	bool has_rate;
	int64_t rate = 0;
	jv_int(&v, r->json, "", "rate_per_s", false, 1, 1000000, &has_rate, &rate);
	if (channel && strcmp(channel, "email") && strcmp(channel, "sms") && strcmp(channel, "messenger") &&
	    strcmp(channel, "push") && strcmp(channel, "webhook"))
		jv_add(&v, "", "channel", "must be email, sms, messenger, push or webhook");
	if (transport && strcmp(transport, "smtp") && strcmp(transport, "http") && strcmp(transport, "sink"))
		jv_add(&v, "", "transport", "must be smtp, http or sink");
	if (!jv_ok(&v)) {
		api_problem_invalid(r, v.errors);
		return;
	}
	jv_free(&v);
	const uint8_t *key = api_master_key(r);
	if (!key) {
		api_problem(r, 503, "unavailable", "No master key",
			    "this server has no master key to seal provider secrets (see master_key)", NULL);
		return;
	}
	char *cfg = config ? api_dump(config) : hr_strdup("{}");
	char *sec = secret ? api_dump(secret) : NULL;
	hr_provider_spec spec = {.name = r->param[1], .channel = channel, .transport = transport, .config = cfg,
				 .secret = sec, .rate_per_s = (int)rate};
	bool ok = hr_provider_put(r->db, key, t.slug, &spec, &err);
	hr_free(cfg);
	hr_free(sec);
	if (!ok) {
		api_problem_err(r, &err);
		return;
	}
	api_provider_forget(r, t.id); /* committed (autocommit): sends see the change at once */
	json_t *out = json_pack("{s:s, s:s, s:s, s:b}", "name", r->param[1], "channel", channel, "transport",
				transport, "has_secret", secret != NULL);
	json_object_set_new(out, "rate_per_s", has_rate ? json_integer(rate) : json_null());
	api_json(r, 200, out);
}

/*
 * GET/PUT /v1/tenants/{slug}/limits: the tenant's own limits (PUT replaces
 * them), its agency's (set by the operator: heraldctl agency limits) and the
 * ones in effect -- for each, the smaller of the two (common/limits.h).
 */
static void limits_answer(api_req *r, const hr_tenant *t)
{
	const char *p[] = {t->slug};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT t.limits, a.limits FROM herald.tenants t JOIN herald.agencies a ON a.id = t.agency_id "
			 "WHERE t.slug = $1",
			 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) != 1) {
		PQclear(res);
		api_problem(r, 404, "not-found", "Not found", "no such tenant", NULL);
		return;
	}
	json_t *own = json_loads(PQgetvalue(res, 0, 0), 0, NULL), *agency = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
	hr_limits eff;
	hr_limits_none(&eff);
	hr_limits_fold(&eff, PQgetvalue(res, 0, 0));
	hr_limits_fold(&eff, PQgetvalue(res, 0, 1));
	PQclear(res);
	api_json(r, 200, json_pack("{s:s, s:o, s:o, s:o}", "tenant", t->slug, "limits", own ? own : json_object(),
				   "agency", agency ? agency : json_object(), "effective", hr_limits_json(&eff)));
}

void tenants_limits_get(api_req *r)
{
	hr_tenant t;
	if (own_tenant(r, &t))
		limits_answer(r, &t);
}

void tenants_limits_put(api_req *r)
{
	hr_tenant t;
	if (!own_tenant(r, &t))
		return;
	hr_err err = {0};
	if (!hr_limits_store(r->db, "tenant", t.slug, r->json, &err)) {
		api_problem_err(r, &err);
		return;
	}
	limits_answer(r, &t);
}
