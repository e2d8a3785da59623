/*
 * filters_num.c -- math filters (see filters.h).  Operands go through
 * Utils.to_number (lq_to_number); float results come from decimal
 * arithmetic (lq_arith) as Ruby's BigDecimal would give them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters.h"
#include "render.h"

static bool arith(lq_ctx *c, lq_value *v, lq_value arg, char op)
{
	lq_value a = lq_to_number(*v), b = lq_to_number(arg);
	if (!lq_arith(op, a, b, v))
		return lq_fail(c, "divided by 0");
	return true;
}

FILTER(f_plus) { return arith(c, v, ARG(0), '+'); }
FILTER(f_minus) { return arith(c, v, ARG(0), '-'); }
FILTER(f_times) { return arith(c, v, ARG(0), '*'); }
FILTER(f_divided_by) { return arith(c, v, ARG(0), '/'); }
FILTER(f_modulo) { return arith(c, v, ARG(0), '%'); }

FILTER(f_abs)
{
	lq_value n = lq_to_number(*v);
	if (n.kind == LV_INT && n.u.i == INT64_MIN)
		*v = lq_float(-(double)n.u.i);
	else if (n.kind == LV_INT)
		*v = lq_int(n.u.i < 0 ? -n.u.i : n.u.i);
	else
		*v = lq_float(fabs(n.u.f));
	return true;
}

static bool to_int_result(lq_ctx *c, lq_value *v, double d)
{
	if (!isfinite(d))
		return lq_fail(c, "%s", isnan(d) ? "NaN" : d < 0 ? "-Infinity" : "Infinity");
	int64_t i;
	if (lq_f2i(d, &i))
		*v = lq_int(i);
	else
		*v = lq_float(d); /* Ruby would give a bignum; keep the value */
	return true;
}

FILTER(f_ceil)
{
	lq_value n = lq_to_number(*v);
	if (n.kind == LV_INT) {
		*v = n;
		return true;
	}
	return to_int_result(c, v, ceil(n.u.f));
}

FILTER(f_floor)
{
	lq_value n = lq_to_number(*v);
	if (n.kind == LV_INT) {
		*v = n;
		return true;
	}
	return to_int_result(c, v, floor(n.u.f));
}

/* Round half away from zero on the decimal digits (BigDecimal ROUND_HALF_UP). */
static double round_dec(double d, int64_t places)
{
	if (places > 15 || !isfinite(d))
		return d;
	if (places < -400)
		places = -400; /* everything rounds to 0 long before */
	char buf[64];
	/* shortest repr first, so 2.675 is "2.675", not 2.67499999 */
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	long double x = strtold(buf, NULL);
	long double scale = powl(10.0L, (long double)places);
	long double y = x * scale;
	long double r = y < 0 ? -floorl(-y + 0.5L) : floorl(y + 0.5L);
	char out[64];
	snprintf(out, sizeof out, "%.0Lfe%lld", r, (long long)-places);
	return strtod(out, NULL);
}

FILTER(f_round)
{
	lq_value n = lq_to_number(*v);
	lq_value pv = lq_to_number(ARG(0));
	int64_t places = pv.kind == LV_INT ? pv.u.i : lq_f2i_clamp(pv.u.f);
	if (n.kind == LV_INT) {
		if (places >= 0) {
			*v = n;
			return true;
		}
		double d = round_dec((double)n.u.i, places);
		*v = lq_int(lq_f2i_clamp(d));
		return true;
	}
	if (!isfinite(n.u.f))
		return lq_fail(c, "%s", isnan(n.u.f) ? "NaN" : n.u.f < 0 ? "-Infinity" : "Infinity");
	double r = round_dec(n.u.f, places);
	int64_t ri;
	if (places == 0 && lq_f2i(r, &ri))
		*v = lq_int(ri);
	else
		*v = lq_float(r);
	return true;
}

static bool clamp(lq_value *v, lq_value arg, bool least)
{
	lq_value a = lq_to_number(*v), b = lq_to_number(arg);
	double x = a.kind == LV_INT ? (double)a.u.i : a.u.f;
	double y = b.kind == LV_INT ? (double)b.u.i : b.u.f;
	if (least ? y > x : y < x)
		*v = b;
	else
		*v = a;
	return true;
}

FILTER(f_at_least) { (void)c; return clamp(v, ARG(0), true); }
FILTER(f_at_most) { (void)c; return clamp(v, ARG(0), false); }

const lq_filter_def lq_filters_num[] = {
	{"plus", f_plus},
	{"minus", f_minus},
	{"times", f_times},
	{"divided_by", f_divided_by},
	{"modulo", f_modulo},
	{"abs", f_abs},
	{"ceil", f_ceil},
	{"floor", f_floor},
	{"round", f_round},
	{"at_least", f_at_least},
	{"at_most", f_at_most},
	{NULL, NULL},
};
