/*
 * test_render.c -- the Liquid language, table-driven: template + data ->
 * exact output.  Each row prints "got X, want Y" when it fails.
 */
#include <check.h>

#include "liquid_test_util.h"

typedef struct row {
	const char *tpl;
	const char *data;
	const char *want;
} row;

static const t_partial PARTS[] = {
	{"greet", "Hello {{ name }}!"},
	{"item", "[{{ item }}]"},
	{"loopidx", "{{ forloop.index }}"},
	{"setx", "{% assign x = 'inner' %}"},
	{"brk", "{% break %}"},
	{"snippets/card", "<{{ card.t }}>"},
	{NULL, NULL},
};

static const row ROWS[] = {
	/* output, literals, lookups */
	{"", NULL, ""},
	{"plain  text\n", NULL, "plain  text\n"},
	{"Hello {{ contact.first_name }}", "{\"contact\":{\"first_name\":\"Ann\"}}", "Hello Ann"},
	{"Hello {{ contact.first_name | default: \"friend\" }}", "{\"contact\":{}}", "Hello friend"},
	{"{{ 42 }} {{ 1.5 }} {{ 3.0 }} {{ true }} {{ nil }}|", NULL, "42 1.5 3.0 true |"},
	{"{{ a[1] }}{{ a[-1] }}{{ a.size }}{{ a.first }}{{ a.last }}", "{\"a\":[1,2,3]}", "23313"},
	{"{{ h['k y'] }}{{ h[key] }}", "{\"h\":{\"k y\":1,\"z\":2},\"key\":\"z\"}", "12"},
	{"{{ s.size }}{{ s.first }}", "{\"s\":\"héllo\"}", "5h"},
	{"{{ arr }}", "{\"arr\":[\"a\",[\"b\",\"c\"]]}", "abc"},
	{"{{ missing.deep.path }}", NULL, ""},
	/* filters and chains */
	{"{{ 'abc' | upcase | append: '!' | size }}", NULL, "4"},
	{"{{ '3.5' | plus: 1.5 }} {{ 0.1 | plus: 0.2 }} {{ 7 | divided_by: 2 }} {{ -7 | modulo: 3 }}", NULL, "5.0 0.3 3 2"},
	{"{{ items | map: 'n' | join: ',' }}", "{\"items\":[{\"n\":1},{\"n\":2}]}", "1,2"},
	/* conditions */
	{"{% if contact.rank >= 3 %}gold{% elsif contact.rank > 1 %}silver{% else %}none{% endif %}",
	 "{\"contact\":{\"rank\":2}}", "silver"},
	/* Liquid groups right to left: a and (b or c) */
	{"{% if a and b or c %}y{% else %}n{% endif %}", "{\"a\":false,\"b\":true,\"c\":true}", "n"},
	{"{% unless x %}no x{% endunless %}", NULL, "no x"},
	{"{% if s contains 'ell' %}y{% endif %}{% if l contains 2 %}z{% endif %}", "{\"s\":\"hello\",\"l\":[1,2]}", "yz"},
	{"{% if '' %}t{% endif %}{% if 0 %}z{% endif %}{% if x == empty %}e{% endif %}", "{\"x\":[]}", "tze"},
	{"{% case v %}{% when 1, 2 %}low{% when 3 %}three{% else %}other{% endcase %}", "{\"v\":2}", "low"},
	{"{% case v %}{% when 1 %}one{% else %}other{% endcase %}", "{\"v\":9}", "other"},
	/* loops */
	{"{% for i in (1..5) limit: 2 offset: 1 %}{{ i }}{% endfor %}", NULL, "23"},
	{"{% for i in (1..3) reversed %}{{ i }}{% endfor %}", NULL, "321"},
	{"{% for i in list %}{{ forloop.index }}/{{ forloop.length }}{% if forloop.last %}.{% endif %} {% endfor %}",
	 "{\"list\":[\"a\",\"b\"]}", "1/2 2/2. "},
	{"{% for i in (1..5) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}",
	 NULL, "13"},
	{"{% for i in empty_list %}x{% else %}none{% endfor %}", "{\"empty_list\":[]}", "none"},
	{"{% for i in (1..2) %}{% for j in (1..2) %}{{ forloop.parentloop.index }}{{ j }} {% endfor %}{% endfor %}",
	 NULL, "11 12 21 22 "},
	{"{% for i in (1..6) limit: 2 %}{{ i }}{% endfor %}-{% for i in (1..6) offset: continue limit: 2 %}{{ i }}{% endfor %}",
	 NULL, "12-34"},
	{"{% for p in h %}{{ p[0] }}={{ p[1] }};{% endfor %}", "{\"h\":{\"a\":1,\"b\":2}}", "a=1;b=2;"},
	{"{% tablerow i in (1..3) cols: 2 %}{{ i }}{% endtablerow %}", NULL,
	 "<tr class=\"row1\">\n<td class=\"col1\">1</td><td class=\"col2\">2</td></tr>\n<tr class=\"row2\"><td class=\"col1\">3</td></tr>\n"},
	/* variables */
	{"{% assign n = 'x' | upcase %}{{ n }}", NULL, "X"},
	{"{% capture c %}a{{ 1 | plus: 1 }}b{% endcapture %}[{{ c }}]", NULL, "[a2b]"},
	{"{% increment k %}{% increment k %}{% decrement d %}{{ k }}", NULL, "01-12"},
	{"{% for i in (1..4) %}{% cycle 'a', 'b', 'c' %}{% endfor %}", NULL, "abca"},
	{"{% cycle 'g': 1, 2 %}{% cycle 'h': 1, 2 %}{% cycle 'g': 1, 2 %}", NULL, "112"},
	/* comment, raw, whitespace control, liquid tag */
	{"a{% comment %}{{ x }}{% if %}{% endcomment %}b{% # inline %}c", NULL, "abc"},
	{"{% raw %}{{ not rendered }}{% if %}{% endraw %}", NULL, "{{ not rendered }}{% if %}"},
	{"a  \n  {%- if true -%}  \n b \n {%- endif -%}  \nc", NULL, "abc"},
	{"{{- 'x' -}}  \n", NULL, "x"},
	{"{% liquid\n assign a = 2\n if a > 1\n echo a | times: 3\n endif\n%}", NULL, "6"},
	{"{% if true %}\n  {% assign y = 1 %}\n{% endif %}", NULL, ""},
	/* partials */
	{"{% render 'greet', name: 'World' %}", NULL, "Hello World!"},
	{"{% assign name = 'outer' %}{% render 'greet' %}", NULL, "Hello !"},
	{"{% render 'item' for list %}", "{\"list\":[1,2]}", "[1][2]"},
	{"{% render 'loopidx' for list %}", "{\"list\":[1,2,3]}", "123"},
	{"{% render 'setx' %}{{ x }}", NULL, ""},
	{"{% include 'setx' %}{{ x }}", NULL, "inner"},
	{"{% assign t = 'greet' %}{% include t, name: 'Inc' %}", NULL, "Hello Inc!"},
	{"{% for i in (1..3) %}{{ i }}{% include 'brk' %}{% endfor %}", NULL, "1"},
	{"{% for i in (1..3) %}{{ i }}{% render 'brk' %}{% endfor %}", NULL, "123"},
	{"{% render 'snippets/card' with c %}", "{\"c\":{\"t\":\"T\"}}", "<T>"},
	/* date with the injected now */
	{"{{ 'now' | date: '%Y-%m-%d %H:%M:%S' }}", NULL, "2024-01-01 00:01:58"},
	{"{{ ev.at | date: '%a %-d %b %Y, %I:%M %p' }}", "{\"ev\":{\"at\":\"2020-06-15T14:30:00Z\"}}", "Mon 15 Jun 2020, 02:30 PM"},
	/* lax mode tolerates junk */
	{"{{ 'hello' || upcase }}", NULL, "HELLO"},
	{"{{ 'hello' | nonexistent | upcase }}", NULL, "HELLO"},
};

START_TEST(test_rows)
{
	const row *r = &ROWS[_i];
	liquid_error err;
	char *got = t_render_opts(r->tpl, r->data, PARTS, LIQUID_LAX, false, NULL, &err);
	ck_assert_msg(got != NULL, "template %s: unexpected error %s", r->tpl, err.message);
	ck_assert_msg(strcmp(got, r->want) == 0, "template %s: got \"%s\", want \"%s\"", r->tpl, got, r->want);
	free(got);
}
END_TEST

/* Runtime errors: message, line, and inline rendering. */
START_TEST(test_render_errors)
{
	liquid_error err;
	char *got = t_render("a\nb\n{{ 10 | divided_by: 0 }}", NULL, &err);
	ck_assert_msg(got == NULL, "got \"%s\", want a render error", got);
	ck_assert_int_eq(err.kind, LIQUID_ERR_RENDER);
	ck_assert_msg(err.line == 3, "got line %d, want 3", err.line);
	ck_assert_msg(strstr(err.message, "divided by 0"), "got %s, want divided by 0", err.message);

	got = t_render_opts("x {{ 1 | modulo: 0 }} y", NULL, NULL, LIQUID_LAX, true, NULL, &err);
	ck_assert_ptr_nonnull(got);
	ck_assert_msg(strcmp(got, "x Liquid error (line 1): divided by 0 y") == 0, "got \"%s\"", got);
	free(got);

	static const t_partial bad[] = {{"math", "ok\n{{ 1 | divided_by: 0 }}"}, {NULL, NULL}};
	got = t_render_opts("{% render 'math' %}", NULL, bad, LIQUID_LAX, false, NULL, &err);
	ck_assert_ptr_null(got);
	ck_assert_msg(strstr(err.message, "math line 2") && strcmp(err.partial, "math") == 0,
		      "got %s (partial %s), want math line 2", err.message, err.partial);

	got = t_render("{% include 'nope' %}", NULL, &err);
	ck_assert_ptr_null(got);
	ck_assert_msg(strstr(err.message, "Could not find"), "got %s, want Could not find", err.message);

	got = t_render("{% if 'a' < 1 %}{% endif %}", NULL, &err);
	ck_assert_ptr_null(got);
	ck_assert_msg(strstr(err.message, "comparison of String with 1 failed"), "got %s", err.message);
}
END_TEST

/* Limits: each one is a clean error, never a crash or hang. */
START_TEST(test_limits)
{
	liquid_error err;
	liquid_limits lim = liquid_default_limits;
	lim.max_output_size = 1000;
	char *got = t_render_opts("{% for i in (1..100000) %}xxxxxxxxxx{% endfor %}", NULL, NULL, LIQUID_LAX, true, &lim, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT, "output limit: got kind %d", err.kind);

	lim = liquid_default_limits;
	lim.max_loop_iterations = 1000;
	got = t_render_opts("{% for i in (1..10) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}", NULL, NULL, LIQUID_LAX, false, &lim, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT && strstr(err.message, "iteration"),
		      "iterations: got %s", err.message);

	/* the widest range: no overflow in its length, stopped by the limit */
	got = t_render("{% for i in (-9223372036854775808..9223372036854775807) %}{% endfor %}", NULL, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT, "widest range: got kind %d", err.kind);
	/* a billion-iteration loop stops at the default limit, quickly */
	got = t_render("{% for i in (1..1000000000) %}{% endfor %}", NULL, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT, "huge loop: got kind %d", err.kind);

	static const t_partial rec[] = {{"r", "{% render 'r' %}"}, {"i", "{% include 'i' %}"}, {NULL, NULL}};
	got = t_render_opts("{% render 'r' %}", NULL, rec, LIQUID_LAX, false, NULL, &err);
	ck_assert_msg(got == NULL && strstr(err.message, "Nesting too deep"), "render recursion: got %s", err.message);
	got = t_render_opts("{% include 'i' %}", NULL, rec, LIQUID_LAX, false, NULL, &err);
	ck_assert_msg(got == NULL && strstr(err.message, "Nesting too deep"), "include recursion: got %s", err.message);

	/* doubling a string 40 times: stopped by the temporaries bound */
	got = t_render("{% assign s = 'xxxxxxxx' %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}", NULL, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT && strstr(err.message, "Memory"), "doubling: got %s", err.message);
	/* replace with a long replacement on many matches: refused before allocating */
	got = t_render("{% assign a = 'x' %}{% for i in (1..12) %}{% assign a = a | append: a %}{% endfor %}"
		       "{{ a | replace: 'x', a }}", NULL, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT, "replace blow-up: got kind %d %s", err.kind, err.message);
	/* many nested ifs in many nested partials: a clean error, not a blown stack */
	static char deep[4000];
	size_t k = 0;
	for (int i = 0; i < 90; i++)
		k += (size_t)sprintf(deep + k, "{%% if true %%}");
	k += (size_t)sprintf(deep + k, "{%% include 'd' %%}");
	for (int i = 0; i < 90; i++)
		k += (size_t)sprintf(deep + k, "{%% endif %%}");
	const t_partial dp[] = {{"d", deep}, {NULL, NULL}};
	got = t_render_opts("{% include 'd' %}", NULL, dp, LIQUID_LAX, false, NULL, &err);
	ck_assert_msg(got == NULL && strstr(err.message, "Nesting too deep"), "deep partials: got %s", err.message);

	lim = liquid_default_limits;
	lim.render_score_limit = 10;
	got = t_render_opts("{% for i in (1..100) %}x{% endfor %}", NULL, NULL, LIQUID_LAX, true, &lim, &err);
	ck_assert_msg(got == NULL && err.kind == LIQUID_ERR_LIMIT, "render score: got kind %d", err.kind);
}
END_TEST

/* A warm renderer reuses its arena and buffer: rendering again uses the
 * same per-render memory and gives the same output. */
START_TEST(test_renderer_reuse)
{
	const char *src = "{% for p in ps %}{{ p.name | upcase }}:{{ p.price | times: 2 }};{% endfor %}";
	liquid_template *t;
	liquid_error err;
	liquid_parse_opts po = {0};
	ck_assert(liquid_parse(src, strlen(src), &po, &t, &err));
	json_t *data = json_pack("{s:[{s:s,s:f},{s:s,s:i}]}", "ps", "name", "a", "price", 1.5, "name", "b", "price", 2);
	liquid_renderer *r = liquid_renderer_new();
	liquid_render_opts ro = {0};
	ck_assert(liquid_render(r, t, data, &ro, &err));
	liquid_render_stats s1 = liquid_renderer_stats(r);
	for (int i = 0; i < 100; i++)
		ck_assert(liquid_render(r, t, data, &ro, &err));
	liquid_render_stats s2 = liquid_renderer_stats(r);
	const char *out = liquid_output(r, NULL);
	ck_assert_msg(strcmp(out, "A:3.0;B:4;") == 0, "got \"%s\", want \"A:3.0;B:4;\"", out);
	ck_assert_msg(s1.arena_bytes == s2.arena_bytes, "arena got %zu, want %zu", s2.arena_bytes, s1.arena_bytes);
	ck_assert_msg(s1.heap_bytes == s2.heap_bytes, "heap got %zu, want %zu", s2.heap_bytes, s1.heap_bytes);
	ck_assert(liquid_template_memory(t) > 0);
	liquid_renderer_free(r);
	liquid_template_free(t);
	json_decref(data);
}
END_TEST

/* Regression (fuzzer): a fresh renderer's empty output is a terminated
 * empty string, not uninitialised bytes. */
START_TEST(test_empty_output_terminated)
{
	liquid_template *t;
	liquid_error err;
	liquid_parse_opts po = {0};
	ck_assert(liquid_parse("{% assign a = 1 %}", 18, &po, &t, &err));
	liquid_renderer *r = liquid_renderer_new();
	liquid_render_opts ro = {0};
	ck_assert(liquid_render(r, t, NULL, &ro, &err));
	size_t n = 99;
	const char *out = liquid_output(r, &n);
	ck_assert_msg(n == 0 && strlen(out) == 0, "got length %zu / strlen %zu, want 0 / 0", n, strlen(out));
	liquid_renderer_free(r);
	liquid_template_free(t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("liquid_render");
	TCase *tc = tcase_create("render");
	tcase_add_loop_test(tc, test_rows, 0, (int)(sizeof ROWS / sizeof ROWS[0]));
	tcase_add_test(tc, test_render_errors);
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_renderer_reuse);
	tcase_add_test(tc, test_empty_output_terminated);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
