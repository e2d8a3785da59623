/*
 * value.c -- see value.h.
 */
#include "value.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lq_value lq_from_json(json_t *j)
{
	if (!j)
		return lq_nil();
	switch (json_typeof(j)) {
	case JSON_STRING:
		return lq_str(json_string_value(j), json_string_length(j));
	case JSON_INTEGER:
		return lq_int((int64_t)json_integer_value(j));
	case JSON_REAL:
		return lq_float(json_real_value(j));
	case JSON_TRUE:
		return lq_bool(true);
	case JSON_FALSE:
		return lq_bool(false);
	case JSON_NULL:
		return lq_nil();
	default: {
		lq_value v = {.kind = LV_JSON, .u.j = j};
		return v;
	}
	}
}

bool lq_is_array(lq_value v)
{
	return v.kind == LV_ARRAY || v.kind == LV_RANGE || (v.kind == LV_JSON && json_is_array(v.u.j));
}

bool lq_is_hash(lq_value v)
{
	return v.kind == LV_JSON && json_is_object(v.u.j);
}

size_t lq_arr_len(lq_value v)
{
	switch (v.kind) {
	case LV_ARRAY:
		return v.u.a->n;
	case LV_RANGE: {
		if (v.u.r.hi < v.u.r.lo)
			return 0;
		/* unsigned: (-2^63..2^63-1) must not overflow */
		uint64_t n = (uint64_t)v.u.r.hi - (uint64_t)v.u.r.lo;
		return n >= (uint64_t)(SIZE_MAX / 2) ? SIZE_MAX / 2 : (size_t)n + 1;
	}
	case LV_JSON:
		return json_is_array(v.u.j) ? json_array_size(v.u.j) : json_object_size(v.u.j);
	default:
		return 0;
	}
}

lq_value lq_arr_get(lq_value v, size_t i)
{
	switch (v.kind) {
	case LV_ARRAY:
		return i < v.u.a->n ? v.u.a->v[i] : lq_nil();
	case LV_RANGE:
		return lq_int(v.u.r.lo + (int64_t)i);
	case LV_JSON:
		if (json_is_array(v.u.j))
			return lq_from_json(json_array_get(v.u.j, i));
		return lq_nil();
	default:
		return lq_nil();
	}
}

lq_array *lq_array_new(lq_arena *a, size_t n)
{
	lq_array *arr = lq_arena_alloc(a, sizeof *arr);
	arr->n = n;
	arr->v = n ? lq_arena_alloc(a, n * sizeof(lq_value)) : NULL;
	return arr;
}

lq_value lq_array_value(lq_array *arr)
{
	lq_value v = {.kind = LV_ARRAY, .u.a = arr};
	return v;
}

lq_array *lq_to_array(lq_arena *a, lq_value v)
{
	if (v.kind == LV_ARRAY)
		return v.u.a;
	if (lq_is_hash(v)) {
		/* A hash iterates as [key, value] pairs, in insertion order. */
		lq_array *arr = lq_array_new(a, json_object_size(v.u.j));
		size_t i = 0;
		const char *k;
		size_t klen;
		json_t *val;
		json_object_keylen_foreach(v.u.j, k, klen, val) {
			lq_array *pair = lq_array_new(a, 2);
			pair->v[0] = lq_str(k, klen);
			pair->v[1] = lq_from_json(val);
			arr->v[i++] = lq_array_value(pair);
		}
		return arr;
	}
	size_t n = lq_arr_len(v);
	lq_array *arr = lq_array_new(a, n);
	for (size_t i = 0; i < n; i++)
		arr->v[i] = lq_arr_get(v, i);
	return arr;
}

bool lq_hash_get(lq_value h, const char *key, size_t klen, lq_value *out)
{
	if (!lq_is_hash(h))
		return false;
	json_t *j = json_object_getn(h.u.j, key, klen);
	if (!j)
		return false;
	*out = lq_from_json(j);
	return true;
}

static bool all_space(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isspace((unsigned char)p[i]))
			return false;
	return true;
}

bool lq_is_empty(lq_value v)
{
	switch (v.kind) {
	case LV_STR:
		return v.u.s.n == 0;
	case LV_ARRAY:
	case LV_JSON:
	case LV_RANGE:
		return lq_arr_len(v) == 0;
	case LV_EMPTY:
	case LV_BLANK:
		return true;
	default:
		return false;
	}
}

bool lq_is_blank(lq_value v)
{
	switch (v.kind) {
	case LV_NIL:
		return true;
	case LV_BOOL:
		return !v.u.b;
	case LV_STR:
		return all_space(v.u.s.p, v.u.s.n);
	default:
		return lq_is_empty(v);
	}
}

/* ---- number formatting ---- */

int lq_fmt_double(char *buf, size_t cap, double d)
{
	if (isnan(d))
		return snprintf(buf, cap, "NaN");
	if (isinf(d))
		return snprintf(buf, cap, d < 0 ? "-Infinity" : "Infinity");
	if (d == 0)
		return snprintf(buf, cap, signbit(d) ? "-0.0" : "0.0");
	/* Shortest digits that round-trip, like Ruby's Float#to_s. */
	char tmp[40];
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	/* tmp = [-]D.DDDDe[+-]XX */
	const char *p = tmp;
	bool neg = false;
	if (*p == '-') {
		neg = true;
		p++;
	}
	char digits[24];
	int nd = 0;
	for (; *p && *p != 'e'; p++)
		if (isdigit((unsigned char)*p))
			digits[nd++] = *p;
	int exp10 = atoi(p + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	char *o = buf;
	size_t left = cap;
#define PUT(c) do { if (left > 1) { *o++ = (c); left--; } } while (0)
	if (neg)
		PUT('-');
	if (exp10 >= 16 || exp10 < -4) {
		PUT(digits[0]);
		PUT('.');
		if (nd > 1)
			for (int i = 1; i < nd; i++)
				PUT(digits[i]);
		else
			PUT('0');
		int n = snprintf(o, left, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
		o += n > 0 && (size_t)n < left ? n : 0;
		*o = 0;
		return (int)(o - buf);
	}
	if (exp10 < 0) {
		PUT('0');
		PUT('.');
		for (int i = 0; i < -exp10 - 1; i++)
			PUT('0');
		for (int i = 0; i < nd; i++)
			PUT(digits[i]);
	} else {
		for (int i = 0; i <= exp10; i++)
			PUT(i < nd ? digits[i] : '0');
		PUT('.');
		if (nd > exp10 + 1)
			for (int i = exp10 + 1; i < nd; i++)
				PUT(digits[i]);
		else
			PUT('0');
	}
#undef PUT
	*o = 0;
	return (int)(o - buf);
}

static void write_inspect(lq_buf *b, lq_value v);

static void write_inspect_str(lq_buf *b, const char *p, size_t n)
{
	lq_buf_putc(b, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		switch (c) {
		case '"': lq_buf_puts(b, "\\\""); break;
		case '\\': lq_buf_puts(b, "\\\\"); break;
		case '\n': lq_buf_puts(b, "\\n"); break;
		case '\t': lq_buf_puts(b, "\\t"); break;
		case '\r': lq_buf_puts(b, "\\r"); break;
		case '#':
			if (i + 1 < n && (p[i + 1] == '{' || p[i + 1] == '$' || p[i + 1] == '@'))
				lq_buf_puts(b, "\\#");
			else
				lq_buf_putc(b, '#');
			break;
		default:
			if (c < 0x20)
				lq_buf_printf(b, "\\x%02X", c);
			else
				lq_buf_putc(b, (char)c);
		}
	}
	lq_buf_putc(b, '"');
}

/* Ruby's Hash#inspect / Array#inspect forms (Ruby 3.4 hash style). */
static void write_inspect(lq_buf *b, lq_value v)
{
	switch (v.kind) {
	case LV_NIL:
		lq_buf_puts(b, "nil");
		return;
	case LV_STR:
		write_inspect_str(b, v.u.s.p, v.u.s.n);
		return;
	case LV_ARRAY:
	case LV_RANGE:
		if (v.kind == LV_RANGE) {
			lq_write(b, v);
			return;
		}
		/* fallthrough */
	case LV_JSON:
		if (lq_is_hash(v)) {
			lq_buf_putc(b, '{');
			const char *k;
			size_t klen;
			json_t *val;
			bool first = true;
			json_object_keylen_foreach(v.u.j, k, klen, val) {
				if (!first)
					lq_buf_puts(b, ", ");
				first = false;
				write_inspect_str(b, k, klen);
				lq_buf_puts(b, " => ");
				write_inspect(b, lq_from_json(val));
			}
			lq_buf_putc(b, '}');
			return;
		}
		lq_buf_putc(b, '[');
		for (size_t i = 0, n = lq_arr_len(v); i < n; i++) {
			if (i)
				lq_buf_puts(b, ", ");
			write_inspect(b, lq_arr_get(v, i));
		}
		lq_buf_putc(b, ']');
		return;
	default:
		lq_write(b, v);
	}
}

void lq_write(lq_buf *b, lq_value v)
{
	char tmp[48];
	switch (v.kind) {
	case LV_NIL:
	case LV_EMPTY:
	case LV_BLANK:
		return;
	case LV_BOOL:
		if (v.u.b)
			lq_buf_put(b, "true", 4);
		else
			lq_buf_put(b, "false", 5);
		return;
	case LV_INT: {
		/* Hand-rolled: this is on the hot path of every {{ n }}. */
		char *e = tmp + sizeof tmp, *p = e;
		uint64_t u = v.u.i < 0 ? -(uint64_t)v.u.i : (uint64_t)v.u.i;
		do {
			*--p = (char)('0' + u % 10);
			u /= 10;
		} while (u);
		if (v.u.i < 0)
			*--p = '-';
		lq_buf_put(b, p, (size_t)(e - p));
		return;
	}
	case LV_FLOAT:
		lq_buf_put(b, tmp, (size_t)lq_fmt_double(tmp, sizeof tmp, v.u.f));
		return;
	case LV_STR:
		lq_buf_put(b, v.u.s.p, v.u.s.n);
		return;
	case LV_RANGE:
		lq_buf_printf(b, "%" PRId64 "..%" PRId64, v.u.r.lo, v.u.r.hi);
		return;
	case LV_ARRAY:
		for (size_t i = 0; i < v.u.a->n; i++)
			lq_write(b, v.u.a->v[i]);
		return;
	case LV_JSON:
		if (json_is_array(v.u.j)) {
			size_t i;
			json_t *e;
			json_array_foreach(v.u.j, i, e)
				lq_write(b, lq_from_json(e));
		} else {
			write_inspect(b, v);
		}
		return;
	case LV_LOOP:
		return;
	}
}

void lq_to_str(lq_arena *a, lq_value v, const char **p, size_t *n)
{
	if (v.kind == LV_STR) {
		*p = v.u.s.p;
		*n = v.u.s.n;
		return;
	}
	if (v.kind == LV_NIL || v.kind == LV_EMPTY || v.kind == LV_BLANK || v.kind == LV_LOOP) {
		*p = "";
		*n = 0;
		return;
	}
	lq_buf tmp = {0};
	if (v.kind == LV_ARRAY || v.kind == LV_JSON)
		write_inspect(&tmp, v);
	else
		lq_write(&tmp, v);
	*p = lq_arena_strndup(a, tmp.p ? tmp.p : "", tmp.n);
	*n = tmp.n;
	lq_buf_free(&tmp);
}

/* ---- equality and ordering ---- */

static bool is_num(lq_value v) { return v.kind == LV_INT || v.kind == LV_FLOAT; }
static double num_d(lq_value v) { return v.kind == LV_INT ? (double)v.u.i : v.u.f; }

bool lq_equal(lq_value a, lq_value b)
{
	if (a.kind == LV_EMPTY || a.kind == LV_BLANK) {
		lq_value t = a;
		a = b;
		b = t;
	}
	if (b.kind == LV_EMPTY)
		return a.kind == LV_EMPTY || a.kind == LV_BLANK ? true : lq_is_empty(a) && a.kind != LV_NIL;
	if (b.kind == LV_BLANK)
		return lq_is_blank(a);
	if (is_num(a) && is_num(b)) {
		if (a.kind == LV_INT && b.kind == LV_INT)
			return a.u.i == b.u.i;
		return num_d(a) == num_d(b);
	}
	if (lq_is_array(a) && lq_is_array(b)) {
		size_t n = lq_arr_len(a);
		if (n != lq_arr_len(b))
			return false;
		for (size_t i = 0; i < n; i++)
			if (!lq_equal(lq_arr_get(a, i), lq_arr_get(b, i)))
				return false;
		return true;
	}
	if (a.kind != b.kind)
		return false;
	switch (a.kind) {
	case LV_NIL:
		return true;
	case LV_BOOL:
		return a.u.b == b.u.b;
	case LV_STR:
		return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
	case LV_JSON:
		return json_equal(a.u.j, b.u.j);
	case LV_LOOP:
		return a.u.loop == b.u.loop;
	default:
		return false;
	}
}

bool lq_compare(lq_value a, lq_value b, int *res, char *msg, size_t msgcap)
{
	if (is_num(a) && is_num(b)) {
		if (a.kind == LV_INT && b.kind == LV_INT)
			*res = a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
		else {
			double x = num_d(a), y = num_d(b);
			*res = x < y ? -1 : x > y;
		}
		return true;
	}
	if (a.kind == LV_STR && b.kind == LV_STR) {
		size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
		int c = memcmp(a.u.s.p, b.u.s.p, n);
		if (c == 0)
			c = a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
		*res = c < 0 ? -1 : c > 0;
		return true;
	}
	/* Ruby: nil, booleans, hashes have no < ; the condition is just false.
	 * String vs number raises ArgumentError. */
	if ((a.kind == LV_STR && is_num(b)) || (is_num(a) && (b.kind == LV_STR || b.kind == LV_NIL || b.kind == LV_BOOL || lq_is_array(b) || lq_is_hash(b)))) {
		char tmp[64];
		const char *shown = lq_type_name(b);
		if (is_num(b) || b.kind == LV_NIL) {
			/* Ruby names the value itself for these: "with 1 failed" */
			lq_buf t = {0};
			if (b.kind == LV_NIL)
				lq_buf_puts(&t, "nil");
			else
				lq_write(&t, b);
			snprintf(tmp, sizeof tmp, "%s", t.p);
			lq_buf_free(&t);
			shown = tmp;
		}
		snprintf(msg, msgcap, "comparison of %s with %s failed", lq_type_name(a), shown);
		return false;
	}
	if (lq_is_array(a) && lq_is_array(b)) {
		/* Array#<=> exists but Array has no < ; Ruby answers false. */
		*res = -2;
		return true;
	}
	*res = -2;
	return true;
}

const char *lq_type_name(lq_value v)
{
	switch (v.kind) {
	case LV_NIL: return "NilClass";
	case LV_BOOL: return v.u.b ? "TrueClass" : "FalseClass";
	case LV_INT: return "Integer";
	case LV_FLOAT: return "Float";
	case LV_STR: return "String";
	case LV_RANGE: return "Range";
	case LV_ARRAY: return "Array";
	case LV_JSON: return json_is_array(v.u.j) ? "Array" : "Hash";
	default: return "Object";
	}
}

/* ---- numbers ---- */

/* /\A\s*-?\d+\.\d+\s*\z/ */
static bool looks_decimal(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && isspace((unsigned char)p[i]))
		i++;
	if (i < n && p[i] == '-')
		i++;
	size_t d0 = i;
	while (i < n && isdigit((unsigned char)p[i]))
		i++;
	if (i == d0 || i >= n || p[i] != '.')
		return false;
	i++;
	size_t d1 = i;
	while (i < n && isdigit((unsigned char)p[i]))
		i++;
	if (i == d1)
		return false;
	while (i < n && isspace((unsigned char)p[i]))
		i++;
	return i == n;
}

/* Ruby String#to_i: leading whitespace, sign, digits (underscores allowed). */
static int64_t ruby_to_i(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && isspace((unsigned char)p[i]))
		i++;
	bool neg = false;
	if (i < n && (p[i] == '-' || p[i] == '+'))
		neg = p[i++] == '-';
	uint64_t v = 0;
	for (; i < n; i++) {
		if (p[i] == '_' && i + 1 < n && isdigit((unsigned char)p[i + 1]))
			continue;
		if (!isdigit((unsigned char)p[i]))
			break;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	return neg ? -(int64_t)v : (int64_t)v;
}

bool lq_f2i(double d, int64_t *out)
{
	/* 2^63 is exactly representable; anything >= it does not fit */
	if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
		return false;
	*out = (int64_t)d;
	return true;
}

int64_t lq_f2i_clamp(double d)
{
	int64_t i;
	if (lq_f2i(d, &i))
		return i;
	if (d != d)
		return 0;
	return d < 0 ? INT64_MIN : INT64_MAX;
}

lq_value lq_to_number(lq_value v)
{
	switch (v.kind) {
	case LV_INT:
	case LV_FLOAT:
		return v;
	case LV_STR:
		if (looks_decimal(v.u.s.p, v.u.s.n)) {
			char tmp[64];
			size_t n = v.u.s.n < sizeof tmp - 1 ? v.u.s.n : sizeof tmp - 1;
			memcpy(tmp, v.u.s.p, n);
			tmp[n] = 0;
			return lq_float(strtod(tmp, NULL));
		}
		return lq_int(ruby_to_i(v.u.s.p, v.u.s.n));
	default:
		return lq_int(0);
	}
}

bool lq_to_integer(lq_value v, int64_t *out)
{
	switch (v.kind) {
	case LV_INT:
		*out = v.u.i;
		return true;
	case LV_FLOAT:
		/* Ruby's Integer("1.5") would fail; we truncate instead -- no
		 * spec case tells them apart and it is kinder to marketers. */
		return lq_f2i(v.u.f, out);
	case LV_STR: {
		size_t i = 0, n = v.u.s.n;
		const char *p = v.u.s.p;
		while (i < n && isspace((unsigned char)p[i]))
			i++;
		while (n > i && isspace((unsigned char)p[n - 1]))
			n--;
		size_t s = i;
		if (i < n && (p[i] == '-' || p[i] == '+'))
			i++;
		if (i == n)
			return false;
		for (size_t k = i; k < n; k++)
			if (!isdigit((unsigned char)p[k]) && !(p[k] == '_' && k > i && k + 1 < n && isdigit((unsigned char)p[k + 1])))
				return false;
		*out = ruby_to_i(p + s, n - s);
		return true;
	}
	default:
		return false;
	}
}

/* Decimal view of a number: value = m * 10^e. */
typedef struct dec {
	__int128 m;
	int e;
} dec;

static dec dec_of(lq_value v)
{
	dec d = {0, 0};
	if (v.kind == LV_INT) {
		d.m = v.u.i;
		return d;
	}
	char tmp[40];
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v.u.f);
		if (strtod(tmp, NULL) == v.u.f)
			break;
	}
	bool neg = false;
	const char *p = tmp;
	if (*p == '-') {
		neg = true;
		p++;
	}
	int frac = 0;
	bool after = false;
	for (; *p && *p != 'e'; p++) {
		if (*p == '.') {
			after = true;
			continue;
		}
		d.m = d.m * 10 + (*p - '0');
		if (after)
			frac++;
	}
	d.e = atoi(p + 1) - frac;
	if (neg)
		d.m = -d.m;
	return d;
}

static double dec_to_double(dec d)
{
	char tmp[80];
	char *o = tmp + 60;
	*o = 0;
	bool neg = d.m < 0;
	unsigned __int128 u = neg ? -(unsigned __int128)d.m : (unsigned __int128)d.m;
	do {
		*--o = (char)('0' + (int)(u % 10));
		u /= 10;
	} while (u);
	if (neg)
		*--o = '-';
	char buf[100];
	snprintf(buf, sizeof buf, "%se%d", o, d.e);
	return strtod(buf, NULL);
}

static const __int128 LIM = (__int128)1 << 120;

static bool dec_scale(dec *d, int to_e)
{
	while (d->e > to_e) {
		if (d->m > LIM / 10 || d->m < -LIM / 10)
			return false;
		d->m *= 10;
		d->e--;
	}
	return true;
}

static int64_t floordiv(int64_t a, int64_t b)
{
	int64_t q = a / b;
	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

bool lq_arith(char op, lq_value a, lq_value b, lq_value *out)
{
	if (a.kind == LV_INT && b.kind == LV_INT) {
		int64_t x = a.u.i, y = b.u.i, r;
		switch (op) {
		case '+':
			if (__builtin_add_overflow(x, y, &r))
				break;
			*out = lq_int(r);
			return true;
		case '-':
			if (__builtin_sub_overflow(x, y, &r))
				break;
			*out = lq_int(r);
			return true;
		case '*':
			if (__builtin_mul_overflow(x, y, &r))
				break;
			*out = lq_int(r);
			return true;
		case '/':
			if (y == 0)
				return false;
			if (x == INT64_MIN && y == -1)
				break;
			*out = lq_int(floordiv(x, y));
			return true;
		case '%':
			if (y == 0)
				return false;
			if (y == -1) {
				*out = lq_int(0);
				return true;
			}
			r = x % y;
			if (r != 0 && ((r < 0) != (y < 0)))
				r += y;
			*out = lq_int(r);
			return true;
		}
		/* overflow: fall back to floats (Ruby would go to bignums) */
		a = lq_float((double)x);
		b = lq_float((double)y);
	}
	double fx = num_d(a), fy = num_d(b);
	if (!isfinite(fx) || !isfinite(fy)) {
		switch (op) {
		case '+': *out = lq_float(fx + fy); return true;
		case '-': *out = lq_float(fx - fy); return true;
		case '*': *out = lq_float(fx * fy); return true;
		case '/': *out = lq_float(fx / fy); return true;
		default: *out = lq_float(fmod(fx, fy)); return true;
		}
	}
	dec x = dec_of(a), y = dec_of(b), r;
	switch (op) {
	case '+':
	case '-': {
		int e = x.e < y.e ? x.e : y.e;
		if (!dec_scale(&x, e) || !dec_scale(&y, e))
			break;
		r.m = op == '+' ? x.m + y.m : x.m - y.m;
		r.e = e;
		*out = lq_float(dec_to_double(r));
		return true;
	}
	case '*': {
		__int128 lim = (__int128)1 << 62;
		if (x.m > lim || x.m < -lim || y.m > lim || y.m < -lim)
			break;
		r.m = x.m * y.m;
		r.e = x.e + y.e;
		*out = lq_float(dec_to_double(r));
		return true;
	}
	case '/': {
		if (y.m == 0) {
			/* BigDecimal: x/0 is Infinity (or NaN for 0/0) for floats */
			*out = lq_float(x.m == 0 ? NAN : (x.m > 0) == true ? INFINITY : -INFINITY);
			return true;
		}
		/* Long division to ~20 significant digits. */
		__int128 num = x.m, den = y.m;
		int e = x.e - y.e;
		bool neg = (num < 0) != (den < 0);
		if (num < 0) num = -num;
		if (den < 0) den = -den;
		__int128 q = 0;
		int digits = 0;
		__int128 rem = num;
		q = rem / den;
		rem %= den;
		__int128 tq = q;
		while (tq) {
			digits++;
			tq /= 10;
		}
		while (rem && digits < 24) {
			rem *= 10;
			q = q * 10 + rem / den;
			rem %= den;
			e--;
			if (q)
				digits++;
		}
		r.m = neg ? -q : q;
		r.e = e;
		*out = lq_float(dec_to_double(r));
		return true;
	}
	case '%': {
		if (y.m == 0)
			return false;
		int e = x.e < y.e ? x.e : y.e;
		if (!dec_scale(&x, e) || !dec_scale(&y, e))
			break;
		__int128 m = x.m % y.m;
		if (m != 0 && ((m < 0) != (y.m < 0)))
			m += y.m;
		r.m = m;
		r.e = e;
		*out = lq_float(dec_to_double(r));
		return true;
	}
	}
	/* Too large for the decimal path: plain doubles. */
	switch (op) {
	case '+': *out = lq_float(fx + fy); return true;
	case '-': *out = lq_float(fx - fy); return true;
	case '*': *out = lq_float(fx * fy); return true;
	case '/': *out = lq_float(fx / fy); return true;
	default:
		if (fy == 0)
			return false;
		double m = fmod(fx, fy);
		if (m != 0 && ((m < 0) != (fy < 0)))
			m += fy;
		*out = lq_float(m);
		return true;
	}
}
