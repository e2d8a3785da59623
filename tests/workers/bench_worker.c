/*
 * bench_worker.c -- throughput and memory of one herald-worker process.
 *
 *   worker_bench CHANNEL PROVIDER_JSON MESSAGES [LEASE_SIZE] [CREDIT] [-- worker args...]
 *
 * Plays the scheduler (a ROUTER on tcp://127.0.0.1:*), starts the real
 * worker, keeps CREDIT leases of LEASE_SIZE jobs in flight (a new lease
 * for each CREDIT it gets back) until MESSAGES results are in, and prints
 * messages/s, the result classes and the worker's peak and final RSS
 * (/proc/PID/status).  Not a test: a measuring tool (docs/workers.md).
 * Start the provider yourself (smtp-sink, herald-provsim).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "wire.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long kb = 0;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s CHANNEL PROVIDER_JSON MESSAGES [LEASE_SIZE] [CREDIT] [-- worker args]\n",
			argv[0]);
		return 2;
	}
	const char *channel = argv[1], *provider = argv[2];
	long total = atol(argv[3]);
	uint32_t lease_size = argc > 4 && strcmp(argv[4], "--") ? (uint32_t)atol(argv[4]) : 512;
	uint32_t credit = argc > 5 && strcmp(argv[5], "--") ? (uint32_t)atol(argv[5]) : 4;
	int extra = 0;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			extra = i + 1;
			break;
		}
	int ch = hr_channel_parse(channel);
	void *ctx = zmq_ctx_new(), *r = zmq_socket(ctx, ZMQ_ROUTER);
	zmq_bind(r, "tcp://127.0.0.1:*");
	char ep[128], cr[16];
	size_t n = sizeof ep;
	zmq_getsockopt(r, ZMQ_LAST_ENDPOINT, ep, &n);
	snprintf(cr, sizeof cr, "%u", credit);
	const char *wargv[64] = {WORKER_BIN, "--channel", channel, "--lane", "bulk", "--scheduler", ep,
				 "--credit", cr, "--metrics-port", "-1"};
	int wargc = 11;
	for (int i = extra; extra && i < argc && wargc < 62; i++)
		wargv[wargc++] = argv[i];
	wargv[wargc] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(WORKER_BIN, (char *const *)wargv);
		_exit(127);
	}
	/* Jobs: a realistic data object and content per channel. */
	const char *content = ch == HR_CH_EMAIL
				      ? "{\"from\":\"Acme <news@acme.test>\",\"subject\":\"Hello {{first_name}}, {{n}} new items\","
					"\"text\":\"Hi {{first_name}},\\n{% for i in items %}- {{i.name}}: {{i.price}}\\n{% endfor %}\","
					"\"html\":\"<p>Hi {{first_name | escape}}</p><ul>{% for i in items %}<li>{{i.name}}</li>{% endfor %}</ul>\"}"
			      : ch == HR_CH_PUSH ? "{\"title\":\"Hi {{first_name}}\",\"body\":\"{{n}} new items\"}"
			      : ch == HR_CH_WEBHOOK ? "{\"body\":\"{{n}}\"}"
						    : "{\"text\":\"Hi {{first_name}}, your code is {{n}}\"}";
	char addr[64], data[512];
	uint8_t ident[256];
	size_t identlen = 0;
	long sent_jobs = 0, results = 0, byclass[6] = {0};
	uint64_t next_id = 1, lease = 1;
	long peak = 0;
	double t0 = 0, last_rss = 0;
	hr_buf b = {0};
	hr_job *jobs = calloc(lease_size, sizeof *jobs);
	char (*addrs)[64] = calloc(lease_size, 64);
	char (*datas)[512] = calloc(lease_size, 512);
	uint32_t can_send = 0;
	while (results < total) {
		zmq_msg_t id, m;
		zmq_msg_init(&id);
		zmq_msg_init(&m);
		if (zmq_msg_recv(&id, r, 0) < 0 || zmq_msg_recv(&m, r, 0) < 0)
			return 1;
		memcpy(ident, zmq_msg_data(&id), zmq_msg_size(&id));
		identlen = zmq_msg_size(&id);
		hr_wire_type ty;
		if (!hr_wire_peek(zmq_msg_data(&m), zmq_msg_size(&m), &ty, NULL))
			return 1;
		if (ty == HR_W_HELLO) {
			hr_hello h;
			if (hr_wire_decode_hello(zmq_msg_data(&m), zmq_msg_size(&m), &h, NULL))
				can_send += h.credit;
			if (!t0)
				t0 = now_s();
		} else if (ty == HR_W_CREDIT) {
			hr_credit c;
			if (hr_wire_decode_credit(zmq_msg_data(&m), zmq_msg_size(&m), &c, NULL))
				can_send += c.credit;
		} else if (ty == HR_W_RESULTS) {
			hr_result_batch rb;
			if (hr_wire_decode_results(zmq_msg_data(&m), zmq_msg_size(&m), &rb, NULL)) {
				results += rb.nresults;
				for (uint32_t i = 0; i < rb.nresults; i++) {
					const hr_result *x = &rb.results[i];
					if (x->status != HR_RES_SENT && !byclass[x->status < 6 ? x->status : 0])
						fprintf(stderr, "first %s: %.*s\n", hr_result_name(x->status),
							(int)x->reason.len, x->reason.p);
					byclass[x->status < 6 ? x->status : 0]++;
				}
				hr_wire_results_free(&rb);
			}
		}
		zmq_msg_close(&m);
		zmq_msg_close(&id);
		while (can_send && sent_jobs < total) {
			uint32_t nj = total - sent_jobs < lease_size ? (uint32_t)(total - sent_jobs) : lease_size;
			for (uint32_t i = 0; i < nj; i++, next_id++) {
				if (ch == HR_CH_EMAIL)
					snprintf(addr, sizeof addr, "u%llu@example.test", (unsigned long long)next_id);
				else
					snprintf(addr, sizeof addr, "+1555%07llu", (unsigned long long)(next_id % 10000000));
				snprintf(data, sizeof data,
					 "{\"first_name\":\"Ann%llu\",\"n\":%llu,\"items\":[{\"name\":\"Lamp\",\"price\":19.9},"
					 "{\"name\":\"Desk\",\"price\":120}]}",
					 (unsigned long long)next_id, (unsigned long long)(next_id % 97));
				memcpy(addrs[i], addr, sizeof addr);
				memcpy(datas[i], data, sizeof data);
				jobs[i] = (hr_job){.message_id = next_id, .attempt = 1,
						   .address = {addrs[i], (uint32_t)strlen(addrs[i])},
						   .data = {datas[i], (uint32_t)strlen(datas[i])}};
			}
			hr_job_batch jb = {.lease_id = lease++, .tenant_id = 1, .tenant = {"acme", 4},
					   .channel = (uint8_t)ch, .lane = HR_LANE_BULK, .template_id = 9,
					   .template_version = 1, .content = {content, (uint32_t)strlen(content)},
					   .provider = {provider, (uint32_t)strlen(provider)}, .njobs = nj, .jobs = jobs};
			hr_buf_reset(&b);
			hr_wire_encode_jobs(&b, &jb);
			zmq_send(r, ident, identlen, ZMQ_SNDMORE);
			zmq_send(r, b.data, b.len, 0);
			sent_jobs += nj;
			can_send--;
		}
		double t = now_s();
		if (t - last_rss > 0.2) {
			long kb = rss_kb(pid);
			if (kb > peak)
				peak = kb;
			last_rss = t;
		}
	}
	double secs = now_s() - t0;
	long final_kb = rss_kb(pid);
	printf("messages=%ld seconds=%.2f rate=%.0f/s sent=%ld retry=%ld permanent=%ld throttled=%ld bounced=%ld "
	       "rss_peak_kb=%ld rss_final_kb=%ld\n",
	       results, secs, results / secs, byclass[1], byclass[2], byclass[3], byclass[4], byclass[5],
	       peak > final_kb ? peak : final_kb, final_kb);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	hr_buf_free(&b);
	free(jobs);
	free(addrs);
	free(datas);
	zmq_close(r);
	zmq_ctx_term(ctx);
	return 0;
}
