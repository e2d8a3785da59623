/*
 * fair.c -- weighted deficit round robin over tenants with backlog.
 * Contract: fair.h.
 *
 * Tenant records live in one growable array (indices stay valid when it
 * grows); an open-addressing table maps tenant id -> record index; the
 * tenants with backlog form a circular doubly-linked list through the
 * records, `head` being the next one to serve.  Every operation is O(1)
 * amortised; nothing walks the tenants without backlog.
 */
#include "fair.h"

#include <string.h>

#include "alloc.h"

#define NONE UINT32_MAX

typedef struct tenant {
	uint32_t id;
	uint32_t weight;  /* >= 1 */
	uint64_t backlog; /* pending messages; > 0 exactly when in the round */
	uint64_t deficit; /* messages it may still send this turn (+ capped carry-over) */
	uint32_t prev;	  /* round list links (record indices) when active */
	uint32_t next;
	bool active;
} tenant;

struct hr_fair {
	uint32_t quantum;
	tenant *recs;	  /* records, by index */
	uint32_t nrecs;
	uint32_t caprecs;
	uint32_t *index;  /* id -> record index + 1; 0 = empty slot */
	uint32_t capidx;  /* power of two, load <= 1/2 */
	uint32_t head;	  /* next tenant to serve; NONE when nobody has backlog */
	uint32_t nactive;
};

static uint32_t slot_of(uint32_t id, uint32_t cap)
{
	return (uint32_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static uint32_t find(const hr_fair *f, uint32_t id)
{
	for (uint32_t i = slot_of(id, f->capidx);; i = (i + 1) & (f->capidx - 1)) {
		uint32_t v = f->index[i];
		if (v == 0)
			return NONE;
		if (f->recs[v - 1].id == id)
			return v - 1;
	}
}

static void index_put(uint32_t *index, uint32_t cap, uint32_t id, uint32_t rec)
{
	uint32_t i = slot_of(id, cap);
	while (index[i])
		i = (i + 1) & (cap - 1);
	index[i] = rec + 1;
}

static uint32_t get_or_add(hr_fair *f, uint32_t id)
{
	uint32_t r = find(f, id);
	if (r != NONE)
		return r;
	if ((f->nrecs + 1) * 2 > f->capidx) {
		uint32_t ncap = f->capidx * 2;
		uint32_t *ni = hr_calloc(ncap, sizeof *ni);
		for (uint32_t k = 0; k < f->nrecs; k++)
			index_put(ni, ncap, f->recs[k].id, k);
		hr_free(f->index);
		f->index = ni;
		f->capidx = ncap;
	}
	if (f->nrecs == f->caprecs) {
		f->caprecs *= 2;
		f->recs = hr_realloc(f->recs, f->caprecs * sizeof *f->recs);
	}
	r = f->nrecs++;
	f->recs[r] = (tenant){.id = id, .weight = 1, .prev = NONE, .next = NONE};
	index_put(f->index, f->capidx, id, r);
	return r;
}

/* Join the round at the tail: served after everyone already waiting, i.e. within one round. */
static void link_tail(hr_fair *f, uint32_t r)
{
	tenant *t = &f->recs[r];
	if (f->head == NONE) {
		t->prev = t->next = r;
		f->head = r;
	} else {
		uint32_t tail = f->recs[f->head].prev;
		t->prev = tail;
		t->next = f->head;
		f->recs[tail].next = r;
		f->recs[f->head].prev = r;
	}
	t->active = true;
	t->deficit = 0;
	f->nactive++;
}

static void unlink_rec(hr_fair *f, uint32_t r)
{
	tenant *t = &f->recs[r];
	if (t->next == r) {
		f->head = NONE;
	} else {
		f->recs[t->prev].next = t->next;
		f->recs[t->next].prev = t->prev;
		if (f->head == r)
			f->head = t->next;
	}
	t->prev = t->next = NONE;
	t->active = false;
	t->deficit = 0; /* an empty queue forgets its credit, as in DRR */
	f->nactive--;
}

hr_fair *hr_fair_new(uint32_t quantum)
{
	hr_fair *f = hr_calloc(1, sizeof *f);
	f->quantum = quantum ? quantum : 1;
	f->caprecs = 16;
	f->recs = hr_malloc(f->caprecs * sizeof *f->recs);
	f->capidx = 32;
	f->index = hr_calloc(f->capidx, sizeof *f->index);
	f->head = NONE;
	return f;
}

void hr_fair_free(hr_fair *f)
{
	if (!f)
		return;
	hr_free(f->recs);
	hr_free(f->index);
	hr_free(f);
}

void hr_fair_set_weight(hr_fair *f, uint32_t tenant_id, uint32_t weight)
{
	uint32_t r = get_or_add(f, tenant_id); /* first: it may move f->recs */
	f->recs[r].weight = weight ? weight : 1;
}

void hr_fair_set_backlog(hr_fair *f, uint32_t tenant_id, uint64_t pending)
{
	uint32_t r = get_or_add(f, tenant_id);
	tenant *t = &f->recs[r];
	t->backlog = pending;
	if (pending && !t->active)
		link_tail(f, r);
	else if (!pending && t->active)
		unlink_rec(f, r);
}

bool hr_fair_next(hr_fair *f, uint32_t *tenant_id, uint32_t *allowance)
{
	if (f->head == NONE)
		return false;
	uint32_t r = f->head;
	tenant *t = &f->recs[r];
	f->head = t->next; /* t is now the tail: its turn is this one call */
	uint64_t q = (uint64_t)f->quantum * t->weight;
	/* Unused credit carries over, but at most one quantum: a throttled tenant saves no burst. */
	t->deficit = (t->deficit < q ? t->deficit : q) + q;
	uint64_t a = t->deficit < t->backlog ? t->deficit : t->backlog;
	*tenant_id = t->id;
	*allowance = a > UINT32_MAX ? UINT32_MAX : (uint32_t)a;
	return true;
}

void hr_fair_charge(hr_fair *f, uint32_t tenant_id, uint32_t used)
{
	uint32_t r = find(f, tenant_id);
	if (r == NONE)
		return;
	tenant *t = &f->recs[r];
	/* Saturate: a charge above the allowance (a dispatcher bug) must not wrap into a huge credit. */
	t->deficit -= used < t->deficit ? used : t->deficit;
}

uint32_t hr_fair_active(const hr_fair *f)
{
	return f->nactive;
}

uint64_t hr_fair_backlog(const hr_fair *f, uint32_t tenant_id)
{
	uint32_t r = find(f, tenant_id);
	return r == NONE ? 0 : f->recs[r].backlog;
}
