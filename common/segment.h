/*
 * segment.h -- the segment rule language, compiled to one SQL condition.
 *
 * A segment is a JSON rule written by a marketer ("lives in Kyiv and bought
 * twice in the last 30 days").  hr_segment_compile() validates it and turns
 * it into ONE parameterised SQL boolean expression over the row `contacts c`
 * plus the parameter values, e.g.
 *
 *     SELECT c.id FROM contacts c WHERE <where>      -- with params $1..$n
 *
 * The expression names tables unqualified (`events`) and is meant to run
 * inside a tenant-scoped transaction (hr_db_tenant_begin: search_path = the
 * tenant schema).  The language itself is documented in docs/segments.md.
 *
 * Contract:
 * - No user text ever reaches the SQL string: values, attribute paths, event
 *   names and patterns all become parameters; operators and column names come
 *   from fixed tables in segment.c.  The expression cannot fail at run time on
 *   any data (every cast is guarded), so a fan-out never dies on one odd row.
 * - Reproducible: "now" is opts->now_unix; relative windows ("last 14 days")
 *   become timestamp parameters computed from it, never SQL now().
 * - The expression is two-valued where it matters (a `not` of a condition on a
 *   missing attribute is true), but may yield NULL where the answer is "no":
 *   use it in WHERE, or as COALESCE(<where>, false) in a select list.
 * - Event conditions are correlated subqueries on events (contact_id, name,
 *   occurred_at), fenced so that the planner probes that index per contact.
 * - Errors: false + hr_err (kind HR_ERR_INVALID for a bad rule) whose field
 *   is the JSON pointer of the offending part ("/and/2/value") and whose msg
 *   says what was wrong.  Errors inside a referenced segment point at the
 *   reference and name the segment and the inner pointer in msg.  Errors of
 *   the lookup callback keep their kind (NOTFOUND becomes INVALID: an unknown
 *   segment id is bad input of this rule).
 * - Memory: *out owns heap strings (hr_malloc); free with hr_segment_sql_free.
 *   On failure *out is left empty (safe to free).
 * - Thread safety: none needed; no globals.  Each call is independent.
 */
#ifndef HERALD_SEGMENT_H
#define HERALD_SEGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

/* Limits (docs/segments.md says why). */
#define HR_SEGMENT_MAX_JSON 65536      /* bytes of rule text */
#define HR_SEGMENT_MAX_DEPTH 10        /* nesting of and/or/not/where/segment */
#define HR_SEGMENT_MAX_CONDITIONS 200  /* leaf conditions, referenced segments included */
#define HR_SEGMENT_MAX_IN 1000         /* values of one in / not_in */
#define HR_SEGMENT_MAX_STRING 1024     /* bytes of one string value or event name */
#define HR_SEGMENT_MAX_PATH 8          /* segments of an attribute / property path */
#define HR_SEGMENT_MAX_PATH_SEG 128    /* bytes of one path segment */
#define HR_SEGMENT_MAX_DAYS 36600      /* days of a relative window (~100 years) */
#define HR_SEGMENT_MAX_PATTERN 256     /* bytes of a `matches` pattern */
#define HR_SEGMENT_MAX_STARS 8         /* `*` wildcards in one pattern */

typedef struct hr_segment_sql {
	char *where;   /* the boolean expression, parenthesised; refers to `contacts c` */
	int nparams;   /* number of parameters, numbered opts.first_param .. +nparams-1 */
	char **params; /* their text values (never NULL entries) */
} hr_segment_sql;

/*
 * Resolve a `{"segment": id}` reference: set *json to that segment's rule
 * (a heap string from hr_malloc/hr_strdup; the compiler hr_free()s it) and
 * return true, or return false with err set (HR_ERR_NOTFOUND for an unknown
 * id, HR_ERR_DB when the lookup failed).
 */
typedef bool (*hr_segment_lookup)(void *ud, int64_t segment_id, char **json, hr_err *err);

typedef struct hr_segment_opts {
	int64_t now_unix;         /* "now", seconds since the epoch (UTC) */
	hr_segment_lookup lookup; /* NULL: segment references are refused */
	void *lookup_ud;          /* passed to lookup */
	int first_param;          /* $N numbering starts here; <= 0 means 1 */
} hr_segment_opts;

/* Compile a rule (JSON text, NUL-terminated). */
bool hr_segment_compile(const char *json, const hr_segment_opts *o, hr_segment_sql *out,
			hr_err *err) HR_MUST_CHECK;

/*
 * Compile a property condition alone -- the language of an event condition's
 * "where" (docs/segments.md) -- into an expression over `e.properties` of a
 * row `events e`.  Trigger rules use it to filter the one event that
 * triggers them.  Pointers in errors are relative to the condition's root.
 */
bool hr_segment_compile_where(const char *json, const hr_segment_opts *o, hr_segment_sql *out,
			      hr_err *err) HR_MUST_CHECK;

void hr_segment_sql_free(hr_segment_sql *s);

#endif
