/*
 * log.c -- see log.h.
 */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char role_name[32] = "herald";
static atomic_int quiet;
static atomic_long warn_count;

void hr_log_init(const char *role)
{
	snprintf(role_name, sizeof role_name, "%s", role);
}

void hr_log_quiet(int q)
{
	atomic_store(&quiet, q);
}

long hr_log_warn_count(void)
{
	return atomic_load(&warn_count);
}

static void emit(const char *level, const char *fmt, va_list ap)
{
	char line[4096];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (long)(tv.tv_usec / 1000), role_name, (int)getpid(), level);
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len++] = '\n';
	(void)!write(2, line, len);
}

void hr_info(const char *fmt, ...)
{
	if (atomic_load(&quiet))
		return;
	va_list ap;
	va_start(ap, fmt);
	emit("info", fmt, ap);
	va_end(ap);
}

void hr_warn(const char *fmt, ...)
{
	atomic_fetch_add(&warn_count, 1);
	va_list ap;
	va_start(ap, fmt);
	emit("warn", fmt, ap);
	va_end(ap);
}

void hr_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit("fatal", fmt, ap);
	va_end(ap);
	exit(1);
}

void hr_panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit("panic", fmt, ap);
	va_end(ap);
	abort();
}
