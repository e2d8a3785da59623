/*
 * wire.c -- the scheduler<->worker frame codec; the contract is in wire.h,
 * the engineer's guide in docs/wire.md.
 *
 * Frame = 4-byte header (magic 0xE7, version 1, type, flags 0) + body.
 * Integers little-endian fixed width; str = u32 length + that many bytes.
 * Bodies, field by field (widths in bytes):
 *
 *   HELLO      worker_id str, channel u8, lane u8, credit u32
 *   JOBS       lease_id u64, lease_deadline u64, tenant_id u32, tenant str,
 *              channel u8, lane u8, template_id u64, template_version u32,
 *              content str, provider str, njobs u32,
 *              then njobs x { message_id u64, attempt u32, address str, data str }
 *   RESULTS    lease_id u64, tenant_id u32, nresults u32,
 *              then nresults x { message_id u64, status u8, latency_us u32,
 *                                retry_after_ms u32, provider_id str, reason str }
 *   CREDIT     credit u32
 *   HEARTBEAT  (empty)
 *   BYE        nleases u32, then nleases x lease_id u64
 *
 * Decoding rules beyond wire.h: a frame is at most HR_WIRE_MAX_FRAME bytes;
 * a count (njobs, nresults, nleases) is at most HR_WIRE_MAX_JOBS and must fit
 * in the bytes left at its minimum item size (20 per job, 25 per result, 8
 * per lease) -- checked before the array is allocated, so a hostile count
 * cannot make us allocate; a JOBS batch holds at least one job (an empty
 * lease could never be settled by RESULTS); RESULTS and BYE may be empty;
 * message ids are never 0; channel, lane and status must be known enum
 * values; no bytes may follow the body.  hr_wire_peek rejects a HEARTBEAT
 * with a body, since HEARTBEAT has no decoder of its own.
 *
 * Decoders overwrite the caller's struct (they do not free what it held), and
 * on failure leave it zeroed with nothing allocated.  Encoders do not check
 * the limits: a sender that exceeds them produces a frame the receiver
 * rejects.
 *
 * Cost: decoding allocates one array per frame and copies no string;
 * encoding computes the frame size first and grows the buffer at most once.
 */
#include "wire.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

#define HEADER_LEN 4
#define JOB_MIN 20    /* message_id 8 + attempt 4 + two empty strs 4 + 4 */
#define RESULT_MIN 25 /* message_id 8 + status 1 + latency 4 + retry 4 + two strs 4 + 4 */
#define LEASE_MIN 8

/* ---- names ---- */

static const char *const channel_names[] = {
	[HR_CH_EMAIL] = "email",   [HR_CH_SMS] = "sms",         [HR_CH_MESSENGER] = "messenger",
	[HR_CH_PUSH] = "push",     [HR_CH_WEBHOOK] = "webhook",
};
static const char *const lane_names[] = {
	[HR_LANE_TRANSACTIONAL] = "transactional",
	[HR_LANE_BULK] = "bulk",
};
static const char *const result_names[] = {
	[HR_RES_SENT] = "sent",           [HR_RES_RETRY] = "retry",     [HR_RES_PERMANENT] = "permanent",
	[HR_RES_THROTTLED] = "throttled", [HR_RES_BOUNCED] = "bounced",
};
static const char *const type_names[] = {
	[HR_W_HELLO] = "hello",   [HR_W_JOBS] = "jobs",           [HR_W_RESULTS] = "results",
	[HR_W_CREDIT] = "credit", [HR_W_HEARTBEAT] = "heartbeat", [HR_W_BYE] = "bye",
};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *name_of(const char *const *names, int n, int v)
{
	return v > 0 && v < n ? names[v] : "?";
}

static int parse_name(const char *const *names, int n, const char *name)
{
	if (!name)
		return 0;
	for (int i = 1; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return 0;
}

const char *hr_channel_name(int channel) { return name_of(channel_names, NELEM(channel_names), channel); }
const char *hr_lane_name(int lane) { return name_of(lane_names, NELEM(lane_names), lane); }
const char *hr_result_name(int status) { return name_of(result_names, NELEM(result_names), status); }
int hr_channel_parse(const char *name) { return parse_name(channel_names, NELEM(channel_names), name); }
int hr_lane_parse(const char *name) { return parse_name(lane_names, NELEM(lane_names), name); }

static bool channel_ok(uint8_t v) { return v >= HR_CH_EMAIL && v <= HR_CH_WEBHOOK; }
static bool lane_ok(uint8_t v) { return v >= HR_LANE_TRANSACTIONAL && v <= HR_LANE_BULK; }
static bool status_ok(uint8_t v) { return v >= HR_RES_SENT && v <= HR_RES_BOUNCED; }

/* ---- buffer ---- */

void hr_buf_reset(hr_buf *b)
{
	b->len = 0; /* keep the capacity: buffers are reused per message */
}

void hr_buf_free(hr_buf *b)
{
	hr_free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Room for n more bytes; returns where they go.  Grows at most once. */
static uint8_t *buf_reserve(hr_buf *b, size_t n)
{
	if (b->cap - b->len < n) {
		if (n > SIZE_MAX / 2 - b->len)
			hr_panic("wire: frame of %zu bytes cannot be buffered", n);
		size_t cap = b->cap ? b->cap * 2 : 256;
		if (cap < b->len + n)
			cap = b->len + n;
		b->data = hr_realloc(b->data, cap);
		b->cap = cap;
	}
	return b->data + b->len;
}

/* ---- encoding: writers advance a pointer into reserved space ---- */

static inline uint8_t *put_u8(uint8_t *w, uint8_t v)
{
	*w = v;
	return w + 1;
}

static inline uint8_t *put_u32(uint8_t *w, uint32_t v)
{
	w[0] = (uint8_t)v;
	w[1] = (uint8_t)(v >> 8);
	w[2] = (uint8_t)(v >> 16);
	w[3] = (uint8_t)(v >> 24);
	return w + 4;
}

static inline uint8_t *put_u64(uint8_t *w, uint64_t v)
{
	put_u32(w, (uint32_t)v);
	put_u32(w + 4, (uint32_t)(v >> 32));
	return w + 8;
}

static inline uint8_t *put_str(uint8_t *w, hr_str s)
{
	w = put_u32(w, s.len);
	if (s.len) /* a zeroed hr_str has p == NULL: memcpy must not see it */
		memcpy(w, s.p, s.len);
	return w + s.len;
}

/* Reserve size bytes, write the header, return where the body goes. */
static uint8_t *begin_frame(hr_buf *b, hr_wire_type type, size_t size)
{
	uint8_t *w = buf_reserve(b, size);
	w[0] = HR_WIRE_MAGIC;
	w[1] = HR_WIRE_VERSION;
	w[2] = (uint8_t)type;
	w[3] = 0;
	return w + HEADER_LEN;
}

/* Account for the bytes written; they must be exactly the size reserved. */
static void end_frame(hr_buf *b, const uint8_t *w, size_t size)
{
	size_t n = (size_t)(w - (b->data + b->len));
	if (n != size)
		hr_panic("wire: encoder wrote %zu bytes, sized %zu", n, size);
	b->len += n;
}

void hr_wire_encode_hello(hr_buf *b, const hr_hello *m)
{
	size_t size = HEADER_LEN + 4 + (size_t)m->worker_id.len + 1 + 1 + 4;
	uint8_t *w = begin_frame(b, HR_W_HELLO, size);
	w = put_str(w, m->worker_id);
	w = put_u8(w, m->channel);
	w = put_u8(w, m->lane);
	w = put_u32(w, m->credit);
	end_frame(b, w, size);
}

void hr_wire_encode_jobs(hr_buf *b, const hr_job_batch *m)
{
	size_t size = HEADER_LEN + 8 + 8 + 4 + 4 + (size_t)m->tenant.len + 1 + 1 + 8 + 4 + 4 +
		      (size_t)m->content.len + 4 + (size_t)m->provider.len + 4;
	for (uint32_t i = 0; i < m->njobs; i++)
		size += JOB_MIN + (size_t)m->jobs[i].address.len + m->jobs[i].data.len;
	uint8_t *w = begin_frame(b, HR_W_JOBS, size);
	w = put_u64(w, m->lease_id);
	w = put_u64(w, m->lease_deadline);
	w = put_u32(w, m->tenant_id);
	w = put_str(w, m->tenant);
	w = put_u8(w, m->channel);
	w = put_u8(w, m->lane);
	w = put_u64(w, m->template_id);
	w = put_u32(w, m->template_version);
	w = put_str(w, m->content);
	w = put_str(w, m->provider);
	w = put_u32(w, m->njobs);
	for (uint32_t i = 0; i < m->njobs; i++) {
		const hr_job *j = &m->jobs[i];
		w = put_u64(w, j->message_id);
		w = put_u32(w, j->attempt);
		w = put_str(w, j->address);
		w = put_str(w, j->data);
	}
	end_frame(b, w, size);
}

void hr_wire_encode_results(hr_buf *b, const hr_result_batch *m)
{
	size_t size = HEADER_LEN + 8 + 4 + 4;
	for (uint32_t i = 0; i < m->nresults; i++)
		size += RESULT_MIN + (size_t)m->results[i].provider_id.len + m->results[i].reason.len;
	uint8_t *w = begin_frame(b, HR_W_RESULTS, size);
	w = put_u64(w, m->lease_id);
	w = put_u32(w, m->tenant_id);
	w = put_u32(w, m->nresults);
	for (uint32_t i = 0; i < m->nresults; i++) {
		const hr_result *r = &m->results[i];
		w = put_u64(w, r->message_id);
		w = put_u8(w, r->status);
		w = put_u32(w, r->latency_us);
		w = put_u32(w, r->retry_after_ms);
		w = put_str(w, r->provider_id);
		w = put_str(w, r->reason);
	}
	end_frame(b, w, size);
}

void hr_wire_encode_credit(hr_buf *b, const hr_credit *m)
{
	size_t size = HEADER_LEN + 4;
	uint8_t *w = begin_frame(b, HR_W_CREDIT, size);
	w = put_u32(w, m->credit);
	end_frame(b, w, size);
}

void hr_wire_encode_heartbeat(hr_buf *b)
{
	uint8_t *w = begin_frame(b, HR_W_HEARTBEAT, HEADER_LEN);
	end_frame(b, w, HEADER_LEN);
}

void hr_wire_encode_bye(hr_buf *b, const hr_bye *m)
{
	size_t size = HEADER_LEN + 4 + (size_t)m->nleases * LEASE_MIN;
	uint8_t *w = begin_frame(b, HR_W_BYE, size);
	w = put_u32(w, m->nleases);
	for (uint32_t i = 0; i < m->nleases; i++)
		w = put_u64(w, m->leases[i]);
	end_frame(b, w, size);
}

/* ---- decoding: a bounds-checked cursor ---- */

/*
 * Errors name the frame, the item (when inside an array) and the field, and
 * the offset; they are formatted only on failure, so the cursor carries the
 * item context as a name and an index rather than as a string.
 */
typedef struct cursor {
	const uint8_t *p;
	size_t len, off;  /* off <= len always */
	const char *frame; /* "jobs", ... */
	const char *item;  /* "job", "result", "lease"; NULL at the top level */
	uint32_t idx;      /* index of the item being read */
	hr_err *err;
} cursor;

static size_t cur_left(const cursor *c)
{
	return c->len - c->off;
}

/* Fail with "<frame> frame: [<item> <idx>: ]<detail>" and field "<frame>[.<item>s[idx]].<name>". */
static bool cur_fail(const cursor *c, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool cur_fail(const cursor *c, const char *name, const char *fmt, ...)
{
	if (!c->err)
		return false;
	char detail[384], field[128], where[64] = "";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	if (c->item) {
		snprintf(where, sizeof where, "%s %" PRIu32 ": ", c->item, c->idx);
		snprintf(field, sizeof field, "%s.%ss[%" PRIu32 "].%s", c->frame, c->item, c->idx, name);
	} else {
		snprintf(field, sizeof field, "%s.%s", c->frame, name);
	}
	return hr_fail(c->err, HR_ERR_INVALID, field, "%s frame: %s%s", c->frame, where, detail);
}

static bool need(cursor *c, const char *name, size_t n)
{
	if (cur_left(c) >= n)
		return true;
	return cur_fail(c, name, "%s needs %zu bytes, only %zu left at offset %zu", name, n, cur_left(c),
			c->off);
}

static inline bool rd_u8(cursor *c, const char *name, uint8_t *v)
{
	if (!need(c, name, 1))
		return false;
	*v = c->p[c->off++];
	return true;
}

static inline uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline bool rd_u32(cursor *c, const char *name, uint32_t *v)
{
	if (!need(c, name, 4))
		return false;
	*v = get_u32(c->p + c->off);
	c->off += 4;
	return true;
}

static inline bool rd_u64(cursor *c, const char *name, uint64_t *v)
{
	if (!need(c, name, 8))
		return false;
	*v = (uint64_t)get_u32(c->p + c->off) | (uint64_t)get_u32(c->p + c->off + 4) << 32;
	c->off += 8;
	return true;
}

static inline bool rd_str(cursor *c, const char *name, hr_str *s)
{
	uint32_t n;
	if (!rd_u32(c, name, &n))
		return false;
	/* Compare against what is left, never compute off + n: n is hostile. */
	if (n > cur_left(c))
		return cur_fail(c, name, "%s length %" PRIu32 " exceeds the %zu bytes left at offset %zu", name,
				n, cur_left(c), c->off);
	s->p = (const char *)c->p + c->off;
	s->len = n;
	c->off += n;
	return true;
}

static bool rd_id(cursor *c, const char *name, uint64_t *v)
{
	size_t at = c->off;
	if (!rd_u64(c, name, v))
		return false;
	if (*v == 0)
		return cur_fail(c, name, "%s is 0 at offset %zu", name, at);
	return true;
}

static bool rd_enum(cursor *c, const char *name, bool (*ok)(uint8_t), uint8_t *v)
{
	size_t at = c->off;
	if (!rd_u8(c, name, v))
		return false;
	if (!ok(*v))
		return cur_fail(c, name, "unknown %s %u at offset %zu", name, *v, at);
	return true;
}

/* A count: within the limit, and its items fit in what is left (before any allocation). */
static bool rd_count(cursor *c, const char *name, size_t item_min, uint32_t *n)
{
	size_t at = c->off;
	if (!rd_u32(c, name, n))
		return false;
	if (*n > HR_WIRE_MAX_JOBS)
		return cur_fail(c, name, "%s %" PRIu32 " at offset %zu exceeds the limit %d", name, *n, at,
				HR_WIRE_MAX_JOBS);
	/* *n <= 8192, so the product cannot overflow. */
	if ((size_t)*n * item_min > cur_left(c))
		return cur_fail(c, name,
				"%s %" PRIu32 " needs at least %zu bytes, only %zu left at offset %zu", name, *n,
				(size_t)*n * item_min, cur_left(c), c->off);
	return true;
}

static bool at_end(cursor *c)
{
	c->item = NULL;
	if (c->off == c->len)
		return true;
	return cur_fail(c, "end", "%zu trailing bytes after the body at offset %zu", cur_left(c), c->off);
}

static bool check_header(const uint8_t *p, size_t len, hr_wire_type *type, hr_err *err)
{
	if (len < HEADER_LEN)
		return hr_fail(err, HR_ERR_INVALID, "header", "frame of %zu bytes is shorter than the %d-byte header",
			       len, HEADER_LEN);
	if (len > HR_WIRE_MAX_FRAME)
		return hr_fail(err, HR_ERR_INVALID, "header", "frame of %zu bytes exceeds the limit of %u bytes", len,
			       HR_WIRE_MAX_FRAME);
	if (p[0] != HR_WIRE_MAGIC)
		return hr_fail(err, HR_ERR_INVALID, "header.magic", "bad magic 0x%02X, want 0x%02X", p[0],
			       HR_WIRE_MAGIC);
	if (p[1] != HR_WIRE_VERSION)
		return hr_fail(err, HR_ERR_INVALID, "header.version", "unsupported version %u, want %d", p[1],
			       HR_WIRE_VERSION);
	if (p[3] != 0)
		return hr_fail(err, HR_ERR_INVALID, "header.flags", "reserved flags 0x%02X set, want 0", p[3]);
	if (p[2] < HR_W_HELLO || p[2] > HR_W_BYE)
		return hr_fail(err, HR_ERR_INVALID, "header.type", "unknown type %u", p[2]);
	*type = (hr_wire_type)p[2];
	return true;
}

bool hr_wire_peek(const void *frame, size_t len, hr_wire_type *type, hr_err *err)
{
	if (!check_header(frame, len, type, err))
		return false;
	if (*type == HR_W_HEARTBEAT && len != HEADER_LEN)
		return hr_fail(err, HR_ERR_INVALID, "heartbeat.end",
			       "heartbeat frame: %zu trailing bytes after the body at offset %d", len - HEADER_LEN,
			       HEADER_LEN);
	return true;
}

/* Check the header and that the frame is of the wanted type; set up the cursor on the body. */
static bool open_frame(cursor *c, const void *frame, size_t len, hr_wire_type want, hr_err *err)
{
	hr_wire_type type;
	if (!check_header(frame, len, &type, err))
		return false;
	if (type != want)
		return hr_fail(err, HR_ERR_INVALID, "header.type", "not a %s frame: got a %s frame (type %d)",
			       type_names[want], type_names[type], (int)type);
	*c = (cursor){.p = frame, .len = len, .off = HEADER_LEN, .frame = type_names[want], .err = err};
	return true;
}

bool hr_wire_decode_hello(const void *frame, size_t len, hr_hello *m, hr_err *err)
{
	cursor c;
	memset(m, 0, sizeof *m);
	if (!open_frame(&c, frame, len, HR_W_HELLO, err) || !rd_str(&c, "worker_id", &m->worker_id) ||
	    !rd_enum(&c, "channel", channel_ok, &m->channel) || !rd_enum(&c, "lane", lane_ok, &m->lane) ||
	    !rd_u32(&c, "credit", &m->credit) || !at_end(&c)) {
		memset(m, 0, sizeof *m);
		return false;
	}
	return true;
}

bool hr_wire_decode_jobs(const void *frame, size_t len, hr_job_batch *m, hr_err *err)
{
	cursor c;
	uint32_t n;
	memset(m, 0, sizeof *m);
	if (!open_frame(&c, frame, len, HR_W_JOBS, err) || !rd_u64(&c, "lease_id", &m->lease_id) ||
	    !rd_u64(&c, "lease_deadline", &m->lease_deadline) || !rd_u32(&c, "tenant_id", &m->tenant_id) ||
	    !rd_str(&c, "tenant", &m->tenant) || !rd_enum(&c, "channel", channel_ok, &m->channel) ||
	    !rd_enum(&c, "lane", lane_ok, &m->lane) || !rd_u64(&c, "template_id", &m->template_id) ||
	    !rd_u32(&c, "template_version", &m->template_version) || !rd_str(&c, "content", &m->content) ||
	    !rd_str(&c, "provider", &m->provider) || !rd_count(&c, "njobs", JOB_MIN, &n))
		goto fail;
	if (n == 0) {
		cur_fail(&c, "njobs", "njobs is 0 at offset %zu: a lease holds at least one job", c.off - 4);
		goto fail;
	}
	m->jobs = hr_malloc((size_t)n * sizeof *m->jobs);
	c.item = "job";
	for (c.idx = 0; c.idx < n; c.idx++) {
		hr_job *j = &m->jobs[c.idx];
		if (!rd_id(&c, "message_id", &j->message_id) || !rd_u32(&c, "attempt", &j->attempt) ||
		    !rd_str(&c, "address", &j->address) || !rd_str(&c, "data", &j->data))
			goto fail;
	}
	m->njobs = n;
	if (!at_end(&c))
		goto fail;
	return true;
fail:
	hr_wire_jobs_free(m);
	memset(m, 0, sizeof *m);
	return false;
}

bool hr_wire_decode_results(const void *frame, size_t len, hr_result_batch *m, hr_err *err)
{
	cursor c;
	uint32_t n;
	memset(m, 0, sizeof *m);
	if (!open_frame(&c, frame, len, HR_W_RESULTS, err) || !rd_u64(&c, "lease_id", &m->lease_id) ||
	    !rd_u32(&c, "tenant_id", &m->tenant_id) || !rd_count(&c, "nresults", RESULT_MIN, &n))
		goto fail;
	if (n)
		m->results = hr_malloc((size_t)n * sizeof *m->results);
	c.item = "result";
	for (c.idx = 0; c.idx < n; c.idx++) {
		hr_result *r = &m->results[c.idx];
		if (!rd_id(&c, "message_id", &r->message_id) || !rd_enum(&c, "status", status_ok, &r->status) ||
		    !rd_u32(&c, "latency_us", &r->latency_us) || !rd_u32(&c, "retry_after_ms", &r->retry_after_ms) ||
		    !rd_str(&c, "provider_id", &r->provider_id) || !rd_str(&c, "reason", &r->reason))
			goto fail;
	}
	m->nresults = n;
	if (!at_end(&c))
		goto fail;
	return true;
fail:
	hr_wire_results_free(m);
	memset(m, 0, sizeof *m);
	return false;
}

bool hr_wire_decode_credit(const void *frame, size_t len, hr_credit *m, hr_err *err)
{
	cursor c;
	memset(m, 0, sizeof *m);
	if (!open_frame(&c, frame, len, HR_W_CREDIT, err) || !rd_u32(&c, "credit", &m->credit) || !at_end(&c)) {
		memset(m, 0, sizeof *m);
		return false;
	}
	return true;
}

bool hr_wire_decode_bye(const void *frame, size_t len, hr_bye *m, hr_err *err)
{
	cursor c;
	uint32_t n;
	memset(m, 0, sizeof *m);
	if (!open_frame(&c, frame, len, HR_W_BYE, err) || !rd_count(&c, "nleases", LEASE_MIN, &n))
		goto fail;
	if (n)
		m->leases = hr_malloc((size_t)n * sizeof *m->leases);
	c.item = "lease";
	for (c.idx = 0; c.idx < n; c.idx++)
		if (!rd_u64(&c, "lease_id", &m->leases[c.idx]))
			goto fail; /* unreachable after rd_count, kept as the bounds check */
	m->nleases = n;
	if (!at_end(&c))
		goto fail;
	return true;
fail:
	hr_wire_bye_free(m);
	memset(m, 0, sizeof *m);
	return false;
}

void hr_wire_jobs_free(hr_job_batch *m)
{
	hr_free(m->jobs);
	m->jobs = NULL;
	m->njobs = 0;
}

void hr_wire_results_free(hr_result_batch *m)
{
	hr_free(m->results);
	m->results = NULL;
	m->nresults = 0;
}

void hr_wire_bye_free(hr_bye *m)
{
	hr_free(m->leases);
	m->leases = NULL;
	m->nleases = 0;
}
