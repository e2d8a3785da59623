/*
 * err.h -- the one error convention of herald.
 *
 * Fallible functions return bool (true = success), are marked HR_MUST_CHECK,
 * and write the detail into a caller-owned hr_err: a human-readable message
 * and, where input was at fault, the offending field (a JSON pointer or a
 * CLI/config name).  `kind` classifies the failure so that callers can map it
 * to an exit code or an HTTP status without parsing text.
 *
 * An hr_err may be NULL when the caller does not want the detail.
 */
#ifndef HERALD_ERR_H
#define HERALD_ERR_H

#include <stdbool.h>

#define HR_MUST_CHECK __attribute__((warn_unused_result))

typedef enum hr_err_kind {
	HR_ERR_NONE = 0,
	HR_ERR_INVALID,   /* bad input: caller's fault, nothing was changed */
	HR_ERR_NOTFOUND,  /* the named thing does not exist (or is not yours) */
	HR_ERR_CONFLICT,  /* it exists already / state forbids the change */
	HR_ERR_DB,        /* the database failed or is unreachable */
	HR_ERR_IO,        /* the operating system failed us */
	HR_ERR_INTERNAL,  /* our bug */
} hr_err_kind;

typedef struct hr_err {
	hr_err_kind kind;
	char field[128]; /* offending field, "" when none */
	char msg[512];   /* what was wrong, one line, no trailing newline */
} hr_err;

/* Fill err (if non-NULL); always returns false so callers can `return hr_fail(...)`. */
bool hr_fail(hr_err *err, hr_err_kind kind, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

void hr_err_clear(hr_err *err);

#endif
