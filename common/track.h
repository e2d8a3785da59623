/*
 * track.h -- signed tracking tokens: open pixels, click redirects and
 * one-click unsubscribe links in emails.
 *
 * A token names what it is for (kind), the tenant, the message and the
 * contact (0 = none), and for a click the target URL itself:
 *
 *   token = base64url( payload | mac )           (no padding)
 *   payload = 1 (version) | kind ('o','c','u') | tenant id (u32 BE)
 *           | message id (u64 BE) | contact id (u64 BE) | [url bytes, clicks]
 *   mac = the first 16 bytes of HMAC-SHA256(tenant key, payload)
 *   tenant key = HMAC-SHA256(master key, "herald-track-v1:" + tenant id)
 *
 * herald-api verifies with the master key; a worker only ever holds the
 * per-tenant key (handed over with the provider account, like the account's
 * own secrets), so a worker cannot sign for another tenant.  Because the
 * click URL is inside the MAC, the click endpoint redirects only to URLs a
 * message really contained: never an open redirect.  Changing any byte --
 * kind, ids, URL or MAC -- makes the token invalid, and ids cannot be
 * enumerated without the key.  A 128-bit MAC (truncation as RFC 2104 allows)
 * keeps links short; forging one takes ~2^128 tries.
 *
 * Errors: decode returns false for anything that is not a valid token, and
 * says nothing about why (the endpoints answer 404 alike).
 * Thread safety: pure functions.
 */
#ifndef HERALD_TRACK_H
#define HERALD_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto.h"

#define HR_TRACK_MAC_LEN 16
#define HR_TRACK_MAX_URL 2048

typedef enum hr_track_kind {
	HR_TRACK_OPEN = 'o',
	HR_TRACK_CLICK = 'c',
	HR_TRACK_UNSUBSCRIBE = 'u',
} hr_track_kind;

typedef struct hr_track_token {
	hr_track_kind kind;
	uint32_t tenant_id;
	uint64_t message_id;
	uint64_t contact_id; /* 0 = no contact */
	const char *url;     /* clicks: the target (http or https), url_len bytes */
	size_t url_len;
} hr_track_token;

/* The tenant's tracking key, derived from the master key. */
void hr_track_tenant_key(const uint8_t master[HR_KEY_LEN], uint32_t tenant_id, uint8_t out[HR_KEY_LEN]);

/* A URL a click token may carry: http(s)://, printable ASCII, no spaces, at most HR_TRACK_MAX_URL bytes. */
bool hr_track_url_ok(const char *url, size_t len);

/* Encode t under the tenant key (heap string, hr_free).  NULL when t->url is not acceptable. */
char *hr_track_encode(const uint8_t tenant_key[HR_KEY_LEN], const hr_track_token *t);

/*
 * Verify and decode a token with the master key.  On success out->url points
 * into *buf (heap, hr_free; set even on failure to NULL).
 */
bool hr_track_decode(const uint8_t master[HR_KEY_LEN], const char *token, hr_track_token *out, char **buf)
	HR_MUST_CHECK;

#endif
