/*
 * fuzz_liquid.c -- libFuzzer target: Liquid parse + render.
 *
 * Input layout: byte 0 picks the options (bit 0 strict, bit 1 inline
 * render errors); the rest is split at NUL bytes into the template and up
 * to three partials named "a", "b" and "c", so {% render 'a' %} and
 * recursive includes are reachable.  Data is a fixed JSON object with
 * strings, numbers, arrays and nested hashes.  Limits are tightened so a
 * hostile template fails fast instead of looking like a hang.
 *
 * Build and run: see docs/liquid.md ("Fuzzing").
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "liquid.h"

typedef struct parts {
	const char *src[3];
	size_t len[3];
} parts;

static bool loader(void *ud, const char *name, size_t len, const char **src, size_t *srclen)
{
	parts *p = ud;
	if (len != 1 || name[0] < 'a' || name[0] > 'c' || !p->src[name[0] - 'a'])
		return false;
	*src = p->src[name[0] - 'a'];
	*srclen = p->len[name[0] - 'a'];
	return true;
}

static json_t *data;
static liquid_renderer *renderer;

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
	if (size < 1)
		return 0;
	if (!data) {
		data = json_loads("{\"s\":\"Hello, World\",\"n\":42,\"f\":-3.25,\"z\":0,\"t\":true,\"nil\":null,"
				  "\"a\":[3,1,\"two\",null,[4,5],{\"k\":\"v\"}],\"words\":[\"b\",\"A\",\"c\"],"
				  "\"h\":{\"k\":\"v\",\"size\":7,\"nested\":{\"deep\":[1,2,3]}},"
				  "\"items\":[{\"name\":\"x\",\"price\":1.5,\"ok\":true},{\"name\":\"y\",\"price\":2,\"ok\":false}],"
				  "\"date\":\"2020-06-15 14:30:00 -04:00\",\"ts\":1152098955}",
				  0, NULL);
		renderer = liquid_renderer_new();
	}
	uint8_t flags = buf[0];
	const char *s = (const char *)buf + 1;
	size_t n = size - 1;
	/* split at NULs: template, a, b, c */
	const char *piece[4] = {0};
	size_t plen[4] = {0};
	int k = 0;
	piece[0] = s;
	for (size_t i = 0; i < n && k < 3; i++) {
		if (s[i] == 0) {
			plen[k] = (size_t)(s + i - piece[k]);
			k++;
			piece[k] = s + i + 1;
		}
	}
	plen[k] = (size_t)(s + n - piece[k]);
	liquid_limits lim = liquid_default_limits;
	lim.max_output_size = 1 << 20;
	lim.max_loop_iterations = 20000;
	lim.max_template_size = 64 << 10;
	lim.max_depth = 60;
	lim.max_render_memory = 1 << 20;
	liquid_parse_opts po = {.mode = (flags & 1) ? LIQUID_STRICT : LIQUID_LAX, .limits = &lim};
	liquid_template *t;
	liquid_error err;
	if (!liquid_parse(piece[0], plen[0], &po, &t, &err))
		return 0;
	parts p = {{piece[1], piece[2], piece[3]}, {plen[1], plen[2], plen[3]}};
	liquid_render_opts ro = {.mode = po.mode, .render_errors = (flags & 2) != 0, .now = 1704067318,
				 .loader = loader, .loader_ud = &p, .limits = &lim};
	if (liquid_render(renderer, t, data, &ro, &err)) {
		size_t on;
		const char *out = liquid_output(renderer, &on);
		if (strlen(out) > on) /* the output is NUL-terminated at its length */
			abort();
	}
	liquid_template_free(t);
	return 0;
}
