/*
 * main.c -- herald-api: settings, start-up, serve, drain.
 *
 * Start-up: settings (env, flags), the control database (embedded or
 * database_url), a check that the control schema is at this binary's
 * version, the migrations (POST /v1/tenants lays out new tenant schemas),
 * then the server.  It prints `listening port=N` on stdout once it accepts
 * connections (tests and scripts read the port from it).  SIGTERM/SIGINT:
 * stop accepting, finish the requests in progress, exit 0.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "server.h"

int main(int argc, char **argv)
{
	hr_log_init("herald-api");
	hr_err err = {0};
	hr_config *cfg = hr_config_new(HR_ROLE_API);
	if (!hr_config_load_env(cfg, &err) || !hr_config_load_args(cfg, &argc, argv, &err)) {
		fprintf(stderr, "herald-api: %s\n", err.msg);
		return 2;
	}
	if (argc > 1) {
		bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
		fprintf(help ? stdout : stderr, "usage: herald-api [--setting=value ...]\n");
		if (!help)
			fprintf(stderr, "herald-api: unknown argument '%s'\n", argv[1]);
		hr_config_help(HR_ROLE_API, help ? stdout : stderr);
		return help ? 0 : 2;
	}
	/* Block the stop signals in every thread; main waits for them below. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Before any thread: the webhook delivery thread uses libcurl. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		hr_fatal("herald-api: curl_global_init failed");

	char *dsn = NULL;
	PGconn *c = NULL;
	hr_migration_set *set = NULL;
	if (!hr_db_dsn_from_config(cfg, &dsn, &err) || !hr_db_connect(dsn, &c, &err) ||
	    !hr_migrations_load(hr_config_str(cfg, "migrations_dir"), &set, &err) ||
	    !hr_migrate_check_control(c, set, &err))
		hr_fatal("herald-api: %s", err.msg);
	PQfinish(c);
	api_server *s;
	if (!api_server_start(cfg, dsn, set, &s, &err))
		hr_fatal("herald-api: %s", err.msg);
	printf("listening port=%d\n", api_server_port(s));
	fflush(stdout);
	hr_info("api: listening port=%d threads=%d", api_server_port(s), api_server_threads(s));
	int sig = 0;
	sigwait(&stop, &sig);
	hr_info("api: signal %d; finishing requests in progress", sig);
	api_server_stop(s);
	hr_migrations_free(set);
	hr_free(dsn);
	hr_config_free(cfg);
	curl_global_cleanup();
	hr_info("api: stopped");
	return 0;
}
