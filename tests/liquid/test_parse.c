/*
 * test_parse.c -- parse errors name line and column; lax vs strict; the
 * template-size and nesting limits; validate.
 */
#include <check.h>

#include "liquid_test_util.h"

typedef struct prow {
	const char *tpl;
	liquid_error_mode mode;
	const char *want_msg; /* substring of the message, NULL = must parse */
	int want_line;
} prow;

static const prow PROWS[] = {
	{"hello {{ name }}", LIQUID_LAX, NULL, 0},
	{"{% if true %}hello", LIQUID_LAX, "'if' tag was never closed", 1},
	{"a\nb\n{% if true\n", LIQUID_LAX, "not properly terminated", 3},
	{"x\n{{ oops", LIQUID_LAX, "Variable '{{' was not properly terminated", 2},
	{"{% nonexistent %}", LIQUID_LAX, "Unknown tag 'nonexistent'", 1},
	{"{% for x in y %}{% endif %}", LIQUID_LAX, "'endif' is not a valid delimiter for for tags", 1},
	{"{% endfor %}", LIQUID_LAX, "Unexpected outer 'endfor' tag", 1},
	{"a\nb\nc\nd\n{{ foo | }}\n", LIQUID_STRICT, "Expected id but found end_of_string", 5},
	{"{{ foo | }}", LIQUID_LAX, NULL, 0},
	{"l1\nl2\n{{ 'oops }}\n", LIQUID_STRICT, "Unexpected character '", 3},
	{"{{ foo; exit }}", LIQUID_STRICT, "Unexpected character ;", 1},
	{"{{ foo; exit }}", LIQUID_LAX, NULL, 0},
	{"{% assign name = 'x' %}{% render name %}", LIQUID_LAX, "Template name must be a quoted string", 1},
	{"{% assign = 1 %}", LIQUID_LAX, "Syntax Error in 'assign'", 1},
	{"{% for x y %}{% endfor %}", LIQUID_LAX, "'in' clause", 1},
	{"{% for x in y bogus: 1 %}{% endfor %}", LIQUID_STRICT, "Invalid attribute", 1},
	{"{% if x %}{% else %}{% else %}{% endif %}", LIQUID_STRICT, "does not expect 'else'", 1},
	{"{% liquid\nassign a = 1\nendif\n%}", LIQUID_LAX, "endif", 3},
	/* error inside a later branch: the earlier bodies are freed (fuzzer leak) */
	{"{% if a %}x{% elsif %}y{% endif %}", LIQUID_LAX, "Syntax Error in tag 'if'", 1},
	{"{% if a %}x{% elsif b ; %}y{% endif %}", LIQUID_STRICT, "Unexpected character ;", 1},
	{"{% raw %}never closed", LIQUID_LAX, "'raw' tag was never closed", 1},
	{"{% comment %}never closed", LIQUID_LAX, "'comment' tag was never closed", 1},
};

START_TEST(test_parse_rows)
{
	const prow *r = &PROWS[_i];
	liquid_parse_opts po = {.mode = r->mode};
	liquid_template *t;
	liquid_error err;
	bool ok = liquid_parse(r->tpl, strlen(r->tpl), &po, &t, &err);
	if (!r->want_msg) {
		ck_assert_msg(ok, "template %s: got error %s, want success", r->tpl, err.message);
		liquid_template_free(t);
		return;
	}
	ck_assert_msg(!ok, "template %s: parsed, want error containing %s", r->tpl, r->want_msg);
	ck_assert_int_eq(err.kind, LIQUID_ERR_PARSE);
	ck_assert_msg(strstr(err.message, r->want_msg), "template %s: got \"%s\", want it to contain \"%s\"",
		      r->tpl, err.message, r->want_msg);
	ck_assert_msg(err.line == r->want_line, "template %s: got line %d, want %d", r->tpl, err.line, r->want_line);
	ck_assert_msg(strncmp(err.message, "Liquid syntax error (line ", 26) == 0, "got \"%s\", want the Liquid prefix", err.message);
}
END_TEST

START_TEST(test_column)
{
	liquid_parse_opts po = {0};
	liquid_template *t;
	liquid_error err;
	const char *src = "ab\n  xy {{ broken";
	ck_assert(!liquid_parse(src, strlen(src), &po, &t, &err));
	ck_assert_msg(err.line == 2 && err.column == 6, "got line %d col %d, want line 2 col 6", err.line, err.column);
	const char *src2 = "x\n\n  ab {% if a %}{% endfor %}";
	ck_assert(!liquid_parse(src2, strlen(src2), &po, &t, &err));
	ck_assert_msg(err.line == 3 && err.column == 16, "got line %d col %d, want line 3 col 16 (%s)", err.line, err.column, err.message);
	const char *src3 = "ok\n {% bogus %}";
	ck_assert(!liquid_parse(src3, strlen(src3), &po, &t, &err));
	ck_assert_msg(err.line == 2 && err.column == 2, "got line %d col %d, want line 2 col 2", err.line, err.column);
}
END_TEST

START_TEST(test_limits)
{
	liquid_limits lim = liquid_default_limits;
	lim.max_template_size = 10;
	liquid_parse_opts po = {.limits = &lim};
	liquid_template *t;
	liquid_error err;
	ck_assert(!liquid_parse("0123456789a", 11, &po, &t, &err));
	ck_assert_msg(err.kind == LIQUID_ERR_LIMIT, "got kind %d, want LIMIT", err.kind);

	/* nesting: 150 nested ifs exceed the default depth of 100 */
	char src[150 * 30];
	size_t n = 0;
	for (int i = 0; i < 150; i++)
		n += (size_t)sprintf(src + n, "{%% if true %%}");
	for (int i = 0; i < 150; i++)
		n += (size_t)sprintf(src + n, "{%% endif %%}");
	po.limits = NULL;
	ck_assert(!liquid_parse(src, n, &po, &t, &err));
	ck_assert_msg(strstr(err.message, "Nesting too deep"), "got %s, want Nesting too deep", err.message);
	/* deep [index] nesting and endless and-chains are refused, not recursed into */
	static char big[20000];
	n = (size_t)sprintf(big, "{{ a");
	for (int i = 0; i < 5000; i++)
		big[n++] = '[';
	n += (size_t)sprintf(big + n, " }}");
	ck_assert(!liquid_parse(big, n, &po, &t, &err));
	ck_assert_msg(strstr(err.message, "Nesting too deep"), "got %s, want Nesting too deep", err.message);
	n = (size_t)sprintf(big, "{%% if a");
	for (int i = 0; i < 1000; i++)
		n += (size_t)sprintf(big + n, " and a");
	n += (size_t)sprintf(big + n, " %%}{%% endif %%}");
	ck_assert(!liquid_parse(big, n, &po, &t, &err));
	ck_assert_msg(strstr(err.message, "Too many and/or"), "got %s, want Too many and/or", err.message);
	ck_assert(liquid_validate("{% if a %}{% endif %}", 21, &po, &err));
	ck_assert(!liquid_validate("{% if a %}", 10, &po, &err));
}
END_TEST

/* The partial's name appears in its parse errors. */
START_TEST(test_named)
{
	liquid_parse_opts po = {.name = "footer"};
	liquid_template *t;
	liquid_error err;
	ck_assert(!liquid_parse("x\n{% if %}", 10, &po, &t, &err));
	ck_assert_msg(strstr(err.message, "(footer line 2)") && strcmp(err.partial, "footer") == 0,
		      "got \"%s\" partial \"%s\"", err.message, err.partial);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("liquid_parse");
	TCase *tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_parse_rows, 0, (int)(sizeof PROWS / sizeof PROWS[0]));
	tcase_add_test(tc, test_column);
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_named);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
