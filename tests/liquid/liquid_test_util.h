/*
 * liquid_test_util.h -- helpers for the Liquid unit tests: render a
 * template string against JSON text with an in-memory partial table.
 */
#ifndef HERALD_TESTS_LIQUID_TEST_UTIL_H
#define HERALD_TESTS_LIQUID_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "liquid.h"

#define T_NOW 1704067318 /* 2024-01-01 00:01:58 UTC */

typedef struct t_partial {
	const char *name;
	const char *src;
} t_partial;

static inline bool t_loader(void *ud, const char *name, size_t len, const char **src, size_t *srclen)
{
	for (const t_partial *p = ud; p && p->name; p++) {
		if (strlen(p->name) == len && memcmp(p->name, name, len) == 0) {
			*src = p->src;
			*srclen = strlen(p->src);
			return true;
		}
	}
	return false;
}

/* Render; returns a malloc'd output, or NULL with err filled. */
static inline char *t_render_opts(const char *tpl, const char *json, const t_partial *parts,
				  liquid_error_mode mode, bool render_errors, const liquid_limits *lim,
				  liquid_error *err)
{
	liquid_parse_opts po = {.mode = mode, .limits = lim};
	liquid_template *t;
	if (!liquid_parse(tpl, strlen(tpl), &po, &t, err))
		return NULL;
	json_t *data = NULL;
	if (json) {
		json_error_t je;
		data = json_loads(json, 0, &je);
		if (!data) {
			fprintf(stderr, "bad test JSON %s: %s\n", json, je.text);
			abort();
		}
	}
	liquid_renderer *r = liquid_renderer_new();
	liquid_render_opts ro = {.mode = mode, .render_errors = render_errors, .now = T_NOW,
				 .loader = t_loader, .loader_ud = (void *)parts, .limits = lim};
	char *out = NULL;
	if (liquid_render(r, t, data, &ro, err)) {
		size_t n;
		const char *o = liquid_output(r, &n);
		out = malloc(n + 1);
		memcpy(out, o, n);
		out[n] = 0;
	}
	liquid_renderer_free(r);
	liquid_template_free(t);
	json_decref(data);
	return out;
}

static inline char *t_render(const char *tpl, const char *json, liquid_error *err)
{
	return t_render_opts(tpl, json, NULL, LIQUID_LAX, false, NULL, err);
}

#endif
