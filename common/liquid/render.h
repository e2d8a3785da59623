/*
 * render.h -- the render context shared by render.c, partial.c and filters.
 *
 * An lq_ctx is the state of rendering one template (or one isolated partial
 * for {% render %}): its variable scopes, counters, cycle registers and
 * interrupts.  The things that are per render as a whole -- output buffer,
 * arena, limits and their counters, the error -- live in the renderer and
 * are reached through ctx->rs.
 *
 * Ownership: all memory is the renderer's (arena, reusable vectors).
 * Thread safety: one thread.  Errors: lq_fail records a render error on the
 * context and returns false; callers propagate false up to the node loop,
 * which either writes the error inline (render_errors) or stops.
 */
#ifndef HERALD_LIQUID_RENDER_H
#define HERALD_LIQUID_RENDER_H

#include "ast.h"

typedef struct lq_var {
	const char *name;
	size_t len;
	lq_value v;
} lq_var;

/* A growable vector of variables (a scope, the counters, the registers). */
typedef struct lq_vars {
	lq_var *v;
	size_t n, cap;
} lq_vars;

typedef struct lq_rstate lq_rstate;

struct lq_ctx {
	lq_rstate *rs;               /* per-render state (renderer) */
	const liquid_template *tpl;  /* template being rendered (for its name) */
	lq_vars *locals;             /* block scopes (for vars, include args), stack */
	size_t locals_base;          /* first local of this context */
	lq_vars globals;             /* assign / capture scope */
	lq_vars counters;            /* increment / decrement */
	lq_vars cycles;              /* cycle positions (key -> int) */
	lq_vars for_offsets;         /* offset: continue positions */
	lq_vars ifchanged;           /* last ifchanged output */
	lq_loop *forloop;            /* innermost forloop, for parentloop */
	int interrupt;               /* 0, LQ_BREAK, LQ_CONTINUE */
	bool isolated;               /* inside {% render %}: include is not allowed */
	unsigned depth;              /* scope depth, for "Nesting too deep" */
	uint32_t line;               /* line of the node being rendered */
};

enum { LQ_BREAK = 1, LQ_CONTINUE = 2 };

bool lq_fail(lq_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Limit error for per-render memory; lq_ctx_room checks that n more bytes
 * of temporaries fit (false = limit error recorded). */
bool lq_mem_fail(lq_ctx *c);
bool lq_ctx_room(lq_ctx *c, size_t n) __attribute__((warn_unused_result));
lq_arena *lq_ctx_arena(lq_ctx *c);
int64_t lq_ctx_now(lq_ctx *c);

#endif
