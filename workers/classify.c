/*
 * classify.c -- the result classification tables.  See classify.h.
 *
 * Each table is scanned top to bottom and the first matching row wins, so
 * specific rows (421, 550 + 5.1.x) come before the ranges that catch the
 * rest.  docs/workers.md prints these tables; change both together.
 */
#include "classify.h"

#include <string.h>

#include "wire.h"

typedef struct code_rule {
	int lo, hi;           /* reply code range, inclusive */
	const char *enhanced; /* prefix the enhanced status must have; NULL = any */
	uint8_t status;       /* hr_result_status */
} code_rule;

/* SMTP replies (RFC 5321 codes, RFC 3463 enhanced codes). */
static const code_rule smtp_rules[] = {
	{200, 299, NULL, HR_RES_SENT},
	/* The server is overloaded or rate-limits us: slow down, not a failure. */
	{421, 421, NULL, HR_RES_THROTTLED},
	{454, 454, NULL, HR_RES_THROTTLED},
	/* Mailbox busy, local error, insufficient storage: try again later. */
	{450, 452, NULL, HR_RES_RETRY},
	/* Any other temporary reply is temporary too (postfix defers them). */
	{400, 499, NULL, HR_RES_RETRY},
	/* Bad destination mailbox (5.1.x): a hard bounce, suppress the address. */
	{550, 551, "5.1.", HR_RES_BOUNCED},
	{553, 553, "5.1.", HR_RES_BOUNCED},
	/* Policy, content, syntax, relay denied...: permanent for this message only. */
	{500, 599, NULL, HR_RES_PERMANENT},
};

/* HTTP provider statuses. */
static const code_rule http_rules[] = {
	{200, 299, NULL, HR_RES_SENT},
	{429, 429, NULL, HR_RES_THROTTLED},
	/* Request Timeout, Too Early: the request may succeed when repeated. */
	{408, 408, NULL, HR_RES_RETRY},
	{425, 425, NULL, HR_RES_RETRY},
	/* The provider failed, not our request. */
	{500, 599, NULL, HR_RES_RETRY},
	/* Our request is wrong (auth, validation, unknown recipient...): repeating it cannot help. */
	{400, 499, NULL, HR_RES_PERMANENT},
	/* 1xx/3xx as a final answer: we do not follow redirects to providers. */
	{100, 399, NULL, HR_RES_PERMANENT},
};

typedef struct curl_rule {
	CURLcode rc;
	uint8_t status;
} curl_rule;

/*
 * libcurl errors that no retry can fix: the provider configuration is
 * unusable as written.  Every other libcurl error (resolve, connect,
 * timeout, TLS handshake, reset, short reply, login refused...) is RETRY:
 * the network or the provider may recover, and the scheduler's backoff
 * bounds the cost.
 */
static const curl_rule curl_rules[] = {
	{CURLE_OK, HR_RES_SENT},
	{CURLE_UNSUPPORTED_PROTOCOL, HR_RES_PERMANENT},
	{CURLE_URL_MALFORMAT, HR_RES_PERMANENT},
	{CURLE_NOT_BUILT_IN, HR_RES_PERMANENT},
	{CURLE_BAD_FUNCTION_ARGUMENT, HR_RES_PERMANENT},
	{CURLE_TOO_MANY_REDIRECTS, HR_RES_PERMANENT},
};

static const code_rule *match(const code_rule *rules, size_t n, long code, const char *enhanced)
{
	for (size_t i = 0; i < n; i++) {
		const code_rule *r = &rules[i];
		if (code < r->lo || code > r->hi)
			continue;
		if (r->enhanced && (!enhanced || strncmp(enhanced, r->enhanced, strlen(r->enhanced)) != 0))
			continue;
		return r;
	}
	return NULL;
}

uint8_t wk_classify_curl(CURLcode rc)
{
	for (size_t i = 0; i < sizeof curl_rules / sizeof curl_rules[0]; i++)
		if (curl_rules[i].rc == rc)
			return curl_rules[i].status;
	return HR_RES_RETRY;
}

uint8_t wk_classify_smtp(CURLcode rc, long code, const char *enhanced)
{
	/* A 4xx/5xx reply is the server's verdict whatever libcurl made of it
	 * (libcurl turns a refused RCPT into CURLE_SEND_ERROR, for instance). */
	if (code >= 400) {
		const code_rule *r = match(smtp_rules, sizeof smtp_rules / sizeof smtp_rules[0], code, enhanced);
		return r ? r->status : HR_RES_PERMANENT;
	}
	if (rc != CURLE_OK)
		return wk_classify_curl(rc);
	/* libcurl succeeded: the final reply was 2xx (or the server sent none we saw). */
	return HR_RES_SENT;
}

uint8_t wk_classify_http(CURLcode rc, long status)
{
	/* A transport error decides even if a status line arrived: the answer
	 * was cut short, so we cannot know what the provider did. */
	if (rc != CURLE_OK)
		return wk_classify_curl(rc);
	const code_rule *r = match(http_rules, sizeof http_rules / sizeof http_rules[0], status, NULL);
	return r ? r->status : HR_RES_PERMANENT;
}
