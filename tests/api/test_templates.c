/*
 * test_templates.c -- templates and snippets over HTTP against the real
 * herald-api and PostgreSQL: versions, validation (Liquid errors with line
 * and column naming the field), snippets and their snapshot, preview, test
 * sends, scopes, other tenants' ids; and the end-to-end case: a template
 * that renders snippets, test-sent through the real herald-scheduler and
 * herald-worker to a capturing HTTP endpoint, arrives rendered.
 * Every error case asserts the status, the pointer and that nothing was written.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "apitest.h"
#include "db.h"
#include "harness.h"
#include "providers.h"

#define TEMPLATES "SELECT count(*) FROM %s.templates"
#define VERSIONS "SELECT count(*) FROM %s.template_versions"
#define OUTBOX "SELECT count(*) FROM %s.outbox"

static long long jint(json_t *o, const char *name)
{
	return (long long)json_integer_value(json_object_get(o, name));
}

static const char *jstr(json_t *o, const char *name)
{
	const char *s = json_string_value(json_object_get(o, name));
	return s ? s : "";
}

/* The first errors[] entry of a problem. */
static json_t *first_error(resp *r)
{
	return json_array_get(json_object_get(r->json, "errors"), 0);
}

static void provider(fx *f, const char *name, const char *channel, const char *transport, const char *config)
{
	uint8_t key[32];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	hr_provider_spec p = {.name = name, .channel = channel, .transport = transport, .config = config};
	ck_assert_msg(hr_provider_put(f->c, key, f->t.slug, &p, &err), "%s", err.msg);
}

/* POST a template; returns its id (asserting 201). */
static long long create(fx *f, const char *body)
{
	resp *r = call("POST", "/v1/templates", f->full, NULL, body);
	ck_assert_msg(r->status == 201, "%s -> %ld %s", body, r->status, r->body);
	long long id = jint(r->json, "id");
	resp_free(r);
	return id;
}

#define WELCOME                                                                                             \
	"{\"name\": \"welcome\", \"channel\": \"email\", \"content\": {\"subject\": \"Hi {{ contact.first_name " \
	"}}\", \"from\": \"Shop <news@shop.example>\", \"html\": \"<p>Hello {{ contact.first_name | default: "     \
	"'friend' }}</p>\", \"text\": \"Hello\"}}"

START_TEST(templates_create_version_get_list)
{
	fx f;
	fx_open(&f);
	resp *r = call("POST", "/v1/templates", f.full, NULL, WELCOME);
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long id = jint(r->json, "id");
	char path[96];
	snprintf(path, sizeof path, "/v1/templates/%lld", id);
	ck_assert_str_eq(r->location, path);
	ck_assert_int_eq(jint(r->json, "version"), 1);
	ck_assert_str_eq(jstr(r->json, "channel"), "email");
	ck_assert_str_eq(jstr(json_object_get(r->json, "content"), "text"), "Hello");
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "versions")), 1);
	ck_assert_ptr_null(json_object_get(r->json, "warnings"));
	resp_free(r);
	/* a new version; the old one stays as it was */
	r = call("PUT", path, f.full, NULL,
		 "{\"name\": \"welcome-2\", \"content\": {\"subject\": \"New\", \"from\": \"news@shop.example\", "
		 "\"text\": \"v2 {{ 'x' || upcase }}\"}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(jint(r->json, "version"), 2);
	ck_assert_str_eq(jstr(r->json, "name"), "welcome-2");
	ck_assert_ptr_null(json_object_get(json_object_get(r->json, "content"), "html"));
	/* lax accepts it (as the workers do); strict's complaint is a warning naming the field */
	json_t *w = json_array_get(json_object_get(r->json, "warnings"), 0);
	ck_assert_msg(w && !strcmp(jstr(w, "pointer"), "/content/text"), "%s", r->body);
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(jint(r->json, "version"), 2);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "versions")), 2);
	resp_free(r);
	char vpath[128];
	snprintf(vpath, sizeof vpath, "/v1/templates/%lld/versions/1", id);
	r = call("GET", vpath, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert(json_is_false(json_object_get(r->json, "current")));
	ck_assert_str_eq(jstr(json_object_get(r->json, "content"), "subject"), "Hi {{ contact.first_name }}");
	resp_free(r);
	snprintf(vpath, sizeof vpath, "/v1/templates/%lld/versions/3", id);
	r = call("GET", vpath, f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	/* list: pages by cursor, filter by channel */
	create(&f, "{\"name\": \"code\", \"channel\": \"sms\", \"content\": {\"text\": \"{{ code }}\"}}");
	create(&f, "{\"name\": \"hook\", \"channel\": \"webhook\", \"content\": {\"body\": \"{}\"}}");
	create(&f, "{\"name\": \"app\", \"channel\": \"push\", \"content\": {\"title\": \"t\", \"body\": \"b\"}}");
	r = call("GET", "/v1/templates?limit=3", f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 3);
	char next[300];
	snprintf(next, sizeof next, "/v1/templates?limit=3&cursor=%s", jstr(r->json, "next_cursor"));
	ck_assert_str_eq(jstr(json_array_get(json_object_get(r->json, "data"), 0), "name"), "welcome-2");
	resp_free(r);
	r = call("GET", next, f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 1);
	ck_assert_str_eq(jstr(json_array_get(json_object_get(r->json, "data"), 0), "name"), "app");
	ck_assert(json_is_null(json_object_get(r->json, "next_cursor")));
	resp_free(r);
	r = call("GET", "/v1/templates?channel=sms", f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 1);
	resp_free(r);
	static const char *const badq[] = {"/v1/templates?cursor=zz", "/v1/templates?cursor=7331", "/v1/templates?limit=0",
					   "/v1/templates?channel=fax"};
	for (size_t i = 0; i < sizeof badq / sizeof *badq; i++) {
		r = call("GET", badq[i], f.read, NULL, NULL);
		expect_problem(r, 400, NULL);
		resp_free(r);
	}
	/* a name in use is 409 on create and on rename */
	r = call("POST", "/v1/templates", f.full, NULL,
		 "{\"name\": \"code\", \"channel\": \"sms\", \"content\": {\"text\": \"x\"}}");
	expect_problem(r, 409, "/name");
	resp_free(r);
	r = call("PUT", path, f.full, NULL, "{\"name\": \"code\", \"content\": {\"subject\": \"s\", \"from\": \"a@b.co\", \"text\": \"t\"}}");
	expect_problem(r, 409, "/name");
	resp_free(r);
	/* read keys read, send keys send: neither saves */
	r = call("POST", "/v1/templates", f.read, NULL, WELCOME);
	expect_problem(r, 403, NULL);
	resp_free(r);
	r = call("PUT", path, f.send, NULL, "{\"content\": {\"text\": \"x\"}}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	/* an agency key acts on its tenant */
	r = call("GET", path, f.agency_key, f.t.slug, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	ck_assert_int_eq(count(&f, TEMPLATES), 4);
	ck_assert_int_eq(count(&f, VERSIONS), 5);
	fx_close(&f);
}
END_TEST

START_TEST(templates_invalid_are_422_and_write_nothing)
{
	fx f;
	fx_open(&f);
	static const struct {
		const char *body, *pointer;
		int line, column; /* of the first error, 0 = not checked */
	} bad[] = {
		/* Liquid syntax errors name the field, line and column */
		{"{\"name\": \"a\", \"channel\": \"email\", \"content\": {\"subject\": \"s\", \"from\": \"a@b.co\", "
		 "\"html\": \"<p>\\n<b>\\n{% if x %}never closed\"}}", "/content/html", 3, 1},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"ok\\n  {% if a %}{% endfor %}\"}}", "/content/text", 2, 13},
		{"{\"name\": \"a\", \"channel\": \"push\", \"content\": {\"body\": \"{% nosuchtag %}\"}}", "/content/body", 1, 1},
		/* unknown fields, wrong types */
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"x\"}, \"colour\": 1}", "/colour", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"email\", \"content\": {\"subject\": \"s\", \"from\": \"a@b.co\", \"text\": \"t\", \"title\": \"x\"}}", "/content/title", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"x\", \"snippets\": {}}}", "/content/snippets", 0, 0},
		{"{\"name\": 5, \"channel\": \"sms\", \"content\": {\"text\": \"x\"}}", "/name", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": \"text\"}", "/content", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": 7}}", "/content/text", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"\"}}", "/content/text", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"fax\", \"content\": {\"text\": \"x\"}}", "/channel", 0, 0},
		{"{\"name\": \"a\", \"content\": {\"text\": \"x\"}}", "/channel", 0, 0},
		{"{\"channel\": \"sms\", \"content\": {\"text\": \"x\"}}", "/name", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"sms\"}", "/content", 0, 0},
		/* each channel's required fields */
		{"{\"name\": \"a\", \"channel\": \"email\", \"content\": {\"subject\": \"s\", \"text\": \"t\"}}", "/content/from", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"email\", \"content\": {\"from\": \"a@b.co\", \"text\": \"t\"}}", "/content/subject", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"email\", \"content\": {\"subject\": \"s\", \"from\": \"a@b.co\"}}", "/content/html", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {}}", "/content/text", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"messenger\", \"content\": {}}", "/content/text", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"push\", \"content\": {\"title\": \"t\"}}", "/content/body", 0, 0},
		{"{\"name\": \"a\", \"channel\": \"webhook\", \"content\": {}}", "/content/body", 0, 0},
		/* header fields are one line */
		{"{\"name\": \"a\", \"channel\": \"email\", \"content\": {\"subject\": \"s\\r\\nBcc: x@y.z\", \"from\": \"a@b.co\", \"text\": \"t\"}}", "/content/subject", 0, 0},
		/* snippets that do not exist, or are named at render time */
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"hi\\n {% render 'nope' %}\"}}", "/content/text", 2, 2},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"{% include snippet_name %}\"}}", "/content/text", 1, 1},
		/* SQL and path tricks are just text */
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"{% render \\\"x'; DROP TABLE snippets; --\\\" %}\"}}", "/content/text", 1, 1},
		{"{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": \"{% render '../../etc/passwd' %}\"}}", "/content/text", 1, 1},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		resp *r = call("POST", "/v1/templates", f.full, NULL, bad[i].body);
		ck_assert_msg(r->status == 422, "%s: got %ld %s", bad[i].body, r->status, r->body);
		expect_problem(r, 422, bad[i].pointer);
		if (bad[i].line) {
			json_t *e = first_error(r);
			ck_assert_msg(jint(e, "line") == bad[i].line && jint(e, "column") == bad[i].column,
				      "%s: want line %d column %d, got %s", bad[i].body, bad[i].line, bad[i].column, r->body);
			char want[64];
			snprintf(want, sizeof want, "line %d, column %d", bad[i].line, bad[i].column);
			ck_assert_msg(strstr(jstr(e, "detail"), want), "%s: detail lacks '%s': %s", bad[i].body, want,
				      r->body);
		}
		resp_free(r);
	}
	/* a field over the workers' template size, in a body the server accepts */
	size_t n = 600 * 1024;
	char *big = hr_malloc(n + 200);
	int k = snprintf(big, 200, "{\"name\": \"big\", \"channel\": \"sms\", \"content\": {\"text\": \"");
	memset(big + k, 'a', n);
	snprintf(big + k + n, 100, "\"}}");
	resp *r = call("POST", "/v1/templates", f.full, NULL, big);
	expect_problem(r, 422, "/content/text");
	resp_free(r);
	hr_free(big);
	/* and a body over api_max_body */
	n = 1100 * 1024;
	big = hr_malloc(n + 200);
	k = snprintf(big, 200, "{\"name\": \"big\", \"channel\": \"sms\", \"content\": {\"text\": \"");
	memset(big + k, 'a', n);
	snprintf(big + k + n, 100, "\"}}");
	r = call("POST", "/v1/templates", f.full, NULL, big);
	expect_problem(r, 413, NULL);
	resp_free(r);
	hr_free(big);
	r = call("POST", "/v1/templates", f.full, NULL, "{\"name\": \"a\", \"channel\": \"sms\", \"content\": {\"text\": ");
	expect_problem(r, 400, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, TEMPLATES), 0);
	ck_assert_int_eq(count(&f, VERSIONS), 0);
	/* PUT: the same checks, and the channel stays */
	long long id = create(&f, WELCOME);
	char path[96];
	snprintf(path, sizeof path, "/v1/templates/%lld", id);
	static const struct {
		const char *body, *pointer;
	} badput[] = {
		{"{\"content\": {\"subject\": \"s\", \"from\": \"a@b.co\", \"text\": \"{% for %}\"}}", "/content/text"},
		{"{\"content\": {\"subject\": \"s\", \"from\": \"a@b.co\", \"text\": \"t\"}, \"channel\": \"sms\"}", "/channel"},
		{"{\"content\": {\"text\": \"x\"}}", "/content/from"},
		{"{\"name\": \"b\"}", "/content"},
		{"{\"content\": {\"subject\": \"s\", \"from\": \"a@b.co\", \"text\": \"t\"}, \"version\": 3}", "/version"},
	};
	for (size_t i = 0; i < sizeof badput / sizeof *badput; i++) {
		r = call("PUT", path, f.full, NULL, badput[i].body);
		ck_assert_msg(r->status == 422, "%s: got %ld %s", badput[i].body, r->status, r->body);
		expect_problem(r, 422, badput[i].pointer);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, VERSIONS), 1);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.templates WHERE current_version = 1 AND name = 'welcome'"), 1);
	fx_close(&f);
}
END_TEST

START_TEST(another_tenants_template_ids_are_404)
{
	fx f, g;
	fx_open(&f);
	fx_open(&g);
	provider(&g, "sms", "sms", "sink", "{}");
	long long id = create(&f, "{\"name\": \"code\", \"channel\": \"sms\", \"content\": {\"text\": \"x\"}}");
	char path[128];
	static const char *const suffix[] = {"", "/versions/1", "/preview", "/test"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "/v1/templates/%lld%s", id, suffix[i]);
		const char *method = i < 2 ? "GET" : "POST";
		const char *body = i == 3 ? "{\"to\": \"+14155550101\", \"provider\": \"sms\"}" : i == 2 ? "{}" : NULL;
		resp *r = call(method, path, g.full, NULL, body);
		expect_problem(r, 404, NULL);
		resp_free(r);
		r = call(method, path, g.agency_key, f.t.slug, body); /* another agency's tenant */
		expect_problem(r, 404, NULL);
		resp_free(r);
	}
	snprintf(path, sizeof path, "/v1/templates/%lld", id);
	resp *r = call("PUT", path, g.full, NULL, "{\"content\": {\"text\": \"mine\"}}");
	expect_problem(r, 404, NULL);
	resp_free(r);
	static const char *const odd[] = {"/v1/templates/0", "/v1/templates/-1", "/v1/templates/1%27%20OR%201=1",
					  "/v1/templates/99999999999999999999", "/v1/templates/abc/versions/1",
					  "/v1/templates/1/versions/x"};
	for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
		r = call("GET", odd[i], f.full, NULL, NULL);
		expect_problem(r, 404, NULL);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, VERSIONS), 1);
	ck_assert_int_eq(count(&g, OUTBOX), 0);
	fx_close(&f);
	fx_close(&g);
}
END_TEST

START_TEST(snippets_crud_and_the_snapshot_in_each_version)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/snippets/footer", f.full, NULL,
		       "{\"body\": \"-- {{ brand | default: 'Shop' }}{% render 'legal' %}\"}");
	/* it renders a snippet that is not there yet: fine for a snippet, refused for a template */
	ck_assert_msg(r->status == 201, "%s", r->body);
	ck_assert_str_eq(r->location, "/v1/snippets/footer");
	resp_free(r);
	r = call("POST", "/v1/templates", f.full, NULL,
		 "{\"name\": \"code\", \"channel\": \"sms\", \"content\": {\"text\": \"{{ code }}\\n{% render 'footer' %}\"}}");
	expect_problem(r, 422, "/content/text");
	ck_assert_msg(strstr(jstr(first_error(r), "detail"), "'legal', rendered by snippet 'footer'"), "%s", r->body);
	resp_free(r);
	r = call("PUT", "/v1/snippets/legal", f.full, NULL, "{\"body\": \" (c)\"}");
	ck_assert_int_eq(r->status, 201);
	resp_free(r);
	long long id = create(&f, "{\"name\": \"code\", \"channel\": \"sms\", \"content\": {\"text\": "
				  "\"{{ code }}\\n{%- render 'footer' -%}{% comment %}{% render 'gone' %}{% endcomment %}"
				  "{% raw %}{% render 'gone' %}{% endraw %}\"}}");
	char path[96];
	snprintf(path, sizeof path, "/v1/templates/%lld", id);
	r = call("GET", path, f.read, NULL, NULL);
	json_t *sn = json_object_get(r->json, "snippets");
	ck_assert_msg(json_object_size(sn) == 2, "%s", r->body);
	ck_assert_str_eq(jstr(sn, "legal"), " (c)");
	ck_assert_ptr_null(json_object_get(json_object_get(r->json, "content"), "snippets"));
	resp_free(r);
	/* editing a snippet: the saved version keeps its copy, used_by says it is stale */
	r = call("PUT", "/v1/snippets/legal", f.full, NULL, "{\"body\": \" (c) 2026\"}");
	ck_assert_int_eq(r->status, 200);
	json_t *u = json_array_get(json_object_get(r->json, "used_by"), 0);
	ck_assert_msg(u && jint(u, "id") == id && json_is_true(json_object_get(u, "stale")), "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.template_versions WHERE content->'snippets'->>'legal' = ' (c)'"), 1);
	/* the next save takes the new text */
	char body[256];
	snprintf(body, sizeof body, "{\"content\": {\"text\": \"{{ code }} {%% include 'legal' %%}\"}}");
	r = call("PUT", path, f.full, NULL, body);
	ck_assert_int_eq(r->status, 200);
	sn = json_object_get(r->json, "snippets");
	ck_assert_msg(json_object_size(sn) == 1 && !strcmp(jstr(sn, "legal"), " (c) 2026"), "%s", r->body);
	resp_free(r);
	r = call("GET", "/v1/snippets/legal", f.read, NULL, NULL);
	u = json_array_get(json_object_get(r->json, "used_by"), 0);
	ck_assert_msg(u && json_is_false(json_object_get(u, "stale")), "%s", r->body);
	ck_assert_str_eq(jstr(r->json, "body"), " (c) 2026");
	resp_free(r);
	/* the list, by cursor */
	for (int i = 0; i < 3; i++) {
		snprintf(body, sizeof body, "/v1/snippets/s-%d", i);
		r = call("PUT", body, f.full, NULL, "{\"body\": \"x\"}");
		ck_assert_int_eq(r->status, 201);
		resp_free(r);
	}
	r = call("GET", "/v1/snippets?limit=4", f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 4);
	ck_assert_str_eq(jstr(json_array_get(json_object_get(r->json, "data"), 0), "name"), "footer");
	snprintf(body, sizeof body, "/v1/snippets?limit=4&cursor=%s", jstr(r->json, "next_cursor"));
	resp_free(r);
	r = call("GET", body, f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 1);
	ck_assert_str_eq(jstr(json_array_get(json_object_get(r->json, "data"), 0), "name"), "s-2");
	ck_assert_int_eq(jint(json_array_get(json_object_get(r->json, "data"), 0), "size"), 1);
	resp_free(r);
	r = call("GET", "/v1/snippets?cursor=41", f.read, NULL, NULL);
	expect_problem(r, 400, "cursor");
	resp_free(r);
	/* errors: bad Liquid with line/column, types, unknown fields, names; nothing written */
	static const struct {
		const char *path, *body, *pointer;
	} bad[] = {
		{"/v1/snippets/x", "{\"body\": \"a\\n{% if %}\"}", "/body"},
		{"/v1/snippets/x", "{\"body\": 1}", "/body"},
		{"/v1/snippets/x", "{}", "/body"},
		{"/v1/snippets/x", "{\"body\": \"x\", \"kind\": \"y\"}", "/kind"},
		{"/v1/snippets/x", "{\"body\": \"{% render name %}\"}", "/body"},
		{"/v1/snippets/-x", "{\"body\": \"x\"}", "name"},
		{"/v1/snippets/a%20b", "{\"body\": \"x\"}", "name"},
		{"/v1/snippets/a'b", "{\"body\": \"x\"}", "name"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("PUT", bad[i].path, f.full, NULL, bad[i].body);
		ck_assert_msg(r->status == 422, "%s %s: got %ld %s", bad[i].path, bad[i].body, r->status, r->body);
		expect_problem(r, 422, bad[i].pointer);
		if (i == 0)
			ck_assert_msg(jint(first_error(r), "line") == 2 && strstr(jstr(first_error(r), "detail"), "line 2"),
				      "%s", r->body);
		resp_free(r);
	}
	r = call("PUT", "/v1/snippets/x", f.read, NULL, "{\"body\": \"x\"}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	r = call("DELETE", "/v1/snippets/legal", f.read, NULL, NULL);
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.snippets"), 5);
	/* delete: saved versions keep rendering from their copies */
	r = call("DELETE", "/v1/snippets/legal", f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 204);
	resp_free(r);
	r = call("DELETE", "/v1/snippets/legal", f.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", "/v1/snippets/legal", f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	snprintf(body, sizeof body, "/v1/templates/%lld/preview", id);
	r = call("POST", body, f.full, NULL, "{\"data\": {\"code\": \"42\"}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_str_eq(jstr(json_object_get(r->json, "rendered"), "text"), "42  (c) 2026");
	resp_free(r);
	/* another tenant has its own snippets */
	fx g;
	fx_open(&g);
	r = call("GET", "/v1/snippets/footer", g.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("DELETE", "/v1/snippets/footer", g.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.snippets WHERE name = 'footer'"), 1);
	fx_close(&g);
	fx_close(&f);
}
END_TEST

START_TEST(preview_renders_with_data_or_a_contact)
{
	fx f;
	fx_open(&f);
	resp *r = call("PUT", "/v1/snippets/sig", f.full, NULL, "{\"body\": \"-- {{ contact.city | default: 'us' }}\"}");
	resp_free(r);
	long long id = create(&f, "{\"name\": \"w\", \"channel\": \"email\", \"content\": {\"subject\": \"Hi {{ "
				  "contact.first_name | default: name }}\", \"from\": \"news@shop.example\", \"html\": "
				  "\"<p>{{ herald.to }}</p>{% render 'sig', contact: contact %}\", \"text\": \"{{ 10 | "
				  "divided_by: n }}\"}}");
	r = call("PUT", "/v1/contacts", f.full, NULL,
		 "{\"email\": \"ann@example.com\", \"attributes\": {\"first_name\": \"Ann\", \"city\": \"Leeds\"}}");
	resp_free(r);
	char path[96];
	snprintf(path, sizeof path, "/v1/templates/%lld/preview", id);
	r = call("POST", path, f.full, NULL, "{\"contact\": {\"email\": \"ANN@example.com\"}, \"data\": {\"n\": 5}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	json_t *out = json_object_get(r->json, "rendered");
	ck_assert_str_eq(jstr(out, "subject"), "Hi Ann");
	ck_assert_str_eq(jstr(out, "html"), "<p>ann@example.com</p>-- Leeds");
	ck_assert_str_eq(jstr(out, "text"), "2");
	ck_assert_str_eq(jstr(out, "from"), "news@shop.example");
	ck_assert_int_eq(jint(r->json, "version"), 1);
	resp_free(r);
	r = call("POST", path, f.full, NULL, "{\"data\": {\"name\": \"Bob\", \"n\": 2}}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_str_eq(jstr(json_object_get(r->json, "rendered"), "subject"), "Hi Bob");
	ck_assert_str_eq(jstr(json_object_get(r->json, "rendered"), "html"), "<p></p>-- us");
	resp_free(r);
	/* a render error names the field and the line; inline_errors writes it into the text instead */
	r = call("POST", path, f.full, NULL, "{\"data\": {\"n\": 0}}");
	expect_problem(r, 422, "/content/text");
	ck_assert_msg(jint(first_error(r), "line") == 1 && strstr(jstr(first_error(r), "detail"), "divided by 0"), "%s",
		      r->body);
	resp_free(r);
	r = call("POST", path, f.full, NULL, "{\"data\": {\"n\": 0}, \"inline_errors\": true}");
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_msg(strstr(jstr(json_object_get(r->json, "rendered"), "text"), "Liquid error"), "%s", r->body);
	resp_free(r);
	/* an older version */
	snprintf(path, sizeof path, "/v1/templates/%lld", id);
	r = call("PUT", path, f.full, NULL, "{\"content\": {\"subject\": \"v2\", \"from\": \"a@b.co\", \"text\": \"two\"}}");
	resp_free(r);
	snprintf(path, sizeof path, "/v1/templates/%lld/preview", id);
	r = call("POST", path, f.full, NULL, "{\"version\": 1, \"data\": {\"n\": 1}}");
	ck_assert_str_eq(jstr(json_object_get(r->json, "rendered"), "text"), "10");
	resp_free(r);
	r = call("POST", path, f.full, NULL, "{}");
	ck_assert_str_eq(jstr(json_object_get(r->json, "rendered"), "text"), "two");
	ck_assert_int_eq(jint(r->json, "version"), 2);
	resp_free(r);
	static const struct {
		const char *body, *pointer;
	} bad[] = {
		{"{\"version\": 9}", "/version"},
		{"{\"version\": \"1\"}", "/version"},
		{"{\"data\": [1]}", "/data"},
		{"{\"contact\": {\"email\": \"nobody@example.com\"}}", "/contact"},
		{"{\"contact\": {\"email\": \"a@b.co\", \"id\": 1}}", "/contact"},
		{"{\"inline_errors\": \"yes\"}", "/inline_errors"},
		{"{\"to\": \"a@b.co\"}", "/to"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("POST", path, f.full, NULL, bad[i].body);
		ck_assert_msg(r->status == 422, "%s: got %ld %s", bad[i].body, r->status, r->body);
		expect_problem(r, 422, bad[i].pointer);
		resp_free(r);
	}
	r = call("POST", path, f.read, NULL, "{}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, VERSIONS), 2);
	ck_assert_int_eq(count(&f, OUTBOX), 0);
	fx_close(&f);
}
END_TEST

START_TEST(test_sends_enqueue_and_messages_use_saved_templates)
{
	fx f;
	fx_open(&f);
	provider(&f, "mail", "email", "sink", "{}");
	provider(&f, "sms", "sms", "sink", "{}");
	long long id = create(&f, WELCOME);
	char path[96];
	snprintf(path, sizeof path, "/v1/templates/%lld/test", id);
	resp *r = call("POST", path, f.full, NULL, "{\"to\": \"Me@Shop.example\", \"provider\": \"mail\", \"data\": {\"x\": 1}}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	long long mid = jint(r->json, "id");
	char mpath[64];
	snprintf(mpath, sizeof mpath, "/v1/messages/%lld", mid);
	ck_assert_str_eq(r->location, mpath);
	ck_assert_str_eq(jstr(r->json, "to"), "me@shop.example");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE origin = 'test' AND lane = 'transactional' "
				   "AND template_version = 1 AND addresses[1] = 'me@shop.example' AND data->0->>'x' = '1'"),
			 1);
	r = call("GET", mpath, f.read, NULL, NULL);
	ck_assert_str_eq(jstr(r->json, "status"), "queued");
	resp_free(r);
	/* the saved template through POST /v1/messages, by id and version */
	char body[256];
	snprintf(body, sizeof body, "{\"channel\": \"email\", \"provider\": \"mail\", \"to\": \"a@b.co\", "
				    "\"template\": {\"id\": %lld, \"version\": 1}}", id);
	r = call("POST", "/v1/messages", f.send, NULL, body);
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, OUTBOX), 2);
	/* refusals write nothing */
	r = call("PUT", "/v1/contacts", f.full, NULL, "{\"email\": \"c@example.com\"}");
	resp_free(r);
	PGresult *q;
	char ins[256];
	snprintf(ins, sizeof ins, "INSERT INTO %s.suppressions (channel, address, reason) VALUES ('email', 'gone@example.com', 'complaint')", f.t.schema);
	q = PQexec(f.c, ins);
	ck_assert_int_eq(PQresultStatus(q), PGRES_COMMAND_OK);
	PQclear(q);
	long long broken = create(&f, "{\"name\": \"broken\", \"channel\": \"email\", \"content\": {\"subject\": \"s\", "
				      "\"from\": \"a@b.co\", \"text\": \"{{ 1 | divided_by: 0 }}\"}}");
	char bpath[96];
	snprintf(bpath, sizeof bpath, "/v1/templates/%lld/test", broken);
	static const struct {
		const char *body, *pointer;
		long status;
		int broken;
	} bad[] = {
		{"{\"to\": \"GONE@example.com\", \"provider\": \"mail\"}", "/to", 422, 0},
		{"{\"to\": \"not an address\", \"provider\": \"mail\"}", "/to", 422, 0},
		{"{\"provider\": \"mail\"}", "/to", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"sms\"}", "/provider", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"nope\"}", "/provider", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"x'; --\"}", "/provider", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"mail\", \"version\": 2}", "/version", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"mail\", \"contact\": {\"phone\": \"+14155550100\"}}", "/contact", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"mail\", \"cc\": \"b@b.co\"}", "/cc", 422, 0},
		{"{\"to\": \"a@b.co\", \"provider\": \"mail\"}", "/content/text", 422, 1},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("POST", bad[i].broken ? bpath : path, f.full, NULL, bad[i].body);
		ck_assert_msg(r->status == bad[i].status, "%s: got %ld %s", bad[i].body, r->status, r->body);
		expect_problem(r, bad[i].status, bad[i].pointer);
		resp_free(r);
	}
	r = call("POST", path, f.send, NULL, "{\"to\": \"a@b.co\", \"provider\": \"mail\"}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, OUTBOX), 2);
	/* with a contact: its data is rendered and its id kept with the message */
	r = call("POST", path, f.full, NULL, "{\"to\": \"a@b.co\", \"provider\": \"mail\", \"contact\": {\"email\": \"c@example.com\"}}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.outbox WHERE origin = 'test' AND contact_ids[1] IS NOT NULL"), 1);
	fx_close(&f);
}
END_TEST

/* ---- end to end: scheduler + worker render the snapshot ---- */

/* A one-shot HTTP endpoint on 127.0.0.1: accepts connections, keeps the
 * first request body that contains `want`, answers 200 to every request. */
typedef struct capture {
	int fd, port;
	pthread_t th;
	volatile int stop;
	char got[4096];
	pthread_mutex_t mu;
} capture;

static void *capture_run(void *arg)
{
	capture *c = arg;
	while (!c->stop) {
		struct pollfd p = {c->fd, POLLIN, 0};
		if (poll(&p, 1, 100) <= 0)
			continue;
		int s = accept(c->fd, NULL, NULL);
		if (s < 0)
			continue;
		/* keep-alive: serve requests on this connection until it closes */
		char buf[8192];
		size_t len = 0;
		while (!c->stop) {
			struct pollfd q = {s, POLLIN, 0};
			if (poll(&q, 1, 100) <= 0)
				continue;
			ssize_t n = read(s, buf + len, sizeof buf - 1 - len);
			if (n <= 0)
				break;
			len += (size_t)n;
			buf[len] = '\0';
			char *end = strstr(buf, "\r\n\r\n");
			if (!end)
				continue;
			char *cl = strcasestr(buf, "content-length:");
			size_t want = cl ? (size_t)atol(cl + 15) : 0;
			size_t have = len - (size_t)(end + 4 - buf);
			if (have < want)
				continue;
			pthread_mutex_lock(&c->mu);
			if (!c->got[0])
				snprintf(c->got, sizeof c->got, "%.*s", (int)want, end + 4);
			pthread_mutex_unlock(&c->mu);
			const char *ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n"
					 "{\"id\":\"cap-1\"}";
			if (write(s, ok, strlen(ok)) < 0)
				break;
			size_t used = (size_t)(end + 4 - buf) + want;
			memmove(buf, buf + used, len - used);
			len -= used;
		}
		close(s);
	}
	return NULL;
}

static void capture_start(capture *c)
{
	memset(c, 0, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ck_assert_int_eq(bind(c->fd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(listen(c->fd, 8), 0);
	socklen_t al = sizeof a;
	getsockname(c->fd, (struct sockaddr *)&a, &al);
	c->port = ntohs(a.sin_port);
	ck_assert_int_eq(pthread_create(&c->th, NULL, capture_run, c), 0);
}

static void capture_stop(capture *c)
{
	c->stop = 1;
	pthread_join(c->th, NULL);
	close(c->fd);
	pthread_mutex_destroy(&c->mu);
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* herald-scheduler on the suite's database; its transactional endpoint in ep, its stdout in *out_fd. */
static pid_t sched_start(const char *dir, char ep[128], int *out_fd)
{
	char log[512];
	snprintf(log, sizeof log, "%s/scheduler.log", dir);
	char *env[] = {hr_sprintf("HERALD_DATABASE_URL=%s", the_dsn), hr_sprintf("HERALD_MASTER_KEY=%s", MASTER_HEX),
		       hr_strdup("HERALD_SCHED_BIND_TRANSACTIONAL=tcp://127.0.0.1:*"),
		       hr_strdup("HERALD_SCHED_BIND_BULK=tcp://127.0.0.1:*"), NULL};
	const char *argv[] = {SCHEDULER_PATH, NULL};
	int out;
	pid_t pid = th_spawn(argv, (const char *const *)env, log, &out);
	for (int i = 0; env[i]; i++)
		hr_free(env[i]);
	ep[0] = '\0';
	char buf[4096];
	size_t len = 0;
	long long deadline = mono_ms() + 20000;
	while (!ep[0] && mono_ms() < deadline) {
		struct pollfd p = {out, POLLIN, 0};
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t n = read(out, buf + len, sizeof buf - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		char *at = strstr(buf, "listening lane=transactional endpoint=");
		if (at && strchr(at, '\n'))
			sscanf(at, "listening lane=transactional endpoint=%127s", ep);
	}
	*out_fd = out; /* kept open until it stops: a closed pipe would kill it with SIGPIPE */
	ck_assert_msg(ep[0], "herald-scheduler did not start (see %s)", log);
	return pid;
}

static int stop_pid(pid_t pid)
{
	kill(pid, SIGTERM);
	int st = 0;
	long long deadline = mono_ms() + 20000;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (mono_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		struct timespec d = {0, 10000000};
		nanosleep(&d, NULL);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

START_TEST(test_send_renders_snippets_in_the_worker)
{
	fx f;
	fx_open(&f);
	capture cap;
	capture_start(&cap);
	char cfg[128];
	snprintf(cfg, sizeof cfg, "{\"url\": \"http://127.0.0.1:%d/hook\"}", cap.port);
	provider(&f, "gw", "sms", "http", cfg);
	resp *r = call("PUT", "/v1/snippets/item", f.full, NULL, "{\"body\": \"[{{ it }}]\"}");
	resp_free(r);
	r = call("PUT", "/v1/snippets/items", f.full, NULL,
		 "{\"body\": \"{% for it in list %}{% render 'item', it: it %}{% endfor %}\"}");
	resp_free(r);
	long long id = create(&f, "{\"name\": \"order\", \"channel\": \"sms\", \"content\": {\"text\": "
				  "\"Order {{ order }}: {% include 'items' %}\"}}");
	/* the snippet changes after the save: the version sends what it was saved with */
	r = call("PUT", "/v1/snippets/item", f.full, NULL, "{\"body\": \"<{{ it }}>\"}");
	resp_free(r);
	char path[96];
	snprintf(path, sizeof path, "/v1/templates/%lld/test", id);
	r = call("POST", path, f.full, NULL,
		 "{\"to\": \"+1 415 555 0101\", \"provider\": \"gw\", \"data\": {\"order\": \"A-7\", "
		 "\"list\": [1, 2]}}");
	ck_assert_msg(r->status == 202, "%s", r->body);
	long long mid = jint(r->json, "id");
	resp_free(r);
	char *dir = th_tmpdir("tpl-e2e");
	char ep[128];
	int sched_out;
	pid_t sched = sched_start(dir, ep, &sched_out);
	char wlog[512];
	snprintf(wlog, sizeof wlog, "%s/worker.log", dir);
	const char *wargv[] = {WORKER_PATH, "--channel", "sms", "--lane", "transactional", "--scheduler", ep,
			       "--metrics-port", "-1", NULL};
	pid_t worker = th_spawn(wargv, NULL, wlog, NULL);
	char q[256];
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.results WHERE message_id = %lld", mid);
	long long deadline = mono_ms() + 30000;
	while (count(&f, q) == 0 && mono_ms() < deadline) {
		struct timespec d = {0, 20000000};
		nanosleep(&d, NULL);
	}
	snprintf(q, sizeof q, "SELECT count(*) FROM %%s.results WHERE message_id = %lld AND status = 'sent'", mid);
	long sent = count(&f, q);
	ck_assert_int_eq(stop_pid(worker), 0);
	ck_assert_int_eq(stop_pid(sched), 0);
	close(sched_out);
	capture_stop(&cap);
	char *logs = NULL;
	th_sh(&logs, "cat '%s/worker.log' '%s/scheduler.log'", dir, dir);
	ck_assert_msg(sent == 1, "message %lld not sent; logs:\n%s", mid, logs ? logs : "");
	hr_free(logs);
	json_t *got = json_loads(cap.got, 0, NULL);
	ck_assert_msg(got, "the provider got no JSON: %s", cap.got);
	ck_assert_str_eq(jstr(got, "text"), "Order A-7: [1][2]");
	ck_assert_str_eq(jstr(got, "to"), "+14155550101");
	json_decref(got);
	th_sh(NULL, "rm -rf '%s'", dir);
	hr_free(dir);
	fx_close(&f);
}
END_TEST

Suite *templates_suite(void);
Suite *templates_suite(void)
{
	Suite *s = suite_create("templates");
	TCase *tc = th_tcase("http");
	tcase_set_timeout(tc, 120);
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, templates_create_version_get_list);
	tcase_add_test(tc, templates_invalid_are_422_and_write_nothing);
	tcase_add_test(tc, another_tenants_template_ids_are_404);
	tcase_add_test(tc, snippets_crud_and_the_snapshot_in_each_version);
	tcase_add_test(tc, preview_renders_with_data_or_a_contact);
	tcase_add_test(tc, test_sends_enqueue_and_messages_use_saved_templates);
	tcase_add_test(tc, test_send_renders_snippets_in_the_worker);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(templates_suite());
}
