/*
 * wtest.c -- see wtest.h.
 */
#include "wtest.h"

#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#define START_DEADLINE_MS 20000
#define STOP_DEADLINE_MS 20000

long long wt_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

char *wt_root_new(void)
{
	const char *tmp = getenv("TMPDIR");
	char *root = malloc(256);
	if (!root)
		abort();
	snprintf(root, 256, "%s/herald-worker-tests-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		fprintf(stderr, "mkdtemp %s: %s\n", root, strerror(errno));
		exit(1);
	}
	chmod(root, 0711); /* smtp-sink runs as nobody and must reach its dump dir */
	setenv("WT_ROOT", root, 1);
	/* provsim's harness (tests/infra/psim.c) puts its dirs under PSIM_ROOT. */
	setenv("PSIM_ROOT", root, 1);
	return root;
}

void wt_root_remove(char *root)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(root);
}

void wt_dir(char *out, size_t len, const char *tag)
{
	const char *root = getenv("WT_ROOT");
	ck_assert_msg(root && *root, "WT_ROOT not set: call wt_root_new() in main");
	snprintf(out, len, "%s/%s-XXXXXX", root, tag);
	ck_assert_msg(mkdtemp(out), "mkdtemp: %s", strerror(errno));
	chmod(out, 0711);
}

char *wt_slurp(const char *path)
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

int wt_log_count(wt *t, const char *needle)
{
	char *log = wt_slurp(t->log);
	int n = 0;
	for (const char *p = log; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	free(log);
	return n;
}

/* ---- the scheduler side ---- */

static void bind_router(wt *t)
{
	t->zctx = zmq_ctx_new();
	t->router = zmq_socket(t->zctx, ZMQ_ROUTER);
	ck_assert_ptr_nonnull(t->router);
	int zero = 0, one = 1;
	zmq_setsockopt(t->router, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(t->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
	ck_assert_int_eq(zmq_bind(t->router, "tcp://127.0.0.1:*"), 0);
	size_t n = sizeof t->endpoint;
	ck_assert_int_eq(zmq_getsockopt(t->router, ZMQ_LAST_ENDPOINT, t->endpoint, &n), 0);
}

static void send_frame(wt *t, const void *p, size_t len, int flags)
{
	ck_assert_msg(t->identlen > 0, "no worker identity yet");
	ck_assert_msg(zmq_send(t->router, t->ident, t->identlen, ZMQ_SNDMORE) >= 0, "zmq_send identity: %s",
		      zmq_strerror(errno));
	ck_assert_msg(zmq_send(t->router, p, len, flags) >= 0, "zmq_send: %s", zmq_strerror(errno));
}

/* Heartbeat answers are best effort, like ZeroMQ's own: never a test failure. */
static void send_heartbeat(wt *t)
{
	hr_buf hb = {0};
	hr_wire_encode_heartbeat(&hb);
	if (zmq_send(t->router, t->ident, t->identlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
		(void)zmq_send(t->router, hb.data, hb.len, ZMQ_DONTWAIT);
	hr_buf_free(&hb);
}

void wt_send_raw(wt *t, const void *p, size_t len)
{
	send_frame(t, p, len, 0);
}

void wt_send_parts(wt *t, const void *const *parts, const size_t *lens, int nparts)
{
	ck_assert_int_ge(zmq_send(t->router, t->ident, t->identlen, ZMQ_SNDMORE), 0);
	for (int i = 0; i < nparts; i++)
		ck_assert_int_ge(zmq_send(t->router, parts[i], lens[i], i + 1 < nparts ? ZMQ_SNDMORE : 0), 0);
}

void wt_send_jobs(wt *t, const hr_job_batch *b)
{
	hr_buf buf = {0};
	hr_wire_encode_jobs(&buf, b);
	send_frame(t, buf.data, buf.len, 0);
	hr_buf_free(&buf);
}

bool wt_recv(wt *t, int timeout_ms, bool want_hello, hr_wire_type *type, uint8_t **frame, size_t *len)
{
	long long deadline = wt_mono_ms() + timeout_ms;
	for (;;) {
		long long left = deadline - wt_mono_ms();
		if (left <= 0)
			return false;
		zmq_pollitem_t it = {.socket = t->router, .events = ZMQ_POLLIN};
		int rc = zmq_poll(&it, 1, (long)left);
		if (rc < 0 && errno == EINTR)
			continue;
		ck_assert_int_ge(rc, 0);
		if (rc == 0)
			continue;
		zmq_msg_t id, m;
		zmq_msg_init(&id);
		zmq_msg_init(&m);
		ck_assert_int_ge(zmq_msg_recv(&id, t->router, 0), 0);
		ck_assert_msg(zmq_msg_more(&id), "ROUTER message without a body");
		ck_assert_int_ge(zmq_msg_recv(&m, t->router, 0), 0);
		ck_assert_msg(!zmq_msg_more(&m), "worker sent a multi-part message");
		ck_assert_uint_le(zmq_msg_size(&id), sizeof t->ident);
		memcpy(t->ident, zmq_msg_data(&id), zmq_msg_size(&id));
		t->identlen = zmq_msg_size(&id);
		zmq_msg_close(&id);
		hr_err err = {0};
		hr_wire_type ty;
		ck_assert_msg(hr_wire_peek(zmq_msg_data(&m), zmq_msg_size(&m), &ty, &err),
			      "worker sent a bad frame: %s", err.msg);
		if (ty == HR_W_HEARTBEAT) {
			send_heartbeat(t);
			zmq_msg_close(&m);
			continue;
		}
		if (ty == HR_W_HELLO) {
			ck_assert_msg(hr_wire_decode_hello(zmq_msg_data(&m), zmq_msg_size(&m), &t->hello, &err),
				      "bad HELLO: %s", err.msg);
			t->hello.worker_id = (hr_str){0};
			t->hellos++;
			if (!want_hello) {
				zmq_msg_close(&m);
				continue;
			}
		}
		*type = ty;
		*len = zmq_msg_size(&m);
		*frame = malloc(*len ? *len : 1);
		memcpy(*frame, zmq_msg_data(&m), *len);
		zmq_msg_close(&m);
		return true;
	}
}

void wt_start(wt *t, const char *channel, const char *lane, const char *const *extra)
{
	memset(t, 0, sizeof *t);
	wt_dir(t->dir, sizeof t->dir, "worker");
	snprintf(t->log, sizeof t->log, "%s/worker.log", t->dir);
	bind_router(t);
	const char *argv[64] = {WORKER_BIN,  "--channel", channel,     "--lane", lane,
				"--scheduler", t->endpoint, "--metrics-port", "0"};
	int argc = 9;
	for (size_t i = 0; extra && extra[i]; i++) {
		ck_assert_int_lt(argc, 62);
		argv[argc++] = extra[i];
	}
	argv[argc] = NULL;
	pid_t parent = getpid();
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(t->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || chdir(t->dir) != 0)
			_exit(127);
		execv(WORKER_BIN, (char *const *)argv);
		_exit(127);
	}
	t->pid = pid;
	hr_wire_type ty;
	uint8_t *f;
	size_t len;
	bool got = wt_recv(t, START_DEADLINE_MS, true, &ty, &f, &len);
	if (!got) {
		char *log = wt_slurp(t->log);
		ck_abort_msg("no HELLO from the worker in %d ms; log:\n%s", START_DEADLINE_MS, log);
	}
	ck_assert_int_eq(ty, HR_W_HELLO);
	free(f);
	char *log = wt_slurp(t->log);
	const char *mp = strstr(log, "metrics_port=");
	ck_assert_msg(mp && sscanf(mp, "metrics_port=%d", &t->metrics_port) == 1, "no metrics port in log:\n%s",
		      log);
	free(log);
}

static void add_result(wt_collect *c, uint64_t lease, const hr_result *r)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 256;
		c->r = realloc(c->r, c->cap * sizeof *c->r);
	}
	wt_res *x = &c->r[c->n++];
	memset(x, 0, sizeof *x);
	x->lease_id = lease;
	x->message_id = r->message_id;
	x->status = r->status;
	x->retry_after_ms = r->retry_after_ms;
	x->latency_us = r->latency_us;
	snprintf(x->provider_id, sizeof x->provider_id, "%.*s", (int)r->provider_id.len, r->provider_id.p);
	snprintf(x->reason, sizeof x->reason, "%.*s", (int)r->reason.len, r->reason.p);
}

/* Take one frame into c; false on timeout. */
static bool collect_one(wt *t, wt_collect *c, long long deadline, hr_wire_type *got)
{
	hr_wire_type ty;
	uint8_t *f;
	size_t len;
	long long left = deadline - wt_mono_ms();
	if (left <= 0 || !wt_recv(t, (int)left, false, &ty, &f, &len))
		return false;
	hr_err err = {0};
	*got = ty;
	if (ty == HR_W_RESULTS) {
		hr_result_batch rb;
		ck_assert_msg(hr_wire_decode_results(f, len, &rb, &err), "bad RESULTS: %s", err.msg);
		for (uint32_t i = 0; i < rb.nresults; i++)
			add_result(c, rb.lease_id, &rb.results[i]);
		c->results_msgs++;
		hr_wire_results_free(&rb);
	} else if (ty == HR_W_CREDIT) {
		hr_credit cr;
		ck_assert_msg(hr_wire_decode_credit(f, len, &cr, &err), "bad CREDIT: %s", err.msg);
		c->credit += cr.credit;
	} else if (ty == HR_W_BYE) {
		hr_bye b;
		ck_assert_msg(hr_wire_decode_bye(f, len, &b, &err), "bad BYE: %s", err.msg);
		for (uint32_t i = 0; i < b.nleases && c->nbye < 64; i++)
			c->bye[c->nbye++] = b.leases[i];
		c->byes++;
		hr_wire_bye_free(&b);
	} else {
		ck_abort_msg("unexpected frame type %d from the worker", (int)ty);
	}
	free(f);
	return true;
}

void wt_collect_results(wt *t, wt_collect *c, size_t want, int timeout_ms)
{
	long long deadline = wt_mono_ms() + timeout_ms;
	hr_wire_type ty;
	while (c->n < want)
		if (!collect_one(t, c, deadline, &ty)) {
			char *log = wt_slurp(t->log);
			ck_abort_msg("got %zu results in %d ms, want %zu; worker log:\n%s", c->n, timeout_ms, want, log);
		}
}

void wt_collect_bye(wt *t, wt_collect *c, int timeout_ms)
{
	long long deadline = wt_mono_ms() + timeout_ms;
	hr_wire_type ty;
	int byes = c->byes;
	while (c->byes == byes)
		ck_assert_msg(collect_one(t, c, deadline, &ty), "no BYE within %d ms", timeout_ms);
}

void wt_collect_free(wt_collect *c)
{
	free(c->r);
	memset(c, 0, sizeof *c);
}

const wt_res *wt_find(const wt_collect *c, uint64_t message_id)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->r[i].message_id == message_id)
			return &c->r[i];
	return NULL;
}

static int wait_exit(pid_t pid, int deadline_ms, bool *exited)
{
	int status = 0;
	long long deadline = wt_mono_ms() + deadline_ms;
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	pid_t w;
	while ((w = waitpid(pid, &status, WNOHANG)) == 0 && wt_mono_ms() < deadline) {
		struct pollfd pf = {.fd = pfd, .events = POLLIN};
		poll(&pf, pfd >= 0 ? 1 : 0, pfd >= 0 ? (int)(deadline - wt_mono_ms()) : 5);
	}
	if (pfd >= 0)
		close(pfd);
	*exited = w != 0;
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int wt_worker_stop(wt *t, int sig, bool check, int want_status, int allowed_warns)
{
	ck_assert_int_gt(t->pid, 0);
	if (sig)
		ck_assert_int_eq(kill(t->pid, sig), 0);
	bool exited;
	int code = wait_exit(t->pid, STOP_DEADLINE_MS, &exited);
	t->pid = 0;
	if (check) {
		char *log = wt_slurp(t->log);
		ck_assert_msg(exited, "worker did not exit within %d ms of signal %d; log:\n%s", STOP_DEADLINE_MS,
			      sig, log);
		ck_assert_msg(code == want_status, "worker exit status %d, want %d; log:\n%s", code, want_status,
			      log);
		const char *bad[] = {"Sanitizer", "runtime error", "] panic: ", "] fatal: "};
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
			ck_assert_msg(!strstr(log, bad[i]), "worker log has '%s':\n%s", bad[i], log);
		int warns = 0;
		for (const char *p = log; (p = strstr(p, "] warn: ")); p++)
			warns++;
		ck_assert_msg(warns <= allowed_warns, "worker logged %d warning(s), allowed %d:\n%s", warns,
			      allowed_warns, log);
		free(log);
	}
	return code;
}

void wt_close(wt *t)
{
	if (t->router)
		zmq_close(t->router);
	if (t->zctx)
		zmq_ctx_term(t->zctx);
	t->router = t->zctx = NULL;
}

/* ---- smtp-sink ---- */

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	socklen_t n = sizeof sa;
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &n), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

/* Connect, read the 220 greeting, close: true when the sink serves. */
static bool sink_ready(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = false;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		char buf[128];
		if (poll(&pf, 1, 5000) == 1 && read(fd, buf, sizeof buf) >= 3 && !strncmp(buf, "220", 3))
			ok = true;
		if (write(fd, "QUIT\r\n", 6) < 0)
			ok = false;
	}
	close(fd);
	return ok;
}

void wt_sink_start(wt_sink *s, const char *const *args)
{
	memset(s, 0, sizeof *s);
	wt_dir(s->dir, sizeof s->dir, "smtp");
	char mail[300], tmpl[320], where[64];
	snprintf(mail, sizeof mail, "%s/mail", s->dir);
	ck_assert_int_eq(mkdir(mail, 0777), 0);
	chmod(mail, 0777);
	snprintf(tmpl, sizeof tmpl, "%s/%%M.", mail);
	snprintf(s->log, sizeof s->log, "%s/sink.log", s->dir);
	s->port = free_port();
	snprintf(where, sizeof where, "127.0.0.1:%d", s->port);
	const char *argv[32] = {"/usr/sbin/smtp-sink", "-v", "-u", "nobody", "-d", tmpl};
	int argc = 6;
	for (size_t i = 0; args && args[i]; i++)
		argv[argc++] = args[i];
	argv[argc++] = where;
	argv[argc++] = "100";
	argv[argc] = NULL;

	pid_t parent = getpid();
	pid_t g = fork();
	ck_assert_int_ge(g, 0);
	if (g == 0) {
		/* The guardian: dies-with-parent is its job, smtp-sink cannot keep it. */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigaddset(&set, SIGCHLD);
		sigprocmask(SIG_BLOCK, &set, NULL);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		pid_t c = fork();
		if (c < 0)
			_exit(127);
		if (c == 0) {
			sigprocmask(SIG_UNBLOCK, &set, NULL);
			int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || chdir(s->dir) != 0)
				_exit(127);
			execv(argv[0], (char *const *)argv);
			_exit(127);
		}
		for (;;) {
			int sig;
			if (sigwait(&set, &sig) != 0)
				continue;
			int st = 0;
			if (sig == SIGTERM) {
				kill(c, SIGKILL);
				waitpid(c, &st, 0);
				_exit(0);
			}
			if (waitpid(c, &st, WNOHANG) == c)
				_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		}
	}
	s->guard = g;
	long long deadline = wt_mono_ms() + START_DEADLINE_MS;
	while (!sink_ready(s->port)) {
		int st;
		if (waitpid(g, &st, WNOHANG) == g) {
			s->guard = 0;
			char *log = wt_slurp(s->log);
			ck_abort_msg("smtp-sink exited at start (port %d taken?):\n%s", s->port, log);
		}
		ck_assert_msg(wt_mono_ms() < deadline, "smtp-sink not ready in %d ms", START_DEADLINE_MS);
		poll(NULL, 0, 5); /* poll for readiness: connection refused until it listens */
	}
}

void wt_sink_stop(wt_sink *s)
{
	if (s->guard <= 0)
		return;
	kill(s->guard, SIGTERM);
	bool exited;
	(void)wait_exit(s->guard, STOP_DEADLINE_MS, &exited);
	s->guard = 0;
}

char **wt_sink_mails(wt_sink *s, size_t *n)
{
	char mail[300];
	snprintf(mail, sizeof mail, "%s/mail", s->dir);
	DIR *d = opendir(mail);
	ck_assert_ptr_nonnull(d);
	size_t cap = 16, cnt = 0;
	char **v = malloc(cap * sizeof *v);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (cnt == cap)
			v = realloc(v, (cap *= 2) * sizeof *v);
		size_t len = strlen(mail) + strlen(e->d_name) + 2;
		v[cnt] = malloc(len);
		snprintf(v[cnt], len, "%s/%s", mail, e->d_name);
		cnt++;
	}
	closedir(d);
	*n = cnt;
	return v;
}

void wt_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static size_t on_get(char *p, size_t sz, size_t n, void *ud)
{
	char **body = ud;
	size_t old = *body ? strlen(*body) : 0;
	*body = realloc(*body, old + sz * n + 1);
	memcpy(*body + old, p, sz * n);
	(*body)[old + sz * n] = '\0';
	return sz * n;
}

long wt_http_get(int port, const char *path, char **body)
{
	char url[256];
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
	*body = strdup("");
	CURL *c = curl_easy_init();
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_get);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	long status = 0;
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return status;
}
