/*
 * apitest.c -- see apitest.h.
 */
#include "apitest.h"

#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"
#include "providers.h"

srv the_srv;
const char *extra_header;
char *the_dsn;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void srv_start(srv *s, const char *dsn, const char *extra_env)
{
	static int n;
	char *dir = th_tmpdir("api");
	snprintf(s->log, sizeof s->log, "%s/api-%d.log", dir, ++n);
	hr_free(dir);
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t parent = getpid();
	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(fd, 2);
		close(fd);
		setenv("HERALD_DATABASE_URL", dsn, 1);
		setenv("HERALD_MASTER_KEY", MASTER_HEX, 1);
		setenv("HERALD_API_PORT", "0", 1);
		setenv("HERALD_API_THREADS", "2", 1);
		if (extra_env) {
			char *copy = strdup(extra_env), *save = NULL;
			for (char *kv = strtok_r(copy, " ", &save); kv; kv = strtok_r(NULL, " ", &save))
				putenv(kv);
		}
		execl(API_PATH, "herald-api", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	s->port = 0;
	long long deadline = now_ms() + 20000;
	char buf[512];
	size_t len = 0;
	while (!s->port && now_ms() < deadline) {
		struct pollfd pfd = {fds[0], POLLIN, 0};
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		ssize_t k = read(fds[0], buf + len, sizeof buf - 1 - len);
		if (k <= 0)
			break;
		len += (size_t)k;
		buf[len] = '\0';
		sscanf(buf, "listening port=%d", &s->port);
	}
	close(fds[0]);
	if (!s->port) {
		char *log = NULL;
		th_sh(&log, "cat '%s'", s->log);
		kill(s->pid, SIGKILL);
		ck_abort_msg("herald-api did not start: %s", log);
	}
}

int srv_stop(srv *s)
{
	if (s->pid <= 0)
		return -1;
	kill(s->pid, SIGTERM);
	int st = 0;
	long long deadline = now_ms() + 20000;
	while (waitpid(s->pid, &st, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &st, 0);
			break;
		}
		struct timespec d = {0, 10000000};
		nanosleep(&d, NULL);
	}
	s->pid = 0;
	char *out = NULL;
	th_sh(&out, "grep -E 'AddressSanitizer|LeakSanitizer|runtime error| warn: | panic: ' '%s'", s->log);
	bool clean = out == NULL || out[0] == '\0';
	if (!clean)
		fprintf(stderr, "herald-api log (%s):\n%s\n", s->log, out);
	hr_free(out);
	int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return clean ? rc : 99;
}

void api_suite_setup(void)
{
	hr_err err = {0};
	the_dsn = th_fresh_db();
	hr_migrate_report rep;
	if (!hr_migrate_all(the_dsn, th_migrations(), 2, true, &rep, &err))
		ck_abort_msg("migrate: %s", err.msg);
	srv_start(&the_srv, the_dsn, NULL);
}

void api_suite_teardown(void)
{
	int rc = srv_stop(&the_srv);
	if (rc != 0) {
		fprintf(stderr, "herald-api exited %d (see above)\n", rc);
		exit(1);
	}
}

void fx_open(fx *f)
{
	memset(f, 0, sizeof *f);
	hr_err err = {0};
	ck_assert_msg(hr_db_connect(the_dsn, &f->c, &err), "%s", err.msg);
	char tenant[48], id[HR_KEY_ID_LEN + 1];
	th_slug("ag", f->agency, sizeof f->agency);
	th_slug("tn", tenant, sizeof tenant);
	ck_assert_msg(hr_agency_create(f->c, f->agency, NULL, NULL, &err), "%s", err.msg);
	ck_assert_msg(hr_tenant_create(f->c, th_migrations(), f->agency, tenant, NULL, &f->t, &err), "%s", err.msg);
	ck_assert(hr_apikey_create(f->c, f->agency, NULL, "agency", "t", f->agency_key, id, &err));
	ck_assert(hr_apikey_create(f->c, f->agency, tenant, "full", "t", f->full, id, &err));
	ck_assert(hr_apikey_create(f->c, f->agency, tenant, "send", "t", f->send, id, &err));
	ck_assert(hr_apikey_create(f->c, f->agency, tenant, "read", "t", f->read, id, &err));
}

void fx_close(fx *f)
{
	PQfinish(f->c);
}

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

static void header_value(const char *line, size_t n, const char *name, char *out, size_t outlen)
{
	size_t k = strlen(name);
	if (n > k + 1 && strncasecmp(line, name, k) == 0 && line[k] == ':') {
		const char *v = line + k + 1;
		while (*v == ' ')
			v++;
		size_t len = n - (size_t)(v - line);
		while (len && (v[len - 1] == '\r' || v[len - 1] == '\n'))
			len--;
		snprintf(out, outlen, "%.*s", (int)len, v);
	}
}

static size_t on_header(char *d, size_t sz, size_t nm, void *u)
{
	resp *r = u;
	size_t n = sz * nm;
	header_value(d, n, "Content-Type", r->ctype, sizeof r->ctype);
	header_value(d, n, "Retry-After", r->retry_after, sizeof r->retry_after);
	header_value(d, n, "Location", r->location, sizeof r->location);
	header_value(d, n, "Allow", r->allow, sizeof r->allow);
	return n;
}

resp *call_at(int port, const char *method, const char *path, const char *key, const char *tenant,
	      const char *body, long body_len)
{
	resp *r = hr_calloc(1, sizeof *r);
	buf b = {0};
	CURL *h = curl_easy_init();
	char url[2048];
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port > 0 ? port : the_srv.port, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	struct curl_slist *hd = NULL;
	char line[256];
	if (key) {
		snprintf(line, sizeof line, "Authorization: Bearer %s", key);
		hd = curl_slist_append(hd, line);
	}
	if (tenant) {
		snprintf(line, sizeof line, "Herald-Tenant: %s", tenant);
		hd = curl_slist_append(hd, line);
	}
	if (extra_header)
		hd = curl_slist_append(hd, extra_header);
	if (body) {
		hd = curl_slist_append(hd, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body_len < 0 ? (long)strlen(body) : body_len));
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	CURLcode rc = curl_easy_perform(h);
	ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hd);
	curl_easy_cleanup(h);
	r->body = b.p ? b.p : hr_strdup("");
	r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	return r;
}

resp *call(const char *method, const char *path, const char *key, const char *tenant, const char *body)
{
	return call_at(0, method, path, key, tenant, body, -1);
}

void resp_free(resp *r)
{
	if (!r)
		return;
	json_decref(r->json);
	hr_free(r->body);
	hr_free(r);
}

void expect_problem(resp *r, long status, const char *pointer)
{
	ck_assert_msg(r->status == status, "status: got %ld, want %ld; body %s", r->status, status, r->body);
	ck_assert_msg(strcmp(r->ctype, "application/problem+json") == 0, "content type: got '%s'", r->ctype);
	ck_assert_msg(r->json && json_integer_value(json_object_get(r->json, "status")) == status &&
			      json_is_string(json_object_get(r->json, "type")) &&
			      json_is_string(json_object_get(r->json, "title")) &&
			      json_is_string(json_object_get(r->json, "detail")),
		      "not a problem document: %s", r->body);
	if (!pointer)
		return;
	json_t *errors = json_object_get(r->json, "errors"), *e;
	size_t i;
	json_array_foreach(errors, i, e) {
		const char *p = json_string_value(json_object_get(e, "pointer"));
		if (!p)
			p = json_string_value(json_object_get(e, "parameter"));
		if (p && strcmp(p, pointer) == 0)
			return;
	}
	ck_abort_msg("no error with pointer '%s' in %s", pointer, r->body);
}

long count(fx *f, const char *fmt)
{
	char sql[1024];
	snprintf(sql, sizeof sql, fmt, f->t.schema, f->t.schema, f->t.schema);
	PGresult *r = PQexec(f->c, sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(f->c));
	long n = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

typedef struct at_once_job {
	int port, i;
	const char *method, *path, *key, *body_fmt;
	pthread_barrier_t *go;
	resp *r;
} at_once_job;

static void *at_once_run(void *p)
{
	at_once_job *j = p;
	char body[512];
	if (j->body_fmt)
		snprintf(body, sizeof body, j->body_fmt, j->i);
	pthread_barrier_wait(j->go);
	j->r = call_at(j->port, j->method, j->path, j->key, NULL, j->body_fmt ? body : NULL, -1);
	return NULL;
}

resp **call_at_once(int port, int n, const char *method, const char *path, const char *key, const char *body_fmt)
{
	at_once_job *j = hr_calloc((size_t)n, sizeof *j);
	pthread_t *t = hr_calloc((size_t)n, sizeof *t);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, (unsigned)n);
	curl_global_init(CURL_GLOBAL_ALL); /* before the threads: curl_easy_init would do it racily */
	for (int i = 0; i < n; i++) {
		j[i] = (at_once_job){.port = port, .i = i, .method = method, .path = path, .key = key,
				     .body_fmt = body_fmt, .go = &go};
		ck_assert_int_eq(pthread_create(&t[i], NULL, at_once_run, &j[i]), 0);
	}
	resp **out = hr_calloc((size_t)n, sizeof *out);
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		out[i] = j[i].r;
	}
	pthread_barrier_destroy(&go);
	curl_global_cleanup();
	hr_free(t);
	hr_free(j);
	return out;
}

void resps_free(resp **r, int n)
{
	for (int i = 0; i < n; i++)
		resp_free(r[i]);
	hr_free(r);
}

void fx_provider(fx *f, const char *name, const char *channel)
{
	uint8_t key[32];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	hr_provider_spec p = {.name = name, .channel = channel, .transport = "sink", .config = "{}"};
	ck_assert_msg(hr_provider_put(f->c, key, f->t.slug, &p, &err), "%s", err.msg);
}
