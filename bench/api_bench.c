/*
 * api_bench.c -- a fixed-rate HTTP load generator for bench/api (wrk runs as
 * fast as it can; a latency goal at "1,000 req/s" needs a fixed rate).
 *
 *   herald-bench-api URL KEY RATE SECONDS BODY
 *
 * POSTs BODY (application/json, Authorization: Bearer KEY) to URL at RATE
 * requests per second for SECONDS, with libcurl's multi interface on one
 * thread: request i is due at t0 + i / RATE and is started then whatever
 * is still in flight (connections are reused; at most 512 in flight).  Its
 * latency runs from when it was DUE, not when it went out, so a server that
 * falls behind is charged for the wait (no coordinated omission).  Between
 * due times it sleeps in pselect(2) on curl's sockets, to the microsecond:
 * it must not spin a core the server under test needs.  Prints
 * one line: sent= ok= errors= rate= p50_ms= p90_ms= p99_ms= max_ms=.  A
 * response other than 2xx counts as an error (the first is printed to
 * stderr).  With HERALD_BENCH_TRACE=FILE it also writes one line per
 * request, "due_ms latency_ms" (due time from the start of the run), in
 * completion order: when in a run a stall hit, and how many it held up.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include <curl/curl.h>

#define MAX_FLIGHT 512

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t sink(char *d, size_t sz, size_t nm, void *u)
{
	(void)d;
	(void)u;
	return sz * nm;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

typedef struct slot {
	CURL *h;
	double due;
	int busy;
} slot;

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: herald-bench-api URL KEY RATE SECONDS BODY\n");
		return 2;
	}
	const char *url = argv[1], *body = argv[5];
	double rate = atof(argv[3]), secs = atof(argv[4]);
	long total = (long)(rate * secs);
	if (rate <= 0 || total <= 0) {
		fprintf(stderr, "herald-bench-api: RATE and SECONDS must be positive\n");
		return 2;
	}
	curl_global_init(CURL_GLOBAL_ALL);
	char auth[512];
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", argv[2]);
	struct curl_slist *hd = curl_slist_append(NULL, auth);
	hd = curl_slist_append(hd, "Content-Type: application/json");
	hd = curl_slist_append(hd, "Expect:");
	CURLM *m = curl_multi_init();
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MAX_FLIGHT);
	static slot slots[MAX_FLIGHT];
	double *lat = calloc((size_t)total, sizeof *lat);
	const char *trace_path = getenv("HERALD_BENCH_TRACE");
	FILE *trace = trace_path && *trace_path ? fopen(trace_path, "w") : NULL;
	if (trace_path && *trace_path && !trace) {
		perror(trace_path);
		return 2;
	}
	long started = 0, done = 0, ok = 0, errors = 0;
	int first_error = 1;
	double t0 = now_s() + 0.05;
	while (done < total) {
		double t = now_s();
		/* Start every request that is due. */
		bool full = false;
		while (started < total && t0 + (double)started / rate <= t) {
			int k = 0;
			while (k < MAX_FLIGHT && slots[k].busy)
				k++;
			if (k == MAX_FLIGHT) {
				full = true;
				break; /* all in flight: it waits, and its latency grows */
			}
			slot *s = &slots[k];
			if (!s->h) {
				s->h = curl_easy_init();
				curl_easy_setopt(s->h, CURLOPT_URL, url);
				curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, hd);
				curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, body);
				curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, sink);
				curl_easy_setopt(s->h, CURLOPT_TIMEOUT, 30L);
				curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
			}
			s->due = t0 + (double)started / rate;
			s->busy = 1;
			curl_multi_add_handle(m, s->h);
			started++;
		}
		int running;
		curl_multi_perform(m, &running);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(m, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			slot *s;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			long code = 0;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
			lat[done] = (now_s() - s->due) * 1000.0;
			if (trace)
				fprintf(trace, "%.3f %.3f\n", (s->due - t0) * 1000.0, lat[done]);
			done++;
			if (msg->data.result == CURLE_OK && code >= 200 && code < 300) {
				ok++;
			} else {
				errors++;
				if (first_error) {
					fprintf(stderr, "herald-bench-api: %s, HTTP %ld\n", curl_easy_strerror(msg->data.result),
						code);
					first_error = 0;
				}
			}
			curl_multi_remove_handle(m, msg->easy_handle);
			s->busy = 0;
		}
		/*
		 * Sleep until the next request is due or a socket is ready.
		 * curl_multi_poll takes whole milliseconds, and at 1,000/s the
		 * next request is always due in under one: a 0 ms poll spun a
		 * core that herald-api and PostgreSQL need on a small machine, a
		 * 1 ms one started requests late.  pselect on curl's sockets
		 * sleeps to the microsecond instead.
		 */
		double wait = started < total ? t0 + (double)started / rate - now_s() : 0.001;
		if (wait > 0.001 || full)
			wait = 0.001; /* all slots busy: a completion wakes us */
		if (wait > 0) {
			fd_set rd, wr, ex;
			int maxfd = -1;
			FD_ZERO(&rd);
			FD_ZERO(&wr);
			FD_ZERO(&ex);
			curl_multi_fdset(m, &rd, &wr, &ex, &maxfd);
			struct timespec ts = {0, (long)(wait * 1e9)};
			if (maxfd >= 0)
				pselect(maxfd + 1, &rd, &wr, &ex, &ts, NULL);
			else
				nanosleep(&ts, NULL);
		}
	}
	double elapsed = now_s() - t0;
	qsort(lat, (size_t)done, sizeof *lat, cmp);
#define PCT(p) lat[(size_t)((double)(done - 1) * (p))]
	printf("sent=%ld ok=%ld errors=%ld rate=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n", done, ok,
	       errors, (double)done / elapsed, PCT(0.50), PCT(0.90), PCT(0.99), lat[done - 1]);
	for (int k = 0; k < MAX_FLIGHT; k++)
		if (slots[k].h)
			curl_easy_cleanup(slots[k].h);
	curl_multi_cleanup(m);
	curl_slist_free_all(hd);
	free(lat);
	if (trace)
		fclose(trace);
	curl_global_cleanup();
	return errors ? 1 : 0;
}
