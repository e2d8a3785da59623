/*
 * herald-worker -- one channel worker: render, send, report.
 *
 *   herald-worker --channel email|sms|messenger|push|webhook
 *                 --lane transactional|bulk --scheduler tcp://HOST:PORT[,tcp://HOST2:PORT...]
 *                 [--credit N] [--concurrency N] [--metrics-port P] ...
 *
 * Settings come from the one table in common/config.c (role worker):
 * defaults < HERALD_* environment < command line.  `--help` lists them,
 * `--show-config` prints the values in effect (secrets masked).  A bad
 * setting is one "herald-worker: ..." line on stderr and exit status 2.
 * Everything else is loop.c's (see loop.h); docs/workers.md is the manual.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "wire.h"

static _Noreturn void usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "herald-worker: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see herald-worker --help)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	hr_log_init("herald-worker");
	hr_config *cfg = hr_config_new(HR_ROLE_WORKER);
	hr_err err = {0};
	if (!hr_config_load_env(cfg, &err) || !hr_config_load_args(cfg, &argc, argv, &err))
		usage("%s", err.msg);
	bool show = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: herald-worker --channel CH --lane LANE --scheduler tcp://HOST:PORT[,...] [settings]\n\n");
			hr_config_help(HR_ROLE_WORKER, stdout);
			hr_config_free(cfg);
			return 0;
		}
		if (!strcmp(argv[i], "--show-config"))
			show = true;
		else
			usage("unknown argument '%s'", argv[i]);
	}
	if (show) {
		hr_config_show(cfg, stdout);
		hr_config_free(cfg);
		return 0;
	}
	const char *ch = hr_config_str(cfg, "channel"), *lane = hr_config_str(cfg, "lane");
	const char *sched = hr_config_str(cfg, "scheduler");
	wk_settings s = {
		.scheduler = sched,
		.channel = ch ? hr_channel_parse(ch) : 0,
		.lane = lane ? hr_lane_parse(lane) : 0,
		.credit = (uint32_t)hr_config_int(cfg, "credit"),
		.concurrency = (uint32_t)hr_config_int(cfg, "concurrency"),
		.metrics_port = (int)hr_config_int(cfg, "metrics_port"),
		.smtp_timeout_ms = hr_config_int(cfg, "smtp_timeout_ms"),
		.http_timeout_ms = hr_config_int(cfg, "http_timeout_ms"),
		.drain_timeout_ms = hr_config_int(cfg, "drain_timeout_ms"),
		.track_public_url = hr_config_str(cfg, "track_public_url"),
	};
	if (!s.channel)
		usage("--channel: want email, sms, messenger, push or webhook, got '%s'", ch ? ch : "");
	if (!s.lane)
		usage("--lane: want transactional or bulk, got '%s'", lane ? lane : "");
	/* One endpoint per scheduler, comma-separated: every one must be an endpoint. */
	for (const char *ep = sched; ep; ep = strchr(ep, ',') ? strchr(ep, ',') + 1 : NULL)
		if (strncmp(ep, "tcp://", 6) && strncmp(ep, "ipc://", 6))
			usage("--scheduler: want tcp://HOST:PORT[,tcp://HOST:PORT...], got '%s'", sched);
	if (!sched)
		usage("--scheduler: want tcp://HOST:PORT[,tcp://HOST:PORT...], got '%s'", "");
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		hr_fatal("curl_global_init failed");
	int status = wk_run(&s);
	curl_global_cleanup();
	hr_config_free(cfg);
	return status;
}
