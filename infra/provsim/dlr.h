/*
 * dlr.h -- provsim's delivery receipts: after accepting a message for an
 * account configured with dlr_url, the simulator reports its fate to that
 * URL, as a real SMS or messenger provider would:
 *
 *   POST <dlr_url>  Content-Type: application/json
 *   {"provider_id":"...","message_id":"...","status":"delivered"}
 *   {"provider_id":"...","message_id":"...","status":"undelivered","reason":"hard_bounce"}
 *
 * (the second for recipients starting with the account's fail_to prefix).
 *
 * Best-effort and asynchronous: ps_dlr_enqueue() copies the receipt into a
 * bounded ring (PS_DLR_QUEUE entries) and returns; when the ring is full the
 * receipt is dropped and counted.  One background thread takes batches off
 * the ring and posts them one by one with a reused libcurl handle (keep-alive
 * to the receiver), 2 s timeout each; a non-2xx answer or a transport error
 * counts as failed, with no retry.  ps_dlr_stop() gives the queue up to 2 s
 * to drain, then drops the rest.
 *
 * The url pointer passed to enqueue must stay valid until ps_dlr_stop()
 * (fault configurations do: faults.h keeps them until freed).
 *
 * Thread safety: enqueue and stats from any thread; start/stop from one.
 * curl_global_init() must have been called.
 */
#ifndef HERALD_PROVSIM_DLR_H
#define HERALD_PROVSIM_DLR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define PS_WUR __attribute__((warn_unused_result))
#define PS_DLR_QUEUE 16384

typedef struct ps_dlr ps_dlr;

bool ps_dlr_start(ps_dlr **out, char *err, size_t errlen) PS_WUR;
void ps_dlr_stop(ps_dlr *d);

/* Ids longer than 127 bytes are truncated. */
void ps_dlr_enqueue(ps_dlr *d, const char *url, const char *provider_id, const char *msg_id,
		    bool failed);

/* Adds "queued", "sent", "failed", "dropped" to out (a ps_stats dlr source). */
void ps_dlr_stats_json(void *d, json_t *out);

#endif
