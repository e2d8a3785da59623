/*
 * main.c -- herald-scheduler: settings, signals, start-up, run, drain.
 *
 * Start-up: connect to the control database (embedded or database_url),
 * check the control schema version, load the master key (to open provider
 * secrets for the workers), read the tenant list, LISTEN for new work,
 * announce ourselves and take our share of the tenants' shards (owner.h;
 * alone, all of them) -- each tenant taken is read once (low water,
 * recovery horizon) --, bind the two lane endpoints, start the results
 * writer, run the loop.  The shard locks live in the loop's session: when
 * this process dies, Postgres frees them and the other schedulers take the
 * tenants over.  SIGTERM/SIGINT: stop leasing, wait up to
 * 10 s for the results of leases out, land everything, exit 0.  Anything not
 * answered by then is re-sent by the next scheduler (leases are not stored:
 * an unanswered message has no result row, and that is all recovery needs).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "alloc.h"
#include "campaigns.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "providers.h"
#include "model.h"
#include "rules.h"

int sched_run(sched *s);

static sched *the;

static void on_signal(int sig)
{
	(void)sig;
	if (the)
		the->stopping = 1;
}

static void set_domain_rates(sched *s, const char *spec)
{
	if (!spec)
		return;
	char *copy = hr_strdup(spec), *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		double rate = eq ? strtod(eq + 1, NULL) : 0;
		if (!eq || rate <= 0)
			hr_fatal("sched_domain_rates: '%s' is not domain=rate", tok);
		*eq = '\0';
		char scope[300];
		snprintf(scope, sizeof scope, "domain:%s", tok);
		hr_limiter_set_rate(s->limiter, scope, rate);
	}
	hr_free(copy);
}

/* The campaign runner acts for a tenant only while this scheduler owns it (owner.h). */
static bool runner_hold(void *o, uint32_t tenant_id)
{
	return owner_hold(o, tenant_id);
}

static void runner_unhold(void *o, uint32_t tenant_id)
{
	owner_unhold(o, tenant_id);
}

int main(int argc, char **argv)
{
	hr_log_init("herald-scheduler");
	hr_err err = {0};
	sched *s = hr_calloc(1, sizeof *s);
	the = s;
	s->cfg = hr_config_new(HR_ROLE_SCHEDULER);
	if (!hr_config_load_env(s->cfg, &err) || !hr_config_load_args(s->cfg, &argc, argv, &err)) {
		fprintf(stderr, "herald-scheduler: %s\n", err.msg);
		return 2;
	}
	if (argc > 1) {
		bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
		fprintf(help ? stdout : stderr, "usage: herald-scheduler [--setting=value ...]\n");
		if (!help)
			fprintf(stderr, "herald-scheduler: unknown argument '%s'\n", argv[1]);
		hr_config_help(HR_ROLE_SCHEDULER, help ? stdout : stderr);
		return help ? 0 : 2;
	}
	hr_migration_set *set;
	store_set_bulk_cgroup(hr_config_str(s->cfg, "sched_bulk_cgroup")); /* before the bulk connections */
	if (!hr_db_dsn_from_config(s->cfg, &s->dsn, &err) || !store_connect(s, &err) ||
	    !hr_migrations_load(hr_config_str(s->cfg, "migrations_dir"), &set, &err) ||
	    !hr_migrate_check_control(s->db, set, &err) || !hr_master_key_load(s->cfg, s->master_key, &err))
		hr_fatal("%s", err.msg);
	hr_migrations_free(set);
	s->lease_size[0] = (int)hr_config_int(s->cfg, "sched_lease_size_transactional");
	s->lease_size[1] = (int)hr_config_int(s->cfg, "sched_lease_size_bulk");
	s->lease_timeout_ms = hr_config_int(s->cfg, "sched_lease_timeout_ms");
	s->max_attempts = (int)hr_config_int(s->cfg, "sched_max_attempts");
	s->retry_base_ms = hr_config_int(s->cfg, "sched_retry_base_ms");
	s->max_loaded = (int)hr_config_int(s->cfg, "sched_max_loaded");
	s->trace = hr_config_bool(s->cfg, "sched_trace");
	s->limiter = hr_limiter_new();
	for (int l = 0; l < NLANES; l++)
		for (int c = 0; c < NCHANNELS; c++)
			s->fair[l][c] = hr_fair_new((uint32_t)s->lease_size[l]);
	set_domain_rates(s, hr_config_str(s->cfg, "sched_domain_rates"));
	s->provider_cache_ms = hr_config_int(s->cfg, "sched_provider_cache_ms");
	s->rebalance_ms = hr_config_int(s->cfg, "sched_rebalance_ms");
	owner_hooks hooks = sched_owner_hooks(s);
	s->owner = owner_new(&hooks);
	if (!store_load_limits(s, &err))
		hr_fatal("scheduler: reading limits: %s", err.msg);
	if (!store_load_tenants(s, &err) || !store_listen(s, &err) || !owner_join(s->owner, s->db, &err) ||
	    !owner_tick(s->owner, s->db, &err))
		hr_fatal("scheduler: %s", err.msg);
	s->zctx = zmq_ctx_new();
	const char *ep[NLANES] = {hr_config_str(s->cfg, "sched_bind_transactional"),
				  hr_config_str(s->cfg, "sched_bind_bulk")};
	for (int l = 0; l < NLANES; l++) {
		s->router[l] = zmq_socket(s->zctx, ZMQ_ROUTER);
		int hwm = 100000, linger = 0;
		zmq_setsockopt(s->router[l], ZMQ_SNDHWM, &hwm, sizeof hwm);
		zmq_setsockopt(s->router[l], ZMQ_RCVHWM, &hwm, sizeof hwm);
		zmq_setsockopt(s->router[l], ZMQ_LINGER, &linger, sizeof linger);
		/* Workers keep their routing id across reconnects: the new connection wins. */
		int handover = 1;
		zmq_setsockopt(s->router[l], ZMQ_ROUTER_HANDOVER, &handover, sizeof handover);
		if (zmq_bind(s->router[l], ep[l]) != 0)
			hr_fatal("scheduler: cannot bind %s lane to %s: %s", hr_lane_name(l + 1), ep[l],
				 zmq_strerror(zmq_errno()));
		char bound[256];
		size_t blen = sizeof bound;
		zmq_getsockopt(s->router[l], ZMQ_LAST_ENDPOINT, bound, &blen);
		/* One line per lane on stdout: tests and scripts read the real endpoints from it. */
		printf("listening lane=%s endpoint=%s\n", hr_lane_name(l + 1), bound);
	}
	fflush(stdout);
	if (!(s->lander = lander_start(s->dsn, &err)))
		hr_fatal("scheduler: results writer: %s", err.msg);
	rules_engine *rules = rules_start(s->dsn, s->owner, &err); /* trigger rules: a thread of its own */
	if (!rules)
		hr_fatal("scheduler: rule engine: %s", err.msg);
	/* The campaign runner: its own thread and connection (campaigns.h). */
	campaigns *runner = campaigns_start(s->dsn, store_tenants, runner_hold, runner_unhold, s->owner, &err);
	if (!runner)
		hr_fatal("scheduler: campaign runner: %s", err.msg);
	if (!metrics_start((int)hr_config_int(s->cfg, "metrics_port"), &s->metrics, &err))
		hr_fatal("scheduler: %s", err.msg);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	hr_info("scheduler: %d tenant(s); shards owned=%d of %d, schedulers=%d; lanes bound; running", s->ntenants,
		owner_count(s->owner, SHARD_OWNED), OWNER_SHARDS, owner_schedulers(s->owner));
	int rc = sched_run(s);
	rules_stop(rules);
	campaigns_stop(runner);
	lander_stop(s->lander);
	metrics_stop(s->metrics);
	store_providers_free(s);
	hr_info("scheduler: stopped; dispatched transactional=%llu bulk=%llu",
		(unsigned long long)s->dispatched[0], (unsigned long long)s->dispatched[1]);
	for (int l = 0; l < NLANES; l++)
		zmq_close(s->router[l]);
	zmq_ctx_term(s->zctx);
	PQfinish(s->listen);
	PQfinish(s->db); /* ends the session: our shards are free for the others now */
	owner_free(s->owner);
	return rc;
}
