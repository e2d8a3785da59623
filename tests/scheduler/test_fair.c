/*
 * test_fair.c -- golden tests of scheduler/fair.c (weighted deficit round
 * robin): a million-message tenant does not starve small ones, weights give
 * their shares, rate-limited tenants block nobody, joiners are served at
 * once, idle tenants never appear.
 */
#include <stdio.h>
#include <stdlib.h>

#include "alloc.h"
#include "fair.h"
#include "harness.h"

/* What the dispatcher does after sending `used` of a tenant's messages: new backlog, then charge. */
static void sent(hr_fair *f, uint32_t tenant, uint32_t used)
{
	hr_fair_set_backlog(f, tenant, hr_fair_backlog(f, tenant) - used);
	hr_fair_charge(f, tenant, used);
}

/* One turn as the dispatcher does it: take the allowance (or at most `cap`), account for it. */
static uint32_t turn(hr_fair *f, uint32_t cap, uint32_t *tenant, uint32_t *allowance)
{
	if (!hr_fair_next(f, tenant, allowance))
		return 0;
	uint32_t used = *allowance < cap ? *allowance : cap;
	sent(f, *tenant, used);
	return used;
}

/* 1 tenant with 1,000,000 pending, 9 with 1,000: the 9 finish after ~10 x 1,000 messages. */
static const uint32_t big_small_quanta[] = {1, 10, 100, 500, 1000};

START_TEST(big_tenant_does_not_starve_small_ones)
{
	uint32_t q = big_small_quanta[_i];
	hr_fair *f = hr_fair_new(q);
	hr_fair_set_backlog(f, 1, 1000000);
	for (uint32_t t = 2; t <= 10; t++)
		hr_fair_set_backlog(f, t, 1000);
	uint64_t total = 0, small_done_at = 0, per[11] = {0};
	uint32_t tenant, a;
	int small_left = 9;
	for (;;) {
		uint32_t used = turn(f, UINT32_MAX, &tenant, &a);
		if (!used && !hr_fair_active(f))
			break;
		ck_assert_msg(tenant >= 1 && tenant <= 10, "quantum %u: got tenant %u, want 1..10", q, tenant);
		per[tenant] += used;
		total += used;
		if (tenant != 1 && hr_fair_backlog(f, tenant) == 0 && --small_left == 0)
			small_done_at = total;
	}
	printf("fair quantum %-5u small tenants all done after %llu dispatched (of %llu)\n", q,
	       (unsigned long long)small_done_at, (unsigned long long)total);
	ck_assert_msg(small_done_at > 0 && small_done_at <= 10500,
		      "quantum %u: small tenants done after %llu, want <= 10 x 1000 x 1.05", q,
		      (unsigned long long)small_done_at);
	ck_assert_msg(per[1] == 1000000, "quantum %u: big tenant got %llu, want 1000000", q,
		      (unsigned long long)per[1]);
	for (uint32_t t = 2; t <= 10; t++)
		ck_assert_msg(per[t] == 1000, "quantum %u: tenant %u got %llu, want 1000", q, t,
			      (unsigned long long)per[t]);
	ck_assert_msg(total == 1009000, "quantum %u: total got %llu, want 1009000", q, (unsigned long long)total);
	hr_fair_free(f);
}
END_TEST

static const struct {
	uint32_t quantum;
	uint32_t w[3];	  /* weights of tenants 1..3 (0 = absent) */
	uint32_t cap[3];  /* most each can use per turn (rate limits), UINT32_MAX = all */
	double want[3];	  /* share of what was dispatched */
} share_cases[] = {
	{100, {1, 3, 0}, {UINT32_MAX, UINT32_MAX, 0}, {0.25, 0.75, 0}},
	{7, {1, 3, 0}, {UINT32_MAX, UINT32_MAX, 0}, {0.25, 0.75, 0}},
	{50, {2, 1, 1}, {UINT32_MAX, UINT32_MAX, UINT32_MAX}, {0.5, 0.25, 0.25}},
	/* Weight 0 is weight 1. */
	{100, {0, 1, 0}, {UINT32_MAX, UINT32_MAX, 0}, {0.5, 0.5, 0}},
	/* Tenant 1 can send only 10 per turn: the others are not held back and split the rest. */
	{100, {1, 1, 1}, {10, UINT32_MAX, UINT32_MAX}, {10.0 / 210, 100.0 / 210, 100.0 / 210}},
	/* Tenant 1 can send nothing at all (held by its provider): it blocks nobody. */
	{100, {1, 1, 1}, {0, UINT32_MAX, UINT32_MAX}, {0, 0.5, 0.5}},
};

START_TEST(weights_give_shares_and_limited_tenants_block_nobody)
{
	hr_fair *f = hr_fair_new(share_cases[_i].quantum);
	for (uint32_t t = 1; t <= 3; t++) {
		if (!share_cases[_i].cap[t - 1] && !share_cases[_i].w[t - 1])
			continue; /* absent from this case */
		hr_fair_set_weight(f, t, share_cases[_i].w[t - 1]);
		hr_fair_set_backlog(f, t, 100000000);
	}
	uint64_t got[4] = {0}, total = 0, max_allowance[4] = {0};
	uint32_t tenant, a;
	for (int i = 0; i < 30000; i++) {
		ck_assert(hr_fair_next(f, &tenant, &a));
		ck_assert_msg(tenant >= 1 && tenant <= 3, "case %d: got tenant %u", _i, tenant);
		uint32_t cap = share_cases[_i].cap[tenant - 1];
		uint32_t used = a < cap ? a : cap;
		sent(f, tenant, used);
		got[tenant] += used;
		total += used;
		if (a > max_allowance[tenant])
			max_allowance[tenant] = a;
	}
	for (uint32_t t = 1; t <= 3; t++) {
		double share = (double)got[t] / (double)total;
		ck_assert_msg(share >= share_cases[_i].want[t - 1] - 0.005 && share <= share_cases[_i].want[t - 1] + 0.005,
			      "case %d tenant %u: share got %.4f, want %.4f +- 0.005", _i, t, share,
			      share_cases[_i].want[t - 1]);
		/* Unused credit is capped: never more than 2 quanta x weight at once. */
		uint32_t w = share_cases[_i].w[t - 1] ? share_cases[_i].w[t - 1] : 1;
		ck_assert_msg(max_allowance[t] <= 2ull * share_cases[_i].quantum * w,
			      "case %d tenant %u: allowance got %llu, want <= %llu", _i, t,
			      (unsigned long long)max_allowance[t], 2ull * share_cases[_i].quantum * w);
	}
	hr_fair_free(f);
}
END_TEST

START_TEST(joining_tenant_gets_its_share_at_once)
{
	hr_fair *f = hr_fair_new(100);
	hr_fair_set_backlog(f, 1, 1000000);
	hr_fair_set_backlog(f, 2, 1000000);
	uint32_t tenant, a;
	uint64_t total = 0;
	while (total < 50000)
		total += turn(f, UINT32_MAX, &tenant, &a);
	hr_fair_set_backlog(f, 3, 1000000);
	/* Served within one round of those already waiting. */
	int turns = 0;
	do {
		ck_assert(hr_fair_next(f, &tenant, &a));
		sent(f, tenant, a);
		turns++;
	} while (tenant != 3);
	ck_assert_msg(turns <= 3, "joiner served after %d turns, want <= 3", turns);
	uint64_t got[4] = {0};
	total = 0;
	while (total < 30000) {
		uint32_t used = turn(f, UINT32_MAX, &tenant, &a);
		got[tenant] += used;
		total += used;
	}
	for (uint32_t t = 1; t <= 3; t++) {
		double share = (double)got[t] / (double)total;
		ck_assert_msg(share > 0.33 && share < 0.337, "tenant %u: share after the join got %.4f, want 1/3", t,
			      share);
	}
	hr_fair_free(f);
}
END_TEST

START_TEST(idle_tenants_never_appear)
{
	hr_fair *f = hr_fair_new(10);
	/* 10,000 known tenants, weighted, that had backlog once and have none now. */
	for (uint32_t t = 1; t <= 10000; t++) {
		hr_fair_set_weight(f, t, 1 + t % 5);
		hr_fair_set_backlog(f, t, 5);
		if (t != 17 && t != 4242 && t != 9999)
			hr_fair_set_backlog(f, t, 0);
	}
	ck_assert_msg(hr_fair_active(f) == 3, "active got %u, want 3", hr_fair_active(f));
	hr_fair_set_backlog(f, 4242, 1000);
	uint32_t tenant, a, seen[3] = {0};
	int turns = 0;
	/* 17 (weight 3) and 9999 (weight 5) drain in one turn; 4242 (weight 3) needs ceil(1000 / 30). */
	while (hr_fair_next(f, &tenant, &a)) {
		ck_assert_msg(tenant == 17 || tenant == 4242 || tenant == 9999, "got idle tenant %u", tenant);
		seen[tenant == 17 ? 0 : tenant == 4242 ? 1 : 2]++;
		sent(f, tenant, a);
		ck_assert_msg(++turns <= 100, "round does not drain");
	}
	ck_assert_msg(seen[0] == 1 && seen[1] == 34 && seen[2] == 1, "turns got %u/%u/%u, want 1/34/1", seen[0],
		      seen[1], seen[2]);
	ck_assert_msg(hr_fair_active(f) == 0, "active got %u after draining, want 0", hr_fair_active(f));
	hr_fair_free(f);
}
END_TEST

START_TEST(drained_round_reports_nothing)
{
	hr_fair *f = hr_fair_new(0); /* quantum 0 is 1 */
	uint32_t tenant = 0, a = 0;
	ck_assert_msg(!hr_fair_next(f, &tenant, &a), "empty: got a tenant, want none");
	hr_fair_charge(f, 77, 5); /* unknown: no effect */
	hr_fair_set_backlog(f, 5, 2);
	ck_assert(hr_fair_next(f, &tenant, &a));
	ck_assert_msg(tenant == 5 && a == 1, "got tenant %u allowance %u, want 5 and 1", tenant, a);
	/* Charging does not touch the backlog: only set_backlog does. */
	hr_fair_charge(f, 5, 1);
	ck_assert_msg(hr_fair_backlog(f, 5) == 2 && hr_fair_active(f) == 1, "got backlog %llu active %u, want 2 1",
		      (unsigned long long)hr_fair_backlog(f, 5), hr_fair_active(f));
	/* Overcharging (a dispatcher bug) saturates instead of wrapping into a huge credit. */
	ck_assert(hr_fair_next(f, &tenant, &a));
	hr_fair_charge(f, 5, 1000);
	ck_assert(hr_fair_next(f, &tenant, &a));
	ck_assert_msg(a == 1, "after overcharge: allowance got %u, want 1", a);
	hr_fair_set_backlog(f, 5, 0);
	ck_assert_msg(hr_fair_active(f) == 0, "active got %u, want 0", hr_fair_active(f));
	ck_assert_msg(!hr_fair_next(f, &tenant, &a), "drained: got tenant %u, want none", tenant);
	/* Leaving and coming back forgets the credit. */
	hr_fair_set_backlog(f, 5, 100);
	ck_assert(hr_fair_next(f, &tenant, &a) && a == 1);
	/* The head leaving through set_backlog(0) keeps the round consistent. */
	hr_fair_set_backlog(f, 5, 0);
	hr_fair_set_backlog(f, 1, 10);
	hr_fair_set_backlog(f, 2, 10);
	hr_fair_set_backlog(f, 3, 10);
	hr_fair_set_backlog(f, 1, 0);
	ck_assert(hr_fair_next(f, &tenant, &a) && tenant == 2);
	ck_assert(hr_fair_next(f, &tenant, &a) && tenant == 3);
	ck_assert(hr_fair_next(f, &tenant, &a) && tenant == 2);
	hr_fair_free(f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("scheduler_fair");
	TCase *tc = th_tcase("fair");
	tcase_add_loop_test(tc, big_tenant_does_not_starve_small_ones, 0,
			    sizeof big_small_quanta / sizeof big_small_quanta[0]);
	tcase_add_loop_test(tc, weights_give_shares_and_limited_tenants_block_nobody, 0,
			    sizeof share_cases / sizeof share_cases[0]);
	tcase_add_test(tc, joining_tenant_gets_its_share_at_once);
	tcase_add_test(tc, idle_tenants_never_appear);
	tcase_add_test(tc, drained_round_reports_nothing);
	suite_add_tcase(s, tc);
	return th_run(s);
}
