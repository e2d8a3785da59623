/*
 * notify.c -- see notify.h.
 *
 * One thread, one connection with synchronous_commit off.  api_notify()
 * adds (channel, tenant) to a pending set (duplicates coalesce) and wakes
 * the thread; the thread takes the whole set and sends it as one statement,
 * so a burst of sends to one tenant costs one NOTIFY.  A failed round trip
 * keeps the set and is retried after a reset of the connection.
 */
#include "notify.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "db.h"
#include "log.h"

typedef struct pending {
	api_channel ch;
	int64_t tenant;
} pending;

struct api_notifier {
	char *dsn;
	PGconn *c;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pending *set;   /* guarded by mu */
	size_t n, cap;
};

static const char *const channel_name[] = {"herald_outbox", "herald_events"};

void api_notify(api_notifier *nt, api_channel ch, int64_t tenant_id)
{
	pthread_mutex_lock(&nt->mu);
	size_t i = 0;
	while (i < nt->n && (nt->set[i].ch != ch || nt->set[i].tenant != tenant_id))
		i++;
	if (i == nt->n) {
		if (nt->n == nt->cap) {
			nt->cap = nt->cap ? nt->cap * 2 : 64;
			nt->set = hr_realloc(nt->set, nt->cap * sizeof *nt->set);
		}
		nt->set[nt->n++] = (pending){ch, tenant_id};
		pthread_cond_signal(&nt->cv);
	}
	pthread_mutex_unlock(&nt->mu);
}

/* One statement for the whole set: two text arrays, unnest()ed. */
static bool send_set(api_notifier *nt, const pending *p, size_t n, hr_err *err)
{
	size_t cap = n * 40 + 8, lc = 1, lt = 1;
	char *chs = hr_malloc(cap), *ids = hr_malloc(cap);
	chs[0] = ids[0] = '{';
	for (size_t i = 0; i < n; i++) {
		lc += (size_t)snprintf(chs + lc, cap - lc, "%s%s", i ? "," : "", channel_name[p[i].ch]);
		lt += (size_t)snprintf(ids + lt, cap - lt, "%s%lld", i ? "," : "", (long long)p[i].tenant);
	}
	snprintf(chs + lc, cap - lc, "}");
	snprintf(ids + lt, cap - lt, "}");
	const char *prm[] = {chs, ids};
	bool ok = hr_db_query(nt->c, "SELECT count(pg_notify(c, t)) FROM unnest($1::text[], $2::text[]) AS x(c, t)", 2,
			      prm, NULL, err);
	hr_free(chs);
	hr_free(ids);
	return ok;
}

static void *thread_main(void *arg)
{
	api_notifier *nt = arg;
	pending *batch = NULL;
	size_t nb = 0;
	pthread_mutex_lock(&nt->mu);
	for (;;) {
		while (!nt->n && !nt->stop)
			pthread_cond_wait(&nt->cv, &nt->mu);
		if (!nt->n)
			break; /* stopping, nothing left */
		/* Take the set; senders fill a fresh one meanwhile. */
		batch = nt->set;
		nb = nt->n;
		nt->set = NULL;
		nt->n = nt->cap = 0;
		bool stopping = nt->stop;
		pthread_mutex_unlock(&nt->mu);
		hr_err err = {0};
		bool ok = send_set(nt, batch, nb, &err);
		for (int tries = 0; !ok && tries < (stopping ? 2 : 1000000); tries++) {
			/* The connection broke (a restarted server): a wake-up is worth a retry. */
			if (tries == 0)
				hr_warn("api: notify: %s; retrying", err.msg);
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
			PQreset(nt->c);
			if (PQstatus(nt->c) == CONNECTION_OK)
				ok = hr_db_exec(nt->c, "SET synchronous_commit = off", &err) && send_set(nt, batch, nb, &err);
			pthread_mutex_lock(&nt->mu);
			stopping = nt->stop;
			pthread_mutex_unlock(&nt->mu);
		}
		if (!ok)
			hr_warn("api: notify: %zu wake-up(s) not sent: %s", nb, err.msg);
		hr_free(batch);
		batch = NULL;
		pthread_mutex_lock(&nt->mu);
	}
	pthread_mutex_unlock(&nt->mu);
	return NULL;
}

bool api_notifier_start(const char *dsn, api_notifier **out, hr_err *err)
{
	api_notifier *nt = hr_calloc(1, sizeof *nt);
	pthread_mutex_init(&nt->mu, NULL);
	pthread_cond_init(&nt->cv, NULL);
	/*
	 * A wake-up is a hint, so its commit need not wait for the disk; and
	 * once connected, announce every active tenant once: a herald-api that
	 * was killed between a commit and its NOTIFY left work that only a
	 * wake-up makes the scheduler look at.
	 */
	if (!hr_db_connect(dsn, &nt->c, err) || !hr_db_exec(nt->c, "SET synchronous_commit = off", err) ||
	    !hr_db_exec(nt->c,
			"SELECT count(pg_notify('herald_outbox', id::text)) + count(pg_notify('herald_events', "
			"id::text)) FROM herald.tenants WHERE status = 'active'",
			err))
		goto fail;
	if (pthread_create(&nt->th, NULL, thread_main, nt) != 0) {
		hr_fail(err, HR_ERR_IO, NULL, "api: cannot start the notify thread");
		goto fail;
	}
	*out = nt;
	return true;
fail:
	if (nt->c)
		PQfinish(nt->c);
	pthread_mutex_destroy(&nt->mu);
	pthread_cond_destroy(&nt->cv);
	hr_free(nt);
	return false;
}

void api_notifier_stop(api_notifier *nt)
{
	if (!nt)
		return;
	pthread_mutex_lock(&nt->mu);
	nt->stop = true;
	pthread_cond_signal(&nt->cv);
	pthread_mutex_unlock(&nt->mu);
	pthread_join(nt->th, NULL);
	PQfinish(nt->c);
	hr_free(nt->set);
	pthread_mutex_destroy(&nt->mu);
	pthread_cond_destroy(&nt->cv);
	hr_free(nt);
}
