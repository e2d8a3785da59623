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
 * done() runs from wk_curlio_act, never from inside libcurl.  libcurl's own
 * callbacks (socket, timer) only record state.
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
};

typedef struct wk_curlio wk_curlio;

/* maxconnects: connections the multi keeps open for reuse. */
wk_curlio *wk_curlio_new(long maxconnects);
void wk_curlio_free(wk_curlio *io); /* no transfer may be running */

void wk_curlio_easy_defaults(const wk_curlio *io, CURL *easy);
void wk_curlio_start(wk_curlio *io, CURL *easy, wk_curlreq *req);

/* Append up to max pollitems; returns how many. */
size_t wk_curlio_pollitems(wk_curlio *io, zmq_pollitem_t *items, size_t max);
size_t wk_curlio_nsockets(const wk_curlio *io);
long wk_curlio_timeout(wk_curlio *io);
/* items/n: the pollitems wk_curlio_pollitems gave, after zmq_poll filled revents. */
void wk_curlio_act(wk_curlio *io, const zmq_pollitem_t *items, size_t n);
/* Run an expired timer now; true when a transfer finished (done() was called). */
bool wk_curlio_kick(wk_curlio *io);

/* Connections libcurl opened so far (for metrics and tests of reuse). */
unsigned long wk_curlio_connects(const wk_curlio *io);

#endif
