/*
 * filters_arr.c -- array filters (see filters.h).  Inputs go through
 * Ruby Liquid's InputIterator: arrays are flattened, a hash is a one-item
 * list, nil is empty and any other value is a one-item list.
 */
#include <string.h>
#include <strings.h>

#include "filters.h"
#include "render.h"

typedef struct vec {
	lq_value *v;
	size_t n, cap;
} vec;

static void vpush(lq_arena *a, vec *x, lq_value v)
{
	if (x->n == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 16;
		lq_value *nv = lq_arena_alloc(a, cap * sizeof *nv);
		if (x->n)
			memcpy(nv, x->v, x->n * sizeof *nv);
		x->v = nv;
		x->cap = cap;
	}
	x->v[x->n++] = v;
}

static void flatten_into(lq_arena *a, vec *x, lq_value v, int depth)
{
	if (lq_is_array(v) && depth < 100) {
		size_t n = lq_arr_len(v);
		for (size_t i = 0; i < n; i++)
			flatten_into(a, x, lq_arr_get(v, i), depth + 1);
	} else {
		vpush(a, x, v);
	}
}

static vec items(lq_ctx *c, lq_value v)
{
	vec x = {0};
	if (v.kind == LV_NIL)
		return x;
	flatten_into(lq_ctx_arena(c), &x, v, 0);
	return x;
}

static lq_value mkarr(lq_ctx *c, vec *x)
{
	lq_array *a = lq_arena_alloc(lq_ctx_arena(c), sizeof *a);
	a->n = x->n;
	a->v = x->v;
	return lq_array_value(a);
}

/* item[property] for hash items; nil otherwise */
static lq_value prop(lq_value item, lq_value property)
{
	lq_value out = lq_nil();
	if (property.kind == LV_STR && lq_is_hash(item))
		lq_hash_get(item, property.u.s.p, property.u.s.n, &out);
	else if (property.kind == LV_STR && item.kind == LV_STR) {
		/* Ruby String#[](str): the substring when present */
		if (property.u.s.n == 0 || memmem(item.u.s.p, item.u.s.n, property.u.s.p, property.u.s.n))
			out = property;
	}
	else if (property.kind == LV_INT && lq_is_array(item)) {
		int64_t i = property.u.i, n = (int64_t)lq_arr_len(item);
		if (i < 0)
			i += n;
		if (i >= 0 && i < n)
			out = lq_arr_get(item, (size_t)i);
	}
	return out;
}

FILTER(f_join)
{
	vec x = items(c, *v);
	const char *g = " ";
	size_t gn = 1;
	if (nargs > 0)
		lq_to_str(lq_ctx_arena(c), args[0], &g, &gn);
	lq_buf b = {0};
	for (size_t i = 0; i < x.n; i++) {
		if (!lq_ctx_room(c, b.n + gn)) {
			lq_buf_free(&b);
			return false;
		}
		if (i)
			lq_buf_put(&b, g, gn);
		const char *p;
		size_t n;
		lq_to_str(lq_ctx_arena(c), x.v[i], &p, &n);
		lq_buf_put(&b, p, n);
	}
	*v = lq_str(lq_arena_strndup(lq_ctx_arena(c), b.p ? b.p : "", b.n), b.n);
	lq_buf_free(&b);
	return true;
}

static bool first_last(lq_value *v, bool first)
{
	if (lq_is_array(*v)) {
		size_t n = lq_arr_len(*v);
		*v = n ? lq_arr_get(*v, first ? 0 : n - 1) : lq_nil();
	} else if (v->kind == LV_STR) {
		/* ActiveSupport-style first/last character */
		const char *p = v->u.s.p;
		size_t n = v->u.s.n;
		if (!n)
			return true;
		if (first) {
			size_t l = 1;
			while (l < n && ((unsigned char)p[l] & 0xC0) == 0x80)
				l++;
			*v = lq_str(p, l);
		} else {
			size_t i = n - 1;
			while (i > 0 && ((unsigned char)p[i] & 0xC0) == 0x80)
				i--;
			*v = lq_str(p + i, n - i);
		}
	} else {
		*v = lq_nil();
	}
	return true;
}

FILTER(f_first) { (void)c; return first_last(v, true); }
FILTER(f_last) { (void)c; return first_last(v, false); }

FILTER(f_reverse)
{
	vec x = items(c, *v);
	for (size_t i = 0; i < x.n / 2; i++) {
		lq_value t = x.v[i];
		x.v[i] = x.v[x.n - 1 - i];
		x.v[x.n - 1 - i] = t;
	}
	*v = mkarr(c, &x);
	return true;
}

/* Ruby <=>: 0/-1/1, or 2 when not comparable. */
static int spaceship(lq_value a, lq_value b)
{
	int r;
	char msg[8];
	if ((a.kind == LV_INT || a.kind == LV_FLOAT) && (b.kind == LV_INT || b.kind == LV_FLOAT)) {
		if (!lq_compare(a, b, &r, msg, sizeof msg))
			return 2;
		return r;
	}
	if (a.kind == LV_STR && b.kind == LV_STR) {
		if (!lq_compare(a, b, &r, msg, sizeof msg))
			return 2;
		return r;
	}
	if (lq_is_array(a) && lq_is_array(b)) {
		size_t n = lq_arr_len(a), m = lq_arr_len(b);
		for (size_t i = 0; i < n && i < m; i++) {
			int k = spaceship(lq_arr_get(a, i), lq_arr_get(b, i));
			if (k)
				return k;
		}
		return n < m ? -1 : n > m;
	}
	if (lq_equal(a, b) && a.kind == b.kind)
		return 0;
	return 2;
}

typedef struct sortctx {
	bool natural;
	bool failed;
	lq_value property;
	bool has_prop;
} sortctx;

static int cmp_vals(sortctx *s, lq_value a, lq_value b)
{
	if (s->has_prop) {
		a = prop(a, s->property);
		b = prop(b, s->property);
	}
	if (s->natural) {
		if (a.kind != LV_NIL && b.kind != LV_NIL) {
			lq_buf x = {0}, y = {0};
			lq_write(&x, a);
			lq_write(&y, b);
			int r = strcasecmp(x.p ? x.p : "", y.p ? y.p : "");
			lq_buf_free(&x);
			lq_buf_free(&y);
			return r < 0 ? -1 : r > 0;
		}
		return a.kind == LV_NIL ? 1 : -1;
	}
	int r = spaceship(a, b);
	if (r != 2)
		return r;
	if (a.kind == LV_NIL)
		return 1;
	if (b.kind == LV_NIL)
		return -1;
	s->failed = true;
	return 0;
}

static void msort(sortctx *s, lq_value *v, lq_value *tmp, size_t n)
{
	if (n < 2)
		return;
	size_t h = n / 2;
	msort(s, v, tmp, h);
	msort(s, v + h, tmp, n - h);
	size_t i = 0, j = h, k = 0;
	while (i < h && j < n)
		tmp[k++] = cmp_vals(s, v[j], v[i]) < 0 ? v[j++] : v[i++];
	while (i < h)
		tmp[k++] = v[i++];
	while (j < n)
		tmp[k++] = v[j++];
	memcpy(v, tmp, n * sizeof *v);
}

static bool do_sort(lq_ctx *c, lq_value *v, const lq_value *args, int nargs, bool natural)
{
	vec x = items(c, *v);
	sortctx s = {.natural = natural};
	if (nargs > 0 && args[0].kind != LV_NIL) {
		s.has_prop = true;
		s.property = args[0];
	}
	if (x.n > 1) {
		lq_value *tmp = lq_arena_alloc(lq_ctx_arena(c), x.n * sizeof *tmp);
		msort(&s, x.v, tmp, x.n);
	}
	if (s.failed)
		return lq_fail(c, "cannot sort values of incompatible types");
	*v = mkarr(c, &x);
	return true;
}

FILTER(f_sort) { return do_sort(c, v, args, nargs, false); }
FILTER(f_sort_natural) { return do_sort(c, v, args, nargs, true); }

/* Ruby eql?: like == but 1 and 1.0 differ */
static bool eql(lq_value a, lq_value b)
{
	if ((a.kind == LV_INT) != (b.kind == LV_INT) && (a.kind == LV_FLOAT || b.kind == LV_FLOAT))
		return false;
	return lq_equal(a, b) && !(a.kind == LV_EMPTY || a.kind == LV_BLANK || b.kind == LV_EMPTY || b.kind == LV_BLANK);
}

FILTER(f_uniq)
{
	vec x = items(c, *v), out = {0};
	bool has_prop = nargs > 0 && args[0].kind != LV_NIL;
	for (size_t i = 0; i < x.n; i++) {
		lq_value ki = has_prop ? prop(x.v[i], args[0]) : x.v[i];
		bool dup = false;
		for (size_t j = 0; j < out.n && !dup; j++) {
			lq_value kj = has_prop ? prop(out.v[j], args[0]) : out.v[j];
			dup = eql(ki, kj);
		}
		if (!dup)
			vpush(lq_ctx_arena(c), &out, x.v[i]);
	}
	*v = mkarr(c, &out);
	return true;
}

FILTER(f_compact)
{
	vec x = items(c, *v), out = {0};
	bool has_prop = nargs > 0 && args[0].kind != LV_NIL;
	for (size_t i = 0; i < x.n; i++) {
		lq_value k = has_prop ? prop(x.v[i], args[0]) : x.v[i];
		if (k.kind != LV_NIL)
			vpush(lq_ctx_arena(c), &out, x.v[i]);
	}
	*v = mkarr(c, &out);
	return true;
}

FILTER(f_map)
{
	vec x = items(c, *v), out = {0};
	lq_value p = ARG(0);
	for (size_t i = 0; i < x.n; i++) {
		lq_value r = lq_nil();
		if (p.kind == LV_STR && p.u.s.n == 9 && memcmp(p.u.s.p, "to_liquid", 9) == 0)
			r = x.v[i];
		else
			r = prop(x.v[i], p);
		vpush(lq_ctx_arena(c), &out, r);
	}
	*v = mkarr(c, &out);
	return true;
}

/* mode: 0 where, 1 reject, 2 find, 3 find_index, 4 has */
static bool select_items(lq_ctx *c, lq_value *v, const lq_value *args, int nargs, int mode)
{
	vec x = items(c, *v), out = {0};
	lq_value p = ARG(0);
	bool has_target = nargs > 1 && args[1].kind != LV_NIL;
	for (size_t i = 0; i < x.n; i++) {
		lq_value val = prop(x.v[i], p);
		bool m = has_target ? lq_equal(val, args[1]) : lq_truthy(val);
		if (mode == 1)
			m = !m;
		if (!m)
			continue;
		if (mode == 2) {
			*v = x.v[i];
			return true;
		}
		if (mode == 3) {
			*v = lq_int((int64_t)i);
			return true;
		}
		if (mode == 4) {
			*v = lq_bool(true);
			return true;
		}
		vpush(lq_ctx_arena(c), &out, x.v[i]);
	}
	if (mode == 2 || mode == 3)
		*v = lq_nil();
	else if (mode == 4)
		*v = lq_bool(false);
	else
		*v = mkarr(c, &out);
	return true;
}

FILTER(f_where) { return select_items(c, v, args, nargs, 0); }
FILTER(f_reject) { return select_items(c, v, args, nargs, 1); }
FILTER(f_find) { return select_items(c, v, args, nargs, 2); }
FILTER(f_find_index) { return select_items(c, v, args, nargs, 3); }
FILTER(f_has) { return select_items(c, v, args, nargs, 4); }

FILTER(f_concat)
{
	lq_value other = ARG(0);
	if (!lq_is_array(other))
		return lq_fail(c, "concat filter requires an array argument");
	vec x = items(c, *v);
	size_t n = lq_arr_len(other);
	for (size_t i = 0; i < n; i++)
		vpush(lq_ctx_arena(c), &x, lq_arr_get(other, i));
	*v = mkarr(c, &x);
	return true;
}

FILTER(f_sum)
{
	vec x = items(c, *v);
	bool has_prop = nargs > 0 && args[0].kind != LV_NIL;
	lq_value acc = lq_int(0);
	for (size_t i = 0; i < x.n; i++) {
		lq_value it = x.v[i];
		if (has_prop)
			it = lq_is_hash(it) ? prop(it, args[0]) : lq_int(0);
		if (!lq_arith('+', acc, lq_to_number(it), &acc))
			return lq_fail(c, "invalid sum");
	}
	*v = acc;
	return true;
}

const lq_filter_def lq_filters_arr[] = {
	{"join", f_join},
	{"first", f_first},
	{"last", f_last},
	{"reverse", f_reverse},
	{"sort", f_sort},
	{"sort_natural", f_sort_natural},
	{"uniq", f_uniq},
	{"compact", f_compact},
	{"map", f_map},
	{"where", f_where},
	{"reject", f_reject},
	{"find", f_find},
	{"find_index", f_find_index},
	{"has", f_has},
	{"concat", f_concat},
	{"sum", f_sum},
	{NULL, NULL},
};
