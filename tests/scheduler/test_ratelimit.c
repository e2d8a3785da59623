/*
 * test_ratelimit.c -- golden tests of scheduler/ratelimit.c, driven by a fake
 * clock: take semantics, pacing figures against DESIGN.md's 500/s row, the
 * AIMD loop against a fake provider that throttles above 300/s, the
 * multi-scheduler share, and the scope table at thousands of scopes.
 *
 * The simulations are deterministic (no wall clock, fixed seeds), so the
 * DESIGN.md bounds are asserted, not just printed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "harness.h"
#include "ratelimit.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* ---- recorded grants: (time, count) events ---- */

typedef struct events {
	uint64_t *t;
	uint32_t *c;
	size_t n, cap;
} events;

static void ev_add(events *e, uint64_t t, uint32_t c)
{
	if (!c)
		return;
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 1024;
		e->t = hr_realloc(e->t, e->cap * sizeof *e->t);
		e->c = hr_realloc(e->c, e->cap * sizeof *e->c);
	}
	e->t[e->n] = t;
	e->c[e->n] = c;
	e->n++;
}

static void ev_free(events *e)
{
	hr_free(e->t);
	hr_free(e->c);
	memset(e, 0, sizeof *e);
}

/* Most grants in any window [a, a + w) with a >= from, counting events before `to`. */
static uint64_t ev_max_window(const events *e, uint64_t from, uint64_t to, uint64_t w)
{
	uint64_t best = 0, sum = 0;
	size_t j = 0;
	for (size_t i = 0; i < e->n; i++) {
		if (e->t[i] < from || e->t[i] >= to)
			continue;
		if (j < i)
			j = i, sum = 0;
		while (j < e->n && e->t[j] < e->t[i] + w && e->t[j] < to)
			sum += e->c[j++];
		if (sum > best)
			best = sum;
		sum -= e->c[i];
	}
	return best;
}

/* Grants in [from, to). */
static uint64_t ev_sum(const events *e, uint64_t from, uint64_t to)
{
	uint64_t s = 0;
	for (size_t i = 0; i < e->n; i++)
		if (e->t[i] >= from && e->t[i] < to)
			s += e->c[i];
	return s;
}

typedef struct pacing {
	uint64_t max_1s;   /* most grants in any 1-s window */
	uint64_t min_1s;   /* fewest in a tumbling 1-s window */
	double sustained;  /* grants per second over the run */
	double cv_100ms;   /* coefficient of variation of tumbling 100-ms counts */
	uint64_t max_100ms;
} pacing;

static pacing measure(const events *e, uint64_t dur)
{
	pacing p = {.max_1s = ev_max_window(e, 0, dur, SEC), .min_1s = UINT64_MAX,
		    .max_100ms = ev_max_window(e, 0, dur, 100 * MS)};
	p.sustained = (double)ev_sum(e, 0, dur) / ((double)dur / SEC);
	for (uint64_t a = 0; a + SEC <= dur; a += SEC) {
		uint64_t s = ev_sum(e, a, a + SEC);
		if (s < p.min_1s)
			p.min_1s = s;
	}
	size_t nw = dur / (100 * MS);
	double *w = hr_calloc(nw, sizeof *w);
	for (size_t i = 0; i < e->n; i++)
		if (e->t[i] < nw * 100 * MS)
			w[e->t[i] / (100 * MS)] += e->c[i];
	double mean = 0, var = 0;
	for (size_t i = 0; i < nw; i++)
		mean += w[i];
	mean /= (double)nw;
	for (size_t i = 0; i < nw; i++)
		var += (w[i] - mean) * (w[i] - mean);
	var /= (double)nw;
	p.cv_100ms = sqrt(var) / mean;
	hr_free(w);
	return p;
}

/* Deterministic PRNG (xorshift64*), fixed seeds. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* ---- take semantics ---- */

START_TEST(unconfigured_scopes_are_unlimited)
{
	hr_limiter *l = hr_limiter_new();
	const char *sc[] = {"tenant:1", "domain:example.org"};
	uint64_t wait = 99;
	uint32_t g = hr_limiter_take(l, sc, 2, 100000, 0, &wait);
	ck_assert_msg(g == 100000 && wait == 0, "got %u wait %llu, want 100000 wait 0", g,
		      (unsigned long long)wait);
	ck_assert_msg(hr_limiter_take(l, NULL, 0, 7, 0, &wait) == 7, "no scopes: want 7");
	ck_assert_msg(hr_limiter_effective_rate(l, "tenant:1") == 0, "unconfigured: want rate 0 (unlimited)");
	ck_assert_uint_eq(hr_limiter_count(l), 0);
	hr_limiter_free(l);
}
END_TEST

/* First take at t = 0 and the wait it reports, for several rates and burst windows. */
static const struct {
	double rate;
	uint32_t burst_ms;
	uint32_t want_first;   /* granted at once: the burst, never a second's worth */
	uint64_t want_wait_ns; /* until the next token */
	uint64_t t0;	       /* monotonic time of the first take */
} start_cases[] = {
	{500, 10, 5, 2 * MS, 0},  /* burst = 500 x 10 ms, at clock zero */
	{500, 10, 5, 2 * MS, 123 * SEC}, /* the same at an arbitrary start */
	{50, 10, 1, 20 * MS, 5 * SEC},	/* burst floor is 1 */
	{1, 10, 1, SEC, 0},	  /* one per second, at clock zero */
	{1, 10, 1, SEC, 7 * SEC},
	{10000, 10, 100, 100000, 9 * SEC}, /* 100 at once, then every 0.1 ms */
	{500, 20, 10, 2 * MS, 9 * SEC},	/* bigger window, bigger burst */
	{300, 10, 3, 3333333, 9 * SEC},	/* interval rounded to the ns */
};

START_TEST(start_grants_only_the_burst)
{
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_burst_ms(l, start_cases[_i].burst_ms);
	hr_limiter_set_rate(l, "tenant:1", start_cases[_i].rate);
	const char *sc[] = {"tenant:1"};
	uint64_t wait = 0;
	uint64_t t0 = start_cases[_i].t0;
	uint32_t g = hr_limiter_take(l, sc, 1, 1000000, t0, &wait);
	ck_assert_msg(g == start_cases[_i].want_first && wait == start_cases[_i].want_wait_ns,
		      "rate %.0f burst %u ms: got %u wait %llu, want %u wait %llu", start_cases[_i].rate,
		      start_cases[_i].burst_ms, g, (unsigned long long)wait, start_cases[_i].want_first,
		      (unsigned long long)start_cases[_i].want_wait_ns);
	/* Just before the wait: nothing; at it: exactly one. */
	g = hr_limiter_take(l, sc, 1, 1000, t0 + wait - 1, NULL);
	ck_assert_msg(g == 0, "rate %.0f: got %u just before the wait, want 0", start_cases[_i].rate, g);
	g = hr_limiter_take(l, sc, 1, 1000, t0 + wait, NULL);
	ck_assert_msg(g == 1, "rate %.0f: got %u at the wait, want 1", start_cases[_i].rate, g);
	/* After a long idle period: again only the burst. */
	g = hr_limiter_take(l, sc, 1, 1000000, t0 + 3600 * SEC, NULL);
	ck_assert_msg(g == start_cases[_i].want_first, "rate %.0f after idle: got %u, want %u",
		      start_cases[_i].rate, g, start_cases[_i].want_first);
	hr_limiter_free(l);
}
END_TEST

START_TEST(smallest_rate_wins_and_blocked_tokens_are_not_charged)
{
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_rate(l, "tenant:1", 1000);
	hr_limiter_set_rate(l, "domain:gmail.com", 10);
	const char *both[] = {"tenant:1", "domain:gmail.com", "sender:1/example.com"};
	const char *tenant[] = {"tenant:1"};
	uint64_t got = 0;
	/* 10 s of asking for both every ms: the domain's 10/s decides. */
	for (uint64_t t = 0; t < 10 * SEC; t += MS)
		got += hr_limiter_take(l, both, 3, 1000, t, NULL);
	ck_assert_msg(got >= 100 && got <= 101, "both scopes over 10 s: got %llu, want 100..101 (10/s)",
		      (unsigned long long)got);
	/* The tenant scope was charged only for granted tokens: its full burst is there. */
	uint32_t g = hr_limiter_take(l, tenant, 1, 1000, 10 * SEC, NULL);
	ck_assert_msg(g == 10, "tenant alone after blocked takes: got %u, want its burst 10", g);
	hr_limiter_free(l);
}
END_TEST

START_TEST(wait_is_the_latest_scope)
{
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_rate(l, "tenant:1", 100); /* burst 1, next in 10 ms */
	hr_limiter_set_rate(l, "domain:a", 20);	 /* burst 1, next in 50 ms */
	const char *sc[] = {"tenant:1", "domain:a"};
	uint64_t wait = 0;
	uint32_t g = hr_limiter_take(l, sc, 2, 5, 0, &wait);
	ck_assert_msg(g == 1 && wait == 50 * MS, "got %u wait %llu, want 1 wait 50 ms", g,
		      (unsigned long long)wait);
	g = hr_limiter_take(l, sc, 2, 5, wait, &wait);
	ck_assert_msg(g == 1 && wait == 50 * MS, "second: got %u wait %llu, want 1 wait 50 ms", g,
		      (unsigned long long)wait);
	hr_limiter_free(l);
}
END_TEST

START_TEST(more_scopes_than_the_take_cache)
{
	hr_limiter *l = hr_limiter_new();
	const char *sc[24];
	char names[24][32];
	for (int i = 0; i < 24; i++) {
		snprintf(names[i], sizeof names[i], "domain:d%d.example", i);
		sc[i] = names[i];
		hr_limiter_set_rate(l, names[i], i == 20 ? 100 : 1000);
	}
	uint64_t got = 0;
	for (uint64_t t = 0; t < 10 * SEC; t += MS)
		got += hr_limiter_take(l, sc, 24, 1000, t, NULL);
	ck_assert_msg(got >= 1000 && got <= 1001, "24 scopes, slowest 100/s at index 20: got %llu, want 1000..1001",
		      (unsigned long long)got);
	hr_limiter_free(l);
}
END_TEST

/* ---- pacing figures (DESIGN.md: 500/s -> max 1-s window <= 510, >= 485/s, CV <= 0.1) ---- */

enum { P_WAIT, P_TICK, P_JITTER };

static const struct {
	const char *name;
	double rate;
	int pattern;	  /* how the fake dispatcher comes back */
	uint64_t tick_ns; /* P_TICK period; P_JITTER max gap */
	uint32_t batch;	  /* tokens asked per take */
	int extra_scopes; /* looser scopes stacked on the limiting one */
} pacing_cases[] = {
	{"500/s, come back after wait_ns", 500, P_WAIT, 0, 1000, 0},
	{"500/s, one token per take", 500, P_WAIT, 0, 1, 0},
	{"500/s, 1 ms loop", 500, P_TICK, MS, 1000, 0},
	{"500/s, 10 ms loop", 500, P_TICK, 10 * MS, 1000, 0},
	{"500/s, jittered loop up to 5 ms", 500, P_JITTER, 5 * MS, 1000, 0},
	{"500/s under looser agency and domain", 500, P_TICK, MS, 1000, 2},
	{"50/s, 1 ms loop", 50, P_TICK, MS, 1000, 0},
	{"5000/s, 1 ms loop", 5000, P_TICK, MS, 1000, 0},
};

static pacing run_pacing(int i, uint64_t dur)
{
	hr_limiter *l = hr_limiter_new();
	double rate = pacing_cases[i].rate;
	hr_limiter_set_rate(l, "tenant:7/email", rate);
	hr_limiter_set_rate(l, "agency:1", rate * 4);
	hr_limiter_set_rate(l, "domain:gmail.com", rate * 1.6);
	const char *sc[] = {"tenant:7/email", "agency:1", "domain:gmail.com"};
	int nsc = 1 + pacing_cases[i].extra_scopes;
	events ev = {0};
	uint64_t seed = 0x5eed0000u + (uint64_t)i;
	uint64_t now = 0;
	while (now < dur) {
		uint64_t wait = 0;
		uint32_t g = hr_limiter_take(l, sc, nsc, pacing_cases[i].batch, now, &wait);
		ev_add(&ev, now, g);
		switch (pacing_cases[i].pattern) {
		case P_WAIT:
			/* Short of tokens with nothing to wait for would spin forever. */
			ck_assert_msg(g == pacing_cases[i].batch || wait > 0, "%s: got %u with wait 0 at %llu ns",
				      pacing_cases[i].name, g, (unsigned long long)now);
			now += g < pacing_cases[i].batch ? wait : 0;
			break;
		case P_TICK:
			now += pacing_cases[i].tick_ns;
			break;
		default:
			now += 100000 + rng_next(&seed) % (pacing_cases[i].tick_ns - 100000);
		}
	}
	pacing p = measure(&ev, dur);
	ev_free(&ev);
	hr_limiter_free(l);
	return p;
}

START_TEST(pacing_figures)
{
	double rate = pacing_cases[_i].rate;
	pacing p = run_pacing(_i, 60 * SEC);
	printf("pacing %-40s max_1s=%llu sustained=%.2f min_1s=%llu cv_100ms=%.4f max_100ms=%llu\n",
	       pacing_cases[_i].name, (unsigned long long)p.max_1s, p.sustained, (unsigned long long)p.min_1s,
	       p.cv_100ms, (unsigned long long)p.max_100ms);
	/* DESIGN.md's bounds for 500/s, scaled for other rates: +2 % peak, -3 % sustained. */
	double max_1s = rate * 1.02, min_rate = rate * 0.97;
	ck_assert_msg(p.max_1s <= max_1s, "%s: max 1-s window got %llu, want <= %.0f", pacing_cases[_i].name,
		      (unsigned long long)p.max_1s, max_1s);
	ck_assert_msg(p.sustained >= min_rate, "%s: sustained got %.2f/s, want >= %.0f", pacing_cases[_i].name,
		      p.sustained, min_rate);
	ck_assert_msg((double)p.min_1s >= min_rate, "%s: slowest 1-s window got %llu, want >= %.0f",
		      pacing_cases[_i].name, (unsigned long long)p.min_1s, min_rate);
	ck_assert_msg(p.cv_100ms <= 0.1, "%s: CV of 100-ms counts got %.4f, want <= 0.1", pacing_cases[_i].name,
		      p.cv_100ms);
}
END_TEST

/* Demand that comes and goes: every resume grants the burst, not the idle time's worth. */
START_TEST(pacing_with_idle_gaps)
{
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_rate(l, "tenant:7/email", 500);
	const char *sc[] = {"tenant:7/email"};
	events ev = {0};
	for (uint64_t now = 0; now < 60 * SEC; now += MS) {
		bool busy = (now / SEC) % 5 < 2; /* 2 s of demand, 3 s idle */
		if (busy)
			ev_add(&ev, now, hr_limiter_take(l, sc, 1, 1000, now, NULL));
	}
	uint64_t max_1s = ev_max_window(&ev, 0, 60 * SEC, SEC);
	uint64_t max_100ms = ev_max_window(&ev, 0, 60 * SEC, 100 * MS);
	uint64_t first_10ms = ev_sum(&ev, 5 * SEC, 5 * SEC + 10 * MS);
	ck_assert_msg(max_1s <= 510, "max 1-s window got %llu, want <= 510", (unsigned long long)max_1s);
	ck_assert_msg(max_100ms <= 55, "max 100-ms window got %llu, want <= 55", (unsigned long long)max_100ms);
	ck_assert_msg(first_10ms <= 10, "first 10 ms after 3 s idle got %llu, want <= 5 + 5",
		      (unsigned long long)first_10ms);
	for (uint64_t a = 0; a < 60 * SEC; a += 5 * SEC) {
		uint64_t s = ev_sum(&ev, a, a + 2 * SEC);
		ck_assert_msg(s >= 970 && s <= 1005, "busy period at %llu s got %llu, want 970..1005",
			      (unsigned long long)(a / SEC), (unsigned long long)s);
	}
	ev_free(&ev);
	hr_limiter_free(l);
}
END_TEST

/* ---- AIMD ---- */

START_TEST(aimd_step_by_step)
{
	hr_limiter *l = hr_limiter_new();
	const char *s = "account:1/sms";
	hr_limiter_set_rate(l, s, 500);
	hr_limiter_throttled(l, s, 10 * SEC, 10 * SEC - 40 * MS, 0);
	ck_assert_msg(fabs(hr_limiter_effective_rate(l, s) - 400) < 1e-9, "first cut: got %.3f, want 400",
		      hr_limiter_effective_rate(l, s));
	/* Sent before that cut: the cut already answered it. */
	hr_limiter_throttled(l, s, 10 * SEC + MS, 10 * SEC - 39 * MS, 0);
	ck_assert_msg(fabs(hr_limiter_effective_rate(l, s) - 400) < 1e-9, "stale throttle: got %.3f, want 400",
		      hr_limiter_effective_rate(l, s));
	/* Sent after it, still throttled: cut again. */
	hr_limiter_throttled(l, s, 10 * SEC + 50 * MS, 10 * SEC + 10 * MS, 0);
	ck_assert_msg(fabs(hr_limiter_effective_rate(l, s) - 320) < 1e-9, "second cut: got %.3f, want 320",
		      hr_limiter_effective_rate(l, s));
	/* One second of success at 320/s adds ALPHA x 500 = 10/s. */
	for (int i = 0; i < 320; i++)
		hr_limiter_succeeded(l, s, 1, 11 * SEC);
	double r = hr_limiter_effective_rate(l, s);
	ck_assert_msg(r > 329.5 && r < 330.1, "after 1 s of success: got %.3f, want ~330", r);
	/* Never above the configured rate. */
	for (int i = 0; i < 100000; i++)
		hr_limiter_succeeded(l, s, 1, 12 * SEC);
	ck_assert_msg(hr_limiter_effective_rate(l, s) == 500, "recovered: got %.3f, want 500",
		      hr_limiter_effective_rate(l, s));
	/* Floor: at least 1/s however many cuts. */
	for (uint64_t t = 20; t < 200; t++)
		hr_limiter_throttled(l, s, t * SEC, t * SEC, 0);
	ck_assert_msg(hr_limiter_effective_rate(l, s) == HR_AIMD_FLOOR, "floor: got %.6f, want %.1f",
		      hr_limiter_effective_rate(l, s), HR_AIMD_FLOOR);
	/* A configured rate below the floor stays as configured. */
	hr_limiter_set_rate(l, "tenant:2", 0.5);
	hr_limiter_throttled(l, "tenant:2", SEC, SEC, 0);
	ck_assert_msg(hr_limiter_effective_rate(l, "tenant:2") == 0.5, "below floor: got %.3f, want 0.5",
		      hr_limiter_effective_rate(l, "tenant:2"));
	/* Reconfiguring keeps the reduction as a fraction of the new ceiling. */
	hr_limiter_set_rate(l, "tenant:3", 1000);
	hr_limiter_throttled(l, "tenant:3", SEC, SEC, 0);
	hr_limiter_set_rate(l, "tenant:3", 2000);
	ck_assert_msg(fabs(hr_limiter_effective_rate(l, "tenant:3") - 1600) < 1e-9, "re-rated: got %.3f, want 1600",
		      hr_limiter_effective_rate(l, "tenant:3"));
	hr_limiter_free(l);
}
END_TEST

START_TEST(retry_after_holds_the_scope)
{
	hr_limiter *l = hr_limiter_new();
	const char *sc[] = {"tenant:1", "domain:yahoo.com"};
	hr_limiter_set_rate(l, "tenant:1", 1000);
	/* An unconfigured scope: held, no rate to cut. */
	hr_limiter_throttled(l, "domain:yahoo.com", SEC, SEC, 250);
	uint64_t wait = 0;
	uint32_t g = hr_limiter_take(l, sc, 2, 10, SEC + 100 * MS, &wait);
	ck_assert_msg(g == 0 && wait == 150 * MS, "during hold: got %u wait %llu, want 0 wait 150 ms", g,
		      (unsigned long long)wait);
	ck_assert_msg(hr_limiter_effective_rate(l, "domain:yahoo.com") == 0, "unconfigured stays unlimited");
	/* A later, shorter Retry-After does not shorten the hold. */
	hr_limiter_throttled(l, "domain:yahoo.com", SEC + 110 * MS, SEC, 10);
	g = hr_limiter_take(l, sc, 2, 10, SEC + 249 * MS, NULL);
	ck_assert_msg(g == 0, "still held at 249 ms: got %u, want 0", g);
	g = hr_limiter_take(l, sc, 2, 10, SEC + 250 * MS, NULL);
	ck_assert_msg(g == 10, "after the hold: got %u, want 10 (the tenant's burst)", g);
	hr_limiter_free(l);
}
END_TEST

/*
 * The golden AIMD loop: a 500/s limit, a fake provider that answers 429
 * above `cap`/s (token bucket, 10 ms of burst) from t = 10 s to t = 70 s, a
 * round trip of `rtt`, and a dispatcher that retries every throttled message.
 */
static const struct {
	const char *name;
	uint64_t rtt;
	uint32_t retry_after_ms; /* 0: the provider says exactly when its next token comes */
	double min_util;	 /* accepted / cap over the converged phase, at least */
} aimd_cases[] = {
	/* Sawtooth between beta x cap and cap: mean ~ (1 + beta) / 2 = 0.9. */
	{"exact Retry-After, 40 ms round trip", 40 * MS, 0, 0.85},
	{"exact Retry-After, 250 ms round trip", 250 * MS, 0, 0.85},
	/* Each cut also stops for 1 s every ~(1 - beta) / alpha = 10 s: ~0.8. */
	{"Retry-After: 1 s, 40 ms round trip", 40 * MS, 1000, 0.75},
};

#define AIMD_N 45000u
#define AIMD_CAP 300.0
#define AIMD_THR_FROM (10 * SEC)
#define AIMD_THR_TO (70 * SEC)

typedef struct flight {
	uint32_t id;
	bool ok;
	uint32_t retry_ms;
	uint64_t sent, due;
} flight;

START_TEST(aimd_converges_under_provider_429)
{
	const char *scope = "account:1/sms";
	const char *sc[] = {scope};
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_rate(l, scope, 500);

	uint8_t *accepted = hr_calloc(AIMD_N, 1);
	uint32_t *retry = hr_malloc(AIMD_N * sizeof *retry); /* FIFO of throttled ids */
	size_t rhead = 0, rlen = 0;
	flight *fl = hr_malloc(AIMD_N * sizeof *fl); /* in flight, due in send order */
	size_t fhead = 0, flen = 0;
	uint32_t fresh = 0, naccepted = 0, nthrottled = 0, nretried = 0;
	events sent = {0}, acc = {0};
	double tokens = 3, burst = 3; /* provider bucket: AIMD_CAP/s, 10 ms of burst */
	uint64_t tlast = AIMD_THR_FROM, conv = 0, recovered = 0, now;

	for (now = 0; naccepted < AIMD_N && now < 400 * SEC; now += MS) {
		/* Answers due now. */
		while (flen && fl[fhead].due <= now) {
			flight f = fl[fhead];
			fhead = (fhead + 1) % AIMD_N;
			flen--;
			if (f.ok) {
				ck_assert_msg(!accepted[f.id], "message %u accepted twice", f.id);
				accepted[f.id] = 1;
				naccepted++;
				ev_add(&acc, now, 1);
				hr_limiter_succeeded(l, scope, 1, now);
			} else {
				nthrottled++;
				hr_limiter_throttled(l, scope, now, f.sent, f.retry_ms);
				retry[(rhead + rlen++) % AIMD_N] = f.id;
			}
		}
		uint32_t pending = (uint32_t)rlen + (AIMD_N - fresh);
		uint32_t g = pending ? hr_limiter_take(l, sc, 1, pending, now, NULL) : 0;
		ev_add(&sent, now, g);
		for (uint32_t k = 0; k < g; k++) {
			flight f = {.sent = now, .due = now + aimd_cases[_i].rtt, .ok = true};
			if (rlen) {
				f.id = retry[rhead];
				rhead = (rhead + 1) % AIMD_N;
				rlen--;
				nretried++;
			} else {
				f.id = fresh++;
			}
			if (now >= AIMD_THR_FROM && now < AIMD_THR_TO) {
				tokens += (double)(now - tlast) * AIMD_CAP / SEC;
				if (tokens > burst)
					tokens = burst;
				tlast = now;
				if (tokens >= 1) {
					tokens -= 1;
				} else {
					f.ok = false;
					f.retry_ms = aimd_cases[_i].retry_after_ms
							     ? aimd_cases[_i].retry_after_ms
							     : (uint32_t)ceil((1 - tokens) / AIMD_CAP * 1000);
				}
			}
			ck_assert(flen < AIMD_N);
			fl[(fhead + flen++) % AIMD_N] = f;
		}
		double eff = hr_limiter_effective_rate(l, scope);
		if (!conv && now >= AIMD_THR_FROM && eff <= AIMD_CAP)
			conv = now;
		if (!recovered && now >= AIMD_THR_TO && eff >= 500)
			recovered = now;
	}

	const char *name = aimd_cases[_i].name;
	uint64_t warm = ev_sum(&sent, SEC, AIMD_THR_FROM);
	uint64_t conv_ms = (conv - AIMD_THR_FROM) / MS;
	uint64_t max_1s = ev_max_window(&sent, conv, AIMD_THR_TO, SEC);
	double secs = (double)(AIMD_THR_TO - conv) / SEC;
	double acc_rate = (double)ev_sum(&acc, conv, AIMD_THR_TO) / secs;
	double sent_rate = (double)ev_sum(&sent, conv, AIMD_THR_TO) / secs;
	uint64_t rec_ms = recovered ? (recovered - AIMD_THR_TO) / MS : 0;
	printf("aimd %-38s conv=%llu ms max_1s_sent=%llu sent=%.1f/s accepted=%.1f/s throttled=%u "
	       "recovered_to_500_after=%llu ms done_at=%.1f s\n",
	       name, (unsigned long long)conv_ms, (unsigned long long)max_1s, sent_rate, acc_rate, nthrottled,
	       (unsigned long long)rec_ms, (double)now / SEC);

	ck_assert_msg(warm >= 9 * 485, "%s: before throttling got %llu in 9 s, want >= %u", name,
		      (unsigned long long)warm, 9 * 485);
	ck_assert_msg(nthrottled > 0, "%s: the provider never throttled", name);
	ck_assert_msg(conv && conv_ms <= 5000, "%s: convergence got %llu ms, want <= 5000", name,
		      (unsigned long long)conv_ms);
	/* Sawtooth peak: cap plus alpha x 500 x one round trip, well inside 5 %. */
	ck_assert_msg(max_1s <= AIMD_CAP * 1.05, "%s: converged max 1-s window got %llu, want <= %.0f", name,
		      (unsigned long long)max_1s, AIMD_CAP * 1.05);
	ck_assert_msg(acc_rate >= AIMD_CAP * aimd_cases[_i].min_util && acc_rate <= AIMD_CAP + 3,
		      "%s: converged accepted rate got %.1f/s, want %.0f..%.0f", name, acc_rate,
		      AIMD_CAP * aimd_cases[_i].min_util, AIMD_CAP + 3);
	/* Back to the configured rate: from beta x cap = 240 at alpha x 500 = 10/s is 26 s. */
	ck_assert_msg(recovered && rec_ms <= 30000, "%s: back to 500/s after %llu ms, want <= 30000", name,
		      (unsigned long long)rec_ms);
	/* Nothing lost, nothing doubled: every message accepted once, every 429 retried. */
	ck_assert_msg(naccepted == AIMD_N, "%s: accepted got %u, want %u", name, naccepted, AIMD_N);
	for (uint32_t id = 0; id < AIMD_N; id++)
		ck_assert_msg(accepted[id], "%s: message %u never accepted", name, id);
	ck_assert_msg(nretried == nthrottled && rlen == 0, "%s: retried %u of %u throttled", name, nretried,
		      nthrottled);

	ev_free(&sent);
	ev_free(&acc);
	hr_free(accepted);
	hr_free(retry);
	hr_free(fl);
	hr_limiter_free(l);
}
END_TEST

/* ---- cluster-wide share ---- */

static const struct {
	const char *scope;
	hr_scope_kind kind;
	double want; /* of 1000/s at share 0.25 */
} share_cases[] = {
	{"agency:3", HR_SCOPE_AUTO, 250},
	{"domain:gmail.com", HR_SCOPE_AUTO, 250},
	{"account:relay-eu", HR_SCOPE_AUTO, 250}, /* an account several tenants use */
	{"account:42/smtp-main", HR_SCOPE_AUTO, 1000},
	{"account:42", HR_SCOPE_AUTO, 250}, /* no "/": not a tenant's account name */
	{"tenant:42", HR_SCOPE_AUTO, 1000},
	{"tenant:42/email", HR_SCOPE_AUTO, 1000},
	{"sender:42/example.com", HR_SCOPE_AUTO, 1000},
	{"tenant:42/sms", HR_SCOPE_SHARED, 250},
	{"domain:internal.example", HR_SCOPE_OWNED, 1000},
};

START_TEST(share_applies_to_shared_scopes_only)
{
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_rate_kind(l, share_cases[_i].scope, 1000, share_cases[_i].kind);
	hr_limiter_set_share(l, 0.25);
	double got = hr_limiter_effective_rate(l, share_cases[_i].scope);
	ck_assert_msg(fabs(got - share_cases[_i].want) < 1e-9, "%s: got %.3f, want %.3f", share_cases[_i].scope,
		      got, share_cases[_i].want);
	/* A share set before the rate applies too. */
	hr_limiter *l2 = hr_limiter_new();
	hr_limiter_set_share(l2, 0.25);
	hr_limiter_set_rate_kind(l2, share_cases[_i].scope, 1000, share_cases[_i].kind);
	got = hr_limiter_effective_rate(l2, share_cases[_i].scope);
	ck_assert_msg(fabs(got - share_cases[_i].want) < 1e-9, "%s (share first): got %.3f, want %.3f",
		      share_cases[_i].scope, got, share_cases[_i].want);
	hr_limiter_free(l2);
	hr_limiter_free(l);
}
END_TEST

/* Three schedulers at share 1/3 on one 900/s domain: together never above the limit. */
START_TEST(schedulers_together_stay_within_the_limit)
{
	enum { K = 3 };
	hr_limiter *l[K];
	for (int k = 0; k < K; k++) {
		l[k] = hr_limiter_new();
		hr_limiter_set_share(l[k], 1.0 / K);
		hr_limiter_set_rate(l[k], "domain:gmail.com", 900);
	}
	const char *sc[] = {"domain:gmail.com"};
	events ev = {0};
	uint64_t seed = 42;
	for (uint64_t now = 0; now < 30 * SEC; now += MS)
		for (int k = 0; k < K; k++) /* each scheduler has its own loop phase */
			if (rng_next(&seed) % 4)
				ev_add(&ev, now, hr_limiter_take(l[k], sc, 1, 1000, now, NULL));
	uint64_t max_1s = ev_max_window(&ev, 0, 30 * SEC, SEC);
	double sustained = (double)ev_sum(&ev, 0, 30 * SEC) / 30;
	ck_assert_msg(max_1s <= 900 * 1.02, "3 schedulers: max 1-s window got %llu, want <= 918",
		      (unsigned long long)max_1s);
	ck_assert_msg(sustained >= 900 * 0.97, "3 schedulers: sustained got %.1f, want >= 873", sustained);
	ev_free(&ev);
	for (int k = 0; k < K; k++)
		hr_limiter_free(l[k]);
}
END_TEST

/* ---- the scope table ---- */

START_TEST(thousands_of_scopes)
{
	enum { N = 20000 };
	hr_limiter *l = hr_limiter_new();
	char name[64];
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "domain:d%d.example", i);
		hr_limiter_set_rate(l, name, i + 1);
	}
	ck_assert_uint_eq(hr_limiter_count(l), N);
	for (int i = 0; i < N; i += 2) { /* remove every other one */
		snprintf(name, sizeof name, "domain:d%d.example", i);
		hr_limiter_set_rate(l, name, 0);
	}
	ck_assert_msg(hr_limiter_count(l) == N / 2, "count got %u, want %d", hr_limiter_count(l), N / 2);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "domain:d%d.example", i);
		double want = i % 2 ? i + 1 : 0;
		double got = hr_limiter_effective_rate(l, name);
		ck_assert_msg(got == want, "%s: got %.1f, want %.1f", name, got, want);
	}
	hr_limiter_free(l);
}
END_TEST

START_TEST(take_does_not_allocate_after_warm_up)
{
	hr_limiter *l = hr_limiter_new();
	hr_limiter_set_rate(l, "tenant:1", 500);
	hr_limiter_set_rate(l, "domain:gmail.com", 300);
	hr_limiter_throttled(l, "domain:yahoo.com", 0, 0, 1);
	const char *sc[] = {"tenant:1", "domain:gmail.com", "domain:yahoo.com", "agency:9"};
	/* The next allocation aborts the test process: take, throttled, succeeded must not allocate. */
	hr_alloc_fail_after(1);
	uint64_t got = 0;
	for (uint64_t t = 0; t < 10 * SEC; t += MS) {
		got += hr_limiter_take(l, sc, 4, 100, t, NULL);
		if (t % SEC == 0) {
			hr_limiter_throttled(l, "domain:gmail.com", t, t, 0);
			hr_limiter_succeeded(l, "domain:gmail.com", 50, t);
		}
	}
	hr_alloc_fail_after(0);
	ck_assert_msg(got > 0, "got %llu, want some grants", (unsigned long long)got);
	hr_limiter_free(l);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("scheduler_ratelimit");
	TCase *tc = th_tcase("take");
	tcase_add_test(tc, unconfigured_scopes_are_unlimited);
	tcase_add_loop_test(tc, start_grants_only_the_burst, 0, sizeof start_cases / sizeof start_cases[0]);
	tcase_add_test(tc, smallest_rate_wins_and_blocked_tokens_are_not_charged);
	tcase_add_test(tc, wait_is_the_latest_scope);
	tcase_add_test(tc, more_scopes_than_the_take_cache);
	suite_add_tcase(s, tc);
	tc = th_tcase("pacing");
	tcase_add_loop_test(tc, pacing_figures, 0, sizeof pacing_cases / sizeof pacing_cases[0]);
	tcase_add_test(tc, pacing_with_idle_gaps);
	suite_add_tcase(s, tc);
	tc = th_tcase("aimd");
	tcase_add_test(tc, aimd_step_by_step);
	tcase_add_test(tc, retry_after_holds_the_scope);
	tcase_add_loop_test(tc, aimd_converges_under_provider_429, 0, sizeof aimd_cases / sizeof aimd_cases[0]);
	suite_add_tcase(s, tc);
	tc = th_tcase("share");
	tcase_add_loop_test(tc, share_applies_to_shared_scopes_only, 0, sizeof share_cases / sizeof share_cases[0]);
	tcase_add_test(tc, schedulers_together_stay_within_the_limit);
	suite_add_tcase(s, tc);
	tc = th_tcase("table");
	tcase_add_test(tc, thousands_of_scopes);
	tcase_add_test(tc, take_does_not_allocate_after_warm_up);
	suite_add_tcase(s, tc);
	return th_run(s);
}
