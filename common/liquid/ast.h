/*
 * ast.h -- the compiled form of a Liquid template.
 *
 * The parser (parse.c, expr.c) turns source text into this tree; the
 * renderer (render.c) walks it.  Every node, expression and string of one
 * template lives in the template's arena, so a template is freed in one go
 * and is immutable after parse (safe to render from many threads).  Text
 * nodes point into the template's own copy of the source.
 *
 * Filters are resolved to function pointers at parse time, so rendering
 * never looks a filter up by name.  Variable paths are pre-split into
 * segments, and `size` / `first` / `last` are pre-classified.
 */
#ifndef HERALD_LIQUID_AST_H
#define HERALD_LIQUID_AST_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "liquid.h"
#include "value.h"

typedef struct lq_expr lq_expr;
typedef struct lq_node lq_node;
typedef struct lq_cond lq_cond;
typedef struct lq_ctx lq_ctx;

typedef enum lq_expr_kind {
	EX_LIT,   /* a literal value (lit) */
	EX_VAR,   /* a variable path */
	EX_RANGE, /* (lo..hi) with expression ends */
} lq_expr_kind;

typedef enum lq_special {
	SP_NONE = 0, /* plain key */
	SP_SIZE,     /* .size */
	SP_FIRST,    /* .first */
	SP_LAST,     /* .last */
} lq_special;

typedef struct lq_seg {
	const char *key;      /* .key or ["literal"]; NULL for a computed index */
	uint32_t keylen;      /* bytes of key */
	uint8_t special;      /* lq_special, only for dotted keys */
	const lq_expr *index; /* [expr] when key == NULL */
} lq_seg;

struct lq_expr {
	uint8_t kind;        /* lq_expr_kind */
	lq_value lit;        /* EX_LIT */
	const char *name;    /* EX_VAR: root variable name; NULL when root is [expr] */
	uint32_t namelen;    /* bytes of name */
	uint32_t nseg;       /* EX_VAR: path segments after the root */
	const lq_seg *seg;   /* the segments; seg[0] is the root [expr] when name is NULL */
	const lq_expr *lo;   /* EX_RANGE low end */
	const lq_expr *hi;   /* EX_RANGE high end */
};

/* A filter: the input is replaced by the result; false = render error (set
 * on the context with lq_fail). */
typedef bool (*lq_filter_fn)(lq_ctx *c, lq_value *v, const lq_value *args, int nargs,
			     const char *const *kwnames, const lq_value *kwargs, int nkw);

typedef struct lq_filter_call {
	lq_filter_fn fn;            /* resolved function; NULL = unknown filter (ignored) */
	const char *name;           /* for messages */
	uint16_t nargs;             /* positional arguments */
	uint16_t nkw;               /* keyword arguments */
	const lq_expr **args;       /* positional */
	const char **kwnames;       /* keyword names (NUL-terminated) */
	const lq_expr **kwargs;     /* keyword values */
} lq_filter_call;

/* An expression followed by filters: {{ x | f: a }}, assign, echo. */
typedef struct lq_filtered {
	const lq_expr *expr;
	uint32_t nfilters;
	const lq_filter_call *filters;
} lq_filtered;

typedef enum lq_cmp {
	CMP_EQ, CMP_NE, CMP_LT, CMP_GT, CMP_LE, CMP_GE, CMP_CONTAINS, CMP_NONE,
} lq_cmp;

typedef enum lq_cond_kind { CO_CMP, CO_AND, CO_OR } lq_cond_kind;

struct lq_cond {
	uint8_t kind;        /* lq_cond_kind */
	uint8_t cmp;         /* CO_CMP: lq_cmp, CMP_NONE = truthiness of l */
	const lq_expr *l, *r;
	const lq_cond *a, *b; /* CO_AND / CO_OR: a op b, evaluated right-associatively */
};

typedef struct lq_block {
	uint32_t n;          /* nodes */
	lq_node *nodes;      /* n nodes, contiguous */
} lq_block;

typedef enum lq_node_kind {
	N_TEXT, N_OUTPUT, N_IF, N_CASE, N_FOR, N_TABLEROW, N_BREAK, N_CONTINUE,
	N_ASSIGN, N_CAPTURE, N_INCREMENT, N_DECREMENT, N_CYCLE, N_RENDER,
	N_INCLUDE, N_IFCHANGED, N_ERROR,
} lq_node_kind;

typedef struct lq_branch {
	const lq_cond *cond; /* NULL = else */
	bool negate;         /* unless */
	lq_block body;
} lq_branch;

typedef struct lq_when {
	const lq_expr *value; /* NULL = else */
	const lq_block *body;
} lq_when;

typedef struct lq_attr {
	const char *name;
	uint32_t namelen;
	const lq_expr *value;
} lq_attr;

struct lq_node {
	uint8_t kind;        /* lq_node_kind */
	uint32_t line;       /* 1-based source line of the tag */
	union {
		struct { const char *s; size_t n; } text;
		lq_filtered out;                       /* N_OUTPUT */
		struct { uint32_t n; lq_branch *br; } cond; /* N_IF (unless = negate) */
		struct {
			const lq_expr *subject;
			uint32_t n;
			lq_when *w;
		} kase;
		struct {
			const char *var;            /* loop variable */
			uint32_t varlen;
			const lq_expr *coll;        /* collection */
			const lq_expr *limit;       /* NULL = none */
			const lq_expr *offset;      /* NULL = none */
			const lq_expr *cols;        /* tablerow */
			bool offset_continue;       /* offset: continue */
			bool reversed;
			const char *name;           /* "var-collection" for continue and forloop.name */
			lq_block body;
			lq_block else_body;
		} loop;
		struct { const char *name; uint32_t namelen; lq_filtered v; } assign;
		struct { const char *name; uint32_t namelen; lq_block body; } capture;
		struct { const char *name; uint32_t namelen; } counter;
		struct {
			const lq_expr *group;       /* NULL = keyed by the value list */
			const char *key;            /* register key when group is NULL */
			uint32_t keylen;
			uint32_t n;
			const lq_expr **values;
		} cycle;
		struct {
			const lq_expr *name;        /* template name expression */
			const lq_expr *var;         /* with/for expression, NULL = none */
			bool is_for;                /* for vs with */
			const char *alias;          /* as NAME, NULL = none */
			uint32_t aliaslen;
			uint32_t nattrs;
			lq_attr *attrs;
		} partial;
		lq_block body;                          /* N_IFCHANGED */
		struct { const char *msg; } error;      /* lax-mode deferred error */
	} u;
};

struct liquid_template {
	lq_arena arena;        /* owns everything below */
	lq_block root;         /* top-level nodes */
	char *src;             /* copy of the source (text nodes point here) */
	size_t src_len;
	const char *name;      /* partial name for messages, "" for top level */
	liquid_error_mode mode;
};

#endif
