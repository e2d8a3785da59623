/*
 * psim.c -- see psim.h.
 */
#include "psim.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_DEADLINE_MS 20000
#define STOP_DEADLINE_MS 15000
#define MAX_LIVE 8

static psim *live[MAX_LIVE];
static bool atexit_set;
static CURL *curl;

long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *dir)
{
	if (dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void forget(psim *p)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live[i] == p)
			live[i] = NULL;
}

/* atexit: whatever a failed test left running. */
static void reap_all(void)
{
	for (int i = 0; i < MAX_LIVE; i++) {
		psim *p = live[i];
		if (!p || p->owner != getpid())
			continue; /* inherited through fork: not ours */
		if (p->pid > 0) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, NULL, 0);
			p->pid = 0;
		}
		rm_tree(p->dir);
		live[i] = NULL;
	}
	if (curl) {
		curl_easy_cleanup(curl);
		curl = NULL;
	}
}

char *psim_root_new(void)
{
	const char *tmp = getenv("TMPDIR");
	/* Runs outside a check test too (main): no ck_assert here. */
	char *root = malloc(256);
	if (!root)
		abort();
	snprintf(root, 256, "%s/provsim-tests-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		fprintf(stderr, "mkdtemp %s: %s\n", root, strerror(errno));
		exit(1);
	}
	setenv("PSIM_ROOT", root, 1);
	return root;
}

void psim_root_remove(char *root)
{
	rm_tree(root);
	free(root);
}

void psim_start(psim *p, const char *const *args)
{
	memset(p, 0, sizeof *p);
	if (!atexit_set) {
		atexit(reap_all);
		atexit_set = true;
	}
	const char *root = getenv("PSIM_ROOT");
	if (!root || !*root)
		root = getenv("TMPDIR");
	snprintf(p->dir, sizeof p->dir, "%s/provsim-test-XXXXXX", root && *root ? root : "/tmp");
	ck_assert_msg(mkdtemp(p->dir), "mkdtemp: %s", strerror(errno));
	snprintf(p->receipts, sizeof p->receipts, "%s/receipts.txt", p->dir);
	snprintf(p->errlog, sizeof p->errlog, "%s/stderr.log", p->dir);
	p->owner = getpid();
	int slot = -1;
	for (int i = 0; i < MAX_LIVE && slot < 0; i++)
		if (!live[i])
			slot = i;
	ck_assert_msg(slot >= 0, "too many simulators in one test");
	live[slot] = p;

	const char *argv[64] = {PROVSIM_BIN, "--port", "0", "--receipts", p->receipts};
	int argc = 5;
	for (size_t i = 0; args && args[i]; i++) {
		ck_assert_int_lt(argc, 62);
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;

	int out[2];
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	pid_t parent = getpid();
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127); /* the test died before prctl took effect */
		int err = open(p->errlog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (err < 0 || dup2(out[1], 1) < 0 || dup2(err, 2) < 0 || chdir(p->dir) != 0)
			_exit(127);
		execv(PROVSIM_BIN, (char *const *)argv);
		_exit(127);
	}
	p->pid = pid;
	close(out[1]);

	char buf[256];
	size_t len = 0;
	long long deadline = mono_ms() + START_DEADLINE_MS;
	while (!memchr(buf, '\n', len)) {
		long long left = deadline - mono_ms();
		ck_assert_msg(left > 0, "provsim did not print its listening line in time");
		struct pollfd pfd = {.fd = out[0], .events = POLLIN};
		int n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_int_ge(n, 0);
		if (n == 0)
			continue;
		ssize_t r = read(out[0], buf + len, sizeof buf - 1 - len);
		ck_assert_msg(r > 0, "provsim exited before listening (see %s)", p->errlog);
		len += (size_t)r;
		ck_assert_int_lt(len, sizeof buf - 1);
		buf[len] = '\0';
	}
	close(out[0]);
	ck_assert_msg(sscanf(buf, "listening port=%d\n", &p->port) == 1 && p->port > 0,
		      "unexpected first line: %s", buf);
	ck_assert_msg(strchr(buf, '\n') == buf + len - 1, "more than one line on stdout: %s", buf);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	char *s = NULL;
	size_t cap = 0;
	ssize_t n = getdelim(&s, &cap, '\0', f);
	fclose(f);
	if (n < 0) {
		free(s);
		return strdup("");
	}
	return s;
}

static int stop(psim *p, int sig, bool check, bool keep);

int psim_stop_sig(psim *p, int sig, bool check)
{
	return stop(p, sig, check, false);
}

void psim_stop_keep(psim *p)
{
	(void)stop(p, SIGTERM, true, true);
}

void psim_cleanup(psim *p)
{
	rm_tree(p->dir);
	forget(p);
}

static int stop(psim *p, int sig, bool check, bool keep)
{
	ck_assert_int_gt(p->pid, 0);
	ck_assert_int_eq(kill(p->pid, sig), 0);
	int status = 0;
	long long deadline = mono_ms() + STOP_DEADLINE_MS;
	/* A pidfd becomes readable when the process exits: wait on it with
	 * the deadline instead of sleeping. */
	int pfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	pid_t w;
	while ((w = waitpid(p->pid, &status, WNOHANG)) == 0 && mono_ms() < deadline) {
		struct pollfd pf = {.fd = pfd, .events = POLLIN};
		poll(&pf, pfd >= 0 ? 1 : 0, pfd >= 0 ? (int)(deadline - mono_ms()) : 5);
	}
	if (pfd >= 0)
		close(pfd);
	if (w == 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, &status, 0);
	}
	p->pid = 0;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	char *log = slurp(p->errlog);
	if (check) {
		ck_assert_msg(w != 0, "provsim did not exit within %d ms of signal %d",
			      STOP_DEADLINE_MS, sig);
		ck_assert_msg(code == 0, "provsim exit status %d, stderr:\n%s", code, log);
		const char *bad[] = {" warn: ", " fatal: ", " panic: ", "Sanitizer", "runtime error"};
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
			ck_assert_msg(!strstr(log, bad[i]), "provsim stderr has '%s':\n%s", bad[i],
				      log);
	}
	free(log);
	if (!keep)
		psim_cleanup(p);
	return code;
}

static size_t on_body(char *ptr, size_t sz, size_t n, void *arg)
{
	presp *r = arg;
	size_t take = sz * n;
	if (take > sizeof r->body - 1 - r->len)
		take = sizeof r->body - 1 - r->len;
	memcpy(r->body + r->len, ptr, take);
	r->len += take;
	r->body[r->len] = '\0';
	return sz * n;
}

static size_t on_header(char *ptr, size_t sz, size_t n, void *arg)
{
	presp *r = arg;
	size_t len = sz * n;
	if (len > 13 && strncasecmp(ptr, "Retry-After:", 12) == 0) {
		const char *v = ptr + 12;
		while (*v == ' ')
			v++;
		size_t vl = len - (size_t)(v - ptr);
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
			vl--;
		snprintf(r->retry_after, sizeof r->retry_after, "%.*s", (int)vl, v);
	}
	return len;
}

void psim_http(psim *p, const char *method, const char *path, const char *body,
	       const char *const *headers, long timeout_ms, presp *out)
{
	memset(out, 0, sizeof *out);
	if (!curl)
		curl = curl_easy_init();
	ck_assert_ptr_nonnull(curl);
	char url[512];
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", p->port, path);
	struct curl_slist *h = NULL;
	for (size_t i = 0; headers && headers[i]; i++)
		h = curl_slist_append(h, headers[i]);
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 10000L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, out);
	out->rc = curl_easy_perform(curl);
	if (out->rc == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
	curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &out->secs);
	curl_slist_free_all(h);
}

long psim_send(psim *p, const char *channel, const char *account, const char *tenant,
	       const char *to, const char *msg_id, presp *out)
{
	json_t *o = json_object();
	if (tenant)
		json_object_set_new(o, "tenant", json_string(tenant));
	if (to)
		json_object_set_new(o, "to", json_string(to));
	if (msg_id)
		json_object_set_new(o, "message_id", json_string(msg_id));
	json_object_set_new(o, "text", json_string("hello"));
	char *body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	char path[300];
	snprintf(path, sizeof path, "/v1/send/%s/%s", channel, account);
	psim_http(p, "POST", path, body, NULL, 0, out);
	free(body);
	return out->status;
}

json_t *psim_get_json(psim *p, const char *path)
{
	presp r;
	psim_http(p, "GET", path, NULL, NULL, 0, &r);
	ck_assert_msg(r.status == 200, "GET %s: got %ld, want 200 (%s)", path, r.status, curl_easy_strerror(r.rc));
	json_error_t e;
	json_t *j = json_loads(r.body, 0, &e);
	ck_assert_msg(j != NULL, "GET %s: bad JSON: %s", path, e.text);
	return j;
}

long long jpath(json_t *root, const char *path)
{
	char buf[256];
	snprintf(buf, sizeof buf, "%s", path);
	json_t *cur = root;
	for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur;
	     tok = strtok_r(NULL, ".", &save))
		cur = json_object_get(cur, tok);
	return json_is_integer(cur) ? (long long)json_integer_value(cur) : -1;
}

char **psim_receipts(psim *p, size_t *n)
{
	char *all = slurp(p->receipts);
	char *last_nl = strrchr(all, '\n');
	/* A line still being written is not a line yet. */
	if (last_nl)
		last_nl[1] = '\0';
	else
		all[0] = '\0';
	size_t cap = 16, cnt = 0;
	char **lines = malloc(cap * sizeof *lines);
	for (char *save = NULL, *l = strtok_r(all, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (cnt == cap)
			lines = realloc(lines, (cap *= 2) * sizeof *lines);
		lines[cnt++] = strdup(l);
	}
	free(all);
	*n = cnt;
	return lines;
}

void psim_lines_free(char **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}
