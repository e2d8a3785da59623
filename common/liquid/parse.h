/*
 * parse.h -- internals shared by the Liquid parser's two halves.
 *
 * parse.c splits the source into text / {{ output }} / {% tag %} tokens,
 * applies whitespace control and builds the block structure; expr.c lexes
 * the markup inside one token and parses expressions, filter chains and
 * conditions.  Both allocate into the template's arena and report errors
 * through lq_parse_fail, which formats Ruby Liquid's messages
 * ("Liquid syntax error (line 3): ...").
 *
 * Lax vs strict: in strict mode any unexpected character or token is an
 * error; in lax mode the markup lexer skips characters it does not know and
 * the parser skips tokens it cannot use, as Ruby Liquid's regex parser does.
 *
 * Thread safety: a parser is used by one thread.  Errors: bool + lq_parser.err.
 */
#ifndef HERALD_LIQUID_PARSE_H
#define HERALD_LIQUID_PARSE_H

#include "ast.h"

typedef struct lq_parser {
	liquid_template *t;        /* template being built */
	lq_arena *a;               /* its arena */
	liquid_error_mode mode;
	const liquid_limits *lim;
	liquid_error *err;
	const char *name;          /* partial name for messages, "" at top */
	int line;                  /* line of the token being parsed */
	int col;                   /* its column (1-based; 0 inside {% liquid %}) */
	unsigned depth;            /* block nesting */
	unsigned cycle_ids;        /* unique keys for unnamed cycles with variables */
} lq_parser;

bool lq_parse_fail(lq_parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef enum lq_tok_type {
	T_EOS, T_ID, T_STR, T_INT, T_FLOAT, T_CMP, T_DOTDOT, T_PIPE, T_DOT, T_COLON,
	T_COMMA, T_LBR, T_RBR, T_LPAR, T_RPAR, T_QUESTION, T_DASH, T_BAD,
} lq_tok_type;

typedef struct lq_tok {
	uint8_t type;      /* lq_tok_type */
	const char *p;     /* bytes of the token (strings: without quotes) */
	size_t n;
} lq_tok;

/* Lexer over one markup string. */
typedef struct lq_lex {
	lq_parser *ps;
	const char *start, *p, *end;
	lq_tok tok;           /* current token */
	const char *markup;   /* whole markup, for "in ..." context in messages */
	size_t mlen;
	bool strict;
	bool junk;            /* lax: characters were skipped right before tok */
	unsigned nest;        /* expression nesting ([..] and (..)), bounded */
	unsigned chain;       /* and/or chain length, bounded */
} lq_lex;

bool lq_lex_init(lq_lex *lx, lq_parser *ps, const char *markup, size_t n) LQ_WUR;
bool lq_lex_next(lq_lex *lx) LQ_WUR;
bool lq_lex_is_id(const lq_lex *lx, const char *id);
const char *lq_tok_name(int type);
/* consume a token of `type` (error "Expected X but found Y" when strict) */
bool lq_lex_expect(lq_lex *lx, int type, lq_tok *out) LQ_WUR;

/* Expression / filter / condition parsing (expr.c). */
bool lq_parse_expr(lq_lex *lx, const lq_expr **out) LQ_WUR;
bool lq_parse_filtered(lq_lex *lx, lq_filtered *out) LQ_WUR;
bool lq_parse_condition(lq_lex *lx, const lq_cond **out) LQ_WUR;
/* Parse a whole markup string as an expression (literal/variable/range). */
bool lq_parse_expr_str(lq_parser *ps, const char *s, size_t n, const lq_expr **out) LQ_WUR;
lq_expr *lq_expr_lit(lq_arena *a, lq_value v);

#endif
