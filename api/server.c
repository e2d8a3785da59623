/*
 * server.c -- HTTP plumbing, routing and the request pipeline (see api.h).
 *
 * libmicrohttpd runs api_threads polling threads (MHD_OPTION_THREAD_POOL_SIZE)
 * with poll(2), level-triggered: with MHD_USE_EPOLL (edge-triggered in
 * 0.9.75) a connection whose handler ran long -- a streamed import applying
 * a chunk -- lost its read readiness and stalled until the idle timeout.
 * Each request borrows one of as many PostgreSQL connections for its whole
 * life, so a request never waits for a connection while holding a thread.
 * A tenant request's round trips: one that begins the transaction, reads the
 * tenant's settings and switches to its role and schema (with a pre hook:
 * pre between the read and a second round trip for the switch, unless the
 * route says pre_acts; provider accounts come from the cache below), the
 * handler's own statements, COMMIT -- or the handler sends its last
 * statement with the COMMIT (api_commit_prepared), as a send and an event
 * batch do: a send is then two round trips in all.  Wake-ups for the scheduler go
 * after the COMMIT through notify.c, never inside the transaction.
 * Keep-alive is MHD's default for HTTP/1.1.  Bodies over api_max_body are
 * refused with 413 (at once when Content-Length says so, else as soon as the
 * collected bytes pass the limit; the rest is discarded).  Idle connections
 * close after api_timeout_ms, and each connection's statement_timeout is the
 * same, so no request can hold a thread and a connection forever.
 *
 * Streamed routes (api_stream, the contact import) are told apart when the
 * headers arrive: their body goes to the handler piece by piece, bounded by
 * their own setting, and no pooled connection is held between pieces -- a
 * pool slot held across callbacks could deadlock the thread pool.
 *
 * URLs are not percent-decoded (no unescape callback): path parameters are
 * matched raw and must be ids or slugs, so `%2e%2e`, `%00` or quotes in a
 * path simply do not match and answer 404.
 */
#include "server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "alloc.h"
#include "api.h"
#include "auth.h"
#include "db.h"
#include "log.h"
#include "notify.h"
#include "providers.h"

struct api_server {
	const hr_config *cfg;
	const hr_migration_set *set;
	char *dsn;
	uint8_t master[HR_KEY_LEN];
	bool have_master;
	size_t max_body;
	struct MHD_Daemon *d;
	int port;
	api_keys *keys;
	api_webhooks *hooks;  /* the webhook delivery thread, NULL without a master key */
	api_notifier *notifier; /* wake-ups for the scheduler after commit */
	/* provider accounts: a direct-mapped cache (api_provider_channel) */
	pthread_mutex_t pmu;
	long prov_ms;
	struct prov_entry *prov;
	/* the connection pool */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int nconn;
	PGconn **conn;
	bool *busy;
	uint32_t *prepared; /* per connection: the api_commit_prepared statements it holds (bit = id) */
};

/* One HTTP request's collection state (MHD's con_cls). */
typedef struct upload {
	char *buf;
	size_t len, cap;
	bool too_large;
	/* streamed routes (api_stream): the request lives across callbacks */
	api_req *sr;
	size_t limit, got;
	bool responded;
} upload;

const hr_config *api_cfg(const api_req *r)
{
	return r->srv->cfg;
}

const hr_migration_set *api_migrations(const api_req *r)
{
	return r->srv->set;
}

const char *api_dsn(const api_req *r)
{
	return r->srv->dsn;
}

const uint8_t *api_master_key(const api_req *r)
{
	return r->srv->have_master ? r->srv->master : NULL;
}

const char *api_header(api_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *api_query(api_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- provider accounts (see api.h) ---- */

#define PROV_SLOTS 1024

typedef struct prov_entry {
	int64_t tenant;   /* 0 = free */
	char name[48];
	char channel[16];
	int64_t until_ms; /* monotonic */
} prov_entry;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t prov_slot(int64_t tenant, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)tenant;
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ULL;
	return (size_t)(h % PROV_SLOTS);
}

bool api_provider_channel(api_req *r, const char *name, char channel[16], hr_err *err)
{
	api_server *s = r->srv;
	int64_t tenant = r->tenant.id;
	channel[0] = '\0';
	if (!name)
		return true; /* validation reported the missing name already */
	bool cacheable = s->prov_ms > 0 && strlen(name) < sizeof s->prov->name;
	size_t k = prov_slot(tenant, name);
	if (cacheable) {
		pthread_mutex_lock(&s->pmu);
		prov_entry *e = &s->prov[k];
		bool hit = e->tenant == tenant && e->until_ms > mono_ms() && strcmp(e->name, name) == 0;
		if (hit)
			memcpy(channel, e->channel, sizeof e->channel);
		pthread_mutex_unlock(&s->pmu);
		if (hit)
			return true;
	}
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)tenant);
	const char *p[] = {tid, name};
	/*
	 * In a tenant transaction (a pre hook) the connection acts as the tenant,
	 * whose role cannot read the control schema: step out of the role for
	 * this one read and back in, in the same round trip.
	 */
	char *back = r->acting ? hr_db_ident(r->db, r->tenant.role) : NULL;
	char *again = back ? hr_sprintf("SET LOCAL ROLE %s", back) : NULL;
	hr_db_stmt q[] = {
		{"SET LOCAL ROLE NONE", 0, NULL, NULL},
		{"SELECT channel FROM herald.provider_accounts WHERE tenant_id = $1 AND name = $2", 2, p, NULL},
		{again, 0, NULL, NULL},
	};
	bool ok = back ? hr_db_pipeline(r->db, q, 3, err) : hr_db_query(r->db, q[1].sql, 2, p, &q[1].res, err);
	hr_free(back);
	hr_free(again);
	if (!ok)
		return false;
	PGresult *res = q[1].res;
	if (PQntuples(res) == 1)
		snprintf(channel, 16, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (cacheable && channel[0]) {
		pthread_mutex_lock(&s->pmu);
		prov_entry *e = &s->prov[k];
		e->tenant = tenant;
		snprintf(e->name, sizeof e->name, "%s", name);
		memcpy(e->channel, channel, sizeof e->channel);
		e->until_ms = mono_ms() + s->prov_ms;
		pthread_mutex_unlock(&s->pmu);
	}
	return true;
}

bool api_provider_check(api_req *r, const char *base, const char *name, const char *channel)
{
	char have[16];
	hr_err err = {0};
	if (!api_provider_channel(r, name, have, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	if (have[0] && strcmp(have, channel) == 0)
		return true;
	jv v;
	jv_init(&v);
	jv_add(&v, base, "provider", have[0] ? "this account serves another channel" : "no such provider account");
	api_problem_invalid(r, v.errors);
	return false;
}

void api_provider_forget(api_req *r, int64_t tenant_id)
{
	api_server *s = r->srv;
	pthread_mutex_lock(&s->pmu);
	for (size_t i = 0; i < PROV_SLOTS; i++)
		if (s->prov[i].tenant == tenant_id)
			s->prov[i].tenant = 0;
	pthread_mutex_unlock(&s->pmu);
}

/* ---- the connection pool ---- */

#define PREP_NAME "herald_api_%u" /* api_commit_prepared's statement id */

static bool pool_open(api_server *s, hr_err *err)
{
	char *dsn = hr_sprintf("%s%soptions='-c statement_timeout=%ld'", s->dsn,
			       strstr(s->dsn, "://") ? (strchr(s->dsn, '?') ? "&" : "?") : " ",
			       hr_config_int(s->cfg, "api_timeout_ms"));
	/* A URL takes options=... URL-encoded. */
	if (strstr(s->dsn, "://")) {
		hr_free(dsn);
		dsn = hr_sprintf("%s%soptions=-c%%20statement_timeout%%3D%ld", s->dsn,
				 strchr(s->dsn, '?') ? "&" : "?", hr_config_int(s->cfg, "api_timeout_ms"));
	}
	bool ok = true;
	for (int i = 0; i < s->nconn && ok; i++)
		ok = hr_db_connect(dsn, &s->conn[i], err);
	hr_free(s->dsn);
	s->dsn = dsn;
	return ok;
}

static PGconn *pool_get(api_server *s, int *slot)
{
	pthread_mutex_lock(&s->mu);
	for (;;) {
		for (int i = 0; i < s->nconn; i++)
			if (!s->busy[i]) {
				s->busy[i] = true;
				*slot = i;
				pthread_mutex_unlock(&s->mu);
				PGconn *c = s->conn[i];
				if (PQstatus(c) != CONNECTION_OK) {
					PQreset(c);
					s->prepared[i] = 0; /* a new session holds none */
				}
				return c;
			}
		pthread_cond_wait(&s->cv, &s->mu);
	}
}

static void pool_put(api_server *s, int slot)
{
	PGconn *c = s->conn[slot];
	if (PQtransactionStatus(c) != PQTRANS_IDLE)
		hr_db_rollback(c);
	pthread_mutex_lock(&s->mu);
	s->busy[slot] = false;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* ---- routing ---- */

/* Match path against pattern; fills r->param.  Returns false on no match. */
static bool match(const char *pattern, const char *path, api_req *r)
{
	int np = 0;
	const char *p = pattern, *u = path;
	while (*p && *u) {
		if (*p == '{') {
			const char *end = strchr(u, '/');
			size_t n = end ? (size_t)(end - u) : strlen(u);
			if (n == 0 || np >= API_MAX_PARAMS)
				goto no;
			r->param[np++] = hr_strndup(u, n);
			u += n;
			p = strchr(p, '}') + 1;
		} else if (*p++ != *u++) {
			goto no;
		}
	}
	if (*p || *u)
		goto no;
	return true;
no:
	for (int i = 0; i < np; i++) {
		hr_free(r->param[i]);
		r->param[i] = NULL;
	}
	return false;
}

const api_route *api_route_find(api_req *r)
{
	size_t n;
	const api_route *t = api_routes(&n);
	const api_route *found = NULL;
	size_t alen = 0;
	for (size_t i = 0; i < n && !found; i++) {
		api_req probe = {0};
		if (!match(t[i].pattern, r->path, &probe))
			continue;
		if (strcmp(t[i].method, r->method) == 0) {
			found = &t[i];
			memcpy(r->param, probe.param, sizeof r->param);
			break;
		}
		for (int k = 0; k < API_MAX_PARAMS; k++)
			hr_free(probe.param[k]);
		alen += (size_t)snprintf(r->allow + alen, alen < sizeof r->allow ? sizeof r->allow - alen : 0,
					 "%s%s", alen ? ", " : "", t[i].method);
	}
	if (found)
		return found;
	if (r->allow[0])
		api_problem(r, 405, "method-not-allowed", "Method not allowed", "this resource does not take that method",
			    NULL);
	else
		api_problem(r, 404, "not-found", "Not found", "no such resource", NULL);
	return NULL;
}

/* ---- the pipeline ---- */

static void parse_body(api_req *r, const upload *u)
{
	const char *ct = api_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (!ct || strncasecmp(ct, "application/json", 16) != 0 || (ct[16] && ct[16] != ';' && ct[16] != ' ')) {
		api_problem(r, 415, "unsupported-media-type", "Unsupported media type",
			    "send the body as Content-Type: application/json", NULL);
		return;
	}
	if (r->route->scan && r->route->scan(r, u->buf ? u->buf : "", u->len))
		return;
	api_body_json(r, u->buf ? u->buf : "", u->len);
}

void api_body_json(api_req *r, const char *buf, size_t len)
{
	json_error_t je;
	/* Duplicate keys are ambiguous: refuse them.  Invalid UTF-8 and \u0000 are refused by the parser. */
	r->json = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!r->json) {
		char *d = hr_sprintf("malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
		json_t *errors = json_array(), *e = json_object();
		json_object_set_new(e, "pointer", json_string(""));
		json_object_set_new(e, "line", json_integer(je.line));
		json_object_set_new(e, "column", json_integer(je.column));
		json_t *dj = json_string(d);
		json_object_set_new(e, "detail", dj ? dj : json_string("malformed JSON"));
		json_array_append_new(errors, e);
		api_problem(r, 400, "malformed-json", "Malformed JSON", d, errors);
		hr_free(d);
		return;
	}
	if (!json_is_object(r->json)) {
		json_t *errors = json_array(), *e = json_object();
		json_object_set_new(e, "pointer", json_string(""));
		json_object_set_new(e, "detail", json_string("must be a JSON object"));
		json_array_append_new(errors, e);
		api_problem(r, 422, "validation", "The request is not valid", "the body must be a JSON object", errors);
	}
}

static bool authenticate(api_req *r)
{
	const char *h = api_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
	hr_err err = {0};
	if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
		r->www_auth = true;
		api_problem(r, 401, "unauthorized", "Unauthorized", "send Authorization: Bearer <API key>", NULL);
		return false;
	}
	const char *key = h + 7;
	while (*key == ' ')
		key++;
	if (!api_keys_verify(r->srv->keys, r->db, key, &r->who, &err)) {
		if (err.kind == HR_ERR_NOTFOUND) {
			r->www_auth = true;
			api_problem(r, 401, "unauthorized", "Unauthorized", "the API key is not valid", NULL);
		} else {
			api_problem_err(r, &err);
		}
		return false;
	}
	if (!api_keys_take(r->srv->keys, r->who.key_pk, &r->retry_after)) {
		api_problem(r, 429, "rate-limited", "Too many requests",
			    "this key is over its request rate; retry after the Retry-After seconds", NULL);
		return false;
	}
	const api_route *rt = r->route;
	bool agency = strcmp(r->who.scope, "agency") == 0;
	if (rt->auth == API_AUTH_AGENCY && !agency) {
		api_problem(r, 403, "forbidden", "Forbidden", "this endpoint needs an agency key", NULL);
		return false;
	}
	if (rt->auth == API_AUTH_TENANT && !agency && strcmp(r->who.scope, "full") != 0) {
		bool ok = strcmp(r->who.scope, "read") == 0 ? strcmp(r->method, "GET") == 0 : rt->send_ok;
		if (!ok) {
			char *d = hr_sprintf("a '%s' key may not %s %s", r->who.scope, r->method, rt->pattern);
			api_problem(r, 403, "forbidden", "Forbidden", d, NULL);
			hr_free(d);
			return false;
		}
	}
	return true;
}

/*
 * The tenant's settings into r->tenant_settings (left NULL when the tenant
 * is not active); with begin, in a new transaction, and with act also acting
 * as the tenant (hr_db_tenant_begin) -- all in one round trip, as one
 * simple-protocol string (the id is a number, the names are quoted).
 */
static bool tenant_open(api_req *r, bool begin, bool act, hr_err *err)
{
	char *qs = hr_db_ident(r->db, r->tenant.schema), *qr = hr_db_ident(r->db, r->tenant.role);
	char *sql = hr_sprintf("%sSELECT t.settings, t.status, t.limits, a.limits FROM herald.tenants t "
			       "JOIN herald.agencies a ON a.id = t.agency_id WHERE t.id = %lld%s%s%s%s",
			       begin ? "BEGIN; " : "", (long long)r->tenant.id, act ? "; SET LOCAL ROLE " : "",
			       act ? qr : "", act ? "; SET LOCAL search_path TO " : "", act ? qs : "");
	hr_free(qs);
	hr_free(qr);
	bool ok = PQsendQuery(r->db, sql) == 1;
	hr_free(sql);
	if (!ok)
		return hr_db_fail(r->db, NULL, "query failed", err);
	PGresult *res;
	while ((res = PQgetResult(r->db))) {
		ExecStatusType st = PQresultStatus(res);
		if (st == PGRES_TUPLES_OK && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "active") == 0 &&
		    !r->tenant_settings) {
			r->tenant_settings = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
			if (!r->tenant_settings)
				r->tenant_settings = json_object();
			/* The limits in effect: the smaller of the tenant's and its agency's (common/limits.h). */
			hr_limits_none(&r->limits);
			hr_limits_fold(&r->limits, PQgetvalue(res, 0, 2));
			r->tenant_api_rps = r->limits.api_rps;
			hr_limits_none(&r->agency_limits);
			hr_limits_fold(&r->agency_limits, PQgetvalue(res, 0, 3));
			hr_limits_fold(&r->limits, PQgetvalue(res, 0, 3));
		} else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && ok) {
			ok = hr_db_fail(r->db, res, "query failed", err);
		}
		PQclear(res);
	}
	if (!ok) {
		json_decref(r->tenant_settings);
		r->tenant_settings = NULL;
	}
	return ok;
}

/*
 * Tenant routes: which tenant, its settings, then (begin) the request's
 * transaction acting as the tenant -- one round trip (tenant_open).  A
 * route with a pre hook: pre runs in the transaction before it acts as the
 * tenant (pre hooks read the control schema: provider accounts, prices),
 * then a second round trip switches role and schema.
 */
static bool enter_tenant(api_req *r, bool begin)
{
	hr_err err = {0};
	const char *slug = api_header(r, "Herald-Tenant");
	if (slug && !hr_slug_valid(slug, "Herald-Tenant", &err)) {
		api_problem(r, 404, "not-found", "Not found", "no such tenant", NULL);
		return false;
	}
	if (!hr_principal_tenant(r->db, &r->who, slug, &r->tenant, &err)) {
		if (err.kind == HR_ERR_INVALID)
			api_problem(r, 400, "tenant-required", "Tenant required",
				    "an agency key must name the tenant in the Herald-Tenant header", NULL);
		else if (err.kind == HR_ERR_NOTFOUND)
			api_problem(r, 404, "not-found", "Not found", "no such tenant", NULL);
		else
			api_problem_err(r, &err);
		return false;
	}
	bool act = begin && (!r->route->pre || r->route->pre_acts);
	if (!tenant_open(r, begin, act, &err)) {
		api_problem_err(r, &err);
		return false;
	}
	if (!r->tenant_settings) {
		api_problem(r, 404, "not-found", "Not found", "no such tenant", NULL);
		return false;
	}
	const char *which = NULL;
	/* The tenant's own api_rps and the agency's, each its own bucket: the agency's is shared. */
	if (!api_limits_take(r->srv->keys, r->tenant.id, r->tenant_api_rps, r->tenant.agency_id,
			     r->agency_limits.api_rps, &r->retry_after, &which)) {
		char *d = hr_sprintf("%s is over its api_rps limit; retry after the Retry-After seconds", which);
		api_problem(r, 429, "rate-limited", "Too many requests", d, NULL);
		hr_free(d);
		return false;
	}
	if (!begin)
		return true;
	r->acting = act;
	if (r->route->pre) {
		/* in the transaction, before it acts as the tenant (unless pre_acts): pre may read the control schema */
		r->route->pre(r);
		if (r->status)
			return false;
		if (act)
			return true;
		char *qs = hr_db_ident(r->db, r->tenant.schema), *qr = hr_db_ident(r->db, r->tenant.role);
		char *sql = hr_sprintf("SET LOCAL ROLE %s; SET LOCAL search_path TO %s", qr, qs);
		bool ok = hr_db_exec(r->db, sql, &err);
		hr_free(sql);
		hr_free(qs);
		hr_free(qr);
		if (!ok) {
			api_problem_err(r, &err);
			return false;
		}
	}
	r->acting = true;
	return true;
}

bool api_commit_prepared(api_req *r, unsigned id, const char *sql, int nparams, const char *const *params,
			 PGresult **res, hr_err *err)
{
	PGconn *c = r->db;
	char name[24];
	snprintf(name, sizeof name, PREP_NAME, id);
	uint32_t bit = 1u << (id & 31);
	bool prepare = !(*r->db_prepared & bit);
	*res = NULL;
	if (PQenterPipelineMode(c) != 1)
		return hr_db_fail(c, NULL, "pipeline failed", err);
	/* [Parse,] Bind + Execute, COMMIT, Sync: each step's results then NULL, then the sync's. */
	int steps = 0; /* queued */
	bool ok = (!prepare || (PQsendPrepare(c, name, sql, nparams, NULL) == 1 && ++steps)) &&
		  PQsendQueryPrepared(c, name, nparams, params, NULL, NULL, 0) == 1 && ++steps &&
		  PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1 && ++steps;
	if (!ok)
		hr_db_fail(c, NULL, "query failed", err);
	if (PQpipelineSync(c) != 1 && ok)
		ok = hr_db_fail(c, NULL, "pipeline failed", err);
	for (int i = prepare ? 0 : 1, end = i + steps; i < end; i++) {
		PGresult *x;
		while ((x = PQgetResult(c))) {
			ExecStatusType st = PQresultStatus(x);
			if (i == 1 && st == PGRES_TUPLES_OK && !*res) {
				*res = x;
				continue;
			}
			if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && ok)
				ok = hr_db_fail(c, st == PGRES_PIPELINE_ABORTED ? NULL : x, "query failed", err);
			else if (i == 0 && st == PGRES_COMMAND_OK)
				*r->db_prepared |= bit; /* prepared statements outlive a failed transaction */
			PQclear(x);
		}
	}
	ok = hr_db_pipeline_end(c, ok, err);
	if (!ok) {
		PQclear(*res);
		*res = NULL;
		return false;
	}
	r->committed = true;
	return true;
}

bool api_warm_prepared(PGconn *c, uint32_t *prepared, unsigned id, const char *sql, int nparams,
		       const char *const *params, hr_err *err)
{
	char name[24];
	snprintf(name, sizeof name, PREP_NAME, id);
	uint32_t bit = 1u << (id & 31);
	PGresult *res = NULL;
	if (!(*prepared & bit)) {
		res = PQprepare(c, name, sql, nparams, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			goto fail;
		PQclear(res);
		*prepared |= bit; /* outlives the rolled-back transaction, as in api_commit_prepared */
	}
	res = PQexecPrepared(c, name, nparams, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
		goto fail;
	PQclear(res);
	return true;
fail:
	hr_db_fail(c, res, "warm-up failed", err);
	PQclear(res);
	return false;
}

/* After a COMMIT: the wake-ups the handler asked for (notify.h). */
static void announce(api_req *r)
{
	if (r->notify_outbox)
		api_notify(r->srv->notifier, API_NOTIFY_OUTBOX, r->tenant.id);
	if (r->notify_events)
		api_notify(r->srv->notifier, API_NOTIFY_EVENTS, r->tenant.id);
}

static void run(api_req *r, const upload *u)
{
	if (!(r->route = api_route_find(r)))
		return;
	if (u->too_large) {
		api_problem(r, 413, "too-large", "Request body too large", "the body is larger than the server accepts",
			    NULL);
		return;
	}
	if (r->route->body) {
		parse_body(r, u);
		if (r->status)
			return;
	}
	if (r->route->auth == API_AUTH_NONE) {
		r->route->fn(r);
		return;
	}
	int slot;
	r->db = pool_get(r->srv, &slot);
	r->db_prepared = &r->srv->prepared[slot];
	if (r->route->auth == API_AUTH_SIGNED) {
		r->raw = u->buf ? u->buf : "";
		r->raw_len = u->len;
		r->route->fn(r);
		hr_err err = {0};
		if (r->status < 400 && PQtransactionStatus(r->db) == PQTRANS_INTRANS && !hr_db_commit(r->db, &err))
			api_problem_err(r, &err);
	} else if (authenticate(r)) {
		bool tenant = r->route->auth == API_AUTH_TENANT;
		if (!tenant || enter_tenant(r, true)) {
			r->route->fn(r);
			if (tenant) {
				hr_err err = {0};
				if (r->committed) {
					if (r->status < 400)
						announce(r);
				} else if ((r->status < 400 || r->keep_writes) && !hr_db_commit(r->db, &err))
					api_problem_err(r, &err);
				else if (r->status < 400)
					announce(r);
			}
		}
	}
	pool_put(r->srv, slot);
	r->db = NULL;
	r->db_prepared = NULL;
}

static enum MHD_Result respond(struct MHD_Connection *conn, api_req *r)
{
	if (!r->status)
		hr_panic("api: %s %s produced no response", r->method, r->path);
	size_t len = r->resp_len ? r->resp_len : r->resp ? strlen(r->resp) : 0;
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, r->resp, MHD_RESPMEM_MUST_COPY);
	if (r->ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
	if (r->status == 405)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"herald\"");
	if (r->location[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
	if (r->redirect && r->status < 400)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->redirect);
	if (r->no_store)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (r->status == 429) {
		char ra[16];
		snprintf(ra, sizeof ra, "%d", r->retry_after > 0 ? r->retry_after : 1);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void req_free(api_req *r)
{
	for (int i = 0; i < API_MAX_PARAMS; i++)
		hr_free(r->param[i]);
	json_decref(r->json);
	json_decref(r->tenant_settings);
	if (r->state_free)
		r->state_free(r->state);
	hr_free(r->resp);
	hr_free(r->redirect);
}

/* The streamed route a request goes to, or NULL. */
static const api_route *stream_route(const char *method, const char *url)
{
	size_t n;
	const api_route *t = api_routes(&n);
	for (size_t i = 0; i < n; i++) {
		if (!t[i].stream || strcmp(t[i].method, method) != 0)
			continue;
		api_req probe = {0};
		if (match(t[i].pattern, url, &probe)) {
			for (int k = 0; k < API_MAX_PARAMS; k++)
				hr_free(probe.param[k]);
			return &t[i];
		}
	}
	return NULL;
}

/* A streamed request's headers are in: size, key, tenant, then the handler's open. */
static void stream_open(api_req *r, size_t limit)
{
	if (!(r->route = api_route_find(r)))
		return;
	const char *cl = api_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && strtoull(cl, NULL, 10) > limit) {
		r->route->stream->too_large(r);
		return;
	}
	int slot;
	r->db = pool_get(r->srv, &slot);
	bool ok = authenticate(r) && enter_tenant(r, false);
	pool_put(r->srv, slot);
	r->db = NULL;
	if (ok)
		r->route->stream->open(r);
}

/*
 * A piece of a streamed body, or (size 0) its end.  An answer decided while
 * the body still streams is sent once it has ended, the rest read and
 * dropped: libmicrohttpd 0.9.75 sends nothing for a response queued in the
 * middle of an upload.
 */
static enum MHD_Result stream_step(struct MHD_Connection *conn, upload *u, const char *data, size_t *size)
{
	api_req *r = u->sr;
	const api_stream *st = r->route->stream;
	if (*size) {
		u->got += *size;
		if (!r->status && u->got > u->limit)
			st->too_large(r);
		else if (!r->status)
			st->data(r, data, *size);
		*size = 0;
		return MHD_YES;
	}
	if (!r->status)
		st->finish(r);
	u->responded = true;
	return respond(conn, r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *data, size_t *size, void **con_cls)
{
	api_server *s = cls;
	upload *u = *con_cls;
	if (!u) {
		u = hr_calloc(1, sizeof *u);
		*con_cls = u;
		const api_route *sr = stream_route(method, url);
		if (sr) {
			api_req *r = u->sr = hr_calloc(1, sizeof *r);
			r->srv = s;
			r->conn = conn;
			r->method = method;
			r->path = url;
			u->limit = (size_t)hr_config_int(s->cfg, sr->stream->limit);
			stream_open(r, u->limit);
			if (!r->status)
				return MHD_YES;
			u->responded = true;
			return respond(conn, r);
		}
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > s->max_body) {
			/* Answer before reading: MHD then skips (or closes on) the body. */
			api_req r = {.srv = s, .conn = conn, .method = method, .path = url};
			u->too_large = true;
			api_problem(&r, 413, "too-large", "Request body too large",
				    "the body is larger than the server accepts", NULL);
			enum MHD_Result ret = respond(conn, &r);
			req_free(&r);
			return ret;
		}
		return MHD_YES;
	}
	if (u->sr) {
		if (!u->responded)
			return stream_step(conn, u, data, size);
		*size = 0; /* answered already: the rest is not read */
		return MHD_YES;
	}
	if (*size) {
		if (!u->too_large && u->len + *size > s->max_body) {
			u->too_large = true;
			hr_free(u->buf);
			u->buf = NULL;
			u->len = u->cap = 0;
		}
		if (!u->too_large) {
			if (u->len + *size + 1 > u->cap) {
				u->cap = (u->len + *size + 1) * 2;
				if (u->cap > s->max_body + 1)
					u->cap = s->max_body + 1;
				u->buf = hr_realloc(u->buf, u->cap);
			}
			memcpy(u->buf + u->len, data, *size);
			u->len += *size;
			u->buf[u->len] = '\0';
		}
		*size = 0;
		return MHD_YES;
	}
	api_req r = {.srv = s, .conn = conn, .method = method, .path = url};
	run(&r, u);
	enum MHD_Result ret = respond(conn, &r);
	req_free(&r);
	return ret;
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	upload *u = *con_cls;
	if (u) {
		if (u->sr) {
			if (!u->responded && u->sr->route && u->sr->state)
				u->sr->route->stream->abort(u->sr);
			req_free(u->sr);
			hr_free(u->sr);
		}
		hr_free(u->buf);
		hr_free(u);
		*con_cls = NULL;
	}
}

/* Keep URLs as sent (see the file comment). */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	vsnprintf(buf, sizeof buf, fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	hr_info("api: microhttpd: %s", buf);
}

/*
 * Each pooled connection runs the hot path once before the server listens
 * (see api_warm_prepared in api.h): the request's first round trip
 * (tenant_open) acting as the oldest active tenant, then the handlers'
 * statements, rolled back.  With no tenant yet only the control schema's
 * read is warmed.  A failure is a warning: the server works cold.
 */
static void pool_warm(api_server *s)
{
	hr_err err = {0};
	PGresult *t = NULL;
	if (!hr_db_query(s->conn[0], "SELECT id, schema_name, role_name FROM herald.tenants WHERE status = 'active' "
			 "ORDER BY id LIMIT 1", 0, NULL, &t, &err)) {
		hr_warn("api: pool warm-up: %s", err.msg);
		return;
	}
	bool tenant = PQntuples(t) == 1;
	api_req r = {.srv = s};
	if (tenant) {
		r.tenant.id = strtoll(PQgetvalue(t, 0, 0), NULL, 10);
		snprintf(r.tenant.schema, sizeof r.tenant.schema, "%s", PQgetvalue(t, 0, 1));
		snprintf(r.tenant.role, sizeof r.tenant.role, "%s", PQgetvalue(t, 0, 2));
	}
	PQclear(t);
	for (int i = 0; i < s->nconn; i++) {
		r.db = s->conn[i];
		bool ok = tenant_open(&r, true, tenant, &err) &&
			  (!tenant || api_messages_warm(r.db, &s->prepared[i], &err));
		json_decref(r.tenant_settings);
		r.tenant_settings = NULL;
		hr_db_rollback(r.db);
		if (!ok) {
			hr_warn("api: pool warm-up: connection %d: %s", i, err.msg);
			return;
		}
	}
}

/*
 * api_threads 0 (the default): 4 per CPU core, at least 4, at most 64.  Each
 * thread holds a PostgreSQL connection, and more of them than the cores can
 * run only queue in PostgreSQL: on the 2-core machine 16 threads gave a send
 * p99 of 12.7 ms at 1,000/s where 8 gave 4.9 ms (docs/benchmarks.md) -- 16
 * connections each planned a new tenant's send statement at once in the
 * first second, and waited on each other for the outbox's extension lock.
 */
static int api_threads(const hr_config *cfg)
{
	long n = hr_config_int(cfg, "api_threads");
	if (n > 0)
		return (int)n;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	n = cores > 0 ? cores * 4 : 8;
	return (int)(n < 4 ? 4 : n > 64 ? 64 : n);
}

int api_server_threads(const api_server *s)
{
	return s->nconn;
}

bool api_server_start(const hr_config *cfg, const char *dsn, const hr_migration_set *set, api_server **out,
		      hr_err *err)
{
	api_server *s = hr_calloc(1, sizeof *s);
	s->cfg = cfg;
	s->set = set;
	s->dsn = hr_strdup(dsn);
	s->max_body = (size_t)hr_config_int(cfg, "api_max_body");
	s->nconn = api_threads(cfg);
	s->conn = hr_calloc((size_t)s->nconn, sizeof *s->conn);
	s->busy = hr_calloc((size_t)s->nconn, sizeof *s->busy);
	s->prepared = hr_calloc((size_t)s->nconn, sizeof *s->prepared);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_mutex_init(&s->pmu, NULL);
	s->prov_ms = hr_config_int(cfg, "api_key_cache_ms");
	s->prov = hr_calloc(PROV_SLOTS, sizeof *s->prov);
	s->keys = api_keys_new(hr_config_int(cfg, "api_key_cache_ms"), hr_config_int(cfg, "api_key_rps"));
	hr_err kerr = {0};
	s->have_master = hr_master_key_load(cfg, s->master, &kerr);
	if (!s->have_master)
		hr_info("api: no master key (%s); provider endpoints answer 503", kerr.msg);
	if (!pool_open(s, err) || !api_notifier_start(s->dsn, &s->notifier, err))
		goto fail;
	pool_warm(s);
	if (s->have_master && !api_webhooks_start(cfg, s->dsn, s->master, &s->hooks, err))
		goto fail;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hr_config_int(cfg, "api_port"))};
	if (inet_pton(AF_INET, hr_config_str(cfg, "api_bind"), &sa.sin_addr) != 1) {
		hr_fail(err, HR_ERR_INVALID, "api_bind", "api_bind: '%s' is not an IPv4 address",
			hr_config_str(cfg, "api_bind"));
		goto fail;
	}
	unsigned timeout_s = (unsigned)((hr_config_int(cfg, "api_timeout_ms") + 999) / 1000);
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
				on_request, s, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->nconn,
				MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
				MHD_OPTION_NOTIFY_COMPLETED, on_done, s, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, s,
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
	if (!s->d) {
		hr_fail(err, HR_ERR_IO, "api_port", "cannot listen on %s:%ld", hr_config_str(cfg, "api_bind"),
			hr_config_int(cfg, "api_port"));
		goto fail;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : (int)hr_config_int(cfg, "api_port");
	*out = s;
	return true;
fail:
	api_server_stop(s);
	return false;
}

int api_server_port(const api_server *s)
{
	return s->port;
}

void api_server_stop(api_server *s)
{
	if (!s)
		return;
	if (s->d)
		MHD_stop_daemon(s->d);
	api_webhooks_stop(s->hooks);
	/* after the daemon: every request that committed has queued its wake-up */
	api_notifier_stop(s->notifier);
	for (int i = 0; i < s->nconn; i++)
		if (s->conn[i])
			PQfinish(s->conn[i]);
	hr_free(s->conn);
	hr_free(s->busy);
	hr_free(s->prepared);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->pmu);
	hr_free(s->prov);
	api_keys_free(s->keys);
	hr_free(s->dsn);
	hr_free(s);
}
