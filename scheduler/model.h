/*
 * model.h -- herald-scheduler's internal model, shared by its files (not a
 * public header: nothing outside scheduler/ includes it).
 *
 * Ownership and threads: one thread (the loop, dispatch.c) owns every struct
 * here.  The only other thread is the lander (lander.c), which receives
 * finished results through its own queue and writes them to Postgres; it
 * touches none of these structs.
 *
 * A message's state is where it is:
 *   pending  -- in its batch, state MSG_PENDING, not yet leased (or back from
 *               a dead lease), reachable through the batch's ready position;
 *   waiting  -- in the tenant's retry heap until its not-before time;
 *   leased   -- MSG_LEASED, named by exactly one live lease;
 *   done     -- MSG_DONE, its final result handed to the lander.
 * msg_move() (dispatch.c) is the one function that changes it and refuses
 * illegal moves (a panic: they are our bugs).
 */
#ifndef HERALD_SCHED_MODEL_H
#define HERALD_SCHED_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "config.h"
#include "crypto.h"
#include "fair.h"
#include "owner.h"
#include "ratelimit.h"
#include "wire.h"

#define NLANES 2
#define NCHANNELS 6 /* indexed by hr_channel, 0 unused */

enum { MSG_PENDING = 0, MSG_LEASED = 1, MSG_WAITING = 2, MSG_DONE = 3 };

struct tenant;
struct worker;

typedef struct batch {
	int64_t id;               /* outbox id; message i has id id * 4096 + i */
	struct tenant *t;
	uint8_t channel, lane;
	int64_t template_id;
	int template_version;
	char *content;            /* JSON text of the Liquid sources */
	char *provider;           /* provider account name */
	char *provider_json;      /* resolved account (with secrets) for the workers */
	char *scope_account;      /* "account:<tenant>/<name>" */
	char *scope_sender;       /* "sender:<tenant>/<identity>", NULL when none is known */
	int n;
	char **address;           /* [n] */
	char **data;              /* [n] JSON text the template sees */
	uint8_t *state;           /* [n] MSG_* */
	uint8_t *attempts;        /* [n] sends tried */
	int cursor;               /* first index that may still be pending */
	int remaining;            /* messages not yet done */
	int64_t due_ms;           /* unix ms the batch becomes due */
	bool ready;               /* in its (lane, channel) ready list */
	int refs;                 /* live leases naming it */
	bool complete;            /* every message done */
	struct batch *next;       /* ready list link */
	struct batch *all_next;   /* tenant's list of loaded batches */
} batch;

typedef struct retry_item {
	int64_t not_before_ms;
	batch *b;
	int idx;
} retry_item;

/* Outbox ids below last_seen that no header read has shown yet: a transaction
 * that took them from the sequence had not committed when a later id was read
 * (store.c, apply_headers).  Kept, and read again, until every transaction that
 * could hold them has ended. */
#define ID_GAPS_MAX 32        /* new gaps; a found id may split one beyond it */
typedef struct id_gap {
	int64_t lo, hi;           /* the ids lo..hi */
	int64_t xmax;             /* the reading snapshot's xmax when it was found */
	int64_t found_ms;
} id_gap;

typedef struct tenant {
	uint32_t id;
	int64_t agency_id;
	char slug[48];
	char schema[64];
	char role[64];
	bool active;              /* status = active */
	bool need_load;           /* notified or known to have unloaded rows */
	int64_t notified_us;      /* sched_trace: wall time of the first NOTIFY not yet acted on */
	bool recovering;          /* rows loaded so far may already have results */
	int64_t last_seen;        /* highest outbox id whose header was read */
	id_gap *gaps;             /* ids below last_seen not read yet */
	int ngaps, capgaps;
	int64_t gaps_checked_ms;  /* last header read that looked at the gaps */
	bool gaps_ended;          /* a gap ended: the low water may move (dispatch.c) */
	int64_t *due_ids;         /* FIFO of due batch ids not yet materialised */
	uint8_t *due_tx;          /* parallel to due_ids: 1 = transactional lane (loaded first) */
	int ndue, capdue, duehead, ndue_tx; /* ndue_tx: transactional ids among them */
	struct { int64_t due_ms, id; bool tx; } *future; /* min-heap of batches due later */
	int nfuture, capfuture;
	bool more_rows;           /* the last header scan was full: read again */
	uint32_t reads_sent, read_applied; /* store.c: transactional reads, numbered as sent */
	int64_t recover_until;    /* outbox ids <= this were there at startup */
	int loaded;               /* batches in memory */
	batch *head[NLANES][NCHANNELS], *tail[NLANES][NCHANNELS]; /* ready lists */
	uint64_t pending[NLANES][NCHANNELS]; /* messages dispatchable now */
	batch *all;               /* loaded batches, for low-water tracking */
	retry_item *retry;        /* min-heap by not_before_ms */
	int nretry, capretry;
	char scope_tenant[32];    /* "tenant:<id>" */
	char scope_agency[32];    /* "agency:<id>" */
	int shard;                /* owner_shard_of(id): served while this scheduler owns it */
	uint64_t out_seq;         /* position of its last result handed to the lander (dispatch.c) */
	struct tenant *hnext;     /* id hash chain */
} tenant;

typedef struct lease {
	uint64_t id;
	batch *b;
	struct worker *w;
	int64_t deadline_ms;
	int n;
	int answered;
	uint16_t *idx;            /* [n] message indexes in b */
	uint8_t *done;            /* [n] answered already */
	int64_t sent_ns;          /* for latency and the limiter's feedback */
	struct lease *hnext;      /* id hash chain */
	struct lease *wnext;      /* worker's lease list */
} lease;

typedef struct worker {
	char *identity;           /* ZeroMQ routing id */
	size_t idlen;
	char *worker_id;
	int lane;                 /* index 0 = transactional, 1 = bulk */
	uint8_t channel;
	uint32_t credit;          /* lease batches it can still take */
	int64_t last_seen_ms;
	int nleases;
	lease *leases;
	bool dead;
	struct worker *next;
} worker;

typedef struct lander lander;

typedef struct sched {
	hr_config *cfg;
	char *dsn;
	PGconn *db;               /* loop's connection: shard locks, limits, provider accounts */
	PGconn *listen;           /* LISTEN only (store.c): never busy with a query */
	uint8_t master_key[HR_KEY_LEN];
	void *zctx;
	void *router[NLANES];     /* transactional, bulk */
	hr_limiter *limiter;
	hr_fair *fair[NLANES][NCHANNELS];
	tenant *tenants[1024];    /* hash by id */
	int ntenants;
	worker *workers;
	lease *leases[4096];      /* hash by id */
	uint64_t next_lease;
	lander *lander;
	int lease_size[NLANES];
	int64_t lease_timeout_ms;
	int max_attempts;
	int64_t retry_base_ms;
	int max_loaded;           /* batches in memory per tenant */
	bool trace;               /* log every lease (sched_trace) */
	volatile int stopping;
	/* counters for metrics */
	uint64_t dispatched[NLANES], results[8], retried, throttled, dead_lettered, expired;
	uint64_t rate_waits;
	/* dispatch-to-result latency histogram per lane (metrics.c) */
	uint64_t lat_bucket[NLANES][14];
	uint64_t lat_count[NLANES];
	double lat_sum_ms[NLANES];
	struct metrics_server *metrics;
	/* resolved provider accounts (store.c), refreshed after provider_cache_ms */
	struct provider_entry *providers[256];
	int64_t provider_cache_ms;
	int64_t limits_loaded_ms;
	/* the tenants' shards this scheduler owns (owner.h), rebalanced every rebalance_ms */
	owner *owner;
	int64_t rebalance_ms;
} sched;

/* Whether this scheduler acts for the tenant now (its shard is owned, not
 * draining).  Safe from any thread; threads acting outside the loop bracket
 * their act with owner_hold()/owner_unhold() on s->owner (owner.h). */
static inline bool sched_owns_tenant(const sched *s, uint32_t tenant_id)
{
	return owner_owns(s->owner, tenant_id);
}

/* store.c */
void store_providers_free(sched *s);
/* Re-read account, tenant, agency and sender limits (at start and every provider_cache_ms). */
bool store_load_limits(sched *s, hr_err *err) HR_MUST_CHECK;
/* Before a statement on s->db from the loop thread: finish the shard tick out on it (dispatch.c). */
void sched_db_sync(sched *s);

/* store.c -- Postgres side of the loop's thread */
bool store_connect(sched *s, hr_err *err) HR_MUST_CHECK;
bool store_load_tenants(sched *s, hr_err *err) HR_MUST_CHECK;
/* Rows (id, agency_id, slug, schema_name, role_name, active) of the tenants this
 * scheduler serves, on any connection (the dispatcher's and the rule engine's). */
bool store_tenants(PGconn *c, PGresult **r, hr_err *err) HR_MUST_CHECK;
bool store_listen(sched *s, hr_err *err) HR_MUST_CHECK;
/* Drain NOTIFYs; marks tenants need_load.  Returns false on a lost connection. */
bool store_poll_notify(sched *s);
/* Load up to `room` new batches of t (due or not); transactional ones first,
 * and they may exceed room (<= 0 too) by up to max_loaded. */
bool store_load_batches(sched *s, tenant *t, int room, hr_err *err) HR_MUST_CHECK;
tenant *tenant_find(sched *s, uint32_t id);
/* This scheduler took t's shard: read its low water and recover from there. */
bool store_tenant_take(sched *s, tenant *t, hr_err *err) HR_MUST_CHECK;
/* A batch of t is being loaded on a connection of its own. */
bool store_tenant_loading(const tenant *t);
/* Collect finished batch loads (they are otherwise collected while loading others). */
void store_poll_loads(sched *s);
/* The sockets of the loads in flight, for the loop's poll set; returns how many. */
int store_poll_fds(int *fds, int max);

/* dispatch.c */
void batch_free(batch *b);
void tenant_add_batch(sched *s, tenant *t, batch *b);
int64_t now_ms(void);
int64_t now_ns(void);
int64_t wall_us(void); /* CLOCK_REALTIME, for sched_trace lines */
/* The owner's hooks (owner.h): serve, drain, forget the tenants of a shard. */
owner_hooks sched_owner_hooks(sched *s);

/* lander.c -- the results writer thread */
typedef struct landed {
	const tenant *t;          /* tenants live as long as the process */
	bool low_water;           /* a marker: message_id is the tenant's new low water */
	int64_t message_id;
	uint8_t status;           /* HR_RES_SENT / PERMANENT / BOUNCED, or 0 = dead-lettered */
	uint8_t attempts;
	uint32_t latency_us;
	char *provider_id;        /* heap or NULL */
	char *reason;             /* heap or NULL */
	char *address;            /* BOUNCED: the address to suppress (heap) */
	uint8_t channel;
	bool bulk;                /* a bulk-lane result: landed on the niced connection */
} landed;

lander *lander_start(const char *dsn, hr_err *err);
/* store.c: lower the CPU priority of a bulk-lane connection's Postgres
 * backend when it is on this host and we may (once-logged when we may not):
 * BULK_BACKEND_NICE above the server's own nice, and into the cgroup set by
 * store_set_bulk_cgroup when there is one. */
void store_backend_lower(PGconn *db);
/* sched_bulk_cgroup: a cgroup directory for the bulk lane's backends ("" = none). */
void store_set_bulk_cgroup(const char *dir);
/* How much lower the CPU priority of the bulk lane's backends is (store.c). */
#define BULK_BACKEND_NICE 10
/* Hand over n results (the lander takes ownership of their strings). */
void lander_submit(lander *l, landed *items, int n);
/* Flush what is queued, then stop the thread. */
void lander_stop(lander *l);
uint64_t lander_landed(lander *l);
/* Items fully processed, in submission order: the first N submitted are all landed. */
uint64_t lander_done(lander *l);
uint64_t lander_queue_depth(lander *l);

#endif
