/*
 * registry.h -- provsim's name tables: provider accounts and tenants.
 *
 * A registry maps a short name (an account or a tenant) to an entry that
 * holds that name's counters and, for accounts, the per-account state the
 * fault injector needs (its own fault configuration, its rate window).
 *
 * Lookup and insert are lock-free: a fixed array of atomic pointers with
 * linear probing; an entry, once published, is never moved or freed until
 * ps_registry_free().  The table never grows: when a name finds no free slot
 * within a short probe, it is folded into one shared "_overflow" entry, so
 * memory stays bounded whatever the traffic sends.
 *
 * Ownership: the registry owns its entries.  Fault configurations stored in
 * an entry are owned by the fault module (faults.h), which keeps every
 * configuration it ever published alive until it is freed itself.
 *
 * Thread safety: every function is safe to call from any thread, except
 * ps_registry_free(), which must run after all users have stopped.
 */
#ifndef HERALD_PROVSIM_REGISTRY_H
#define HERALD_PROVSIM_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Counters kept per entry and in the totals. */
enum ps_ctr {
	PS_RECEIVED,     /* requests on a send route */
	PS_ACCEPTED,     /* answered 200 (duplicates included) */
	PS_THROTTLED,    /* answered 429, random or rate ceiling */
	PS_ERRORS_5XX,   /* answered 500 or 503 by fault injection */
	PS_TIMEOUTS,     /* held open and never answered */
	PS_DUPLICATES,   /* accepted, but message_id already accepted on the account */
	PS_BAD_REQUEST,  /* answered 400 */
	PS_UNAUTHORIZED, /* answered 401 */
	PS_NCTR
};

/* JSON key of each counter, indexed by enum ps_ctr. */
extern const char *const ps_ctr_names[PS_NCTR];

typedef struct ps_entry ps_entry;
typedef struct ps_registry ps_registry;
struct ps_fault_cfg;

/* A registry of at most `slots` names (rounded up to a power of two). */
ps_registry *ps_registry_new(size_t slots);
void ps_registry_free(ps_registry *r);

/* The entry for name[0..len), created on first sight; never NULL (falls back
 * to the overflow entry when the table is full). */
ps_entry *ps_registry_get(ps_registry *r, const char *name, size_t len);

/* Calls fn for every entry, overflow included, in table order. */
void ps_registry_each(ps_registry *r, void (*fn)(ps_entry *e, void *arg), void *arg);

const char *ps_entry_name(const ps_entry *e);
uint64_t ps_entry_hash(const ps_entry *e);

void ps_entry_inc(ps_entry *e, enum ps_ctr c);
uint64_t ps_entry_get(const ps_entry *e, enum ps_ctr c);
void ps_entry_zero(ps_entry *e);

/* Accounts only: the account's own fault configuration, NULL when it uses the
 * default.  Loads are acquire, stores release. */
const struct ps_fault_cfg *ps_entry_faults(const ps_entry *e);
void ps_entry_set_faults(ps_entry *e, const struct ps_fault_cfg *cfg);

/*
 * Accounts only: the rate ceiling.  A fixed window aligned to whole seconds
 * of the wall clock (the same clock as the receipts file, so "requests
 * accepted in second S" agree).  Returns true and counts the request if
 * fewer than `limit` requests were admitted in second `now_sec`.
 */
bool ps_entry_rate_admit(ps_entry *e, uint32_t limit, uint64_t now_sec);

/* 64-bit hash (FNV-1a with a murmur finaliser) of s[0..len), chained by seed. */
uint64_t ps_hash(const void *s, size_t len, uint64_t seed);

#endif
