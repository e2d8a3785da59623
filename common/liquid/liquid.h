/*
 * liquid.h -- herald's Liquid template engine: public API.
 *
 * Marketers write messages in Liquid (the Shopify / Braze / Customer.io
 * dialect).  A template is parsed once into a compiled, immutable form
 * (liquid_template) and rendered many times against JSON data (jansson
 * json_t) by a liquid_renderer, which owns the output buffer and an arena for
 * per-render temporaries and reuses both across renders.
 *
 *   liquid_template *t;
 *   liquid_error err;
 *   if (!liquid_parse(src, len, &popts, &t, &err)) -> err.message, err.line
 *   liquid_renderer *r = liquid_renderer_new();          (one per thread)
 *   if (!liquid_render(r, t, data, &ropts, &err)) -> err.message
 *   out = liquid_output(r, &n);                          (valid until next render)
 *
 * Partials ({% render %}, {% include %}) come from a caller callback
 * (liquid_partial_loader) that maps a name to source text; the renderer
 * compiles each partial once and keeps it in a small per-renderer cache
 * keyed by name and exact source text.  Compiled top-level templates are
 * shared between threads through liquid_cache (liquid_cache.h).
 *
 * Limits (liquid_limits) bound template size, nesting depth, output size,
 * loop iterations, partial recursion and a Shopify-style render score; going
 * over one is a render (or parse) error, never a crash or a hang.
 *
 * Ownership: liquid_parse's template belongs to the caller (free with
 * liquid_template_free; a template can be freed only when no render uses
 * it).  The json_t data is borrowed for the duration of one render.  The
 * output belongs to the renderer.
 *
 * Thread safety: a liquid_template is immutable after parse, so any number
 * of threads may render one at the same time, each with its own renderer.  A
 * renderer is used by one thread at a time.
 *
 * Errors: every fallible function returns bool (false = failed) and fills
 * the caller's liquid_error with a message, the kind, the 1-based line and
 * column and the partial's name when it happened inside one.
 */
#ifndef HERALD_LIQUID_H
#define HERALD_LIQUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define LIQUID_WUR __attribute__((warn_unused_result))

typedef enum liquid_error_mode {
	LIQUID_LAX = 0,    /* Ruby Liquid's default: tolerate junk in markup */
	LIQUID_STRICT = 1, /* every markup error is a parse error ("strict"/"strict2") */
} liquid_error_mode;

typedef enum liquid_error_kind {
	LIQUID_ERR_NONE = 0,
	LIQUID_ERR_PARSE,  /* syntax: the template cannot be compiled */
	LIQUID_ERR_RENDER, /* runtime: bad filter argument, missing partial, ... */
	LIQUID_ERR_LIMIT,  /* a liquid_limits bound was exceeded */
} liquid_error_kind;

typedef struct liquid_error {
	liquid_error_kind kind; /* what failed */
	int line;               /* 1-based line in the failing template, 0 = unknown */
	int column;             /* 1-based column, 0 = unknown */
	char partial[128];      /* partial the error happened in, "" = the template itself */
	char message[512];      /* full text, e.g. "Liquid syntax error (line 3): ..." */
} liquid_error;

typedef struct liquid_limits {
	size_t max_template_size;     /* bytes of source per template or partial */
	size_t max_output_size;       /* bytes of rendered output */
	uint64_t max_loop_iterations; /* for/tablerow iterations per render, all loops */
	unsigned max_depth;           /* block nesting (parse) and scope depth (render) */
	size_t max_render_memory;     /* bytes of per-render temporaries (strings, arrays) */
	uint64_t render_score_limit;  /* Shopify render score (nodes rendered), 0 = off */
	uint64_t cumulative_render_score_limit; /* same, across partials, 0 = off */
} liquid_limits;

/* Defaults: 1 MiB template, 8 MiB output, 16 MiB temporaries, 10^7
 * iterations, depth 100, render score 5*10^7 (about a second of work). */
extern const liquid_limits liquid_default_limits;

typedef struct liquid_parse_opts {
	liquid_error_mode mode;       /* lax or strict */
	const liquid_limits *limits;  /* NULL = liquid_default_limits */
	const char *name;             /* name used in messages (partials), may be NULL */
} liquid_parse_opts;

/*
 * Partial loader: find the source of partial `name`.  On success set *src and
 * *src_len (the bytes must stay valid until the render returns) and return
 * true; return false when there is no such partial ("Could not find ...").
 * Called from the rendering thread; may be called several times per render.
 */
typedef bool (*liquid_partial_loader)(void *ud, const char *name, size_t name_len,
				      const char **src, size_t *src_len);

typedef struct liquid_render_opts {
	liquid_error_mode mode;       /* used to parse partials */
	bool render_errors;           /* true: write "Liquid error (line N): ..." into the
				       * output and go on; false: stop and fail */
	int64_t now;                  /* unix time for "now"/"today" in date; 0 = time(NULL) */
	liquid_partial_loader loader; /* NULL: every partial is missing */
	void *loader_ud;              /* passed to loader */
	const liquid_limits *limits;  /* NULL = liquid_default_limits */
} liquid_render_opts;

typedef struct liquid_template liquid_template;
typedef struct liquid_renderer liquid_renderer;

/* Compile src[0..len).  On success *out is a new template. */
bool liquid_parse(const char *src, size_t len, const liquid_parse_opts *opts,
		  liquid_template **out, liquid_error *err) LIQUID_WUR;

/* Check that src compiles (the API's validate endpoint): parse and discard. */
bool liquid_validate(const char *src, size_t len, const liquid_parse_opts *opts,
		     liquid_error *err) LIQUID_WUR;

void liquid_template_free(liquid_template *t);

/* Bytes of heap the compiled template holds (its tree and strings). */
size_t liquid_template_memory(const liquid_template *t);

liquid_renderer *liquid_renderer_new(void);
void liquid_renderer_free(liquid_renderer *r);

/*
 * Render t against data (a JSON object, or NULL for none).  The output is
 * read with liquid_output and stays valid until the next render with r.
 * With render_errors, runtime errors are written inline and the render still
 * succeeds; limit errors always fail it.
 */
bool liquid_render(liquid_renderer *r, const liquid_template *t, json_t *data,
		   const liquid_render_opts *opts, liquid_error *err) LIQUID_WUR;

const char *liquid_output(const liquid_renderer *r, size_t *len);

typedef struct liquid_render_stats {
	size_t arena_bytes;   /* per-render temporaries used by the last render */
	size_t output_bytes;  /* size of the last output */
	size_t heap_bytes;    /* heap the renderer holds (arena blocks, buffers, partial cache) */
} liquid_render_stats;

liquid_render_stats liquid_renderer_stats(const liquid_renderer *r);

#endif
