/*
 * config.c -- the settings table and its parser.  See config.h.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

typedef enum { T_STR, T_INT, T_BOOL } setting_type;

typedef struct setting {
	const char *name;
	setting_type type;
	const char *def; /* default, as text; NULL = unset */
	long min, max;   /* bounds for T_INT */
	unsigned roles;
	bool reloadable;
	bool secret;
	const char *help;
} setting;

/* THE table.  Keep it sorted by name; docs/operations.md is generated from it. */
static const setting settings[] = {
	{"api_bind", T_STR, "127.0.0.1", 0, 0, HR_ROLE_API, false, false,
	 "address herald-api listens on (IPv4 literal); 0.0.0.0 = every interface"},
	{"api_import_max_body", T_INT, "1073741824", 1024, 68719476736L, HR_ROLE_API, false, false,
	 "largest contact import body (POST /v1/imports, streamed, never held in memory), in bytes; "
	 "larger ones get 413 and import nothing"},
	{"api_key_cache_ms", T_INT, "5000", 0, 60000, HR_ROLE_API, false, false,
	 "how long herald-api trusts a verified API key before checking it again; a revoked key "
	 "or a suspended tenant stops working within this time (0 = check every request)"},
	{"api_key_rps", T_INT, "100", 0, 1000000, HR_ROLE_API, false, false,
	 "requests per second allowed per API key (token bucket, burst of one second); beyond it "
	 "429 with Retry-After; 0 = no limit"},
	{"api_max_body", T_INT, "1048576", 1024, 67108864, HR_ROLE_API, false, false,
	 "largest request body herald-api accepts, in bytes; larger ones get 413"},
	{"api_otp_sends_per_10min", T_INT, "5", 1, 1000, HR_ROLE_API, false, false,
	 "one-time codes herald-api sends to one recipient (phone or email) within 10 minutes; "
	 "beyond it POST /v1/otp answers 429 with Retry-After"},
	{"api_port", T_INT, "8080", 0, 65535, HR_ROLE_API, false, false,
	 "TCP port of herald-api; 0 = pick a free one (printed as `listening port=N` on stdout)"},
	{"api_threads", T_INT, "0", 0, 256, HR_ROLE_API, false, false,
	 "herald-api's request threads, each with its own PostgreSQL connection; 0 = 4 per CPU core "
	 "(at least 4, at most 64)"},
	{"api_timeout_ms", T_INT, "30000", 1000, 600000, HR_ROLE_API, false, false,
	 "herald-api closes a connection idle this long and cancels SQL statements running longer"},
	{"channel", T_STR, NULL, 0, 0, HR_ROLE_WORKER, false, false,
	 "the channel a worker serves: email, sms, messenger, push or webhook"},
	{"concurrency", T_INT, "16", 1, 1024, HR_ROLE_WORKER, false, false,
	 "sends in flight per worker and transport (SMTP sessions, HTTP requests); also the ceiling "
	 "of a provider account's own concurrency"},
	{"credit", T_INT, "4", 1, 1024, HR_ROLE_WORKER, false, false,
	 "job batches (leases) a worker holds at once"},
	{"data_dir", T_STR, NULL, 0, 0, HR_ROLE_ALL, false, false,
	 "directory of the embedded local stack (Postgres data, socket, master key); "
	 "default /var/lib/herald as root, else ~/.local/share/herald"},
	{"database_url", T_STR, NULL, 0, 0, HR_ROLE_ALL, false, true,
	 "libpq connection string of the control database; empty = start/use the embedded "
	 "PostgreSQL under data_dir"},
	{"drain_timeout_ms", T_INT, "30000", 100, 3600000, HR_ROLE_WORKER, false, false,
	 "on SIGTERM a worker finishes its started leases within this time, then exits"},
	{"http_timeout_ms", T_INT, "10000", 100, 600000, HR_ROLE_WORKER, false, false,
	 "a worker's limit for one HTTP provider request (connect included)"},
	{"lane", T_STR, NULL, 0, 0, HR_ROLE_WORKER, false, false,
	 "the lane a worker serves: transactional or bulk"},
	{"master_key", T_STR, NULL, 0, 0, HR_ROLE_ALL, false, true,
	 "64 hex digits: the key that encrypts provider credentials at rest; empty = "
	 "master_key_file"},
	{"master_key_file", T_STR, NULL, 0, 0, HR_ROLE_ALL, false, false,
	 "file holding the master key (64 hex digits); default data_dir/master.key, "
	 "created on first use by the embedded stack only"},
	{"metrics_port", T_INT, "0", -1, 65535, HR_ROLE_WORKER | HR_ROLE_SCHEDULER, false, false,
	 "port of the Prometheus endpoint (/metrics, /healthz) on 127.0.0.1; 0 = pick a free one "
	 "(logged), -1 = off"},
	{"migrate_jobs", T_INT, "4", 1, 64, HR_ROLE_CTL, true, false,
	 "parallel connections used to migrate tenant schemas"},
	{"migrations_dir", T_STR, NULL, 0, 0, HR_ROLE_ALL, false, false,
	 "read migrations from this directory (with control/ and tenant/) instead of "
	 "the set built into the binary"},
	{"pg_bin_dir", T_STR, "/usr/lib/postgresql/15/bin", 0, 0, HR_ROLE_ALL, false, false,
	 "PostgreSQL server binaries (initdb, pg_ctl) for the embedded stack"},
	{"pg_os_user", T_STR, "postgres", 0, 0, HR_ROLE_ALL, false, false,
	 "when run as root, the embedded PostgreSQL runs as this unprivileged OS user"},
	{"pg_port", T_INT, "0", 0, 65535, HR_ROLE_ALL, false, false,
	 "TCP port of the embedded PostgreSQL on 127.0.0.1; 0 = pick a free one"},
	{"sched_bind_bulk", T_STR, "tcp://127.0.0.1:7711", 0, 0, HR_ROLE_SCHEDULER | HR_ROLE_WORKER, false, false,
	 "ZeroMQ endpoint of the bulk lane: the scheduler binds it, bulk workers connect to it"},
	{"sched_bind_transactional", T_STR, "tcp://127.0.0.1:7710", 0, 0, HR_ROLE_SCHEDULER | HR_ROLE_WORKER,
	 false, false,
	 "ZeroMQ endpoint of the transactional lane: the scheduler binds it, transactional workers "
	 "connect to it"},
	{"sched_bulk_cgroup", T_STR, NULL, 0, 0, HR_ROLE_SCHEDULER, false, false,
	 "a cgroup directory (cgroup v1 cpu controller, or v2 with cpu enabled) that the scheduler moves the "
	 "bulk lane's PostgreSQL backends into (bulk loads and bulk landing) when Postgres runs on its host "
	 "and it may write the cgroup's cgroup.procs; give that cgroup a low cpu.shares or cpu.weight. "
	 "Empty = off (docs/operations.md, \"Both lanes on one host\")"},
	{"sched_domain_rates", T_STR, NULL, 0, 0, HR_ROLE_SCHEDULER, true, false,
	 "per recipient domain email limits, messages/s across all tenants, e.g. "
	 "\"gmail.com=100,yahoo.com=50\""},
	{"sched_lease_size_bulk", T_INT, "512", 1, 4096, HR_ROLE_SCHEDULER, true, false,
	 "most messages in one bulk lease (one ZeroMQ message to a worker)"},
	{"sched_lease_size_transactional", T_INT, "16", 1, 4096, HR_ROLE_SCHEDULER, true, false,
	 "most messages in one transactional lease; small keeps latency low"},
	{"sched_lease_timeout_ms", T_INT, "30000", 1000, 3600000, HR_ROLE_SCHEDULER, true, false,
	 "a lease not answered in this time is re-dispatched (the worker is presumed stuck)"},
	{"sched_max_attempts", T_INT, "8", 1, 100, HR_ROLE_SCHEDULER, true, false,
	 "send attempts before a temporarily failing message is dead-lettered"},
	{"sched_max_loaded", T_INT, "8", 1, 4096, HR_ROLE_SCHEDULER, true, false,
	 "outbox batches (up to 4,096 messages each) a tenant may have in the scheduler's memory"},
	{"sched_provider_cache_ms", T_INT, "10000", 100, 3600000, HR_ROLE_SCHEDULER, true, false,
	 "how long the scheduler reuses a resolved provider account and its rate limits; a change "
	 "made with heraldctl or the API applies within this time"},
	{"sched_rebalance_ms", T_INT, "1000", 100, 60000, HR_ROLE_SCHEDULER, false, false,
	 "how often a scheduler counts its peers and takes or gives back tenant shards; a dead "
	 "scheduler's tenants are taken over within about this time"},
	{"sched_retry_base_ms", T_INT, "1000", 1, 600000, HR_ROLE_SCHEDULER, true, false,
	 "first retry delay; doubled per attempt (jittered, capped at 10 minutes)"},
	{"sched_trace", T_BOOL, "false", 0, 0, HR_ROLE_SCHEDULER, true, false,
	 "log one line per lease dispatched (tenant, batch, size, worker, wall time), per transactional "
	 "batch loaded (when announced, asked for, loaded) and per loop turn over 20 ms (time per phase, "
	 "CPU time): for debugging latency"},
	{"scheduler", T_STR, NULL, 0, 0, HR_ROLE_WORKER, false, false,
	 "ZeroMQ endpoint(s) a worker connects to: each scheduler's ROUTER for the worker's lane, "
	 "comma-separated when several schedulers share the tenants, e.g. "
	 "tcp://10.0.0.5:7711,tcp://10.0.0.6:7711"},
	{"smtp_timeout_ms", T_INT, "30000", 100, 600000, HR_ROLE_WORKER, false, false,
	 "a worker's limit for one SMTP send (connect included)"},
	{"track_public_url", T_STR, NULL, 0, 0, HR_ROLE_WORKER, false, false,
	 "public base URL of herald-api (e.g. https://t.example.com) that email workers put in tracking "
	 "links, open pixels and one-click unsubscribe URLs; empty = emails are sent untracked"},
	{"webhook_allow_private", T_BOOL, "false", 0, 0, HR_ROLE_API, false, false,
	 "deliver tenants' webhooks to loopback, private (RFC 1918, fc00::/7), link-local and other "
	 "non-public addresses; off, such a URL is refused when saved and a delivery whose host resolves "
	 "there fails, so that a tenant's webhook cannot reach herald's own network"},
	{"webhook_max_attempts", T_INT, "8", 1, 100, HR_ROLE_API, false, false,
	 "attempts of one webhook delivery before it is logged as failed"},
	{"webhook_retry_base_ms", T_INT, "5000", 1, 3600000, HR_ROLE_API, false, false,
	 "first webhook retry delay; doubled per attempt, jittered (0.5x-1.5x), capped at one hour"},
	{"webhook_timeout_ms", T_INT, "10000", 100, 60000, HR_ROLE_API, false, false,
	 "herald-api's limit for one webhook delivery request (connect included)"},
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

struct hr_config {
	unsigned roles;
	char *value[NSETTINGS]; /* heap copies; NULL = unset */
};

static int find(const char *name, size_t len)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (strlen(settings[i].name) == len && memcmp(settings[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

hr_config *hr_config_new(unsigned roles)
{
	hr_config *cfg = hr_calloc(1, sizeof *cfg);
	cfg->roles = roles;
	for (size_t i = 0; i < NSETTINGS; i++)
		if (settings[i].def)
			cfg->value[i] = hr_strdup(settings[i].def);
	return cfg;
}

void hr_config_free(hr_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < NSETTINGS; i++)
		hr_free(cfg->value[i]);
	hr_free(cfg);
}

static bool validate(const setting *s, const char *value, hr_err *err)
{
	if (s->type == T_INT) {
		char *end;
		errno = 0;
		long v = strtol(value, &end, 10);
		if (errno || end == value || *end)
			return hr_fail(err, HR_ERR_INVALID, s->name, "%s: '%s' is not a whole number",
				       s->name, value);
		if (v < s->min || v > s->max)
			return hr_fail(err, HR_ERR_INVALID, s->name, "%s: %ld is out of range %ld..%ld",
				       s->name, v, s->min, s->max);
	} else if (s->type == T_BOOL) {
		if (strcmp(value, "true") && strcmp(value, "false") && strcmp(value, "1") &&
		    strcmp(value, "0") && strcmp(value, "on") && strcmp(value, "off"))
			return hr_fail(err, HR_ERR_INVALID, s->name,
				       "%s: '%s' is not a boolean (true/false)", s->name, value);
	}
	return true;
}

bool hr_config_set(hr_config *cfg, const char *name, const char *value, hr_err *err)
{
	int i = find(name, strlen(name));
	if (i < 0 || !(settings[i].roles & cfg->roles))
		return hr_fail(err, HR_ERR_INVALID, name, "unknown setting '%s'", name);
	if (!validate(&settings[i], value, err))
		return false;
	hr_free(cfg->value[i]);
	cfg->value[i] = hr_strdup(value);
	return true;
}

bool hr_config_load_env(hr_config *cfg, hr_err *err)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		if (!(settings[i].roles & cfg->roles))
			continue;
		char env[96] = "HERALD_";
		size_t n = strlen(env);
		for (const char *p = settings[i].name; *p && n < sizeof env - 1; p++)
			env[n++] = (char)toupper((unsigned char)*p);
		env[n] = '\0';
		const char *v = getenv(env);
		if (v && !hr_config_set(cfg, settings[i].name, v, err)) {
			/* Name the variable the user actually set, not the setting. */
			char msg[sizeof err->msg];
			size_t skip = strlen(settings[i].name) + 2; /* "name: " */
			snprintf(msg, sizeof msg, "%s",
				 strncmp(err->msg, settings[i].name, skip - 2) == 0 ? err->msg + skip : err->msg);
			return hr_fail(err, HR_ERR_INVALID, env, "%s: %s", env, msg);
		}
	}
	return true;
}

bool hr_config_load_args(hr_config *cfg, int *argc, char **argv, hr_err *err)
{
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (strncmp(a, "--", 2) != 0) {
			argv[out++] = argv[i];
			continue;
		}
		const char *name = a + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		/* Accept dashes for underscores: --data-dir == --data_dir. */
		char key[96];
		if (len >= sizeof key) {
			argv[out++] = argv[i];
			continue;
		}
		for (size_t k = 0; k < len; k++)
			key[k] = name[k] == '-' ? '_' : name[k];
		key[len] = '\0';
		int s = find(key, len);
		if (s < 0 || !(settings[s].roles & cfg->roles)) {
			argv[out++] = argv[i];
			continue;
		}
		const char *value;
		if (eq)
			value = eq + 1;
		else if (i + 1 < *argc)
			value = argv[++i];
		else
			return hr_fail(err, HR_ERR_INVALID, key, "--%s needs a value", key);
		if (!hr_config_set(cfg, key, value, err))
			return false;
	}
	argv[out] = NULL;
	*argc = out;
	return true;
}

static int lookup(const hr_config *cfg, const char *name)
{
	int i = find(name, strlen(name));
	if (i < 0)
		hr_panic("config: no setting named '%s' in the table", name);
	(void)cfg;
	return i;
}

const char *hr_config_str(const hr_config *cfg, const char *name)
{
	const char *v = cfg->value[lookup(cfg, name)];
	return v && *v ? v : NULL;
}

long hr_config_int(const hr_config *cfg, const char *name)
{
	const char *v = cfg->value[lookup(cfg, name)];
	return v ? strtol(v, NULL, 10) : 0;
}

bool hr_config_bool(const hr_config *cfg, const char *name)
{
	const char *v = cfg->value[lookup(cfg, name)];
	return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"));
}

static const char *type_name(setting_type t)
{
	return t == T_INT ? "int" : t == T_BOOL ? "bool" : "string";
}

void hr_config_show(const hr_config *cfg, FILE *out)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		if (!(settings[i].roles & cfg->roles))
			continue;
		const char *v = cfg->value[i];
		if (!v)
			fprintf(out, "%s = (unset)\n", settings[i].name);
		else if (settings[i].secret)
			fprintf(out, "%s = ******** (set)\n", settings[i].name);
		else
			fprintf(out, "%s = %s\n", settings[i].name, v);
	}
}

void hr_config_help(unsigned roles, FILE *out)
{
	fprintf(out, "Settings (--name=value, or environment HERALD_NAME):\n");
	for (size_t i = 0; i < NSETTINGS; i++) {
		const setting *s = &settings[i];
		if (!(s->roles & roles))
			continue;
		fprintf(out, "  --%s (%s", s->name, type_name(s->type));
		if (s->type == T_INT)
			fprintf(out, " %ld..%ld", s->min, s->max);
		if (s->def)
			fprintf(out, ", default %s", s->def);
		fprintf(out, "%s)\n      %s\n", s->secret ? ", secret" : "", s->help);
	}
}

void hr_config_markdown(FILE *out)
{
	fprintf(out, "| setting | environment | type | default | reloadable | secret | meaning |\n");
	fprintf(out, "| --- | --- | --- | --- | --- | --- | --- |\n");
	for (size_t i = 0; i < NSETTINGS; i++) {
		const setting *s = &settings[i];
		char env[96] = "HERALD_";
		size_t n = strlen(env);
		for (const char *p = s->name; *p && n < sizeof env - 1; p++)
			env[n++] = (char)toupper((unsigned char)*p);
		env[n] = '\0';
		fprintf(out, "| `%s` | `%s` | %s", s->name, env, type_name(s->type));
		if (s->type == T_INT)
			fprintf(out, " %ld..%ld", s->min, s->max);
		fprintf(out, " | %s | %s | %s | %s |\n", s->def ? s->def : "", s->reloadable ? "yes" : "no",
			s->secret ? "yes" : "no", s->help);
	}
}
