/*
 * test_eventscan.c -- api/eventscan.c, the event batch read without a JSON
 * tree, against the usual way (jansson and the validators, evoracle.c).
 *
 * The fast path may only take a body that the usual way takes too, and must
 * then read the same events: the same names and times, and properties that
 * PostgreSQL's jsonb reads as the same value -- without escapes, the very
 * text hr_json_dump writes (numbers, key order).  Everything else it must
 * leave to the usual way, which answers it.  Three parts: bodies it must
 * take, bodies it must leave (each also marked valid or not for the usual
 * way, which checks what this test assumes of jansson), and 200,000 random
 * mutations of the first, each taken one compared with the oracle.  The
 * database side (the jsonb stored either way) is in test_api.c,
 * numbers_are_stored_and_shown_as_sent and events_scanned_as_parsed.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "eventscan.h"
#include "evoracle.h"
#include "harness.h"

/* A body of n events, each `one` (a JSON object) with %d replaced by its index. */
static char *body_of(const char *one, int n)
{
	hr_sbuf b = {0};
	hr_sbuf_add(&b, "{\"events\":[");
	for (int i = 0; i < n; i++) {
		if (i)
			hr_sbuf_add(&b, ",");
		hr_sbuf_addf(&b, one, i, i);
	}
	hr_sbuf_add(&b, "]}");
	return b.p;
}

static const char *const takes[] = {
	/* bench/api-events.lua's event */
	"{\"events\":[{\"name\":\"page_view\",\"properties\":{\"url\":\"/p/1\",\"ref\":\"utm_bench\",\"n\":1},"
	"\"occurred_at\":\"2026-01-02T03:04:05Z\"}]}",
	"{\"events\":[{\"name\":\"a\"}]}",
	" \n{ \"events\" : [ { \"name\" : \"a\" , \"properties\" : { \"x\" : [ 1 , 2.5 , -3e2 , true , false , null ,"
	" { } , [ ] ] } } , {\"name\":\"b\"} ] } \r\n\t",
	/* reals as hr_json_dump writes them; integers as sent */
	"{\"events\":[{\"name\":\"order\",\"properties\":{\"revenue\":19.99,\"q\":0.1,\"r\":1.0,\"s\":1e300,"
	"\"t\":1E-7,\"u\":-0.0,\"v\":123456789012345678,\"w\":-123456789012345678,\"x\":0.30000000000000004,"
	"\"y\":100.50,\"z\":1e-400,\"zz\":0,\"n\":-5,\"e\":2E+3}}]}",
	/* UTF-8 as is, escapes of every kind */
	"{\"events\":[{\"name\":\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\",\"properties\":{\"k\xc3\xa9\":"
	"\"\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\\b\\f\\r\\u007f\",\"raw\":\"a\x7f\xf4\x8f\xbf\xbf\"}}]}",
	/* nulls where the usual way takes them */
	"{\"events\":[{\"contact\":null,\"name\":\"a\",\"properties\":null,\"occurred_at\":null}]}",
	"{\"events\":[{\"name\":\"a\",\"occurred_at\":\"2026-01-02T03:04:05.123456789+02:00\"},"
	"{\"name\":\"b\",\"occurred_at\":\"2028-02-29t23:59:60z\"},{\"name\":\"c\",\"occurred_at\":\"2026-01-02T03:04:05-11:30\"}]}",
	/* the limits: depth 16, 32 keys, a 128-byte name */
	"{\"events\":[{\"name\":\"a\",\"properties\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
	"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":[1]}}}}}}}}}}}}}}}]}",
	"{\"events\":[{\"name\":\"a\",\"properties\":{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,"
	"\"k7\":7,\"k8\":8,\"k9\":9,\"k10\":0,\"k11\":1,\"k12\":2,\"k13\":3,\"k14\":4,\"k15\":5,\"k16\":6,\"k17\":7,"
	"\"k18\":8,\"k19\":9,\"k20\":0,\"k21\":1,\"k22\":2,\"k23\":3,\"k24\":4,\"k25\":5,\"k26\":6,\"k27\":7,\"k28\":8,"
	"\"k29\":9,\"k30\":0,\"k31\":1}}]}",
	"{\"events\":[{\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}]}",
	/* the same key in two objects is no duplicate */
	"{\"events\":[{\"name\":\"a\",\"properties\":{\"a\":{\"a\":1},\"b\":{\"a\":2}}}]}",
};

START_TEST(takes_what_the_usual_way_takes)
{
	for (size_t i = 0; i < sizeof takes / sizeof *takes; i++) {
		evscan *s = hr_malloc(sizeof *s);
		s->text = (hr_sbuf){0};
		ck_assert_msg(evscan_read(s, takes[i], strlen(takes[i])), "not taken: %s", takes[i]);
		const char *bad = evoracle_compare(s, takes[i], strlen(takes[i]));
		ck_assert_msg(!bad, "%s: %s", bad, takes[i]);
		evscan_free(s);
		hr_free(s);
	}
	/* The texts themselves, for the ones a reader cares about most. */
	evscan *s = hr_malloc(sizeof *s);
	s->text = (hr_sbuf){0};
	ck_assert(evscan_read(s, takes[3], strlen(takes[3])));
	ck_assert_str_eq(s->text.p + s->ev[0].props,
			 "{\"revenue\":19.99,\"q\":0.1,\"r\":1.0,\"s\":1e+300,\"t\":1e-07,\"u\":-0.0,"
			 "\"v\":123456789012345678,\"w\":-123456789012345678,\"x\":0.30000000000000004,\"y\":100.5,"
			 "\"z\":0.0,\"zz\":0,\"n\":-5,\"e\":2000.0}");
	ck_assert_uint_eq(s->ev[0].at, EVSCAN_NONE);
	evscan_free(s);
	ck_assert(evscan_read(s, takes[0], strlen(takes[0])));
	ck_assert_str_eq(s->text.p + s->ev[0].name, "page_view");
	ck_assert_str_eq(s->text.p + s->ev[0].props, "{\"url\":\"/p/1\",\"ref\":\"utm_bench\",\"n\":1}");
	ck_assert_str_eq(s->text.p + s->ev[0].at, "2026-01-02T03:04:05Z");
	evscan_free(s);
	/* 1,000 events: the most a batch holds. */
	char *b = body_of("{\"name\":\"e%d\",\"properties\":{\"i\":%d}}", EVSCAN_MAX_EVENTS);
	ck_assert(evscan_read(s, b, strlen(b)));
	ck_assert_uint_eq(s->n, EVSCAN_MAX_EVENTS);
	ck_assert_str_eq(s->text.p + s->ev[999].name, "e999");
	ck_assert_ptr_null(evoracle_compare(s, b, strlen(b)));
	evscan_free(s);
	hr_free(b);
	hr_free(s);
}
END_TEST

/* A body the fast path leaves alone; valid: whether the usual way takes it (then the
 * scanner merely does not know it: an escape in a key, a long integer, ...). */
typedef struct leave {
	const char *body;
	size_t len; /* 0: strlen */
	bool valid;
} leave;

#define E1(ev) "{\"events\":[" ev "]}"
#define P(props) E1("{\"name\":\"a\",\"properties\":" props "}")

static const leave leaves[] = {
	{"", 0, false},
	{"{}", 0, false},
	{E1(""), 0, false},
	{"{\"events\":{}}", 0, false},
	{"{\"events\":[1]}", 0, false},
	{"{\"events\":[{\"name\":\"a\"}],\"x\":1}", 0, false},
	{"{\"x\":1,\"events\":[{\"name\":\"a\"}]}", 0, false},
	{"{\"events\":[{\"name\":\"a\"}],\"events\":[{\"name\":\"a\"}]}", 0, false},
	{"{\"name\":\"a\"}", 0, false}, /* one event: valid for the route, not a batch */
	{"{\"ev\\u0065nts\":[{\"name\":\"a\"}]}", 0, true},
	{"[{\"name\":\"a\"}]", 0, false},
	{E1("{\"name\":\"a\"}") "x", 0, false},
	{E1("{\"name\":\"a\"},"), 0, false},
	/* the event's members */
	{E1("{\"name\":\"a\",\"nam\":1}"), 0, false},
	{E1("{\"name\":\"a\",\"name\":\"b\"}"), 0, false},
	{E1("{\"properties\":{}}"), 0, false},
	{E1("{}"), 0, false},
	{E1("{\"name\":\"\"}"), 0, false},
	{E1("{\"name\":null}"), 0, false},
	{E1("{\"name\":5}"), 0, false},
	{E1("{\"name\":\"a\x7f\"}"), 0, false},
	{E1("{\"name\":\"a\\u0007\"}"), 0, false},
	{E1("{\"name\":\"a\\u0062\"}"), 0, true},
	{E1("{\"n\\u0061me\":\"a\"}"), 0, true},
	{E1("{\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"), 0, false},
	{E1("{\"name\":\"a\",\"contact\":{\"email\":\"a@b.example\"}}"), 0, false},
	{E1("{\"name\":\"a\",\"contact\":\"x\"}"), 0, false},
	{P("[]"), 0, false},
	{P("\"x\""), 0, false},
	{P("1"), 0, false},
	{E1("{\"name\":\"a\",\"occurred_at\":\"yesterday\"}"), 0, false},
	{E1("{\"name\":\"a\",\"occurred_at\":\"2026-02-30T00:00:00Z\"}"), 0, false},
	{E1("{\"name\":\"a\",\"occurred_at\":\"2026-01-02T03:04:05.1234567890Z\"}"), 0, false},
	{E1("{\"name\":\"a\",\"occurred_at\":\"2026-01-02T03:04:05.123456789+02:00xxxxxxxxxxx\"}"), 0, false},
	{E1("{\"name\":\"a\",\"occurred_at\":5}"), 0, false},
	{E1("{\"name\":\"a\",\"occurred_at\":\"2026-01-02T03:04:05\\u005a\"}"), 0, true},
	/* the properties' JSON */
	{P("{\"a\":{\"b\":1,\"b\":2}}"), 0, false},
	{P("{\"a\":1,\"\\u0061\":2}"), 0, false},
	{P("{\"\\u0062\":1}"), 0, true},
	{P("{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"k10\":0,\"k11\":1,"
	   "\"k12\":2,\"k13\":3,\"k14\":4,\"k15\":5,\"k16\":6,\"k17\":7,\"k18\":8,\"k19\":9,\"k20\":0,\"k21\":1,\"k22\":2,"
	   "\"k23\":3,\"k24\":4,\"k25\":5,\"k26\":6,\"k27\":7,\"k28\":8,\"k29\":9,\"k30\":0,\"k31\":1,\"k32\":2}"), 0, true},
	{P("{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":[[1]]}}}}}}}}}}}}}}"),
	 0, true},
	{P("{\"a\":\"x\\u0000y\"}"), 0, false},
	{P("{\"a\":\"\\ud800\"}"), 0, false},
	{P("{\"a\":\"\\udc00\"}"), 0, false},
	{P("{\"a\":\"\\ud800\\u0041\"}"), 0, false},
	{P("{\"a\":\"\\ud800x\"}"), 0, false},
	{P("{\"a\":\"\xc0\xaf\"}"), 0, false},
	{P("{\"a\":\"\xe0\x80\xaf\"}"), 0, false},
	{P("{\"a\":\"\xe0\x9f\xbf\"}"), 0, false}, /* U+07FF in three bytes */
	{P("{\"a\":\"\xed\xa0\x80\"}"), 0, false},
	{P("{\"a\":\"\xf4\x90\x80\x80\"}"), 0, false},
	{P("{\"a\":\"\x80\"}"), 0, false},
	{P("{\"a\":\"\xe2\x82\"}"), 0, false},
	{P("{\"a\":\"\xff\"}"), 0, false},
	{P("{\"a\":\"\x01\"}"), 0, false},
	{P("{\"a\":\"\t\"}"), 0, false},
	{P("{\"a\":\"\\x\"}"), 0, false},
	{P("{\"a\":\"\\u12\"}"), 0, false},
	{P("{\"a\":\"\\u12g4\"}"), 0, false},
	{P("{\"a\":01}"), 0, false},
	{P("{\"a\":1.}"), 0, false},
	{P("{\"a\":.5}"), 0, false},
	{P("{\"a\":-}"), 0, false},
	{P("{\"a\":+1}"), 0, false},
	{P("{\"a\":1e}"), 0, false},
	{P("{\"a\":1e+}"), 0, false},
	{P("{\"a\":1234567890123456789}"), 0, true},
	{P("{\"a\":9223372036854775808}"), 0, false},
	{P("{\"a\":-9223372036854775809}"), 0, false},
	{P("{\"a\":-0}"), 0, true},
	{P("{\"a\":1e400}"), 0, false},
	{P("{\"a\":-1e400}"), 0, false},
	{P("{\"a\":NaN}"), 0, false},
	{P("{\"a\":Infinity}"), 0, false},
	{P("{\"a\":0x10}"), 0, false},
	{P("{\"a\":tru}"), 0, false},
	{P("{\"a\":nulll}"), 0, false},
	{P("{\"a\":[1,]}"), 0, false},
	{P("{\"a\":1,}"), 0, false},
	{P("{\"a\" 1}"), 0, false},
	{P("{\"a\":\"x}"), 0, false},
	{P("{'a':1}"), 0, false},
	{P("{\"a\":\"x\"\x00}"), 31, false},
};

START_TEST(leaves_the_rest_to_the_usual_way)
{
	evscan *s = hr_malloc(sizeof *s);
	s->text = (hr_sbuf){0};
	for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
		const leave *l = &leaves[i];
		size_t len = l->len ? l->len : strlen(l->body);
		ck_assert_msg(!evscan_read(s, l->body, len), "taken: %s", l->body);
		evscan_free(s);
		evoracle o;
		bool valid = evoracle_read(&o, l->body, len);
		evoracle_free(&o);
		ck_assert_msg(valid == l->valid, "the usual way %s: %s", valid ? "takes" : "refuses", l->body);
	}
	/* 1,001 events */
	char *b = body_of("{\"name\":\"e%d\",\"properties\":{\"i\":%d}}", EVSCAN_MAX_EVENTS + 1);
	ck_assert(!evscan_read(s, b, strlen(b)));
	evscan_free(s);
	hr_free(b);
	hr_free(s);
}
END_TEST

static uint64_t rnd_state;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* Bytes and tokens a mutation puts in. */
static const char *const bits[] = {
	"\"", "\\", "{", "}", "[", "]", ",", ":", " ", "0", "1", "9", "-", "+", ".", "e", "E", "u", "d8", "dc",
	"\\u", "\\ud83d\\ude00", "\\u0000", "\x7f", "\xc3\xa9", "\xc3", "\xa9", "\xed\xa0\x80", "\xf4\x90", "\x01",
	"null", "true", "1e400", "99999999999999999999", "-0", "\"a\":1,", "\"name\":\"b\",", "{\"a\":1}", "\t",
};

START_TEST(random_mutations_agree_with_the_usual_way)
{
	rnd_state = 0x9e3779b97f4a7c15ull;
	size_t taken = 0, runs = 200000;
	evscan *s = hr_malloc(sizeof *s);
	s->text = (hr_sbuf){0};
	char buf[4096];
	for (size_t run = 0; run < runs; run++) {
		const char *seed = takes[rnd() % (sizeof takes / sizeof *takes)];
		size_t len = strlen(seed);
		if (len > 2048)
			continue;
		memcpy(buf, seed, len);
		int muts = 1 + (int)(rnd() % 3);
		for (int m = 0; m < muts && len > 0; m++) {
			size_t at = rnd() % len;
			const char *ins = bits[rnd() % (sizeof bits / sizeof *bits)];
			size_t il = strlen(ins), cut = rnd() % 3; /* replace 0-2 bytes */
			if (at + cut > len)
				cut = len - at;
			if (len - cut + il >= sizeof buf)
				continue;
			memmove(buf + at + il, buf + at + cut, len - at - cut);
			memcpy(buf + at, ins, il);
			len = len - cut + il;
		}
		if (evscan_read(s, buf, len)) {
			taken++;
			const char *bad = evoracle_compare(s, buf, len);
			ck_assert_msg(!bad, "run %zu: %s: %.*s", run, bad, (int)len, buf);
		}
		evscan_free(s);
	}
	hr_free(s);
	printf("eventscan: %zu of %zu mutated bodies taken, each read as the usual way reads it\n", taken, runs);
	/* The comparison must have run on many: a scanner that took nothing would pass the rest. */
	ck_assert_uint_gt(taken, runs / 100);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api_eventscan");
	TCase *tc = tcase_create("eventscan");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, takes_what_the_usual_way_takes);
	tcase_add_test(tc, leaves_the_rest_to_the_usual_way);
	tcase_add_test(tc, random_mutations_agree_with_the_usual_way);
	suite_add_tcase(s, tc);
	return th_run(s);
}
