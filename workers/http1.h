/*
 * http1.h -- an incremental parser of one HTTP/1.1 response (RFC 9112),
 * for the HTTP transport's own client (transport_http.c).
 *
 * The caller reads bytes from the connection into its buffer and hands
 * the unparsed part to wk_h1_feed, which consumes what it can and returns
 * how many bytes it took; the caller drops those and feeds the rest again
 * when more arrive.  Nothing is kept of the bytes but what the caller
 * needs afterwards:
 *
 *   status        the final status code (1xx interim answers are skipped)
 *   keep_alive    the connection may carry another request (HTTP/1.1
 *                 without "Connection: close", or HTTP/1.0 with
 *                 "Connection: keep-alive"; never for a body that ends at EOF)
 *   retry_after   the Retry-After value, trimmed, "" = none
 *   body          the response body, decoded from chunked, at most body_max
 *                 bytes kept (the rest is read and dropped)
 *
 * Framing: no body for HEAD (set no_body), 1xx, 204 and 304; else
 * Transfer-Encoding chunked, else Content-Length, else the body ends when
 * the server closes the connection (wk_h1_eof).  Bad input -- a status
 * line that is not HTTP/1.x, a header block over 16 KiB, a header line
 * without a colon, conflicting or non-numeric Content-Length, a bad chunk
 * size -- ends in H1_BAD with `error` saying what; it never reads beyond
 * the bytes given.
 *
 * Errors: the state (H1_BAD + error).  Thread safety: none; one owner.
 */
#ifndef HERALD_WORKERS_HTTP1_H
#define HERALD_WORKERS_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define WK_H1_MAX_HEAD (16 * 1024) /* a header block (or a chunk line) longer than this is bad */

typedef enum wk_h1_state {
	H1_HEAD,        /* reading the status line and headers */
	H1_BODY_LEN,    /* Content-Length body: `left` bytes to come */
	H1_BODY_EOF,    /* body until the server closes */
	H1_CHUNK_SIZE,  /* a chunk-size line */
	H1_CHUNK_DATA,  /* `left` bytes of chunk data */
	H1_CHUNK_CRLF,  /* the CRLF after chunk data */
	H1_TRAILER,     /* trailer lines after the last chunk */
	H1_DONE,        /* the response is complete */
	H1_BAD,         /* malformed: see error */
} wk_h1_state;

typedef struct wk_h1 {
	wk_h1_state state;
	bool no_body;          /* set by the caller: the request was HEAD */
	int status;            /* final status code, 0 until the status line */
	bool keep_alive;
	char retry_after[64];
	wk_buf body;           /* the kept body (caller frees with wk_buf_free) */
	size_t body_max;       /* bytes of body to keep */
	uint64_t left;         /* bytes left of the body or the chunk */
	const char *error;     /* H1_BAD: why (a static string) */
} wk_h1;

/* Start a new response (keeps body's memory and body_max). */
void wk_h1_reset(wk_h1 *r, bool no_body);
/* Parse from p[0..n); returns the bytes consumed.  Stops at H1_DONE or H1_BAD. */
size_t wk_h1_feed(wk_h1 *r, const char *p, size_t n);
/* The server closed the connection: true when that completes the response
 * (a body read until EOF); otherwise the response was cut short. */
bool wk_h1_eof(wk_h1 *r);

#endif
