/*
 * test_codes.c -- the database-free parts of common/codes.c: the OTP key and
 * hash against an independent HMAC-SHA256 (Python's hmac module computed the
 * vectors), uniform digits, the code alphabet, code normalisation.
 */
#include <stdio.h>
#include <string.h>

#include "codes.h"
#include "harness.h"

START_TEST(otp_key_and_hash_match_hmac_sha256_vectors)
{
	uint8_t master[HR_KEY_LEN], key[HR_KEY_LEN];
	for (int i = 0; i < HR_KEY_LEN; i++)
		master[i] = (uint8_t)i;
	hr_otp_key(master, key);
	char hex[65];
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", key[i]);
	ck_assert_str_eq(hex, "df8fa1d9c9054e69ef2c4b69f30d02b31f8d1c584395196eded2ad2f3ec2f7bf");
	char h[65], other[65];
	hr_otp_hash(key, 42, "abcdef", "1234", h);
	ck_assert_str_eq(h, "99619f6df93dcf4e2170c0448763673f376f63f61d834037452ced4090e1dfb7");
	/* tenant, salt and code each change the hash */
	hr_otp_hash(key, 43, "abcdef", "1234", other);
	ck_assert_str_ne(h, other);
	hr_otp_hash(key, 42, "abcdeg", "1234", other);
	ck_assert_str_ne(h, other);
	hr_otp_hash(key, 42, "abcdef", "1235", other);
	ck_assert_str_ne(h, other);
}
END_TEST

START_TEST(otp_digits_are_uniform)
{
	long seen[10] = {0};
	char c[HR_OTP_MAX_DIGITS + 1];
	for (int i = 0; i < 10000; i++) {
		hr_otp_generate(HR_OTP_MAX_DIGITS, c);
		ck_assert_int_eq(strlen(c), HR_OTP_MAX_DIGITS);
		for (int k = 0; k < HR_OTP_MAX_DIGITS; k++) {
			ck_assert(c[k] >= '0' && c[k] <= '9');
			seen[c[k] - '0']++;
		}
	}
	/* 100,000 digits: each expected 10,000 (sd ~95); 9,500..10,500 is > 5 sd */
	for (int d = 0; d < 10; d++)
		ck_assert_msg(seen[d] > 9500 && seen[d] < 10500, "digit %d seen %ld times", d, seen[d]);
	hr_otp_generate(HR_OTP_MIN_DIGITS, c);
	ck_assert_int_eq(strlen(c), HR_OTP_MIN_DIGITS);
}
END_TEST

START_TEST(codes_use_the_unambiguous_alphabet)
{
	char c[33];
	long seen[256] = {0};
	for (int i = 0; i < 2000; i++) {
		hr_code_random(c, 32);
		ck_assert_int_eq(strlen(c), 32);
		for (int k = 0; k < 32; k++)
			seen[(unsigned char)c[k]]++;
	}
	const char *bad = "0O1IL";
	for (const char *b = bad; *b; b++)
		ck_assert_int_eq(seen[(unsigned char)*b], 0);
	int used = 0;
	for (int i = 0; i < 256; i++)
		used += seen[i] > 0;
	ck_assert_int_eq(used, 31);
}
END_TEST

START_TEST(code_normalize_table)
{
	static const struct {
		const char *in, *out; /* out NULL = refused */
	} cases[] = {
		{"abc-1", "ABC-1"}, {"X_y_Z", "X_Y_Z"}, {"7", "7"}, {"", NULL}, {"a b", NULL}, {"a'--", NULL},
		{"\xc3\xa9t\xc3\xa9", NULL}, {"a/b", NULL},
		{"1234567890123456789012345678901234567890123456789012345678901234", "1234567890123456789012345678901234567890123456789012345678901234"},
		{"12345678901234567890123456789012345678901234567890123456789012345", NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char out[HR_CODE_MAX + 1];
		hr_err err = {0};
		bool ok = hr_code_normalize(cases[i].in, out, &err);
		ck_assert_msg(ok == (cases[i].out != NULL), "'%s': got %d, want %d", cases[i].in, ok, cases[i].out != NULL);
		if (ok)
			ck_assert_str_eq(out, cases[i].out);
		else
			ck_assert_str_eq(err.field, "code");
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("codes");
	TCase *tc = th_tcase("units");
	tcase_add_test(tc, otp_key_and_hash_match_hmac_sha256_vectors);
	tcase_add_test(tc, otp_digits_are_uniform);
	tcase_add_test(tc, codes_use_the_unambiguous_alphabet);
	tcase_add_test(tc, code_normalize_table);
	suite_add_tcase(s, tc);
	return th_run(s);
}
