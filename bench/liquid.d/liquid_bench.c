/*
 * liquid_bench.c -- renders the liquid-spec `benchmarks` templates with
 * herald's engine (driven by bench/liquid).
 *
 *   liquid_bench SUITE_DIR --export FILE   write the cases as JSON for the
 *                                          liquidjs side (same data)
 *   liquid_bench SUITE_DIR --seconds S     time herald; print one line:
 *     herald_rps=N tpl_bytes_avg=N tpl_bytes_max=N render_arena_avg=N
 *     render_out_avg=N renderer_heap=N
 *
 * One "render" is one template rendered once; the timed loop renders every
 * case in turn (a round), so both engines do the same mix of work.  Each
 * template is parsed once, before timing.  Memory: compiled size from
 * liquid_template_memory; per render, the arena bytes of temporaries and
 * the output bytes, from liquid_renderer_stats (one warm renderer).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "liquid.h"
#include "spec_yaml.h"

#define MAXC 64

typedef struct bcase {
	char *name;
	json_t *tpl;     /* string */
	json_t *env;     /* object (data files merged in) */
	json_t *fs;      /* object or NULL */
	liquid_template *t;
} bcase;

static bcase cases[MAXC];
static int ncases;

static bool loader(void *ud, const char *name, size_t len, const char **src, size_t *srclen)
{
	json_t *fs = ud;
	char key[512];
	if (!fs || len > 400)
		return false;
	memcpy(key, name, len);
	key[len] = 0;
	json_t *v = json_object_get(fs, key);
	if (!v) {
		strcat(key, ".liquid");
		v = json_object_get(fs, key);
	}
	if (!json_is_string(v))
		return false;
	*src = json_string_value(v);
	*srclen = json_string_length(v);
	return true;
}

static void load_file(const char *dir, const char *file)
{
	char p[4096], err[512];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	json_t *doc;
	if (!spec_yaml_load(p, &doc, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	json_t *meta = json_is_object(doc) ? json_object_get(doc, "_metadata") : NULL;
	json_t *specs = json_is_object(doc) ? json_object_get(doc, "specs") : doc;
	json_t *data = json_object();
	json_t *df = meta ? json_object_get(meta, "data_files") : NULL;
	size_t i;
	json_t *x;
	json_array_foreach(df, i, x) {
		snprintf(p, sizeof p, "%s/%s", dir, json_string_value(x));
		json_t *d;
		if (!spec_yaml_load(p, &d, err, sizeof err)) {
			fprintf(stderr, "%s\n", err);
			exit(1);
		}
		json_object_update(data, d);
		json_decref(d);
	}
	json_array_foreach(specs, i, x) {
		if (ncases >= MAXC || !json_is_string(json_object_get(x, "template")))
			continue;
		bcase *c = &cases[ncases++];
		c->name = strdup(json_string_value(json_object_get(x, "name")));
		c->tpl = json_incref(json_object_get(x, "template"));
		c->env = json_deep_copy(data);
		json_t *e = json_object_get(x, "environment");
		if (json_is_object(e))
			json_object_update(c->env, e);
		c->fs = json_incref(json_object_get(x, "filesystem"));
	}
	json_decref(data);
	json_decref(doc);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmpname(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s SUITE_DIR (--export FILE | --seconds S)\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	DIR *d = opendir(dir);
	if (!d) {
		perror(dir);
		return 1;
	}
	char *names[128];
	int nn = 0;
	struct dirent *de;
	while ((de = readdir(d)) && nn < 128) {
		size_t l = strlen(de->d_name);
		if (l > 4 && !strcmp(de->d_name + l - 4, ".yml") && strcmp(de->d_name, "suite.yml"))
			names[nn++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, (size_t)nn, sizeof *names, cmpname);
	for (int i = 0; i < nn; i++) {
		load_file(dir, names[i]);
		free(names[i]);
	}
	if (!strcmp(argv[2], "--export")) {
		json_t *arr = json_array();
		for (int i = 0; i < ncases; i++)
			json_array_append_new(arr, json_pack("{s:s,s:O,s:O,s:O}", "name", cases[i].name, "template",
							     cases[i].tpl, "environment", cases[i].env, "filesystem",
							     cases[i].fs ? cases[i].fs : json_object()));
		if (json_dump_file(arr, argv[3], JSON_COMPACT) != 0) {
			fprintf(stderr, "cannot write %s\n", argv[3]);
			return 1;
		}
		json_decref(arr);
		return 0;
	}
	double secs = atof(argv[3]);
	liquid_renderer *r = liquid_renderer_new();
	liquid_render_opts ro = {.now = 1704067318, .loader = loader};
	size_t tb = 0, tmax = 0, arena = 0, outb = 0;
	for (int i = 0; i < ncases; i++) {
		liquid_parse_opts po = {0};
		liquid_error err;
		if (!liquid_parse(json_string_value(cases[i].tpl), json_string_length(cases[i].tpl), &po, &cases[i].t, &err)) {
			fprintf(stderr, "%s: %s\n", cases[i].name, err.message);
			return 1;
		}
		size_t m = liquid_template_memory(cases[i].t);
		tb += m;
		if (m > tmax)
			tmax = m;
		ro.loader_ud = cases[i].fs;
		/* warm up (compiles partials) and measure per-render memory */
		for (int k = 0; k < 2; k++)
			if (!liquid_render(r, cases[i].t, cases[i].env, &ro, &err)) {
				fprintf(stderr, "%s: %s\n", cases[i].name, err.message);
				return 1;
			}
		liquid_render_stats st = liquid_renderer_stats(r);
		arena += st.arena_bytes;
		outb += st.output_bytes;
	}
	long renders = 0;
	double t0 = now_s(), t1;
	do {
		for (int i = 0; i < ncases; i++) {
			liquid_error err;
			ro.loader_ud = cases[i].fs;
			if (!liquid_render(r, cases[i].t, cases[i].env, &ro, &err)) {
				fprintf(stderr, "%s: %s\n", cases[i].name, err.message);
				return 1;
			}
		}
		renders += ncases;
		t1 = now_s();
	} while (t1 - t0 < secs);
	liquid_render_stats st = liquid_renderer_stats(r);
	printf("herald_rps=%.0f templates=%d tpl_bytes_avg=%zu tpl_bytes_max=%zu render_arena_avg=%zu render_out_avg=%zu renderer_heap=%zu\n",
	       (double)renders / (t1 - t0), ncases, tb / (size_t)ncases, tmax, arena / (size_t)ncases,
	       outb / (size_t)ncases, st.heap_bytes);
	for (int i = 0; i < ncases; i++) {
		liquid_template_free(cases[i].t);
		json_decref(cases[i].tpl);
		json_decref(cases[i].env);
		json_decref(cases[i].fs);
		free(cases[i].name);
	}
	liquid_renderer_free(r);
	return 0;
}
