/*
 * render.c -- walks a compiled template (ast.h) and writes its output.
 *
 * The renderer (liquid_renderer) is reusable: its arena is rewound and its
 * output buffer cleared at the start of each render, so a warm renderer
 * renders without touching the heap (except to compile a partial it has
 * not seen, or to grow the output past its previous high-water mark).
 *
 * Partials are compiled on first use and kept in a per-renderer cache keyed
 * by name and exact source text (so an edited snippet is recompiled); the
 * cache is emptied between renders once it holds PARTIAL_CACHE_MAX entries.
 *
 * Scopes: locals (for variables, include arguments) are a stack shared by
 * all contexts of a render; assigns, counters and cycle state belong to a
 * context.  {% render %} runs the partial in a fresh isolated context that
 * still sees the caller's data but none of its variables.
 *
 * Errors: a failing node records the error (lq_fail) and returns false.  The
 * node loop (render_block) then either writes "Liquid error (line N): ..."
 * inline and goes on (render_errors), or propagates the failure.  Limit
 * errors (output size, iterations, render score) always stop the render.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "render.h"

#define PARTIAL_CACHE_MAX 256

typedef struct pcache_ent {
	char *name;            /* partial name */
	size_t namelen;
	char *src;             /* exact source it was compiled from */
	size_t srclen;
	liquid_error_mode mode;
	liquid_template *tpl;  /* compiled partial */
} pcache_ent;

struct liquid_renderer {
	lq_arena arena;        /* per-render temporaries */
	lq_buf out;            /* output, reused */
	lq_vars locals;        /* scope stack shared by all contexts of a render */
	pcache_ent *pc;        /* compiled partials */
	size_t npc, cappc;
	size_t last_arena;     /* arena bytes used by the last render */
};

struct lq_rstate {
	liquid_renderer *r;
	const liquid_render_opts *o;
	const liquid_limits *lim;
	json_t *data;
	uint64_t iterations;   /* loop iterations so far */
	uint64_t score;        /* render score so far */
	unsigned blocks;       /* nested render_block calls (C stack guard) */
	liquid_error *err;
	bool fatal;            /* a limit error: no inline rendering, stop */
	int64_t now;
};

lq_arena *lq_ctx_arena(lq_ctx *c) { return &c->rs->r->arena; }
int64_t lq_ctx_now(lq_ctx *c) { return c->rs->now; }

static void set_error(lq_ctx *c, liquid_error_kind kind, const char *msg)
{
	liquid_error *e = c->rs->err;
	if (e->kind != LIQUID_ERR_NONE)
		return;
	e->kind = kind;
	e->line = (int)c->line;
	e->column = 0;
	const char *pn = c->tpl && c->tpl->name ? c->tpl->name : "";
	snprintf(e->partial, sizeof e->partial, "%s", pn);
	if (*pn)
		snprintf(e->message, sizeof e->message, "Liquid error (%s line %d): %s", pn, e->line, msg);
	else if (e->line)
		snprintf(e->message, sizeof e->message, "Liquid error (line %d): %s", e->line, msg);
	else
		snprintf(e->message, sizeof e->message, "Liquid error: %s", msg);
}

bool lq_fail(lq_ctx *c, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	set_error(c, LIQUID_ERR_RENDER, msg);
	return false;
}

static bool limit_fail(lq_ctx *c, const char *msg)
{
	set_error(c, LIQUID_ERR_LIMIT, msg);
	c->rs->fatal = true;
	return false;
}

bool lq_mem_fail(lq_ctx *c)
{
	return limit_fail(c, "Memory limits exceeded (render temporaries)");
}

bool lq_ctx_room(lq_ctx *c, size_t n)
{
	if (n > c->rs->lim->max_render_memory ||
	    lq_ctx_arena(c)->used_total > c->rs->lim->max_render_memory - n)
		return lq_mem_fail(c);
	return true;
}

/* ---- variables ---- */

static lq_var *vars_find(lq_vars *vs, size_t from, const char *name, size_t len)
{
	for (size_t i = vs->n; i-- > from;) {
		lq_var *v = &vs->v[i];
		if (v->len == len && memcmp(v->name, name, len) == 0)
			return v;
	}
	return NULL;
}

static void vars_push(lq_ctx *c, lq_vars *vs, const char *name, size_t len, lq_value val)
{
	if (vs->n == vs->cap) {
		size_t cap = vs->cap ? vs->cap * 2 : 16;
		lq_var *nv = lq_arena_alloc(lq_ctx_arena(c), cap * sizeof *nv);
		if (vs->n)
			memcpy(nv, vs->v, vs->n * sizeof *nv);
		vs->v = nv;
		vs->cap = cap;
	}
	lq_var *v = &vs->v[vs->n++];
	v->name = name;
	v->len = len;
	v->v = val;
}

static void vars_set(lq_ctx *c, lq_vars *vs, size_t from, const char *name, size_t len, lq_value val)
{
	lq_var *v = vars_find(vs, from, name, len);
	if (v)
		v->v = val;
	else
		vars_push(c, vs, name, len, val);
}

/* Set in the innermost scope: locals above `frame` (the scope's start). */
static void local_set(lq_ctx *c, size_t frame, const char *name, size_t len, lq_value val)
{
	vars_set(c, c->locals, frame, name, len, val);
}

static bool lookup_root(lq_ctx *c, const char *name, size_t len, lq_value *out)
{
	lq_var *v = vars_find(c->locals, c->locals_base, name, len);
	if (!v)
		v = vars_find(&c->globals, 0, name, len);
	if (!v)
		v = vars_find(&c->counters, 0, name, len);
	if (v) {
		*out = v->v;
		return true;
	}
	json_t *d = c->rs->data;
	if (d && json_is_object(d)) {
		json_t *j = json_object_getn(d, name, len);
		if (j) {
			*out = lq_from_json(j);
			return true;
		}
	}
	*out = lq_nil();
	return false;
}

static bool eval_expr(lq_ctx *c, const lq_expr *e, lq_value *out);

static lq_value loop_prop(const lq_loop *l, const char *k, size_t n, bool *found)
{
	*found = true;
#define K(w) (n == sizeof(w) - 1 && memcmp(k, w, n) == 0)
	if (K("index")) return lq_int(l->index0 + 1);
	if (K("index0")) return lq_int(l->index0);
	if (K("rindex")) return lq_int(l->length - l->index0);
	if (K("rindex0")) return lq_int(l->length - l->index0 - 1);
	if (K("first")) return lq_bool(l->index0 == 0);
	if (K("last")) return lq_bool(l->index0 == l->length - 1);
	if (K("length")) return lq_int(l->length);
	if (!l->tablerow) {
		if (K("name") && l->name) return lq_str(l->name, strlen(l->name));
		if (K("parentloop")) {
			if (!l->parent) return lq_nil();
			lq_value v = {.kind = LV_LOOP, .u.loop = l->parent};
			return v;
		}
	} else {
		if (K("col")) return lq_int(l->col0 + 1);
		if (K("col0")) return lq_int(l->col0);
		if (K("col_first")) return lq_bool(l->col0 == 0);
		if (K("col_last")) return lq_bool(l->col0 + 1 == l->cols || l->index0 == l->length - 1 ? l->col0 + 1 == l->cols : false);
		if (K("row")) return lq_int(l->row);
	}
#undef K
	*found = false;
	return lq_nil();
}

/* One step of a variable path: obj[key] / obj.key / obj.size ... */
static lq_value step(lq_ctx *c, lq_value obj, const lq_seg *s, lq_value key, bool dotted)
{
	if (obj.kind == LV_LOOP && key.kind == LV_STR) {
		bool found;
		lq_value v = loop_prop(obj.u.loop, key.u.s.p, key.u.s.n, &found);
		return v;
	}
	if (lq_is_hash(obj) && key.kind == LV_STR) {
		lq_value v;
		if (lq_hash_get(obj, key.u.s.p, key.u.s.n, &v))
			return v;
	}
	if (lq_is_array(obj) && (key.kind == LV_INT)) {
		int64_t i = key.u.i, n = (int64_t)lq_arr_len(obj);
		if (i < 0)
			i += n;
		if (i < 0 || i >= n)
			return lq_nil();
		return lq_arr_get(obj, (size_t)i);
	}
	if (!dotted || s->special == SP_NONE)
		return lq_nil();
	switch (s->special) {
	case SP_SIZE:
		if (obj.kind == LV_STR) {
			/* characters, not bytes */
			size_t n = 0;
			for (size_t i = 0; i < obj.u.s.n; i++)
				n += ((unsigned char)obj.u.s.p[i] & 0xC0) != 0x80;
			return lq_int((int64_t)n);
		}
		if (lq_is_array(obj) || lq_is_hash(obj))
			return lq_int((int64_t)lq_arr_len(obj));
		if (obj.kind == LV_INT)
			return lq_int(8); /* Ruby Integer#size */
		return lq_nil();
	case SP_FIRST:
	case SP_LAST: {
		bool first = s->special == SP_FIRST;
		if (lq_is_array(obj)) {
			size_t n = lq_arr_len(obj);
			return n ? lq_arr_get(obj, first ? 0 : n - 1) : lq_nil();
		}
		if (obj.kind == LV_STR) {
			if (!obj.u.s.n)
				return lq_str("", 0);
			if (first) {
				size_t l = 1;
				while (l < obj.u.s.n && ((unsigned char)obj.u.s.p[l] & 0xC0) == 0x80)
					l++;
				return lq_str(obj.u.s.p, l);
			}
			size_t i = obj.u.s.n - 1;
			while (i > 0 && ((unsigned char)obj.u.s.p[i] & 0xC0) == 0x80)
				i--;
			return lq_str(obj.u.s.p + i, obj.u.s.n - i);
		}
		if (lq_is_hash(obj) && first) {
			void *it = json_object_iter(obj.u.j);
			if (!it)
				return lq_nil();
			lq_array *pair = lq_array_new(lq_ctx_arena(c), 2);
			const char *k = json_object_iter_key(it);
			pair->v[0] = lq_str(k, strlen(k));
			pair->v[1] = lq_from_json(json_object_iter_value(it));
			return lq_array_value(pair);
		}
		return lq_nil();
	}
	default:
		return lq_nil();
	}
}

static bool eval_var(lq_ctx *c, const lq_expr *e, lq_value *out)
{
	lq_value obj;
	uint32_t i = 0;
	if (e->name) {
		lookup_root(c, e->name, e->namelen, &obj);
	} else {
		/* [expr] at the root: the variable named by the value */
		lq_value k;
		const lq_seg *s = &e->seg[0];
		if (s->key)
			k = lq_str(s->key, s->keylen);
		else if (!eval_expr(c, s->index, &k))
			return false;
		if (k.kind != LV_STR) {
			*out = lq_nil();
			return true;
		}
		lookup_root(c, k.u.s.p, k.u.s.n, &obj);
		i = 1;
	}
	for (; i < e->nseg; i++) {
		if (obj.kind == LV_NIL) {
			*out = obj;
			return true;
		}
		const lq_seg *s = &e->seg[i];
		lq_value k;
		bool dotted = s->special != SP_NONE || (s->key && !s->index);
		if (s->key) {
			k = lq_str(s->key, s->keylen);
		} else {
			if (!eval_expr(c, s->index, &k))
				return false;
			dotted = false;
		}
		obj = step(c, obj, s, k, dotted);
	}
	*out = obj;
	return true;
}

static bool range_end(lq_ctx *c, lq_value v, int64_t *out)
{
	switch (v.kind) {
	case LV_INT:
		*out = v.u.i;
		return true;
	case LV_NIL:
		*out = 0;
		return true;
	case LV_STR: {
		lq_value n = lq_to_number(v);
		*out = n.kind == LV_INT ? n.u.i : lq_f2i_clamp(n.u.f);
		return true;
	}
	case LV_FLOAT:
		*out = lq_f2i_clamp(v.u.f);
		return true;
	default:
		return lq_fail(c, "invalid integer");
	}
}

static bool eval_expr(lq_ctx *c, const lq_expr *e, lq_value *out)
{
	switch (e->kind) {
	case EX_LIT:
		*out = e->lit;
		return true;
	case EX_VAR:
		return eval_var(c, e, out);
	case EX_RANGE: {
		lq_value lo, hi;
		if (!eval_expr(c, e->lo, &lo) || !eval_expr(c, e->hi, &hi))
			return false;
		lq_value r = {.kind = LV_RANGE};
		if (!range_end(c, lo, &r.u.r.lo) || !range_end(c, hi, &r.u.r.hi))
			return false;
		*out = r;
		return true;
	}
	}
	*out = lq_nil();
	return true;
}

#define MAX_FARGS 32

/* noinline: its argument arrays must not sit in every recursive frame */
__attribute__((noinline)) static bool eval_filtered(lq_ctx *c, const lq_filtered *f, lq_value *out)
{
	lq_value v;
	if (!eval_expr(c, f->expr, &v))
		return false;
	for (uint32_t i = 0; i < f->nfilters; i++) {
		const lq_filter_call *fc = &f->filters[i];
		if (!fc->fn)
			continue; /* unknown filters are ignored, as in Ruby without strict_filters */
		lq_value args[MAX_FARGS], kw[MAX_FARGS];
		for (int k = 0; k < fc->nargs && k < MAX_FARGS; k++)
			if (!eval_expr(c, fc->args[k], &args[k]))
				return false;
		for (int k = 0; k < fc->nkw && k < MAX_FARGS; k++)
			if (!eval_expr(c, fc->kwargs[k], &kw[k]))
				return false;
		if (!fc->fn(c, &v, args, fc->nargs, fc->kwnames, kw, fc->nkw))
			return false;
		if (lq_ctx_arena(c)->used_total > c->rs->lim->max_render_memory)
			return lq_mem_fail(c);
	}
	*out = v;
	return true;
}

/* ---- conditions ---- */

static bool contains(lq_ctx *c, lq_value l, lq_value r)
{
	if (l.kind == LV_NIL || r.kind == LV_NIL)
		return false;
	if (l.kind == LV_STR) {
		const char *p;
		size_t n;
		lq_to_str(lq_ctx_arena(c), r, &p, &n);
		if (n == 0)
			return true;
		return memmem(l.u.s.p, l.u.s.n, p, n) != NULL;
	}
	if (lq_is_hash(l)) {
		if (r.kind != LV_STR)
			return false;
		lq_value tmp;
		return lq_hash_get(l, r.u.s.p, r.u.s.n, &tmp);
	}
	if (lq_is_array(l)) {
		size_t n = lq_arr_len(l);
		for (size_t i = 0; i < n; i++)
			if (lq_equal(lq_arr_get(l, i), r))
				return true;
	}
	return false;
}

static bool eval_cond(lq_ctx *c, const lq_cond *k, bool *res)
{
	switch (k->kind) {
	case CO_AND:
		if (!eval_cond(c, k->a, res))
			return false;
		if (!*res)
			return true;
		return eval_cond(c, k->b, res);
	case CO_OR:
		if (!eval_cond(c, k->a, res))
			return false;
		if (*res)
			return true;
		return eval_cond(c, k->b, res);
	default:
		break;
	}
	lq_value l, r;
	if (!eval_expr(c, k->l, &l))
		return false;
	if (k->cmp == CMP_NONE) {
		*res = lq_truthy(l);
		return true;
	}
	if (!eval_expr(c, k->r, &r))
		return false;
	switch (k->cmp) {
	case CMP_EQ:
		*res = lq_equal(l, r);
		return true;
	case CMP_NE:
		*res = !lq_equal(l, r);
		return true;
	case CMP_CONTAINS:
		*res = contains(c, l, r);
		return true;
	default: {
		int cmp;
		char msg[160];
		if (l.kind == LV_EMPTY || l.kind == LV_BLANK || r.kind == LV_EMPTY || r.kind == LV_BLANK) {
			*res = false;
			return true;
		}
		if (!lq_compare(l, r, &cmp, msg, sizeof msg))
			return lq_fail(c, "%s", msg);
		if (cmp == -2) {
			*res = false;
			return true;
		}
		switch (k->cmp) {
		case CMP_LT: *res = cmp < 0; break;
		case CMP_GT: *res = cmp > 0; break;
		case CMP_LE: *res = cmp <= 0; break;
		default: *res = cmp >= 0; break;
		}
		return true;
	}
	}
}

/* ---- nodes ---- */

static bool render_block(lq_ctx *c, const lq_block *b);

static bool check_output(lq_ctx *c)
{
	if (c->rs->r->out.n > c->rs->lim->max_output_size)
		return limit_fail(c, "Memory limits exceeded (output too large)");
	return true;
}

static bool push_scope(lq_ctx *c)
{
	if (c->depth + 1 > c->rs->lim->max_depth)
		return lq_fail(c, "Nesting too deep");
	c->depth++;
	return true;
}

static void pop_scope(lq_ctx *c, size_t frame)
{
	c->depth--;
	c->locals->n = frame;
}

static bool count_iteration(lq_ctx *c)
{
	if (++c->rs->iterations > c->rs->lim->max_loop_iterations)
		return limit_fail(c, "Loop iteration limit exceeded");
	return true;
}

static bool to_int_arg(lq_ctx *c, lq_value v, int64_t *out)
{
	if (!lq_to_integer(v, out))
		return lq_fail(c, "invalid integer");
	return true;
}

/* The items a for loop walks over, after offset/limit. */
typedef struct seq {
	lq_value src;     /* array-like source */
	size_t from, n;   /* window */
	bool single;      /* a lone string iterates once */
} seq;

static bool make_seq(lq_ctx *c, lq_value coll, int64_t from, bool has_to, int64_t to, seq *s)
{
	memset(s, 0, sizeof *s);
	if (lq_is_hash(coll))
		coll = lq_array_value(lq_to_array(lq_ctx_arena(c), coll));
	if (coll.kind == LV_STR) {
		if (coll.u.s.n == 0)
			return true;
		lq_array *a = lq_array_new(lq_ctx_arena(c), 1);
		a->v[0] = coll;
		coll = lq_array_value(a);
	}
	if (!lq_is_array(coll))
		return true;
	int64_t len = (int64_t)lq_arr_len(coll);
	if (from < 0)
		from = 0;
	int64_t end = has_to ? to : len;
	if (end > len)
		end = len;
	if (end < from)
		end = from;
	if (from > len)
		from = len;
	s->src = coll;
	s->from = (size_t)from;
	s->n = (size_t)(end - from);
	return true;
}

static bool render_for(lq_ctx *c, const lq_node *n)
{
	lq_value coll;
	if (!eval_expr(c, n->u.loop.coll, &coll))
		return false;
	int64_t from = 0, lim = 0;
	bool has_lim = false;
	const char *nm = n->u.loop.name;
	size_t nmlen = strlen(nm);
	if (n->u.loop.offset_continue) {
		lq_var *v = vars_find(&c->for_offsets, 0, nm, nmlen);
		from = v ? v->v.u.i : 0;
	} else if (n->u.loop.offset) {
		lq_value ov;
		if (!eval_expr(c, n->u.loop.offset, &ov))
			return false;
		if (ov.kind != LV_NIL && !to_int_arg(c, ov, &from))
			return false;
	}
	if (n->u.loop.limit) {
		lq_value lv;
		if (!eval_expr(c, n->u.loop.limit, &lv))
			return false;
		if (lv.kind != LV_NIL) {
			if (!to_int_arg(c, lv, &lim))
				return false;
			has_lim = true;
		}
	}
	seq s;
	if (!make_seq(c, coll, from, has_lim, from + lim, &s))
		return false;
	vars_set(c, &c->for_offsets, 0, nm, nmlen, lq_int((int64_t)(s.from + s.n)));
	if (s.n == 0)
		return render_block(c, &n->u.loop.else_body);
	size_t frame = c->locals->n;
	if (!push_scope(c))
		return false;
	lq_loop *loop = lq_arena_zalloc(lq_ctx_arena(c), sizeof *loop);
	loop->length = (int64_t)s.n;
	loop->name = nm;
	loop->parent = c->forloop;
	c->forloop = loop;
	lq_value lv = {.kind = LV_LOOP, .u.loop = loop};
	vars_push(c, c->locals, "forloop", 7, lv);
	size_t varslot = c->locals->n;
	vars_push(c, c->locals, n->u.loop.var, n->u.loop.varlen, lq_nil());
	bool ok = true;
	for (size_t i = 0; i < s.n; i++) {
		if (!(ok = count_iteration(c)))
			break;
		size_t k = n->u.loop.reversed ? s.from + s.n - 1 - i : s.from + i;
		loop->index0 = (int64_t)i;
		/* the body may have shadowed or added locals; restore our slots */
		c->locals->n = varslot + 1;
		c->locals->v[varslot - 1].v = lv;
		c->locals->v[varslot].v = lq_arr_get(s.src, k);
		if (!(ok = render_block(c, &n->u.loop.body)))
			break;
		if (c->interrupt) {
			int in = c->interrupt;
			c->interrupt = 0;
			if (in == LQ_BREAK)
				break;
		}
	}
	c->forloop = loop->parent;
	pop_scope(c, frame);
	return ok;
}

static bool render_tablerow(lq_ctx *c, const lq_node *n)
{
	lq_value coll;
	if (!eval_expr(c, n->u.loop.coll, &coll))
		return false;
	if (coll.kind == LV_NIL)
		return true;
	int64_t from = 0, lim = 0, cols = 0;
	bool has_lim = false, has_cols = false;
	lq_value v;
	if (n->u.loop.offset) {
		if (!eval_expr(c, n->u.loop.offset, &v))
			return false;
		if (v.kind != LV_NIL && !to_int_arg(c, v, &from))
			return false;
	}
	if (n->u.loop.limit) {
		if (!eval_expr(c, n->u.loop.limit, &v))
			return false;
		if (v.kind != LV_NIL) {
			if (!to_int_arg(c, v, &lim))
				return false;
			has_lim = true;
		}
	}
	seq s;
	if (!make_seq(c, coll, from, has_lim, from + lim, &s))
		return false;
	if (n->u.loop.cols) {
		if (!eval_expr(c, n->u.loop.cols, &v))
			return false;
		if (v.kind != LV_NIL) {
			if (!to_int_arg(c, v, &cols))
				return false;
			has_cols = true;
		}
	}
	if (!has_cols)
		cols = (int64_t)s.n;
	lq_buf *out = &c->rs->r->out;
	lq_buf_puts(out, "<tr class=\"row1\">\n");
	size_t frame = c->locals->n;
	if (!push_scope(c))
		return false;
	lq_loop *loop = lq_arena_zalloc(lq_ctx_arena(c), sizeof *loop);
	loop->tablerow = true;
	loop->length = (int64_t)s.n;
	loop->cols = cols;
	loop->row = 1;
	lq_value lv = {.kind = LV_LOOP, .u.loop = loop};
	vars_push(c, c->locals, "tablerowloop", 12, lv);
	size_t varslot = c->locals->n;
	vars_push(c, c->locals, n->u.loop.var, n->u.loop.varlen, lq_nil());
	bool ok = true;
	for (size_t i = 0; i < s.n; i++) {
		if (!(ok = count_iteration(c)))
			break;
		loop->index0 = (int64_t)i;
		c->locals->n = varslot + 1;
		c->locals->v[varslot - 1].v = lv;
		c->locals->v[varslot].v = lq_arr_get(s.src, s.from + i);
		lq_buf_printf(out, "<td class=\"col%" PRId64 "\">", loop->col0 + 1);
		if (!(ok = render_block(c, &n->u.loop.body)))
			break;
		lq_buf_puts(out, "</td>");
		int in = c->interrupt;
		c->interrupt = 0;
		if (in == LQ_BREAK)
			break;
		bool col_last = loop->col0 + 1 == loop->cols;
		if (col_last && i + 1 < s.n)
			lq_buf_printf(out, "</tr>\n<tr class=\"row%" PRId64 "\">", loop->row + 1);
		/* increment! */
		if (col_last) {
			loop->col0 = 0;
			loop->row++;
		} else {
			loop->col0++;
		}
	}
	pop_scope(c, frame);
	if (ok)
		lq_buf_puts(out, "</tr>\n");
	return ok && check_output(c);
}

static bool render_case(lq_ctx *c, const lq_node *n)
{
	lq_value subj;
	if (!eval_expr(c, n->u.kase.subject, &subj))
		return false;
	bool matched = false;
	for (uint32_t i = 0; i < n->u.kase.n; i++) {
		const lq_when *w = &n->u.kase.w[i];
		if (!w->value) {
			if (!matched && !render_block(c, w->body))
				return false;
			continue;
		}
		lq_value v;
		if (!eval_expr(c, w->value, &v))
			return false;
		if (lq_equal(subj, v)) {
			matched = true;
			if (!render_block(c, w->body))
				return false;
		}
		if (c->interrupt)
			return true;
	}
	return true;
}

static bool load_partial(lq_ctx *c, const char *name, size_t len, const liquid_template **out);
static bool render_partial_root(lq_ctx *c, const liquid_template *t);

static void base_name(const char *name, size_t len, const char **b, size_t *bl)
{
	const char *s = name;
	for (size_t i = 0; i < len; i++)
		if (name[i] == '/')
			s = name + i + 1;
	*b = s;
	*bl = len - (size_t)(s - name);
}

static bool render_include(lq_ctx *c, const lq_node *n)
{
	lq_value nv;
	if (!eval_expr(c, n->u.partial.name, &nv))
		return false;
	if (c->isolated)
		return lq_fail(c, "include usage is not allowed in this context");
	if (nv.kind != LV_STR)
		return lq_fail(c, "Argument error in tag 'include' - Illegal template name");
	const liquid_template *pt;
	if (!load_partial(c, nv.u.s.p, nv.u.s.n, &pt))
		return false;
	lq_value var;
	if (n->u.partial.var) {
		if (!eval_expr(c, n->u.partial.var, &var))
			return false;
	} else {
		lookup_root(c, nv.u.s.p, nv.u.s.n, &var);
	}
	const char *alias;
	size_t aliaslen;
	if (n->u.partial.alias) {
		alias = n->u.partial.alias;
		aliaslen = n->u.partial.aliaslen;
	} else {
		base_name(nv.u.s.p, nv.u.s.n, &alias, &aliaslen);
	}
	size_t frame = c->locals->n;
	if (!push_scope(c))
		return false;
	bool ok = true;
	for (uint32_t i = 0; i < n->u.partial.nattrs && ok; i++) {
		lq_value av;
		if ((ok = eval_expr(c, n->u.partial.attrs[i].value, &av)))
			local_set(c, frame, n->u.partial.attrs[i].name, n->u.partial.attrs[i].namelen, av);
	}
	if (ok) {
		if (var.kind == LV_ARRAY || (var.kind == LV_JSON && json_is_array(var.u.j))) {
			size_t cnt = lq_arr_len(var);
			for (size_t i = 0; i < cnt && ok && !c->interrupt; i++) {
				local_set(c, frame, alias, aliaslen, lq_arr_get(var, i));
				ok = render_partial_root(c, pt);
			}
		} else {
			local_set(c, frame, alias, aliaslen, var);
			ok = render_partial_root(c, pt);
		}
	}
	pop_scope(c, frame);
	return ok;
}

static void ctx_child(lq_ctx *parent, lq_ctx *child, const liquid_template *t)
{
	memset(child, 0, sizeof *child);
	child->rs = parent->rs;
	child->tpl = t;
	child->locals = parent->locals;
	child->locals_base = parent->locals->n;
	child->isolated = true;
	child->depth = parent->depth + 1;
	child->line = parent->line;
}

static bool render_render(lq_ctx *c, const lq_node *n)
{
	const lq_value nv = n->u.partial.name->lit;
	if (c->depth + 1 > c->rs->lim->max_depth)
		return lq_fail(c, "Nesting too deep");
	const liquid_template *pt;
	if (!load_partial(c, nv.u.s.p, nv.u.s.n, &pt))
		return false;
	const char *alias;
	size_t aliaslen;
	if (n->u.partial.alias) {
		alias = n->u.partial.alias;
		aliaslen = n->u.partial.aliaslen;
	} else {
		base_name(nv.u.s.p, nv.u.s.n, &alias, &aliaslen);
	}
	lq_value var = lq_nil();
	if (n->u.partial.var && !eval_expr(c, n->u.partial.var, &var))
		return false;
	/* arguments are evaluated in the caller's context */
	uint32_t na = n->u.partial.nattrs;
	lq_value *av = na ? lq_arena_alloc(lq_ctx_arena(c), na * sizeof *av) : NULL;
	for (uint32_t i = 0; i < na; i++)
		if (!eval_expr(c, n->u.partial.attrs[i].value, &av[i]))
			return false;
	size_t frame = c->locals->n;
	bool iter = n->u.partial.is_for && (lq_is_array(var) || lq_is_hash(var));
	lq_value items = var;
	if (iter && lq_is_hash(var))
		items = lq_array_value(lq_to_array(lq_ctx_arena(c), var));
	size_t count = iter ? lq_arr_len(items) : 1;
	lq_loop *loop = NULL;
	if (iter) {
		loop = lq_arena_zalloc(lq_ctx_arena(c), sizeof *loop);
		loop->length = (int64_t)count;
		loop->name = lq_arena_strndup(lq_ctx_arena(c), nv.u.s.p, nv.u.s.n);
	}
	bool ok = true;
	for (size_t i = 0; i < count && ok; i++) {
		if (iter && !(ok = count_iteration(c)))
			break;
		lq_ctx child;
		ctx_child(c, &child, pt);
		/* An isolated context has one scope: arguments, forloop and the
		 * partial's own assigns all live in it (so an assign can
		 * overwrite an argument, as in Ruby). */
		if (loop) {
			loop->index0 = (int64_t)i;
			lq_value lv = {.kind = LV_LOOP, .u.loop = loop};
			vars_set(c, &child.globals, 0, "forloop", 7, lv);
		}
		for (uint32_t k = 0; k < na; k++)
			vars_set(c, &child.globals, 0, n->u.partial.attrs[k].name, n->u.partial.attrs[k].namelen, av[k]);
		lq_value item = iter ? lq_arr_get(items, i) : var;
		if (item.kind != LV_NIL)
			vars_set(c, &child.globals, 0, alias, aliaslen, item);
		ok = render_block(&child, &pt->root);
		c->locals->n = frame;
		c->interrupt = 0;
	}
	return ok;
}

static bool render_partial_root(lq_ctx *c, const liquid_template *t)
{
	const liquid_template *saved = c->tpl;
	uint32_t line = c->line;
	c->tpl = t;
	bool ok = render_block(c, &t->root);
	c->tpl = saved;
	c->line = line;
	return ok;
}

static bool load_partial(lq_ctx *c, const char *name, size_t len, const liquid_template **out)
{
	liquid_renderer *r = c->rs->r;
	const liquid_render_opts *o = c->rs->o;
	const char *src = NULL;
	size_t srclen = 0;
	if (len == 0 || !o->loader || !o->loader(o->loader_ud, name, len, &src, &srclen))
		return lq_fail(c, "Could not find partial '%.*s'", (int)(len > 200 ? 200 : len), name);
	for (size_t i = 0; i < r->npc; i++) {
		pcache_ent *e = &r->pc[i];
		if (e->namelen == len && e->srclen == srclen && e->mode == o->mode &&
		    memcmp(e->name, name, len) == 0 && memcmp(e->src, src, srclen) == 0) {
			*out = e->tpl;
			return true;
		}
	}
	char pname[128];
	snprintf(pname, sizeof pname, "%.*s", (int)(len > 120 ? 120 : len), name);
	liquid_parse_opts po = {.mode = o->mode, .limits = c->rs->lim, .name = pname};
	liquid_error perr;
	liquid_template *t;
	if (!liquid_parse(src, srclen, &po, &t, &perr)) {
		/* A partial that does not compile is a render error of the caller,
		 * reported with the partial's own line. */
		liquid_error *e = c->rs->err;
		if (e->kind == LIQUID_ERR_NONE) {
			*e = perr;
			e->kind = perr.kind == LIQUID_ERR_LIMIT ? LIQUID_ERR_LIMIT : LIQUID_ERR_RENDER;
		}
		return false;
	}
	if (r->npc == r->cappc) {
		r->cappc = r->cappc ? r->cappc * 2 : 16;
		r->pc = hr_realloc(r->pc, r->cappc * sizeof *r->pc);
	}
	pcache_ent *e = &r->pc[r->npc++];
	e->name = hr_strndup(name, len);
	e->namelen = len;
	e->src = hr_malloc(srclen + 1);
	memcpy(e->src, src, srclen);
	e->src[srclen] = 0;
	e->srclen = srclen;
	e->mode = o->mode;
	e->tpl = t;
	*out = t;
	return true;
}

static bool render_cycle(lq_ctx *c, const lq_node *n)
{
	const char *key;
	size_t keylen;
	if (n->u.cycle.group) {
		lq_value g;
		if (!eval_expr(c, n->u.cycle.group, &g))
			return false;
		lq_to_str(lq_ctx_arena(c), g, &key, &keylen);
	} else {
		key = n->u.cycle.key;
		keylen = n->u.cycle.keylen;
	}
	lq_var *v = vars_find(&c->cycles, 0, key, keylen);
	int64_t it = v ? v->v.u.i : 0;
	if (it < 0 || it >= (int64_t)n->u.cycle.n)
		it = 0;
	lq_value val;
	if (!eval_expr(c, n->u.cycle.values[it], &val))
		return false;
	lq_write(&c->rs->r->out, val);
	it = it + 1 >= (int64_t)n->u.cycle.n ? 0 : it + 1;
	if (v)
		v->v = lq_int(it);
	else
		vars_push(c, &c->cycles, key, keylen, lq_int(it));
	return check_output(c);
}

static bool render_counter(lq_ctx *c, const lq_node *n, bool inc)
{
	lq_var *v = vars_find(&c->counters, 0, n->u.counter.name, n->u.counter.namelen);
	int64_t val = 0;
	if (v) {
		lq_value x = lq_to_number(v->v);
		val = x.kind == LV_INT ? x.u.i : lq_f2i_clamp(x.u.f);
	}
	if (!inc && val > INT64_MIN)
		val--;
	lq_write(&c->rs->r->out, lq_int(val));
	if (inc && val < INT64_MAX)
		val++;
	if (v)
		v->v = lq_int(val);
	else
		vars_push(c, &c->counters, n->u.counter.name, n->u.counter.namelen, lq_int(val));
	return true;
}

static bool render_node(lq_ctx *c, const lq_node *n)
{
	lq_buf *out = &c->rs->r->out;
	switch (n->kind) {
	case N_TEXT:
		lq_buf_put(out, n->u.text.s, n->u.text.n);
		return check_output(c);
	case N_OUTPUT: {
		lq_value v;
		if (!eval_filtered(c, &n->u.out, &v))
			return false;
		lq_write(out, v);
		return check_output(c);
	}
	case N_IF:
		for (uint32_t i = 0; i < n->u.cond.n; i++) {
			const lq_branch *b = &n->u.cond.br[i];
			bool ok = true;
			if (b->cond) {
				if (!eval_cond(c, b->cond, &ok))
					return false;
				if (b->negate)
					ok = !ok;
			}
			if (ok)
				return render_block(c, &b->body);
		}
		return true;
	case N_CASE:
		return render_case(c, n);
	case N_FOR:
		return render_for(c, n);
	case N_TABLEROW:
		return render_tablerow(c, n);
	case N_BREAK:
		c->interrupt = LQ_BREAK;
		return true;
	case N_CONTINUE:
		c->interrupt = LQ_CONTINUE;
		return true;
	case N_ASSIGN: {
		lq_value v;
		if (!eval_filtered(c, &n->u.assign.v, &v))
			return false;
		vars_set(c, &c->globals, 0, n->u.assign.name, n->u.assign.namelen, v);
		return true;
	}
	case N_CAPTURE: {
		/* Render into the output, then move the bytes into the arena. */
		size_t mark = out->n;
		if (!render_block(c, &n->u.capture.body))
			return false;
		size_t len = out->n - mark;
		char *s = lq_arena_strndup(lq_ctx_arena(c), out->p ? out->p + mark : "", len);
		out->n = mark;
		if (out->cap)
			out->p[mark] = 0;
		vars_set(c, &c->globals, 0, n->u.capture.name, n->u.capture.namelen, lq_str(s, len));
		return true;
	}
	case N_INCREMENT:
	case N_DECREMENT:
		return render_counter(c, n, n->kind == N_INCREMENT);
	case N_CYCLE:
		return render_cycle(c, n);
	case N_RENDER:
		return render_render(c, n);
	case N_INCLUDE:
		return render_include(c, n);
	case N_IFCHANGED: {
		size_t mark = out->n;
		if (!render_block(c, &n->u.body))
			return false;
		size_t len = out->n - mark;
		lq_var *v = vars_find(&c->ifchanged, 0, "", 0);
		if (v && v->v.u.s.n == len && memcmp(v->v.u.s.p, out->p + mark, len) == 0) {
			out->n = mark;
			if (out->cap)
				out->p[mark] = 0;
			return true;
		}
		char *s = lq_arena_strndup(lq_ctx_arena(c), out->p ? out->p + mark : "", len);
		vars_set(c, &c->ifchanged, 0, "", 0, lq_str(s, len));
		return true;
	}
	case N_ERROR:
		return lq_fail(c, "%s", n->u.error.msg);
	}
	return true;
}

static bool render_block_nodes(lq_ctx *c, const lq_block *b);

/* Blocks nest at most max_depth deep per template, but partials multiply
 * that; bound the total so the C stack is safe on worker threads. */
static bool render_block(lq_ctx *c, const lq_block *b)
{
	lq_rstate *rs = c->rs;
	if (rs->blocks >= 10u * rs->lim->max_depth)
		return limit_fail(c, "Nesting too deep");
	rs->blocks++;
	bool ok = render_block_nodes(c, b);
	rs->blocks--;
	return ok;
}

static bool render_block_nodes(lq_ctx *c, const lq_block *b)
{
	lq_rstate *rs = c->rs;
	rs->score += b->n;
	if ((rs->lim->render_score_limit && rs->score > rs->lim->render_score_limit) ||
	    (rs->lim->cumulative_render_score_limit && rs->score > rs->lim->cumulative_render_score_limit))
		return limit_fail(c, "Memory limits exceeded");
	for (uint32_t i = 0; i < b->n; i++) {
		const lq_node *n = &b->nodes[i];
		if (n->kind == N_TEXT) {
			lq_buf_put(&rs->r->out, n->u.text.s, n->u.text.n);
			if (rs->r->out.n > rs->lim->max_output_size)
				return limit_fail(c, "Memory limits exceeded (output too large)");
			continue;
		}
		c->line = n->line;
		if (rs->r->arena.used_total > rs->lim->max_render_memory)
			return lq_mem_fail(c);
		if (!render_node(c, n)) {
			if (rs->fatal || !rs->o->render_errors)
				return false;
			/* Inline error: write it where the node was and go on. */
			lq_buf_puts(&rs->r->out, rs->err->message);
			memset(rs->err, 0, sizeof *rs->err);
			if (!check_output(c))
				return false;
		}
		if (c->interrupt)
			return true;
	}
	return true;
}

/* ---- public ---- */

liquid_renderer *liquid_renderer_new(void)
{
	liquid_renderer *r = hr_calloc(1, sizeof *r);
	lq_arena_init(&r->arena, 16384);
	return r;
}

static void pcache_clear(liquid_renderer *r)
{
	for (size_t i = 0; i < r->npc; i++) {
		hr_free(r->pc[i].name);
		hr_free(r->pc[i].src);
		liquid_template_free(r->pc[i].tpl);
	}
	r->npc = 0;
}

void liquid_renderer_free(liquid_renderer *r)
{
	if (!r)
		return;
	pcache_clear(r);
	hr_free(r->pc);
	lq_arena_free(&r->arena);
	lq_buf_free(&r->out);
	hr_free(r);
}

bool liquid_render(liquid_renderer *r, const liquid_template *t, json_t *data,
		   const liquid_render_opts *opts, liquid_error *err)
{
	liquid_render_opts dflt = {0};
	if (!opts)
		opts = &dflt;
	memset(err, 0, sizeof *err);
	lq_arena_reset(&r->arena);
	lq_buf_clear(&r->out);
	if (r->npc >= PARTIAL_CACHE_MAX)
		pcache_clear(r); /* between renders no compiled partial is in use */
	if (!r->out.cap)
		lq_buf_grow(&r->out, 4096);
	memset(&r->locals, 0, sizeof r->locals);
	lq_rstate rs = {
		.r = r, .o = opts, .lim = opts->limits ? opts->limits : &liquid_default_limits,
		.data = data, .err = err, .now = opts->now ? opts->now : (int64_t)time(NULL),
	};
	lq_ctx c;
	memset(&c, 0, sizeof c);
	c.rs = &rs;
	c.tpl = t;
	c.locals = &r->locals;
	c.depth = 1;
	bool ok = render_block(&c, &t->root);
	r->last_arena = r->arena.used_total;
	if (!ok && err->kind == LIQUID_ERR_NONE) {
		err->kind = LIQUID_ERR_RENDER;
		snprintf(err->message, sizeof err->message, "Liquid error: render failed");
	}
	return ok;
}

const char *liquid_output(const liquid_renderer *r, size_t *len)
{
	if (len)
		*len = r->out.n;
	return r->out.p ? r->out.p : "";
}

liquid_render_stats liquid_renderer_stats(const liquid_renderer *r)
{
	liquid_render_stats s = {0};
	s.arena_bytes = r->last_arena;
	s.output_bytes = r->out.n;
	s.heap_bytes = sizeof *r + lq_arena_footprint(&r->arena) + r->out.cap + r->cappc * sizeof(pcache_ent);
	for (size_t i = 0; i < r->npc; i++)
		s.heap_bytes += r->pc[i].namelen + r->pc[i].srclen + 2 + liquid_template_memory(r->pc[i].tpl);
	return s;
}
