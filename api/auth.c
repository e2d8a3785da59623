/*
 * auth.c -- see auth.h.
 */
#include "auth.h"

#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "crypto.h"

#define CACHE_SLOTS 1024  /* direct-mapped by hash: a collision only costs a lookup */
#define BUCKET_SLOTS 4096 /* open addressing by key pk */

typedef struct cached {
	char hash[65];
	int64_t until_ms;
	hr_principal p;
} cached;

typedef struct bucket {
	int64_t key_pk; /* 0 = free */
	double tokens;
	int64_t at_us;
} bucket;

struct api_keys {
	long cache_ms;
	long rps;
	pthread_mutex_t mu;
	cached *cache;
	bucket *buckets;
};

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

api_keys *api_keys_new(long cache_ms, long rps)
{
	api_keys *k = hr_calloc(1, sizeof *k);
	k->cache_ms = cache_ms;
	k->rps = rps;
	pthread_mutex_init(&k->mu, NULL);
	k->cache = hr_calloc(CACHE_SLOTS, sizeof *k->cache);
	k->buckets = hr_calloc(BUCKET_SLOTS, sizeof *k->buckets);
	return k;
}

void api_keys_free(api_keys *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->mu);
	hr_free(k->cache);
	hr_free(k->buckets);
	hr_free(k);
}

static size_t slot_of(const char *hash)
{
	size_t s = 0;
	for (int i = 0; i < 8; i++)
		s = s * 16 + (size_t)(hash[i] <= '9' ? hash[i] - '0' : hash[i] - 'a' + 10);
	return s % CACHE_SLOTS;
}

bool api_keys_verify(api_keys *k, PGconn *c, const char *key, hr_principal *out, hr_err *err)
{
	char hash[65];
	hr_sha256_hex(key, strlen(key), hash);
	size_t s = slot_of(hash);
	int64_t now = now_us() / 1000;
	if (k->cache_ms > 0) {
		pthread_mutex_lock(&k->mu);
		bool hit = k->cache[s].until_ms > now && hr_ct_equal(k->cache[s].hash, hash, 64);
		if (hit)
			*out = k->cache[s].p;
		pthread_mutex_unlock(&k->mu);
		if (hit)
			return true;
	}
	if (!hr_apikey_verify(c, key, out, err))
		return false;
	if (k->cache_ms > 0) {
		pthread_mutex_lock(&k->mu);
		memcpy(k->cache[s].hash, hash, sizeof hash);
		k->cache[s].until_ms = now + k->cache_ms;
		k->cache[s].p = *out;
		pthread_mutex_unlock(&k->mu);
	}
	return true;
}

/* The bucket of `id` (a key's pk; a tenant's or agency's id mapped below 0), refilled at rps; k->mu held. */
static bucket *bucket_at(api_keys *k, int64_t id, double rps, int64_t now)
{
	size_t i = (size_t)((uint64_t)id % BUCKET_SLOTS), probes = 0;
	while (k->buckets[i].key_pk && k->buckets[i].key_pk != id && probes++ < BUCKET_SLOTS)
		i = (i + 1) % BUCKET_SLOTS;
	bucket *b = &k->buckets[i];
	if (b->key_pk != id) {
		/* New key, or the table is full and we take over a slot: a fresh, full bucket. */
		b->key_pk = id;
		b->tokens = rps;
		b->at_us = now;
	}
	b->tokens += (double)(now - b->at_us) * rps / 1e6;
	if (b->tokens > rps)
		b->tokens = rps;
	b->at_us = now;
	return b;
}

static int retry_of(const bucket *b, double rps)
{
	int s = (int)ceil((1.0 - b->tokens) / rps);
	return s < 1 ? 1 : s;
}

bool api_keys_take(api_keys *k, int64_t key_pk, int *retry_after)
{
	if (k->rps <= 0)
		return true;
	pthread_mutex_lock(&k->mu);
	bucket *b = bucket_at(k, key_pk, (double)k->rps, now_us());
	bool ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	else
		*retry_after = retry_of(b, (double)k->rps);
	pthread_mutex_unlock(&k->mu);
	return ok;
}

bool api_limits_take(api_keys *k, int64_t tenant_id, int64_t tenant_rps, int64_t agency_id, int64_t agency_rps,
		     int *retry_after, const char **which)
{
	if (tenant_rps < 0 && agency_rps < 0)
		return true;
	pthread_mutex_lock(&k->mu);
	int64_t now = now_us();
	/* Keys' pks are above 0; tenants and agencies get the ids below it, apart. */
	bucket *t = tenant_rps >= 0 ? bucket_at(k, -2 * tenant_id, (double)tenant_rps, now) : NULL;
	bucket *a = agency_rps >= 0 ? bucket_at(k, -2 * agency_id - 1, (double)agency_rps, now) : NULL;
	bool ok = true;
	if (t && t->tokens < 1.0) {
		ok = false;
		*which = "this tenant";
		*retry_after = retry_of(t, (double)tenant_rps);
	} else if (a && a->tokens < 1.0) {
		ok = false;
		*which = "this agency";
		*retry_after = retry_of(a, (double)agency_rps);
	}
	if (ok) {
		if (t)
			t->tokens -= 1.0;
		if (a)
			a->tokens -= 1.0;
	}
	pthread_mutex_unlock(&k->mu);
	return ok;
}
