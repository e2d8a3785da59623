/*
 * expr.c -- lexer for tag/output markup and the expression, filter-chain and
 * condition parsers.  See parse.h for the lax/strict contract.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "filters.h"
#include "parse.h"

const char *lq_tok_name(int type)
{
	static const char *const names[] = {
		"end_of_string", "id", "string", "number", "number", "comparison", "dotdot",
		"pipe", "dot", "colon", "comma", "open_square", "close_square", "open_round",
		"close_round", "question", "dash", "unknown",
	};
	return type >= 0 && type <= T_BAD ? names[type] : "unknown";
}

static bool is_idstart(int c) { return isalpha(c) || c == '_'; }
static bool is_idchar(int c) { return isalnum(c) || c == '_' || c == '-'; }

bool lq_lex_init(lq_lex *lx, lq_parser *ps, const char *markup, size_t n)
{
	lx->ps = ps;
	lx->start = lx->p = markup;
	lx->end = markup + n;
	lx->markup = markup;
	lx->mlen = n;
	lx->strict = ps->mode == LIQUID_STRICT;
	lx->junk = false;
	lx->nest = 0;
	lx->chain = 0;
	return lq_lex_next(lx);
}

static bool lex_fail(lq_lex *lx, const char *what, char c)
{
	return lq_parse_fail(lx->ps, "%s %c in \"%.*s\"", what, c, (int)(lx->mlen > 200 ? 200 : lx->mlen), lx->markup);
}

bool lq_lex_next(lq_lex *lx)
{
	const char *p = lx->p, *e = lx->end;
	lx->junk = false;
again:
	while (p < e && isspace((unsigned char)*p))
		p++;
	lq_tok *t = &lx->tok;
	if (p >= e) {
		t->type = T_EOS;
		t->p = p;
		t->n = 0;
		lx->p = p;
		return true;
	}
	const char *s = p;
	char c = *p;
	int type = T_BAD;
	if ((c == '=' || c == '!' || c == '<' || c == '>') ) {
		if (p + 1 < e && ((c == '=' && p[1] == '=') || (c == '!' && p[1] == '=') ||
				  (c == '<' && (p[1] == '>' || p[1] == '=')) || (c == '>' && p[1] == '='))) {
			p += 2;
			type = T_CMP;
		} else if (c == '<' || c == '>') {
			p++;
			type = T_CMP;
		}
	} else if (c == '\'' || c == '"') {
		const char *q = memchr(p + 1, c, (size_t)(e - p - 1));
		if (q) {
			t->type = T_STR;
			t->p = p + 1;
			t->n = (size_t)(q - p - 1);
			lx->p = q + 1;
			return true;
		}
	} else if (isdigit((unsigned char)c) || (c == '-' && p + 1 < e && isdigit((unsigned char)p[1]))) {
		p++;
		while (p < e && isdigit((unsigned char)*p))
			p++;
		type = T_INT;
		if (p + 1 < e && *p == '.' && isdigit((unsigned char)p[1])) {
			p++;
			while (p < e && isdigit((unsigned char)*p))
				p++;
			type = T_FLOAT;
		}
	} else if (is_idstart((unsigned char)c)) {
		p++;
		while (p < e && is_idchar((unsigned char)*p))
			p++;
		if (p < e && *p == '?')
			p++;
		type = T_ID;
		if (p - s == 8 && memcmp(s, "contains", 8) == 0)
			type = T_CMP;
	} else if (c == '.' && p + 1 < e && p[1] == '.') {
		p += 2;
		type = T_DOTDOT;
	} else {
		switch (c) {
		case '|': type = T_PIPE; break;
		case '.': type = T_DOT; break;
		case ':': type = T_COLON; break;
		case ',': type = T_COMMA; break;
		case '[': type = T_LBR; break;
		case ']': type = T_RBR; break;
		case '(': type = T_LPAR; break;
		case ')': type = T_RPAR; break;
		case '?': type = T_QUESTION; break;
		case '-': type = T_DASH; break;
		}
		if (type != T_BAD)
			p++;
	}
	if (type == T_BAD) {
		if (lx->strict) {
			lx->p = p;
			return lex_fail(lx, "Unexpected character", c);
		}
		p++; /* lax: ignore what we do not understand */
		lx->junk = true;
		goto again;
	}
	t->type = (uint8_t)type;
	t->p = s;
	t->n = (size_t)(p - s);
	lx->p = p;
	return true;
}

bool lq_lex_is_id(const lq_lex *lx, const char *id)
{
	size_t n = strlen(id);
	return lx->tok.type == T_ID && lx->tok.n == n && memcmp(lx->tok.p, id, n) == 0;
}

bool lq_lex_expect(lq_lex *lx, int type, lq_tok *out)
{
	if (lx->tok.type != type)
		return lq_parse_fail(lx->ps, "Expected %s but found %s in \"%.*s\"", lq_tok_name(type),
				     lq_tok_name(lx->tok.type), (int)(lx->mlen > 200 ? 200 : lx->mlen), lx->markup);
	if (out)
		*out = lx->tok;
	return lq_lex_next(lx);
}

lq_expr *lq_expr_lit(lq_arena *a, lq_value v)
{
	lq_expr *e = lq_arena_zalloc(a, sizeof *e);
	e->kind = EX_LIT;
	e->lit = v;
	return e;
}

static lq_value lit_number(lq_tok t)
{
	char tmp[64];
	size_t n = t.n < sizeof tmp - 1 ? t.n : sizeof tmp - 1;
	memcpy(tmp, t.p, n);
	tmp[n] = 0;
	if (t.type == T_FLOAT)
		return lq_float(strtod(tmp, NULL));
	return lq_int(strtoll(tmp, NULL, 10));
}

static uint8_t special_of(const char *p, size_t n)
{
	if (n == 4 && memcmp(p, "size", 4) == 0)
		return SP_SIZE;
	if (n == 5 && memcmp(p, "first", 5) == 0)
		return SP_FIRST;
	if (n == 4 && memcmp(p, "last", 4) == 0)
		return SP_LAST;
	return SP_NONE;
}

#define MAX_SEGS 64

static bool parse_lookups(lq_lex *lx, lq_seg *segs, uint32_t *nseg)
{
	for (;;) {
		if (lx->tok.type == T_LBR) {
			if (!lq_lex_next(lx))
				return false;
			const lq_expr *ix;
			if (lx->tok.type == T_RBR && !lx->strict) {
				ix = lq_expr_lit(lx->ps->a, lq_nil());
			} else if (!lq_parse_expr(lx, &ix))
				return false;
			if (lx->tok.type == T_RBR) {
				if (!lq_lex_next(lx))
					return false;
			} else if (lx->strict) {
				return lq_lex_expect(lx, T_RBR, NULL);
			}
			if (*nseg >= MAX_SEGS)
				return lq_parse_fail(lx->ps, "Variable path too long");
			lq_seg *s = &segs[(*nseg)++];
			memset(s, 0, sizeof *s);
			if (ix->kind == EX_LIT && ix->lit.kind == LV_STR) {
				s->key = ix->lit.u.s.p;
				s->keylen = (uint32_t)ix->lit.u.s.n;
			} else {
				s->index = ix;
			}
		} else if (lx->tok.type == T_DOT) {
			if (!lq_lex_next(lx))
				return false;
			if (lx->tok.type != T_ID) {
				if (lx->strict)
					return lq_lex_expect(lx, T_ID, NULL);
				continue; /* lax: "a..b" or "a." -- ignore the dot */
			}
			if (*nseg >= MAX_SEGS)
				return lq_parse_fail(lx->ps, "Variable path too long");
			lq_seg *s = &segs[(*nseg)++];
			memset(s, 0, sizeof *s);
			s->key = lq_arena_strndup(lx->ps->a, lx->tok.p, lx->tok.n);
			s->keylen = (uint32_t)lx->tok.n;
			s->special = special_of(lx->tok.p, lx->tok.n);
			if (!lq_lex_next(lx))
				return false;
		} else {
			return true;
		}
	}
}

static bool finish_var(lq_lex *lx, lq_expr *e, lq_seg *segs, uint32_t nseg)
{
	e->kind = EX_VAR;
	e->nseg = nseg;
	if (nseg) {
		lq_seg *s = lq_arena_alloc(lx->ps->a, nseg * sizeof *s);
		memcpy(s, segs, nseg * sizeof *s);
		e->seg = s;
	}
	return true;
}

static bool parse_expr_inner(lq_lex *lx, const lq_expr **out);

/* Nesting of [index] and (range) expressions is bounded so a hostile
 * template cannot exhaust the C stack. */
bool lq_parse_expr(lq_lex *lx, const lq_expr **out)
{
	if (lx->nest >= 64)
		return lq_parse_fail(lx->ps, "Nesting too deep in \"%.*s\"", (int)(lx->mlen > 200 ? 200 : lx->mlen), lx->markup);
	lx->nest++;
	bool ok = parse_expr_inner(lx, out);
	lx->nest--;
	return ok;
}

static bool parse_expr_inner(lq_lex *lx, const lq_expr **out)
{
	lq_arena *a = lx->ps->a;
	lq_tok t = lx->tok;
	lq_seg segs[MAX_SEGS];
	uint32_t nseg = 0;
	switch (t.type) {
	case T_STR:
		*out = lq_expr_lit(a, lq_str(lq_arena_strndup(a, t.p, t.n), t.n));
		return lq_lex_next(lx);
	case T_INT:
	case T_FLOAT: {
		/* lax: "#{1+1}" is one junk fragment in Ruby -- a variable
		 * lookup that finds nothing, not the number 1 */
		lq_value v = lx->junk ? lq_nil() : lit_number(t);
		if (!lq_lex_next(lx))
			return false;
		/* lax: "1.2.3" style junk after a number is ignored */
		*out = lq_expr_lit(a, v);
		return true;
	}
	case T_ID: {
		if (!lq_lex_next(lx))
			return false;
		bool follows = lx->tok.type == T_DOT || lx->tok.type == T_LBR;
		if (!follows) {
			static const struct { const char *w; uint8_t k; int b; } kw[] = {
				{"true", LV_BOOL, 1}, {"false", LV_BOOL, 0}, {"nil", LV_NIL, 0},
				{"null", LV_NIL, 0}, {"empty", LV_EMPTY, 0}, {"blank", LV_BLANK, 0},
			};
			for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
				if (strlen(kw[i].w) == t.n && memcmp(kw[i].w, t.p, t.n) == 0) {
					lq_value v = {.kind = kw[i].k};
					if (kw[i].k == LV_BOOL)
						v.u.b = kw[i].b;
					*out = lq_expr_lit(a, v);
					return true;
				}
			}
		}
		lq_expr *e = lq_arena_zalloc(a, sizeof *e);
		e->name = lq_arena_strndup(a, t.p, t.n);
		e->namelen = (uint32_t)t.n;
		if (!parse_lookups(lx, segs, &nseg))
			return false;
		finish_var(lx, e, segs, nseg);
		*out = e;
		return true;
	}
	case T_LBR: {
		if (!lq_lex_next(lx))
			return false;
		const lq_expr *ix;
		if (!lq_parse_expr(lx, &ix))
			return false;
		if (lx->tok.type == T_RBR) {
			if (!lq_lex_next(lx))
				return false;
		} else if (lx->strict) {
			return lq_lex_expect(lx, T_RBR, NULL);
		}
		memset(&segs[0], 0, sizeof segs[0]);
		if (ix->kind == EX_LIT && ix->lit.kind == LV_STR) {
			segs[0].key = ix->lit.u.s.p;
			segs[0].keylen = (uint32_t)ix->lit.u.s.n;
		} else {
			segs[0].index = ix;
		}
		nseg = 1;
		lq_expr *e = lq_arena_zalloc(a, sizeof *e);
		if (!parse_lookups(lx, segs, &nseg))
			return false;
		finish_var(lx, e, segs, nseg);
		*out = e;
		return true;
	}
	case T_LPAR: {
		if (!lq_lex_next(lx))
			return false;
		const lq_expr *lo, *hi;
		if (!lq_parse_expr(lx, &lo))
			return false;
		if (!lq_lex_expect(lx, T_DOTDOT, NULL))
			return false;
		if (!lq_parse_expr(lx, &hi))
			return false;
		if (!lq_lex_expect(lx, T_RPAR, NULL))
			return false;
		lq_expr *e = lq_arena_zalloc(a, sizeof *e);
		if (lo->kind == EX_LIT && hi->kind == EX_LIT && lo->lit.kind == LV_INT && hi->lit.kind == LV_INT) {
			e->kind = EX_LIT;
			e->lit.kind = LV_RANGE;
			e->lit.u.r.lo = lo->lit.u.i;
			e->lit.u.r.hi = hi->lit.u.i;
		} else {
			e->kind = EX_RANGE;
			e->lo = lo;
			e->hi = hi;
		}
		*out = e;
		return true;
	}
	default:
		if (lx->strict)
			return lq_parse_fail(lx->ps, "%s is not a valid expression in \"%.*s\"",
					     lq_tok_name(t.type), (int)(lx->mlen > 200 ? 200 : lx->mlen), lx->markup);
		/* lax: an unusable token is nil; consume it so callers progress */
		if (t.type != T_EOS && t.type != T_PIPE && !lq_lex_next(lx))
			return false;
		*out = lq_expr_lit(a, lq_nil());
		return true;
	}
}

bool lq_parse_expr_str(lq_parser *ps, const char *s, size_t n, const lq_expr **out)
{
	lq_lex lx;
	if (!lq_lex_init(&lx, ps, s, n))
		return false;
	if (!lq_parse_expr(&lx, out))
		return false;
	if (lx.strict && lx.tok.type != T_EOS)
		return lq_lex_expect(&lx, T_EOS, NULL);
	return true;
}

#define MAX_ARGS 32

static bool parse_filter_args(lq_lex *lx, lq_filter_call *fc)
{
	const lq_expr *args[MAX_ARGS], *kwv[MAX_ARGS];
	const char *kwn[MAX_ARGS];
	int na = 0, nk = 0;
	lq_arena *a = lx->ps->a;
	for (;;) {
		/* keyword argument: id ':' expr */
		bool kw = false;
		lq_tok name = lx->tok;
		if (lx->tok.type == T_ID) {
			const char *save = lx->p;
			lq_tok savet = lx->tok;
			if (!lq_lex_next(lx))
				return false;
			if (lx->tok.type == T_COLON) {
				kw = true;
				if (!lq_lex_next(lx))
					return false;
			} else {
				lx->p = save;
				lx->tok = savet;
			}
		}
		const lq_expr *e;
		if (!lq_parse_expr(lx, &e))
			return false;
		if (kw) {
			if (nk >= MAX_ARGS)
				return lq_parse_fail(lx->ps, "Too many filter arguments");
			kwn[nk] = lq_arena_strndup(a, name.p, name.n);
			kwv[nk++] = e;
		} else {
			if (na >= MAX_ARGS)
				return lq_parse_fail(lx->ps, "Too many filter arguments");
			args[na++] = e;
		}
		if (lx->tok.type == T_COMMA) {
			if (!lq_lex_next(lx))
				return false;
			continue;
		}
		if (!lx->strict && lx->tok.type != T_PIPE && lx->tok.type != T_EOS) {
			/* lax: "a: 1 2" -- skip junk up to the next separator */
			while (lx->tok.type != T_PIPE && lx->tok.type != T_EOS && lx->tok.type != T_COMMA)
				if (!lq_lex_next(lx))
					return false;
			if (lx->tok.type == T_COMMA) {
				if (!lq_lex_next(lx))
					return false;
				continue;
			}
		}
		break;
	}
	fc->nargs = (uint16_t)na;
	fc->nkw = (uint16_t)nk;
	if (na) {
		fc->args = lq_arena_alloc(a, (size_t)na * sizeof *fc->args);
		memcpy(fc->args, args, (size_t)na * sizeof *args);
	}
	if (nk) {
		fc->kwnames = lq_arena_alloc(a, (size_t)nk * sizeof *fc->kwnames);
		fc->kwargs = lq_arena_alloc(a, (size_t)nk * sizeof *fc->kwargs);
		memcpy(fc->kwnames, kwn, (size_t)nk * sizeof *kwn);
		memcpy(fc->kwargs, kwv, (size_t)nk * sizeof *kwv);
	}
	return true;
}

#define MAX_FILTERS 64

bool lq_parse_filtered(lq_lex *lx, lq_filtered *out)
{
	memset(out, 0, sizeof *out);
	lq_filter_call fcs[MAX_FILTERS];
	int nf = 0;
	if (lx->tok.type == T_EOS) {
		out->expr = lq_expr_lit(lx->ps->a, lq_nil());
		return true;
	}
	if (!lq_parse_expr(lx, &out->expr))
		return false;
	for (;;) {
		if (lx->tok.type == T_EOS)
			break;
		if (lx->tok.type != T_PIPE) {
			if (lx->strict)
				return lq_lex_expect(lx, T_EOS, NULL);
			if (!lq_lex_next(lx)) /* lax: skip junk */
				return false;
			continue;
		}
		if (!lq_lex_next(lx))
			return false;
		if (lx->tok.type != T_ID) {
			if (lx->strict)
				return lq_lex_expect(lx, T_ID, NULL);
			continue; /* lax: "||", trailing "|" */
		}
		if (nf >= MAX_FILTERS)
			return lq_parse_fail(lx->ps, "Too many filters");
		lq_filter_call *fc = &fcs[nf++];
		memset(fc, 0, sizeof *fc);
		fc->name = lq_arena_strndup(lx->ps->a, lx->tok.p, lx->tok.n);
		fc->fn = lq_filter_lookup(lx->tok.p, lx->tok.n);
		if (!lq_lex_next(lx))
			return false;
		if (lx->tok.type == T_COLON) {
			if (!lq_lex_next(lx))
				return false;
			if (lx->tok.type == T_EOS || lx->tok.type == T_PIPE) {
				if (lx->strict)
					return lq_parse_expr(lx, &out->expr);
				continue;
			}
			if (!parse_filter_args(lx, fc))
				return false;
		}
	}
	out->nfilters = (uint32_t)nf;
	if (nf) {
		lq_filter_call *f = lq_arena_alloc(lx->ps->a, (size_t)nf * sizeof *f);
		memcpy(f, fcs, (size_t)nf * sizeof *f);
		out->filters = f;
	}
	return true;
}

static int cmp_of(lq_tok t)
{
	if (t.n == 8)
		return CMP_CONTAINS;
	if (t.n == 1)
		return t.p[0] == '<' ? CMP_LT : CMP_GT;
	switch (t.p[0]) {
	case '=': return CMP_EQ;
	case '!': return CMP_NE;
	case '<': return t.p[1] == '>' ? CMP_NE : CMP_LE;
	default: return CMP_GE;
	}
}

static bool parse_comparison(lq_lex *lx, lq_cond **out)
{
	lq_cond *c = lq_arena_zalloc(lx->ps->a, sizeof *c);
	c->kind = CO_CMP;
	c->cmp = CMP_NONE;
	if (!lq_parse_expr(lx, &c->l))
		return false;
	if (lx->tok.type == T_CMP) {
		c->cmp = (uint8_t)cmp_of(lx->tok);
		if (!lq_lex_next(lx))
			return false;
		if (!lq_parse_expr(lx, &c->r))
			return false;
	}
	*out = c;
	return true;
}

static bool parse_condition_inner(lq_lex *lx, const lq_cond **out);

/* a op1 b op2 c ... evaluates as a op1 (b op2 (c ...)) in Ruby Liquid.  The
 * chain is bounded: it is a right-leaning tree walked recursively. */
bool lq_parse_condition(lq_lex *lx, const lq_cond **out)
{
	static const unsigned MAX_CHAIN = 500;
	if (lx->chain >= MAX_CHAIN)
		return lq_parse_fail(lx->ps, "Too many and/or in a condition");
	lx->chain++;
	bool ok = parse_condition_inner(lx, out);
	lx->chain--;
	return ok;
}

static bool parse_condition_inner(lq_lex *lx, const lq_cond **out)
{
	lq_cond *first;
	if (!parse_comparison(lx, &first))
		return false;
	if (lq_lex_is_id(lx, "and") || lq_lex_is_id(lx, "or")) {
		lq_cond *j = lq_arena_zalloc(lx->ps->a, sizeof *j);
		j->kind = lq_lex_is_id(lx, "and") ? CO_AND : CO_OR;
		if (!lq_lex_next(lx))
			return false;
		j->a = first;
		const lq_cond *rest;
		if (!lq_parse_condition(lx, &rest))
			return false;
		j->b = rest;
		*out = j;
		return true;
	}
	if (lx->tok.type != T_EOS) {
		if (lx->strict)
			return lq_lex_expect(lx, T_EOS, NULL);
		/* lax: ignore trailing junk, but keep looking for and/or */
		while (lx->tok.type != T_EOS && !lq_lex_is_id(lx, "and") && !lq_lex_is_id(lx, "or"))
			if (!lq_lex_next(lx))
				return false;
		if (lx->tok.type != T_EOS) {
			lq_cond *j = lq_arena_zalloc(lx->ps->a, sizeof *j);
			j->kind = lq_lex_is_id(lx, "and") ? CO_AND : CO_OR;
			if (!lq_lex_next(lx))
				return false;
			j->a = first;
			const lq_cond *rest;
			if (!lq_parse_condition(lx, &rest))
				return false;
			j->b = rest;
			*out = j;
			return true;
		}
	}
	*out = first;
	return true;
}
