/*
 * gen_corpus.c -- writes the fuzz seed corpus for fuzz_wire: a few dozen
 * valid frames of every type, one file each, named <type>-<n>.
 *
 *   wire_corpus tests/wire/corpus
 *
 * The test seed_corpus_decodes checks that every committed seed still decodes
 * and re-encodes to itself, so re-run this after a format change.
 */
#include <stdio.h>
#include <string.h>

#include "wire.h"

static int nfiles;

static int put(const char *dir, const char *type, hr_buf *b)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s-%02d", dir, type, nfiles++);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(b->data, 1, b->len, f) != b->len || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	hr_buf_reset(b);
	return 0;
}

#define S(lit) ((hr_str){(lit), sizeof(lit) - 1})

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	hr_buf b = {0};
	int rc = 0;

	static const hr_str workers[] = {S(""), S("host-1:4242:abcd"), S("w\0\xff")};
	for (int i = 0; i < 3; i++) {
		hr_hello h = {workers[i], (uint8_t)(HR_CH_EMAIL + i * 2), (uint8_t)(HR_LANE_TRANSACTIONAL + i % 2),
			      (uint32_t)(i * 7)};
		hr_wire_encode_hello(&b, &h);
		rc |= put(dir, "hello", &b);
	}

	static const hr_job jobs[] = {
		{1, 1, S("ann@example.com"), S("{\"first\":\"Ann\"}")},
		{2, 3, S("+15550100"), S("{}")},
		{UINT64_MAX, UINT32_MAX, S(""), S("")},
		{42, 1, S("https://hooks.example.com/x"), S("{\"a\":[1,2,3]}")},
	};
	static const hr_str contents[] = {
		S("{\"subject\":\"Hi {{first}}\",\"html\":\"<p>Hello</p>\",\"text\":\"Hello\",\"from\":\"a@b.c\"}"),
		S("{\"text\":\"Your code is {{code}}\"}"),
		S(""),
	};
	for (int ch = HR_CH_EMAIL; ch <= HR_CH_WEBHOOK; ch++)
		for (int lane = HR_LANE_TRANSACTIONAL; lane <= HR_LANE_BULK; lane++) {
			hr_job_batch m = {(uint64_t)(ch * 10 + lane), 1700000000000u + (uint64_t)ch, (uint32_t)ch,
					  S("acme"), (uint8_t)ch, (uint8_t)lane, (uint64_t)(ch - 1), (uint32_t)lane,
					  contents[(ch + lane) % 3], S("{\"name\":\"sink\",\"transport\":\"sink\"}"),
					  (uint32_t)(1 + (ch + lane) % 4), (hr_job *)jobs};
			hr_wire_encode_jobs(&b, &m);
			rc |= put(dir, "jobs", &b);
		}

	static const hr_result results[] = {
		{1, HR_RES_SENT, 1500, 0, S("<abc@provider>"), S("")},
		{2, HR_RES_RETRY, 20000, 3000, S(""), S("smtp 451 4.7.1 try later")},
		{3, HR_RES_PERMANENT, 10, 0, S(""), S("smtp 550 5.1.1 no such user")},
		{4, HR_RES_THROTTLED, 5, 60000, S(""), S("http 429")},
		{5, HR_RES_BOUNCED, 99, 0, S(""), S("hard bounce")},
	};
	for (uint32_t n = 0; n <= 5; n++) {
		hr_result_batch m = {100 + n, 7, n, (hr_result *)results};
		hr_wire_encode_results(&b, &m);
		rc |= put(dir, "results", &b);
	}

	static const uint32_t credits[] = {0, 1, 64, UINT32_MAX};
	for (int i = 0; i < 4; i++) {
		hr_wire_encode_credit(&b, &(hr_credit){credits[i]});
		rc |= put(dir, "credit", &b);
	}

	hr_wire_encode_heartbeat(&b);
	rc |= put(dir, "heartbeat", &b);

	static const uint64_t leases[] = {11, 12, UINT64_MAX, 0};
	for (uint32_t n = 0; n <= 4; n += 2) {
		hr_wire_encode_bye(&b, &(hr_bye){n, (uint64_t *)leases});
		rc |= put(dir, "bye", &b);
	}
	hr_buf_free(&b);
	return rc;
}
