/*
 * fuzz_wire.c -- libFuzzer target for the frame codec (common/wire.c).
 *
 * Each input is one frame.  It goes through hr_wire_peek and through every
 * decoder; the properties checked (abort on violation) are:
 *   - at most one decoder accepts, and only the one of the peeked type;
 *   - a decoder that fails reports HR_ERR_INVALID with a message and leaves
 *     its struct zeroed (nothing allocated);
 *   - a decoded frame re-encodes to exactly the input bytes (the encoding is
 *     canonical, so anything else is a codec bug);
 *   - decoded strings point into the input.
 * ASan/UBSan catch out-of-bounds reads and overflow; LeakSanitizer catches a
 * decoder that allocates on a failure path.
 *
 * This target compiles wire.c and err.c itself (for coverage) and supplies
 * the allocator and panic functions here, so neither jemalloc nor the rest of
 * herald_common is linked: ASan owns malloc.
 *
 *   CC=clang cmake -S . -B build-fuzz-wire -DHERALD_FUZZ=ON -DHERALD_SANITIZE=OFF
 *   cmake --build build-fuzz-wire --target fuzz_wire
 *   cp -r tests/wire/corpus /tmp/wire-corpus
 *   ./build-fuzz-wire/tests/wire/fuzz_wire -max_total_time=600 /tmp/wire-corpus
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "wire.h"

/* ---- the parts of alloc.h and log.h that wire.c uses ---- */

void *hr_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

void *hr_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		abort();
	return q;
}

void hr_free(void *p)
{
	free(p);
}

void hr_panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* ---- checks ---- */

#define CHECK(cond, ...)                                         \
	do {                                                     \
		if (!(cond)) {                                   \
			fprintf(stderr, "fuzz_wire: " __VA_ARGS__); \
			fputc('\n', stderr);                     \
			abort();                                 \
		}                                                \
	} while (0)

static const uint8_t *in;
static size_t inlen;

static void inside(hr_str s)
{
	CHECK((const uint8_t *)s.p >= in && (const uint8_t *)s.p + s.len <= in + inlen,
	      "decoded string not inside the frame");
}

static void failed_cleanly(const hr_err *err, const void *m, size_t size)
{
	static const uint8_t zero[sizeof(hr_job_batch) + sizeof(hr_result_batch)];
	CHECK(err->kind == HR_ERR_INVALID && err->msg[0], "failure without an HR_ERR_INVALID message");
	CHECK(size <= sizeof zero && memcmp(m, zero, size) == 0, "struct not zeroed after failure");
}

static void same_bytes(const hr_buf *b)
{
	CHECK(b->len == inlen && memcmp(b->data, in, inlen) == 0,
	      "re-encoded %zu bytes differ from the %zu-byte input", b->len, inlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	in = data;
	inlen = size;
	hr_err err;
	hr_buf b = {0};
	hr_wire_type type = 0;
	bool peeked = hr_wire_peek(data, size, &type, &err);
	int accepted = 0;

	hr_hello hello;
	hr_err_clear(&err);
	if (hr_wire_decode_hello(data, size, &hello, &err)) {
		accepted++;
		CHECK(peeked && type == HR_W_HELLO, "hello decoded, peek says %d", (int)type);
		inside(hello.worker_id);
		hr_wire_encode_hello(&b, &hello);
		same_bytes(&b);
	} else {
		failed_cleanly(&err, &hello, sizeof hello);
	}

	hr_job_batch jobs;
	hr_err_clear(&err);
	if (hr_wire_decode_jobs(data, size, &jobs, &err)) {
		accepted++;
		CHECK(peeked && type == HR_W_JOBS, "jobs decoded, peek says %d", (int)type);
		CHECK(jobs.njobs >= 1 && jobs.njobs <= HR_WIRE_MAX_JOBS, "njobs %u", jobs.njobs);
		inside(jobs.tenant);
		inside(jobs.content);
		inside(jobs.provider);
		for (uint32_t i = 0; i < jobs.njobs; i++) {
			CHECK(jobs.jobs[i].message_id != 0, "job %u: message_id 0 accepted", i);
			inside(jobs.jobs[i].address);
			inside(jobs.jobs[i].data);
		}
		hr_buf_reset(&b);
		hr_wire_encode_jobs(&b, &jobs);
		same_bytes(&b);
		hr_wire_jobs_free(&jobs);
	} else {
		failed_cleanly(&err, &jobs, sizeof jobs);
	}
	hr_wire_jobs_free(&jobs);

	hr_result_batch results;
	hr_err_clear(&err);
	if (hr_wire_decode_results(data, size, &results, &err)) {
		accepted++;
		CHECK(peeked && type == HR_W_RESULTS, "results decoded, peek says %d", (int)type);
		for (uint32_t i = 0; i < results.nresults; i++) {
			CHECK(results.results[i].message_id != 0, "result %u: message_id 0 accepted", i);
			CHECK(strcmp(hr_result_name(results.results[i].status), "?") != 0, "result %u: bad status",
			      i);
			inside(results.results[i].provider_id);
			inside(results.results[i].reason);
		}
		hr_buf_reset(&b);
		hr_wire_encode_results(&b, &results);
		same_bytes(&b);
		hr_wire_results_free(&results);
	} else {
		failed_cleanly(&err, &results, sizeof results);
	}
	hr_wire_results_free(&results);

	hr_credit credit;
	hr_err_clear(&err);
	if (hr_wire_decode_credit(data, size, &credit, &err)) {
		accepted++;
		CHECK(peeked && type == HR_W_CREDIT, "credit decoded, peek says %d", (int)type);
		hr_buf_reset(&b);
		hr_wire_encode_credit(&b, &credit);
		same_bytes(&b);
	} else {
		failed_cleanly(&err, &credit, sizeof credit);
	}

	hr_bye bye;
	hr_err_clear(&err);
	if (hr_wire_decode_bye(data, size, &bye, &err)) {
		accepted++;
		CHECK(peeked && type == HR_W_BYE, "bye decoded, peek says %d", (int)type);
		hr_buf_reset(&b);
		hr_wire_encode_bye(&b, &bye);
		same_bytes(&b);
		hr_wire_bye_free(&bye);
	} else {
		failed_cleanly(&err, &bye, sizeof bye);
	}
	hr_wire_bye_free(&bye);

	if (peeked && type == HR_W_HEARTBEAT) {
		accepted++;
		hr_buf_reset(&b);
		hr_wire_encode_heartbeat(&b);
		same_bytes(&b);
	}
	CHECK(accepted <= 1, "%d decoders accepted one frame", accepted);
	if (!peeked)
		CHECK(accepted == 0, "a decoder accepted what peek refused");
	hr_buf_free(&b);
	return 0;
}
