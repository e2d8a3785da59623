/*
 * registry.c -- see registry.h.
 *
 * The probe limit keeps a lookup for a missing name short when the table is
 * nearly full; such names land in the overflow entry rather than scanning the
 * whole array on every request.
 */
#include "registry.h"

#include <stdatomic.h>
#include <string.h>

#include "alloc.h"

#define PROBE_MAX 64

const char *const ps_ctr_names[PS_NCTR] = {
	[PS_RECEIVED] = "received",
	[PS_ACCEPTED] = "accepted",
	[PS_THROTTLED] = "throttled_429",
	[PS_ERRORS_5XX] = "errors_5xx",
	[PS_TIMEOUTS] = "timeouts",
	[PS_DUPLICATES] = "duplicates",
	[PS_BAD_REQUEST] = "bad_request_400",
	[PS_UNAUTHORIZED] = "unauthorized_401",
};

struct ps_entry {
	_Atomic uint64_t ctr[PS_NCTR];            /* counters, relaxed increments */
	_Atomic(const struct ps_fault_cfg *) cfg; /* own fault config, NULL = default */
	_Atomic uint64_t window;                  /* rate window: second << 24 | count */
	uint64_t hash;                            /* ps_hash(name) */
	size_t len;                               /* strlen(name) */
	char name[];                              /* NUL-terminated */
};

struct ps_registry {
	size_t mask;              /* slots - 1 */
	_Atomic(ps_entry *) *slot; /* published entries, NULL = free */
	ps_entry *overflow;       /* names that found no slot */
};

uint64_t ps_hash(const void *s, size_t len, uint64_t seed)
{
	const unsigned char *p = s;
	uint64_t h = 1469598103934665603ull ^ seed;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static ps_entry *entry_new(const char *name, size_t len, uint64_t hash)
{
	ps_entry *e = hr_calloc(1, sizeof *e + len + 1);
	memcpy(e->name, name, len);
	e->len = len;
	e->hash = hash;
	return e;
}

ps_registry *ps_registry_new(size_t slots)
{
	size_t n = 16;
	while (n < slots)
		n <<= 1;
	ps_registry *r = hr_calloc(1, sizeof *r);
	r->mask = n - 1;
	r->slot = hr_calloc(n, sizeof *r->slot);
	r->overflow = entry_new("_overflow", 9, ps_hash("_overflow", 9, 0));
	return r;
}

void ps_registry_free(ps_registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i <= r->mask; i++)
		hr_free(atomic_load_explicit(&r->slot[i], memory_order_relaxed));
	hr_free(r->overflow);
	hr_free(r->slot);
	hr_free(r);
}

ps_entry *ps_registry_get(ps_registry *r, const char *name, size_t len)
{
	uint64_t h = ps_hash(name, len, 0);
	ps_entry *fresh = NULL;
	for (size_t i = 0; i < PROBE_MAX; i++) {
		_Atomic(ps_entry *) *s = &r->slot[(h + i) & r->mask];
		ps_entry *e = atomic_load_explicit(s, memory_order_acquire);
		if (!e) {
			if (!fresh)
				fresh = entry_new(name, len, h);
			ps_entry *expected = NULL;
			if (atomic_compare_exchange_strong_explicit(s, &expected, fresh,
								    memory_order_acq_rel,
								    memory_order_acquire))
				return fresh;
			e = expected; /* another thread published here first */
		}
		if (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0) {
			hr_free(fresh);
			return e;
		}
	}
	hr_free(fresh);
	return r->overflow;
}

void ps_registry_each(ps_registry *r, void (*fn)(ps_entry *e, void *arg), void *arg)
{
	for (size_t i = 0; i <= r->mask; i++) {
		ps_entry *e = atomic_load_explicit(&r->slot[i], memory_order_acquire);
		if (e)
			fn(e, arg);
	}
	fn(r->overflow, arg);
}

const char *ps_entry_name(const ps_entry *e)
{
	return e->name;
}

uint64_t ps_entry_hash(const ps_entry *e)
{
	return e->hash;
}

void ps_entry_inc(ps_entry *e, enum ps_ctr c)
{
	atomic_fetch_add_explicit(&e->ctr[c], 1, memory_order_relaxed);
}

uint64_t ps_entry_get(const ps_entry *e, enum ps_ctr c)
{
	return atomic_load_explicit(&e->ctr[c], memory_order_relaxed);
}

void ps_entry_zero(ps_entry *e)
{
	for (int c = 0; c < PS_NCTR; c++)
		atomic_store_explicit(&e->ctr[c], 0, memory_order_relaxed);
	atomic_store_explicit(&e->window, 0, memory_order_relaxed);
}

const struct ps_fault_cfg *ps_entry_faults(const ps_entry *e)
{
	return atomic_load_explicit(&e->cfg, memory_order_acquire);
}

void ps_entry_set_faults(ps_entry *e, const struct ps_fault_cfg *cfg)
{
	atomic_store_explicit(&e->cfg, cfg, memory_order_release);
}

bool ps_entry_rate_admit(ps_entry *e, uint32_t limit, uint64_t now_sec)
{
	uint64_t cur = atomic_load_explicit(&e->window, memory_order_relaxed);
	for (;;) {
		uint64_t sec = cur >> 24, count = cur & 0xffffff;
		uint64_t next;
		if (now_sec > sec) {
			next = now_sec << 24 | 1; /* first request of a new second */
		} else {
			/* Same second -- or a request stamped just before a racing
			 * newer one: it counts into the newer window rather than
			 * rewinding it. */
			if (count >= limit || count >= 0xffffff)
				return false;
			next = cur + 1;
		}
		if (atomic_compare_exchange_weak_explicit(&e->window, &cur, next,
							  memory_order_relaxed,
							  memory_order_relaxed))
			return true;
	}
}
