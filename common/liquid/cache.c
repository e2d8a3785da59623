/*
 * cache.c -- see liquid_cache.h.  A chained hash table plus an LRU list,
 * under one mutex.
 */
#include <pthread.h>
#include <string.h>

#include "alloc.h"
#include "liquid_cache.h"

struct liquid_cache_entry {
	char *tenant;
	char *id;
	uint64_t version;
	uint64_t hash;
	liquid_template *tpl;
	size_t bytes;
	unsigned refs;                 /* holders (acquire - release) */
	bool linked;                   /* in the table and LRU list */
	liquid_cache_entry *next;      /* hash chain */
	liquid_cache_entry *lru_prev;  /* towards most recent */
	liquid_cache_entry *lru_next;  /* towards least recent */
};

struct liquid_cache {
	pthread_mutex_t mu;
	liquid_cache_entry **buckets;
	size_t nbuckets;
	liquid_cache_entry *mru, *lru;
	size_t max_entries, max_bytes;
	liquid_cache_stats st;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static uint64_t key_hash(const char *tenant, const char *id, uint64_t version)
{
	uint64_t h = 14695981039346656037ull;
	h = fnv(h, tenant, strlen(tenant) + 1);
	h = fnv(h, id, strlen(id) + 1);
	return fnv(h, &version, sizeof version);
}

liquid_cache *liquid_cache_new(size_t max_entries, size_t max_bytes)
{
	liquid_cache *c = hr_calloc(1, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	c->max_entries = max_entries ? max_entries : 1024;
	c->max_bytes = max_bytes ? max_bytes : (size_t)64 << 20;
	c->nbuckets = 64;
	while (c->nbuckets < c->max_entries)
		c->nbuckets *= 2;
	c->buckets = hr_calloc(c->nbuckets, sizeof *c->buckets);
	return c;
}

static void entry_free(liquid_cache_entry *e)
{
	liquid_template_free(e->tpl);
	hr_free(e->tenant);
	hr_free(e->id);
	hr_free(e);
}

static void lru_unlink(liquid_cache *c, liquid_cache_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		c->mru = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		c->lru = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_front(liquid_cache *c, liquid_cache_entry *e)
{
	e->lru_next = c->mru;
	e->lru_prev = NULL;
	if (c->mru)
		c->mru->lru_prev = e;
	c->mru = e;
	if (!c->lru)
		c->lru = e;
}

/* Remove from table and list; free now if nobody holds it. */
static void unlink_entry(liquid_cache *c, liquid_cache_entry *e)
{
	liquid_cache_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
	lru_unlink(c, e);
	e->linked = false;
	c->st.entries--;
	c->st.bytes -= e->bytes;
	if (e->refs == 0)
		entry_free(e);
}

static liquid_cache_entry *find(liquid_cache *c, uint64_t h, const char *tenant, const char *id, uint64_t version)
{
	for (liquid_cache_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->next)
		if (e->hash == h && e->version == version && strcmp(e->tenant, tenant) == 0 && strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

static void evict(liquid_cache *c)
{
	while ((c->st.entries > c->max_entries || c->st.bytes > c->max_bytes) && c->lru) {
		unlink_entry(c, c->lru);
		c->st.evictions++;
	}
}

liquid_cache_entry *liquid_cache_lookup(liquid_cache *c, const char *tenant, const char *id, uint64_t version)
{
	uint64_t h = key_hash(tenant, id, version);
	pthread_mutex_lock(&c->mu);
	liquid_cache_entry *e = find(c, h, tenant, id, version);
	if (e) {
		e->refs++;
		lru_unlink(c, e);
		lru_front(c, e);
		c->st.hits++;
	}
	pthread_mutex_unlock(&c->mu);
	return e;
}

bool liquid_cache_acquire(liquid_cache *c, const char *tenant, const char *id, uint64_t version,
			  const char *src, size_t len, const liquid_parse_opts *opts,
			  liquid_cache_entry **out, liquid_error *err)
{
	memset(err, 0, sizeof *err);
	liquid_cache_entry *e = liquid_cache_lookup(c, tenant, id, version);
	if (e) {
		*out = e;
		return true;
	}
	liquid_template *t;
	if (!liquid_parse(src, len, opts, &t, err)) {
		pthread_mutex_lock(&c->mu);
		c->st.misses++;
		pthread_mutex_unlock(&c->mu);
		return false;
	}
	uint64_t h = key_hash(tenant, id, version);
	pthread_mutex_lock(&c->mu);
	c->st.misses++;
	e = find(c, h, tenant, id, version);
	if (e) {
		/* another thread compiled it meanwhile: use theirs */
		e->refs++;
		pthread_mutex_unlock(&c->mu);
		liquid_template_free(t);
		*out = e;
		return true;
	}
	e = hr_calloc(1, sizeof *e);
	e->tenant = hr_strdup(tenant);
	e->id = hr_strdup(id);
	e->version = version;
	e->hash = h;
	e->tpl = t;
	e->bytes = liquid_template_memory(t);
	e->refs = 1;
	e->linked = true;
	liquid_cache_entry **b = &c->buckets[h & (c->nbuckets - 1)];
	e->next = *b;
	*b = e;
	lru_front(c, e);
	c->st.entries++;
	c->st.bytes += e->bytes;
	evict(c);
	pthread_mutex_unlock(&c->mu);
	*out = e;
	return true;
}

const liquid_template *liquid_cache_template(const liquid_cache_entry *e)
{
	return e->tpl;
}

void liquid_cache_release(liquid_cache *c, liquid_cache_entry *e)
{
	pthread_mutex_lock(&c->mu);
	e->refs--;
	bool dead = e->refs == 0 && !e->linked;
	pthread_mutex_unlock(&c->mu);
	if (dead)
		entry_free(e);
}

void liquid_cache_invalidate(liquid_cache *c, const char *tenant, const char *id)
{
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->nbuckets; i++) {
		liquid_cache_entry *e = c->buckets[i];
		while (e) {
			liquid_cache_entry *nx = e->next;
			if (strcmp(e->tenant, tenant) == 0 && strcmp(e->id, id) == 0)
				unlink_entry(c, e);
			e = nx;
		}
	}
	pthread_mutex_unlock(&c->mu);
}

liquid_cache_stats liquid_cache_stats_get(liquid_cache *c)
{
	pthread_mutex_lock(&c->mu);
	liquid_cache_stats s = c->st;
	pthread_mutex_unlock(&c->mu);
	return s;
}

void liquid_cache_free(liquid_cache *c)
{
	if (!c)
		return;
	while (c->lru)
		unlink_entry(c, c->lru);
	hr_free(c->buckets);
	pthread_mutex_destroy(&c->mu);
	hr_free(c);
}
