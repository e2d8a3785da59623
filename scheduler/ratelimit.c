/*
 * ratelimit.c -- GCRA meters per scope, AIMD on provider throttling, and the
 * open-addressing table that finds a scope by name.  Contract: ratelimit.h.
 *
 * GCRA in one paragraph: a scope with emission interval T (ns per token)
 * keeps `tat`, the theoretical arrival time of its next token.  A token may
 * be taken at `now` when tat - tau <= now, where tau = (burst - 1) x T is the
 * tolerance that allows `burst` tokens back to back; taking it moves tat to
 * max(tat, now) + T.  Since tat never lags behind `now` by more than what
 * max() forgives, an idle scope earns at most `burst` tokens, never a second's
 * worth -- which is what keeps the 100-ms windows even.
 */
#include "ratelimit.h"

#include <math.h>
#include <string.h>

#include "alloc.h"

#define NS_PER_S 1000000000.0
#define TABLE_MIN 64u
/* take() remembers this many looked-up entries between its two passes. */
#define TAKE_CACHE 16

typedef struct entry {
	char *name;		/* NULL = empty slot */
	uint64_t hash;		/* of name, kept for probing and growth */
	double conf;		/* configured rate per second; 0 = unlimited (kept for a hold) */
	double factor;		/* AIMD: effective = ceiling x factor, in (0, 1] */
	bool shared;		/* rate is split between schedulers (x share) */
	uint64_t interval;	/* T: ns per token at the effective rate; 0 = unlimited */
	uint64_t tau;		/* burst tolerance in ns: (burst - 1) x T */
	uint64_t tat;		/* theoretical arrival time of the next token */
	uint64_t hold_until;	/* nothing granted before this (provider Retry-After) */
	uint64_t last_decrease; /* when the rate was last cut; throttles of older sends don't cut again */
	bool decreased;		/* last_decrease is meaningful */
} entry;

struct hr_limiter {
	entry *slots;	   /* open addressing, linear probing, no tombstones */
	uint32_t cap;	   /* power of two */
	uint32_t count;	   /* occupied slots; kept <= cap / 2 */
	double share;	   /* this scheduler's fraction of shared scopes */
	uint32_t burst_ms; /* burst window */
	uint64_t now_seen; /* latest now_ns seen, to rescale tat when a rate changes */
};

/* FNV-1a: short keys, good enough spread for linear probing at load <= 1/2. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = 14695981039346656037ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	/* Mix the high bits down: the mask keeps only the low ones. */
	return h ^ (h >> 29);
}

static entry *find(const hr_limiter *l, const char *name, uint64_t h)
{
	uint32_t mask = l->cap - 1;
	for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
		entry *e = &l->slots[i];
		if (!e->name)
			return NULL;
		if (e->hash == h && strcmp(e->name, name) == 0)
			return e;
	}
}

static entry *lookup(const hr_limiter *l, const char *name)
{
	return find(l, name, hash_str(name));
}

static void place(entry *slots, uint32_t cap, const entry *src)
{
	uint32_t mask = cap - 1;
	uint32_t i = (uint32_t)src->hash & mask;
	while (slots[i].name)
		i = (i + 1) & mask;
	slots[i] = *src;
}

static void grow(hr_limiter *l)
{
	uint32_t ncap = l->cap * 2;
	entry *ns = hr_calloc(ncap, sizeof *ns);
	for (uint32_t i = 0; i < l->cap; i++)
		if (l->slots[i].name)
			place(ns, ncap, &l->slots[i]);
	hr_free(l->slots);
	l->slots = ns;
	l->cap = ncap;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void remove_at(hr_limiter *l, entry *e)
{
	uint32_t mask = l->cap - 1;
	uint32_t i = (uint32_t)(e - l->slots);
	hr_free(e->name);
	memset(e, 0, sizeof *e);
	l->count--;
	for (uint32_t j = (i + 1) & mask; l->slots[j].name; j = (j + 1) & mask) {
		uint32_t home = (uint32_t)l->slots[j].hash & mask;
		/* The entry at j may fill the hole at i unless its home lies cyclically in (i, j]. */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (stays)
			continue;
		l->slots[i] = l->slots[j];
		memset(&l->slots[j], 0, sizeof l->slots[j]);
		i = j;
	}
}

static bool owned_by_name(const char *s)
{
	if (strncmp(s, "tenant:", 7) == 0 || strncmp(s, "sender:", 7) == 0)
		return true;
	/* "account:42/smtp-main" is tenant 42's; "account:relay-eu" is shared by several tenants. */
	if (strncmp(s, "account:", 8) == 0) {
		s += 8;
		if (*s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
		return *s == '/';
	}
	return false;
}

static double ceiling_of(const hr_limiter *l, const entry *e)
{
	return e->shared ? e->conf * l->share : e->conf;
}

static double floor_factor(double ceiling)
{
	return ceiling <= HR_AIMD_FLOOR ? 1.0 : HR_AIMD_FLOOR / ceiling;
}

/* Recompute T and tau after the rate, share, factor or burst window changed. */
static void retune(const hr_limiter *l, entry *e)
{
	if (e->conf <= 0) {
		e->interval = 0;
		e->tau = 0;
		return;
	}
	double ceiling = ceiling_of(l, e);
	double ff = floor_factor(ceiling);
	if (e->factor < ff)
		e->factor = ff;
	if (e->factor > 1.0)
		e->factor = 1.0;
	double eff = ceiling * e->factor;
	double t = NS_PER_S / eff;
	uint64_t interval = t >= 1.8e19 ? UINT64_MAX / 4 : t < 1.0 ? 1 : (uint64_t)llround(t);
	double b = floor(eff * l->burst_ms / 1000.0);
	uint64_t burst = b < 1.0 ? 1 : (uint64_t)b;
	/*
	 * A token already promised in the future at the old interval comes
	 * proportionally sooner (or later) at the new one, so a rate raised from
	 * the floor does not sit out one old, long interval.
	 */
	if (e->interval && e->interval != interval && e->tat > l->now_seen)
		e->tat = l->now_seen +
			 (uint64_t)((double)(e->tat - l->now_seen) * ((double)interval / (double)e->interval));
	e->interval = interval;
	e->tau = (burst - 1) * interval;
}

static entry *get_or_add(hr_limiter *l, const char *scope)
{
	uint64_t h = hash_str(scope);
	entry *e = find(l, scope, h);
	if (e)
		return e;
	if ((l->count + 1) * 2 > l->cap)
		grow(l);
	entry ne = {.name = hr_strdup(scope), .hash = h, .factor = 1.0, .shared = !owned_by_name(scope)};
	place(l->slots, l->cap, &ne);
	l->count++;
	return find(l, scope, h);
}

hr_limiter *hr_limiter_new(void)
{
	hr_limiter *l = hr_calloc(1, sizeof *l);
	l->cap = TABLE_MIN;
	l->slots = hr_calloc(l->cap, sizeof *l->slots);
	l->share = 1.0;
	l->burst_ms = HR_BURST_MS_DEFAULT;
	return l;
}

void hr_limiter_free(hr_limiter *l)
{
	if (!l)
		return;
	for (uint32_t i = 0; i < l->cap; i++)
		hr_free(l->slots[i].name);
	hr_free(l->slots);
	hr_free(l);
}

void hr_limiter_set_rate_kind(hr_limiter *l, const char *scope, double per_second, hr_scope_kind kind)
{
	if (!(per_second > 0)) { /* also NaN */
		entry *e = lookup(l, scope);
		if (e)
			remove_at(l, e);
		return;
	}
	entry *e = get_or_add(l, scope);
	e->conf = per_second;
	e->shared = kind == HR_SCOPE_AUTO ? !owned_by_name(scope) : kind == HR_SCOPE_SHARED;
	retune(l, e);
}

void hr_limiter_set_rate(hr_limiter *l, const char *scope, double per_second)
{
	hr_limiter_set_rate_kind(l, scope, per_second, HR_SCOPE_AUTO);
}

void hr_limiter_set_share(hr_limiter *l, double fraction)
{
	if (!(fraction > 0) || fraction > 1)
		fraction = 1.0;
	l->share = fraction;
	for (uint32_t i = 0; i < l->cap; i++)
		if (l->slots[i].name && l->slots[i].shared)
			retune(l, &l->slots[i]);
}

void hr_limiter_set_burst_ms(hr_limiter *l, uint32_t burst_ms)
{
	l->burst_ms = burst_ms;
	for (uint32_t i = 0; i < l->cap; i++)
		if (l->slots[i].name)
			retune(l, &l->slots[i]);
}

/* Tokens this scope can grant at now, capped at n. */
static uint32_t available(const entry *e, uint32_t n, uint64_t now)
{
	if (now < e->hold_until)
		return 0;
	if (!e->interval)
		return n;
	uint64_t t = e->tat > now ? e->tat : now;
	if (t > now + e->tau) /* not t - tau > now: near time zero that would wrap */
		return 0;
	uint64_t k = (now + e->tau - t) / e->interval + 1;
	return k < n ? (uint32_t)k : n;
}

/* Time from now until this scope can grant one more token. */
static uint64_t wait_for_next(const entry *e, uint64_t now)
{
	if (now < e->hold_until)
		return e->hold_until - now;
	if (!e->interval || e->tat <= now + e->tau)
		return 0;
	return e->tat - e->tau - now;
}

uint32_t hr_limiter_take(hr_limiter *l, const char *const *scopes, int nscopes, uint32_t n, uint64_t now_ns,
			 uint64_t *wait_ns)
{
	entry *cache[TAKE_CACHE];
	uint32_t g = n;
	if (now_ns > l->now_seen)
		l->now_seen = now_ns;
	for (int i = 0; i < nscopes; i++) {
		entry *e = lookup(l, scopes[i]);
		if (i < TAKE_CACHE)
			cache[i] = e;
		if (e) {
			uint32_t k = available(e, g, now_ns);
			if (k < g)
				g = k;
		}
	}
	uint64_t wait = 0;
	for (int i = 0; i < nscopes; i++) {
		entry *e = i < TAKE_CACHE ? cache[i] : lookup(l, scopes[i]);
		if (!e)
			continue; /* unknown scope: unlimited, nothing to charge */
		if (g > 0 && e->interval) {
			uint64_t t = e->tat > now_ns ? e->tat : now_ns;
			e->tat = t + (uint64_t)g * e->interval;
		}
		if (g < n) {
			uint64_t w = wait_for_next(e, now_ns);
			if (w > wait)
				wait = w;
		}
	}
	if (wait_ns)
		*wait_ns = g < n ? wait : 0;
	return g;
}

void hr_limiter_throttled(hr_limiter *l, const char *scope, uint64_t now_ns, uint64_t sent_ns,
			  uint32_t retry_after_ms)
{
	entry *e = get_or_add(l, scope);
	if (now_ns > l->now_seen)
		l->now_seen = now_ns;
	uint64_t until = now_ns + (uint64_t)retry_after_ms * 1000000u;
	if (until > e->hold_until)
		e->hold_until = until;
	if (e->conf <= 0)
		return; /* no ceiling to take a fraction of: the hold is all we can do */
	/* Sent before the last cut, i.e. at the old rate: that cut already answered it. */
	if (e->decreased && sent_ns < e->last_decrease)
		return;
	e->factor *= HR_AIMD_BETA;
	e->decreased = true;
	e->last_decrease = now_ns;
	retune(l, e);
}

void hr_limiter_succeeded(hr_limiter *l, const char *scope, uint32_t n, uint64_t now_ns)
{
	entry *e = lookup(l, scope);
	if (!e || e->conf <= 0 || e->factor >= 1.0 || n == 0)
		return;
	if (now_ns > l->now_seen)
		l->now_seen = now_ns;
	/* factor grows by ALPHA per second of sending at the effective rate: ALPHA / eff per message. */
	double eff = ceiling_of(l, e) * e->factor;
	e->factor += HR_AIMD_ALPHA * n / eff;
	retune(l, e);
}

double hr_limiter_effective_rate(const hr_limiter *l, const char *scope)
{
	const entry *e = lookup(l, scope);
	if (!e || e->conf <= 0)
		return 0;
	return ceiling_of(l, e) * e->factor;
}

uint32_t hr_limiter_count(const hr_limiter *l)
{
	return l->count;
}
