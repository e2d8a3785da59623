/*
 * lander.c -- the results writer: a thread with its own Postgres connection
 * that lands final results in the tenants' schemas, in batches.
 *
 * The loop hands over finished results (lander_submit) and goes on; the
 * lander wakes every 20 ms or when 8,192 results are queued, groups them by
 * tenant and writes each tenant's share in one transaction, as the tenant's
 * role: the results by COPY (about twice as fast as any INSERT here, which
 * is what bounds a bulk campaign to the sink), the suppression of
 * hard-bounced addresses, and the tenant's new low water when the loop sent
 * a marker after the last result of a prefix of finished batches.  Order is
 * kept: a marker is written with (or after) every result submitted before it.
 * When a flush holds failed results, their batches go to hr_cascade_settle()
 * in the same transaction: a channel cascade whose batch has no message left
 * waiting falls back at once (common/cascade.h).
 *
 * Exactly one result per message is the results primary key's job.  COPY
 * has no ON CONFLICT: when a message was answered twice (a lease re-sent
 * after a timeout, recovery after a crash) the COPY fails on the key, the
 * transaction rolls back, and that flush is written again with one
 * INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING, which keeps the
 * result already there.
 *
 * Two connections, one per lane.  A tenant's share of a flush is written as
 * two transactions, one after the other: its transactional results on the
 * first connection, then its bulk results and its markers on the second,
 * whose backend runs at a lower CPU priority (BULK_BACKEND_NICE, as the bulk
 * loads' do, store.c) when Postgres is on this host.  Behind a draining
 * million-message backlog the bulk results' COPY was the largest consumer of
 * CPU at normal priority left besides the provider (docs/benchmarks.md,
 * bench/lanes), and every hop of a transactional message -- the NOTIFY, its
 * read, its worker -- waited for a CPU behind it.  Order still holds: a
 * marker goes with the later transaction, after every result before it.
 *
 * If Postgres fails, the batch is retried with backoff (results stay in
 * memory; nothing is dropped while the process lives).  If the process dies,
 * unlanded results are lost and their messages are re-sent after restart:
 * at least once, never two results.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cascade.h"
#include "db.h"
#include "log.h"
#include "model.h"

struct lander {
	char *dsn;
	PGconn *db[2];            /* [0] transactional results, [1] bulk results and markers */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	landed *q;
	int nq, capq;
	bool stop;
	atomic_ullong landed_count;
	atomic_ullong depth;
	atomic_ullong done_count;  /* whole flushes processed, in queue order (lander_done) */
};

typedef struct sbuf {
	char *p;
	size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
	if (b->len + more + 1 > b->cap) {
		b->cap = (b->len + more + 1) * 2;
		b->p = hr_realloc(b->p, b->cap);
	}
}

static void sb_putc(sbuf *b, char c)
{
	sb_reserve(b, 1);
	b->p[b->len++] = c;
	b->p[b->len] = '\0';
}

static void sb_int(sbuf *b, long long v)
{
	sb_reserve(b, 24);
	b->len += (size_t)snprintf(b->p + b->len, 24, "%lld", v);
}

/* An element of a text[] literal: NULL or a quoted, escaped string. */
static void sb_elem(sbuf *b, const char *s)
{
	if (!s) {
		sb_reserve(b, 4);
		memcpy(b->p + b->len, "NULL", 5);
		b->len += 4;
		return;
	}
	sb_reserve(b, 2 * strlen(s) + 2);
	b->p[b->len++] = '"';
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			b->p[b->len++] = '\\';
		b->p[b->len++] = *s;
	}
	b->p[b->len++] = '"';
	b->p[b->len] = '\0';
}

/* A field of COPY's text format: \N for NULL, backslash escapes. */
static void sb_copy_field(sbuf *b, const char *s)
{
	if (!s) {
		sb_reserve(b, 2);
		b->p[b->len++] = '\\';
		b->p[b->len++] = 'N';
		b->p[b->len] = '\0';
		return;
	}
	sb_reserve(b, 2 * strlen(s));
	for (; *s; s++) {
		char c = *s;
		if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
			b->p[b->len++] = '\\';
			c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : c;
		}
		b->p[b->len++] = c;
	}
	b->p[b->len] = '\0';
}

static const char *status_text(uint8_t st)
{
	switch (st) {
	case HR_RES_SENT:
		return "sent";
	case HR_RES_BOUNCED:
		return "bounced";
	case HR_RES_PERMANENT:
		return "failed";
	default:
		return "dead";
	}
}

/* COPY the rows in `rows` (text format) into results. */
static bool copy_results(PGconn *db, const sbuf *rows, hr_err *err)
{
	PGresult *r = PQexec(db, "COPY results (message_id, status, attempts, provider_id, reason, "
				    "latency_us) FROM STDIN");
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		hr_db_fail(db, r, "copying results", err);
		PQclear(r);
		return false;
	}
	PQclear(r);
	bool ok = PQputCopyData(db, rows->p, (int)rows->len) == 1 && PQputCopyEnd(db, NULL) == 1;
	if (!ok)
		hr_db_fail(db, NULL, "copying results", err);
	while ((r = PQgetResult(db))) {
		if (ok && PQresultStatus(r) != PGRES_COMMAND_OK)
			ok = hr_db_fail(db, r, "copying results", err);
		PQclear(r);
	}
	return ok;
}

/*
 * Write items[0..n) (all of one tenant) in one transaction; results by COPY
 * when use_copy, else by INSERT ... ON CONFLICT DO NOTHING.
 */
static bool land_tenant(PGconn *db, landed *items, int n, bool use_copy, hr_err *err)
{
	const tenant *t = items[0].t;
	sbuf ids = {0}, st = {0}, att = {0}, pid = {0}, rsn = {0}, lat = {0}, bch = {0}, badr = {0};
	sbuf *all[] = {&ids, &st, &att, &pid, &rsn, &lat, &bch, &badr};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		sb_putc(all[i], '{');
	sbuf rows = {0}, fin = {0}; /* fin: batches of failed results, for the channel cascade */
	int64_t low = -1, last_fin = -1;
	int nres = 0, nbounce = 0;
	for (int i = 0; i < n; i++) {
		landed *x = &items[i];
		if (x->low_water) {
			if (x->message_id > low)
				low = x->message_id;
			continue;
		}
		if (x->status != HR_RES_SENT && x->message_id / 4096 != last_fin) {
			sb_putc(&fin, last_fin < 0 ? '{' : ',');
			last_fin = x->message_id / 4096;
			sb_int(&fin, last_fin);
		}
		if (x->status == HR_RES_BOUNCED && x->address) {
			if (nbounce++) {
				sb_putc(&bch, ',');
				sb_putc(&badr, ',');
			}
			sb_elem(&bch, hr_channel_name(x->channel));
			sb_elem(&badr, x->address);
		}
		if (use_copy) {
			nres++;
			sb_int(&rows, x->message_id);
			sb_putc(&rows, '\t');
			sb_copy_field(&rows, status_text(x->status));
			sb_putc(&rows, '\t');
			sb_int(&rows, x->attempts);
			sb_putc(&rows, '\t');
			sb_copy_field(&rows, x->provider_id);
			sb_putc(&rows, '\t');
			sb_copy_field(&rows, x->reason);
			sb_putc(&rows, '\t');
			sb_int(&rows, x->latency_us);
			sb_putc(&rows, '\n');
			continue;
		}
		if (nres++) {
			sb_putc(&ids, ',');
			sb_putc(&st, ',');
			sb_putc(&att, ',');
			sb_putc(&pid, ',');
			sb_putc(&rsn, ',');
			sb_putc(&lat, ',');
		}
		sb_int(&ids, x->message_id);
		sb_elem(&st, status_text(x->status));
		sb_int(&att, x->attempts);
		sb_elem(&pid, x->provider_id);
		sb_elem(&rsn, x->reason);
		sb_int(&lat, x->latency_us);
	}
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		sb_putc(all[i], '}');
	bool ok = hr_db_tenant_begin(db, t->schema, t->role, err);
	if (ok && nres && use_copy) {
		ok = copy_results(db, &rows, err);
	} else if (ok && nres) {
		const char *p[] = {ids.p, st.p, att.p, pid.p, rsn.p, lat.p};
		ok = hr_db_query(db,
				 "INSERT INTO results (message_id, status, attempts, provider_id, reason, latency_us) "
				 "SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], "
				 "$6::int[]) ON CONFLICT (message_id) DO NOTHING",
				 6, p, NULL, err);
	}
	if (ok && nbounce) {
		const char *p[] = {bch.p, badr.p};
		ok = hr_db_query(db,
				 "INSERT INTO suppressions (channel, address, reason) SELECT c, a, 'hard_bounce' "
				 "FROM unnest($1::text[], $2::text[]) AS u(c, a) ON CONFLICT DO NOTHING",
				 2, p, NULL, err);
	}
	if (ok && last_fin >= 0) {
		sb_putc(&fin, '}');
		ok = hr_cascade_settle(db, t->id, fin.p, err);
	}
	if (ok && low >= 0) {
		char lw[32];
		snprintf(lw, sizeof lw, "%lld", (long long)low);
		const char *p[] = {lw};
		ok = hr_db_query(db, "UPDATE dispatch_state SET low_water = greatest(low_water, $1)", 1,
				 p, NULL, err);
	}
	if (ok)
		ok = hr_db_commit(db, err);
	else
		hr_db_rollback(db);
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		hr_free(all[i]->p);
	hr_free(rows.p);
	hr_free(fin.p);
	return ok;
}

static int by_tenant(const void *a, const void *b)
{
	const landed *x = a, *y = b;
	if (x->t->id != y->t->id)
		return x->t->id < y->t->id ? -1 : 1;
	return 0;
}

/* Move the transactional results of items[0..n) to the front (order within a
 * tenant's share does not matter: each part commits as one); their count. */
static int partition_tx(landed *items, int n)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		if (!items[i].low_water && !items[i].bulk) {
			landed x = items[i];
			items[i] = items[k];
			items[k++] = x;
		}
	return k;
}

/* Connect the lane's connection, name it for operators, renice a bulk one. */
static bool lander_connect(lander *l, int lane, hr_err *err)
{
	if (!hr_db_connect(l->dsn, &l->db[lane], err))
		return false;
	if (!hr_db_exec(l->db[lane],
			lane ? "SET application_name = 'herald-scheduler landing bulk'"
			     : "SET application_name = 'herald-scheduler landing transactional'",
			err)) {
		PQfinish(l->db[lane]);
		l->db[lane] = NULL;
		return false;
	}
	if (lane)
		store_backend_lower(l->db[lane]);
	return true;
}

static void free_items(landed *items, int n)
{
	for (int i = 0; i < n; i++) {
		hr_free(items[i].provider_id);
		hr_free(items[i].reason);
		hr_free(items[i].address);
	}
}

static void *run(void *arg)
{
	lander *l = arg;
	int backoff_ms = 50;
	for (;;) {
		pthread_mutex_lock(&l->mu);
		if (l->nq < 8192 && !l->stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&l->cv, &l->mu, &ts);
		}
		landed *items = l->q;
		int n = l->nq;
		bool stop = l->stop;
		l->q = NULL;
		l->nq = l->capq = 0;
		pthread_mutex_unlock(&l->mu);
		if (n == 0) {
			if (stop)
				break;
			continue;
		}
		/* qsort is not stable, and need not be: one tenant's share of a flush
		 * commits in one transaction, so a marker lands with the results it
		 * follows; across flushes the queue keeps the loop's order. */
		qsort(items, (size_t)n, sizeof *items, by_tenant);
		int done = 0, share_end = 0, part_end = 0;
		while (done < n) {
			if (done == share_end) {
				/* A new tenant's share: its transactional results first, then the rest. */
				while (share_end < n && items[share_end].t == items[done].t)
					share_end++;
				part_end = done + partition_tx(items + done, share_end - done);
				if (part_end == done)
					part_end = share_end;
			} else if (done == part_end) {
				part_end = share_end;
			}
			int end = part_end;
			int lane = items[done].low_water || items[done].bulk;
			hr_err err = {0};
			if (!l->db[lane] && !lander_connect(l, lane, &err)) {
				hr_warn("lander: %s; retrying in %d ms", err.msg, backoff_ms);
			} else if (land_tenant(l->db[lane], items + done, end - done, true, &err) ||
				   (err.kind == HR_ERR_CONFLICT && PQstatus(l->db[lane]) == CONNECTION_OK &&
				    land_tenant(l->db[lane], items + done, end - done, false, &err))) {
				/* A conflict: some message already has its result; see the top. */
				atomic_fetch_add(&l->landed_count, (unsigned long long)(end - done));
				free_items(items + done, end - done);
				done = end;
				backoff_ms = 50;
				continue;
			} else {
				hr_warn("lander: tenant=%s: %s; retrying in %d ms", items[done].t->slug, err.msg,
					backoff_ms);
				if (PQstatus(l->db[lane]) != CONNECTION_OK) {
					PQfinish(l->db[lane]);
					l->db[lane] = NULL;
				}
			}
			struct timespec d = {backoff_ms / 1000, (backoff_ms % 1000) * 1000000L};
			nanosleep(&d, NULL);
			if (backoff_ms < 5000)
				backoff_ms *= 2;
		}
		atomic_fetch_sub(&l->depth, (unsigned long long)n);
		atomic_fetch_add(&l->done_count, (unsigned long long)n);
		hr_free(items);
	}
	return NULL;
}

lander *lander_start(const char *dsn, hr_err *err)
{
	lander *l = hr_calloc(1, sizeof *l);
	l->dsn = hr_strdup(dsn);
	if (!lander_connect(l, 0, err) || !lander_connect(l, 1, err)) {
		if (l->db[0])
			PQfinish(l->db[0]);
		hr_free(l->dsn);
		hr_free(l);
		return NULL;
	}
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	pthread_create(&l->thread, NULL, run, l);
	return l;
}

void lander_submit(lander *l, landed *items, int n)
{
	if (n <= 0)
		return;
	pthread_mutex_lock(&l->mu);
	if (l->nq + n > l->capq) {
		l->capq = (l->nq + n) * 2;
		l->q = hr_realloc(l->q, (size_t)l->capq * sizeof *l->q);
	}
	memcpy(l->q + l->nq, items, (size_t)n * sizeof *items);
	l->nq += n;
	atomic_fetch_add(&l->depth, (unsigned long long)n);
	if (l->nq >= 8192)
		pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

void lander_stop(lander *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->stop = true;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->thread, NULL);
	for (int i = 0; i < 2; i++)
		if (l->db[i])
			PQfinish(l->db[i]);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	hr_free(l->dsn);
	hr_free(l);
}

uint64_t lander_landed(lander *l)
{
	return atomic_load(&l->landed_count);
}

uint64_t lander_done(lander *l)
{
	return atomic_load(&l->done_count);
}

uint64_t lander_queue_depth(lander *l)
{
	return atomic_load(&l->depth);
}
