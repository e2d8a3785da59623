/*
 * rules.c -- trigger rules: CRUD on /v1/rules, enable / disable, and who is
 * in which step (/v1/rules/{id}/instances).
 *
 * A rule is parsed and validated by common/rule.c (one parser for the API
 * and the engine); a bad rule is a 422 whose pointer names the wrong part
 * (/steps/0/actions/1/send/channel).  rules_pre runs before the tenant
 * transaction and also checks every provider account a rule names (they live
 * in the control schema); the handlers then check templates in the tenant
 * schema and write.  Writing a rule NOTIFYs herald_events with the tenant id,
 * so the engine (scheduler/rules.c) looks at the tenant at once -- a new date
 * rule is evaluated for today without waiting for tomorrow.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "rule.h"

#define RULE_JSON                                                                                   \
	"json_build_object('id', r.id, 'name', r.name, 'enabled', r.enabled, 'definition', r.definition, " \
	"'created_at', r.created_at, 'updated_at', r.updated_at)::text"

typedef struct rule_in {
	hr_rule *rule;
	char *definition; /* JSON text as stored */
} rule_in;

static void rule_in_free(void *p)
{
	rule_in *in = p;
	hr_rule_free(in->rule);
	hr_free(in->definition);
	hr_free(in);
}

static bool rule_id(api_req *r)
{
	const char *s = r->param[0];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		api_problem(r, 404, "not-found", "Not found", "no such rule", NULL);
		return false;
	}
	return true;
}

static void invalid(api_req *r, const char *pointer, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void invalid(api_req *r, const char *pointer, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *errors = json_array();
	json_array_append_new(errors, json_pack("{s:s, s:s}", "pointer", pointer, "detail", msg));
	api_problem_invalid(r, errors);
}

/* Parse the body and check the provider accounts it names (control schema). */
void rules_pre(api_req *r)
{
	rule_in *in = hr_calloc(1, sizeof *in);
	r->state = in;
	r->state_free = rule_in_free;
	in->definition = api_dump(r->json);
	hr_err err = {0};
	if (!hr_rule_parse(in->definition, &in->rule, &err)) {
		invalid(r, err.field, "%s", err.msg);
		return;
	}
	for (int i = 0; i < in->rule->nsteps; i++)
		for (int j = 0; j < in->rule->steps[i].nactions; j++) {
			hr_rule_action *a = &in->rule->steps[i].actions[j];
			if (a->kind != HR_ACT_SEND && a->kind != HR_ACT_WEBHOOK)
				continue;
			char base[96];
			snprintf(base, sizeof base, "/steps/%d/actions/%d/%s", i, j,
				 a->kind == HR_ACT_SEND ? "send" : "webhook");
			if (!api_provider_check(r, base, a->provider, a->channel))
				return;
		}
}

/* The code pool an issue_code action names must exist (tenant schema). */
static bool pool_ok(api_req *r, const hr_rule_action *a, int i, int j)
{
	char id[32];
	snprintf(id, sizeof id, "%lld", (long long)a->pool_id);
	const char *p[] = {id};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT 1 FROM code_pools WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	bool found = PQntuples(res) == 1;
	PQclear(res);
	if (!found) {
		char ptr[96];
		snprintf(ptr, sizeof ptr, "/steps/%d/actions/%d/issue_code/pool", i, j);
		invalid(r, ptr, "no such code pool (POST /v1/code-pools makes one)");
	}
	return found;
}

/* Templates named by send actions must exist, for the action's channel; code pools
 * named by issue_code actions too (tenant schema). */
static bool templates_ok(api_req *r, const hr_rule *rule)
{
	for (int i = 0; i < rule->nsteps; i++)
		for (int j = 0; j < rule->steps[i].nactions; j++) {
			const hr_rule_action *a = &rule->steps[i].actions[j];
			if (a->kind == HR_ACT_ISSUE_CODE) {
				if (!pool_ok(r, a, i, j))
					return false;
				continue;
			}
			if (!a->template_id)
				continue;
			char id[32], ver[16];
			snprintf(id, sizeof id, "%lld", (long long)a->template_id);
			snprintf(ver, sizeof ver, "%d", a->template_version);
			const char *p[] = {id, ver, a->channel};
			PGresult *res;
			hr_err err = {0};
			if (!hr_db_query(r->db,
					 "SELECT 1 FROM template_versions v JOIN templates t ON t.id = v.template_id "
					 "WHERE v.template_id = $1 AND v.version = $2 AND t.channel = $3",
					 3, p, &res, &err)) {
				api_problem_err(r, &err);
				return false;
			}
			bool found = PQntuples(res) == 1;
			PQclear(res);
			if (!found) {
				char ptr[96];
				snprintf(ptr, sizeof ptr, "/steps/%d/actions/%d/%s/template", i, j,
					 a->kind == HR_ACT_SEND ? "send" : "webhook");
				invalid(r, ptr, "no such template version for channel %s", a->channel);
				return false;
			}
		}
	return true;
}

static const char *kind_name(hr_trig_kind k)
{
	return k == HR_TRIG_EVENT ? "event" : k == HR_TRIG_DATE ? "date" : "inactivity";
}

static void notify(api_req *r)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)r->tenant.id);
	const char *p[] = {tid};
	hr_err err = {0};
	/* Best effort inside the request's transaction: it commits with the rule. */
	if (!hr_db_query(r->db, "SELECT pg_notify('herald_events', $1)", 1, p, NULL, &err))
		api_problem_err(r, &err);
}

/* Answer with the rule row RETURNING RULE_JSON produced. */
static void answer(api_req *r, PGresult *res, int status)
{
	json_t *j = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	if (status == 201)
		snprintf(r->location, sizeof r->location, "/v1/rules/%lld",
			 (long long)json_integer_value(json_object_get(j, "id")));
	api_json(r, status, j ? j : json_null());
}

void rules_create(api_req *r)
{
	rule_in *in = r->state;
	if (!templates_ok(r, in->rule))
		return;
	const char *p[] = {in->rule->name, in->rule->enabled ? "t" : "f", kind_name(in->rule->trigger),
			   in->rule->trigger == HR_TRIG_EVENT ? in->rule->on.name : NULL, in->definition};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "WITH r AS (INSERT INTO rules (name, enabled, trigger_kind, trigger_event, definition) "
			 "VALUES ($1, $2, $3, $4, $5) RETURNING *) SELECT " RULE_JSON " FROM r",
			 5, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	answer(r, res, 201);
	PQclear(res);
	notify(r);
}

void rules_put(api_req *r)
{
	rule_in *in = r->state;
	if (!rule_id(r) || !templates_ok(r, in->rule))
		return;
	const char *p[] = {r->param[0], in->rule->name, in->rule->enabled ? "t" : "f", kind_name(in->rule->trigger),
			   in->rule->trigger == HR_TRIG_EVENT ? in->rule->on.name : NULL, in->definition};
	PGresult *res;
	hr_err err = {0};
	/* Contacts already inside keep their step index; a shorter rule ends them at the next step. */
	if (!hr_db_query(r->db,
			 "WITH r AS (UPDATE rules SET name = $2, enabled = $3, trigger_kind = $4, trigger_event = $5, "
			 "definition = $6, daily_on = CASE WHEN trigger_kind = $4 THEN daily_on END, updated_at = now() "
			 "WHERE id = $1 RETURNING *) SELECT " RULE_JSON " FROM r",
			 6, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such rule", NULL);
	else
		answer(r, res, 200);
	PQclear(res);
	if (r->status < 400)
		notify(r);
}

void rules_get(api_req *r)
{
	if (!rule_id(r))
		return;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT " RULE_JSON " FROM rules r WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such rule", NULL);
	else
		answer(r, res, 200);
	PQclear(res);
}

void rules_list(api_req *r)
{
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT coalesce(json_agg(x ORDER BY (x->>'id')::bigint), '[]')::text FROM "
				"(SELECT " RULE_JSON "::json AS x FROM rules r) s",
			 0, NULL, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	json_t *data = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	api_json(r, 200, json_pack("{s:o}", "data", data ? data : json_array()));
}

void rules_delete(api_req *r)
{
	if (!rule_id(r))
		return;
	const char *p[] = {r->param[0]};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "DELETE FROM rules WHERE id = $1 RETURNING id", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such rule", NULL);
	else
		api_json(r, 200, json_pack("{s:I, s:b}", "id", (json_int_t)strtoll(r->param[0], NULL, 10), "deleted", 1));
	PQclear(res);
}

static void set_enabled(api_req *r, bool on)
{
	if (!rule_id(r))
		return;
	const char *p[] = {r->param[0], on ? "t" : "f"};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "WITH r AS (UPDATE rules SET enabled = $2, definition = jsonb_set(definition, '{enabled}', "
			 "to_jsonb($2::boolean)), updated_at = now() WHERE id = $1 RETURNING *) SELECT " RULE_JSON " FROM r",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such rule", NULL);
	else
		answer(r, res, 200);
	PQclear(res);
	if (r->status < 400)
		notify(r);
}

void rules_enable(api_req *r)
{
	set_enabled(r, true);
}

void rules_disable(api_req *r)
{
	set_enabled(r, false);
}

/*
 * Who is where: counts per (step, state), and the instances themselves
 * (newest first, ?limit= up to 500, ?state= active|done|exited).
 */
void rules_instances(api_req *r)
{
	if (!rule_id(r))
		return;
	const char *st = api_query(r, "state"), *lim = api_query(r, "limit");
	if (st && strcmp(st, "active") && strcmp(st, "done") && strcmp(st, "exited")) {
		json_t *e = json_array();
		json_array_append_new(e, json_pack("{s:s, s:s}", "parameter", "state", "detail",
						   "must be active, done or exited"));
		api_problem(r, 400, "bad-parameter", "Bad query parameter", "state must be active, done or exited", e);
		return;
	}
	long limit = 100;
	if (lim) {
		size_t n = strlen(lim);
		limit = n >= 1 && n <= 3 && strspn(lim, "0123456789") == n ? atol(lim) : 0;
		if (limit < 1 || limit > 500) {
			json_t *e = json_array();
			json_array_append_new(e, json_pack("{s:s, s:s}", "parameter", "limit", "detail", "must be 1 to 500"));
			api_problem(r, 400, "bad-parameter", "Bad query parameter", "limit must be 1 to 500", e);
			return;
		}
	}
	char ls[16];
	snprintf(ls, sizeof ls, "%ld", limit);
	const char *p[] = {r->param[0], st, ls};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT (SELECT count(*) FROM rules WHERE id = $1), "
			 "(SELECT coalesce(json_agg(json_build_object('step', step, 'state', state, 'count', n) "
			 " ORDER BY step, state), '[]') FROM (SELECT step, state, count(*) AS n FROM rule_instances "
			 " WHERE rule_id = $1 GROUP BY step, state) s)::text, "
			 "(SELECT coalesce(json_agg(json_build_object('id', id, 'contact_id', contact_id, 'step', step, "
			 " 'state', state, 'due_at', due_at, 'entered_at', entered_at, 'updated_at', updated_at, "
			 " 'message_ids', message_ids) ORDER BY id DESC), '[]') FROM (SELECT * FROM rule_instances "
			 " WHERE rule_id = $1 AND ($2::text IS NULL OR state = $2) ORDER BY id DESC LIMIT $3::int) i)::text",
			 3, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "1")) {
		api_problem(r, 404, "not-found", "Not found", "no such rule", NULL);
	} else {
		json_t *steps = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
		json_t *list = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
		api_json(r, 200, json_pack("{s:o, s:o}", "steps", steps ? steps : json_array(), "data",
					   list ? list : json_array()));
	}
	PQclear(res);
}
