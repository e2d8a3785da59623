/*
 * liquid_cache.h -- a bounded, thread-safe cache of compiled templates.
 *
 * Workers render the same few templates millions of times; this cache
 * compiles each (tenant, template id, version) once and shares the
 * compiled form between threads.  A new version is a new key, so editing a
 * template never serves a stale compile; old versions age out.
 *
 * Bounds: at most max_entries templates and max_bytes of compiled memory
 * (liquid_template_memory); the least recently used entries are evicted
 * first.  An entry in use (acquired and not yet released) is never freed:
 * eviction unlinks it and the last release frees it.
 *
 *   liquid_cache_entry *e;
 *   if (!liquid_cache_acquire(cache, tenant, id, version, src, len, &popts, &e, &err))
 *       -> parse error (nothing is cached for a template that does not compile)
 *   liquid_render(r, liquid_cache_template(e), data, &ropts, &err);
 *   liquid_cache_release(cache, e);
 *
 * Thread safety: all functions are thread-safe (one mutex, held only for
 * table operations; parsing happens outside it, so two threads missing the
 * same key at once may both parse and one result is kept).
 * Errors: bool + liquid_error, like the rest of the engine.
 */
#ifndef HERALD_LIQUID_CACHE_H
#define HERALD_LIQUID_CACHE_H

#include <stdint.h>

#include "liquid.h"

typedef struct liquid_cache liquid_cache;
typedef struct liquid_cache_entry liquid_cache_entry;

typedef struct liquid_cache_stats {
	uint64_t hits, misses, evictions;
	size_t entries;   /* templates held */
	size_t bytes;     /* their compiled memory */
} liquid_cache_stats;

liquid_cache *liquid_cache_new(size_t max_entries, size_t max_bytes);
void liquid_cache_free(liquid_cache *c); /* all entries must be released */

/* Find (tenant, id, version) or compile src into it; the entry is held
 * until liquid_cache_release. */
bool liquid_cache_acquire(liquid_cache *c, const char *tenant, const char *id, uint64_t version,
			  const char *src, size_t len, const liquid_parse_opts *opts,
			  liquid_cache_entry **out, liquid_error *err) LIQUID_WUR;

/* Lookup only: NULL on a miss. */
liquid_cache_entry *liquid_cache_lookup(liquid_cache *c, const char *tenant, const char *id, uint64_t version);

const liquid_template *liquid_cache_template(const liquid_cache_entry *e);
void liquid_cache_release(liquid_cache *c, liquid_cache_entry *e);

/* Drop every version of one template (e.g. on delete); held entries are
 * freed on release. */
void liquid_cache_invalidate(liquid_cache *c, const char *tenant, const char *id);

liquid_cache_stats liquid_cache_stats_get(liquid_cache *c);

#endif
