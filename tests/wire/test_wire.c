/*
 * test_wire.c -- the frame codec (common/wire.c) against the contract in
 * common/wire.h.
 *
 * Reference frames are built here byte by byte (tb_*), independently of the
 * encoders, so that a layout mistake made symmetrically in encoder and decoder
 * still fails the golden tests.  The builder records the offset of each field
 * so the reject table can corrupt one field of a valid frame at a time.
 *
 * Every frame handed to a decoder is copied into a heap block of exactly its
 * length, so that under ASan a read one byte past the end is a failure.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "harness.h"
#include "wire.h"

/* ---- an independent frame builder ---- */

typedef struct tb {
	uint8_t b[1024];
	size_t n;
} tb;

static void tb_u8(tb *t, uint8_t v) { t->b[t->n++] = v; }
static void tb_u32(tb *t, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		tb_u8(t, (uint8_t)(v >> (8 * i)));
}
static void tb_u64(tb *t, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		tb_u8(t, (uint8_t)(v >> (8 * i)));
}
static void tb_str(tb *t, const char *s)
{
	size_t n = strlen(s);
	tb_u32(t, (uint32_t)n);
	memcpy(t->b + t->n, s, n);
	t->n += n;
}

/* Offsets of fields in the reference frames, filled by the builders. */
enum {
	O_MAGIC, O_VERSION, O_TYPE, O_FLAGS,
	O_H_WORKER_LEN, O_H_CHANNEL, O_H_LANE,
	O_J_TENANT_LEN, O_J_CHANNEL, O_J_LANE, O_J_CONTENT_LEN, O_J_PROVIDER_LEN, O_J_NJOBS,
	O_J0_ID, O_J1_ID, O_J1_ADDR_LEN, O_J1_DATA_LEN,
	O_R_NRESULTS, O_R0_ID, O_R0_PROVIDER_LEN, O_R1_STATUS, O_R1_REASON_LEN,
	O_B_NLEASES,
	O_COUNT
};
static size_t off[O_COUNT];
#define MARK(t, k) (off[k] = (t)->n)

static void tb_header(tb *t, uint8_t type)
{
	MARK(t, O_MAGIC);
	tb_u8(t, 0xE7);
	MARK(t, O_VERSION);
	tb_u8(t, 1);
	MARK(t, O_TYPE);
	tb_u8(t, type);
	MARK(t, O_FLAGS);
	tb_u8(t, 0);
}

static void ref_hello(tb *t)
{
	tb_header(t, HR_W_HELLO);
	MARK(t, O_H_WORKER_LEN);
	tb_str(t, "w-1");
	MARK(t, O_H_CHANNEL);
	tb_u8(t, HR_CH_SMS);
	MARK(t, O_H_LANE);
	tb_u8(t, HR_LANE_BULK);
	tb_u32(t, 4);
}
static const hr_hello ref_hello_msg = {{"w-1", 3}, HR_CH_SMS, HR_LANE_BULK, 4};

static void ref_jobs(tb *t)
{
	tb_header(t, HR_W_JOBS);
	tb_u64(t, 77);
	tb_u64(t, 1700000000123u);
	tb_u32(t, 5);
	MARK(t, O_J_TENANT_LEN);
	tb_str(t, "acme");
	MARK(t, O_J_CHANNEL);
	tb_u8(t, HR_CH_EMAIL);
	MARK(t, O_J_LANE);
	tb_u8(t, HR_LANE_TRANSACTIONAL);
	tb_u64(t, 9);
	tb_u32(t, 2);
	MARK(t, O_J_CONTENT_LEN);
	tb_str(t, "{}");
	MARK(t, O_J_PROVIDER_LEN);
	tb_str(t, "{\"name\":\"sink\"}");
	MARK(t, O_J_NJOBS);
	tb_u32(t, 2);
	MARK(t, O_J0_ID);
	tb_u64(t, 101);
	tb_u32(t, 1);
	tb_str(t, "a@x.io");
	tb_str(t, "{}");
	MARK(t, O_J1_ID);
	tb_u64(t, 102);
	tb_u32(t, 2);
	MARK(t, O_J1_ADDR_LEN);
	tb_str(t, "b@x.io");
	MARK(t, O_J1_DATA_LEN);
	tb_str(t, "{\"n\":1}");
}
static hr_job ref_jobs_items[] = {
	{101, 1, {"a@x.io", 6}, {"{}", 2}},
	{102, 2, {"b@x.io", 6}, {"{\"n\":1}", 7}},
};
static const hr_job_batch ref_jobs_msg = {
	77, 1700000000123u, 5, {"acme", 4}, HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, 9, 2, {"{}", 2},
	{"{\"name\":\"sink\"}", 15}, 2, ref_jobs_items,
};

static void ref_results(tb *t)
{
	tb_header(t, HR_W_RESULTS);
	tb_u64(t, 77);
	tb_u32(t, 5);
	MARK(t, O_R_NRESULTS);
	tb_u32(t, 2);
	MARK(t, O_R0_ID);
	tb_u64(t, 101);
	tb_u8(t, HR_RES_SENT);
	tb_u32(t, 1500);
	tb_u32(t, 0);
	MARK(t, O_R0_PROVIDER_LEN);
	tb_str(t, "pid-1");
	tb_str(t, "");
	tb_u64(t, 102);
	MARK(t, O_R1_STATUS);
	tb_u8(t, HR_RES_RETRY);
	tb_u32(t, 20);
	tb_u32(t, 3000);
	tb_str(t, "");
	MARK(t, O_R1_REASON_LEN);
	tb_str(t, "smtp 451 4.7.1 later");
}
static hr_result ref_results_items[] = {
	{101, HR_RES_SENT, 1500, 0, {"pid-1", 5}, {"", 0}},
	{102, HR_RES_RETRY, 20, 3000, {"", 0}, {"smtp 451 4.7.1 later", 20}},
};
static const hr_result_batch ref_results_msg = {77, 5, 2, ref_results_items};

static void ref_credit(tb *t)
{
	tb_header(t, HR_W_CREDIT);
	tb_u32(t, 0x01020304);
}

static void ref_heartbeat(tb *t) { tb_header(t, HR_W_HEARTBEAT); }

static void ref_bye(tb *t)
{
	tb_header(t, HR_W_BYE);
	MARK(t, O_B_NLEASES);
	tb_u32(t, 2);
	tb_u64(t, 77);
	tb_u64(t, UINT64_MAX);
}
static uint64_t ref_bye_leases[] = {77, UINT64_MAX};
static const hr_bye ref_bye_msg = {2, ref_bye_leases};

/* ---- helpers ---- */

/* A heap copy of exactly n bytes (at least 1 so that n == 0 is a valid block). */
static uint8_t *exact(const void *p, size_t n)
{
	uint8_t *q = hr_malloc(n ? n : 1);
	memcpy(q, p, n);
	return q;
}

static void hex(const uint8_t *p, size_t n, char *out, size_t outlen)
{
	size_t k = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n && k + 3 < outlen; i++)
		k += (size_t)snprintf(out + k, outlen - k, "%02x", p[i]);
}

static void assert_bytes(const char *what, const uint8_t *got, size_t gotn, const uint8_t *want, size_t wantn)
{
	if (gotn == wantn && memcmp(got, want, gotn) == 0)
		return;
	char g[2048], w[2048];
	hex(got, gotn, g, sizeof g);
	hex(want, wantn, w, sizeof w);
	ck_abort_msg("%s: got %zu bytes %s, want %zu bytes %s", what, gotn, g, wantn, w);
}

static bool str_eq(hr_str a, hr_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Decoded strings must point into the frame. */
static void assert_inside(hr_str s, const uint8_t *frame, size_t n)
{
	ck_assert_msg((const uint8_t *)s.p >= frame && (const uint8_t *)s.p + s.len <= frame + n,
		      "decoded string of %u bytes does not point into the frame", s.len);
}

static void assert_jobs_eq(const hr_job_batch *got, const hr_job_batch *want, const uint8_t *frame, size_t n)
{
	ck_assert_msg(got->lease_id == want->lease_id && got->lease_deadline == want->lease_deadline &&
			      got->tenant_id == want->tenant_id && got->channel == want->channel &&
			      got->lane == want->lane && got->template_id == want->template_id &&
			      got->template_version == want->template_version,
		      "jobs header: got lease %llu deadline %llu tenant %u ch %u lane %u tpl %llu v%u, want lease "
		      "%llu deadline %llu tenant %u ch %u lane %u tpl %llu v%u",
		      (unsigned long long)got->lease_id, (unsigned long long)got->lease_deadline, got->tenant_id,
		      got->channel, got->lane, (unsigned long long)got->template_id, got->template_version,
		      (unsigned long long)want->lease_id, (unsigned long long)want->lease_deadline, want->tenant_id,
		      want->channel, want->lane, (unsigned long long)want->template_id, want->template_version);
	ck_assert_msg(str_eq(got->tenant, want->tenant) && str_eq(got->content, want->content) &&
			      str_eq(got->provider, want->provider),
		      "jobs strings differ: got tenant '%.*s', want '%.*s'", (int)got->tenant.len, got->tenant.p,
		      (int)want->tenant.len, want->tenant.p);
	assert_inside(got->tenant, frame, n);
	assert_inside(got->content, frame, n);
	assert_inside(got->provider, frame, n);
	ck_assert_msg(got->njobs == want->njobs, "njobs: got %u, want %u", got->njobs, want->njobs);
	for (uint32_t i = 0; i < want->njobs; i++) {
		const hr_job *g = &got->jobs[i], *w = &want->jobs[i];
		ck_assert_msg(g->message_id == w->message_id && g->attempt == w->attempt &&
				      str_eq(g->address, w->address) && str_eq(g->data, w->data),
			      "job %u: got id %llu attempt %u address '%.*s', want id %llu attempt %u address '%.*s'",
			      i, (unsigned long long)g->message_id, g->attempt, (int)g->address.len, g->address.p,
			      (unsigned long long)w->message_id, w->attempt, (int)w->address.len, w->address.p);
		assert_inside(g->address, frame, n);
		assert_inside(g->data, frame, n);
	}
}

static void assert_results_eq(const hr_result_batch *got, const hr_result_batch *want, const uint8_t *frame,
			      size_t n)
{
	ck_assert_msg(got->lease_id == want->lease_id && got->tenant_id == want->tenant_id &&
			      got->nresults == want->nresults,
		      "results header: got lease %llu tenant %u n %u, want lease %llu tenant %u n %u",
		      (unsigned long long)got->lease_id, got->tenant_id, got->nresults,
		      (unsigned long long)want->lease_id, want->tenant_id, want->nresults);
	for (uint32_t i = 0; i < want->nresults; i++) {
		const hr_result *g = &got->results[i], *w = &want->results[i];
		ck_assert_msg(g->message_id == w->message_id && g->status == w->status &&
				      g->latency_us == w->latency_us && g->retry_after_ms == w->retry_after_ms &&
				      str_eq(g->provider_id, w->provider_id) && str_eq(g->reason, w->reason),
			      "result %u: got id %llu status %u latency %u retry %u reason '%.*s', want id %llu "
			      "status %u latency %u retry %u reason '%.*s'",
			      i, (unsigned long long)g->message_id, g->status, g->latency_us, g->retry_after_ms,
			      (int)g->reason.len, g->reason.p, (unsigned long long)w->message_id, w->status,
			      w->latency_us, w->retry_after_ms, (int)w->reason.len, w->reason.p);
		assert_inside(g->provider_id, frame, n);
		assert_inside(g->reason, frame, n);
	}
}

/* ---- golden: the encoders produce exactly the documented bytes ---- */

START_TEST(golden_frames)
{
	hr_buf b = {0};
	tb t = {0};
	hr_credit credit = {0x01020304};

	ref_hello(&t);
	hr_wire_encode_hello(&b, &ref_hello_msg);
	assert_bytes("hello", b.data, b.len, t.b, t.n);

	hr_buf_reset(&b);
	t.n = 0;
	ref_jobs(&t);
	hr_wire_encode_jobs(&b, &ref_jobs_msg);
	assert_bytes("jobs", b.data, b.len, t.b, t.n);

	hr_buf_reset(&b);
	t.n = 0;
	ref_results(&t);
	hr_wire_encode_results(&b, &ref_results_msg);
	assert_bytes("results", b.data, b.len, t.b, t.n);

	hr_buf_reset(&b);
	t.n = 0;
	ref_credit(&t);
	hr_wire_encode_credit(&b, &credit);
	assert_bytes("credit", b.data, b.len, t.b, t.n);
	static const uint8_t credit_literal[] = {0xE7, 0x01, 0x04, 0x00, 0x04, 0x03, 0x02, 0x01};
	assert_bytes("credit literal", b.data, b.len, credit_literal, sizeof credit_literal);

	hr_buf_reset(&b);
	t.n = 0;
	ref_heartbeat(&t);
	hr_wire_encode_heartbeat(&b);
	assert_bytes("heartbeat", b.data, b.len, t.b, t.n);

	hr_buf_reset(&b);
	t.n = 0;
	ref_bye(&t);
	hr_wire_encode_bye(&b, &ref_bye_msg);
	assert_bytes("bye", b.data, b.len, t.b, t.n);
	hr_buf_free(&b);
	ck_assert_ptr_null(b.data);
}
END_TEST

/* Encoders append: several frames in one buffer, each decodable at its offset. */
START_TEST(encoders_append)
{
	hr_buf b = {0};
	hr_credit c1 = {1}, c2 = {2};
	hr_wire_encode_credit(&b, &c1);
	size_t first = b.len;
	hr_wire_encode_heartbeat(&b);
	size_t second = b.len;
	hr_wire_encode_credit(&b, &c2);
	ck_assert_uint_eq(first, 8);
	ck_assert_uint_eq(second, 12);
	ck_assert_uint_eq(b.len, 20);
	hr_credit got;
	hr_err err = {0};
	ck_assert_msg(hr_wire_decode_credit(b.data + second, b.len - second, &got, &err), "%s", err.msg);
	ck_assert_msg(got.credit == 2, "got credit %u, want 2", got.credit);
	hr_wire_type type;
	ck_assert_msg(hr_wire_peek(b.data + first, second - first, &type, &err), "%s", err.msg);
	ck_assert_int_eq(type, HR_W_HEARTBEAT);
	hr_buf_free(&b);
}
END_TEST

/*
 * An encoder sizes the frame first and grows the buffer once: the second
 * allocation from here on aborts (fault seam), so a second realloc fails.
 */
START_TEST(encoder_allocates_once)
{
	enum { N = 500 };
	hr_job *jobs = hr_malloc(N * sizeof *jobs);
	for (int i = 0; i < N; i++)
		jobs[i] = (hr_job){(uint64_t)i + 1, 1, {"someone@example.com", 19}, {"{\"first\":\"Ann\"}", 15}};
	hr_job_batch m = ref_jobs_msg;
	m.njobs = N;
	m.jobs = jobs;
	hr_buf b = {0};
	hr_alloc_fail_after(2);
	hr_wire_encode_jobs(&b, &m);
	hr_alloc_fail_after(0);
	ck_assert_uint_eq(b.len, 4 + 8 + 8 + 4 + 8 + 1 + 1 + 8 + 4 + 6 + 19 + 4 + (size_t)N * (20 + 19 + 15));
	/* Appending into a buffer already holding a frame also grows once. */
	hr_alloc_fail_after(2);
	hr_wire_encode_jobs(&b, &m);
	hr_alloc_fail_after(0);
	hr_buf_free(&b);
	hr_free(jobs);
}
END_TEST

/* ---- round trips ---- */

static const char binary[] = "a\0b\xff\xe7\x01\n\"\\";
#define BINARY_STR ((hr_str){binary, sizeof binary - 1})

/* Encode, decode from an exact copy, compare, re-encode and compare bytes. */
static void jobs_roundtrip(const hr_job_batch *m)
{
	hr_buf b = {0}, again = {0};
	hr_err err = {0};
	hr_job_batch got;
	hr_wire_encode_jobs(&b, m);
	uint8_t *frame = exact(b.data, b.len);
	hr_wire_type type;
	ck_assert_msg(hr_wire_peek(frame, b.len, &type, &err) && type == HR_W_JOBS, "peek: %s", err.msg);
	ck_assert_msg(hr_wire_decode_jobs(frame, b.len, &got, &err), "decode: %s", err.msg);
	assert_jobs_eq(&got, m, frame, b.len);
	hr_wire_encode_jobs(&again, &got);
	assert_bytes("jobs re-encoded", again.data, again.len, b.data, b.len);
	hr_wire_jobs_free(&got);
	ck_assert_ptr_null(got.jobs);
	hr_wire_jobs_free(&got); /* twice is harmless */
	hr_free(frame);
	hr_buf_free(&b);
	hr_buf_free(&again);
}

static void results_roundtrip(const hr_result_batch *m)
{
	hr_buf b = {0}, again = {0};
	hr_err err = {0};
	hr_result_batch got;
	hr_wire_encode_results(&b, m);
	uint8_t *frame = exact(b.data, b.len);
	ck_assert_msg(hr_wire_decode_results(frame, b.len, &got, &err), "decode: %s", err.msg);
	assert_results_eq(&got, m, frame, b.len);
	hr_wire_encode_results(&again, &got);
	assert_bytes("results re-encoded", again.data, again.len, b.data, b.len);
	hr_wire_results_free(&got);
	hr_free(frame);
	hr_buf_free(&b);
	hr_buf_free(&again);
}

START_TEST(jobs_roundtrips)
{
	hr_job_batch m = ref_jobs_msg;
	jobs_roundtrip(&m);

	/* empty strings everywhere, zeroed hr_str (p == NULL) on the encoder side */
	hr_job empty_job = {1, 0, {NULL, 0}, {NULL, 0}};
	m = (hr_job_batch){.lease_id = 0, .channel = HR_CH_WEBHOOK, .lane = HR_LANE_BULK, .njobs = 1,
			   .jobs = &empty_job};
	jobs_roundtrip(&m);

	/* binary bytes and extreme integers */
	hr_job bin_job = {UINT64_MAX, UINT32_MAX, BINARY_STR, BINARY_STR};
	m = (hr_job_batch){UINT64_MAX, UINT64_MAX, UINT32_MAX, BINARY_STR, HR_CH_PUSH, HR_LANE_TRANSACTIONAL,
			   UINT64_MAX, UINT32_MAX, BINARY_STR, BINARY_STR, 1, &bin_job};
	jobs_roundtrip(&m);

	/* every channel and lane */
	for (int ch = HR_CH_EMAIL; ch <= HR_CH_WEBHOOK; ch++)
		for (int lane = HR_LANE_TRANSACTIONAL; lane <= HR_LANE_BULK; lane++) {
			m = ref_jobs_msg;
			m.channel = (uint8_t)ch;
			m.lane = (uint8_t)lane;
			jobs_roundtrip(&m);
		}

	/* the largest batch */
	hr_job *jobs = hr_malloc(HR_WIRE_MAX_JOBS * sizeof *jobs);
	for (uint32_t i = 0; i < HR_WIRE_MAX_JOBS; i++)
		jobs[i] = (hr_job){(uint64_t)i + 1, i % 5 + 1, {"+15550100", (i % 9) + 1}, {"{}", 2}};
	m = ref_jobs_msg;
	m.njobs = HR_WIRE_MAX_JOBS;
	m.jobs = jobs;
	jobs_roundtrip(&m);
	hr_free(jobs);
}
END_TEST

START_TEST(results_roundtrips)
{
	results_roundtrip(&ref_results_msg);

	hr_result_batch m = {.lease_id = 3, .tenant_id = 1, .nresults = 0, .results = NULL};
	results_roundtrip(&m); /* an empty RESULTS is allowed */

	hr_result each[5];
	for (int s = HR_RES_SENT; s <= HR_RES_BOUNCED; s++)
		each[s - 1] = (hr_result){(uint64_t)s, (uint8_t)s, UINT32_MAX, UINT32_MAX, BINARY_STR, {NULL, 0}};
	m = (hr_result_batch){UINT64_MAX, UINT32_MAX, 5, each};
	results_roundtrip(&m);

	hr_result *many = hr_malloc(HR_WIRE_MAX_JOBS * sizeof *many);
	for (uint32_t i = 0; i < HR_WIRE_MAX_JOBS; i++)
		many[i] = (hr_result){(uint64_t)i + 1, HR_RES_SENT, i, 0, {"id", 2}, {NULL, 0}};
	m = (hr_result_batch){9, 9, HR_WIRE_MAX_JOBS, many};
	results_roundtrip(&m);
	hr_free(many);
}
END_TEST

START_TEST(small_frames_roundtrip)
{
	hr_buf b = {0};
	hr_err err = {0};

	const hr_hello hellos[] = {
		ref_hello_msg,
		{{NULL, 0}, HR_CH_EMAIL, HR_LANE_TRANSACTIONAL, 0},
		{BINARY_STR, HR_CH_WEBHOOK, HR_LANE_BULK, UINT32_MAX},
	};
	for (size_t i = 0; i < sizeof hellos / sizeof hellos[0]; i++) {
		hr_buf_reset(&b);
		hr_wire_encode_hello(&b, &hellos[i]);
		uint8_t *frame = exact(b.data, b.len);
		hr_hello got;
		ck_assert_msg(hr_wire_decode_hello(frame, b.len, &got, &err), "hello %zu: %s", i, err.msg);
		ck_assert_msg(str_eq(got.worker_id, hellos[i].worker_id) && got.channel == hellos[i].channel &&
				      got.lane == hellos[i].lane && got.credit == hellos[i].credit,
			      "hello %zu: got ch %u lane %u credit %u, want ch %u lane %u credit %u", i, got.channel,
			      got.lane, got.credit, hellos[i].channel, hellos[i].lane, hellos[i].credit);
		assert_inside(got.worker_id, frame, b.len);
		hr_free(frame);
	}

	const uint32_t credits[] = {0, 1, UINT32_MAX};
	for (size_t i = 0; i < 3; i++) {
		hr_buf_reset(&b);
		hr_wire_encode_credit(&b, &(hr_credit){credits[i]});
		hr_credit got;
		ck_assert_msg(hr_wire_decode_credit(b.data, b.len, &got, &err), "%s", err.msg);
		ck_assert_msg(got.credit == credits[i], "credit: got %u, want %u", got.credit, credits[i]);
	}

	uint64_t *leases = hr_malloc(HR_WIRE_MAX_JOBS * sizeof *leases);
	for (uint32_t i = 0; i < HR_WIRE_MAX_JOBS; i++)
		leases[i] = UINT64_MAX - i;
	const hr_bye byes[] = {{0, NULL}, ref_bye_msg, {HR_WIRE_MAX_JOBS, leases}};
	for (size_t i = 0; i < 3; i++) {
		hr_buf_reset(&b);
		hr_wire_encode_bye(&b, &byes[i]);
		uint8_t *frame = exact(b.data, b.len);
		hr_bye got;
		ck_assert_msg(hr_wire_decode_bye(frame, b.len, &got, &err), "bye %zu: %s", i, err.msg);
		ck_assert_msg(got.nleases == byes[i].nleases, "bye %zu: got %u leases, want %u", i, got.nleases,
			      byes[i].nleases);
		for (uint32_t k = 0; k < got.nleases; k++)
			ck_assert_msg(got.leases[k] == byes[i].leases[k], "bye %zu lease %u: got %llu, want %llu", i,
				      k, (unsigned long long)got.leases[k], (unsigned long long)byes[i].leases[k]);
		hr_wire_bye_free(&got);
		hr_free(frame);
	}
	hr_free(leases);

	hr_buf_reset(&b);
	hr_wire_encode_heartbeat(&b);
	hr_wire_type type = 0;
	ck_assert_msg(hr_wire_peek(b.data, b.len, &type, &err), "%s", err.msg);
	ck_assert_msg(type == HR_W_HEARTBEAT, "got type %d, want %d", type, HR_W_HEARTBEAT);
	hr_buf_free(&b);
}
END_TEST

/* ---- rejects ---- */

enum frame_kind { F_HELLO, F_JOBS, F_RESULTS, F_CREDIT, F_HEARTBEAT, F_BYE };
static void (*const builders[])(tb *) = {ref_hello, ref_jobs, ref_results, ref_credit, ref_heartbeat, ref_bye};
static const char *const frame_names[] = {"hello", "jobs", "results", "credit", "heartbeat", "bye"};

/*
 * Run the decoder for `kind` (peek for heartbeat) on frame[0..n); on failure
 * check that the struct was left empty.
 */
static bool decode_as(enum frame_kind kind, const uint8_t *frame, size_t n, hr_err *err)
{
	bool ok;
	hr_wire_type type;
	switch (kind) {
	case F_HELLO: {
		hr_hello m;
		ok = hr_wire_decode_hello(frame, n, &m, err);
		if (!ok)
			ck_assert_msg(m.worker_id.p == NULL && m.credit == 0, "hello not cleared after failure");
		return ok;
	}
	case F_JOBS: {
		hr_job_batch m;
		memset(&m, 0xAB, sizeof m); /* decoders must not trust what the struct held */
		ok = hr_wire_decode_jobs(frame, n, &m, err);
		if (!ok)
			ck_assert_msg(m.jobs == NULL && m.njobs == 0, "jobs array left after failure");
		hr_wire_jobs_free(&m);
		return ok;
	}
	case F_RESULTS: {
		hr_result_batch m;
		memset(&m, 0xAB, sizeof m);
		ok = hr_wire_decode_results(frame, n, &m, err);
		if (!ok)
			ck_assert_msg(m.results == NULL && m.nresults == 0, "results array left after failure");
		hr_wire_results_free(&m);
		return ok;
	}
	case F_CREDIT: {
		hr_credit m;
		return hr_wire_decode_credit(frame, n, &m, err);
	}
	case F_HEARTBEAT:
		return hr_wire_peek(frame, n, &type, err);
	case F_BYE: {
		hr_bye m;
		memset(&m, 0xAB, sizeof m);
		ok = hr_wire_decode_bye(frame, n, &m, err);
		if (!ok)
			ck_assert_msg(m.leases == NULL && m.nleases == 0, "leases array left after failure");
		hr_wire_bye_free(&m);
		return ok;
	}
	}
	return false;
}

/* The reference frames themselves decode (else the reject table proves nothing). */
START_TEST(reference_frames_accepted)
{
	tb t = {0};
	builders[_i](&t);
	uint8_t *frame = exact(t.b, t.n);
	hr_err err = {0};
	ck_assert_msg(decode_as((enum frame_kind)_i, frame, t.n, &err), "%s: got '%s', want accepted",
		      frame_names[_i], err.msg);
	hr_free(frame);
}
END_TEST

/* Every proper prefix of every reference frame is rejected with an error, and nothing leaks. */
START_TEST(every_truncation_rejected)
{
	tb t = {0};
	builders[_i](&t);
	for (size_t n = 0; n < t.n; n++) {
		uint8_t *frame = exact(t.b, n);
		hr_err err = {0};
		bool ok = decode_as((enum frame_kind)_i, frame, n, &err);
		ck_assert_msg(!ok, "%s cut to %zu of %zu bytes: got accepted, want rejected", frame_names[_i], n, t.n);
		ck_assert_msg(err.kind == HR_ERR_INVALID && err.msg[0] && err.field[0],
			      "%s cut to %zu: got kind %d msg '%s' field '%s', want INVALID with detail",
			      frame_names[_i], n, err.kind, err.msg, err.field);
		/* Short frames name the header or the missing bytes. */
		ck_assert_msg(strstr(err.msg, "header") || strstr(err.msg, "left at offset"),
			      "%s cut to %zu: got '%s', want it to say what is missing", frame_names[_i], n, err.msg);
		hr_free(frame);
	}
}
END_TEST

enum { NOFIELD = -1 };
static const struct {
	const char *name;
	enum frame_kind frame;  /* reference frame to start from */
	enum frame_kind decoder; /* decoder to run */
	int field;               /* offset key to overwrite, or NOFIELD */
	int width;               /* 1, 4 or 8 bytes, little-endian */
	uint64_t value;
	int append;              /* garbage bytes to append */
	const char *want;        /* substring of the error */
	const char *want_field;  /* the error's field */
} rejects[] = {
	{"bad magic", F_JOBS, F_JOBS, O_MAGIC, 1, 0xE8, 0, "bad magic 0xE8", "header.magic"},
	{"bad version", F_JOBS, F_JOBS, O_VERSION, 1, 2, 0, "unsupported version 2", "header.version"},
	{"version 0", F_HELLO, F_HELLO, O_VERSION, 1, 0, 0, "unsupported version 0", "header.version"},
	{"flags set", F_RESULTS, F_RESULTS, O_FLAGS, 1, 0x80, 0, "reserved flags 0x80", "header.flags"},
	{"flags on heartbeat", F_HEARTBEAT, F_HEARTBEAT, O_FLAGS, 1, 1, 0, "reserved flags", "header.flags"},
	{"type 0", F_CREDIT, F_HEARTBEAT, O_TYPE, 1, 0, 0, "unknown type 0", "header.type"},
	{"type 7", F_CREDIT, F_CREDIT, O_TYPE, 1, 7, 0, "unknown type 7", "header.type"},
	{"type 255", F_BYE, F_BYE, O_TYPE, 1, 255, 0, "unknown type 255", "header.type"},
	{"hello to jobs decoder", F_HELLO, F_JOBS, NOFIELD, 0, 0, 0, "not a jobs frame: got a hello frame", "header.type"},
	{"jobs to results decoder", F_JOBS, F_RESULTS, NOFIELD, 0, 0, 0, "not a results frame: got a jobs frame", "header.type"},
	{"results to bye decoder", F_RESULTS, F_BYE, NOFIELD, 0, 0, 0, "not a bye frame", "header.type"},
	{"bye to credit decoder", F_BYE, F_CREDIT, NOFIELD, 0, 0, 0, "not a credit frame", "header.type"},
	{"heartbeat to hello decoder", F_HEARTBEAT, F_HELLO, NOFIELD, 0, 0, 0, "not a hello frame: got a heartbeat", "header.type"},
	/* hostile lengths */
	{"hello worker_id 0xFFFFFFFF", F_HELLO, F_HELLO, O_H_WORKER_LEN, 4, 0xFFFFFFFF, 0, "worker_id length 4294967295 exceeds the 9 bytes left at offset 8", "hello.worker_id"},
	{"jobs tenant 0xFFFFFFFF", F_JOBS, F_JOBS, O_J_TENANT_LEN, 4, 0xFFFFFFFF, 0, "tenant length 4294967295 exceeds", "jobs.tenant"},
	{"jobs content 0xFFFFFFFF", F_JOBS, F_JOBS, O_J_CONTENT_LEN, 4, 0xFFFFFFFF, 0, "content length 4294967295", "jobs.content"},
	{"jobs provider 0x80000000", F_JOBS, F_JOBS, O_J_PROVIDER_LEN, 4, 0x80000000, 0, "provider length 2147483648", "jobs.provider"},
	{"job address 4000000", F_JOBS, F_JOBS, O_J1_ADDR_LEN, 4, 4000000, 0, "jobs frame: job 1: address length 4000000 exceeds the", "jobs.jobs[1].address"},
	{"job data one too long", F_JOBS, F_JOBS, O_J1_DATA_LEN, 4, 8, 0, "job 1: data length 8 exceeds the 7 bytes left", "jobs.jobs[1].data"},
	{"result provider_id 0xFFFFFFFF", F_RESULTS, F_RESULTS, O_R0_PROVIDER_LEN, 4, 0xFFFFFFFF, 0, "result 0: provider_id length 4294967295", "results.results[0].provider_id"},
	{"result reason 0xFFFFFFFF", F_RESULTS, F_RESULTS, O_R1_REASON_LEN, 4, 0xFFFFFFFF, 0, "result 1: reason length 4294967295", "results.results[1].reason"},
	/* counts */
	{"njobs over limit", F_JOBS, F_JOBS, O_J_NJOBS, 4, HR_WIRE_MAX_JOBS + 1, 0, "njobs 8193 at offset", "jobs.njobs"},
	{"njobs 0xFFFFFFFF", F_JOBS, F_JOBS, O_J_NJOBS, 4, 0xFFFFFFFF, 0, "exceeds the limit 8192", "jobs.njobs"},
	{"njobs at limit, bytes for 2", F_JOBS, F_JOBS, O_J_NJOBS, 4, HR_WIRE_MAX_JOBS, 0, "njobs 8192 needs at least 163840 bytes", "jobs.njobs"},
	{"njobs 3, bytes for 2", F_JOBS, F_JOBS, O_J_NJOBS, 4, 3, 0, "job 2: message_id needs 8 bytes, only 0 left", "jobs.jobs[2].message_id"},
	{"njobs 0", F_JOBS, F_JOBS, O_J_NJOBS, 4, 0, 0, "njobs is 0", "jobs.njobs"},
	{"nresults over limit", F_RESULTS, F_RESULTS, O_R_NRESULTS, 4, 0xFFFFFFFF, 0, "nresults 4294967295 at offset 16 exceeds the limit 8192", "results.nresults"},
	{"nresults at limit", F_RESULTS, F_RESULTS, O_R_NRESULTS, 4, HR_WIRE_MAX_JOBS, 0, "nresults 8192 needs at least 204800 bytes", "results.nresults"},
	{"nleases over limit", F_BYE, F_BYE, O_B_NLEASES, 4, HR_WIRE_MAX_JOBS + 1, 0, "nleases 8193 at offset 4 exceeds the limit", "bye.nleases"},
	{"nleases 3, bytes for 2", F_BYE, F_BYE, O_B_NLEASES, 4, 3, 0, "nleases 3 needs at least 24 bytes, only 16 left", "bye.nleases"},
	/* enums */
	{"hello channel 0", F_HELLO, F_HELLO, O_H_CHANNEL, 1, 0, 0, "unknown channel 0 at offset 11", "hello.channel"},
	{"hello channel 6", F_HELLO, F_HELLO, O_H_CHANNEL, 1, 6, 0, "unknown channel 6", "hello.channel"},
	{"hello lane 0", F_HELLO, F_HELLO, O_H_LANE, 1, 0, 0, "unknown lane 0", "hello.lane"},
	{"hello lane 3", F_HELLO, F_HELLO, O_H_LANE, 1, 3, 0, "unknown lane 3", "hello.lane"},
	{"jobs channel 255", F_JOBS, F_JOBS, O_J_CHANNEL, 1, 255, 0, "unknown channel 255", "jobs.channel"},
	{"jobs lane 3", F_JOBS, F_JOBS, O_J_LANE, 1, 3, 0, "unknown lane 3", "jobs.lane"},
	{"result status 0", F_RESULTS, F_RESULTS, O_R1_STATUS, 1, 0, 0, "result 1: unknown status 0", "results.results[1].status"},
	{"result status 6", F_RESULTS, F_RESULTS, O_R1_STATUS, 1, 6, 0, "result 1: unknown status 6", "results.results[1].status"},
	/* zero ids */
	{"job 0 message_id 0", F_JOBS, F_JOBS, O_J0_ID, 8, 0, 0, "job 0: message_id is 0", "jobs.jobs[0].message_id"},
	{"job 1 message_id 0", F_JOBS, F_JOBS, O_J1_ID, 8, 0, 0, "job 1: message_id is 0", "jobs.jobs[1].message_id"},
	{"result message_id 0", F_RESULTS, F_RESULTS, O_R0_ID, 8, 0, 0, "result 0: message_id is 0", "results.results[0].message_id"},
	/* trailing garbage */
	{"hello trailing", F_HELLO, F_HELLO, NOFIELD, 0, 0, 1, "1 trailing bytes", "hello.end"},
	{"jobs trailing", F_JOBS, F_JOBS, NOFIELD, 0, 0, 3, "jobs frame: 3 trailing bytes after the body", "jobs.end"},
	{"results trailing", F_RESULTS, F_RESULTS, NOFIELD, 0, 0, 1, "results frame: 1 trailing bytes", "results.end"},
	{"credit trailing", F_CREDIT, F_CREDIT, NOFIELD, 0, 0, 4, "credit frame: 4 trailing bytes", "credit.end"},
	{"bye trailing", F_BYE, F_BYE, NOFIELD, 0, 0, 7, "bye frame: 7 trailing bytes", "bye.end"},
	{"heartbeat with a body", F_HEARTBEAT, F_HEARTBEAT, NOFIELD, 0, 0, 1, "heartbeat frame: 1 trailing bytes", "heartbeat.end"},
};

START_TEST(reject_table)
{
	tb t = {0};
	builders[rejects[_i].frame](&t);
	if (rejects[_i].field != NOFIELD)
		for (int k = 0; k < rejects[_i].width; k++)
			t.b[off[rejects[_i].field] + (size_t)k] = (uint8_t)(rejects[_i].value >> (8 * k));
	for (int k = 0; k < rejects[_i].append; k++)
		t.b[t.n++] = 0x5A;
	uint8_t *frame = exact(t.b, t.n);
	hr_err err = {0};
	bool ok = decode_as(rejects[_i].decoder, frame, t.n, &err);
	ck_assert_msg(!ok, "%s: got accepted, want '%s'", rejects[_i].name, rejects[_i].want);
	ck_assert_msg(err.kind == HR_ERR_INVALID, "%s: got kind %d, want HR_ERR_INVALID", rejects[_i].name, err.kind);
	ck_assert_msg(strstr(err.msg, rejects[_i].want), "%s: got '%s', want '%s'", rejects[_i].name, err.msg,
		      rejects[_i].want);
	ck_assert_msg(strcmp(err.field, rejects[_i].want_field) == 0, "%s: got field '%s', want '%s'",
		      rejects[_i].name, err.field, rejects[_i].want_field);
	hr_free(frame);
}
END_TEST

START_TEST(oversized_frame_rejected)
{
	/* The header is valid; only the length is over the limit (the rest is never read). */
	size_t n = (size_t)HR_WIRE_MAX_FRAME + 1;
	uint8_t *frame = hr_calloc(1, n);
	tb t = {0};
	ref_credit(&t);
	memcpy(frame, t.b, t.n);
	hr_err err = {0};
	hr_wire_type type;
	ck_assert(!hr_wire_peek(frame, n, &type, &err));
	ck_assert_msg(strstr(err.msg, "exceeds the limit of 67108864 bytes"), "got '%s'", err.msg);
	hr_credit m;
	ck_assert(!hr_wire_decode_credit(frame, n, &m, &err));
	ck_assert_msg(strstr(err.msg, "exceeds the limit"), "got '%s'", err.msg);
	/* At exactly the limit the header is accepted. */
	ck_assert_msg(hr_wire_peek(frame, n - 1, &type, &err), "%s", err.msg);
	hr_free(frame);
}
END_TEST

/*
 * A hostile count is refused before the array is allocated: with the next
 * allocation armed to abort, decoding must not allocate.  The control test
 * below shows that the seam does fire when a decoder allocates.
 */
START_TEST(hostile_count_allocates_nothing)
{
	static const int fields[] = {O_J_NJOBS, O_R_NRESULTS, O_B_NLEASES};
	static const enum frame_kind kinds[] = {F_JOBS, F_RESULTS, F_BYE};
	for (int i = 0; i < 3; i++) {
		tb t = {0};
		builders[kinds[i]](&t);
		uint8_t *frame = exact(t.b, t.n);
		for (int k = 0; k < 4; k++)
			frame[off[fields[i]] + (size_t)k] = (uint8_t)(HR_WIRE_MAX_JOBS >> (8 * k));
		hr_err err = {0};
		hr_alloc_fail_after(1);
		bool ok = decode_as(kinds[i], frame, t.n, &err);
		hr_alloc_fail_after(0);
		ck_assert_msg(!ok && strstr(err.msg, "needs at least"), "%s: got '%s', want 'needs at least'",
			      frame_names[kinds[i]], ok ? "accepted" : err.msg);
		hr_free(frame);
	}
}
END_TEST

START_TEST(fault_seam_fires_on_decode)
{
	tb t = {0};
	ref_jobs(&t);
	hr_err err = {0};
	int devnull = open("/dev/null", O_WRONLY);
	if (devnull >= 0)
		dup2(devnull, 2); /* the allocator's expected "out of memory" line is noise here */
	hr_alloc_fail_after(1);
	(void)decode_as(F_JOBS, t.b, t.n, &err); /* allocates the jobs array: aborts */
}
END_TEST

/* ---- names ---- */

START_TEST(names_table)
{
	static const struct {
		int v;
		const char *channel, *lane, *result;
	} cases[] = {
		{0, "?", "?", "?"},
		{1, "email", "transactional", "sent"},
		{2, "sms", "bulk", "retry"},
		{3, "messenger", "?", "permanent"},
		{4, "push", "?", "throttled"},
		{5, "webhook", "?", "bounced"},
		{6, "?", "?", "?"},
		{-1, "?", "?", "?"},
		{1000, "?", "?", "?"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int v = cases[i].v;
		ck_assert_msg(strcmp(hr_channel_name(v), cases[i].channel) == 0, "channel %d: got '%s', want '%s'", v,
			      hr_channel_name(v), cases[i].channel);
		ck_assert_msg(strcmp(hr_lane_name(v), cases[i].lane) == 0, "lane %d: got '%s', want '%s'", v,
			      hr_lane_name(v), cases[i].lane);
		ck_assert_msg(strcmp(hr_result_name(v), cases[i].result) == 0, "result %d: got '%s', want '%s'", v,
			      hr_result_name(v), cases[i].result);
		if (strcmp(cases[i].channel, "?"))
			ck_assert_msg(hr_channel_parse(cases[i].channel) == v, "parse '%s': got %d, want %d",
				      cases[i].channel, hr_channel_parse(cases[i].channel), v);
		if (strcmp(cases[i].lane, "?"))
			ck_assert_msg(hr_lane_parse(cases[i].lane) == v, "parse '%s': got %d, want %d", cases[i].lane,
				      hr_lane_parse(cases[i].lane), v);
	}
	static const char *const unknown[] = {"", "?", "Email", "EMAIL", "emails", "mail", "bulk ", "sent"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		ck_assert_msg(hr_channel_parse(unknown[i]) == 0, "channel parse '%s': got %d, want 0", unknown[i],
			      hr_channel_parse(unknown[i]));
		ck_assert_msg(hr_lane_parse(unknown[i]) == 0, "lane parse '%s': got %d, want 0", unknown[i],
			      hr_lane_parse(unknown[i]));
	}
	ck_assert_int_eq(hr_channel_parse(NULL), 0);
	ck_assert_int_eq(hr_lane_parse(NULL), 0);
}
END_TEST

/* ---- the committed fuzz seed corpus stays valid ---- */

static bool roundtrip_any(const uint8_t *frame, size_t n, hr_err *err)
{
	hr_wire_type type;
	hr_buf b = {0};
	bool ok = false;
	if (!hr_wire_peek(frame, n, &type, err))
		return false;
	switch (type) {
	case HR_W_HELLO: {
		hr_hello m;
		if ((ok = hr_wire_decode_hello(frame, n, &m, err)))
			hr_wire_encode_hello(&b, &m);
		break;
	}
	case HR_W_JOBS: {
		hr_job_batch m;
		if ((ok = hr_wire_decode_jobs(frame, n, &m, err)))
			hr_wire_encode_jobs(&b, &m);
		hr_wire_jobs_free(&m);
		break;
	}
	case HR_W_RESULTS: {
		hr_result_batch m;
		if ((ok = hr_wire_decode_results(frame, n, &m, err)))
			hr_wire_encode_results(&b, &m);
		hr_wire_results_free(&m);
		break;
	}
	case HR_W_CREDIT: {
		hr_credit m;
		if ((ok = hr_wire_decode_credit(frame, n, &m, err)))
			hr_wire_encode_credit(&b, &m);
		break;
	}
	case HR_W_HEARTBEAT:
		ok = true;
		hr_wire_encode_heartbeat(&b);
		break;
	case HR_W_BYE: {
		hr_bye m;
		if ((ok = hr_wire_decode_bye(frame, n, &m, err)))
			hr_wire_encode_bye(&b, &m);
		hr_wire_bye_free(&m);
		break;
	}
	}
	if (ok && (b.len != n || memcmp(b.data, frame, n) != 0))
		ok = hr_fail(err, HR_ERR_INTERNAL, "", "re-encoded %zu bytes differ from the %zu-byte input", b.len, n);
	hr_buf_free(&b);
	return ok;
}

START_TEST(seed_corpus_decodes)
{
	const char *dir = HERALD_SOURCE_DIR "/tests/wire/corpus";
	DIR *d = opendir(dir);
	ck_assert_msg(d, "cannot open %s", dir);
	int files = 0, types[8] = {0};
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		FILE *f = fopen(path, "rb");
		ck_assert_msg(f, "cannot open %s", path);
		uint8_t *buf = hr_malloc(1 << 20);
		size_t n = fread(buf, 1, 1 << 20, f);
		fclose(f);
		uint8_t *frame = exact(buf, n);
		hr_free(buf);
		hr_err err = {0};
		ck_assert_msg(roundtrip_any(frame, n, &err), "%s: %s", e->d_name, err.msg);
		types[frame[2] & 7]++;
		files++;
		hr_free(frame);
	}
	closedir(d);
	ck_assert_msg(files >= 24, "got %d seed frames, want at least 24", files);
	for (int t = HR_W_HELLO; t <= HR_W_BYE; t++)
		ck_assert_msg(types[t] > 0, "no seed frame of type %d", t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("wire_codec");
	TCase *tc = th_tcase("encode");
	tcase_add_test(tc, golden_frames);
	tcase_add_test(tc, encoders_append);
	tcase_add_test(tc, encoder_allocates_once);
	suite_add_tcase(s, tc);
	tc = th_tcase("roundtrip");
	tcase_add_test(tc, jobs_roundtrips);
	tcase_add_test(tc, results_roundtrips);
	tcase_add_test(tc, small_frames_roundtrip);
	tcase_add_test(tc, seed_corpus_decodes);
	suite_add_tcase(s, tc);
	tc = th_tcase("reject");
	int nframes = (int)(sizeof builders / sizeof builders[0]);
	tcase_add_loop_test(tc, reference_frames_accepted, 0, nframes);
	tcase_add_loop_test(tc, every_truncation_rejected, 0, nframes);
	tcase_add_loop_test(tc, reject_table, 0, sizeof rejects / sizeof rejects[0]);
	tcase_add_test(tc, oversized_frame_rejected);
	tcase_add_test(tc, hostile_count_allocates_nothing);
	tcase_add_test_raise_signal(tc, fault_seam_fires_on_decode, SIGABRT);
	suite_add_tcase(s, tc);
	tc = th_tcase("names");
	tcase_add_test(tc, names_table);
	suite_add_tcase(s, tc);
	return th_run(s);
}
