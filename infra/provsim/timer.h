/*
 * timer.h -- provsim's hold queue: answers that are due later.
 *
 * Injected latency and "timeouts" do not block a server thread.  The request
 * handler stores its answer in the connection, suspends the connection with
 * MHD_suspend_connection() and hands it to this timer with a due time; one
 * timer thread sleeps until the earliest due time and resumes the connection
 * with MHD_resume_connection(), after which MHD calls the handler again and
 * it sends the stored answer (or, for a timeout, closes the socket without
 * one).  So any number of requests can be held at once with one thread; a
 * held request costs its socket and its MHD connection memory only.
 *
 * ps_timer_stop() resumes every held connection at once (MHD must not be
 * stopped with suspended connections) and refuses later additions, so a
 * handler that tries to hold during shutdown answers at once instead.
 *
 * Thread safety: add from any thread; start/stop from one.
 */
#ifndef HERALD_PROVSIM_TIMER_H
#define HERALD_PROVSIM_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS_WUR __attribute__((warn_unused_result))

struct MHD_Connection;
typedef struct ps_timer ps_timer;

bool ps_timer_start(ps_timer **out, char *err, size_t errlen) PS_WUR;

/* Resumes c at CLOCK_MONOTONIC millisecond due_ms.  False when stopping:
 * the caller then resumes c itself. */
bool ps_timer_add(ps_timer *t, struct MHD_Connection *c, uint64_t due_ms) PS_WUR;

/* Resumes everything held and joins the thread; later adds fail. */
void ps_timer_stop(ps_timer *t);

/* After ps_timer_stop() and once no thread can call ps_timer_add(). */
void ps_timer_free(ps_timer *t);

uint64_t ps_mono_ms(void);

#endif
