/*
 * test_units.c -- table-driven unit tests of common/ that need no database:
 * settings table, crypto, slugs, migration file loading, JSON text.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "harness.h"
#include "jsonout.h"
#include "migrate.h"
#include "tenancy.h"

/* ---- config ---- */

START_TEST(config_defaults_and_env)
{
	hr_config *cfg = hr_config_new(HR_ROLE_CTL);
	hr_err err = {0};
	ck_assert_int_eq(hr_config_int(cfg, "migrate_jobs"), 4);
	ck_assert_ptr_null(hr_config_str(cfg, "database_url"));
	setenv("HERALD_MIGRATE_JOBS", "9", 1);
	ck_assert(hr_config_load_env(cfg, &err));
	unsetenv("HERALD_MIGRATE_JOBS");
	ck_assert_int_eq(hr_config_int(cfg, "migrate_jobs"), 9);
	hr_config_free(cfg);
}
END_TEST

START_TEST(config_args_override_and_leave_others)
{
	hr_config *cfg = hr_config_new(HR_ROLE_CTL);
	hr_err err = {0};
	char *argv[] = {"prog", "--migrate-jobs=3", "tenant", "--data_dir", "/x", "list", "--name", "n", NULL};
	int argc = 8;
	ck_assert_msg(hr_config_load_args(cfg, &argc, argv, &err), "%s", err.msg);
	ck_assert_int_eq(hr_config_int(cfg, "migrate_jobs"), 3);
	ck_assert_str_eq(hr_config_str(cfg, "data_dir"), "/x");
	ck_assert_int_eq(argc, 5);
	ck_assert_str_eq(argv[1], "tenant");
	ck_assert_str_eq(argv[2], "list");
	ck_assert_str_eq(argv[3], "--name"); /* not a setting: left for the caller */
	hr_config_free(cfg);
}
END_TEST

static const struct {
	const char *name, *value, *want; /* want: substring of the error, NULL = accepted */
} config_cases[] = {
	{"migrate_jobs", "0", "out of range 1..64"},
	{"migrate_jobs", "65", "out of range"},
	{"migrate_jobs", "4x", "not a whole number"},
	{"migrate_jobs", "", "not a whole number"},
	{"migrate_jobs", "64", NULL},
	{"pg_port", "70000", "out of range"},
	{"no_such_thing", "1", "unknown setting"},
	{"data_dir", "/tmp/x", NULL},
};

START_TEST(config_validation_table)
{
	hr_config *cfg = hr_config_new(HR_ROLE_CTL);
	hr_err err = {0};
	bool ok = hr_config_set(cfg, config_cases[_i].name, config_cases[_i].value, &err);
	if (config_cases[_i].want) {
		ck_assert_msg(!ok, "%s=%s: got accepted, want error '%s'", config_cases[_i].name,
			      config_cases[_i].value, config_cases[_i].want);
		ck_assert_msg(strstr(err.msg, config_cases[_i].want), "%s=%s: got '%s', want '%s'",
			      config_cases[_i].name, config_cases[_i].value, err.msg, config_cases[_i].want);
		ck_assert_str_eq(err.field, config_cases[_i].name);
	} else {
		ck_assert_msg(ok, "%s=%s: got error '%s', want accepted", config_cases[_i].name,
			      config_cases[_i].value, err.msg);
	}
	hr_config_free(cfg);
}
END_TEST

START_TEST(config_show_masks_secrets)
{
	hr_config *cfg = hr_config_new(HR_ROLE_CTL);
	hr_err err = {0};
	ck_assert(hr_config_set(cfg, "database_url", "postgresql://u:hunter2@db/herald", &err));
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	hr_config_show(cfg, f);
	fclose(f);
	ck_assert_msg(!strstr(buf, "hunter2"), "secret shown: %s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "database_url = ******** (set)"));
	ck_assert_ptr_nonnull(strstr(buf, "migrate_jobs = 4"));
	free(buf);
	hr_config_free(cfg);
}
END_TEST

/* ---- crypto ---- */

START_TEST(sha256_known_vector)
{
	char hex[65];
	hr_sha256_hex("abc", 3, hex);
	ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
END_TEST

START_TEST(seal_roundtrip_and_tamper)
{
	uint8_t key[HR_KEY_LEN], other[HR_KEY_LEN];
	hr_err err = {0};
	ck_assert(hr_key_from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
				  key, &err));
	memcpy(other, key, sizeof key);
	other[0] ^= 1;
	uint8_t *sealed;
	size_t len;
	const char *secret = "smtp-password-42";
	hr_seal(key, "tenant:1/account:smtp", secret, strlen(secret), &sealed, &len);
	ck_assert_uint_eq(len, strlen(secret) + HR_SEAL_OVERHEAD);
	char *plain;
	size_t plen;
	ck_assert(hr_open(key, "tenant:1/account:smtp", sealed, len, &plain, &plen, &err));
	ck_assert_str_eq(plain, secret);
	hr_free(plain);
	/* wrong key, wrong owner, flipped bit, truncated: all refused */
	ck_assert(!hr_open(other, "tenant:1/account:smtp", sealed, len, &plain, &plen, &err));
	ck_assert(!hr_open(key, "tenant:2/account:smtp", sealed, len, &plain, &plen, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "does not open"));
	sealed[14] ^= 0x40;
	ck_assert(!hr_open(key, "tenant:1/account:smtp", sealed, len, &plain, &plen, &err));
	ck_assert(!hr_open(key, "tenant:1/account:smtp", sealed, 10, &plain, &plen, &err));
	hr_free(sealed);
}
END_TEST

static const struct {
	const char *hex, *want;
} key_cases[] = {
	{"00", "64 hex digits, got 2"},
	{"zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "non-hex character at position 0"},
	{"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", NULL},
};

START_TEST(master_key_parsing)
{
	uint8_t key[HR_KEY_LEN];
	hr_err err = {0};
	bool ok = hr_key_from_hex(key_cases[_i].hex, key, &err);
	if (key_cases[_i].want)
		ck_assert_msg(!ok && strstr(err.msg, key_cases[_i].want), "got '%s', want '%s'",
			      ok ? "accepted" : err.msg, key_cases[_i].want);
	else
		ck_assert_msg(ok, "got '%s', want accepted", err.msg);
}
END_TEST

START_TEST(random_tokens_differ)
{
	char a[33], b[33];
	hr_random_token(a, 32);
	hr_random_token(b, 32);
	ck_assert_uint_eq(strlen(a), 32);
	ck_assert_str_ne(a, b);
	for (int i = 0; i < 32; i++)
		ck_assert(strchr("abcdefghijklmnopqrstuvwxyz234567", a[i]));
}
END_TEST

/* ---- slugs ---- */

static const struct {
	const char *slug, *want;
} slug_cases[] = {
	{"acme", NULL},
	{"shop-1", NULL},
	{"ab", NULL},
	{"a", "2 to 40 characters"},
	{"", "2 to 40 characters"},
	{"a23456789012345678901234567890123456789012", "2 to 40 characters"},
	{"1shop", "start with a letter"},
	{"-shop", "start with a letter"},
	{"Shop", "start with a letter"},
	{"shop_1", "character 5"},
	{"shop;drop", "character 5"},
	{"shop\"x", "character 5"},
	{"shop-", "must not end with '-'"},
	{"sh\xc3\xa9p", "character 3"},
};

START_TEST(slug_table)
{
	hr_err err = {0};
	bool ok = hr_slug_valid(slug_cases[_i].slug, "slug", &err);
	if (slug_cases[_i].want) {
		ck_assert_msg(!ok, "'%s': got accepted, want '%s'", slug_cases[_i].slug, slug_cases[_i].want);
		ck_assert_msg(strstr(err.msg, slug_cases[_i].want), "'%s': got '%s', want '%s'",
			      slug_cases[_i].slug, err.msg, slug_cases[_i].want);
		ck_assert_str_eq(err.field, "slug");
	} else {
		ck_assert_msg(ok, "'%s': got '%s', want accepted", slug_cases[_i].slug, err.msg);
	}
}
END_TEST

/* ---- migration loading ---- */

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static char *migration_dir(void)
{
	char *dir = th_tmpdir("mig");
	char sub[1024];
	snprintf(sub, sizeof sub, "%s/control", dir);
	mkdir(sub, 0755);
	snprintf(sub, sizeof sub, "%s/tenant", dir);
	mkdir(sub, 0755);
	write_file(dir, "control/0001_a.sql", "SELECT 1;");
	write_file(dir, "tenant/0002_b.sql", "SELECT 2;");
	write_file(dir, "tenant/0001_a.sql", "SELECT 1;");
	return dir;
}

START_TEST(migrations_load_sorted_with_checksums)
{
	char *dir = migration_dir();
	hr_migration_set *s;
	hr_err err = {0};
	ck_assert_msg(hr_migrations_load(dir, &s, &err), "%s", err.msg);
	ck_assert_uint_eq(s->ntenant, 2);
	ck_assert_int_eq(s->tenant[0].version, 1);
	ck_assert_int_eq(s->tenant[1].version, 2);
	ck_assert_str_eq(s->tenant[1].name, "0002_b.sql");
	char want[65];
	hr_sha256_hex("SELECT 2;", 9, want);
	ck_assert_str_eq(s->tenant[1].checksum, want);
	ck_assert_int_eq(hr_migrations_latest(s->tenant, s->ntenant), 2);
	hr_migrations_free(s);
	hr_free(dir);
}
END_TEST

static const struct {
	const char *file, *want;
} bad_migration_cases[] = {
	{"tenant/0001_dup.sql", "same version 1"},
	{"tenant/001-x.sql", "NNNN_lowercase_words.sql"},
	{"tenant/0003_Upper.sql", "NNNN_lowercase_words.sql"},
	{"tenant/0000_zero.sql", "NNNN_lowercase_words.sql"},
	{"control/notes.txt", "NNNN_lowercase_words.sql"},
};

START_TEST(migrations_bad_files_refused)
{
	char *dir = migration_dir();
	write_file(dir, bad_migration_cases[_i].file, "SELECT 3;");
	hr_migration_set *s;
	hr_err err = {0};
	ck_assert(!hr_migrations_load(dir, &s, &err));
	ck_assert_msg(strstr(err.msg, bad_migration_cases[_i].want), "%s: got '%s', want '%s'",
		      bad_migration_cases[_i].file, err.msg, bad_migration_cases[_i].want);
	hr_free(dir);
}
END_TEST

START_TEST(embedded_migrations_match_source_tree)
{
	hr_migration_set *emb, *src;
	hr_err err = {0};
	ck_assert_msg(hr_migrations_load(NULL, &emb, &err), "%s", err.msg);
	ck_assert_msg(hr_migrations_load(HERALD_SOURCE_DIR "/migrations", &src, &err), "%s", err.msg);
	ck_assert_uint_eq(emb->ncontrol, src->ncontrol);
	ck_assert_uint_eq(emb->ntenant, src->ntenant);
	for (size_t i = 0; i < emb->ntenant; i++)
		ck_assert_str_eq(emb->tenant[i].checksum, src->tenant[i].checksum);
	for (size_t i = 0; i < emb->ncontrol; i++)
		ck_assert_str_eq(emb->control[i].checksum, src->control[i].checksum);
	hr_migrations_free(emb);
	hr_migrations_free(src);
}
END_TEST

/* ---- JSON text (jsonout.h) ---- */

static const struct real_case {
	double d;
	const char *text;
} real_cases[] = {
	{19.99, "19.99"}, {0.1, "0.1"}, {1.0, "1.0"}, {100.0, "100.0"}, {-0.0, "-0.0"}, {-2.5, "-2.5"},
	{0.30000000000000004, "0.30000000000000004"}, {1e300, "1e+300"}, {1e-7, "1e-07"},
	{123456789.125, "123456789.125"}, {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
};

START_TEST(json_reals_shortest_text)
{
	const struct real_case *c = &real_cases[_i];
	char out[40];
	int n = hr_json_real(out, sizeof out, c->d);
	ck_assert_str_eq(out, c->text);
	ck_assert_int_eq(n, (int)strlen(c->text));
	json_t *v = json_real(c->d);
	char *t = hr_json_dump(v);
	ck_assert_str_eq(t, c->text);
	hr_free(t);
	json_decref(v);
}
END_TEST

START_TEST(json_reals_read_back_exactly)
{
	/* Random bit patterns: every finite double reads back from its text as itself, in no more
	 * characters than jansson's 17 digits. */
	uint64_t x = 0x9E3779B97F4A7C15u;
	int tried = 0;
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double d;
		memcpy(&d, &x, sizeof d);
		if (!isfinite(d))
			continue;
		tried++;
		char out[40], ref[40];
		hr_json_real(out, sizeof out, d);
		snprintf(ref, sizeof ref, "%.17g", d);
		ck_assert_msg(strtod(out, NULL) == d, "%s does not read back as %s", out, ref);
		ck_assert_msg(strpbrk(out, ".e"), "%s would read as an integer", out);
		ck_assert_msg(strlen(out) <= strlen(ref) + 2, "%s is longer than %s", out, ref);
	}
	ck_assert_int_gt(tried, 190000);
	char out[40];
	hr_num_text(out, sizeof out, 3.0);
	ck_assert_str_eq(out, "3");
	hr_num_text(out, sizeof out, 0.1);
	ck_assert_str_eq(out, "0.1");
}
END_TEST

START_TEST(json_dump_matches_jansson_but_reals)
{
	/* Without reals, the text is jansson's compact text byte for byte (keys in their order,
	 * UTF-8 as is, the same escapes); with them, it reads back as an equal value. */
	const char *src = "{\"z\": 1, \"a\": [true, false, null, -9223372036854775807, \"\"], "
			  "\"s\": \"q\\\" b\\\\ \\/ t\\t n\\n r\\r \\b \\f \\u0001 \\u001f caf\u00e9 \u2603 \\ud83d\\ude00\", "
			  "\"k\\n\\\"\": {\"deep\": [[[{}]]], \"e\": {}}, \"u\": \"\\u2028\"}";
	json_error_t e;
	json_t *v = json_loads(src, 0, &e);
	ck_assert_msg(v != NULL, "%s", e.text);
	char *ours = hr_json_dump(v), *theirs = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	ck_assert_str_eq(ours, theirs);
	hr_free(ours);
	free(theirs);
	json_decref(v);
	v = json_loads("{\"revenue\": 19.99, \"list\": [0.1, 2.0, -1e-300, 3], \"n\": {\"x\": 1e22}}", 0, &e);
	ck_assert_ptr_nonnull(v);
	ours = hr_json_dump(v);
	ck_assert_str_eq(ours, "{\"revenue\":19.99,\"list\":[0.1,2.0,-1e-300,3],\"n\":{\"x\":1e+22}}");
	json_t *back = json_loads(ours, 0, &e);
	ck_assert_msg(back && json_equal(back, v), "%s", ours);
	hr_free(ours);
	json_decref(back);
	json_decref(v);
	char *null_text = hr_json_dump(NULL);
	ck_assert_str_eq(null_text, "null");
	hr_free(null_text);
	json_t *str = json_string("top");
	char *top = hr_json_dump(str);
	ck_assert_str_eq(top, "\"top\"");
	hr_free(top);
	json_decref(str);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("common_units");
	TCase *tc = th_tcase("config");
	tcase_add_test(tc, config_defaults_and_env);
	tcase_add_test(tc, config_args_override_and_leave_others);
	tcase_add_loop_test(tc, config_validation_table, 0, sizeof config_cases / sizeof config_cases[0]);
	tcase_add_test(tc, config_show_masks_secrets);
	suite_add_tcase(s, tc);
	tc = th_tcase("crypto");
	tcase_add_test(tc, sha256_known_vector);
	tcase_add_test(tc, seal_roundtrip_and_tamper);
	tcase_add_loop_test(tc, master_key_parsing, 0, sizeof key_cases / sizeof key_cases[0]);
	tcase_add_test(tc, random_tokens_differ);
	suite_add_tcase(s, tc);
	tc = th_tcase("slug");
	tcase_add_loop_test(tc, slug_table, 0, sizeof slug_cases / sizeof slug_cases[0]);
	suite_add_tcase(s, tc);
	tc = th_tcase("migration_files");
	tcase_add_test(tc, migrations_load_sorted_with_checksums);
	tcase_add_loop_test(tc, migrations_bad_files_refused, 0,
			    sizeof bad_migration_cases / sizeof bad_migration_cases[0]);
	tcase_add_test(tc, embedded_migrations_match_source_tree);
	suite_add_tcase(s, tc);
	tc = th_tcase("json_text");
	tcase_add_loop_test(tc, json_reals_shortest_text, 0, sizeof real_cases / sizeof real_cases[0]);
	tcase_add_test(tc, json_reals_read_back_exactly);
	tcase_add_test(tc, json_dump_matches_jansson_but_reals);
	suite_add_tcase(s, tc);
	return th_run(s);
}
