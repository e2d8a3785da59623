/*
 * curlio.h -- libcurl's multi interface, driven from the worker's zmq_poll loop.
 *
 * One CURLM serves every libcurl transport of the process (SMTP and HTTP),
 * so all their sockets are polled together with the ZeroMQ socket and
 * connections live in one cache (connection reuse across sends is
 * libcurl's: a finished transfer leaves its connection in the multi's
 * cache, and the next transfer to the same server takes it).
 *
 *   wk_curlio_easy_defaults(io, e)  options every easy handle gets after
 *                                   curl_easy_init/reset: NOSIGNAL, and
 *                                   NOPROXY "*" unless a *_proxy variable
 *                                   was set at start-up (no per-transfer
 *                                   environment lookups in libcurl).
 *   wk_curlio_proxied(io)           true when a *_proxy variable was set: a
 *                                   transport that opens connections itself
 *                                   (CONNECT_ONLY) must then leave the whole
 *                                   transfer to libcurl, which honours it.
 *   wk_curlio_start(io, easy, req)  add a configured easy handle; req->done
 *                                   is called when the transfer is over.
 *   wk_curlio_pollitems()           the sockets libcurl waits on, as zmq
 *                                   pollitems to append to the loop's set.
 *   wk_curlio_timeout()             ms until libcurl's next timer (-1: none).
 *   wk_curlio_act()                 after zmq_poll: drive libcurl on the
 *                                   ready sockets and expired timers, then
 *                                   call done() for each finished transfer
 *                                   (the easy handle is already removed from
 *                                   the multi, so done() may reuse it).
 *   wk_curlio_kick()                before polling: if libcurl's timer has
 *                                   expired (curl_multi_add_handle asks for
 *                                   "now"), run it and finish what is done,
 *                                   so new transfers go out in this turn
 *                                   rather than after an extra poll.
 *
 *   wk_curlio_watch(io, w)          also poll a socket of our own (w->fd for
 *   wk_curlio_unwatch(io, w)        w->events, until w->deadline_ms): the SMTP
 *                                   transport's pipelined sessions, whose
 *                                   connections libcurl opened (see
 *                                   transport_smtp.c).  w->ready() runs from
 *                                   wk_curlio_act with the poll's revents, or
 *                                   with 0 when the deadline passed.
 *
 * A request with keep_socket set is a CURLOPT_CONNECT_ONLY transfer whose
 * connection the caller takes over: when it ends well, wk_curlio_act dups
 * its socket into req->sock before the handle leaves the multi (which closes
 * libcurl's descriptor without a word on the wire).  In done(),
wk_curlio_take_socket(req, &rc) hands that socket over (the caller owns it
then), or returns -1 with rc the failure (a CURLE_OK without a socket
becomes CURLE_COULDNT_CONNECT).
 *
 * done() and ready() run from wk_curlio_act, never from inside libcurl.
 * libcurl's own callbacks (socket, timer) only record state.
 *
 * Thread safety: the loop thread only.
 */
#ifndef HERALD_WORKERS_CURLIO_H
#define HERALD_WORKERS_CURLIO_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <zmq.h>

typedef struct wk_curlreq wk_curlreq;
struct wk_curlreq {
	void (*done)(wk_curlreq *req, CURLcode rc); /* the transfer is over */
	CURL *easy;                                  /* set by wk_curlio_start */
	bool keep_socket;                            /* CONNECT_ONLY: dup the socket ... */
	int sock;                                    /* ... into this (-1: none) */
};

typedef struct wk_fdwatch wk_fdwatch;
struct wk_fdwatch {
	int fd;                                      /* the socket */
	short events;                                /* ZMQ_POLLIN | ZMQ_POLLOUT (0: deadline only) */
	long long deadline_ms;                       /* monotonic ms (wk_curlio_now_ms), 0 = none */
	void (*ready)(wk_fdwatch *w, short revents); /* revents 0: the deadline passed */
	size_t slot;                                 /* curlio's: index + 1, 0 = not watched */
};

typedef struct wk_curlio wk_curlio;

/* maxconnects: connections the multi keeps open for reuse. */
wk_curlio *wk_curlio_new(long maxconnects);
void wk_curlio_free(wk_curlio *io); /* no transfer may be running */

void wk_curlio_easy_defaults(const wk_curlio *io, CURL *easy);
void wk_curlio_start(wk_curlio *io, CURL *easy, wk_curlreq *req);
bool wk_curlio_proxied(const wk_curlio *io);
int wk_curlio_take_socket(wk_curlreq *req, CURLcode *rc);

/* Append up to max pollitems; returns how many. */
size_t wk_curlio_pollitems(wk_curlio *io, zmq_pollitem_t *items, size_t max);
size_t wk_curlio_nsockets(const wk_curlio *io);
long wk_curlio_timeout(wk_curlio *io);
/* items/n: the pollitems wk_curlio_pollitems gave, after zmq_poll filled revents. */
void wk_curlio_act(wk_curlio *io, const zmq_pollitem_t *items, size_t n);
/* Run an expired timer now; true when a transfer finished (done() was called). */
bool wk_curlio_kick(wk_curlio *io);

/* Add or update (fd, events, deadline may change while watched). */
void wk_curlio_watch(wk_curlio *io, wk_fdwatch *w);
void wk_curlio_unwatch(wk_curlio *io, wk_fdwatch *w);
long long wk_curlio_now_ms(void);

/* Connections libcurl opened so far (for metrics and tests of reuse). */
unsigned long wk_curlio_connects(const wk_curlio *io);

#endif
