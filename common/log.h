/*
 * log.h -- herald's logging: three severities plus info, one line per event.
 *
 *   hr_info   -- normal operation worth a line (startup, drain, progress).
 *   hr_warn   -- something went wrong and we go on (a peer failed, a retry).
 *   hr_fatal  -- bad environment (config, unreachable database): log, exit(1),
 *                let the supervisor restart us.
 *   hr_panic  -- our own bug: log and abort() for a core.
 *
 * Lines are logfmt-ish: "2026-11-22T16:00:00.123Z herald-api[123] warn: text".
 * Callers put context as key=value pairs in the text (tenant=, msg=, conn=),
 * so every line can be grepped and parsed.
 *
 * Tests: hr_log_counts() returns how many warn-or-worse lines were written,
 * so a test can assert that nothing unexpected was logged; hr_log_quiet()
 * silences info lines.
 *
 * Thread safety: all functions are thread-safe (one write(2) per line).
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdarg.h>

#define HR_PRINTF(a, b) __attribute__((format(printf, a, b)))

void hr_log_init(const char *role);
void hr_log_quiet(int quiet);
long hr_log_warn_count(void);

void hr_info(const char *fmt, ...) HR_PRINTF(1, 2);
void hr_warn(const char *fmt, ...) HR_PRINTF(1, 2);
_Noreturn void hr_fatal(const char *fmt, ...) HR_PRINTF(1, 2);
_Noreturn void hr_panic(const char *fmt, ...) HR_PRINTF(1, 2);

#endif
