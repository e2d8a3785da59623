/*
 * main.c -- herald-provsim: the provider simulator that herald's tests,
 * demo and benchmarks send SMS, messenger, push and webhook messages to.
 *
 *   herald-provsim --port 0 [--bind 127.0.0.1] [--threads N] [--receipts FILE]
 *                  [--control-token T] [--fault SPEC]... [--seed N] ...
 *
 * Contract with whoever starts it: once it accepts connections it prints
 * exactly one line "listening port=NNNNN" to stdout (flushed) and nothing
 * else to stdout; logs go to stderr.  SIGTERM or SIGINT: held requests are
 * released, the server stops, the receipts file is flushed, exit 0.  A bad
 * command line or environment exits 1 with a "fatal:" line.
 *
 * Options live in one table that drives parsing and --help.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "dlr.h"
#include "faults.h"
#include "log.h"
#include "receipts.h"
#include "server.h"
#include "stats.h"

struct config {
	unsigned long port, threads, max_body, tenant_slots, account_slots;
	unsigned long recipient_slots, dedupe_slots, inbox;
	unsigned long long seed;
	const char *bind, *receipts, *control_token;
	const char **faults; /* --fault specs in order */
	size_t nfaults;
	bool verbose, seed_set;
};

enum otype { O_ULONG, O_STR, O_FAULT, O_FLAG, O_SEED, O_HELP };

static const struct opt {
	const char *name;
	enum otype type;
	size_t off;           /* into struct config */
	unsigned long min, max;
	const char *help;
} opts[] = {
	{"port", O_ULONG, offsetof(struct config, port), 0, 65535,
	 "TCP port, 0 = any free port (default 0)"},
	{"bind", O_STR, offsetof(struct config, bind), 0, 0, "address to bind (default 127.0.0.1)"},
	{"threads", O_ULONG, offsetof(struct config, threads), 1, 256,
	 "server threads, each with its own epoll loop (default 2)"},
	{"receipts", O_STR, offsetof(struct config, receipts), 0, 0,
	 "append one line per accepted request to FILE"},
	{"control-token", O_STR, offsetof(struct config, control_token), 0, 0,
	 "bearer token required on /v1/control/*"},
	{"fault", O_FAULT, 0, 0, 0,
	 "account=NAME|*,latency_ms=,p429=,retry_after=,p500=,p503=,ptimeout=,hold_ms=,"
	 "rate_429_above=,token=,dlr_url=,fail_to= (repeatable)"},
	{"seed", O_SEED, offsetof(struct config, seed), 0, 0,
	 "seed of the fault generator (default: from time and pid, logged)"},
	{"max-body", O_ULONG, offsetof(struct config, max_body), 256, 16 << 20,
	 "largest send body in bytes, larger gets 413 (default 65536)"},
	{"tenant-slots", O_ULONG, offsetof(struct config, tenant_slots), 16, 1 << 24,
	 "distinct tenants counted (default 16384)"},
	{"account-slots", O_ULONG, offsetof(struct config, account_slots), 16, 1 << 24,
	 "distinct accounts counted (default 4096)"},
	{"recipient-slots", O_ULONG, offsetof(struct config, recipient_slots), 64, 1UL << 30,
	 "recipient table size, 16 bytes each (default 2097152)"},
	{"dedupe-slots", O_ULONG, offsetof(struct config, dedupe_slots), 16384, 1UL << 30,
	 "recent message ids remembered, 8 bytes each (default 4194304)"},
	{"inbox", O_ULONG, offsetof(struct config, inbox), 0, 1 << 20,
	 "keep the last N accepted messages for GET /v1/inbox/{to} (default 0 = off)"},
	{"verbose", O_FLAG, offsetof(struct config, verbose), 0, 0, "log every send request"},
	{"help", O_HELP, 0, 0, 0, "this text"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static void usage(FILE *f)
{
	fprintf(f, "usage: herald-provsim [options]\n");
	for (size_t i = 0; i < NOPTS; i++)
		fprintf(f, "  --%-16s %s\n", opts[i].name, opts[i].help);
}

static void parse_args(int argc, char **argv, struct config *cfg)
{
	struct option lo[NOPTS + 1];
	for (size_t i = 0; i < NOPTS; i++) {
		bool flag = opts[i].type == O_FLAG || opts[i].type == O_HELP;
		lo[i] = (struct option){opts[i].name, flag ? no_argument : required_argument, NULL,
					(int)i + 256};
	}
	lo[NOPTS] = (struct option){0};
	int ch;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch < 256) {
			usage(stderr);
			hr_fatal("bad command line near '%s'", argv[optind - 1]);
		}
		const struct opt *o = &opts[ch - 256];
		char *at = (char *)cfg + o->off, *end;
		switch (o->type) {
		case O_ULONG: {
			errno = 0;
			unsigned long v = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || optarg[0] == '-' || v < o->min || v > o->max)
				hr_fatal("--%s: want an integer in [%lu, %lu], got '%s'", o->name,
					 o->min, o->max, optarg);
			*(unsigned long *)at = v;
			break;
		}
		case O_SEED:
			errno = 0;
			cfg->seed = strtoull(optarg, &end, 0);
			if (errno || *end || !*optarg)
				hr_fatal("--seed: want an integer, got '%s'", optarg);
			cfg->seed_set = true;
			break;
		case O_STR:
			*(const char **)at = optarg;
			break;
		case O_FAULT:
			cfg->faults = hr_realloc(cfg->faults, (cfg->nfaults + 1) * sizeof *cfg->faults);
			cfg->faults[cfg->nfaults++] = optarg;
			break;
		case O_FLAG:
			*(bool *)at = true;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		}
	}
	if (optind < argc)
		hr_fatal("unexpected argument '%s'", argv[optind]);
}

int main(int argc, char **argv)
{
	hr_log_init("herald-provsim");
	struct config cfg = {
		.port = 0, .threads = 2, .max_body = 65536, .tenant_slots = 16384,
		.account_slots = 4096, .recipient_slots = 1UL << 21, .dedupe_slots = 1UL << 22,
		.bind = "127.0.0.1",
	};
	parse_args(argc, argv, &cfg);
	if (!cfg.seed_set)
		cfg.seed = (unsigned long long)time(NULL) * 1000003ull ^ (unsigned long long)getpid();

	/* Block the stop signals before any thread exists, so every thread
	 * inherits the mask and only sigwait() below sees them. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Many keep-alive clients plus held "timeouts" need descriptors. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}

	char err[256];
	ps_stats *stats = ps_stats_new(cfg.tenant_slots, cfg.account_slots, cfg.recipient_slots,
				       cfg.dedupe_slots);
	ps_faults *faults = ps_faults_new(cfg.seed);
	for (size_t i = 0; i < cfg.nfaults; i++)
		if (!ps_faults_apply_spec(faults, ps_stats_accounts(stats), cfg.faults[i], err,
					  sizeof err))
			hr_fatal("--fault '%s': %s", cfg.faults[i], err);
	hr_free(cfg.faults);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		hr_fatal("curl_global_init failed");
	ps_receipts *receipts = NULL;
	if (cfg.receipts && !ps_receipts_open(cfg.receipts, &receipts, err, sizeof err))
		hr_fatal("%s", err);
	ps_dlr *dlr = NULL;
	if (!ps_dlr_start(&dlr, err, sizeof err))
		hr_fatal("%s", err);
	ps_stats_set_dlr_source(stats, ps_dlr_stats_json, dlr);

	ps_server_opts so = {
		.bind = cfg.bind, .port = (uint16_t)cfg.port, .threads = (unsigned)cfg.threads,
		.control_token = cfg.control_token, .max_body = cfg.max_body,
		.verbose = cfg.verbose, .stats = stats, .faults = faults, .receipts = receipts,
		.dlr = dlr, .inbox = cfg.inbox ? ps_inbox_new(cfg.inbox) : NULL,
	};
	ps_server *srv = NULL;
	uint16_t port = 0;
	if (!ps_server_start(&so, &srv, &port, err, sizeof err))
		hr_fatal("%s", err);
	hr_info("started bind=%s port=%u threads=%lu seed=%llu receipts=%s", cfg.bind, port,
		cfg.threads, cfg.seed, cfg.receipts ? cfg.receipts : "-");
	printf("listening port=%u\n", port);
	fflush(stdout);

	int sig = 0;
	while (sigwait(&stop, &sig) != 0)
		;
	hr_info("signal %d: stopping", sig);
	ps_server_stop(srv);
	ps_dlr_stop(dlr);
	ps_receipts_close(receipts);
	ps_faults_free(faults);
	ps_stats_free(stats);
	ps_inbox_free(so.inbox);
	curl_global_cleanup();
	hr_info("stopped");
	return 0;
}
