/*
 * receipts.c -- see receipts.h.
 */
#include "receipts.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"

#define BUF_SIZE (64 * 1024)
#define LINE_MAX_BYTES (21 + 4 * 257 + 8 + 8)
#define FLUSH_MS 50

struct tbuf {
	struct tbuf *next;    /* all buffers, for the flusher */
	pthread_mutex_t mu;   /* owner thread vs flusher */
	size_t len;           /* bytes pending in data */
	char data[BUF_SIZE];
};

struct ps_receipts {
	int fd;
	pthread_mutex_t mu;        /* guards `bufs`, `stop` */
	pthread_cond_t cv;         /* wakes the flusher early on close */
	struct tbuf *bufs;
	bool stop;
	pthread_t flusher;
	_Atomic int64_t last_err;  /* second of the last logged write error */
};

/* The calling thread's buffer; `owner` ties it to one ps_receipts instance. */
static _Thread_local struct tbuf *tl_buf;
static _Thread_local const ps_receipts *tl_owner;

static void write_out(ps_receipts *r, struct tbuf *b)
{
	size_t off = 0;
	while (off < b->len) {
		ssize_t n = write(r->fd, b->data + off, b->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int64_t now = (int64_t)time(NULL);
			if (atomic_exchange(&r->last_err, now) != now)
				hr_warn("receipts: write failed: %s; lines dropped", strerror(errno));
			break;
		}
		off += (size_t)n;
	}
	b->len = 0;
}

static void flush_all(ps_receipts *r)
{
	pthread_mutex_lock(&r->mu);
	for (struct tbuf *b = r->bufs; b; b = b->next) {
		pthread_mutex_lock(&b->mu);
		write_out(r, b);
		pthread_mutex_unlock(&b->mu);
	}
	pthread_mutex_unlock(&r->mu);
}

static void *flusher_main(void *arg)
{
	ps_receipts *r = arg;
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += FLUSH_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
		pthread_mutex_unlock(&r->mu);
		flush_all(r);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

bool ps_receipts_open(const char *path, ps_receipts **out, char *err, size_t errlen)
{
	ps_receipts *r = hr_calloc(1, sizeof *r);
	r->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (r->fd < 0) {
		snprintf(err, errlen, "receipts: open %s: %s", path, strerror(errno));
		goto fail;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	int rc = pthread_create(&r->flusher, NULL, flusher_main, r);
	if (rc != 0) {
		snprintf(err, errlen, "receipts: thread: %s", strerror(rc));
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		close(r->fd);
		goto fail;
	}
	*out = r;
	return true;
fail:
	hr_free(r);
	return false;
}

static struct tbuf *my_buf(ps_receipts *r)
{
	if (tl_owner == r && tl_buf)
		return tl_buf;
	struct tbuf *b = hr_malloc(sizeof *b);
	b->len = 0;
	pthread_mutex_init(&b->mu, NULL);
	pthread_mutex_lock(&r->mu);
	b->next = r->bufs;
	r->bufs = b;
	pthread_mutex_unlock(&r->mu);
	tl_buf = b;
	tl_owner = r;
	return b;
}

void ps_receipts_add(ps_receipts *r, uint64_t unix_ns, const char *tenant, const char *account,
		     const char *channel, const char *to, const char *msg_id)
{
	struct tbuf *b = my_buf(r);
	pthread_mutex_lock(&b->mu);
	if (BUF_SIZE - b->len < LINE_MAX_BYTES)
		write_out(r, b);
	int n = snprintf(b->data + b->len, BUF_SIZE - b->len, "%llu %.256s %.256s %.16s %.256s %.256s\n",
			 (unsigned long long)unix_ns, tenant, account, channel, to, msg_id);
	if (n > 0)
		b->len += (size_t)n;
	pthread_mutex_unlock(&b->mu);
}

void ps_receipts_close(ps_receipts *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->flusher, NULL);
	flush_all(r);
	while (r->bufs) {
		struct tbuf *b = r->bufs;
		r->bufs = b->next;
		pthread_mutex_destroy(&b->mu);
		hr_free(b);
	}
	close(r->fd);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	hr_free(r);
}
