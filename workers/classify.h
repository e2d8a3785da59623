/*
 * classify.h -- THE mapping from a send's outcome to a result class.
 *
 * Every way a send can end -- an SMTP reply, an HTTP status, a libcurl
 * transport error -- is classified here and nowhere else (STYLE.md #8), into
 * the wire's hr_result_status: SENT, RETRY, THROTTLED, BOUNCED, PERMANENT.
 * The scheduler acts on the class (retry with backoff, slow the account
 * down, suppress the address, give up); the worker never decides policy.
 * The tables live in classify.c and are printed in docs/workers.md.
 *
 * Pure functions, no state: any thread may call them.
 */
#ifndef HERALD_WORKERS_CLASSIFY_H
#define HERALD_WORKERS_CLASSIFY_H

#include <stdint.h>

#include <curl/curl.h>

/*
 * SMTP: rc is libcurl's result, code the last SMTP reply code the server
 * sent (0 = none, e.g. the connection failed), enhanced the RFC 3463 code of
 * that reply ("5.1.1"; "" or NULL when the server gave none).  A server reply
 * of 4xx/5xx decides; otherwise a libcurl error decides; otherwise SENT.
 */
uint8_t wk_classify_smtp(CURLcode rc, long code, const char *enhanced);

/* HTTP: rc is libcurl's result, status the HTTP status (0 = no answer). */
uint8_t wk_classify_http(CURLcode rc, long status);

/* A libcurl error without a usable server answer (both protocols). */
uint8_t wk_classify_curl(CURLcode rc);

#endif
