/*
 * wire.h -- the ZeroMQ wire format between herald-scheduler and herald-worker.
 *
 * Every ZeroMQ message is ONE frame (plus the ROUTER identity frame on the
 * scheduler side, which is ZeroMQ's business, not ours) holding one typed,
 * versioned herald message:
 *
 *   offset 0  u8   magic 0xE7
 *   offset 1  u8   version  (HR_WIRE_VERSION)
 *   offset 2  u8   type     (hr_wire_type)
 *   offset 3  u8   flags    (0; reserved, must be 0)
 *   offset 4  ...  body, type-specific
 *
 * Integers are little-endian fixed width; strings are u32 length + bytes
 * (no NUL on the wire; decoded hr_str point into the frame and are NOT
 * NUL-terminated).  Decoders check every length against the bytes left,
 * reject unknown versions, types, flags, channel/lane/status values and
 * trailing garbage, and never read out of bounds: they are fuzzed
 * (tests/fuzz).  Limits: HR_WIRE_MAX_FRAME bytes per frame, HR_WIRE_MAX_JOBS
 * jobs or results per batch.
 *
 * Flow (credit-based, pull): a worker connects a DEALER to the scheduler's
 * ROUTER for its lane, sends HELLO (channel, lane, credit = how many job
 * batches it may hold), receives JOBS batches (each one lease), sends
 * RESULTS for every job of a batch (possibly in several RESULTS messages),
 * and a CREDIT message when it can take more.  HEARTBEAT both ways every
 * second; a worker silent for HR_WIRE_DEAD_MS is dead and its leases are
 * re-dispatched.  On SIGTERM a worker sends BYE listing the batches it hands
 * back unstarted, finishes the rest, and exits.
 *
 * Memory: encoders append to an hr_buf (growable, caller-owned).  Decoders
 * fill caller-owned structs whose hr_str fields point into the frame, and
 * whose arrays are allocated with hr_malloc and released by the matching
 * hr_wire_*_free; the frame must outlive the decoded struct.
 *
 * Thread safety: no shared state; any thread may call any function.
 */
#ifndef HERALD_WIRE_H
#define HERALD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define HR_WIRE_MAGIC 0xE7
#define HR_WIRE_VERSION 1
#define HR_WIRE_MAX_FRAME (64u << 20)
#define HR_WIRE_MAX_JOBS 8192
#define HR_WIRE_DEAD_MS 5000

typedef enum hr_wire_type {
	HR_W_HELLO = 1,     /* worker -> scheduler */
	HR_W_JOBS = 2,      /* scheduler -> worker */
	HR_W_RESULTS = 3,   /* worker -> scheduler */
	HR_W_CREDIT = 4,    /* worker -> scheduler */
	HR_W_HEARTBEAT = 5, /* both ways; no body */
	HR_W_BYE = 6,       /* worker -> scheduler: draining */
} hr_wire_type;

typedef enum hr_channel {
	HR_CH_EMAIL = 1,
	HR_CH_SMS = 2,
	HR_CH_MESSENGER = 3,
	HR_CH_PUSH = 4,
	HR_CH_WEBHOOK = 5,
} hr_channel;

typedef enum hr_lane {
	HR_LANE_TRANSACTIONAL = 1,
	HR_LANE_BULK = 2,
} hr_lane;

typedef enum hr_result_status {
	HR_RES_SENT = 1,      /* accepted by the provider */
	HR_RES_RETRY = 2,     /* temporary failure: try again (retry_after_ms if known) */
	HR_RES_PERMANENT = 3, /* permanent failure: never retry (reason says why) */
	HR_RES_THROTTLED = 4, /* provider said slow down (429, SMTP 421/454): not a failure */
	HR_RES_BOUNCED = 5,   /* permanent, and the address must be suppressed (hard bounce) */
} hr_result_status;

/* Bytes not owned, not NUL-terminated. */
typedef struct hr_str {
	const char *p;
	uint32_t len;
} hr_str;

/* A growable byte buffer (caller-owned; hr_buf_free releases). */
typedef struct hr_buf {
	uint8_t *data;
	size_t len, cap;
} hr_buf;

void hr_buf_reset(hr_buf *b);
void hr_buf_free(hr_buf *b);

typedef struct hr_hello {
	hr_str worker_id; /* unique per process, e.g. "host:pid:random" */
	uint8_t channel;  /* hr_channel */
	uint8_t lane;     /* hr_lane */
	uint32_t credit;  /* job batches it may hold at once */
} hr_hello;

typedef struct hr_job {
	uint64_t message_id; /* the provider idempotency key / Message-ID */
	uint32_t attempt;    /* 1 for the first try */
	hr_str address;      /* email address, E.164 phone, device token or URL */
	hr_str data;         /* JSON object: what the template sees (contact, message data) */
} hr_job;

typedef struct hr_job_batch {
	uint64_t lease_id;        /* the scheduler's id for this batch; RESULTS name it */
	uint64_t lease_deadline;  /* unix ms after which the scheduler re-dispatches */
	uint32_t tenant_id;
	hr_str tenant;            /* tenant slug, for logs and provider calls */
	uint8_t channel;          /* hr_channel */
	uint8_t lane;             /* hr_lane */
	uint64_t template_id;     /* 0 = inline content */
	uint32_t template_version;
	hr_str content;           /* JSON object: the channel's Liquid sources, e.g.
				     {"subject":..,"html":..,"text":..,"from":..} or {"text":..} */
	hr_str provider;          /* JSON object: the provider account, e.g.
				     {"name":..,"transport":"smtp|http|sink","url":..,"auth":..,...} */
	uint32_t njobs;
	hr_job *jobs;
} hr_job_batch;

typedef struct hr_result {
	uint64_t message_id;
	uint8_t status;           /* hr_result_status */
	uint32_t latency_us;      /* send call duration */
	uint32_t retry_after_ms;  /* RETRY / THROTTLED: provider's hint, 0 = none */
	hr_str provider_id;       /* SENT: the provider's id for the message */
	hr_str reason;            /* failures: one line, e.g. "smtp 550 5.1.1 no such user" */
} hr_result;

typedef struct hr_result_batch {
	uint64_t lease_id;
	uint32_t tenant_id;
	uint32_t nresults;
	hr_result *results;
} hr_result_batch;

typedef struct hr_credit {
	uint32_t credit; /* additional job batches it may take */
} hr_credit;

typedef struct hr_bye {
	uint32_t nleases;
	uint64_t *leases; /* batches handed back unstarted */
} hr_bye;

/* Encoders: append one whole frame to b (which they do not reset). */
void hr_wire_encode_hello(hr_buf *b, const hr_hello *m);
void hr_wire_encode_jobs(hr_buf *b, const hr_job_batch *m);
void hr_wire_encode_results(hr_buf *b, const hr_result_batch *m);
void hr_wire_encode_credit(hr_buf *b, const hr_credit *m);
void hr_wire_encode_heartbeat(hr_buf *b);
void hr_wire_encode_bye(hr_buf *b, const hr_bye *m);

/* The type of a frame after checking magic, version and flags. */
bool hr_wire_peek(const void *frame, size_t len, hr_wire_type *type, hr_err *err) HR_MUST_CHECK;

/* Decoders: the frame must be of that type (checked). */
bool hr_wire_decode_hello(const void *frame, size_t len, hr_hello *m, hr_err *err) HR_MUST_CHECK;
bool hr_wire_decode_jobs(const void *frame, size_t len, hr_job_batch *m, hr_err *err) HR_MUST_CHECK;
bool hr_wire_decode_results(const void *frame, size_t len, hr_result_batch *m, hr_err *err) HR_MUST_CHECK;
bool hr_wire_decode_credit(const void *frame, size_t len, hr_credit *m, hr_err *err) HR_MUST_CHECK;
bool hr_wire_decode_bye(const void *frame, size_t len, hr_bye *m, hr_err *err) HR_MUST_CHECK;

void hr_wire_jobs_free(hr_job_batch *m);
void hr_wire_results_free(hr_result_batch *m);
void hr_wire_bye_free(hr_bye *m);

/* Names for logs and metrics ("email", "bulk", "sent"...); "?" when unknown. */
const char *hr_channel_name(int channel);
const char *hr_lane_name(int lane);
const char *hr_result_name(int status);
/* Parse a name back; 0 when unknown. */
int hr_channel_parse(const char *name);
int hr_lane_parse(const char *name);

#endif
