/*
 * test_inject.c -- hostile input in every field of every route.
 *
 * Each route that takes a body or path parameters has one valid sample
 * request below (a route without one fails `every_route_has_a_sample`, so a
 * new route cannot skip this test).  From each sample the test derives
 * hundreds of requests: every leaf of the JSON body replaced by SQL
 * metacharacters, path tricks, template syntax, header injection, control and
 * direction characters, a 70 KB string, wrong types and out-of-range numbers;
 * invalid UTF-8 and bad escapes spliced in raw; and every path parameter
 * replaced by the same strings.  For every answer:
 *   - never a 5xx, never a dropped connection;
 *   - an error is application/problem+json with its status;
 *   - an error wrote nothing: the row count and newest xmin of every table of
 *     the tenant's schema, of the other tenant's schema and the counts of the
 *     control tables are unchanged (samples whose failures legitimately write,
 *     such as a wrong one-time code counting an attempt, say so).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "api.h"
#include "apitest.h"
#include "codes.h"
#include "db.h"
#include "harness.h"
#include "track.h"

enum { K_AGENCY, K_TENANT };

typedef struct sample {
	const char *method, *pattern; /* as in api/routes.c */
	const char *path;             /* pattern with {placeholders} from `vars` */
	const char *body;             /* a valid request body, or NULL */
	int key;
	bool error_may_write;         /* a refused request may still record something */
} sample;

/*
 * One valid request per route with a body or path parameters.  Placeholders:
 * {tenant} the tenant's slug, {contact} a contact id, {message} a message id,
 * {import} an import job's id, {template} an email template id (version 1 renders
 * snippet `footer`), {pool} a referral code pool id (holding the code INJCODE1 issued to inj-1),
 * {rule} a trigger rule's id, {webhook} a webhook id, {open} {click} {unsub} tracking tokens of the message.
 */
#define RULE_BODY "{\"name\": \"cart\", \"trigger\": {\"event\": \"cart\", \"where\": {\"property\": \"total\", \"op\": \"gt\", \"value\": 0}}, \"reentry\": \"always\", \"exit\": [{\"event\": \"order\"}], \"steps\": [{\"wait\": {\"delay\": \"1h\"}, \"actions\": [{\"send\": {\"channel\": \"email\", \"provider\": \"mail\", \"content\": {\"from\": \"a@example.com\", \"subject\": \"s\", \"text\": \"t\"}}}, {\"increment\": {\"attribute\": \"carts\"}}]}]}"
/* The segment is the fixture's first (id 1): segment ids are per tenant schema. */
#define CAMPAIGN_SAMPLE                                                                                     \
	"{\"name\": \"Spring\", \"segment_id\": 1, \"channel\": \"email\", \"messages\": {\"email\": "          \
	"{\"template\": 1, \"provider\": \"mail\"}}, \"calendar\": {\"kind\": \"at\", \"at\": "                \
	"\"2030-01-01T10:00:00\", \"time_zone\": \"Europe/Kyiv\", \"quiet_hours\": {\"from\": \"22:00\", "          \
	"\"to\": \"08:00\"}}, \"fallback_after\": \"15m\"}"

static const sample samples[] = {
	{"POST", "/v1/tenants", "/v1/tenants", "{\"slug\": \"inj-new\", \"name\": \"New brand\"}", K_AGENCY, false},
	{"POST", "/v1/tenants/{slug}/suspend", "/v1/tenants/{tenant}/suspend", NULL, K_AGENCY, false},
	{"POST", "/v1/tenants/{slug}/resume", "/v1/tenants/{tenant}/resume", NULL, K_AGENCY, false},
	{"POST", "/v1/tenants/{slug}/keys", "/v1/tenants/{tenant}/keys", "{\"scope\": \"read\", \"name\": \"dash\"}",
	 K_AGENCY, false},
	{"PUT", "/v1/tenants/{slug}/providers/{name}", "/v1/tenants/{tenant}/providers/sms-two",
	 "{\"channel\": \"sms\", \"transport\": \"sink\", \"config\": {\"url\": \"http://127.0.0.1:1/\"}, "
	 "\"secret\": {\"token\": \"t\"}, \"rate_per_s\": 10}",
	 K_AGENCY, false},
	{"GET", "/v1/tenants/{slug}/limits", "/v1/tenants/{tenant}/limits", NULL, K_AGENCY, false},
	{"PUT", "/v1/tenants/{slug}/limits", "/v1/tenants/{tenant}/limits",
	 "{\"api_rps\": 500, \"contacts\": 100000, \"messages_per_day\": {\"email\": 100000, \"sms\": 1000}}",
	 K_AGENCY, false},
	{"PUT", "/v1/contacts", "/v1/contacts",
	 "{\"external_id\": \"inj-1\", \"email\": \"inj@example.com\", \"phone\": \"+447700900123\", "
	 "\"attributes\": {\"city\": \"Leeds\", \"score\": 3}, \"time_zone\": \"Europe/London\", \"locale\": \"en-GB\"}",
	 K_TENANT, false},
	{"GET", "/v1/contacts/{id}", "/v1/contacts/{contact}", NULL, K_TENANT, false},
	{"GET", "/v1/contacts/{id}/consents", "/v1/contacts/{contact}/consents", NULL, K_TENANT, false},
	{"POST", "/v1/contacts/{id}/consents", "/v1/contacts/{contact}/consents",
	 "{\"channel\": \"sms\", \"purpose\": \"marketing\", \"granted\": true, \"source\": \"pos\", "
	 "\"actor\": \"advisor-7\", \"detail\": {\"store\": \"Leeds 2\"}}",
	 K_TENANT, false},
	{"POST", "/v1/events", "/v1/events",
	 "{\"name\": \"order\", \"contact\": {\"external_id\": \"inj-1\"}, \"properties\": {\"revenue\": 12.5, "
	 "\"sku\": \"A-1\"}, \"occurred_at\": \"2026-11-01T10:00:00Z\"}",
	 K_TENANT, false},
	{"POST", "/v1/messages", "/v1/messages",
	 "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"dev@example.com\", \"lane\": \"transactional\", "
	 "\"content\": {\"from\": \"shop@example.com\", \"subject\": \"Hi {{ name }}\", \"text\": \"Code {{ code }}\"}, "
	 "\"data\": {\"name\": \"Ann\", \"code\": \"1234\"}, \"fallback\": [{\"channel\": \"sms\", \"provider\": \"sms\", "
	 "\"to\": \"+447700900124\", \"content\": {\"text\": \"x\"}, \"after\": \"10m\"}]}",
	 K_TENANT, false},
	{"GET", "/v1/messages/{id}", "/v1/messages/{message}", NULL, K_TENANT, false},
	{"GET", "/v1/imports/{id}", "/v1/imports/{import}", NULL, K_TENANT, false},
	{"POST", "/v1/templates", "/v1/templates",
	 "{\"name\": \"inj-welcome\", \"channel\": \"email\", \"content\": {\"from\": \"shop@example.com\", "
	 "\"subject\": \"Hi {{ name }}\", \"html\": \"<p>{{ name }}</p>{% render 'footer' %}\", \"text\": \"Hi\", "
	 "\"reply_to\": \"help@example.com\"}}",
	 K_TENANT, false},
	{"GET", "/v1/templates/{id}", "/v1/templates/{template}", NULL, K_TENANT, false},
	{"PUT", "/v1/templates/{id}", "/v1/templates/{template}",
	 "{\"name\": \"inj-renamed\", \"content\": {\"from\": \"shop@example.com\", \"subject\": \"v2\", "
	 "\"text\": \"{% include 'footer' %}\"}}",
	 K_TENANT, false},
	{"GET", "/v1/templates/{id}/versions/{version}", "/v1/templates/{template}/versions/1", NULL, K_TENANT, false},
	{"POST", "/v1/templates/{id}/preview", "/v1/templates/{template}/preview",
	 "{\"version\": 1, \"contact\": {\"external_id\": \"inj-1\"}, \"data\": {\"name\": \"Ann\"}, "
	 "\"inline_errors\": false}",
	 K_TENANT, false},
	{"POST", "/v1/templates/{id}/test", "/v1/templates/{template}/test",
	 "{\"to\": \"dev@example.com\", \"provider\": \"mail\", \"version\": 1, \"contact\": {\"external_id\": "
	 "\"inj-1\"}, \"data\": {\"name\": \"Ann\"}}",
	 K_TENANT, false},
	{"PUT", "/v1/snippets/{name}", "/v1/snippets/footer", "{\"body\": \"-- {{ brand | default: 'Shop' }}\"}",
	 K_TENANT, false},
	{"GET", "/v1/snippets/{name}", "/v1/snippets/footer", NULL, K_TENANT, false},
	{"DELETE", "/v1/snippets/{name}", "/v1/snippets/footer", NULL, K_TENANT, false},
	{"POST", "/v1/otp", "/v1/otp",
	 "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"otp@example.com\", \"purpose\": \"login\", "
	 "\"length\": 6, \"ttl_s\": 300, \"max_attempts\": 3, \"content\": {\"subject\": \"Code\", "
	 "\"text\": \"{{ code }}\"}, \"data\": {\"name\": \"Ann\"}}",
	 K_TENANT, false},
	/* a wrong code counts as an attempt even though the answer is an error */
	{"POST", "/v1/otp/verify", "/v1/otp/verify",
	 "{\"to\": \"verify@example.com\", \"purpose\": \"login\", \"code\": \"123456\"}", K_TENANT, true},
	{"POST", "/v1/code-pools", "/v1/code-pools",
	 "{\"name\": \"spring-2026\", \"kind\": \"referral\", \"settings\": {\"redemption_limit\": 3, "
	 "\"credit_attribute\": \"referral_credits\", \"credit_amount\": 2, \"code_length\": 8, \"prefix\": \"SP-\"}}",
	 K_TENANT, false},
	{"GET", "/v1/code-pools/{id}", "/v1/code-pools/{pool}", NULL, K_TENANT, false},
	{"POST", "/v1/code-pools/{id}/codes", "/v1/code-pools/{pool}/codes", "{\"codes\": [\"INJ-1\", \"inj_2\"]}",
	 K_TENANT, false},
	{"POST", "/v1/code-pools/{id}/generate", "/v1/code-pools/{pool}/generate", "{\"count\": 5}", K_TENANT, false},
	{"POST", "/v1/code-pools/{id}/issue", "/v1/code-pools/{pool}/issue", "{\"contact\": {\"external_id\": \"inj-2\"}}",
	 K_TENANT, false},
	{"GET", "/v1/codes/{code}", "/v1/codes/INJCODE1", NULL, K_TENANT, false},
	{"POST", "/v1/codes/redeem", "/v1/codes/redeem",
	 "{\"code\": \"injcode1\", \"contact\": {\"external_id\": \"inj-2\"}}", K_TENANT, false},
	{"POST", "/v1/rules", "/v1/rules", RULE_BODY, K_TENANT, false},
	{"GET", "/v1/rules/{id}", "/v1/rules/{rule}", NULL, K_TENANT, false},
	{"PUT", "/v1/rules/{id}", "/v1/rules/{rule}", RULE_BODY, K_TENANT, false},
	{"POST", "/v1/rules/{id}/enable", "/v1/rules/{rule}/enable", NULL, K_TENANT, false},
	{"POST", "/v1/rules/{id}/disable", "/v1/rules/{rule}/disable", NULL, K_TENANT, false},
	{"GET", "/v1/rules/{id}/instances", "/v1/rules/{rule}/instances", NULL, K_TENANT, false},
	{"DELETE", "/v1/rules/{id}", "/v1/rules/{rule}", NULL, K_TENANT, false},
	{"POST", "/v1/webhooks", "/v1/webhooks",
	 "{\"url\": \"http://hooks.example.com:1/hook\", \"event_types\": [\"message_complained\"], \"description\": \"crm\"}",
	 K_TENANT, false},
	{"GET", "/v1/webhooks/{id}", "/v1/webhooks/{webhook}", NULL, K_TENANT, false},
	{"PATCH", "/v1/webhooks/{id}", "/v1/webhooks/{webhook}",
	 "{\"url\": \"https://hooks.example.com:1/h2\", \"event_types\": [\"message_complained\"], \"description\": \"x\"}",
	 K_TENANT, false},
	{"DELETE", "/v1/webhooks/{id}", "/v1/webhooks/{webhook}", NULL, K_TENANT, false},
	{"GET", "/v1/webhooks/{id}/deliveries", "/v1/webhooks/{webhook}/deliveries", NULL, K_TENANT, false},
	{"GET", "/v1/t/open/{token}", "/v1/t/open/{open}", NULL, K_TENANT, false},
	{"GET", "/v1/t/click/{token}", "/v1/t/click/{click}", NULL, K_TENANT, false},
	{"GET", "/v1/unsubscribe/{token}", "/v1/unsubscribe/{unsub}", NULL, K_TENANT, false},
	/* a form body (RFC 8058), not JSON: only its path is made hostile */
	{"POST", "/v1/unsubscribe/{token}", "/v1/unsubscribe/{unsub}", "List-Unsubscribe=One-Click", K_TENANT, false},
	/* the setup's message is the tenant's first (4096); the key in the URL authenticates */
	{"POST", "/v1/callbacks/{tenant}/{provider}", "/v1/callbacks/{tenant}/mail?key=cb-secret",
	 "{\"message_id\": 4096, \"status\": \"delivered\", \"provider_id\": \"p-1\"}", K_TENANT, false},
	{"POST", "/v1/segments", "/v1/segments",
	 "{\"name\": \"leeds\", \"rule\": {\"and\": [{\"attribute\": \"city\", \"op\": \"eq\", \"value\": \"Leeds\"}, "
	 "{\"event\": \"order\", \"count\": {\"op\": \"gte\", \"value\": 2}, \"when\": {\"op\": \"within_last\", "
	 "\"days\": 30}}]}}",
	 K_TENANT, false},
	{"GET", "/v1/segments/{id}", "/v1/segments/{segment}", NULL, K_TENANT, false},
	{"PUT", "/v1/segments/{id}", "/v1/segments/{segment}",
	 "{\"name\": \"leeds-2\", \"rule\": {\"attribute\": \"score\", \"op\": \"gt\", \"value\": 2}}", K_TENANT, false},
	{"DELETE", "/v1/segments/{id}", "/v1/segments/{free_segment}", NULL, K_TENANT, false},
	{"POST", "/v1/segments/{id}/preview", "/v1/segments/{segment}/preview", NULL, K_TENANT, false},
	{"POST", "/v1/campaigns", "/v1/campaigns", CAMPAIGN_SAMPLE, K_TENANT, false},
	{"GET", "/v1/campaigns/{id}", "/v1/campaigns/{campaign}", NULL, K_TENANT, false},
	{"PUT", "/v1/campaigns/{id}", "/v1/campaigns/{campaign}", CAMPAIGN_SAMPLE, K_TENANT, false},
	{"DELETE", "/v1/campaigns/{id}", "/v1/campaigns/{cancelled}", NULL, K_TENANT, false},
	{"POST", "/v1/campaigns/{id}/pause", "/v1/campaigns/{campaign}/pause", NULL, K_TENANT, false},
	{"POST", "/v1/campaigns/{id}/resume", "/v1/campaigns/{paused}/resume", NULL, K_TENANT, false},
	{"POST", "/v1/campaigns/{id}/cancel", "/v1/campaigns/{campaign}/cancel", NULL, K_TENANT, false},
	{"GET", "/v1/campaigns/{id}/runs", "/v1/campaigns/{campaign}/runs", NULL, K_TENANT, false},
	/* reports: an id that is not there answers 404, hostile ids must too */
	{"GET", "/v1/reports/templates/{id}", "/v1/reports/templates/1", NULL, K_TENANT, false},
	{"GET", "/v1/reports/campaigns/{id}", "/v1/reports/campaigns/1", NULL, K_TENANT, false},
	{"GET", "/v1/reports/rules/{id}", "/v1/reports/rules/1", NULL, K_TENANT, false},
};
#define NSAMPLES (sizeof samples / sizeof samples[0])

/* Hostile strings for every string leaf and path parameter. */
static const char *const strings[] = {
	"'; DROP TABLE contacts; --",
	"\" OR \"1\"=\"1",
	"1 OR 1=1",
	"$1",
	"%s%s%n%x",
	"../../../../etc/passwd",
	"..%2f..%2f..%2fetc%2fpasswd",
	"\\",
	"{{ 'x' | append: 1 }}{% raw %}{% for %}",
	"\r\nX-Injected: 1",
	"<script>alert(1)</script>",
	"",
	"   ",
	"\xe2\x80\xae" "gnp.exe", /* RIGHT-TO-LEFT OVERRIDE */
	"Ünïcödé ☃ 🙂",
	"null",
	NULL, /* the long string, built at run time */
};
#define NSTRINGS (sizeof strings / sizeof strings[0])

/* Wrong types and out-of-range values for every leaf. */
static const char *const others[] = {
	"12345678901234567890123", "-1", "0", "1.5e308", "true", "null", "[]", "{}", "[\"a\", 1]", "{\"$ne\": 1}",
};
#define NOTHERS (sizeof others / sizeof others[0])

/* Raw bytes spliced in place of a string leaf: the body is then not valid JSON text. */
static const char *const raw[] = {
	"\"\xc3\x28\"",            /* invalid UTF-8 */
	"\"\xc0\xaf\"",            /* overlong encoding */
	"\"\\ud800\"",             /* lone surrogate escape */
	"\"a\\u0000b\"",           /* NUL */
	"\"\x01\x02\"",            /* raw control characters */
};
#define NRAW (sizeof raw / sizeof raw[0])

static fx f, other;
static srv s;
static char contact_id[32], message_id[32], import_id[32], template_id[32], pool_id[32], rule_id[32], webhook_id[32];
static char *tok_open, *tok_click, *tok_unsub;
/* campaigns fixtures: segment 1 (used), segment 2 (free), campaigns 1 active, 2 paused, 3 cancelled */
static long requests;

static const char *var(const char *name, size_t n)
{
	if (n == 6 && !strncmp(name, "tenant", 6))
		return f.t.slug;
	if (n == 7 && !strncmp(name, "contact", 7))
		return contact_id;
	if (n == 7 && !strncmp(name, "message", 7))
		return message_id;
	if (n == 6 && !strncmp(name, "import", 6))
		return import_id;
	if (n == 8 && !strncmp(name, "template", 8))
		return template_id;
	if (n == 4 && !strncmp(name, "pool", 4))
		return pool_id;
	if (n == 4 && !strncmp(name, "rule", 4))
		return rule_id;
	if (n == 7 && !strncmp(name, "webhook", 7))
		return webhook_id;
	if (n == 4 && !strncmp(name, "open", 4))
		return tok_open;
	if (n == 5 && !strncmp(name, "click", 5))
		return tok_click;
	if (n == 5 && !strncmp(name, "unsub", 5))
		return tok_unsub;
	if (n == 7 && !strncmp(name, "segment", 7))
		return "1";
	if (n == 12 && !strncmp(name, "free_segment", 12))
		return "2";
	if (n == 8 && !strncmp(name, "campaign", 8))
		return "1";
	if (n == 6 && !strncmp(name, "paused", 6))
		return "2";
	if (n == 9 && !strncmp(name, "cancelled", 9))
		return "3";
	ck_abort_msg("sample path uses unknown placeholder {%.*s}", (int)n, name);
	return NULL;
}

/* The sample's path with placeholders filled; segment `hostile` (0-based, -1 none) replaced by `with`. */
static char *make_path(const sample *sm, int hostile, const char *with)
{
	char *out = hr_strdup("");
	int seg = -1;
	for (const char *p = sm->path; *p;) {
		if (*p == '/') {
			seg++;
			char *t = hr_sprintf("%s/", out);
			hr_free(out);
			out = t;
			p++;
			continue;
		}
		size_t n = strcspn(p, "/");
		char *piece;
		if (seg == hostile) {
			piece = hr_strdup(with);
		} else if (*p == '{') {
			piece = hr_strdup(var(p + 1, n - 2));
		} else {
			piece = hr_sprintf("%.*s", (int)n, p);
		}
		char *t = hr_sprintf("%s%s", out, piece);
		hr_free(out);
		hr_free(piece);
		out = t;
		p += n;
	}
	return out;
}

/* Percent-encode everything but unreserved characters (so the string reaches the router as is). */
static char *pct(const char *in)
{
	size_t n = strlen(in);
	char *o = hr_malloc(n * 3 + 1), *w = o;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		    *p == '_' || *p == '.' || *p == '~')
			*w++ = (char)*p;
		else
			w += sprintf(w, "%%%02X", *p);
	}
	*w = '\0';
	return o;
}

/* Rows and newest row version of every table that a request could touch. */
static char *fingerprint(void)
{
	const char *p[] = {f.t.schema, other.t.schema};
	PGresult *r;
	hr_err e = {0};
	ck_assert_msg(hr_db_query(f.c,
				  "SELECT string_agg(table_schema || '.' || table_name || '=' || (xpath('/row/c/text()', "
				  "query_to_xml(format(CASE WHEN table_schema = 'herald' THEN 'SELECT count(*) AS c FROM %I.%I' "
				  "ELSE 'SELECT count(*) || '':'' || coalesce(max(xmin::text::bigint), 0) AS c FROM %I.%I' END, "
				  "table_schema, table_name), false, true, '')))[1]::text, ',' ORDER BY table_schema, table_name) "
				  "FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND (table_schema IN ($1, $2) "
				  "OR (table_schema = 'herald' AND table_name IN ('agencies', 'tenants', 'api_keys', "
				  "'provider_accounts', 'db_servers')))",
				  2, p, &r, &e),
		      "%s", e.msg);
	char *fp = hr_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return fp;
}

static char *last_fp;

/* Send one request; check the contract; keep the fingerprint for the next one. */
static long send_checked(const sample *sm, const char *path, const char *body, size_t body_len, const char *what)
{
	const char *key = sm->key == K_AGENCY ? f.agency_key : f.full;
	if (getenv("INJECT_TRACE"))
		fprintf(stderr, "inject: %s %s (%s)\n", sm->method, path, what);
	resp *r = call_at(s.port, sm->method, path, key, NULL, body, body ? (long)body_len : -1);
	requests++;
	long st = r->status;
	ck_assert_msg(st >= 200 && st < 500, "%s %s (%s): status %ld, body %s", sm->method, sm->pattern, what, st,
		      r->body);
	if (st >= 400) {
		ck_assert_msg(strcmp(r->ctype, "application/problem+json") == 0 && r->json &&
				      json_integer_value(json_object_get(r->json, "status")) == st &&
				      json_is_string(json_object_get(r->json, "detail")),
			      "%s %s (%s): %ld is not a problem document: %s %s", sm->method, sm->pattern, what, st,
			      r->ctype, r->body);
	}
	char *fp = fingerprint();
	if (st >= 400 && !sm->error_may_write)
		ck_assert_msg(strcmp(fp, last_fp) == 0, "%s %s (%s): refused with %ld but wrote:\nbefore %s\nafter  %s",
			      sm->method, sm->pattern, what, st, last_fp, fp);
	hr_free(last_fp);
	last_fp = fp;
	resp_free(r);
	return st;
}

/* Depth-first leaves of a JSON value: the k-th leaf's parent and key/index. */
typedef struct leaf {
	json_t *parent;
	const char *key; /* object member, or NULL for an array element */
	size_t index;
	char where[256];
} leaf;

static size_t json_size(json_t *v)
{
	return json_is_object(v) ? json_object_size(v) : json_array_size(v);
}

static int leaves(json_t *v, const char *where, leaf *out, int n, int max)
{
	const char *k;
	json_t *c;
	size_t i;
	if (json_is_object(v)) {
		json_object_foreach(v, k, c) {
			char w[256];
			snprintf(w, sizeof w, "%s/%s", where, k);
			if (json_is_object(c) || json_is_array(c)) {
				if (json_size(c) == 0 && n < max) { /* an empty container is a leaf too */
					out[n] = (leaf){v, k, 0, ""};
					snprintf(out[n++].where, 256, "%s", w);
				}
				n = leaves(c, w, out, n, max);
			} else if (n < max) {
				out[n] = (leaf){v, k, 0, ""};
				snprintf(out[n++].where, 256, "%s", w);
			}
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, c) {
			char w[256];
			snprintf(w, sizeof w, "%s/%zu", where, i);
			if (json_is_object(c) || json_is_array(c)) {
				n = leaves(c, w, out, n, max);
			} else if (n < max) {
				out[n] = (leaf){v, NULL, i, ""};
				snprintf(out[n++].where, 256, "%s", w);
			}
		}
	}
	return n;
}

static void set_leaf(leaf *l, json_t *val)
{
	if (l->key)
		json_object_set_new(l->parent, l->key, val);
	else
		json_array_set_new(l->parent, l->index, val);
}

/* The sample body with leaf k replaced by val (stolen); heap text. */
static char *mutated(const char *body, int k, json_t *val, const char **where)
{
	json_t *root = json_loads(body, 0, NULL);
	ck_assert(root);
	leaf ls[64];
	int n = leaves(root, "", ls, 0, 64);
	ck_assert(k < n);
	static char w[256];
	snprintf(w, sizeof w, "%s", ls[k].where);
	*where = w;
	set_leaf(&ls[k], val);
	char *t = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	char *o = hr_strdup(t);
	free(t);
	return o;
}

static void setup(void)
{
	hr_err e = {0};
	fx_open(&f);
	fx_open(&other);
	srv_start(&s, the_dsn, "HERALD_API_KEY_RPS=0");
	/* fixtures the samples name: providers, a contact, a message, a snippet and a template */
	char path[160];
	snprintf(path, sizeof path, "/v1/tenants/%s/providers/mail", f.t.slug);
	resp *r = call_at(s.port, "PUT", path, f.agency_key, NULL,
			  "{\"channel\": \"email\", \"transport\": \"sink\", \"secret\": {\"callback_secret\": \"cb-secret\"}}",
			  -1);
	ck_assert_msg(r->status == 200 || r->status == 201, "%s", r->body);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/tenants/%s/providers/sms", f.t.slug);
	r = call_at(s.port, "PUT", path, f.agency_key, NULL,
		    "{\"channel\": \"sms\", \"transport\": \"sink\", \"config\": {\"price\": 0.05, \"currency\": \"EUR\"}}", -1);
	ck_assert_msg(r->status == 200 || r->status == 201, "%s", r->body);
	resp_free(r);
	r = call_at(s.port, "PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"inj-1\", \"email\": \"c@example.com\"}",
		    -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	snprintf(contact_id, sizeof contact_id, "%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	resp_free(r);
	r = call_at(s.port, "POST", "/v1/messages", f.full, NULL,
		    "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"m@example.com\", "
		    "\"content\": {\"from\": \"a@example.com\", \"subject\": \"s\", \"text\": \"t\"}}",
		    -1);
	ck_assert_msg(r->status == 202, "%s", r->body);
	snprintf(message_id, sizeof message_id, "%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	resp_free(r);
	r = call_at(s.port, "POST", "/v1/rules", f.full, NULL, RULE_BODY, -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	snprintf(rule_id, sizeof rule_id, "%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	resp_free(r);
	/* an import job (POST /v1/imports streams CSV/NDJSON, not JSON: its row is made directly) */
	char sql[160];
	snprintf(sql, sizeof sql, "INSERT INTO %s.imports (format) VALUES ('csv') RETURNING id", f.t.schema);
	PGresult *ir = PQexec(f.c, sql);
	ck_assert_msg(PQresultStatus(ir) == PGRES_TUPLES_OK, "%s", PQerrorMessage(f.c));
	snprintf(import_id, sizeof import_id, "%s", PQgetvalue(ir, 0, 0));
	PQclear(ir);
	r = call_at(s.port, "PUT", "/v1/snippets/footer", f.full, NULL, "{\"body\": \"-- Shop\"}", -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	r = call_at(s.port, "POST", "/v1/templates", f.full, NULL,
		    "{\"name\": \"inj-fixture\", \"channel\": \"email\", \"content\": {\"from\": \"a@example.com\", "
		    "\"subject\": \"s\", \"text\": \"t {% render 'footer' %}\"}}",
		    -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	snprintf(template_id, sizeof template_id, "%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	/* segments and campaigns (the ids the placeholders above name); the campaigns use the fixture's
	 * email template, id 1 (the first of this tenant) */
	resp_free(r);
	ck_assert_str_eq(template_id, "1");
	const char *seg = "{\"name\": \"s%d\", \"rule\": {\"attribute\": \"city\", \"op\": \"exists\"}}";
	for (int i = 1; i <= 2; i++) {
		char body[128];
		snprintf(body, sizeof body, seg, i);
		r = call_at(s.port, "POST", "/v1/segments", f.full, NULL, body, -1);
		ck_assert_msg(r->status == 201, "%s", r->body);
		resp_free(r);
	}
	for (int i = 1; i <= 3; i++) {
		r = call_at(s.port, "POST", "/v1/campaigns", f.full, NULL, CAMPAIGN_SAMPLE, -1);
		ck_assert_msg(r->status == 201, "%s", r->body);
		resp_free(r);
	}
	r = call_at(s.port, "POST", "/v1/campaigns/2/pause", f.full, NULL, NULL, -1);
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	r = call_at(s.port, "POST", "/v1/campaigns/3/cancel", f.full, NULL, NULL, -1);
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	/* a subscription to an event no sample causes: nothing is delivered behind the test's back */
	r = call_at(s.port, "POST", "/v1/webhooks", f.full, NULL,
		    "{\"url\": \"http://hooks.example.com:1/\", \"event_types\": [\"message_complained\"]}", -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	snprintf(webhook_id, sizeof webhook_id, "%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	resp_free(r);
	/* tracking tokens of the message, signed as a worker signs them */
	uint8_t tmaster[HR_KEY_LEN], tk[HR_KEY_LEN];
	ck_assert(hr_key_from_hex(MASTER_HEX, tmaster, &e));
	hr_track_tenant_key(tmaster, (uint32_t)f.t.id, tk);
	hr_track_token t = {.kind = HR_TRACK_OPEN, .tenant_id = (uint32_t)f.t.id,
			    .message_id = (uint64_t)strtoull(message_id, NULL, 10)};
	tok_open = hr_track_encode(tk, &t);
	t.kind = HR_TRACK_UNSUBSCRIBE;
	tok_unsub = hr_track_encode(tk, &t);
	t.kind = HR_TRACK_CLICK;
	t.url = "https://shop.example/x";
	t.url_len = strlen(t.url);
	tok_click = hr_track_encode(tk, &t);
	(void)e;
	/* codes: a second contact, a referral pool whose code INJCODE1 belongs to inj-1, and a
	 * pending one-time code for verify@example.com whose code is made 123456 */
	r = call_at(s.port, "PUT", "/v1/contacts", f.full, NULL, "{\"external_id\": \"inj-2\"}", -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	resp_free(r);
	r = call_at(s.port, "POST", "/v1/code-pools", f.full, NULL, "{\"name\": \"inj-pool\", \"kind\": \"referral\"}", -1);
	ck_assert_msg(r->status == 201, "%s", r->body);
	snprintf(pool_id, sizeof pool_id, "%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	resp_free(r);
	snprintf(path, sizeof path, "/v1/code-pools/%s/codes", pool_id);
	r = call_at(s.port, "POST", path, f.full, NULL, "{\"codes\": [\"INJCODE1\"]}", -1);
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/code-pools/%s/issue", pool_id);
	r = call_at(s.port, "POST", path, f.full, NULL, "{\"contact\": {\"external_id\": \"inj-1\"}}", -1);
	ck_assert_msg(r->status == 201 && !strcmp(json_string_value(json_object_get(r->json, "code")), "INJCODE1"), "%s",
		      r->body);
	resp_free(r);
	r = call_at(s.port, "POST", "/v1/otp", f.full, NULL,
		    "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"verify@example.com\", \"purpose\": \"login\", "
		    "\"length\": 6}",
		    -1);
	ck_assert_msg(r->status == 202, "%s", r->body);
	long long otp = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	uint8_t master[HR_KEY_LEN], key[HR_KEY_LEN];
	ck_assert(hr_key_from_hex(MASTER_HEX, master, &e));
	hr_otp_key(master, key);
	char q[256], hash[65];
	snprintf(q, sizeof q, "SELECT salt FROM %s.otp_codes WHERE id = %lld", f.t.schema, otp);
	PGresult *res = PQexec(f.c, q);
	ck_assert(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1);
	hr_otp_hash(key, f.t.id, PQgetvalue(res, 0, 0), "123456", hash);
	PQclear(res);
	snprintf(q, sizeof q, "UPDATE %s.otp_codes SET code_hash = '%s' WHERE id = %lld", f.t.schema, hash, otp);
	res = PQexec(f.c, q);
	ck_assert(PQresultStatus(res) == PGRES_COMMAND_OK);
	PQclear(res);
	last_fp = fingerprint();
}

static void teardown(void)
{
	ck_assert_int_eq(srv_stop(&s), 0);
	hr_free(last_fp);
	last_fp = NULL;
	hr_free(tok_open);
	hr_free(tok_click);
	hr_free(tok_unsub);
	fx_close(&other);
	fx_close(&f);
}

START_TEST(every_route_has_a_sample)
{
	size_t n;
	const api_route *rt = api_routes(&n);
	for (size_t i = 0; i < n; i++) {
		if (!rt[i].body && !strchr(rt[i].pattern, '{'))
			continue;
		bool found = false;
		for (size_t k = 0; k < NSAMPLES && !found; k++)
			found = !strcmp(samples[k].method, rt[i].method) && !strcmp(samples[k].pattern, rt[i].pattern);
		ck_assert_msg(found, "route %s %s has no sample request in tests/api/test_inject.c", rt[i].method,
			      rt[i].pattern);
	}
	for (size_t k = 0; k < NSAMPLES; k++) {
		bool found = false;
		for (size_t i = 0; i < n && !found; i++)
			found = !strcmp(samples[k].method, rt[i].method) && !strcmp(samples[k].pattern, rt[i].pattern);
		ck_assert_msg(found, "sample %s %s names no route", samples[k].method, samples[k].pattern);
	}
}
END_TEST

static char *longstr;

static void hostile_body(const sample *sm, const char *path)
{
	json_t *probe = json_loads(sm->body, 0, NULL);
	ck_assert_msg(probe, "sample body of %s %s is not JSON", sm->method, sm->pattern);
	leaf ls[64];
	int nl = leaves(probe, "", ls, 0, 64);
	json_decref(probe);
	for (int k = 0; k < nl; k++) {
		const char *where;
		char what[512];
		for (size_t i = 0; i < NSTRINGS; i++) {
			const char *str = strings[i] ? strings[i] : longstr;
			char *b = mutated(sm->body, k, json_string(str), &where);
			snprintf(what, sizeof what, "%s = string #%zu", where, i);
			send_checked(sm, path, b, strlen(b), what);
			hr_free(b);
		}
		for (size_t i = 0; i < NOTHERS; i++) {
			json_t *v = json_loads(others[i], JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
			ck_assert(v);
			char *b = mutated(sm->body, k, v, &where);
			snprintf(what, sizeof what, "%s = %s", where, others[i]);
			send_checked(sm, path, b, strlen(b), what);
			hr_free(b);
		}
		for (size_t i = 0; i < NRAW; i++) {
			char *b = mutated(sm->body, k, json_string("@@RAW@@"), &where);
			char *at = strstr(b, "\"@@RAW@@\"");
			ck_assert(at);
			char *spliced = hr_sprintf("%.*s%s%s", (int)(at - b), b, raw[i], at + 9);
			snprintf(what, sizeof what, "%s = raw #%zu", where, i);
			long st = send_checked(sm, path, spliced, strlen(spliced), what);
			ck_assert_msg(st == 400, "%s %s (%s): want 400 for a body that is not JSON, got %ld", sm->method,
				      sm->pattern, what, st);
			hr_free(spliced);
			hr_free(b);
		}
	}
}

static void hostile_path(const sample *sm)
{
	int seg = -1;
	for (const char *p = sm->pattern; *p; p++) {
		if (*p == '/')
			seg++;
		if (*p != '{')
			continue;
		for (size_t i = 0; i < NSTRINGS; i++) {
			const char *str = strings[i] ? strings[i] : "9999999999999999999999999999";
			if (!*str)
				continue; /* an empty segment is another route */
			char *enc = pct(str);
			char *path = make_path(sm, seg, enc);
			char what[128];
			snprintf(what, sizeof what, "path segment %d = string #%zu", seg, i);
			long st = send_checked(sm, path, sm->body, sm->body ? strlen(sm->body) : 0, what);
			/* a hostile id, slug or name never names a real thing (a valid name may) */
			bool name = strspn(str, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(str);
			ck_assert_msg(st >= 400 || name, "%s %s (%s): accepted with %ld", sm->method, path, what, st);
			hr_free(path);
			hr_free(enc);
		}
	}
}

START_TEST(hostile_values_in_every_field_never_5xx_and_refusals_write_nothing)
{
	longstr = hr_malloc(70001);
	memset(longstr, 'a', 70000);
	longstr[70000] = '\0';
	const sample *sm = &samples[_i];
	char *path = make_path(sm, -1, NULL);
	/* the sample itself is valid */
	long st = send_checked(sm, path, sm->body, sm->body ? strlen(sm->body) : 0, "the sample");
	ck_assert_msg(st < 400, "sample %s %s is refused (%ld): fix the sample", sm->method, path, st);
	if (sm->body && sm->body[0] == '{')
		hostile_body(sm, path);
	hostile_path(sm);
	hr_free(path);
	hr_free(longstr);
	fprintf(stderr, "inject: %s %s: %ld requests so far\n", sm->method, sm->pattern, requests);
}
END_TEST

int main(void)
{
	Suite *su = suite_create("inject");
	TCase *tc = th_tcase("inject");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, every_route_has_a_sample);
	tcase_add_loop_test(tc, hostile_values_in_every_field_never_5xx_and_refusals_write_nothing, 0, (int)NSAMPLES);
	suite_add_tcase(su, tc);
	return th_run(su);
}
