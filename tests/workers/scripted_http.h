/*
 * scripted_http.h -- a tiny real HTTP/1.1 server (one thread, poll(2), a
 * real TCP socket on 127.0.0.1, port 0) that answers by request path the
 * ways herald-provsim never does, for the HTTP transport's own client:
 *
 *   /chunked    200, chunked (three chunks, an extension, a trailer),
 *               body {"id":"c<Idempotency-Key>"}
 *   /drop2      answers a connection's first request (keep-alive); a
 *               second request on the same connection is read and the
 *               connection closed without an answer
 *   /eof        HTTP/1.0 200 without Content-Length: the body ends at EOF
 *   /continue   100 Continue, then 429 with Retry-After: 3
 *   /cut        200 with Content-Length 100, 5 bytes of body, then close
 *   /garbage    "SPAM" instead of a status line
 *   /hugehead   a header block over 16 KiB
 *   /silent     never answers (the connection is held)
 *
 * Counters are read by the test after the worker has answered.
 */
#ifndef HERALD_TESTS_SCRIPTED_HTTP_H
#define HERALD_TESTS_SCRIPTED_HTTP_H

#include <pthread.h>
#include <stdatomic.h>

typedef struct sh_server {
	int port;
	int lfd;
	int stop[2];
	pthread_t th;
	atomic_int conns;     /* connections accepted */
	atomic_int requests;  /* complete requests read */
	atomic_int dropped;   /* /drop2 connections closed on their second request */
	pthread_mutex_t mu;
	char first_head[2048]; /* the head of the first POST /chunked, for header checks */
} sh_server;

void sh_start(sh_server *s);
void sh_stop(sh_server *s);

#endif
