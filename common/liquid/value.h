/*
 * value.h -- the values a Liquid render computes with.
 *
 * An lq_value is a small tagged union passed by value.  Data from the caller
 * stays in jansson form and is wrapped, not copied: a JSON object or array is
 * an LV_JSON pointing into the caller's tree; a JSON string becomes an LV_STR
 * pointing at jansson's bytes.  Values made during a render (filter results,
 * split arrays, captures) live in the render arena.  Literal values of a
 * compiled template live in the template's arena.  So an lq_value never owns
 * anything and needs no free; it is valid while the render's data, arena
 * and template are.
 *
 * Semantics follow Ruby Liquid 5: only nil and false are falsy; numbers
 * compare across int/float; float arithmetic is done in decimal (Ruby uses
 * BigDecimal), so 0.1 + 0.2 renders "0.3"; floats print like Ruby's
 * Float#to_s ("3.0", "1.0e+20").
 *
 * Thread safety: functions are pure or write only into the arena/buffer they
 * are given.  Errors: conversions that can fail return bool (warn_unused).
 */
#ifndef HERALD_LIQUID_VALUE_H
#define HERALD_LIQUID_VALUE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "arena.h"

#define LQ_WUR __attribute__((warn_unused_result))

typedef enum lq_kind {
	LV_NIL = 0,
	LV_BOOL,
	LV_INT,
	LV_FLOAT,
	LV_STR,
	LV_RANGE,  /* (lo..hi), inclusive */
	LV_ARRAY,  /* arena array of values */
	LV_JSON,   /* a JSON object or array of the caller's data */
	LV_EMPTY,  /* the `empty` literal */
	LV_BLANK,  /* the `blank` literal */
	LV_LOOP,   /* forloop / tablerowloop object */
} lq_kind;

typedef struct lq_value lq_value;
typedef struct lq_array lq_array;
typedef struct lq_loop lq_loop;

struct lq_value {
	uint8_t kind; /* lq_kind */
	union {
		bool b;
		int64_t i;
		double f;
		struct { const char *p; size_t n; } s;
		struct { int64_t lo, hi; } r;
		lq_array *a;
		json_t *j;
		lq_loop *loop;
	} u;
};

struct lq_array {
	size_t n;       /* elements */
	lq_value *v;    /* n values, arena memory */
};

/* forloop and tablerowloop: read by property lookup, updated by the tag. */
struct lq_loop {
	int64_t index0;     /* 0-based position */
	int64_t length;     /* number of iterations */
	int64_t cols;       /* tablerow: columns per row (0 for forloop) */
	int64_t col0, row;  /* tablerow: 0-based column, 1-based row */
	bool tablerow;      /* tablerowloop rather than forloop */
	const char *name;   /* forloop.name: "var-collection" */
	lq_loop *parent;    /* enclosing forloop, NULL at top */
};

static inline lq_value lq_nil(void) { lq_value v = {.kind = LV_NIL}; return v; }
static inline lq_value lq_bool(bool b) { lq_value v = {.kind = LV_BOOL, .u.b = b}; return v; }
static inline lq_value lq_int(int64_t i) { lq_value v = {.kind = LV_INT, .u.i = i}; return v; }
static inline lq_value lq_float(double f) { lq_value v = {.kind = LV_FLOAT, .u.f = f}; return v; }
static inline lq_value lq_str(const char *p, size_t n)
{
	lq_value v = {.kind = LV_STR, .u.s = {p, n}};
	return v;
}

lq_value lq_from_json(json_t *j);

static inline bool lq_truthy(lq_value v)
{
	return !(v.kind == LV_NIL || (v.kind == LV_BOOL && !v.u.b));
}

/* Array-like access: LV_ARRAY, JSON arrays, ranges. */
bool lq_is_array(lq_value v);
bool lq_is_hash(lq_value v);
size_t lq_arr_len(lq_value v);
lq_value lq_arr_get(lq_value v, size_t i);
/* Copy any array-like (or a hash's [key, value] pairs) into an arena array. */
lq_array *lq_to_array(lq_arena *a, lq_value v);
lq_value lq_array_value(lq_array *arr);
lq_array *lq_array_new(lq_arena *a, size_t n);

/* Hash key lookup on an LV_JSON object; false when absent. */
bool lq_hash_get(lq_value h, const char *key, size_t klen, lq_value *out);

/* Liquid's `empty` / `blank` tests. */
bool lq_is_empty(lq_value v);
bool lq_is_blank(lq_value v);

/* Append the value's to_s (Ruby Liquid output form) to b. */
void lq_write(lq_buf *b, lq_value v);
/* String form as (p, n); strings are returned as is, others formatted into
 * the arena. */
void lq_to_str(lq_arena *a, lq_value v, const char **p, size_t *n);

/* Ruby Float#to_s into buf (>= 32 bytes); returns length. */
int lq_fmt_double(char *buf, size_t cap, double d);

/* Liquid equality (==) and ordering (<, >, <=, >=). */
bool lq_equal(lq_value a, lq_value b);
/* Returns false (with a Ruby-like message in msg) when not comparable in a
 * way that raises in Ruby (string vs number); *res = -2 means "not
 * comparable, condition is false" (nil operands). */
bool lq_compare(lq_value a, lq_value b, int *res, char *msg, size_t msgcap) LQ_WUR;

/* Utils.to_number: ints stay ints; floats and "1.5"-like strings are decimal
 * floats; other strings go through to_i; everything else is 0. */
lq_value lq_to_number(lq_value v);
/* Double to int64 when it fits (truncating); false for NaN / out of range. */
bool lq_f2i(double d, int64_t *out) LQ_WUR;
/* Same, clamping instead of failing (NaN gives 0). */
int64_t lq_f2i_clamp(double d);

/* Utils.to_integer: Integer(obj) semantics, false = "invalid integer". */
bool lq_to_integer(lq_value v, int64_t *out) LQ_WUR;

/* Decimal (BigDecimal-like) arithmetic on numbers from lq_to_number.
 * op is one of + - * / %.  False on division by zero. */
bool lq_arith(char op, lq_value a, lq_value b, lq_value *out) LQ_WUR;

/* Ruby type name for messages: "String", "Integer", "Float", "NilClass"... */
const char *lq_type_name(lq_value v);

#endif
