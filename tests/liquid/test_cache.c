/*
 * test_cache.c -- the compiled-template cache: compile once per
 * (tenant, id, version), LRU bound, entries held across eviction and
 * invalidation, parse errors not cached, concurrent use.
 */
#include <check.h>
#include <pthread.h>

#include "liquid_cache.h"
#include "liquid_test_util.h"

static const char *SRC = "Hi {{ n }}";

START_TEST(test_hit_miss_version)
{
	liquid_cache *c = liquid_cache_new(8, 0);
	liquid_cache_entry *a, *b, *v2;
	liquid_error err;
	ck_assert(liquid_cache_acquire(c, "t1", "welcome", 1, SRC, strlen(SRC), NULL, &a, &err));
	ck_assert(liquid_cache_acquire(c, "t1", "welcome", 1, "ignored on a hit", 16, NULL, &b, &err));
	ck_assert_msg(liquid_cache_template(a) == liquid_cache_template(b), "a hit must return the same compiled template");
	ck_assert(liquid_cache_acquire(c, "t1", "welcome", 2, "v2", 2, NULL, &v2, &err));
	ck_assert_msg(liquid_cache_template(v2) != liquid_cache_template(a), "a new version must compile anew");
	liquid_cache_stats st = liquid_cache_stats_get(c);
	ck_assert_msg(st.hits == 1 && st.misses == 2 && st.entries == 2, "got hits=%llu misses=%llu entries=%zu, want 1 2 2",
		      (unsigned long long)st.hits, (unsigned long long)st.misses, st.entries);
	ck_assert_ptr_null(liquid_cache_lookup(c, "t2", "welcome", 1));
	liquid_cache_release(c, a);
	liquid_cache_release(c, b);
	liquid_cache_release(c, v2);
	liquid_cache_free(c);
}
END_TEST

START_TEST(test_parse_error_not_cached)
{
	liquid_cache *c = liquid_cache_new(8, 0);
	liquid_cache_entry *e;
	liquid_error err;
	ck_assert(!liquid_cache_acquire(c, "t", "bad", 1, "{% if %}", 8, NULL, &e, &err));
	ck_assert_msg(err.kind == LIQUID_ERR_PARSE, "got kind %d, want PARSE", err.kind);
	ck_assert_msg(liquid_cache_stats_get(c).entries == 0, "a broken template must not be cached");
	liquid_cache_free(c);
}
END_TEST

START_TEST(test_lru_and_held_entries)
{
	liquid_cache *c = liquid_cache_new(2, 0);
	liquid_cache_entry *e1, *e2, *e3, *x;
	liquid_error err;
	ck_assert(liquid_cache_acquire(c, "t", "a", 1, SRC, strlen(SRC), NULL, &e1, &err));
	ck_assert(liquid_cache_acquire(c, "t", "b", 1, SRC, strlen(SRC), NULL, &e2, &err));
	liquid_cache_release(c, e2);
	/* touch a so b is the least recently used */
	x = liquid_cache_lookup(c, "t", "a", 1);
	ck_assert_ptr_nonnull(x);
	liquid_cache_release(c, x);
	ck_assert(liquid_cache_acquire(c, "t", "c", 1, SRC, strlen(SRC), NULL, &e3, &err));
	ck_assert_msg(liquid_cache_lookup(c, "t", "b", 1) == NULL, "b should have been evicted");
	x = liquid_cache_lookup(c, "t", "a", 1);
	ck_assert_msg(x != NULL, "a was used recently and should stay");
	liquid_cache_release(c, x);
	/* invalidate a while e1 still holds it: e1 stays usable */
	liquid_cache_invalidate(c, "t", "a");
	ck_assert_ptr_null(liquid_cache_lookup(c, "t", "a", 1));
	liquid_renderer *r = liquid_renderer_new();
	json_t *d = json_pack("{s:s}", "n", "Bo");
	liquid_render_opts ro = {0};
	ck_assert(liquid_render(r, liquid_cache_template(e1), d, &ro, &err));
	ck_assert_msg(strcmp(liquid_output(r, NULL), "Hi Bo") == 0, "got \"%s\", want \"Hi Bo\"", liquid_output(r, NULL));
	liquid_cache_release(c, e1); /* frees it */
	liquid_cache_release(c, e3);
	ck_assert_msg(liquid_cache_stats_get(c).evictions == 1, "got %llu evictions, want 1",
		      (unsigned long long)liquid_cache_stats_get(c).evictions);
	json_decref(d);
	liquid_renderer_free(r);
	liquid_cache_free(c);
}
END_TEST

START_TEST(test_byte_bound)
{
	liquid_cache *c = liquid_cache_new(1000, 20000);
	liquid_error err;
	char id[16];
	for (int i = 0; i < 200; i++) {
		liquid_cache_entry *e;
		snprintf(id, sizeof id, "t%d", i);
		ck_assert(liquid_cache_acquire(c, "tenant", id, 1, SRC, strlen(SRC), NULL, &e, &err));
		liquid_cache_release(c, e);
	}
	liquid_cache_stats st = liquid_cache_stats_get(c);
	ck_assert_msg(st.bytes <= 20000 && st.entries < 200, "got %zu bytes in %zu entries, want <= 20000", st.bytes, st.entries);
	liquid_cache_free(c);
}
END_TEST

typedef struct worker_arg {
	liquid_cache *c;
	int id;
	int bad;
} worker_arg;

static void *worker(void *p)
{
	worker_arg *w = p;
	liquid_renderer *r = liquid_renderer_new();
	json_t *d = json_pack("{s:i}", "n", w->id);
	char want[32], id[16];
	snprintf(want, sizeof want, "Hi %d", w->id);
	for (int i = 0; i < 2000; i++) {
		liquid_cache_entry *e;
		liquid_error err;
		snprintf(id, sizeof id, "tpl%d", i % 13);
		if (!liquid_cache_acquire(w->c, "tenant", id, (uint64_t)(i % 3), SRC, strlen(SRC), NULL, &e, &err)) {
			w->bad++;
			continue;
		}
		liquid_render_opts ro = {0};
		if (!liquid_render(r, liquid_cache_template(e), d, &ro, &err) || strcmp(liquid_output(r, NULL), want) != 0)
			w->bad++;
		liquid_cache_release(w->c, e);
	}
	json_decref(d);
	liquid_renderer_free(r);
	return NULL;
}

START_TEST(test_threads)
{
	liquid_cache *c = liquid_cache_new(10, 0); /* smaller than the key set: constant eviction */
	pthread_t th[4];
	worker_arg wa[4];
	for (int i = 0; i < 4; i++) {
		wa[i] = (worker_arg){.c = c, .id = i};
		pthread_create(&th[i], NULL, worker, &wa[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(wa[i].bad == 0, "thread %d: got %d bad renders, want 0", i, wa[i].bad);
	}
	ck_assert(liquid_cache_stats_get(c).entries <= 10);
	liquid_cache_free(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("liquid_cache");
	TCase *tc = tcase_create("cache");
	tcase_add_test(tc, test_hit_miss_version);
	tcase_add_test(tc, test_parse_error_not_cached);
	tcase_add_test(tc, test_lru_and_held_entries);
	tcase_add_test(tc, test_byte_bound);
	tcase_add_test(tc, test_threads);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
