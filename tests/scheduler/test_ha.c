/*
 * test_ha.c -- two herald-scheduler processes sharing the tenants of one
 * control database (scheduler/owner.h), with real workers connected to
 * both and the provider simulator: a second scheduler started mid-run takes
 * half the shards; while both run no tenant is served by both (their owned
 * tenant sets, sampled every 100 ms, never meet, and the provider sees no
 * message twice); SIGKILL one, and the other owns every shard within
 * seconds and finishes its tenants: every message ends with exactly one
 * result.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <curl/curl.h>

#include "alloc.h"
#include "db.h"
#include "harness.h"
#include "providers.h"
#include "psim.h"
#include "stack.h"

#include "owner.h"

#define NTENANTS 8
#define PER_TENANT 2500 /* 20,000 messages */

static void nap_ms(long ms)
{
	struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&d, NULL);
}

static pid_t worker_start(const char *dir, const char *name, const char *eps)
{
	char log[512];
	snprintf(log, sizeof log, "%s/%s.log", dir, name);
	const char *argv[] = {WORKER_PATH, "--channel", "sms", "--lane", "bulk", "--scheduler", eps,
			      "--metrics-port", "-1", "--credit=4", NULL};
	return th_spawn(argv, NULL, log, NULL);
}

static int stop_pid(pid_t pid, int sig)
{
	kill(pid, sig);
	int st = 0;
	int64_t deadline = sched_now_ms() + 30000;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (sched_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		nap_ms(10);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

typedef struct text {
	char *p;
	size_t len;
} text;

static size_t collect(char *p, size_t sz, size_t n, void *arg)
{
	text *t = arg;
	t->p = hr_realloc(t->p, t->len + sz * n + 1);
	memcpy(t->p + t->len, p, sz * n);
	t->len += sz * n;
	t->p[t->len] = '\0';
	return sz * n;
}

/* The scheduler's /metrics text (heap), or NULL when it does not answer. */
static char *metrics(const sproc *p)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", p->metrics_port);
	CURL *c = curl_easy_init();
	text b = {0};
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK || !b.p) {
		hr_free(b.p);
		return NULL;
	}
	return b.p;
}

/* Value of the series `name` ("name{labels}") in metrics text m, -1 if absent. */
static long series(const char *m, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = m; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return atol(p + n + 1);
	return -1;
}

static long owned_shards(const sproc *p)
{
	char *m = metrics(p);
	long v = m ? series(m, "herald_shards{state=\"owned\"}") : -1;
	hr_free(m);
	return v;
}

/* Bit i set: the scheduler holds tenant i's shard (owned or releasing). */
static unsigned owned_tenants(const sproc *p, const fixture *f)
{
	char *m = metrics(p);
	unsigned set = 0;
	for (int i = 0; m && i < NTENANTS; i++) {
		char key[128];
		snprintf(key, sizeof key, "herald_tenant_owned{tenant=\"%s\",", f->t[i].slug);
		if (strstr(m, key))
			set |= 1u << i;
	}
	hr_free(m);
	return set;
}

static long total_results(fixture *f)
{
	long n = 0;
	for (int i = 0; i < NTENANTS; i++)
		n += results(f, i);
	return n;
}

static int popcount(unsigned x)
{
	return __builtin_popcount(x);
}

/* While both run: wait for `want` results, checking every 100 ms that no tenant is held by both. */
static void run_until(fixture *f, sproc *a, sproc *b, long want, int ms, long *samples)
{
	int64_t deadline = sched_now_ms() + ms;
	while (total_results(f) < want && sched_now_ms() < deadline) {
		unsigned sa = owned_tenants(a, f), sb = b->pid ? owned_tenants(b, f) : 0;
		ck_assert_msg((sa & sb) == 0, "tenants held by both schedulers: %#x", sa & sb);
		(*samples)++;
		nap_ms(100);
	}
	ck_assert_msg(total_results(f) >= want, "only %ld of %ld results", total_results(f), want);
}

START_TEST(second_scheduler_takes_half_then_all_when_the_first_is_killed)
{
	fixture f;
	fixture_open(&f, NTENANTS);
	psim p;
	const char *args[] = {NULL};
	psim_start(&p, args);
	uint8_t key[HR_KEY_LEN];
	hr_err err = {0};
	ck_assert(hr_key_from_hex(MASTER_HEX, key, &err));
	for (int i = 0; i < NTENANTS; i++) {
		/* One simulator account per tenant: message ids repeat across tenants, the
		 * simulator counts duplicates per account.  250/s each stretches the run to
		 * ~10 s, so the second scheduler joins and the kill lands mid-run. */
		char cfg[256];
		snprintf(cfg, sizeof cfg, "{\"url\":\"http://127.0.0.1:%d/v1/send/sms/t%d\"}", p.port, i);
		hr_provider_spec sim = {.name = "sim", .channel = "sms", .transport = "http", .config = cfg,
					.rate_per_s = 250};
		ck_assert_msg(hr_provider_put(f.c, key, f.t[i].slug, &sim, &err), "%s", err.msg);
	}
	char a_ep[2][64], b_ep[2][64];
	for (int l = 0; l < 2; l++) {
		snprintf(a_ep[l], sizeof a_ep[l], "tcp://127.0.0.1:%d", free_port());
		snprintf(b_ep[l], sizeof b_ep[l], "tcp://127.0.0.1:%d", free_port());
	}
	const char *aeps[2] = {a_ep[0], a_ep[1]}, *beps[2] = {b_ep[0], b_ep[1]};
	const char *env = "HERALD_SCHED_LEASE_SIZE_BULK=100 HERALD_SCHED_LEASE_TIMEOUT_MS=5000";
	char adir[600], bdir[600];
	snprintf(adir, sizeof adir, "%s/a", f.dir);
	snprintf(bdir, sizeof bdir, "%s/b", f.dir);
	ck_assert_int_eq(th_sh(NULL, "mkdir -p '%s' '%s'", adir, bdir), 0);

	/* One scheduler alone owns every shard; the workers already list both. */
	sproc a = {0}, b = {0};
	sched_start(&a, f.dsn, adir, aeps, env);
	/* Its metrics answer once it listens; it owns the shards after its first
	 * rebalance -- under load that can be a moment later. */
	long owned = -1;
	for (int64_t end = sched_now_ms() + 15000; (owned = owned_shards(&a)) != OWNER_SHARDS && sched_now_ms() < end;) {
		struct timespec d = {0, 100000000};
		nanosleep(&d, NULL);
	}
	ck_assert_int_eq(owned, OWNER_SHARDS);
	char both[160];
	snprintf(both, sizeof both, "%s,%s", a_ep[1], b_ep[1]);
	pid_t w1 = worker_start(f.dir, "worker-1", both), w2 = worker_start(f.dir, "worker-2", both);
	for (int i = 0; i < NTENANTS; i++)
		enqueue(&f, i, "sms", "bulk", PER_TENANT, "sim");
	long samples = 0;
	run_until(&f, &a, &b, 2000, 60000, &samples);

	/* A second one joins: about half the shards move to it, handed over without a double send. */
	int64_t t0 = sched_now_ms();
	sched_start(&b, f.dsn, bdir, beps, env);
	long oa = -1, ob = -1;
	while (sched_now_ms() - t0 < 20000) {
		oa = owned_shards(&a);
		ob = owned_shards(&b);
		if (oa == OWNER_SHARDS / 2 && ob == OWNER_SHARDS / 2)
			break;
		unsigned sa = owned_tenants(&a, &f), sb = owned_tenants(&b, &f);
		ck_assert_msg((sa & sb) == 0, "tenants held by both schedulers: %#x", sa & sb);
		samples++;
		nap_ms(100);
	}
	ck_assert_msg(oa == OWNER_SHARDS / 2 && ob == OWNER_SHARDS / 2, "shards after the join: a=%ld b=%ld", oa,
		      ob);
	printf("join: shards split 128/128 in %lld ms\n", (long long)(sched_now_ms() - t0));
	long at_join = total_results(&f);
	ck_assert_msg(at_join < NTENANTS * PER_TENANT, "the run ended before the join was over");

	/* Both serve: at 40 % kill the one holding more tenants (it holds at least 4 of 8). */
	run_until(&f, &a, &b, NTENANTS * PER_TENANT * 2 / 5, 60000, &samples);
	unsigned sa = owned_tenants(&a, &f), sb = owned_tenants(&b, &f);
	ck_assert_int_eq(popcount(sa) + popcount(sb), NTENANTS);
	ck_assert_int_eq(sa & sb, 0);
	json_t *st = psim_get_json(&p, "/v1/stats");
	long dup_before = (long)jpath(st, "totals.duplicates");
	json_decref(st);
	ck_assert_msg(dup_before == 0, "%ld messages sent twice while both schedulers ran", dup_before);
	sproc *victim = popcount(sa) >= popcount(sb) ? &a : &b, *survivor = victim == &a ? &b : &a;
	unsigned vset = victim == &a ? sa : sb;
	long unfinished = 0;
	for (int i = 0; i < NTENANTS; i++)
		if (vset & (1u << i))
			unfinished += PER_TENANT - results(&f, i);
	ck_assert_msg(unfinished > 0, "the victim's tenants were finished already");
	int64_t k0 = sched_now_ms();
	ck_assert_int_eq(sched_stop(victim, SIGKILL), 128 + SIGKILL);
	long os = -1;
	while (sched_now_ms() - k0 < 15000 && (os = owned_shards(survivor)) != OWNER_SHARDS)
		nap_ms(50);
	int64_t takeover_ms = sched_now_ms() - k0;
	printf("takeover: survivor owns %ld shards %lld ms after the SIGKILL; victim's tenants had %ld "
	       "messages left; %ld ownership samples\n",
	       os, (long long)takeover_ms, unfinished, samples);
	ck_assert_int_eq(os, OWNER_SHARDS);
	ck_assert_msg(takeover_ms <= 10000, "takeover took %lld ms", (long long)takeover_ms);
	ck_assert_int_eq(popcount(owned_tenants(survivor, &f)), NTENANTS);

	/* Everything ends with exactly one result, sent, in its own tenant. */
	int64_t deadline = sched_now_ms() + 120000;
	while (total_results(&f) < NTENANTS * PER_TENANT && sched_now_ms() < deadline)
		nap_ms(100);
	for (int i = 0; i < NTENANTS; i++) {
		const char *sc = f.t[i].schema;
		ck_assert_int_eq(results(&f, i), PER_TENANT);
		ck_assert_int_eq(q(&f, "SELECT count(DISTINCT message_id) FROM %s.results", sc), PER_TENANT);
		ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results WHERE status = 'sent'", sc), PER_TENANT);
		ck_assert_int_eq(q(&f, "SELECT count(*) FROM %s.results r WHERE NOT EXISTS (SELECT 1 FROM %s.outbox o "
				       "WHERE o.id = r.message_id / 4096 AND r.message_id %% 4096 < cardinality(o.addresses))",
				   sc), 0);
	}
	/* The provider got every message; a second send only for what was in flight at the kill:
	 * at most 2 workers x 4 leases x 100 messages on the victim's link. */
	st = psim_get_json(&p, "/v1/stats");
	long accepted = (long)jpath(st, "totals.accepted"), dups = (long)jpath(st, "totals.duplicates");
	json_decref(st);
	printf("provider: accepted=%ld duplicates=%ld\n", accepted, dups);
	ck_assert_int_eq(accepted - dups, NTENANTS * PER_TENANT);
	ck_assert_msg(dups <= 2 * 4 * 100, "%ld duplicate sends, more than was in flight", dups);

	ck_assert_int_eq(stop_pid(w1, SIGTERM), 0);
	ck_assert_int_eq(stop_pid(w2, SIGTERM), 0);
	ck_assert_int_eq(sched_stop(survivor, SIGTERM), 0);
	psim_stop(&p);
	fixture_close(&f);
}
END_TEST

/* Consecutive tenant ids spread over the shards (the ids of one installation are 1, 2, 3, ...). */
START_TEST(consecutive_tenant_ids_spread_over_the_shards)
{
	int count[OWNER_SHARDS] = {0};
	for (uint32_t id = 1; id <= 25600; id++)
		count[owner_shard_of(id)]++;
	int lo = 1 << 30, hi = 0;
	for (int i = 0; i < OWNER_SHARDS; i++) {
		lo = count[i] < lo ? count[i] : lo;
		hi = count[i] > hi ? count[i] : hi;
	}
	/* 100 per shard on average */
	ck_assert_msg(lo >= 60 && hi <= 140, "shard sizes %d..%d for 25,600 ids", lo, hi);
	/* and the first 8 ids do not share one shard */
	int first = owner_shard_of(1), same = 0;
	for (uint32_t id = 2; id <= 8; id++)
		same += owner_shard_of(id) == first;
	ck_assert_int_lt(same, 7);
}
END_TEST

int main(void)
{
	th_pg_dsn();
	char *root = psim_root_new();
	Suite *s = suite_create("scheduler_ha");
	TCase *tc = th_tcase("shards");
	tcase_add_test(tc, consecutive_tenant_ids_spread_over_the_shards);
	suite_add_tcase(s, tc);
	tc = th_tcase("failover");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, second_scheduler_takes_half_then_all_when_the_first_is_killed);
	suite_add_tcase(s, tc);
	int rc = th_run(s);
	psim_root_remove(root);
	return rc;
}
