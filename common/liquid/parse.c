/*
 * parse.c -- Liquid template parser: source -> compiled tree (ast.h).
 *
 * Pass 1 (tokenize) splits the source into text, {{ output }} and
 * {% tag %} tokens with their line numbers, applies whitespace control
 * ({{- -}} {%- -%}) and keeps {% raw %} bodies verbatim.  Pass 2
 * (parse_body) builds blocks recursively: a body ends at a tag it does not
 * know as a tag of its own (else, elsif, when, end*), which the enclosing
 * block tag checks.  {% liquid %} markup is re-tokenized line by line and
 * parsed into the enclosing body.
 *
 * Like Ruby Liquid, a block whose bodies hold only whitespace and "blank"
 * tags (assign, capture, comment, ...) drops its whitespace text, so
 * `{% if x %}\n  {% assign y = 1 %}\n{% endif %}` renders nothing.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "parse.h"

const liquid_limits liquid_default_limits = {
	.max_template_size = 1u << 20,
	.max_output_size = 8u << 20,
	.max_loop_iterations = 10000000,
	.max_depth = 100,
	.max_render_memory = 16u << 20,
	.render_score_limit = 50000000,
	.cumulative_render_score_limit = 0,
};

bool lq_parse_fail(lq_parser *ps, const char *fmt, ...)
{
	liquid_error *e = ps->err;
	if (e->kind != LIQUID_ERR_NONE)
		return false; /* keep the first error */
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	e->kind = LIQUID_ERR_PARSE;
	e->line = ps->line;
	e->column = ps->col;
	snprintf(e->partial, sizeof e->partial, "%s", ps->name ? ps->name : "");
	if (ps->name && *ps->name)
		snprintf(e->message, sizeof e->message, "Liquid syntax error (%s line %d): %s", ps->name, ps->line, msg);
	else
		snprintf(e->message, sizeof e->message, "Liquid syntax error (line %d): %s", ps->line, msg);
	return false;
}

/* ---- pass 1: tokens ---- */

enum { TT_TEXT, TT_VAR, TT_TAG };

typedef struct ttok {
	uint8_t type;
	bool trim_l, trim_r;
	const char *full;  /* whole token including delimiters */
	size_t fulln;
	const char *name;  /* TT_TAG: tag name */
	size_t namen;
	const char *m;     /* markup (inside delimiters, trim marks removed) */
	size_t mn;
	int line;          /* line of the token start */
	int col;           /* column of the token start */
} ttok;

typedef struct tvec {
	ttok *t;
	size_t n, cap;
} tvec;

static ttok *tpush(tvec *v)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 64;
		v->t = hr_realloc(v->t, v->cap * sizeof *v->t);
	}
	ttok *t = &v->t[v->n++];
	memset(t, 0, sizeof *t);
	return t;
}

static bool ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static void split_tag(ttok *t)
{
	const char *p = t->m, *e = t->m + t->mn;
	while (p < e && ws(*p))
		p++;
	const char *ns = p;
	if (p < e && *p == '#')
		p++;
	else
		while (p < e && (isalnum((unsigned char)*p) || *p == '_'))
			p++;
	t->name = ns;
	t->namen = (size_t)(p - ns);
	while (p < e && ws(*p))
		p++;
	t->m = p;
	t->mn = (size_t)(e - p);
}

/* Find "{%-? endraw -?%}" at or after p; returns its start or NULL. */
static const char *find_endraw(const char *p, const char *e, const char **after)
{
	while (p < e) {
		const char *q = memchr(p, '{', (size_t)(e - p));
		if (!q || q + 1 >= e)
			return NULL;
		if (q[1] == '%') {
			const char *r = q + 2;
			if (r < e && *r == '-')
				r++;
			while (r < e && ws(*r))
				r++;
			if ((size_t)(e - r) >= 6 && memcmp(r, "endraw", 6) == 0) {
				r += 6;
				while (r < e && ws(*r))
					r++;
				if (r < e && *r == '-')
					r++;
				if (r + 1 < e && r[0] == '%' && r[1] == '}') {
					*after = r + 2;
					return q;
				}
			}
		}
		p = q + 1;
	}
	return NULL;
}

static int count_nl(const char *p, const char *e)
{
	int n = 0;
	for (; p < e; p++)
		n += *p == '\n';
	return n;
}

static bool tokenize(lq_parser *ps, const char *src, size_t len, tvec *out)
{
	const char *p = src, *e = src + len, *line_at = src, *bol = src;
	int line = 1;
	while (p < e) {
		const char *q = p;
		for (;;) {
			q = memchr(q, '{', (size_t)(e - q));
			if (!q || q + 1 >= e || q[1] == '{' || q[1] == '%')
				break;
			q++;
		}
		if (!q || q + 1 >= e)
			q = e;
		if (q > p) {
			ttok *t = tpush(out);
			t->type = TT_TEXT;
			t->full = t->m = p;
			t->fulln = t->mn = (size_t)(q - p);
			t->line = line;
		}
		for (const char *x = line_at; x < q; x++)
			if (*x == '\n') {
				line++;
				bol = x + 1;
			}
		line_at = q;
		if (q >= e)
			break;
		ps->line = line;
		int col = (int)(q - bol) + 1;
		if (q[1] == '{') {
			/* Ends at the first '}' not closing a '{' opened inside. */
			const char *r = NULL;
			int nest = 0;
			for (const char *x = q + 2; x < e; x++) {
				if (*x == '{')
					nest++;
				else if (*x == '}' && nest > 0)
					nest--;
				else if (*x == '}') {
					r = x;
					break;
				}
			}
			if (!r) {
				ps->line = line;
				bool ok = lq_parse_fail(ps, "Variable '{{' was not properly terminated with regexp: /\\}\\}/");
				ps->err->column = col;
				return ok;
			}
			const char *end = r + 1;
			if (end < e && *end == '}')
				end++;
			ttok *t = tpush(out);
			t->type = TT_VAR;
			t->full = q;
			t->fulln = (size_t)(end - q);
			t->m = q + 2;
			t->mn = (size_t)(r - q - 2);
			t->line = line;
			t->col = col;
			if (t->mn && t->m[0] == '-') {
				t->trim_l = true;
				t->m++;
				t->mn--;
			}
			if (t->mn && t->m[t->mn - 1] == '-') {
				t->trim_r = true;
				t->mn--;
			}
			p = end;
		} else {
			const char *r = q + 2;
			for (;;) {
				r = memchr(r, '%', (size_t)(e - r));
				if (!r || r + 1 >= e || r[1] == '}')
					break;
				r++;
			}
			if (!r || r + 1 >= e) {
				ps->line = line;
				bool ok = lq_parse_fail(ps, "Tag '{%%' was not properly terminated with regexp: /\\%%\\}/");
				ps->err->column = col;
				return ok;
			}
			ttok *t = tpush(out);
			t->type = TT_TAG;
			t->full = q;
			t->fulln = (size_t)(r + 2 - q);
			t->m = q + 2;
			t->mn = (size_t)(r - q - 2);
			t->line = line;
			t->col = col;
			if (t->mn && t->m[0] == '-') {
				t->trim_l = true;
				t->m++;
				t->mn--;
			}
			if (t->mn && t->m[t->mn - 1] == '-') {
				t->trim_r = true;
				t->mn--;
			}
			split_tag(t);
			p = r + 2;
			if (t->namen == 3 && memcmp(t->name, "raw", 3) == 0) {
				/* Raw body: verbatim up to {% endraw %}. */
				const char *after;
				const char *er = find_endraw(p, e, &after);
				if (!er) {
					ps->line = line;
					return lq_parse_fail(ps, "'raw' tag was never closed");
				}
				ttok *body = tpush(out);
				body->type = TT_TEXT;
				body->full = body->m = p;
				body->fulln = body->mn = (size_t)(er - p);
				body->line = line;
				ttok *end = tpush(out);
				end->type = TT_TAG;
				end->full = er;
				end->fulln = (size_t)(after - er);
				end->m = er + 2;
				end->mn = (size_t)(after - 2 - end->m);
				if (end->mn && end->m[0] == '-') {
					end->trim_l = true;
					end->m++;
					end->mn--;
				}
				if (end->mn && end->m[end->mn - 1] == '-') {
					end->trim_r = true;
					end->mn--;
				}
				split_tag(end);
				end->line = line + count_nl(p, er);
				/* Ruby keeps raw bodies untouched by {%- -%} of the raw tag itself. */
				body->trim_l = true;
				p = after;
			}
		}
	}
	/* Whitespace control: trim the neighbouring text. */
	for (size_t i = 0; i < out->n; i++) {
		ttok *t = &out->t[i];
		if (t->type == TT_TEXT)
			continue;
		if (t->trim_l && i > 0 && out->t[i - 1].type == TT_TEXT && !out->t[i - 1].trim_r) {
			ttok *x = &out->t[i - 1];
			while (x->mn && ws(x->m[x->mn - 1]))
				x->mn--;
		}
		if (t->trim_r && i + 1 < out->n && out->t[i + 1].type == TT_TEXT && !out->t[i + 1].trim_l) {
			ttok *x = &out->t[i + 1];
			while (x->mn && ws(x->m[0])) {
				x->m++;
				x->mn--;
			}
		}
	}
	return true;
}

/* ---- pass 2: blocks ---- */

typedef struct nvec {
	lq_node *v;
	size_t n, cap;
} nvec;

static lq_node *npush(nvec *v)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 16;
		v->v = hr_realloc(v->v, v->cap * sizeof *v->v);
	}
	lq_node *n = &v->v[v->n++];
	memset(n, 0, sizeof *n);
	return n;
}

typedef struct pst {
	lq_parser *ps;
	ttok *t;
	size_t n, i;
	bool in_liquid;   /* tokens come from a {% liquid %} tag */
} pst;

/* The tag a body stopped at (else, endif, ...), or name == NULL at the end. */
typedef struct stop {
	const char *name;
	size_t namen;
	const char *m;
	size_t mn;
	int line;
	int col;
} stop;

static bool parse_body(pst *st, nvec *out, bool *blank, stop *s);

static bool name_is(const char *p, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(p, w, n) == 0;
}

static void finish_block(lq_parser *ps, nvec *v, lq_block *b, bool drop_blank_text)
{
	size_t k = 0;
	for (size_t i = 0; i < v->n; i++) {
		if (drop_blank_text && v->v[i].kind == N_TEXT)
			continue;
		if (v->v[i].kind == N_TEXT && v->v[i].u.text.n == 0)
			continue;
		v->v[k++] = v->v[i];
	}
	b->n = (uint32_t)k;
	b->nodes = k ? lq_arena_alloc(ps->a, k * sizeof(lq_node)) : NULL;
	if (k)
		memcpy(b->nodes, v->v, k * sizeof(lq_node));
	hr_free(v->v);
	v->v = NULL;
	v->n = v->cap = 0;
}

static bool open_block(lq_parser *ps)
{
	if (ps->depth >= ps->lim->max_depth)
		return lq_parse_fail(ps, "Nesting too deep");
	ps->depth++;
	return true;
}

static bool never_closed(lq_parser *ps, const char *tag)
{
	return lq_parse_fail(ps, "'%s' tag was never closed", tag);
}

static bool bad_delim(lq_parser *ps, const stop *s, const char *block, const char *delim)
{
	ps->line = s->line;
	ps->col = s->col;
	if (name_is(s->name, s->namen, "else"))
		return lq_parse_fail(ps, "%s tag does not expect 'else' tag", block);
	if (s->namen > 3 && memcmp(s->name, "end", 3) == 0)
		return lq_parse_fail(ps, "'%.*s' is not a valid delimiter for %s tags. use %s", (int)s->namen, s->name, block, delim);
	return lq_parse_fail(ps, "Unknown tag '%.*s'", (int)s->namen, s->name);
}

static bool markup_lex(lq_parser *ps, lq_lex *lx, const char *m, size_t n)
{
	return lq_lex_init(lx, ps, m, n);
}

static bool expect_end(lq_lex *lx)
{
	if (lx->tok.type == T_EOS || !lx->strict)
		return true;
	return lq_lex_expect(lx, T_EOS, NULL);
}

/* {% if %} / {% unless %} */
static bool tag_if(pst *st, lq_node *node, const ttok *t, bool unless, bool *blank)
{
	lq_parser *ps = st->ps;
	const char *tagname = unless ? "unless" : "if";
	const char *endname = unless ? "endunless" : "endif";
	lq_branch br[64];
	size_t nbr = 0;
	nvec bodies[64];
	memset(bodies, 0, sizeof bodies);
	const char *m = t->m;
	size_t mn = t->mn;
	bool is_else = false;
	bool allblank = true;
	if (!open_block(ps))
		return false;
	for (;;) {
		if (nbr >= 64) {
			lq_parse_fail(ps, "Too many elsif branches");
			goto fail;
		}
		lq_branch *b = &br[nbr];
		memset(b, 0, sizeof *b);
		if (!is_else) {
			lq_lex lx;
			if (!markup_lex(ps, &lx, m, mn))
				goto fail;
			if (lx.tok.type == T_EOS) {
				lq_parse_fail(ps, "Syntax Error in tag '%s' - Valid syntax: %s [expression]", tagname, tagname);
				goto fail;
			}
			if (!lq_parse_condition(&lx, &b->cond) || !expect_end(&lx))
				goto fail;
			b->negate = unless && nbr == 0;
		}
		stop s;
		bool bb = true;
		if (!parse_body(st, &bodies[nbr], &bb, &s))
			goto fail;
		allblank &= bb;
		nbr++;
		if (!s.name) {
			never_closed(ps, tagname);
			goto fail;
		}
		ps->line = s.line;
		if (name_is(s.name, s.namen, endname))
			break;
		if (name_is(s.name, s.namen, "elsif") && !is_else) {
			m = s.m;
			mn = s.mn;
			continue;
		}
		if (name_is(s.name, s.namen, "else") && !is_else) {
			is_else = true;
			continue;
		}
		if (is_else && (name_is(s.name, s.namen, "else") || name_is(s.name, s.namen, "elsif"))) {
			/* Ruby ignores a second else/elsif after else in lax mode. */
			if (ps->mode == LIQUID_STRICT) {
				bad_delim(ps, &s, tagname, endname);
				goto fail;
			}
			nvec junk = {0};
			bool jb = true;
			stop s2;
			lq_block jbk;
			if (!parse_body(st, &junk, &jb, &s2)) {
				hr_free(junk.v);
				goto fail;
			}
			finish_block(ps, &junk, &jbk, false);
			if (!s2.name) {
				never_closed(ps, tagname);
				goto fail;
			}
			if (name_is(s2.name, s2.namen, endname))
				break;
			bad_delim(ps, &s2, tagname, endname);
			goto fail;
		}
		bad_delim(ps, &s, tagname, endname);
		goto fail;
	}
	ps->depth--;
	node->kind = N_IF;
	node->u.cond.n = (uint32_t)nbr;
	node->u.cond.br = lq_arena_alloc(ps->a, nbr * sizeof(lq_branch));
	for (size_t i = 0; i < nbr; i++) {
		finish_block(ps, &bodies[i], &br[i].body, allblank);
		node->u.cond.br[i] = br[i];
	}
	*blank = allblank;
	return true;
fail:
	for (size_t i = 0; i < 64; i++)
		hr_free(bodies[i].v);
	return false;
}

static bool tag_case(pst *st, lq_node *node, const ttok *t, bool *blank)
{
	lq_parser *ps = st->ps;
	lq_lex lx;
	if (!markup_lex(ps, &lx, t->m, t->mn))
		return false;
	if (lx.tok.type == T_EOS)
		return lq_parse_fail(ps, "Syntax Error in tag 'case' - Valid syntax: case [condition]");
	if (!lq_parse_expr(&lx, &node->u.kase.subject))
		return false;
	if (!expect_end(&lx))
		return false;
	if (!open_block(ps))
		return false;
	/* Content before the first when is parsed and dropped. */
	nvec junk = {0};
	bool jb = true;
	stop s;
	if (!parse_body(st, &junk, &jb, &s)) {
		hr_free(junk.v);
		return false;
	}
	lq_block jbk;
	finish_block(ps, &junk, &jbk, false);
	lq_when w[256];
	size_t nw = 0;
	nvec bodies[128];
	lq_block *blocks[128];
	size_t nb = 0;
	bool allblank = true, seen_else = false;
	memset(bodies, 0, sizeof bodies);
	for (;;) {
		if (!s.name) {
			never_closed(ps, "case");
			goto fail;
		}
		ps->line = s.line;
		if (name_is(s.name, s.namen, "endcase"))
			break;
		bool is_when = name_is(s.name, s.namen, "when");
		bool is_else = name_is(s.name, s.namen, "else");
		if (!is_when && !is_else) {
			bad_delim(ps, &s, "case", "endcase");
			goto fail;
		}
		if (nb >= 128) {
			lq_parse_fail(ps, "Too many when branches");
			goto fail;
		}
		size_t bi = nb++;
		blocks[bi] = lq_arena_zalloc(ps->a, sizeof(lq_block));
		if (is_when) {
			lq_lex wl;
			if (!markup_lex(ps, &wl, s.m, s.mn))
				goto fail;
			for (;;) {
				if (nw >= 256) {
					lq_parse_fail(ps, "Too many when values");
					goto fail;
				}
				if (!lq_parse_expr(&wl, &w[nw].value))
					goto fail;
				w[nw].body = blocks[bi];
				nw++;
				if (wl.tok.type == T_COMMA || lq_lex_is_id(&wl, "or")) {
					if (!lq_lex_next(&wl))
						goto fail;
					continue;
				}
				if (wl.tok.type == T_EOS)
					break;
				if (wl.strict) {
					if (!lq_lex_expect(&wl, T_EOS, NULL))
						goto fail;
				}
				/* lax: junk ends the list */
				break;
			}
		} else {
			if (nw >= 256) {
				lq_parse_fail(ps, "Too many when values");
				goto fail;
			}
			seen_else = true;
			w[nw].value = NULL;
			w[nw].body = blocks[bi];
			nw++;
		}
		bool bb = true;
		if (!parse_body(st, &bodies[bi], &bb, &s))
			goto fail;
		allblank &= bb;
	}
	(void)seen_else;
	ps->depth--;
	for (size_t i = 0; i < nb; i++)
		finish_block(ps, &bodies[i], blocks[i], allblank);
	node->kind = N_CASE;
	node->u.kase.n = (uint32_t)nw;
	node->u.kase.w = lq_arena_alloc(ps->a, (nw ? nw : 1) * sizeof(lq_when));
	memcpy(node->u.kase.w, w, nw * sizeof(lq_when));
	*blank = allblank;
	return true;
fail:
	for (size_t i = 0; i < 128; i++)
		hr_free(bodies[i].v);
	return false;
}

static bool tag_for(pst *st, lq_node *node, const ttok *t, bool tablerow, bool *blank)
{
	lq_parser *ps = st->ps;
	const char *tagname = tablerow ? "tablerow" : "for";
	const char *endname = tablerow ? "endtablerow" : "endfor";
	lq_lex lx;
	if (!markup_lex(ps, &lx, t->m, t->mn))
		return false;
	if (lx.tok.type != T_ID)
		return lq_parse_fail(ps, "Syntax Error in '%s loop' - Valid syntax: %s [item] in [collection]", tagname, tagname);
	node->u.loop.var = lq_arena_strndup(ps->a, lx.tok.p, lx.tok.n);
	node->u.loop.varlen = (uint32_t)lx.tok.n;
	if (!lq_lex_next(&lx))
		return false;
	if (!lq_lex_is_id(&lx, "in"))
		return lq_parse_fail(ps, "For loops require an 'in' clause");
	if (!lq_lex_next(&lx))
		return false;
	const char *cstart = lx.tok.p;
	if (!lq_parse_expr(&lx, &node->u.loop.coll))
		return false;
	const char *cend = lx.tok.type == T_EOS ? lx.end : lx.tok.p;
	while (cend > cstart && ws(cend[-1]))
		cend--;
	if (lq_lex_is_id(&lx, "reversed")) {
		node->u.loop.reversed = true;
		if (!lq_lex_next(&lx))
			return false;
	}
	while (lx.tok.type != T_EOS) {
		if (lx.tok.type == T_COMMA) {
			if (!lq_lex_next(&lx))
				return false;
			continue;
		}
		bool lim = lq_lex_is_id(&lx, "limit"), off = lq_lex_is_id(&lx, "offset");
		bool cols = tablerow && lq_lex_is_id(&lx, "cols");
		if (!lim && !off && !cols) {
			if (lq_lex_is_id(&lx, "reversed") && !tablerow) {
				node->u.loop.reversed = true;
				if (!lq_lex_next(&lx))
					return false;
				continue;
			}
			if (lx.strict)
				return lq_parse_fail(ps, "Invalid attribute in for loop. Valid attributes are limit and offset");
			if (!lq_lex_next(&lx))
				return false;
			continue;
		}
		if (!lq_lex_next(&lx))
			return false;
		if (lx.tok.type != T_COLON) {
			if (lx.strict)
				return lq_lex_expect(&lx, T_COLON, NULL);
			continue;
		}
		if (!lq_lex_next(&lx))
			return false;
		if (off && lq_lex_is_id(&lx, "continue")) {
			node->u.loop.offset_continue = true;
			if (!lq_lex_next(&lx))
				return false;
			continue;
		}
		const lq_expr *e;
		if (!lq_parse_expr(&lx, &e))
			return false;
		if (lim)
			node->u.loop.limit = e;
		else if (off)
			node->u.loop.offset = e;
		else
			node->u.loop.cols = e;
	}
	char *nm = lq_arena_alloc(ps->a, node->u.loop.varlen + (size_t)(cend - cstart) + 2);
	sprintf(nm, "%s-%.*s", node->u.loop.var, (int)(cend - cstart), cstart);
	node->u.loop.name = nm;
	if (!open_block(ps))
		return false;
	nvec body = {0}, els = {0};
	stop s;
	bool b1 = true, b2 = true;
	if (!parse_body(st, &body, &b1, &s))
		goto fail;
	if (s.name && name_is(s.name, s.namen, "else") && !tablerow) {
		if (!parse_body(st, &els, &b2, &s))
			goto fail;
	}
	if (!s.name) {
		never_closed(ps, tagname);
		goto fail;
	}
	if (!name_is(s.name, s.namen, endname)) {
		bad_delim(ps, &s, tagname, endname);
		goto fail;
	}
	ps->depth--;
	bool allblank = b1 && b2;
	finish_block(ps, &body, &node->u.loop.body, allblank && !tablerow);
	finish_block(ps, &els, &node->u.loop.else_body, allblank && !tablerow);
	node->kind = tablerow ? N_TABLEROW : N_FOR;
	*blank = allblank;
	return true;
fail:
	hr_free(body.v);
	hr_free(els.v);
	return false;
}

/* Body of a simple block tag up to its end tag. */
static bool simple_block(pst *st, const char *tagname, const char *endname, lq_block *out, bool *blank)
{
	lq_parser *ps = st->ps;
	if (!open_block(ps))
		return false;
	nvec body = {0};
	stop s;
	bool b = true;
	if (!parse_body(st, &body, &b, &s)) {
		hr_free(body.v);
		return false;
	}
	if (!s.name) {
		hr_free(body.v);
		return never_closed(ps, tagname);
	}
	if (!name_is(s.name, s.namen, endname)) {
		hr_free(body.v);
		return bad_delim(ps, &s, tagname, endname);
	}
	ps->depth--;
	finish_block(ps, &body, out, false);
	if (blank)
		*blank = b;
	return true;
}

/* {% comment %}: skip tokens up to the matching endcomment. */
static bool tag_comment(pst *st)
{
	int nest = 1;
	while (st->i < st->n) {
		ttok *t = &st->t[st->i++];
		if (t->type != TT_TAG)
			continue;
		if (name_is(t->name, t->namen, "comment"))
			nest++;
		else if (name_is(t->name, t->namen, "endcomment") && --nest == 0)
			return true;
	}
	return never_closed(st->ps, "comment");
}

static bool read_name(lq_parser *ps, const char *m, size_t mn, const char **name, uint32_t *len, const char **rest)
{
	/* Ruby: VariableSignature = /\(?[\w\-\.\[\]]\)?/ */
	const char *p = m, *e = m + mn;
	while (p < e && ws(*p))
		p++;
	const char *s = p;
	while (p < e && (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.' || *p == '[' || *p == ']' || *p == '(' || *p == ')' || *p == '\'' || *p == '"'))
		p++;
	if (p == s)
		return false;
	const char *ns = s, *ne = p;
	if (ne - ns >= 2 && (*ns == '\'' || *ns == '"') && ne[-1] == *ns) {
		ns++;
		ne--;
	}
	*name = lq_arena_strndup(ps->a, ns, (size_t)(ne - ns));
	*len = (uint32_t)(ne - ns);
	*rest = p;
	return true;
}

static bool tag_assign(lq_parser *ps, lq_node *node, const ttok *t)
{
	const char *rest;
	const char *e = t->m + t->mn;
	if (!read_name(ps, t->m, t->mn, &node->u.assign.name, &node->u.assign.namelen, &rest))
		goto bad;
	while (rest < e && ws(*rest))
		rest++;
	if (rest >= e || *rest != '=')
		goto bad;
	rest++;
	lq_lex lx;
	if (!markup_lex(ps, &lx, rest, (size_t)(e - rest)))
		return false;
	if (!lq_parse_filtered(&lx, &node->u.assign.v))
		return false;
	node->kind = N_ASSIGN;
	return true;
bad:
	return lq_parse_fail(ps, "Syntax Error in 'assign' - Valid syntax: assign [var] = [source]");
}

static bool tag_cycle(lq_parser *ps, lq_node *node, const ttok *t)
{
	lq_lex lx;
	if (!markup_lex(ps, &lx, t->m, t->mn))
		return false;
	const lq_expr *vals[256];
	size_t n = 0;
	const lq_expr *first;
	if (lx.tok.type == T_EOS)
		return lq_parse_fail(ps, "Syntax Error in 'cycle' - Valid syntax: cycle [name :] var [, var2, var3 ...]");
	if (!lq_parse_expr(&lx, &first))
		return false;
	const char *vstart = lx.tok.p;
	if (lx.tok.type == T_COLON) {
		node->u.cycle.group = first;
		if (!lq_lex_next(&lx))
			return false;
		vstart = lx.tok.p;
		if (!lq_parse_expr(&lx, &vals[n++]))
			return false;
	} else {
		vstart = t->m;
		vals[n++] = first;
	}
	while (lx.tok.type == T_COMMA) {
		if (!lq_lex_next(&lx))
			return false;
		if (n >= 256)
			return lq_parse_fail(ps, "Too many cycle values");
		if (!lq_parse_expr(&lx, &vals[n++]))
			return false;
	}
	if (!expect_end(&lx))
		return false;
	node->kind = N_CYCLE;
	node->u.cycle.n = (uint32_t)n;
	node->u.cycle.values = lq_arena_alloc(ps->a, n * sizeof(lq_expr *));
	memcpy(node->u.cycle.values, vals, n * sizeof(lq_expr *));
	if (!node->u.cycle.group) {
		/* Unnamed cycles are keyed by their value list; a list with
		 * variables is unique to this tag (Ruby keys it by object ids). */
		bool all_lit = true;
		for (size_t i = 0; i < n; i++)
			all_lit &= vals[i]->kind == EX_LIT;
		const char *e = t->m + t->mn;
		(void)vstart;
		if (all_lit) {
			lq_buf b = {0};
			for (size_t i = 0; i < n; i++) {
				lq_buf_putc(&b, '\x1f');
				lq_buf_putc(&b, (char)('0' + vals[i]->lit.kind));
				lq_write(&b, vals[i]->lit);
			}
			node->u.cycle.key = lq_arena_strndup(ps->a, b.p ? b.p : "", b.n);
			node->u.cycle.keylen = (uint32_t)b.n;
			lq_buf_free(&b);
		} else {
			char *k = lq_arena_alloc(ps->a, 32);
			int kn = snprintf(k, 32, "\x1e%u", ++ps->cycle_ids);
			node->u.cycle.key = k;
			node->u.cycle.keylen = (uint32_t)kn;
		}
		(void)e;
	}
	return true;
}

static bool tag_counter(lq_parser *ps, lq_node *node, const ttok *t, bool inc)
{
	const char *p = t->m, *e = t->m + t->mn;
	while (e > p && ws(e[-1]))
		e--;
	const char *s = p;
	while (p < e && !ws(*p))
		p++;
	if (p == s)
		return lq_parse_fail(ps, "Syntax Error in '%s' - Valid syntax: %s [var]", inc ? "increment" : "decrement", inc ? "increment" : "decrement");
	node->kind = inc ? N_INCREMENT : N_DECREMENT;
	node->u.counter.name = lq_arena_strndup(ps->a, s, (size_t)(p - s));
	node->u.counter.namelen = (uint32_t)(p - s);
	return true;
}

static bool tag_partial(lq_parser *ps, lq_node *node, const ttok *t, bool render)
{
	lq_lex lx;
	if (!markup_lex(ps, &lx, t->m, t->mn))
		return false;
	if (render && lx.tok.type != T_STR)
		return lq_parse_fail(ps, "Syntax error in tag 'render' - Template name must be a quoted string");
	if (lx.tok.type == T_EOS)
		return lq_parse_fail(ps, "Syntax error in tag '%s' - Valid syntax: %s 'name'", render ? "render" : "include", render ? "render" : "include");
	if (!lq_parse_expr(&lx, &node->u.partial.name))
		return false;
	node->kind = render ? N_RENDER : N_INCLUDE;
	lq_attr attrs[64];
	size_t na = 0;
	for (;;) {
		if (lx.tok.type == T_EOS)
			break;
		if (lx.tok.type == T_COMMA) {
			if (!lq_lex_next(&lx))
				return false;
			continue;
		}
		if ((lq_lex_is_id(&lx, "with") || lq_lex_is_id(&lx, "for")) && !node->u.partial.var && na == 0) {
			node->u.partial.is_for = lq_lex_is_id(&lx, "for");
			if (!lq_lex_next(&lx))
				return false;
			if (!lq_parse_expr(&lx, &node->u.partial.var))
				return false;
			continue;
		}
		if (lq_lex_is_id(&lx, "as") && !node->u.partial.alias) {
			if (!lq_lex_next(&lx))
				return false;
			lq_tok id;
			if (!lq_lex_expect(&lx, T_ID, &id))
				return false;
			node->u.partial.alias = lq_arena_strndup(ps->a, id.p, id.n);
			node->u.partial.aliaslen = (uint32_t)id.n;
			continue;
		}
		if (lx.tok.type == T_ID) {
			lq_tok id = lx.tok;
			if (!lq_lex_next(&lx))
				return false;
			if (lx.tok.type == T_COLON) {
				if (!lq_lex_next(&lx))
					return false;
				if (na >= 64)
					return lq_parse_fail(ps, "Too many partial arguments");
				attrs[na].name = lq_arena_strndup(ps->a, id.p, id.n);
				attrs[na].namelen = (uint32_t)id.n;
				if (!lq_parse_expr(&lx, &attrs[na].value))
					return false;
				na++;
				continue;
			}
			if (lx.strict)
				return lq_lex_expect(&lx, T_COLON, NULL);
			continue;
		}
		if (lx.strict)
			return lq_lex_expect(&lx, T_EOS, NULL);
		if (!lq_lex_next(&lx))
			return false;
	}
	node->u.partial.nattrs = (uint32_t)na;
	if (na) {
		node->u.partial.attrs = lq_arena_alloc(ps->a, na * sizeof(lq_attr));
		memcpy(node->u.partial.attrs, attrs, na * sizeof(lq_attr));
	}
	return true;
}

static bool parse_liquid_tag(pst *st, const ttok *t, nvec *out, bool *blank);

/* Parse one tag token into out (or consume it). */
static bool parse_tag(pst *st, const ttok *t, nvec *out, bool *blank, bool *is_stop)
{
	lq_parser *ps = st->ps;
	const char *nm = t->name;
	size_t nn = t->namen;
	*is_stop = false;
#define IS(w) name_is(nm, nn, w)
	if (nn == 0)
		return lq_parse_fail(ps, "Tag '%.*s' was not properly terminated with regexp: /\\%%\\}/", (int)(t->fulln > 100 ? 100 : t->fulln), t->full);
	if (IS("#"))
		return true; /* inline comment */
	if (IS("comment"))
		return tag_comment(st);
	if (IS("liquid"))
		return parse_liquid_tag(st, t, out, blank);
	if (IS("else") || IS("elsif") || IS("when") || (nn > 3 && memcmp(nm, "end", 3) == 0)) {
		*is_stop = true;
		return true;
	}
	lq_node node;
	memset(&node, 0, sizeof node);
	node.line = (uint32_t)t->line;
	bool tag_blank = false;
	if (IS("if") || IS("unless")) {
		if (!tag_if(st, &node, t, IS("unless"), &tag_blank))
			return false;
	} else if (IS("case")) {
		if (!tag_case(st, &node, t, &tag_blank))
			return false;
	} else if (IS("for") || IS("tablerow")) {
		if (!tag_for(st, &node, t, IS("tablerow"), &tag_blank))
			return false;
	} else if (IS("raw")) {
		/* tokenizer put the body as the next text token and an endraw */
		if (st->i + 1 < st->n) {
			ttok *body = &st->t[st->i];
			node.kind = N_TEXT;
			node.u.text.s = body->full;
			node.u.text.n = body->fulln;
			st->i += 2;
			tag_blank = body->fulln == 0;
		} else {
			return never_closed(ps, "raw");
		}
	} else if (IS("capture")) {
		const char *rest;
		if (!read_name(ps, t->m, t->mn, &node.u.capture.name, &node.u.capture.namelen, &rest))
			return lq_parse_fail(ps, "Syntax Error in 'capture' - Valid syntax: capture [var]");
		if (!simple_block(st, "capture", "endcapture", &node.u.capture.body, NULL))
			return false;
		node.kind = N_CAPTURE;
		tag_blank = true;
	} else if (IS("ifchanged")) {
		bool b;
		if (!simple_block(st, "ifchanged", "endifchanged", &node.u.body, &b))
			return false;
		node.kind = N_IFCHANGED;
	} else if (IS("assign")) {
		if (!tag_assign(ps, &node, t))
			return false;
		tag_blank = true;
	} else if (IS("echo")) {
		lq_lex lx;
		if (!markup_lex(ps, &lx, t->m, t->mn))
			return false;
		if (!lq_parse_filtered(&lx, &node.u.out))
			return false;
		node.kind = N_OUTPUT;
	} else if (IS("increment") || IS("decrement")) {
		if (!tag_counter(ps, &node, t, IS("increment")))
			return false;
	} else if (IS("cycle")) {
		if (!tag_cycle(ps, &node, t))
			return false;
	} else if (IS("break")) {
		node.kind = N_BREAK;
	} else if (IS("continue")) {
		node.kind = N_CONTINUE;
	} else if (IS("render") || IS("include")) {
		if (!tag_partial(ps, &node, t, IS("render")))
			return false;
	} else {
		return lq_parse_fail(ps, "Unknown tag '%.*s'", (int)nn, nm);
	}
#undef IS
	*blank &= tag_blank;
	*npush(out) = node;
	return true;
}

static bool parse_body(pst *st, nvec *out, bool *blank, stop *s)
{
	lq_parser *ps = st->ps;
	memset(s, 0, sizeof *s);
	while (st->i < st->n) {
		ttok *t = &st->t[st->i++];
		ps->line = t->line;
		ps->col = t->col;
		if (t->type == TT_TEXT) {
			if (t->mn == 0)
				continue;
			lq_node *n = npush(out);
			n->kind = N_TEXT;
			n->line = (uint32_t)t->line;
			n->u.text.s = t->m;
			n->u.text.n = t->mn;
			for (size_t k = 0; k < t->mn && *blank; k++)
				if (!ws(t->m[k]))
					*blank = false;
			continue;
		}
		if (t->type == TT_VAR) {
			lq_lex lx;
			lq_node node;
			memset(&node, 0, sizeof node);
			node.kind = N_OUTPUT;
			node.line = (uint32_t)t->line;
			if (!markup_lex(ps, &lx, t->m, t->mn))
				return false;
			if (!lq_parse_filtered(&lx, &node.u.out))
				return false;
			*npush(out) = node;
			*blank = false;
			continue;
		}
		bool is_stop;
		if (!parse_tag(st, t, out, blank, &is_stop))
			return false;
		if (is_stop) {
			s->name = t->name;
			s->namen = t->namen;
			s->m = t->m;
			s->mn = t->mn;
			s->line = t->line;
			s->col = t->col;
			return true;
		}
	}
	return true;
}

static bool parse_liquid_tag(pst *st, const ttok *t, nvec *out, bool *blank)
{
	lq_parser *ps = st->ps;
	tvec v = {0};
	const char *p = t->m, *e = t->m + t->mn;
	/* line of the markup start: tag line + newlines before the markup */
	int line = t->line + count_nl(t->full, t->m);
	while (p < e) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		const char *le = nl ? nl : e;
		const char *a = p, *b = le;
		while (a < b && ws(*a))
			a++;
		while (b > a && ws(b[-1]))
			b--;
		if (b > a) {
			ttok *x = tpush(&v);
			x->type = TT_TAG;
			x->full = a;
			x->fulln = (size_t)(b - a);
			x->m = a;
			x->mn = (size_t)(b - a);
			x->line = line;
			split_tag(x);
		}
		line++;
		p = nl ? nl + 1 : e;
	}
	pst sub = {.ps = ps, .t = v.t, .n = v.n, .i = 0, .in_liquid = true};
	stop s;
	bool ok = parse_body(&sub, out, blank, &s);
	if (ok && s.name) {
		ps->line = s.line;
		ok = lq_parse_fail(ps, "Unexpected tag '%.*s'", (int)s.namen, s.name);
	}
	hr_free(v.t);
	return ok;
}

bool liquid_parse(const char *src, size_t len, const liquid_parse_opts *opts,
		  liquid_template **out, liquid_error *err)
{
	liquid_parse_opts dflt = {0};
	if (!opts)
		opts = &dflt;
	memset(err, 0, sizeof *err);
	*out = NULL;
	liquid_template *t = hr_calloc(1, sizeof *t);
	/* the tree is about 6x the source: one block usually holds it all */
	lq_arena_init(&t->arena, len < (1u << 17) ? 1024 + 7 * len : (size_t)1 << 20);
	lq_parser ps = {
		.t = t, .a = &t->arena, .mode = opts->mode,
		.lim = opts->limits ? opts->limits : &liquid_default_limits,
		.err = err, .name = opts->name ? opts->name : "", .line = 1,
	};
	t->mode = opts->mode;
	t->name = lq_arena_strndup(&t->arena, ps.name, strlen(ps.name));
	if (ps.lim->max_template_size && len > ps.lim->max_template_size) {
		lq_parse_fail(&ps, "Template is too large (%zu bytes, limit %zu)", len, ps.lim->max_template_size);
		err->kind = LIQUID_ERR_LIMIT;
		liquid_template_free(t);
		return false;
	}
	t->src = lq_arena_strndup(&t->arena, src ? src : "", len);
	t->src_len = len;
	tvec toks = {0};
	if (!tokenize(&ps, t->src, len, &toks))
		goto fail;
	pst st = {.ps = &ps, .t = toks.t, .n = toks.n, .i = 0};
	nvec root = {0};
	bool blank = true;
	stop s;
	if (!parse_body(&st, &root, &blank, &s)) {
		hr_free(root.v);
		goto fail;
	}
	if (s.name) {
		ps.line = s.line;
		if (name_is(s.name, s.namen, "else") || (s.namen > 3 && memcmp(s.name, "end", 3) == 0) ||
		    name_is(s.name, s.namen, "elsif") || name_is(s.name, s.namen, "when"))
			lq_parse_fail(&ps, "Unexpected outer '%.*s' tag", (int)s.namen, s.name);
		else
			lq_parse_fail(&ps, "Unknown tag '%.*s'", (int)s.namen, s.name);
		hr_free(root.v);
		goto fail;
	}
	finish_block(&ps, &root, &t->root, false);
	hr_free(toks.t);
	*out = t;
	return true;
fail:
	hr_free(toks.t);
	liquid_template_free(t);
	return false;
}

bool liquid_validate(const char *src, size_t len, const liquid_parse_opts *opts, liquid_error *err)
{
	liquid_template *t;
	if (!liquid_parse(src, len, opts, &t, err))
		return false;
	liquid_template_free(t);
	return true;
}

void liquid_template_free(liquid_template *t)
{
	if (!t)
		return;
	lq_arena_free(&t->arena);
	hr_free(t);
}

size_t liquid_template_memory(const liquid_template *t)
{
	return sizeof *t + lq_arena_footprint(&t->arena);
}
