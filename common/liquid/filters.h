/*
 * filters.h -- Liquid's standard filters.
 *
 * Each filter is an lq_filter_fn (ast.h): it replaces *v with its result,
 * allocating any new string or array in the render arena (lq_ctx_arena).
 * Argument conversions follow Ruby Liquid 5 (Utils.to_number, to_integer,
 * to_s); a bad argument is a render error raised with lq_fail, with Ruby's
 * message ("divided by 0", "invalid integer", ...).
 *
 * Files: filters_str.c (string and HTML/URL), filters_num.c (math),
 * filters_arr.c (arrays), filters_date.c (date / strftime).
 * Thread safety: filters keep no state.
 */
#ifndef HERALD_LIQUID_FILTERS_H
#define HERALD_LIQUID_FILTERS_H

#include "ast.h"

/* Resolve a filter by name; NULL when Liquid has no such filter. */
lq_filter_fn lq_filter_lookup(const char *name, size_t n);

typedef struct lq_filter_def {
	const char *name;
	lq_filter_fn fn;
} lq_filter_def;

/* Each filters_*.c exports its table, terminated by {NULL, NULL}. */
extern const lq_filter_def lq_filters_str[];
extern const lq_filter_def lq_filters_num[];
extern const lq_filter_def lq_filters_arr[];
extern const lq_filter_def lq_filters_date[];

/* Shared helpers for filter implementations. */
#define FILTER(name) static bool name(lq_ctx *c, lq_value *v, const lq_value *args, int nargs, \
				      const char *const *kwn, const lq_value *kwv, int nkw)
#define ARG(i) ((i) < nargs ? args[(i)] : lq_nil())

#endif
