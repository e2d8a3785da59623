/*
 * render.h -- turn a job into a message: the Liquid side of the worker.
 *
 * A batch's `content` (wire.h) is a JSON object of Liquid sources, one per
 * field of its channel:
 *   email      subject, html, text, from, reply_to   (from, and html or text, required)
 *   sms        text                                   (required)
 *   messenger  text                                   (required)
 *   push       title, body                            (body required)
 *   webhook    body                                   (required)
 * An optional member `snippets` {name: source} holds the partials that
 * {% render %} / {% include %} find: a stored version carries the snippets
 * it rendered when it was saved (api/templates.c), so a version renders the
 * same whenever it is sent.  Any other name is a missing partial (render
 * error).  wk_content_open compiles them once per lease: stored templates
 * (template_id != 0) through the process-wide liquid_cache keyed by
 * (tenant_id, "template_id:field", template_version), so a template is
 * parsed once per process, not per lease; inline content (template_id 0)
 * is compiled for the lease and freed with it.
 *
 * wk_render_job renders every field against the job's `data` (a JSON
 * object) plus a `herald` object the worker adds -- {message_id, tenant, to,
 * attempt, channel, lane} -- and, for the provider's templates, `message`
 * (the rendered fields) and `json` (the same values as JSON string literals,
 * quotes included: the engine has no json filter).  It also renders the
 * provider's HTTP body template and, for bulk email, the unsubscribe URL
 * (data's top-level "unsubscribe_url" string wins over the provider's
 * template, which wins over herald's own one-click URL when tracking is on;
 * see wk_render_set_public_url).
 *
 * A parse or render error is the message's fault: the caller reports the
 * job PERMANENT with err->msg (the Liquid message).
 *
 * Ownership: wk_message owns its text and is reused across jobs
 * (wk_message_reset keeps the memory).  Thread safety: a wk_render is used
 * by the loop thread only (its renderer is single-threaded); the cache
 * inside is thread-safe.
 */
#ifndef HERALD_WORKERS_RENDER_H
#define HERALD_WORKERS_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "provider.h"
#include "wire.h"

typedef enum wk_field {
	WK_F_SUBJECT,
	WK_F_HTML,
	WK_F_TEXT,
	WK_F_FROM,
	WK_F_REPLY_TO,
	WK_F_TITLE,
	WK_F_BODY,
	WK_F_CONTENT_COUNT, /* the fields above come from content; below, from the provider */
	WK_F_REQUEST = WK_F_CONTENT_COUNT, /* rendered HTTP request body */
	WK_F_UNSUBSCRIBE,                   /* List-Unsubscribe URL */
	WK_F_COUNT
} wk_field;

typedef struct wk_message {
	wk_buf text;                  /* all fields, each NUL-terminated */
	size_t off[WK_F_COUNT];       /* field start in text */
	bool set[WK_F_COUNT];         /* field rendered */
} wk_message;

/* A field's text, or "" when it was not rendered. */
const char *wk_msg_get(const wk_message *m, wk_field f);
void wk_message_reset(wk_message *m);
void wk_message_free(wk_message *m);

typedef struct wk_render wk_render;
typedef struct wk_content wk_content;

/* A cache of at most max_entries compiled templates and max_bytes of them. */
wk_render *wk_render_new(size_t max_entries, size_t max_bytes);
void wk_render_free(wk_render *r);

typedef struct wk_render_stats {
	uint64_t renders;     /* jobs rendered */
	uint64_t errors;      /* jobs whose render failed */
	uint64_t cache_hits, cache_misses;
	size_t cache_entries, cache_bytes;
} wk_render_stats;
wk_render_stats wk_render_stats_get(wk_render *r);

/*
 * herald-api's public base URL (the worker's track_public_url); NULL or ""
 * = no tracking.  With it, emails of accounts that carry the tenant's
 * tracking key get tracked links and the open pixel (as the tenant chose),
 * `herald.unsubscribe_url` for templates, and -- on the bulk lane, unless
 * data or the account name another -- herald's one-click unsubscribe URL in
 * List-Unsubscribe (workers/tracking.h).
 */
void wk_render_set_public_url(wk_render *r, const char *url);

/* Compile a batch's content.  False: the content is unusable for every job. */
bool wk_content_open(wk_render *r, const hr_job_batch *b, wk_content **out, hr_err *err) HR_MUST_CHECK;
void wk_content_close(wk_render *r, wk_content *c);

/* Render job j of batch b into m (reset first). */
bool wk_render_job(wk_render *r, wk_content *c, const hr_job_batch *b, const hr_job *j,
		   const wk_provider *p, wk_message *m, hr_err *err) HR_MUST_CHECK;

#endif
