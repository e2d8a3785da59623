/*
 * jsonmem.h -- jansson's allocator for provsim: a per-thread bump arena for
 * the request path, herald's allocator everywhere else.
 *
 * Parsing a send body with jansson costs a dozen small allocations.  Between
 * ps_json_arena_begin() and ps_json_arena_end() on a thread, jansson's
 * allocations come from that thread's 16 KiB arena (created once per thread,
 * freed at thread exit) and frees inside it are no-ops; end() rewinds it.
 * Allocations that do not fit, and all allocations outside a begin/end pair,
 * go to hr_malloc/hr_free.  So the steady-state request path allocates
 * nothing for JSON.
 *
 * Rules: every json_t made inside a begin/end pair must be released before
 * end(); strings returned by json_dumps() are released with ps_json_free().
 *
 * ps_json_mem_init() installs the functions process-wide (jansson's
 * allocator is global) and must run before any jansson use.
 */
#ifndef HERALD_PROVSIM_JSONMEM_H
#define HERALD_PROVSIM_JSONMEM_H

void ps_json_mem_init(void);
void ps_json_arena_begin(void);
void ps_json_arena_end(void);
void ps_json_free(void *p);

#endif
