/*
 * curlio.c -- libcurl multi driven by zmq_poll.  See curlio.h.
 */
#include "curlio.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"

typedef struct wsock {
	curl_socket_t fd;
	short events; /* ZMQ_POLLIN / ZMQ_POLLOUT */
} wsock;

struct wk_curlio {
	CURLM *multi;
	wsock *socks;       /* sockets libcurl waits on */
	size_t nsocks, capsocks;
	long timer_ms;      /* libcurl's last timer request: -1 none */
	long long timer_at; /* monotonic ms when it expires */
	unsigned long connects;
	bool noproxy;       /* no *_proxy variable is set: tell libcurl not to look */
	wk_fdwatch **watches; /* our own sockets (wk_curlio_watch) */
	size_t nwatch, capwatch;
	wk_fdwatch **polled;  /* the watches wk_curlio_pollitems handed out, in order */
	size_t npolled, cappolled;
	size_t ncurlpolled;   /* how many of the handed-out items were libcurl's */
};

extern char **environ;

/*
 * libcurl looks up <scheme>_proxy, all_proxy and no_proxy (both cases) in the
 * environment for every transfer unless CURLOPT_NOPROXY is set.  When none
 * of them is set at start-up, NOPROXY "*" gives the same result without the
 * lookups; when one is set, libcurl is left to honour it as before.
 */
static bool proxy_in_env(void)
{
	for (char **e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
		if (n >= 6 && strncasecmp(*e + n - 6, "_proxy", 6) == 0 && eq && eq[1] &&
		    !(n == 8 && strncasecmp(*e, "no", 2) == 0))
			return true;
	}
	return false;
}

long long wk_curlio_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CURLMOPT_SOCKETFUNCTION: record what libcurl wants; nothing else. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp)
{
	wk_curlio *io = ud;
	size_t i;
	for (i = 0; i < io->nsocks; i++)
		if (io->socks[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE) {
		if (i < io->nsocks)
			io->socks[i] = io->socks[--io->nsocks];
		return 0;
	}
	if (i == io->nsocks) {
		if (io->nsocks == io->capsocks) {
			io->capsocks = io->capsocks ? io->capsocks * 2 : 16;
			io->socks = hr_realloc(io->socks, io->capsocks * sizeof *io->socks);
		}
		io->socks[io->nsocks++].fd = fd;
	}
	io->socks[i].events = (short)(((what & CURL_POLL_IN) ? ZMQ_POLLIN : 0) |
				      ((what & CURL_POLL_OUT) ? ZMQ_POLLOUT : 0));
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when libcurl wants to be called. */
static int on_timer(CURLM *multi, long timeout_ms, void *ud)
{
	wk_curlio *io = ud;
	io->timer_ms = timeout_ms;
	io->timer_at = timeout_ms < 0 ? 0 : mono_ms() + timeout_ms;
	return 0;
}

wk_curlio *wk_curlio_new(long maxconnects)
{
	wk_curlio *io = hr_calloc(1, sizeof *io);
	io->multi = curl_multi_init();
	if (!io->multi)
		hr_fatal("curl_multi_init failed");
	io->timer_ms = -1;
	io->noproxy = !proxy_in_env();
	if (!io->noproxy)
		hr_info("a *_proxy environment variable is set: libcurl will honour it");
	curl_multi_setopt(io->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(io->multi, CURLMOPT_SOCKETDATA, io);
	curl_multi_setopt(io->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(io->multi, CURLMOPT_TIMERDATA, io);
	/* Explicit: the default (4 x handles added) shrinks to nothing between
	 * transfers, since we remove each handle when its transfer is over. */
	curl_multi_setopt(io->multi, CURLMOPT_MAXCONNECTS, maxconnects);
	return io;
}

void wk_curlio_free(wk_curlio *io)
{
	if (!io)
		return;
	curl_multi_cleanup(io->multi);
	hr_free(io->socks);
	hr_free(io->watches);
	hr_free(io->polled);
	hr_free(io);
}

void wk_curlio_easy_defaults(const wk_curlio *io, CURL *easy)
{
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	if (io->noproxy)
		curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
}

bool wk_curlio_proxied(const wk_curlio *io)
{
	return !io->noproxy;
}

int wk_curlio_take_socket(wk_curlreq *req, CURLcode *rc)
{
	int fd = req->sock;
	req->keep_socket = false;
	req->sock = -1;
	if (*rc == CURLE_OK && fd >= 0)
		return fd;
	if (fd >= 0)
		close(fd);
	if (*rc == CURLE_OK)
		*rc = CURLE_COULDNT_CONNECT;
	return -1;
}

void wk_curlio_start(wk_curlio *io, CURL *easy, wk_curlreq *req)
{
	req->easy = easy;
	req->sock = -1;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	CURLMcode mc = curl_multi_add_handle(io->multi, easy);
	if (mc != CURLM_OK)
		hr_panic("curl_multi_add_handle: %s", curl_multi_strerror(mc));
}

size_t wk_curlio_nsockets(const wk_curlio *io)
{
	return io->nsocks;
}

void wk_curlio_watch(wk_curlio *io, wk_fdwatch *w)
{
	if (w->slot)
		return;
	if (io->nwatch == io->capwatch) {
		io->capwatch = io->capwatch ? io->capwatch * 2 : 16;
		io->watches = hr_realloc(io->watches, io->capwatch * sizeof *io->watches);
	}
	io->watches[io->nwatch++] = w;
	w->slot = io->nwatch;
}

void wk_curlio_unwatch(wk_curlio *io, wk_fdwatch *w)
{
	if (!w->slot)
		return;
	size_t i = w->slot - 1;
	io->watches[i] = io->watches[--io->nwatch];
	io->watches[i]->slot = i + 1;
	w->slot = 0;
}

size_t wk_curlio_pollitems(wk_curlio *io, zmq_pollitem_t *items, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < io->nsocks && n < max; i++) {
		if (!io->socks[i].events)
			continue;
		items[n++] = (zmq_pollitem_t){.socket = NULL, .fd = io->socks[i].fd,
					      .events = io->socks[i].events};
	}
	io->ncurlpolled = n;
	if (io->cappolled < io->nwatch) {
		io->cappolled = io->capwatch;
		io->polled = hr_realloc(io->polled, io->cappolled * sizeof *io->polled);
	}
	io->npolled = 0;
	for (size_t i = 0; i < io->nwatch && n < max; i++) {
		wk_fdwatch *w = io->watches[i];
		if (!w->events)
			continue;
		io->polled[io->npolled++] = w;
		items[n++] = (zmq_pollitem_t){.socket = NULL, .fd = w->fd, .events = w->events};
	}
	return n;
}

long wk_curlio_timeout(wk_curlio *io)
{
	long long at = io->timer_ms < 0 ? -1 : io->timer_at;
	for (size_t i = 0; i < io->nwatch; i++) {
		long long d = io->watches[i]->deadline_ms;
		if (d && (at < 0 || d < at))
			at = d;
	}
	if (at < 0)
		return -1;
	long long left = at - mono_ms();
	return left < 0 ? 0 : (long)left;
}

unsigned long wk_curlio_connects(const wk_curlio *io)
{
	return io->connects;
}

static size_t finish(wk_curlio *io);

void wk_curlio_act(wk_curlio *io, const zmq_pollitem_t *items, size_t n)
{
	int running;
	size_t ncurl = n < io->ncurlpolled ? n : io->ncurlpolled;
	for (size_t i = 0; i < ncurl; i++) {
		if (!items[i].revents)
			continue;
		int ev = ((items[i].revents & ZMQ_POLLIN) ? CURL_CSELECT_IN : 0) |
			 ((items[i].revents & ZMQ_POLLOUT) ? CURL_CSELECT_OUT : 0) |
			 ((items[i].revents & ZMQ_POLLERR) ? CURL_CSELECT_ERR : 0);
		curl_multi_socket_action(io->multi, items[i].fd, ev, &running);
	}
	if (io->timer_ms >= 0 && mono_ms() >= io->timer_at) {
		/* A timer fires once; libcurl sets a new one if it needs it. */
		io->timer_ms = -1;
		curl_multi_socket_action(io->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	finish(io);
	/* Our own sockets.  A ready() may unwatch or re-arm any watch, so each
	 * handed-out item is checked against its watch's current state. */
	size_t npolled = n > ncurl ? n - ncurl : 0;
	if (npolled > io->npolled)
		npolled = io->npolled;
	for (size_t i = 0; i < npolled; i++) {
		const zmq_pollitem_t *it = &items[ncurl + i];
		wk_fdwatch *w = io->polled[i];
		if (it->revents && w->slot && w->fd == it->fd)
			w->ready(w, it->revents);
	}
	io->npolled = 0;
	if (!io->nwatch)
		return;
	long long now = mono_ms();
	bool due = false;
	for (size_t i = 0; i < io->nwatch && !due; i++)
		due = io->watches[i]->deadline_ms && now >= io->watches[i]->deadline_ms;
	if (!due)
		return;
	/* Snapshot first: ready() changes the set. */
	if (io->cappolled < io->nwatch) {
		io->cappolled = io->capwatch;
		io->polled = hr_realloc(io->polled, io->cappolled * sizeof *io->polled);
	}
	size_t k = 0;
	for (size_t i = 0; i < io->nwatch; i++)
		if (io->watches[i]->deadline_ms && now >= io->watches[i]->deadline_ms)
			io->polled[k++] = io->watches[i];
	for (size_t i = 0; i < k; i++) {
		wk_fdwatch *w = io->polled[i];
		if (w->slot && w->deadline_ms && now >= w->deadline_ms)
			w->ready(w, 0);
	}
}

bool wk_curlio_kick(wk_curlio *io)
{
	if (io->timer_ms < 0 || (io->timer_ms > 0 && mono_ms() < io->timer_at))
		return false;
	int running;
	io->timer_ms = -1;
	curl_multi_socket_action(io->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	return finish(io) > 0;
}

/* Hand every finished transfer to its done(); returns how many. */
static size_t finish(wk_curlio *io)
{
	size_t n = 0;
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(io->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode rc = msg->data.result;
		wk_curlreq *req = NULL;
		long nconn = 0;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
		curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &nconn);
		io->connects += (unsigned long)nconn;
		if (req->keep_socket && rc == CURLE_OK) {
			/* Taken over: our own descriptor, so removing the handle (which
			 * closes libcurl's, sending nothing) leaves the connection open. */
			curl_socket_t fd = CURL_SOCKET_BAD;
			if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK && fd != CURL_SOCKET_BAD)
				req->sock = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		}
		curl_multi_remove_handle(io->multi, easy);
		/* msg is invalid after remove; we saved what we need. */
		req->done(req, rc);
		n++;
	}
	return n;
}
