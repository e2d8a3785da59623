/*
 * tracking.h -- engagement tracking in an email: links rewritten to herald's
 * click endpoint, an open pixel, and herald's one-click unsubscribe URL.
 *
 * The worker tracks when both halves are there: its own `track_public_url`
 * setting (where herald-api is reachable from the recipients' mail clients)
 * and the provider account's "tracking" object, which the scheduler adds
 * from the tenant's settings (common/providers.c): the tenant's tracking key
 * (derived from the master key; it signs this tenant's tokens only) and
 * whether opens and clicks are tracked.  Tokens: common/track.h.
 *
 * wk_track_html rewrites every <a href="http(s)://..."> (quoted or not;
 * &amp; in the value decoded first, as a browser would) to
 * BASE/v1/t/click/TOKEN, where the token signs the original URL; links to
 * BASE itself (the unsubscribe page), mailto:, tel:, anchors and anything
 * that is not a plain http(s) URL are left alone.  The pixel <img> goes
 * before </body>, or at the end.  Bytes outside the rewritten attributes are
 * copied unchanged.
 *
 * Thread safety: pure functions over caller-owned buffers.
 */
#ifndef HERALD_WORKERS_TRACKING_H
#define HERALD_WORKERS_TRACKING_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "crypto.h"

typedef struct wk_track_ctx {
	const char *base;        /* public base URL, no trailing slash */
	const uint8_t *key;      /* the tenant's tracking key (HR_KEY_LEN bytes) */
	bool opens, clicks;      /* what the tenant tracks */
	uint32_t tenant_id;
	uint64_t message_id;
	uint64_t contact_id;     /* 0 = none */
} wk_track_ctx;

/* Append html with links rewritten (when clicks) and the pixel (when opens) to out. */
void wk_track_html(const wk_track_ctx *t, const char *html, wk_buf *out);

/* Append BASE/v1/unsubscribe/TOKEN to out. */
void wk_track_unsubscribe_url(const wk_track_ctx *t, wk_buf *out);

#endif
