/*
 * api.h -- the parts of herald-api that its files share (internal to api/).
 *
 * A request goes through server.c: the body is collected (bounded by
 * api_max_body), the route is matched against the one table in routes.c
 * (404 / 405), the key is authenticated (auth.c: cache, rate limit, scopes),
 * the tenant is resolved and, for tenant routes, a transaction is opened on
 * the thread's PostgreSQL connection acting as the tenant (as
 * hr_db_tenant_begin() does; server.c does it in the round trip that reads
 * the tenant's settings).  The handler
 * then fills the response with api_json() or api_problem*(); the server
 * commits when the status is below 400 and rolls back otherwise, and a failed
 * COMMIT turns the answer into a 503 -- so a 2xx is only ever sent for
 * committed work and an error never leaves anything written; after a
 * successful COMMIT it sends the wake-ups the handler asked for (notify.h).  The one
 * exception is a handler that sets keep_writes: its error answers record
 * something on purpose (a wrong one-time code counts as an attempt).
 *
 * Ownership: an api_req lives for one HTTP request and owns its body, parsed
 * JSON and response text.  Handlers run on MHD's pool threads; everything
 * they touch through api_req is theirs alone.  Errors: RFC 9457 problem+json
 * (problem.c); a handler never writes to the socket itself.
 */
#ifndef HERALD_API_H
#define HERALD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "config.h"
#include "crypto.h"
#include "err.h"
#include "limits.h"
#include "migrate.h"
#include "tenancy.h"

typedef struct api_server api_server;
typedef struct api_req api_req;

/* Who may call a route. */
typedef enum api_auth {
	API_AUTH_NONE,   /* public (the OpenAPI document) */
	API_AUTH_AGENCY, /* agency keys only */
	API_AUTH_TENANT, /* tenant keys, or agency keys naming the tenant in Herald-Tenant */
	API_AUTH_SIGNED, /* no API key: the handler authenticates a signed token or a provider's
			  * signature itself; it gets a database connection, may open a tenant
			  * transaction (hr_db_tenant_begin), and the server commits it when the
			  * status is below 400 */
} api_auth;

typedef void (*api_handler)(api_req *r);

/*
 * A streamed route (contact imports): the body is handed to the handler in
 * pieces as it arrives instead of being collected, so its size is bounded by
 * the setting `limit` rather than api_max_body.  server.c matches the route,
 * refuses a Content-Length over the limit (413), authenticates the key and
 * resolves the tenant as soon as the headers are in -- without opening a
 * transaction or keeping a pooled connection: the handler brings its own --
 * then calls open, data for each piece, and finish when the body is
 * complete.  too_large runs when the body passes the limit (it must set the
 * response), abort when the client goes away before the end (no response).
 * Once one of them sets r->status, the rest of the body is read and dropped
 * and that answer is sent when the body has ended (at once when open sets
 * it).  r and r->state live until the connection's
 * request ends.
 */
typedef struct api_stream {
	const char *limit;               /* the integer setting bounding the body, in bytes */
	api_handler open, finish, too_large, abort;
	void (*data)(api_req *r, const char *buf, size_t n);
} api_stream;

typedef struct api_route {
	const char *method;
	const char *pattern;  /* "/v1/contacts/{id}": {name} matches one path segment */
	api_auth auth;
	bool send_ok;         /* a tenant `send` key may call it (messages and events) */
	bool body;            /* expects a JSON object body */
	api_handler fn;
	/* optional: runs after auth, in the tenant's transaction before it acts as
	 * the tenant, on the control schema (e.g. provider accounts, with
	 * api_provider_check); may set an error (then nothing is written) */
	api_handler pre;
	/* optional: the body is streamed to these instead (see api_stream) */
	const api_stream *stream;
	/* pre reads the control schema only through api_provider_channel (which
	 * steps out of the tenant's role for that read), so the transaction may act
	 * as the tenant from its first round trip: one round trip fewer */
	bool pre_acts;
	/* optional: reads the body before api_body_json does (the Content-Type
	 * checked); true when it took it (r->json then stays NULL, the handler
	 * finds what it read in r->state), false to leave it to api_body_json */
	bool (*scan)(api_req *r, const char *buf, size_t len);
} api_route;

/*
 * Count limits (quota.c), in the request's transaction as the tenant.  Each
 * returns true when the limit in effect allows it (or there is none); false
 * with the answer in r: 429 quota-exceeded with Retry-After (messages of a
 * UTC day), 409 quota-exceeded (contacts), or the database error.
 */
/* Count one message of `channel` against messages_per_day. */
bool api_quota_send(api_req *r, const char *channel);
/* After a contact was created: is the tenant still within its contacts limit? */
bool api_quota_contacts(api_req *r);

/* The route table (routes.c); the OpenAPI test compares it with docs/openapi.yaml. */
const api_route *api_routes(size_t *n);

/* The route for r->method and r->path, with r->param filled; or NULL with a 404/405 problem in r. */
const api_route *api_route_find(api_req *r);
/* Parse a JSON body into r->json; a 400 (malformed) or 422 (not an object) problem in r otherwise. */
void api_body_json(api_req *r, const char *buf, size_t len);

#define API_MAX_PARAMS 3

struct api_req {
	api_server *srv;
	const api_route *route;
	const char *method;
	const char *path;
	char *param[API_MAX_PARAMS]; /* path parameters, in pattern order (heap) */
	void *conn;                  /* struct MHD_Connection */
	json_t *json;                /* parsed body, when the route takes one */
	const char *raw;             /* the body as received (NUL-terminated), or NULL */
	size_t raw_len;
	PGconn *db;                  /* this thread's connection, for the request */
	hr_principal who;            /* the authenticated key */
	hr_tenant tenant;            /* tenant routes: the tenant acted on */
	json_t *tenant_settings;     /* tenant routes: herald.tenants.settings */
	hr_limits limits;            /* tenant routes: the limits in effect (tenant's and agency's) */
	hr_limits agency_limits;     /* tenant routes: the agency's own (its api_rps is shared by its tenants) */
	int64_t tenant_api_rps;      /* tenant routes: the tenant's own api_rps, -1 = none */
	void *state;                 /* a handler's parsed request, freed with state_free */
	void (*state_free)(void *);
	/* the response */
	int status;
	char *resp;
	const char *ctype;
	char allow[64];              /* 405: the Allow header */
	int retry_after;             /* 429: seconds, 0 = none */
	bool www_auth;               /* 401: send WWW-Authenticate */
	bool keep_writes;            /* commit even though the answer is an error (see above) */
	bool acting;                 /* r->db is in the tenant's transaction, acting as its role */
	char location[160];          /* 201: Location, "" = none */
	char *redirect;              /* 302: Location (heap), NULL = none */
	size_t resp_len;             /* binary responses: bytes of resp (0 = strlen) */
	bool no_store;               /* send Cache-Control: no-store */
	/* wake-ups the server sends after this request's COMMIT (notify.h) */
	bool notify_outbox;          /* it enqueued outbox batches (hr_outbox_batch.no_notify) */
	bool notify_events;          /* it inserted events */
	bool committed;              /* the handler committed already (api_commit_prepared) */
	uint32_t *db_prepared;       /* r->db's statements of api_commit_prepared (server.c) */
};

/* ---- server-wide things handlers may use ---- */
const hr_config *api_cfg(const api_req *r);
const hr_migration_set *api_migrations(const api_req *r);
/* The connection string herald-api uses (with its statement_timeout), for handlers with their own connections. */
const char *api_dsn(const api_req *r);
/* The master key, or NULL when none could be loaded (provider endpoints then answer 503). */
const uint8_t *api_master_key(const api_req *r);

/*
 * Provider accounts (herald.provider_accounts), for handlers that name one.
 * Cached per server for api_key_cache_ms: a send checks its account on every
 * request, and the control-schema round trip was one of the few it made.
 * Only found accounts are cached; PUT .../providers/{name} through this
 * server forgets the tenant's entries at once, a change made elsewhere
 * (heraldctl) is seen within api_key_cache_ms.  A route's pre hook and agency routes may call it: it reads the control
 * schema on r->db (in a tenant transaction, stepping out of the tenant's
 * role for that read).
 */
/* The channel of r's tenant's account `name` in channel[16], "" if there is none. */
bool api_provider_channel(api_req *r, const char *name, char channel[16], hr_err *err) HR_MUST_CHECK;
/* true if r's tenant has account `name` serving `channel`; else r holds the answer:
 * a 422 naming base + "/provider" ("no such provider account" or "this account
 * serves another channel"), or the database error. */
bool api_provider_check(api_req *r, const char *base, const char *name, const char *channel);
/* Forget the cached accounts of a tenant (its accounts changed). */
void api_provider_forget(api_req *r, int64_t tenant_id);

/*
 * The handler's last statement and the COMMIT in one round trip.  The
 * statement is prepared on each pooled connection the first time it runs
 * there (in the same round trip) and executed by name after that, so
 * PostgreSQL parses and plans it once per connection rather than per request
 * (a send's statement took ~0.2 ms to plan).  id (0..31) names the
 * statement; sql must always be the same text for an id.  A prepared
 * statement follows search_path: when the connection acts as another tenant,
 * PostgreSQL analyses it again.
 *
 * true: committed, *res holds the statement's rows (NULL when it returns
 * none), and the server sends no COMMIT of its own -- so a handler answers
 * 2xx only after this returned true (the durability contract), and may
 * answer an error after it when the statement wrote nothing (an INSERT ...
 * WHERE that decided against the write).  false: err says why, *res is NULL,
 * and nothing is committed (the server rolls the transaction back).
 */
enum {
	API_PREP_SEND = 0,   /* 0..2: messages.c's send_direct, by channel */
	API_PREP_EVENTS = 3, /* events.c: a batch's INSERT */
};
bool api_commit_prepared(api_req *r, unsigned id, const char *sql, int nparams, const char *const *params,
			 PGresult **res, hr_err *err) HR_MUST_CHECK;

/*
 * Start-up (api_server_start, before it listens): each pooled connection
 * runs the hot path's statements once, acting as an existing tenant, in a
 * transaction the server rolls back.  A new PostgreSQL backend reads every
 * catalog row a statement needs (types, operators, functions, indexes) on
 * first use; 16 cold backends doing so at once under traffic stalled the
 * first sends after a start for a few hundred ms (docs/benchmarks.md).
 * api_warm_prepared prepares statement id on c as api_commit_prepared would
 * (so the first real request skips the Parse) and runs it once, discarding
 * its rows; params must make it write nothing.  api_messages_warm does so
 * for an email send (messages.c).
 */
bool api_warm_prepared(PGconn *c, uint32_t *prepared, unsigned id, const char *sql, int nparams,
		       const char *const *params, hr_err *err) HR_MUST_CHECK;
bool api_messages_warm(PGconn *c, uint32_t *prepared, hr_err *err) HR_MUST_CHECK;

/* ---- responses (problem.c) ---- */
/* A JSON response; takes ownership of body. */
void api_json(api_req *r, int status, json_t *body);
/* problem+json.  errors (may be NULL) is stolen: an array of {pointer, detail}. */
void api_problem(api_req *r, int status, const char *type, const char *title, const char *detail,
		 json_t *errors);
/* A problem from an hr_err: kind -> status, field -> pointer. */
void api_problem_err(api_req *r, const hr_err *e);
/* 422 with the validator's errors. */
void api_problem_invalid(api_req *r, json_t *errors);

/* ---- JSON validation (json.c) ---- */
/*
 * A validator collects every problem of a body as {pointer, detail}, so one
 * 422 lists them all.  Getters return the value or NULL / false, adding an
 * error when the field is present with the wrong type or required and
 * missing.  `base` is the JSON pointer of the object ("" for the body root).
 */
typedef struct jv {
	json_t *errors; /* array */
} jv;

void jv_init(jv *v);
void jv_free(jv *v);
bool jv_ok(const jv *v);
void jv_add(jv *v, const char *base, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* base + "/" + name, with ~ and / escaped as RFC 6901 says (heap). */
char *jv_ptr(const char *base, const char *name);
/* Error for every member of obj not in allowed (NULL-terminated). */
void jv_only(jv *v, json_t *obj, const char *base, const char *const *allowed);
/* A string of 1..maxlen bytes without control characters. */
const char *jv_str(jv *v, json_t *obj, const char *base, const char *name, bool required, size_t maxlen);
json_t *jv_obj(jv *v, json_t *obj, const char *base, const char *name, bool required);
/* Presence in *present; value in *out. */
void jv_bool(jv *v, json_t *obj, const char *base, const char *name, bool required, bool *present, bool *out);
void jv_int(jv *v, json_t *obj, const char *base, const char *name, bool required, int64_t min,
	    int64_t max, bool *present, int64_t *out);
/* RFC 3339 date-time (e.g. 2026-01-02T03:04:05.678+02:00). */
bool jv_rfc3339(const char *s);

/* JSON text of a value (heap, hr_free). */
char *api_dump(const json_t *v);

/* ---- normalisation (normalize.c) ---- */
/* Email: trimmed, lower-cased, syntax checked.  out has room for 255 bytes. */
bool hr_email_normalize(const char *in, char out[256], hr_err *err) HR_MUST_CHECK;
/* Phone to E.164; cc = the tenant's default country code ("44", "+44") or NULL. */
bool hr_phone_normalize(const char *in, const char *cc, char out[20], hr_err *err) HR_MUST_CHECK;
/* An IANA zone name that exists under /usr/share/zoneinfo. */
bool hr_tz_valid(const char *tz);
/* A BCP 47-like locale tag: en, en-GB, pt_BR, zh-Hant-TW. */
bool hr_locale_valid(const char *s);

/* ---- contact references shared by events and messages (contacts.c) ---- */
/*
 * Validate a contact reference object {"id"|"external_id"|"email"|"phone": ...}
 * (exactly one member) into kind/value (normalised).  Errors go to v.
 */
bool contact_ref_parse(jv *v, json_t *ref, const char *base, const char *cc, const char **kind,
		       char value[256]);

/* ---- contacts shared by PUT /v1/contacts and imports (contacts.c) ---- */
typedef struct contact_in {
	const char *external_id;       /* borrowed from the parsed object */
	char email[256];               /* normalised, when has_email */
	char phone[20];                /* E.164, when has_phone */
	bool has_email, has_phone;
	char *attributes;              /* JSON object text or NULL (heap, the caller frees it) */
	const char *time_zone, *locale; /* borrowed */
} contact_in;

/*
 * Validate a contact object (the PUT body, or one imported row) into in:
 * members external_id, email, phone, attributes, time_zone, locale; every
 * problem goes to v with its pointer.  cc = the tenant's default country code.
 */
bool contact_parse(jv *v, json_t *obj, const char *cc, contact_in *in);
/*
 * Upsert by external_id/email/phone and merge the contacts they name (the
 * rules in contacts.c), in the caller's transaction.  *out: the contact as
 * JSON with "merged" (the absorbed ids); *created: a new contact.
 */
bool contact_upsert(PGconn *db, const contact_in *in, bool *created, json_t **out, hr_err *err) HR_MUST_CHECK;

/* Opaque list cursors (contacts.c): encode the last id of a page; read one back (false = not ours). */
void api_cursor_make(long long id, char out[64]);
bool api_cursor_read(const char *s, char id[24]);
/* ---- lists: opaque cursors (hex of prefix + last key) and limit (templates.c) ---- */
/* 400 bad-parameter naming a query parameter. */
void api_bad_param(api_req *r, const char *name, const char *detail);
/* Read ?cursor (into after: the key after prefix, "" = from the start) and
 * ?limit (1-500, default 50); false with a 400 made. */
bool api_list_args(api_req *r, const char *prefix, char *after, size_t after_size, char limit[16]);
/* Answer {data: [column 0 of up to want rows, as JSON], next_cursor} where
 * res holds want + 1 rows at most and column 1 is the key. */
void api_list_reply(api_req *r, PGresult *res, int want, const char *prefix);

/* ---- templates and snippets (templates.c, snippets.c) ---- */
/* Bytes of Liquid source per field or snippet: the workers' max_template_size. */
#define TPL_SRC_MAX (512 * 1024)
struct liquid_limits;
struct liquid_error;
/* The workers' render limits (workers/render.c), for saves and previews. */
void tpl_limits(struct liquid_limits *l);
/* An errors[] entry {pointer, detail, line, column} (line/column 0 = left out). */
void tpl_error(jv *v, const char *pointer, int line, int column, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void tpl_liquid_error(jv *v, const char *pointer, const struct liquid_error *le);
/* Does src compile as the workers compile it?  Errors to v at pointer;
 * strict-mode findings to warnings (may be NULL). */
bool tpl_check_source(jv *v, const char *pointer, const char *src, size_t len, json_t *warnings);
bool snippet_name_valid(const char *s);
/* Copy every snippet content's fields render (transitively) into
 * content.snippets; missing or computed names go to v.  False: database error. */
bool snippets_snapshot(PGconn *db, json_t *content, jv *v, hr_err *err) HR_MUST_CHECK;
/*
 * The surviving contact a parsed reference names (codes.c): its id, email and
 * phone ("" when none).  No such contact: false with a 422 naming `pointer`;
 * a database failure: false with a 503.
 */
bool api_contact_find(api_req *r, const char *pointer, const char *kind, const char *value, int64_t *id,
		      char email[256], char phone[32]);

/* ---- handlers ---- */
void openapi_get(api_req *r);
void tenants_create(api_req *r);
void tenants_list(api_req *r);
void tenants_suspend(api_req *r);
void tenants_resume(api_req *r);
void tenants_key_create(api_req *r);
void tenants_provider_put(api_req *r);
void tenants_limits_get(api_req *r);
void tenants_limits_put(api_req *r);
void contacts_put(api_req *r);
void contacts_list(api_req *r);
void contacts_get(api_req *r);
void consents_post(api_req *r);
void consents_list(api_req *r);
void events_post(api_req *r);
/* POST /v1/events' scan hook: the common batch without a JSON tree (eventscan.h). */
bool events_scan(api_req *r, const char *buf, size_t len);
void messages_pre(api_req *r);
void messages_post(api_req *r);
void messages_get(api_req *r);
extern const api_stream imports_stream; /* POST /v1/imports */
void imports_post(api_req *r);          /* never called: the route is streamed */
void imports_list(api_req *r);
void imports_get(api_req *r);
void templates_post(api_req *r);
void templates_list(api_req *r);
void templates_get(api_req *r);
void templates_put(api_req *r);
void templates_version_get(api_req *r);
void templates_preview(api_req *r);
void templates_test_pre(api_req *r);
void templates_test(api_req *r);
void snippets_list(api_req *r);
void snippets_put(api_req *r);
void snippets_get(api_req *r);
void snippets_delete(api_req *r);
void otp_pre(api_req *r);
void otp_post(api_req *r);
void otp_verify(api_req *r);
void code_pools_create(api_req *r);
void code_pools_list(api_req *r);
void code_pools_get(api_req *r);
void code_pools_upload(api_req *r);
void code_pools_generate(api_req *r);
void code_pools_issue(api_req *r);
void codes_get(api_req *r);
void codes_redeem(api_req *r);
void rules_pre(api_req *r);
void rules_create(api_req *r);
void rules_list(api_req *r);
void rules_get(api_req *r);
void rules_put(api_req *r);
void rules_delete(api_req *r);
void rules_enable(api_req *r);
void rules_disable(api_req *r);
void rules_instances(api_req *r);
/* tracking.c: open pixel, click redirect, one-click unsubscribe */
void track_open(api_req *r);
void track_click(api_req *r);
void track_unsubscribe_page(api_req *r);
void track_unsubscribe_post(api_req *r);
/* callbacks.c: provider delivery receipts */
void callbacks_post(api_req *r);
/* webhooks.c: subscriptions and their delivery log */
void webhooks_create(api_req *r);
void webhooks_list(api_req *r);
void webhooks_get(api_req *r);
void webhooks_update(api_req *r);
void webhooks_delete(api_req *r);
void webhooks_deliveries(api_req *r);

/*
 * Record an event of a message (delivery receipt or engagement) in the
 * tenant's events, inside the request's tenant transaction, and queue a
 * delivery for every webhook subscribed to its name (NOTIFY herald_webhooks
 * on commit).  props: a JSON object (borrowed); contact_id 0 = none;
 * occurred_at NULL = now.
 */
bool webhooks_record(PGconn *c, int64_t tenant_id, const char *name, int64_t contact_id, int64_t message_id,
		     json_t *props, const char *occurred_at, hr_err *err) HR_MUST_CHECK;

/*
 * The webhook delivery thread (webhook_deliver.c): started by the server when
 * it has a master key, stopped (joined) before the server frees its state.
 */
typedef struct api_webhooks api_webhooks;
bool api_webhooks_start(const hr_config *cfg, const char *dsn, const uint8_t master[HR_KEY_LEN], api_webhooks **out,
			hr_err *err) HR_MUST_CHECK;
void api_webhooks_stop(api_webhooks *w);

/*
 * Where a tenant's webhook may not go unless webhook_allow_private is on
 * (webhook_deliver.c): an address that is not public -- loopback, private
 * (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10), link-local
 * (169.254/16 with the clouds' metadata service, fe80::/10), unspecified,
 * multicast, reserved, and IPv4-mapped IPv6 forms of those.  addr: a
 * struct in_addr (AF_INET) or struct in6_addr (AF_INET6).  Returns NULL for
 * a public address, else what kind it is ("loopback", "private", ...).
 */
const char *api_addr_not_public(int family, const void *addr);
/* The same for a URL's host when it is an IP literal or localhost (a name
 * is checked when delivering, at each connection: what it resolves to). */
const char *api_url_host_not_public(const char *url);

/* The tenant with this id, active (control schema; outside any tenant transaction). */
bool api_tenant_by_id(PGconn *c, int64_t id, hr_tenant *out, hr_err *err) HR_MUST_CHECK;
void segments_create(api_req *r);
void segments_list(api_req *r);
void segments_get(api_req *r);
void segments_put(api_req *r);
void segments_delete(api_req *r);
void segments_preview(api_req *r);
void campaigns_pre(api_req *r);
void campaigns_create(api_req *r);
void campaigns_list(api_req *r);
void campaigns_get(api_req *r);
void campaigns_put(api_req *r);
void campaigns_delete(api_req *r);
void campaigns_pause(api_req *r);
void campaigns_resume(api_req *r);
void campaigns_cancel(api_req *r);
void campaigns_runs(api_req *r);
void calendar_get(api_req *r);
/* A numeric path id (segments.c): false and a 404 naming `what` when it is not one. */
bool api_path_id(api_req *r, int i, char out[24], const char *what);
/* Parse JSON text from Postgres; numbers beyond int64 become doubles (segments.c). */
json_t *db_json(const char *text);
void reports_messages(api_req *r);
void reports_template(api_req *r);
void reports_campaign(api_req *r);
void reports_rule(api_req *r);
void reports_dimensions(api_req *r);
void reports_repeat(api_req *r);

/* ---- the channel cascade (cascade.c, docs/cascade.md) ---- */
typedef struct cascade_in cascade_in;
/* The body's "fallback" list (NULL when absent or invalid; errors go to v).  by_contact: the message names a contact. */
cascade_in *cascade_parse(jv *v, json_t *body, const char *channel, bool by_contact, const char *purpose,
			  const char *cc);
void cascade_free(cascade_in *c);
/* Before the tenant transaction: the steps' provider accounts (false: a problem is set). */
bool cascade_pre_accounts(api_req *r, const cascade_in *c);
/* In the tenant transaction, before writing: templates and the contact's addresses (false: a problem is set). */
bool cascade_prepare(api_req *r, const cascade_in *c, const char *contact_id);
/* After enqueueing the message: store the steps on its batch and wake the scheduler. */
bool cascade_attach(api_req *r, const cascade_in *c, int64_t first_message_id);
/* pre handler: the tenant's price list into r->state (GET /v1/messages/{id}, reports). */
void cascade_prices_pre(api_req *r);
/* Add cost, currency and (if any) the cascade's steps to a message's JSON (false: a problem is set). */
bool cascade_describe(api_req *r, long long message_id, json_t *out);
/* Messages, sent, delivered and cost per channel of the batches `FROM outbox o ...` selects; NULL: a problem is set. */
json_t *cascade_channel_costs(api_req *r, const char *batches_sql, int nparams, const char *const *params);

/* A request header (NULL when absent). */
const char *api_header(api_req *r, const char *name);
/* A query-string argument (NULL when absent). */
const char *api_query(api_req *r, const char *name);

#endif
