/*
 * err.c -- see err.h.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool hr_fail(hr_err *err, hr_err_kind kind, const char *field, const char *fmt, ...)
{
	if (!err)
		return false;
	err->kind = kind;
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	/* Messages are one line: libpq likes to end its own with '\n'. */
	for (char *p = err->msg; *p; p++)
		if (*p == '\n')
			*p = (p[1] ? ' ' : '\0');
	return false;
}

void hr_err_clear(hr_err *err)
{
	if (err)
		memset(err, 0, sizeof *err);
}
