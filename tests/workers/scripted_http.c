/*
 * scripted_http.c -- see scripted_http.h.
 */
#include "scripted_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>

#define MAX_CONNS 64

typedef struct conn {
	int fd;
	char in[65536];
	size_t len;
	int served;   /* requests answered on this connection */
	bool held;    /* /silent: nothing more is answered here */
} conn;

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			return; /* the client went away: nothing to do */
		}
		p += k;
		n -= (size_t)k;
	}
}

static void header(const char *head, const char *name, char *out, size_t outlen)
{
	out[0] = '\0';
	size_t nl = strlen(name);
	for (const char *l = strchr(head, '\n'); l; l = strchr(l + 1, '\n'))
		if (strncasecmp(l + 1, name, nl) == 0 && l[1 + nl] == ':') {
			const char *v = l + 2 + nl;
			v += strspn(v, " ");
			size_t k = strcspn(v, "\r\n");
			snprintf(out, outlen, "%.*s", (int)(k < outlen ? k : outlen - 1), v);
			return;
		}
}

/* Answer one request; false: close the connection. */
static bool answer(sh_server *s, conn *c, const char *head)
{
	char path[256] = "", key[64], buf[512];
	sscanf(head, "%*s %255s", path);
	header(head, "Idempotency-Key", key, sizeof key);
	if (!strcmp(path, "/chunked")) {
		char body[128];
		int n = snprintf(body, sizeof body, "{\"id\":\"c%s\"}", key);
		int a = n / 3, b = n / 3;
		int m = snprintf(buf, sizeof buf,
				 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				 "%x\r\n%.*s\r\n%X;ext=1\r\n%.*s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n",
				 a, a, body, b, b, body + a, n - a - b, body + a + b);
		write_all(c->fd, buf, (size_t)m);
		return true;
	}
	if (!strcmp(path, "/drop2")) {
		if (c->served) {
			atomic_fetch_add(&s->dropped, 1);
			return false;
		}
		int m = snprintf(buf, sizeof buf, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n{\"id\":\"d%s\"}",
				 strlen(key) + 10, key);
		write_all(c->fd, buf, (size_t)m);
		return true;
	}
	if (!strcmp(path, "/eof")) {
		int m = snprintf(buf, sizeof buf, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":\"e%s\"}",
				 key);
		write_all(c->fd, buf, (size_t)m);
		return false;
	}
	if (!strcmp(path, "/continue")) {
		static const char r[] = "HTTP/1.1 100 Continue\r\n\r\n"
					"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nslow";
		write_all(c->fd, r, sizeof r - 1);
		return true;
	}
	if (!strcmp(path, "/cut")) {
		static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"id\"";
		write_all(c->fd, r, sizeof r - 1);
		return false;
	}
	if (!strcmp(path, "/garbage")) {
		write_all(c->fd, "SPAM\r\n\r\n", 8);
		return true;
	}
	if (!strcmp(path, "/hugehead")) {
		static char r[20000];
		memset(r, 'a', sizeof r);
		memcpy(r, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
		memcpy(r + sizeof r - 4, "\r\n\r\n", 4);
		write_all(c->fd, r, sizeof r);
		return true;
	}
	if (!strcmp(path, "/silent")) {
		c->held = true;
		return true;
	}
	write_all(c->fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 45);
	return true;
}

/* Serve the complete requests in c->in; false: close. */
static bool serve(sh_server *s, conn *c)
{
	for (;;) {
		c->in[c->len] = '\0';
		char *end = strstr(c->in, "\r\n\r\n");
		if (!end)
			return c->len < sizeof c->in - 1;
		size_t hl = (size_t)(end + 4 - c->in);
		char cl[32];
		end[2] = '\0';
		header(c->in, "Content-Length", cl, sizeof cl);
		end[2] = '\r';
		size_t bl = (size_t)strtoul(cl, NULL, 10);
		if (c->len < hl + bl)
			return true;
		char head[2048];
		snprintf(head, sizeof head, "%.*s", (int)hl, c->in);
		atomic_fetch_add(&s->requests, 1);
		pthread_mutex_lock(&s->mu);
		if (!s->first_head[0] && strncmp(head, "POST /chunked ", 14) == 0)
			snprintf(s->first_head, sizeof s->first_head, "%s", head);
		pthread_mutex_unlock(&s->mu);
		memmove(c->in, c->in + hl + bl, c->len - hl - bl);
		c->len -= hl + bl;
		if (c->held)
			continue;
		bool keep = answer(s, c, head);
		if (!keep)
			return false;
		c->served++;
	}
}

static void *run(void *arg)
{
	sh_server *s = arg;
	conn *cs = calloc(MAX_CONNS, sizeof *cs);
	size_t n = 0;
	for (;;) {
		struct pollfd p[MAX_CONNS + 2];
		p[0] = (struct pollfd){.fd = s->stop[0], .events = POLLIN};
		p[1] = (struct pollfd){.fd = s->lfd, .events = n < MAX_CONNS ? POLLIN : 0};
		for (size_t i = 0; i < n; i++)
			p[2 + i] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
		if (poll(p, 2 + n, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		for (size_t i = n; i-- > 0;) {
			if (!p[2 + i].revents)
				continue;
			conn *c = &cs[i];
			ssize_t k = recv(c->fd, c->in + c->len, sizeof c->in - 1 - c->len, 0);
			bool keep = k > 0;
			if (keep) {
				c->len += (size_t)k;
				keep = serve(s, c);
			}
			if (!keep) {
				close(c->fd);
				cs[i] = cs[--n];
			}
		}
		if (p[1].revents & POLLIN) {
			int fd = accept(s->lfd, NULL, NULL);
			if (fd >= 0) {
				memset(&cs[n], 0, sizeof cs[n]);
				cs[n++].fd = fd;
				atomic_fetch_add(&s->conns, 1);
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		close(cs[i].fd);
	free(cs);
	return NULL;
}

void sh_start(sh_server *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(s->lfd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(listen(s->lfd, 64), 0);
	ck_assert_int_eq(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
	s->port = ntohs(a.sin_port);
	ck_assert_int_eq(pipe(s->stop), 0);
	ck_assert_int_eq(pthread_create(&s->th, NULL, run, s), 0);
}

void sh_stop(sh_server *s)
{
	ck_assert_int_eq(write(s->stop[1], "x", 1), 1);
	pthread_join(s->th, NULL);
	close(s->stop[0]);
	close(s->stop[1]);
	close(s->lfd);
	pthread_mutex_destroy(&s->mu);
}
