/*
 * spec_runner.c -- runs the public liquid-spec conformance suite against
 * herald's Liquid engine.
 *
 *   liquid_spec_runner SUITE_DIR [-v] [-k NAME_SUBSTRING]
 *
 * Loads every YAML file under SUITE_DIR (each folder's suite.yml gives the
 * defaults and features), runs every case whose features the engine
 * declares, and prints the failures (lowest complexity first), then
 * counts.  The last line is exactly
 *   liquid-spec passed=N failed=N skipped=N cleared=N
 * where cleared is the highest complexity below which every run case
 * passes.  Exit status: 0 when nothing failed, 1 otherwise, 2 on bad usage.
 *
 * Skips are counted, never hidden: a case is skipped only when it needs a
 * feature listed in UNSUPPORTED (Ruby objects: drops, ruby types) or its
 * environment instantiates a Ruby class.
 */
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "liquid.h"
#include "spec_yaml.h"

/* Features this engine does not have: they need Ruby objects. */
static const char *const UNSUPPORTED[] = {"drops", "ruby_drops", "ruby_types", NULL};

#define FROZEN_NOW 1704067318 /* 2024-01-01 00:01:58 UTC */

typedef struct result {
	char *file;
	char *name;
	long complexity;
	char *why;
} result;

typedef struct suite_state {
	result *fails;
	size_t nfails, capfails;
	long passed, failed, skipped;
	long max_complexity;
	bool verbose;
	const char *only;
} suite_state;

static bool feature_supported(const char *f)
{
	for (int i = 0; UNSUPPORTED[i]; i++)
		if (!strcmp(f, UNSUPPORTED[i]))
			return false;
	return true;
}

static bool all_supported(json_t *feats, const char **missing)
{
	size_t i;
	json_t *f;
	if (!json_is_array(feats))
		return true;
	json_array_foreach(feats, i, f) {
		if (json_is_string(f) && !feature_supported(json_string_value(f))) {
			*missing = json_string_value(f);
			return false;
		}
	}
	return true;
}

static bool has_instantiate(json_t *v)
{
	if (json_is_string(v))
		return strncmp(json_string_value(v), "instantiate:", 12) == 0;
	if (json_is_array(v)) {
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x)
			if (has_instantiate(x))
				return true;
	}
	if (json_is_object(v)) {
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x)
			if (strncmp(k, "instantiate:", 12) == 0 || has_instantiate(x))
				return true;
	}
	return false;
}

/* Case-insensitive substring. */
static bool icontains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (const char *p = hay; *p; p++)
		if (strncasecmp(p, needle, n) == 0)
			return true;
	return n == 0;
}

typedef struct fsctx {
	json_t *fs; /* name -> source */
} fsctx;

static bool loader(void *ud, const char *name, size_t len, const char **src, size_t *srclen)
{
	fsctx *f = ud;
	if (!json_is_object(f->fs))
		return false;
	char key[512];
	if (len > 400)
		return false;
	memcpy(key, name, len);
	key[len] = 0;
	json_t *v = json_object_get(f->fs, key);
	if (!v) {
		snprintf(key + len, sizeof key - len, ".liquid");
		v = json_object_get(f->fs, key);
	}
	if (!v && len > 7 && !strcmp(key + len - 7, ".liquid")) {
		key[len - 7] = 0;
		v = json_object_get(f->fs, key);
	}
	if (!json_is_string(v))
		return false;
	*src = json_string_value(v);
	*srclen = json_string_length(v);
	return true;
}

/* Ruby regex -> POSIX ERE for the few escapes the suite uses. */
static bool match_pattern(const char *pat, const char *text)
{
	char buf[2048];
	size_t k = 0;
	/* Ruby (?m): dot matches newline -- POSIX dot always does. */
	if (!strncmp(pat, "(?m)", 4))
		pat += 4;
	for (const char *p = pat; *p && k + 16 < sizeof buf; p++) {
		if (*p == '\\' && p[1]) {
			const char *rep = NULL;
			switch (p[1]) {
			case 'd': rep = "[0-9]"; break;
			case 'D': rep = "[^0-9]"; break;
			case 's': rep = "[[:space:]]"; break;
			case 'S': rep = "[^[:space:]]"; break;
			case 'w': rep = "[[:alnum:]_]"; break;
			case 'A': rep = "^"; break;
			case 'z': case 'Z': rep = "$"; break;
			}
			if (rep) {
				k += (size_t)snprintf(buf + k, sizeof buf - k, "%s", rep);
				p++;
				continue;
			}
		}
		buf[k++] = *p;
	}
	buf[k] = 0;
	regex_t re;
	if (regcomp(&re, buf, REG_EXTENDED | REG_NOSUB) != 0)
		return false;
	bool ok = regexec(&re, text, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

static void add_fail(suite_state *st, const char *file, const char *name, long cx, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void add_fail(suite_state *st, const char *file, const char *name, long cx, const char *fmt, ...)
{
	if (st->nfails == st->capfails) {
		st->capfails = st->capfails ? st->capfails * 2 : 64;
		st->fails = realloc(st->fails, st->capfails * sizeof *st->fails);
	}
	result *r = &st->fails[st->nfails++];
	r->file = strdup(file);
	r->name = strdup(name);
	r->complexity = cx;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&r->why, fmt, ap) < 0)
		r->why = strdup("?");
	va_end(ap);
	st->failed++;
}

static json_t *pick(json_t *kase, json_t *meta, json_t *defaults, const char *key)
{
	json_t *v = json_object_get(kase, key);
	if (!v && meta)
		v = json_object_get(meta, key);
	if (!v && defaults)
		v = json_object_get(defaults, key);
	return v;
}

static liquid_error_mode mode_of(json_t *m)
{
	if (json_is_array(m))
		m = json_array_get(m, 0);
	if (json_is_string(m) && strncmp(json_string_value(m), "strict", 6) == 0)
		return LIQUID_STRICT;
	return LIQUID_LAX;
}

static void run_case(suite_state *st, const char *file, json_t *kase, json_t *meta, json_t *suite,
		     json_t *filedata, liquid_renderer *r)
{
	const char *name = json_string_value(json_object_get(kase, "name"));
	if (!name)
		name = "(unnamed)";
	if (st->only && !strstr(name, st->only))
		return;
	json_t *tj = json_object_get(kase, "template");
	long cx = (long)json_integer_value(pick(kase, meta, json_object_get(suite, "defaults"), "complexity"));
	const char *missing = NULL;
	if (!all_supported(json_object_get(suite, "features"), &missing) ||
	    (meta && !all_supported(json_object_get(meta, "features"), &missing)) ||
	    !all_supported(json_object_get(kase, "features"), &missing) ||
	    has_instantiate(json_object_get(kase, "environment"))) {
		st->skipped++;
		if (st->verbose)
			printf("SKIP %s/%s (%s)\n", file, name, missing ? missing : "instantiate");
		return;
	}
	if (!json_is_string(tj)) {
		add_fail(st, file, name, cx, "case has no template");
		return;
	}
	if (cx > st->max_complexity)
		st->max_complexity = cx;
	json_t *defaults = json_object_get(suite, "defaults");
	liquid_error_mode mode = mode_of(pick(kase, meta, defaults, "error_mode"));
	bool render_errors = json_is_true(pick(kase, meta, defaults, "render_errors"));
	json_t *errors = json_object_get(kase, "errors");
	json_t *expected = json_object_get(kase, "expected");
	json_t *pattern = json_object_get(kase, "expected_pattern");

	liquid_limits lim = liquid_default_limits;
	json_t *rl = json_object_get(kase, "resource_limits");
	if (json_is_object(rl)) {
		json_t *x;
		if ((x = json_object_get(rl, "render_score_limit")))
			lim.render_score_limit = (uint64_t)json_integer_value(x);
		if ((x = json_object_get(rl, "cumulative_render_score_limit")))
			lim.cumulative_render_score_limit = (uint64_t)json_integer_value(x);
	}

	liquid_parse_opts po = {.mode = mode, .limits = &lim};
	liquid_template *t;
	liquid_error err;
	json_t *perr = json_object_get(errors, "parse_error");
	json_t *rerr = json_object_get(errors, "render_error");
	json_t *oerr = json_object_get(errors, "output");
	json_t *eline = json_object_get(errors, "line");
	if (!liquid_parse(json_string_value(tj), json_string_length(tj), &po, &t, &err)) {
		if (!perr) {
			add_fail(st, file, name, cx, "unexpected parse error: %s", err.message);
			return;
		}
		size_t i;
		json_t *s;
		json_array_foreach(perr, i, s) {
			if (!icontains(err.message, json_string_value(s))) {
				add_fail(st, file, name, cx, "parse error %s does not contain \"%s\"", err.message, json_string_value(s));
				return;
			}
		}
		if (eline && json_integer_value(eline) != err.line) {
			add_fail(st, file, name, cx, "parse error on line %d, want %lld", err.line, (long long)json_integer_value(eline));
			return;
		}
		st->passed++;
		return;
	}
	if (perr) {
		add_fail(st, file, name, cx, "parsed, want a parse error containing %s", json_string_value(json_array_get(perr, 0)));
		liquid_template_free(t);
		return;
	}
	/* environment (+ file data) */
	json_t *env = json_object();
	if (json_is_object(filedata))
		json_object_update(env, filedata);
	json_t *e = json_object_get(kase, "environment");
	if (json_is_object(e))
		json_object_update(env, e);
	fsctx fs = {.fs = json_object_get(kase, "filesystem")};
	liquid_render_opts ro = {
		.mode = mode, .render_errors = render_errors, .now = FROZEN_NOW,
		.loader = loader, .loader_ud = &fs, .limits = &lim,
	};
	bool ok = liquid_render(r, t, env, &ro, &err);
	size_t outn;
	const char *out = liquid_output(r, &outn);
	if (rerr) {
		if (ok) {
			add_fail(st, file, name, cx, "rendered \"%.200s\", want a render error containing %s", out, json_string_value(json_array_get(rerr, 0)));
		} else {
			size_t i;
			json_t *s;
			bool good = true;
			json_array_foreach(rerr, i, s) {
				if (good && !icontains(err.message, json_string_value(s))) {
					add_fail(st, file, name, cx, "render error %s does not contain \"%s\"", err.message, json_string_value(s));
					good = false;
				}
			}
			if (good && eline && json_integer_value(eline) != err.line) {
				add_fail(st, file, name, cx, "render error on line %d, want %lld", err.line, (long long)json_integer_value(eline));
				good = false;
			}
			if (good)
				st->passed++;
		}
	} else if (!ok) {
		add_fail(st, file, name, cx, "unexpected render error: %s", err.message);
	} else if (oerr) {
		size_t i;
		json_t *s;
		bool good = true;
		json_array_foreach(oerr, i, s) {
			if (good && !icontains(out, json_string_value(s))) {
				add_fail(st, file, name, cx, "output \"%.300s\" does not contain \"%s\"", out, json_string_value(s));
				good = false;
			}
		}
		if (good)
			st->passed++;
	} else if (json_is_string(expected)) {
		if (outn == json_string_length(expected) && memcmp(out, json_string_value(expected), outn) == 0)
			st->passed++;
		else
			add_fail(st, file, name, cx, "got \"%.400s\", want \"%.400s\"", out, json_string_value(expected));
	} else if (json_is_string(pattern)) {
		if (match_pattern(json_string_value(pattern), out))
			st->passed++;
		else
			add_fail(st, file, name, cx, "got \"%.300s\", want a match of /%s/", out, json_string_value(pattern));
	} else {
		add_fail(st, file, name, cx, "case has neither expected output nor errors");
	}
	json_decref(env);
	liquid_template_free(t);
}

static void run_file(suite_state *st, const char *dir, const char *path, json_t *suite, liquid_renderer *r)
{
	json_t *doc;
	char err[512];
	if (!spec_yaml_load(path, &doc, err, sizeof err)) {
		add_fail(st, path, "(load)", 0, "cannot load: %s", err);
		return;
	}
	json_t *meta = NULL, *specs = doc;
	if (json_is_object(doc)) {
		meta = json_object_get(doc, "_metadata");
		specs = json_object_get(doc, "specs");
	}
	json_t *filedata = NULL;
	json_t *df = meta ? json_object_get(meta, "data_files") : NULL;
	if (json_is_array(df)) {
		filedata = json_object();
		size_t i;
		json_t *f;
		json_array_foreach(df, i, f) {
			char p[4096];
			snprintf(p, sizeof p, "%s/%s", dir, json_string_value(f));
			json_t *d;
			if (spec_yaml_load(p, &d, err, sizeof err)) {
				if (json_is_object(d))
					json_object_update(filedata, d);
				json_decref(d);
			} else {
				add_fail(st, path, "(data)", 0, "cannot load data file: %s", err);
			}
		}
	}
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	char label[8300];
	const char *dbase = strrchr(dir, '/');
	snprintf(label, sizeof label, "%s/%s", dbase ? dbase + 1 : dir, base);
	size_t i;
	json_t *k;
	if (json_is_array(specs))
		json_array_foreach(specs, i, k)
			if (json_is_object(k))
				run_case(st, label, k, meta, suite, filedata, r);
	json_decref(filedata);
	json_decref(doc);
}

static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Run one suite folder (one that has a suite.yml), then recurse. */
static void run_dir(suite_state *st, const char *dir, json_t *suite, liquid_renderer *r)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/suite.yml", dir);
	json_t *own = NULL;
	struct stat sb;
	if (stat(p, &sb) == 0) {
		char err[512];
		if (!spec_yaml_load(p, &own, err, sizeof err)) {
			add_fail(st, p, "(suite)", 0, "cannot load: %s", err);
			return;
		}
		suite = own;
	}
	DIR *d = opendir(dir);
	if (!d)
		return;
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || de->d_name[0] == '_')
			continue; /* _data: data files, not cases */
		names = realloc(names, (n + 1) * sizeof *names);
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmpstr);
	for (size_t i = 0; i < n; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			run_dir(st, p, suite, r);
		} else {
			size_t l = strlen(names[i]);
			if (l > 4 && (!strcmp(names[i] + l - 4, ".yml") || (l > 5 && !strcmp(names[i] + l - 5, ".yaml"))) &&
			    strcmp(names[i], "suite.yml") != 0 && suite)
				run_file(st, dir, p, suite, r);
		}
		free(names[i]);
	}
	free(names);
	json_decref(own);
}

static int cmpres(const void *a, const void *b)
{
	const result *x = a, *y = b;
	if (x->complexity != y->complexity)
		return x->complexity < y->complexity ? -1 : 1;
	return strcmp(x->name, y->name);
}

int main(int argc, char **argv)
{
	suite_state st = {0};
	const char *dir = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v"))
			st.verbose = true;
		else if (!strcmp(argv[i], "-k") && i + 1 < argc)
			st.only = argv[++i];
		else
			dir = argv[i];
	}
	if (!dir) {
		fprintf(stderr, "usage: %s SUITE_DIR [-v] [-k NAME]\n", argv[0]);
		return 2;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "liquid-spec: %s is not a directory\n", dir);
		return 2;
	}
	liquid_renderer *r = liquid_renderer_new();
	run_dir(&st, dir, NULL, r);
	liquid_renderer_free(r);
	if (st.nfails)
		qsort(st.fails, st.nfails, sizeof *st.fails, cmpres);
	size_t show = st.verbose ? st.nfails : (st.nfails < 40 ? st.nfails : 40);
	for (size_t i = 0; i < show; i++)
		printf("FAIL [%ld] %s: %s\n    %s\n", st.fails[i].complexity, st.fails[i].file, st.fails[i].name, st.fails[i].why);
	if (show < st.nfails)
		printf("... and %zu more failures (-v shows all)\n", st.nfails - show);
	long cleared = st.nfails ? st.fails[0].complexity : st.max_complexity;
	printf("skipped cases need unsupported features: ");
	for (int i = 0; UNSUPPORTED[i]; i++)
		printf("%s%s", i ? ", " : "", UNSUPPORTED[i]);
	printf(" (or instantiate: environments)\n");
	printf("liquid-spec passed=%ld failed=%ld skipped=%ld cleared=%ld\n", st.passed, st.failed, st.skipped, cleared);
	for (size_t i = 0; i < st.nfails; i++) {
		free(st.fails[i].file);
		free(st.fails[i].name);
		free(st.fails[i].why);
	}
	free(st.fails);
	return st.failed ? 1 : 0;
}
