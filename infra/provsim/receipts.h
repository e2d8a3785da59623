/*
 * receipts.h -- provsim's receipts file: one line per accepted request,
 *
 *   <unix_ns_received> <tenant> <account> <channel> <to> <message_id>\n
 *
 * where unix_ns_received is CLOCK_REALTIME when the request was complete
 * (body received).  Fields never contain spaces (the server rejects such
 * values with 400).  Lines of one thread appear in order; lines of different
 * threads interleave by flush, not by time -- sort on the first field.
 *
 * Each request thread appends to its own 64 KiB buffer (created on its first
 * line, guarded by a mutex only the flusher also takes, so the request path
 * never contends with other request threads).  A flusher thread writes every
 * buffer out every 50 ms; a thread whose buffer is full writes it itself.
 * ps_receipts_close() flushes everything and closes the file.  Whole buffers
 * are written with one write(2) to an O_APPEND descriptor, so lines are never
 * torn.  Write errors are logged (once per second at most) and the data is
 * dropped: a receipts file is a measurement aid, not a ledger.
 *
 * Thread safety: ps_receipts_add() from any thread; open/close from one
 * thread, close only after every adding thread has stopped.
 */
#ifndef HERALD_PROVSIM_RECEIPTS_H
#define HERALD_PROVSIM_RECEIPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS_WUR __attribute__((warn_unused_result))

typedef struct ps_receipts ps_receipts;

bool ps_receipts_open(const char *path, ps_receipts **out, char *err, size_t errlen) PS_WUR;

/* Appends one line.  Strings are NUL-terminated and at most 256 bytes each. */
void ps_receipts_add(ps_receipts *r, uint64_t unix_ns, const char *tenant, const char *account,
		     const char *channel, const char *to, const char *msg_id);

void ps_receipts_close(ps_receipts *r);

#endif
