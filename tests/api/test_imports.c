/*
 * test_imports.c -- bulk contact import over HTTP (POST /v1/imports, GET
 * /v1/imports[/{id}]) against the real herald-api and PostgreSQL: NDJSON and
 * CSV with good and bad rows (line numbers, fields, good rows kept,
 * duplicates merged, normalised exactly as PUT /v1/contacts), progress seen
 * from another connection while the body streams, a client that goes away,
 * size and media-type limits, keys, and another tenant's ids.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "alloc.h"
#include "apitest.h"
#include "db.h"
#include "harness.h"

static long long ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long jint(json_t *o, const char *name)
{
	return (long long)json_integer_value(json_object_get(o, name));
}

static void set_country(fx *f, const char *cc)
{
	char sql[256];
	snprintf(sql, sizeof sql, "UPDATE herald.tenants SET settings = '{\"default_country_code\": \"%s\"}' WHERE id = %lld",
		 cc, (long long)f->t.id);
	PGresult *r = PQexec(f->c, sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(f->c));
	PQclear(r);
}

/* A text value from SQL (%s = the tenant schema); "" for NULL / no row. */
static char *sql_text(fx *f, const char *fmt)
{
	char sql[1024];
	snprintf(sql, sizeof sql, fmt, f->t.schema, f->t.schema);
	PGresult *r = PQexec(f->c, sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(f->c));
	char *s = hr_strdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return s;
}

/* ---- HTTP: libcurl for whole bodies, a raw socket for bodies sent in pieces ---- */

typedef struct buf {
	char *p;
	size_t n;
} buf;

static size_t on_body(char *d, size_t sz, size_t nm, void *u)
{
	buf *b = u;
	b->p = hr_realloc(b->p, b->n + sz * nm + 1);
	memcpy(b->p + b->n, d, sz * nm);
	b->n += sz * nm;
	b->p[b->n] = '\0';
	return sz * nm;
}

typedef struct upl {
	const char *p;
	size_t n, off;
} upl;

static size_t on_read(char *d, size_t sz, size_t nm, void *u)
{
	upl *s = u;
	size_t k = s->n - s->off < sz * nm ? s->n - s->off : sz * nm;
	if (k > 7000)
		k = 7000; /* many small pieces: records cross the pieces' edges */
	memcpy(d, s->p + s->off, k);
	s->off += k;
	return k;
}

/* POST /v1/imports; ctype NULL = none; chunked = no Content-Length. */
static resp *post_import(int port, const char *key, const char *ctype, const char *body, size_t len, bool chunked)
{
	resp *r = hr_calloc(1, sizeof *r);
	buf b = {0};
	upl u = {body, len, 0};
	CURL *h = curl_easy_init();
	char url[128], line[256];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/imports", port > 0 ? port : the_srv.port);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(h, CURLOPT_READDATA, &u);
	if (!chunked)
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	struct curl_slist *hd = NULL;
	if (key) {
		snprintf(line, sizeof line, "Authorization: Bearer %s", key);
		hd = curl_slist_append(hd, line);
	}
	snprintf(line, sizeof line, "Content-Type: %s", ctype ? ctype : "");
	hd = curl_slist_append(hd, ctype ? line : "Content-Type:");
	hd = curl_slist_append(hd, "Expect:");
	if (extra_header)
		hd = curl_slist_append(hd, extra_header);
	if (chunked)
		hd = curl_slist_append(hd, "Transfer-Encoding: chunked");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	CURLcode rc = curl_easy_perform(h);
	ck_assert_msg(rc == CURLE_OK, "POST /v1/imports: %s", curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	char *ct = NULL;
	curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(r->ctype, sizeof r->ctype, "%s", ct ? ct : "");
	curl_slist_free_all(hd);
	curl_easy_cleanup(h);
	r->body = b.p ? b.p : hr_strdup("");
	r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	return r;
}

static resp *import_ok(fx *f, const char *ctype, const char *body)
{
	resp *r = post_import(0, f->full, ctype, body, strlen(body), false);
	ck_assert_msg(r->status == 201, "import: got %ld %s", r->status, r->body);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "succeeded");
	return r;
}

static int raw_open(int port, const char *key, const char *ctype, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	char head[512];
	int n = snprintf(head, sizeof head,
			 "POST /v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
			 "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 key, ctype, len);
	ck_assert_int_eq(write(fd, head, (size_t)n), n);
	return fd;
}

static void raw_send(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		ck_assert_int_gt(k, 0);
		p += k;
		n -= (size_t)k;
	}
}

/* The response's status; *body its body (heap). */
static long raw_response(int fd, char **body)
{
	buf b = {0};
	char chunk[4096];
	ssize_t k;
	while ((k = read(fd, chunk, sizeof chunk)) > 0)
		on_body(chunk, 1, (size_t)k, &b);
	close(fd);
	ck_assert_ptr_nonnull(b.p);
	long status = 0;
	sscanf(b.p, "HTTP/1.1 %ld", &status);
	char *sep = strstr(b.p, "\r\n\r\n");
	*body = hr_strdup(sep ? sep + 4 : "");
	hr_free(b.p);
	return status;
}

/* The newest import of f's tenant (GET /v1/imports?limit=1), as JSON (caller decrefs). */
static json_t *newest_import(fx *f)
{
	resp *r = call("GET", "/v1/imports?limit=1", f->full, NULL, NULL);
	ck_assert_msg(r->status == 200, "%ld %s", r->status, r->body);
	json_t *j = json_incref(json_array_get(json_object_get(r->json, "data"), 0));
	resp_free(r);
	return j;
}

/* errors[] of a summary holds {line, field} (detail containing want, if given). */
static void expect_row_error(json_t *summary, long long line, const char *field, const char *want)
{
	json_t *e;
	size_t i;
	json_array_foreach(json_object_get(summary, "errors"), i, e) {
		if (jint(e, "line") != line || strcmp(json_string_value(json_object_get(e, "field")), field) != 0)
			continue;
		const char *d = json_string_value(json_object_get(e, "detail"));
		ck_assert_msg(!want || strstr(d, want), "line %lld: detail '%s' lacks '%s'", line, d, want);
		return;
	}
	char *dump = json_dumps(summary, JSON_COMPACT);
	ck_abort_msg("no error for line %lld field '%s' in %s", line, field, dump);
}

static size_t nerrors(json_t *summary)
{
	return json_array_size(json_object_get(summary, "errors"));
}

/* ---- NDJSON ---- */

START_TEST(ndjson_good_rows_kept_bad_rows_reported_by_line)
{
	fx f;
	fx_open(&f);
	set_country(&f, "44");
	const char *body =
		"{\"external_id\":\"n1\",\"email\":\" Ann@Example.COM \",\"phone\":\"020 7946 0018\","
		"\"attributes\":{\"tier\":\"gold\"},\"time_zone\":\"Europe/London\",\"locale\":\"en-GB\"}\n" /* 1 */
		"{\"email\":\"not-an-email\"}\n"                                                         /* 2 */
		"{\"external_id\":\"n3\",\"phone\":\"12\"}\r\n"                                           /* 3 */
		"\n"                                                                                      /* 4 */
		"{\"external_id\":\"n5\",\n"                                                              /* 5 */
		"{\"external_id\":\"n6\",\"bogus\":true}\n"                                               /* 6 */
		"{\"external_id\":\"n7\xff\"}\n"                                                          /* 7 */
		"[1,2]\n"                                                                                 /* 8 */
		"{\"external_id\":\"n9\",\"phone\":\"+44 20 7946 0018\",\"attributes\":{\"city\":\"London\"}}\n" /* 9 */
		"{\"email\":\"ann@example.com\",\"locale\":\"fr-FR\"}\n"                                  /* 10 */
		"{\"external_id\":\"n11\",\"email\":\"bob@example.com\",\"time_zone\":\"Mars/Base\"}\n"    /* 11 */
		"{\"external_id\":\"n12\",\"email\":\"carol@example.com\",\"attributes\":{\"q\":\"it's; DROP TABLE contacts;--\"}}"; /* 12, no newline */
	resp *r = import_ok(&f, "application/x-ndjson", body);
	ck_assert_ptr_nonnull(strstr(r->ctype, "application/json"));
	ck_assert_int_eq(jint(r->json, "rows_read"), 11);
	ck_assert_int_eq(jint(r->json, "rejected"), 7);
	ck_assert_int_eq(jint(r->json, "imported"), 4);
	ck_assert_int_eq(jint(r->json, "created"), 2);
	ck_assert_int_eq(jint(r->json, "updated"), 2);
	ck_assert_int_eq(jint(r->json, "merged"), 0);
	ck_assert_uint_eq(nerrors(r->json), 7);
	expect_row_error(r->json, 2, "email", "@");
	expect_row_error(r->json, 3, "phone", NULL);
	expect_row_error(r->json, 5, "", "malformed JSON");
	expect_row_error(r->json, 6, "bogus", NULL);
	expect_row_error(r->json, 7, "", "malformed JSON");
	expect_row_error(r->json, 8, "", "JSON object");
	expect_row_error(r->json, 11, "time_zone", NULL);
	/* Lines 1, 9 and 10 are one person (same phone, same email): one contact. */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 2);
	char *one = sql_text(&f, "SELECT concat_ws('|', external_id, email, phone, attributes::text, time_zone, locale) "
				 "FROM %s.contacts WHERE phone = '+442079460018'");
	ck_assert_str_eq(one, "n9|ann@example.com|+442079460018|{\"city\": \"London\", \"tier\": \"gold\"}|Europe/London|fr-FR");
	hr_free(one);
	char *q = sql_text(&f, "SELECT attributes->>'q' FROM %s.contacts WHERE external_id = 'n12'");
	ck_assert_str_eq(q, "it's; DROP TABLE contacts;--");
	hr_free(q);

	/* The same good rows through PUT /v1/contacts, on another tenant, give the same contacts. */
	fx g;
	fx_open(&g);
	set_country(&g, "44");
	static const char *const puts[] = {
		"{\"external_id\":\"n1\",\"email\":\" Ann@Example.COM \",\"phone\":\"020 7946 0018\","
		"\"attributes\":{\"tier\":\"gold\"},\"time_zone\":\"Europe/London\",\"locale\":\"en-GB\"}",
		"{\"external_id\":\"n9\",\"phone\":\"+44 20 7946 0018\",\"attributes\":{\"city\":\"London\"}}",
		"{\"email\":\"ann@example.com\",\"locale\":\"fr-FR\"}",
		"{\"external_id\":\"n12\",\"email\":\"carol@example.com\",\"attributes\":{\"q\":\"it's; DROP TABLE contacts;--\"}}"};
	for (size_t i = 0; i < 4; i++) {
		resp *p = call("PUT", "/v1/contacts", g.full, NULL, puts[i]);
		ck_assert_msg(p->status == 200 || p->status == 201, "%ld %s", p->status, p->body);
		resp_free(p);
	}
	const char *cmp = "SELECT string_agg(concat_ws('|', external_id, email, phone, attributes::text, time_zone, "
			  "locale, merged_into IS NULL), ';' ORDER BY external_id) FROM %s.contacts";
	char *a = sql_text(&f, cmp), *b = sql_text(&g, cmp);
	ck_assert_str_eq(a, b);
	hr_free(a);
	hr_free(b);

	/* GET shows the same summary. */
	char path[64];
	snprintf(path, sizeof path, "/v1/imports/%lld", jint(r->json, "id"));
	resp *got = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(got->status, 200);
	ck_assert_int_eq(jint(got->json, "rejected"), 7);
	ck_assert_str_eq(json_string_value(json_object_get(got->json, "format")), "ndjson");
	ck_assert_ptr_nonnull(json_object_get(got->json, "finished_at"));
	resp_free(got);
	resp_free(r);
	fx_close(&g);
	fx_close(&f);
}
END_TEST

START_TEST(import_merges_contacts_it_names_together_as_put_does)
{
	fx f;
	fx_open(&f);
	resp *a = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\":\"m1\",\"email\":\"m@x.io\",\"attributes\":{\"a\":1}}");
	resp *b = call("PUT", "/v1/contacts", f.full, NULL, "{\"phone\":\"+442079460055\",\"attributes\":{\"b\":2}}");
	ck_assert_int_eq(a->status, 201);
	ck_assert_int_eq(b->status, 201);
	resp *c = call("PUT", "/v1/contacts", f.full, NULL, "{\"external_id\":\"u1\",\"email\":\"u1@x.io\"}");
	ck_assert_int_eq(c->status, 201);
	long long ida = jint(a->json, "id"), idb = jint(b->json, "id");
	resp_free(a);
	resp_free(b);
	resp_free(c);
	/* line 2 names both: B is merged into A (the older); line 3 names A's email again; line 4
	 * names C alone (the set-based UPDATE), line 5 is new (the set-based INSERT) */
	resp *r = import_ok(&f, "application/x-ndjson; charset=utf-8",
			    "{\"external_id\":\"other\",\"email\":\"o@x.io\"}\n"
			    "{\"email\":\"M@X.IO\",\"phone\":\"+44 20 7946 0055\"}\n"
			    "{\"email\":\"m@x.io\",\"attributes\":{\"c\":3}}\n"
			    "{\"external_id\":\"u1\",\"locale\":\"en-GB\",\"attributes\":{\"x\":1}}\n"
			    "{\"external_id\":\"new5\"}\n");
	ck_assert_int_eq(jint(r->json, "merged"), 1);
	ck_assert_int_eq(jint(r->json, "created"), 2);
	ck_assert_int_eq(jint(r->json, "updated"), 3);
	char *u1 = sql_text(&f, "SELECT concat_ws('|', email, locale, attributes::text) FROM %s.contacts "
				"WHERE external_id = 'u1'");
	ck_assert_str_eq(u1, "u1@x.io|en-GB|{\"x\": 1}");
	hr_free(u1);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts WHERE external_id IN ('other', 'new5')"), 2);
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT merged_into FROM %%s.contacts WHERE id = %lld", idb);
	char *into = sql_text(&f, sql);
	ck_assert_int_eq(atoll(into), ida);
	hr_free(into);
	snprintf(sql, sizeof sql, "SELECT concat_ws('|', email, phone, attributes::text) FROM %%s.contacts WHERE id = %lld",
		 ida);
	char *s = sql_text(&f, sql);
	ck_assert_str_eq(s, "m@x.io|+442079460055|{\"a\": 1, \"b\": 2, \"c\": 3}");
	hr_free(s);
	resp_free(r);
	fx_close(&f);
}
END_TEST

/* ---- CSV ---- */

START_TEST(csv_good_rows_kept_bad_rows_reported_by_line)
{
	fx f;
	fx_open(&f);
	set_country(&f, "44");
	const char *body = "\xef\xbb\xbf" "external_id,email,phone,city,attributes\r\n"       /* 1 */
			   "c1,C1@Example.com,020 7946 0011,Paris,\"{\"\"vip\"\":true}\"\r\n"  /* 2 */
			   "c2,bad\"quote,,x,\n"                                              /* 3 */
			   "c3,,020 7946 0013,\"Multi\nline, \"\"quoted\"\" city\",\n"         /* 4-5 */
			   "c4,c4@example.com,,a,b,c\n"                                       /* 6 */
			   "c5,\xff@x.com,,,\n"                                               /* 7 */
			   "c6,c6@example.com,,,[1]\n"                                        /* 8 */
			   "c7,,12,,\n"                                                       /* 9 */
			   "\n"                                                               /* 10 */
			   ",c1@example.com,,Rome,\n"                                         /* 11 */
			   "c8,\"x\"y,,,\n"                                                   /* 12 */
			   "c9,c9@example.com,,,,\n"                                          /* 13 */
			   "c10,c10@example.com,,\"never closed,\n";                           /* 14 */
	resp *r = import_ok(&f, "text/csv; charset=UTF-8", body);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "format")), "csv");
	ck_assert_int_eq(jint(r->json, "rows_read"), 11);
	ck_assert_int_eq(jint(r->json, "imported"), 3);
	ck_assert_int_eq(jint(r->json, "created"), 2);
	ck_assert_int_eq(jint(r->json, "updated"), 1);
	ck_assert_int_eq(jint(r->json, "rejected"), 8);
	ck_assert_uint_eq(nerrors(r->json), 8);
	expect_row_error(r->json, 3, "", "quote");
	expect_row_error(r->json, 6, "", "has 6 fields; the header has 5");
	expect_row_error(r->json, 7, "", "UTF-8");
	expect_row_error(r->json, 8, "attributes", "JSON object");
	expect_row_error(r->json, 9, "phone", NULL);
	expect_row_error(r->json, 12, "", "closing quote");
	expect_row_error(r->json, 13, "", "has 6 fields");
	expect_row_error(r->json, 14, "", "never closed");
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 2);
	char *c1 = sql_text(&f, "SELECT concat_ws('|', external_id, email, phone, attributes::text) FROM %s.contacts "
				"WHERE external_id = 'c1'");
	ck_assert_str_eq(c1, "c1|c1@example.com|+442079460011|{\"vip\": true, \"city\": \"Rome\"}");
	hr_free(c1);
	char *c3 = sql_text(&f, "SELECT attributes->>'city' FROM %s.contacts WHERE external_id = 'c3'");
	ck_assert_str_eq(c3, "Multi\nline, \"quoted\" city");
	hr_free(c3);
	resp_free(r);

	/* A bad header imports nothing: 422 naming the line, the job failed. */
	static const char *const headers[] = {"email,phone,email\nx@y.io,,\n", "email,,phone\nx@y.io,,\n",
					      "city,age\nParis,3\n", "\"email\nx@y.io\n", ""};
	for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
		r = post_import(0, f.full, "text/csv", headers[i], strlen(headers[i]), false);
		expect_problem(r, 422, NULL);
		ck_assert_msg(json_integer_value(json_object_get(r->json, "import_id")) > 0, "%s", r->body);
		resp_free(r);
		json_t *j = newest_import(&f);
		ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "failed");
		json_decref(j);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 2);
	fx_close(&f);
}
END_TEST

/* ---- streaming: progress, a client that leaves, size ---- */

static char *many_rows(int from, int to)
{
	size_t cap = (size_t)(to - from) * 80 + 1, len = 0;
	char *s = hr_malloc(cap);
	s[0] = '\0';
	for (int i = from; i < to; i++) {
		/* every 100th row repeats the email of the row before it: the same person */
		int e = i % 100 == 99 ? i - 1 : i;
		len += (size_t)snprintf(s + len, cap - len, "{\"external_id\":\"b%d\",\"email\":\"b%d@x.io\"}\n", i, e);
	}
	return s;
}

START_TEST(progress_is_visible_while_the_body_streams)
{
	fx f;
	fx_open(&f);
	char *first = many_rows(0, 12000), *rest = many_rows(12000, 15000);
	size_t n1 = strlen(first), n2 = strlen(rest);
	int fd = raw_open(the_srv.port, f.full, "application/x-ndjson", n1 + n2);
	raw_send(fd, first, n1);
	/* Two chunks are applied by now or soon: another connection sees the job running. */
	json_t *j = NULL;
	long long deadline = ms_now() + 20000;
	while (ms_now() < deadline) {
		json_decref(j);
		j = newest_import(&f);
		if (j && jint(j, "rows_read") >= 10000)
			break;
		usleep(20000);
	}
	ck_assert_msg(j && jint(j, "rows_read") >= 10000, "no progress seen");
	ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "running");
	ck_assert_int_ge(jint(j, "imported"), 9000);
	ck_assert_int_le(jint(j, "bytes"), (long long)n1);
	long long id = jint(j, "id");
	json_decref(j);
	/* ... but not the contacts: the import commits them all at once. */
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 0);
	raw_send(fd, rest, n2);
	char *body = NULL;
	long status = raw_response(fd, &body);
	ck_assert_msg(status == 201, "%ld %s", status, body);
	hr_free(body);
	char path[64];
	snprintf(path, sizeof path, "/v1/imports/%lld", id);
	resp *r = call("GET", path, f.full, NULL, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "succeeded");
	ck_assert_int_eq(jint(r->json, "rows_read"), 15000);
	ck_assert_int_eq(jint(r->json, "imported"), 15000);
	ck_assert_int_eq(jint(r->json, "created"), 15000 - 150);
	ck_assert_int_eq(jint(r->json, "updated"), 150);
	ck_assert_int_eq(jint(r->json, "bytes"), (long long)(n1 + n2));
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 15000 - 150);
	/* b99 and b98 are one contact: the later row's external id won, as PUT does. */
	char *s = sql_text(&f, "SELECT external_id FROM %s.contacts WHERE email = 'b98@x.io'");
	ck_assert_str_eq(s, "b99");
	hr_free(s);
	hr_free(first);
	hr_free(rest);
	fx_close(&f);
}
END_TEST

START_TEST(a_client_that_leaves_midway_imports_nothing)
{
	fx f;
	fx_open(&f);
	char *rows = many_rows(0, 8000);
	size_t n = strlen(rows);
	int fd = raw_open(the_srv.port, f.full, "application/x-ndjson", n * 2);
	raw_send(fd, rows, n);
	json_t *j = NULL;
	long long deadline = ms_now() + 20000;
	while (ms_now() < deadline) {
		json_decref(j);
		j = newest_import(&f);
		if (j && jint(j, "rows_read") >= 5000)
			break;
		usleep(20000);
	}
	ck_assert_msg(j && jint(j, "rows_read") >= 5000, "no progress seen");
	json_decref(j);
	j = NULL;
	close(fd);
	deadline = ms_now() + 20000;
	while (ms_now() < deadline) {
		json_decref(j);
		j = newest_import(&f);
		if (strcmp(json_string_value(json_object_get(j, "status")), "running") != 0)
			break;
		usleep(20000);
	}
	ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "failed");
	ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "failure")), "connection closed"));
	ck_assert_int_eq(jint(j, "imported"), 0);
	json_decref(j);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 0);
	hr_free(rows);
	fx_close(&f);
}
END_TEST

START_TEST(too_large_wrong_type_and_wrong_keys_are_refused)
{
	fx f;
	fx_open(&f);
	srv small;
	srv_start(&small, the_dsn, "HERALD_API_IMPORT_MAX_BODY=4096");
	char *rows = many_rows(0, 200); /* ~8 KB */
	size_t n = strlen(rows);
	/* Content-Length says too much: 413 before anything is read or written. */
	resp *r = post_import(small.port, f.full, "application/x-ndjson", rows, n, false);
	expect_problem(r, 413, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.imports"), 0);
	/* Chunked: found out midway; the job fails and nothing is imported. */
	r = post_import(small.port, f.full, "application/x-ndjson", rows, n, true);
	expect_problem(r, 413, NULL);
	ck_assert_ptr_nonnull(strstr(r->body, "api_import_max_body"));
	long long id = jint(r->json, "import_id");
	ck_assert_int_gt(id, 0);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts"), 0);
	char path[64];
	snprintf(path, sizeof path, "/v1/imports/%lld", id);
	r = call("GET", path, f.full, NULL, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "failed");
	ck_assert_int_eq(jint(r->json, "imported"), 0);
	resp_free(r);
	/* Within the limit the same server imports. */
	r = post_import(small.port, f.full, "application/x-ndjson", rows, 2000, false);
	ck_assert_msg(r->status == 201, "%ld %s", r->status, r->body);
	resp_free(r);
	long before = count(&f, "SELECT count(*) FROM %s.imports");
	ck_assert_int_eq(srv_stop(&small), 0);

	/* Media types: 415, no job. */
	static const char *const types[] = {"application/json", "text/plain", "text/csv; charset=latin1",
					    "application/x-ndjsonx", NULL};
	for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
		r = post_import(0, f.full, types[i], rows, 500, false);
		expect_problem(r, 415, NULL);
		resp_free(r);
	}
	/* Keys: none 401; read and send keys may not import (403). */
	r = post_import(0, NULL, "text/csv", "email\nx@y.io\n", 13, false);
	expect_problem(r, 401, NULL);
	resp_free(r);
	r = post_import(0, f.read, "text/csv", "email\nx@y.io\n", 13, false);
	expect_problem(r, 403, NULL);
	resp_free(r);
	r = post_import(0, f.send, "text/csv", "email\nx@y.io\n", 13, false);
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.imports"), before);
	/* An agency key acts for its tenant. */
	char line[128];
	snprintf(line, sizeof line, "Herald-Tenant: %s", f.t.slug);
	extra_header = line;
	r = post_import(0, f.agency_key, "text/csv", "email\nagency@y.io\n", 18, false);
	extra_header = NULL;
	ck_assert_msg(r->status == 201, "%ld %s", r->status, r->body);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.contacts WHERE email = 'agency@y.io'"), 1);
	hr_free(rows);
	resp_free(r);
	fx_close(&f);
}
END_TEST

START_TEST(another_tenants_import_is_404)
{
	fx f, g;
	fx_open(&f);
	fx_open(&g);
	resp *r = import_ok(&f, "text/csv", "email\nx@y.io\n");
	char path[64];
	snprintf(path, sizeof path, "/v1/imports/%lld", jint(r->json, "id"));
	resp_free(r);
	r = call("GET", path, g.full, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", path, g.agency_key, f.t.slug, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", "/v1/imports", g.full, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_uint_eq(json_array_size(json_object_get(r->json, "data")), 0);
	resp_free(r);
	static const char *const bad[] = {"/v1/imports/0", "/v1/imports/abc", "/v1/imports/1%27", "/v1/imports/-1",
					  "/v1/imports/99999999999"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		r = call("GET", bad[i], f.full, NULL, NULL);
		expect_problem(r, 404, NULL);
		resp_free(r);
	}
	r = call("GET", "/v1/imports?limit=0", f.full, NULL, NULL);
	expect_problem(r, 400, "limit");
	resp_free(r);
	r = call("GET", "/v1/imports?cursor=zz", f.full, NULL, NULL);
	expect_problem(r, 400, "cursor");
	resp_free(r);
	fx_close(&g);
	fx_close(&f);
}
END_TEST

START_TEST(imports_list_pages_newest_first)
{
	fx f;
	fx_open(&f);
	long long ids[3];
	for (int i = 0; i < 3; i++) {
		char body[64];
		snprintf(body, sizeof body, "email\np%d@y.io\n", i);
		resp *r = import_ok(&f, "text/csv", body);
		ids[i] = jint(r->json, "id");
		resp_free(r);
	}
	resp *r = call("GET", "/v1/imports?limit=2", f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	json_t *data = json_object_get(r->json, "data");
	ck_assert_uint_eq(json_array_size(data), 2);
	ck_assert_int_eq(jint(json_array_get(data, 0), "id"), ids[2]);
	ck_assert_int_eq(jint(json_array_get(data, 1), "id"), ids[1]);
	char path[160];
	snprintf(path, sizeof path, "/v1/imports?limit=2&cursor=%s",
		 json_string_value(json_object_get(r->json, "next_cursor")));
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	data = json_object_get(r->json, "data");
	ck_assert_uint_eq(json_array_size(data), 1);
	ck_assert_int_eq(jint(json_array_get(data, 0), "id"), ids[0]);
	ck_assert(json_is_null(json_object_get(r->json, "next_cursor")));
	resp_free(r);
	fx_close(&f);
}
END_TEST

Suite *imports_suite(void);
Suite *imports_suite(void)
{
	Suite *s = suite_create("imports");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, ndjson_good_rows_kept_bad_rows_reported_by_line);
	tcase_add_test(tc, import_merges_contacts_it_names_together_as_put_does);
	tcase_add_test(tc, csv_good_rows_kept_bad_rows_reported_by_line);
	tcase_add_test(tc, progress_is_visible_while_the_body_streams);
	tcase_add_test(tc, a_client_that_leaves_midway_imports_nothing);
	tcase_add_test(tc, too_large_wrong_type_and_wrong_keys_are_refused);
	tcase_add_test(tc, another_tenants_import_is_404);
	tcase_add_test(tc, imports_list_pages_newest_first);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(imports_suite());
}
