/*
 * test_filters.c -- the standard filters, table-driven: "{{ expr }}" ->
 * exact output, or a render error message.
 */
#include <check.h>

#include "liquid_test_util.h"

typedef struct frow {
	const char *expr;   /* inside {{ }} */
	const char *data;
	const char *want;   /* output, or NULL when want_err */
	const char *want_err;
} frow;

static const frow FROWS[] = {
	/* strings */
	{"'hello' | capitalize", NULL, "Hello", NULL},
	{"'Hello' | downcase | upcase", NULL, "HELLO", NULL},
	{"'a' | append: 1 | prepend: 'x'", NULL, "xa1", NULL},
	{"s | escape", "{\"s\":\"<a href=\\\"x\\\">Tom & 'Jerry'</a>\"}", "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;", NULL},
	{"'&lt; & <' | escape_once", NULL, "&lt; &amp; &lt;", NULL},
	{"'a b&c/é' | url_encode", NULL, "a+b%26c%2F%C3%A9", NULL},
	{"'a+b%26c' | url_decode", NULL, "a b&c", NULL},
	{"'hello' | base64_encode | base64_decode", NULL, "hello", NULL},
	{"'  x  ' | strip | append: '|'", NULL, "x|", NULL},
	{"'<p>Hi <b>there</b></p><script>x</script>' | strip_html", NULL, "Hi there", NULL},
	{"'a\nb' | newline_to_br", NULL, "a<br />\nb", NULL},
	{"'a\r\nb' | strip_newlines", NULL, "ab", NULL},
	{"'aXbXc' | replace: 'X', '-' | replace_first: '-', '+' | replace_last: '-', '='", NULL, "a+b=c", NULL},
	{"'aXbXc' | remove: 'X'", NULL, "abc", NULL},
	{"'hello world' | truncate: 8", NULL, "hello...", NULL},
	{"'one two three' | truncatewords: 2, '--'", NULL, "one two--", NULL},
	{"'héllo' | slice: 1, 3", NULL, "éll", NULL},
	{"'hello' | slice: -3", NULL, "l", NULL},
	{"'hello' | slice: 'x'", NULL, NULL, "invalid integer"},
	{"'a,b,,c,,' | split: ',' | size", NULL, "4", NULL},
	{"'  a  b ' | split: ' ' | join: '|'", NULL, "a|b", NULL},
	{"x | default: 'd'", "{\"x\":\"\"}", "d", NULL},
	{"x | default: 'd'", "{\"x\":false}", "d", NULL},
	{"x | default: 'd', allow_false: true", "{\"x\":false}", "false", NULL},
	/* numbers */
	{"4 | plus: '2' | minus: 1 | times: 3", NULL, "15", NULL},
	{"10 | divided_by: 4.0", NULL, "2.5", NULL},
	{"10 | divided_by: 0", NULL, NULL, "divided by 0"},
	{"10 | modulo: 0", NULL, NULL, "divided by 0"},
	{"1.1 | times: 3", NULL, "3.3", NULL},
	{"-4.5 | abs", NULL, "4.5", NULL},
	{"4.2 | ceil", NULL, "5", NULL},
	{"4.8 | floor", NULL, "4", NULL},
	{"2.5 | round", NULL, "3", NULL},
	{"3.14159 | round: 2", NULL, "3.14", NULL},
	{"5 | at_least: 7 | at_most: 6", NULL, "6", NULL},
	{"x | plus: 0", "{\"x\":1e20}", "1.0e+20", NULL},
	/* arrays */
	{"a | join: ', '", "{\"a\":[1,\"x\",2.5]}", "1, x, 2.5", NULL},
	{"a | first", "{\"a\":[3,1,2]}", "3", NULL},
	{"a | last", "{\"a\":[3,1,2]}", "2", NULL},
	{"a | sort | join", "{\"a\":[3,1,2]}", "1 2 3", NULL},
	{"a | sort | join", "{\"a\":[3,\"a\"]}", NULL, "cannot sort"},
	{"a | sort_natural | join", "{\"a\":[\"b\",\"A\",\"c\"]}", "A b c", NULL},
	{"a | sort: 'p' | map: 'n' | join", "{\"a\":[{\"n\":\"x\",\"p\":2},{\"n\":\"y\",\"p\":1},{\"n\":\"z\"}]}", "y x z", NULL},
	{"a | reverse | join", "{\"a\":[1,2,3]}", "3 2 1", NULL},
	{"a | uniq | join", "{\"a\":[1,1,2,1]}", "1 2", NULL},
	{"a | compact | size", "{\"a\":[1,null,2]}", "2", NULL},
	{"a | where: 'ok' | map: 'n' | join", "{\"a\":[{\"n\":1,\"ok\":true},{\"n\":2,\"ok\":false}]}", "1", NULL},
	{"a | where: 'k', 'v' | size", "{\"a\":[{\"k\":\"v\"},{\"k\":\"w\"}]}", "1", NULL},
	{"a | concat: b | join", "{\"a\":[1],\"b\":[2,3]}", "1 2 3", NULL},
	{"a | concat: 5", "{\"a\":[1]}", NULL, "concat filter requires an array"},
	{"a | sum", "{\"a\":[1,2.5,\"3\"]}", "6.5", NULL},
	{"a | size", "{\"a\":{\"x\":1,\"y\":2}}", "2", NULL},
	/* dates (now = 2024-01-01 00:01:58 UTC) */
	{"'today' | date: '%Y-%m-%d'", NULL, "2024-01-01", NULL},
	{"0 | date: '%Y-%m-%dT%H:%M:%S%z'", NULL, "1970-01-01T00:00:00+0000", NULL},
	{"'2006-07-05 10:00:00 -04:00' | date: '%B %-d, %Y %H:%M %:z'", NULL, "July 5, 2006 10:00 -04:00", NULL},
	{"'Fri Jul 16 01:00:00 2004' | date: '%F %T'", NULL, "2004-07-16 01:00:00", NULL},
	{"'2020-06-15' | date: '%A %j %U %W %V %G'", NULL, "Monday 167 24 24 25 2020", NULL},
	{"'not a date' | date: '%Y'", NULL, "not a date", NULL},
	/* regression (fuzzer): an absurd width is capped, not an int overflow */
	{"0 | date: '%22222222222222d' | size", NULL, "1024", NULL},
	/* regression (fuzzer): an out-of-range epoch is not a date */
	{"x | date: '%Y'", "{\"x\":1e20}", "1.0e+20", NULL},
	{"'99999999999-01-01' | date: '%Y'", NULL, "99999999999-01-01", NULL},
	/* out-of-range conversions keep the value instead of overflowing */
	{"x | ceil", "{\"x\":1e20}", "1.0e+20", NULL},
	{"x | abs", "{\"x\":-9223372036854775808}", "9.223372036854776e+18", NULL},
	{"2.5 | round: -9223372036854775807", NULL, "0.0", NULL},
};

START_TEST(test_filter_rows)
{
	const frow *r = &FROWS[_i];
	char tpl[512];
	snprintf(tpl, sizeof tpl, "{{ %s }}", r->expr);
	liquid_error err;
	char *got = t_render(tpl, r->data, &err);
	if (r->want_err) {
		ck_assert_msg(got == NULL, "%s: got \"%s\", want error %s", r->expr, got, r->want_err);
		ck_assert_msg(strstr(err.message, r->want_err), "%s: got error \"%s\", want \"%s\"", r->expr, err.message, r->want_err);
		return;
	}
	ck_assert_msg(got != NULL, "%s: got error %s, want \"%s\"", r->expr, err.message, r->want);
	ck_assert_msg(strcmp(got, r->want) == 0, "%s: got \"%s\", want \"%s\"", r->expr, got, r->want);
	free(got);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("liquid_filters");
	TCase *tc = tcase_create("filters");
	tcase_add_loop_test(tc, test_filter_rows, 0, (int)(sizeof FROWS / sizeof FROWS[0]));
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
