/*
 * stats.c -- see stats.h.
 */
#include "stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"

#define RCPT_PROBE 32
#define BUCKET 16
#define STRIPES 1024

struct rcpt {
	_Atomic uint64_t key;        /* hash of the recipient, 0 = free */
	_Atomic uint32_t accepted;   /* accepted requests to it */
	_Atomic uint32_t duplicates; /* of which duplicates */
};

struct ps_stats {
	_Atomic uint64_t total[PS_NCTR]; /* totals over all accounts */
	_Atomic uint64_t rcpt_untracked; /* accepted for recipients without a slot */
	ps_registry *accounts;
	ps_registry *tenants;
	struct rcpt *rcpt;               /* recipient table */
	size_t rcpt_mask;
	uint64_t *dedupe;                /* recent (account, id) hashes, 0 = free */
	size_t dedupe_buckets;           /* power of two */
	pthread_mutex_t stripe[STRIPES]; /* stripe i guards buckets b with b % STRIPES == i */
	void (*dlr_fn)(void *arg, json_t *out);
	void *dlr_arg;
};

static size_t pow2(size_t n, size_t min)
{
	size_t p = min;
	while (p < n)
		p <<= 1;
	return p;
}

ps_stats *ps_stats_new(size_t tenant_slots, size_t account_slots, size_t recipient_slots,
		       size_t dedupe_slots)
{
	ps_stats *s = hr_calloc(1, sizeof *s);
	s->accounts = ps_registry_new(account_slots);
	s->tenants = ps_registry_new(tenant_slots);
	size_t rn = pow2(recipient_slots, 64);
	s->rcpt = hr_calloc(rn, sizeof *s->rcpt);
	s->rcpt_mask = rn - 1;
	s->dedupe_buckets = pow2(dedupe_slots, BUCKET * STRIPES) / BUCKET;
	s->dedupe = hr_calloc(s->dedupe_buckets * BUCKET, sizeof *s->dedupe);
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_init(&s->stripe[i], NULL);
	return s;
}

void ps_stats_free(ps_stats *s)
{
	if (!s)
		return;
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&s->stripe[i]);
	ps_registry_free(s->accounts);
	ps_registry_free(s->tenants);
	hr_free(s->rcpt);
	hr_free(s->dedupe);
	hr_free(s);
}

ps_registry *ps_stats_accounts(ps_stats *s)
{
	return s->accounts;
}

ps_registry *ps_stats_tenants(ps_stats *s)
{
	return s->tenants;
}

void ps_stats_set_dlr_source(ps_stats *s, void (*fn)(void *arg, json_t *out), void *arg)
{
	s->dlr_fn = fn;
	s->dlr_arg = arg;
}

void ps_stats_count(ps_stats *s, ps_entry *account, ps_entry *tenant, enum ps_ctr c)
{
	atomic_fetch_add_explicit(&s->total[c], 1, memory_order_relaxed);
	if (account)
		ps_entry_inc(account, c);
	if (tenant)
		ps_entry_inc(tenant, c);
}

static uint64_t nonzero(uint64_t h)
{
	return h ? h : 1;
}

/* The recipient's slot, claimed if new; NULL when the probe finds none. */
static struct rcpt *rcpt_slot(ps_stats *s, uint64_t key, bool claim)
{
	for (size_t i = 0; i < RCPT_PROBE; i++) {
		struct rcpt *r = &s->rcpt[(key + i) & s->rcpt_mask];
		uint64_t k = atomic_load_explicit(&r->key, memory_order_relaxed);
		if (k == key)
			return r;
		if (k == 0) {
			if (!claim)
				return NULL;
			uint64_t expected = 0;
			if (atomic_compare_exchange_strong_explicit(&r->key, &expected, key,
								    memory_order_relaxed,
								    memory_order_relaxed) ||
			    expected == key)
				return r;
		}
	}
	return NULL;
}

/* True if (account, id) was seen; records it otherwise. */
static bool seen_before(ps_stats *s, ps_entry *account, const char *id, size_t len)
{
	uint64_t h = nonzero(ps_hash(id, len, ps_entry_hash(account)));
	size_t b = (size_t)(h >> 20) & (s->dedupe_buckets - 1);
	uint64_t *slot = &s->dedupe[b * BUCKET];
	bool dup = false;
	pthread_mutex_lock(&s->stripe[b % STRIPES]);
	int free_at = -1;
	for (int i = 0; i < BUCKET; i++) {
		if (slot[i] == h) {
			dup = true;
			goto out;
		}
		if (slot[i] == 0 && free_at < 0)
			free_at = i;
	}
	/* Full bucket: evict a slot chosen by hash bits the bucket index did
	 * not use, i.e. pseudo-randomly. */
	slot[free_at >= 0 ? free_at : (int)(h & (BUCKET - 1))] = h;
out:
	pthread_mutex_unlock(&s->stripe[b % STRIPES]);
	return dup;
}

bool ps_stats_accept(ps_stats *s, ps_entry *account, ps_entry *tenant, const char *to,
		     size_t to_len, const char *msg_id, size_t id_len)
{
	bool dup = seen_before(s, account, msg_id, id_len);
	ps_stats_count(s, account, tenant, PS_ACCEPTED);
	if (dup)
		ps_stats_count(s, account, tenant, PS_DUPLICATES);
	struct rcpt *r = rcpt_slot(s, nonzero(ps_hash(to, to_len, 0)), true);
	if (!r) {
		atomic_fetch_add_explicit(&s->rcpt_untracked, 1, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&r->accepted, 1, memory_order_relaxed);
		if (dup)
			atomic_fetch_add_explicit(&r->duplicates, 1, memory_order_relaxed);
	}
	return dup;
}

static json_t *counters_json(const ps_entry *e)
{
	json_t *o = json_object();
	for (int c = 0; c < PS_NCTR; c++)
		json_object_set_new(o, ps_ctr_names[c], json_integer((json_int_t)ps_entry_get(e, c)));
	return o;
}

static void add_entry(ps_entry *e, void *arg)
{
	for (int c = 0; c < PS_NCTR; c++)
		if (ps_entry_get(e, c)) {
			json_object_set_new(arg, ps_entry_name(e), counters_json(e));
			return;
		}
}

json_t *ps_stats_json(ps_stats *s)
{
	json_t *o = json_object(), *tot = json_object(), *ten = json_object(), *acc = json_object();
	for (int c = 0; c < PS_NCTR; c++)
		json_object_set_new(tot, ps_ctr_names[c],
				    json_integer((json_int_t)atomic_load(&s->total[c])));
	json_object_set_new(tot, "recipients_untracked",
			    json_integer((json_int_t)atomic_load(&s->rcpt_untracked)));
	ps_registry_each(s->tenants, add_entry, ten);
	ps_registry_each(s->accounts, add_entry, acc);
	json_object_set_new(o, "totals", tot);
	json_object_set_new(o, "tenants", ten);
	json_object_set_new(o, "accounts", acc);
	if (s->dlr_fn) {
		json_t *d = json_object();
		s->dlr_fn(s->dlr_arg, d);
		json_object_set_new(o, "dlr", d);
	}
	return o;
}

json_t *ps_stats_recipient_json(ps_stats *s, const char *to)
{
	struct rcpt *r = rcpt_slot(s, nonzero(ps_hash(to, strlen(to), 0)), false);
	return json_pack("{s:s, s:I, s:I}", "to", to, "accepted",
			 (json_int_t)(r ? atomic_load(&r->accepted) : 0), "duplicates",
			 (json_int_t)(r ? atomic_load(&r->duplicates) : 0));
}

static void zero_entry(ps_entry *e, void *arg)
{
	ps_entry_zero(e);
}

void ps_stats_reset(ps_stats *s)
{
	for (int c = 0; c < PS_NCTR; c++)
		atomic_store(&s->total[c], 0);
	atomic_store(&s->rcpt_untracked, 0);
	ps_registry_each(s->tenants, zero_entry, NULL);
	ps_registry_each(s->accounts, zero_entry, NULL);
	for (size_t i = 0; i <= s->rcpt_mask; i++) {
		atomic_store_explicit(&s->rcpt[i].accepted, 0, memory_order_relaxed);
		atomic_store_explicit(&s->rcpt[i].duplicates, 0, memory_order_relaxed);
		atomic_store_explicit(&s->rcpt[i].key, 0, memory_order_relaxed);
	}
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_lock(&s->stripe[i]);
	memset(s->dedupe, 0, s->dedupe_buckets * BUCKET * sizeof *s->dedupe);
	for (int i = STRIPES - 1; i >= 0; i--)
		pthread_mutex_unlock(&s->stripe[i]);
}
