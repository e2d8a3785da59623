/*
 * heraldctl -- the operator's command line: migrations, agencies, tenants,
 * API keys, the embedded local PostgreSQL, and a status overview.
 *
 * Every failure prints one line "heraldctl: <what was wrong>" on stderr and
 * exits non-zero (1 = the operation failed, 2 = the command line was wrong);
 * a failed command changes nothing.  Output meant for scripts goes to stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "limits.h"
#include "log.h"
#include "migrate.h"
#include "outbox.h"
#include "pgembed.h"
#include "providers.h"
#include "tenancy.h"

typedef struct ctx {
	hr_config *cfg;
	hr_migration_set *set;
	int argc;
	char **argv; /* words after the command */
} ctx;

static const char usage_text[] =
	"usage: heraldctl [--setting=value ...] COMMAND\n"
	"\n"
	"commands:\n"
	"  migrate                              apply control and tenant migrations\n"
	"  status                               database, schema versions, tenants\n"
	"  agency create SLUG [--name NAME]     create an agency\n"
	"  agency list                          list agencies\n"
	"  agency limits SLUG [JSON]            show or replace an agency's limits, e.g.\n"
	"                                       '{\"api_rps\": 200, \"messages_per_day\": {\"sms\": 5000}}'\n"
	"  tenant create AGENCY SLUG [--name NAME]\n"
	"                                       create a tenant (schema + role) of an agency\n"
	"  tenant list [AGENCY]                 list tenants\n"
	"  tenant suspend|resume SLUG           stop / restart a tenant's API access and sends\n"
	"  tenant limits SLUG [JSON]            show or replace a tenant's limits (docs/api.md)\n"
	"  apikey create AGENCY [TENANT] [--scope agency|full|send|read] [--name NAME]\n"
	"                                       create a key; the secret is printed once\n"
	"  apikey list [AGENCY]                 list keys (never the secrets)\n"
	"  apikey revoke KEY_ID                 revoke a key\n"
	"  provider set TENANT NAME --channel C --transport smtp|http|sink [--config JSON]\n"
	"               [--secret JSON | --secret-file FILE] [--rate N]\n"
	"                                       create or replace a provider account; the\n"
	"                                       secret is sealed with the master key\n"
	"  provider list TENANT                 list a tenant's provider accounts\n"
	"  provider show TENANT NAME            the account as workers get it, secrets masked\n"
	"  send TENANT --provider NAME --content JSON (--to A,B,.. | --count N --to-pattern P)\n"
	"       [--channel C] [--lane transactional|bulk] [--data JSON]\n"
	"                                       enqueue messages (demos, load tests); P holds\n"
	"                                       one %%d or %%0Nd, e.g. user%%d@example.com\n"
	"  local start|stop|status              the embedded PostgreSQL under data_dir\n"
	"  clock show                           herald time (database time + skew)\n"
	"  clock advance DURATION               move herald time forward (90s, 15m, 2h, 3d, 1w):\n"
	"                                       tests and demos; schedulers act at once\n"
	"  clock reset                          skew back to 0 (tests and demos only)\n"
	"  config                               show the settings (secrets masked)\n"
	"  config --markdown                    the settings table, for docs\n"
	"\n";

static _Noreturn void die(const hr_err *err)
{
	if (err->field[0] && !strstr(err->msg, err->field))
		fprintf(stderr, "heraldctl: %s: %s\n", err->field, err->msg);
	else
		fprintf(stderr, "heraldctl: %s\n", err->msg);
	exit(1);
}

static _Noreturn void usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "heraldctl: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see heraldctl help)\n");
	exit(2);
}

/* Take "--opt VALUE" / "--opt=VALUE" out of the word list. */
static const char *take_opt(ctx *x, const char *opt)
{
	size_t n = strlen(opt);
	for (int i = 0; i < x->argc; i++) {
		const char *a = x->argv[i];
		const char *val = NULL;
		int used = 0;
		if (strncmp(a, opt, n) == 0 && a[n] == '=') {
			val = a + n + 1;
			used = 1;
		} else if (strcmp(a, opt) == 0) {
			if (i + 1 >= x->argc)
				usage_error("%s needs a value", opt);
			val = x->argv[i + 1];
			used = 2;
		}
		if (used) {
			memmove(&x->argv[i], &x->argv[i + used], (size_t)(x->argc - i - used) * sizeof(char *));
			x->argc -= used;
			return val;
		}
	}
	return NULL;
}

static void expect_words(const ctx *x, int min, int max, const char *what)
{
	for (int i = 0; i < x->argc; i++)
		if (strncmp(x->argv[i], "--", 2) == 0)
			usage_error("unknown option %s", x->argv[i]);
	if (x->argc < min)
		usage_error("missing %s", what);
	if (x->argc > max)
		usage_error("unexpected argument '%s'", x->argv[max]);
}

static PGconn *connect_control(ctx *x, bool need_schema)
{
	hr_err err = {0};
	char *dsn;
	PGconn *c;
	if (!hr_db_dsn_from_config(x->cfg, &dsn, &err))
		die(&err);
	bool ok = hr_db_connect(dsn, &c, &err);
	hr_free(dsn);
	if (!ok)
		die(&err);
	if (need_schema && !hr_migrate_check_control(c, x->set, &err))
		die(&err);
	return c;
}

static void print_table(PGresult *r)
{
	int nf = PQnfields(r), nr = PQntuples(r);
	int *w = hr_calloc((size_t)nf, sizeof *w);
	for (int f = 0; f < nf; f++) {
		w[f] = (int)strlen(PQfname(r, f));
		for (int i = 0; i < nr; i++)
			if ((int)strlen(PQgetvalue(r, i, f)) > w[f])
				w[f] = (int)strlen(PQgetvalue(r, i, f));
	}
	for (int f = 0; f < nf; f++)
		printf("%-*s%s", w[f], PQfname(r, f), f + 1 < nf ? "  " : "\n");
	for (int i = 0; i < nr; i++)
		for (int f = 0; f < nf; f++)
			printf("%-*s%s", w[f], PQgetisnull(r, i, f) ? "-" : PQgetvalue(r, i, f),
			       f + 1 < nf ? "  " : "\n");
	hr_free(w);
}

static int list(ctx *x, const char *sql, int nparams, const char *const *params)
{
	PGconn *c = connect_control(x, true);
	hr_err err = {0};
	PGresult *r;
	if (!hr_db_query(c, sql, nparams, params, &r, &err))
		die(&err);
	print_table(r);
	PQclear(r);
	PQfinish(c);
	return 0;
}

static int cmd_migrate(ctx *x)
{
	expect_words(x, 0, 0, "");
	hr_err err = {0};
	char *dsn;
	if (!hr_db_dsn_from_config(x->cfg, &dsn, &err))
		die(&err);
	hr_migrate_report rep;
	bool ok = hr_migrate_all(dsn, x->set, (int)hr_config_int(x->cfg, "migrate_jobs"), false, &rep, &err);
	hr_free(dsn);
	printf("migrate: control migrations applied=%d tenants=%d migrated=%d failed=%d\n",
	       rep.control_applied, rep.tenants, rep.migrated, rep.failed);
	if (!ok)
		die(&err);
	return 0;
}

static int cmd_status(ctx *x)
{
	expect_words(x, 0, 0, "");
	PGconn *c = connect_control(x, false);
	hr_err err = {0};
	PGresult *r;
	printf("database: reachable, PostgreSQL %d.%d\n", PQserverVersion(c) / 10000, PQserverVersion(c) % 10000);
	int want_c = hr_migrations_latest(x->set->control, x->set->ncontrol);
	int want_t = hr_migrations_latest(x->set->tenant, x->set->ntenant);
	if (!hr_migrate_check_control(c, x->set, &err)) {
		printf("control schema: %s\n", err.msg);
		PQfinish(c);
		return 1;
	}
	printf("control schema: version %d (latest)\n", want_c);
	char v[16];
	snprintf(v, sizeof v, "%d", want_t);
	const char *p[] = {v};
	if (!hr_db_query(c,
			 "SELECT (SELECT count(*) FROM herald.agencies), count(*), "
			 "count(*) FILTER (WHERE schema_version = $1), "
			 "count(*) FILTER (WHERE schema_version < $1), "
			 "count(*) FILTER (WHERE status = 'suspended') FROM herald.tenants",
			 1, p, &r, &err))
		die(&err);
	printf("agencies: %s\n", PQgetvalue(r, 0, 0));
	printf("tenants: %s (at tenant schema version %d: %s, behind: %s, suspended: %s)\n",
	       PQgetvalue(r, 0, 1), want_t, PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
	bool behind = atoi(PQgetvalue(r, 0, 3)) > 0;
	PQclear(r);
	PQfinish(c);
	if (behind)
		printf("hint: run `heraldctl migrate` to bring every tenant schema up to date\n");
	return 0;
}

/* `agency|tenant limits SLUG [JSON]`: show the stored limits, or replace them (common/limits.h). */
static int limits_cmd(ctx *x, const char *kind)
{
	expect_words(x, 1, 2, "SLUG and optionally the limits as JSON");
	hr_err err = {0};
	PGconn *c = connect_control(x, true);
	if (x->argc == 2) {
		json_error_t je;
		json_t *lim = json_loads(x->argv[1], JSON_REJECT_DUPLICATES, &je);
		if (!lim) {
			hr_fail(&err, HR_ERR_INVALID, "limits", "not JSON: %s (column %d)", je.text, je.column);
			die(&err);
		}
		bool ok = hr_limits_store(c, kind, x->argv[0], lim, &err);
		json_decref(lim);
		if (!ok)
			die(&err);
	} else if (!hr_slug_valid(x->argv[0], kind, &err)) {
		die(&err);
	}
	const char *p[] = {x->argv[0]};
	PGresult *r;
	if (!hr_db_query(c,
			 strcmp(kind, "agency") == 0 ? "SELECT limits FROM herald.agencies WHERE slug = $1"
						     : "SELECT limits FROM herald.tenants WHERE slug = $1",
			 1, p, &r, &err))
		die(&err);
	if (PQntuples(r) != 1) {
		hr_fail(&err, HR_ERR_NOTFOUND, kind, "no %s '%s'", kind, x->argv[0]);
		die(&err);
	}
	printf("%s\n", PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return 0;
}

static int cmd_agency(ctx *x, const char *verb)
{
	if (strcmp(verb, "create") == 0) {
		const char *name = take_opt(x, "--name");
		expect_words(x, 1, 1, "agency slug");
		PGconn *c = connect_control(x, true);
		hr_err err = {0};
		int64_t id;
		if (!hr_agency_create(c, x->argv[0], name, &id, &err))
			die(&err);
		printf("agency %s created (id %lld)\n", x->argv[0], (long long)id);
		PQfinish(c);
		return 0;
	}
	if (strcmp(verb, "list") == 0) {
		expect_words(x, 0, 0, "");
		return list(x,
			    "SELECT a.slug, a.name, a.status, count(t.id) AS tenants, "
			    "to_char(a.created_at, 'YYYY-MM-DD HH24:MI') AS created "
			    "FROM herald.agencies a LEFT JOIN herald.tenants t ON t.agency_id = a.id "
			    "GROUP BY a.id ORDER BY a.slug",
			    0, NULL);
	}
	if (strcmp(verb, "limits") == 0)
		return limits_cmd(x, "agency");
	usage_error("unknown agency command '%s'", verb);
}

static int cmd_tenant(ctx *x, const char *verb)
{
	hr_err err = {0};
	if (strcmp(verb, "create") == 0) {
		const char *name = take_opt(x, "--name");
		expect_words(x, 2, 2, "AGENCY and SLUG");
		PGconn *c = connect_control(x, true);
		hr_tenant t;
		if (!hr_tenant_create(c, x->set, x->argv[0], x->argv[1], name, &t, &err))
			die(&err);
		printf("tenant %s created for agency %s (schema %s, role %s, version %d)\n", t.slug,
		       t.agency_slug, t.schema, t.role, t.schema_version);
		PQfinish(c);
		return 0;
	}
	if (strcmp(verb, "list") == 0) {
		expect_words(x, 0, 1, "");
		const char *p[] = {x->argc ? x->argv[0] : NULL};
		return list(x,
			    "SELECT t.slug, a.slug AS agency, t.name, t.status, t.schema_name AS schema, "
			    "t.schema_version AS version, s.name AS server "
			    "FROM herald.tenants t JOIN herald.agencies a ON a.id = t.agency_id "
			    "JOIN herald.db_servers s ON s.id = t.db_server_id "
			    "WHERE $1::text IS NULL OR a.slug = $1 ORDER BY t.slug",
			    1, p);
	}
	if (strcmp(verb, "suspend") == 0 || strcmp(verb, "resume") == 0) {
		expect_words(x, 1, 1, "tenant SLUG");
		PGconn *c = connect_control(x, true);
		bool suspend = strcmp(verb, "suspend") == 0;
		if (!hr_tenant_set_status(c, x->argv[0], suspend ? "suspended" : "active", &err))
			die(&err);
		printf("tenant %s %s\n", x->argv[0], suspend ? "suspended" : "resumed");
		PQfinish(c);
		return 0;
	}
	if (strcmp(verb, "limits") == 0)
		return limits_cmd(x, "tenant");
	usage_error("unknown tenant command '%s'", verb);
}

static int cmd_apikey(ctx *x, const char *verb)
{
	hr_err err = {0};
	if (strcmp(verb, "create") == 0) {
		const char *scope = take_opt(x, "--scope");
		const char *name = take_opt(x, "--name");
		expect_words(x, 1, 2, "AGENCY");
		const char *tenant = x->argc == 2 ? x->argv[1] : NULL;
		if (!scope)
			scope = tenant ? "full" : "agency";
		PGconn *c = connect_control(x, true);
		char key[HR_KEY_LEN_TOTAL + 1], id[HR_KEY_ID_LEN + 1];
		if (!hr_apikey_create(c, x->argv[0], tenant, scope, name, key, id, &err))
			die(&err);
		fprintf(stderr, "API key %s created (scope %s%s%s); the secret below is shown only once:\n",
			id, scope, tenant ? ", tenant " : "", tenant ? tenant : "");
		printf("%s\n", key);
		PQfinish(c);
		return 0;
	}
	if (strcmp(verb, "list") == 0) {
		expect_words(x, 0, 1, "");
		const char *p[] = {x->argc ? x->argv[0] : NULL};
		return list(x,
			    "SELECT k.key_id, a.slug AS agency, t.slug AS tenant, k.scope, k.name, "
			    "to_char(k.created_at, 'YYYY-MM-DD HH24:MI') AS created, "
			    "CASE WHEN k.revoked_at IS NULL THEN 'active' ELSE 'revoked' END AS state "
			    "FROM herald.api_keys k JOIN herald.agencies a ON a.id = k.agency_id "
			    "LEFT JOIN herald.tenants t ON t.id = k.tenant_id "
			    "WHERE $1::text IS NULL OR a.slug = $1 ORDER BY k.id",
			    1, p);
	}
	if (strcmp(verb, "revoke") == 0) {
		expect_words(x, 1, 1, "KEY_ID");
		PGconn *c = connect_control(x, true);
		if (!hr_apikey_revoke(c, x->argv[0], &err))
			die(&err);
		printf("API key %s revoked\n", x->argv[0]);
		PQfinish(c);
		return 0;
	}
	usage_error("unknown apikey command '%s'", verb);
}

static char *read_secret_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		hr_err err;
		hr_fail(&err, HR_ERR_IO, "secret-file", "cannot read %s", path);
		die(&err);
	}
	char *buf = hr_calloc(1, 65537);
	size_t n = fread(buf, 1, 65536, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static int cmd_provider(ctx *x, const char *verb)
{
	hr_err err = {0};
	if (strcmp(verb, "set") == 0) {
		hr_provider_spec s = {0};
		s.channel = take_opt(x, "--channel");
		s.transport = take_opt(x, "--transport");
		s.config = take_opt(x, "--config");
		s.secret = take_opt(x, "--secret");
		const char *secret_file = take_opt(x, "--secret-file");
		const char *rate = take_opt(x, "--rate");
		expect_words(x, 2, 2, "TENANT and NAME");
		if (!s.channel || !s.transport)
			usage_error("provider set needs %s", "--channel and --transport");
		char *file_secret = secret_file ? read_secret_file(secret_file) : NULL;
		if (file_secret)
			s.secret = file_secret;
		if (rate) {
			char *end;
			long v = strtol(rate, &end, 10);
			if (*end || v < 0 || v > 10000000)
				usage_error("--rate must be a whole number of messages per second, not '%s'", rate);
			s.rate_per_s = (int)v;
		}
		s.name = x->argv[1];
		uint8_t key[HR_KEY_LEN];
		if (!hr_master_key_load(x->cfg, key, &err))
			die(&err);
		PGconn *c = connect_control(x, true);
		bool ok = hr_provider_put(c, key, x->argv[0], &s, &err);
		memset(key, 0, sizeof key);
		hr_free(file_secret);
		if (!ok)
			die(&err);
		printf("provider account %s of tenant %s saved%s\n", s.name, x->argv[0],
		       s.secret ? " (secret sealed)" : "");
		PQfinish(c);
		return 0;
	}
	if (strcmp(verb, "list") == 0) {
		expect_words(x, 1, 1, "TENANT");
		const char *p[] = {x->argv[0]};
		return list(x,
			    "SELECT p.name, p.channel, p.transport, coalesce(p.rate_per_s::text, '-') AS rate, "
			    "CASE WHEN p.secret_sealed IS NULL THEN 'no' ELSE 'sealed' END AS secret, "
			    "p.config::text AS config FROM herald.provider_accounts p "
			    "JOIN herald.tenants t ON t.id = p.tenant_id WHERE t.slug = $1 ORDER BY p.name",
			    1, p);
	}
	if (strcmp(verb, "show") == 0) {
		expect_words(x, 2, 2, "TENANT and NAME");
		uint8_t key[HR_KEY_LEN];
		if (!hr_master_key_load(x->cfg, key, &err))
			die(&err);
		PGconn *c = connect_control(x, true);
		hr_tenant t;
		char *json;
		if (!hr_tenant_get(c, x->argv[0], &t, &err) ||
		    !hr_provider_resolve(c, key, t.id, x->argv[1], true, &json, &err))
			die(&err);
		memset(key, 0, sizeof key);
		printf("%s\n", json);
		hr_free(json);
		PQfinish(c);
		return 0;
	}
	usage_error("unknown provider command '%s'", verb);
}

static int cmd_send(ctx *x)
{
	const char *provider = take_opt(x, "--provider");
	const char *content = take_opt(x, "--content");
	const char *to = take_opt(x, "--to");
	const char *count = take_opt(x, "--count");
	const char *pattern = take_opt(x, "--to-pattern");
	const char *channel = take_opt(x, "--channel");
	const char *lane = take_opt(x, "--lane");
	const char *data = take_opt(x, "--data");
	expect_words(x, 1, 1, "TENANT");
	if (!provider || !content)
		usage_error("send needs %s", "--provider and --content");
	if (!to == !count)
		usage_error("send needs %s", "either --to or --count with --to-pattern");
	long n = 0;
	char **addrs = NULL;
	if (to) {
		char *copy = hr_strdup(to), *save = NULL;
		for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			addrs = hr_realloc(addrs, (size_t)(n + 1) * sizeof *addrs);
			addrs[n++] = hr_strdup(tok);
		}
		hr_free(copy);
	} else {
		char *end;
		n = strtol(count, &end, 10);
		if (*end || n < 1 || n > 100000000)
			usage_error("--count must be 1..100000000, not '%s'", count);
		/* exactly one conversion: %d or %0Nd */
		const char *pc = pattern ? strchr(pattern, '%') : NULL;
		const char *q = pc ? pc + 1 : NULL;
		if (q && *q == '0')
			while (*q >= '0' && *q <= '9')
				q++;
		if (!q || *q != 'd' || strchr(q, '%'))
			usage_error("--to-pattern must contain exactly one %%d (or %%0Nd), got '%s'",
				    pattern ? pattern : "");
	}
	hr_err err = {0};
	PGconn *c = connect_control(x, true);
	hr_tenant t;
	if (!hr_tenant_get(c, x->argv[0], &t, &err))
		die(&err);
	long done = 0, batches = 0;
	int64_t first = -1;
	const char **chunk = hr_malloc(HR_OUTBOX_MAX * sizeof *chunk);
	const char **datas = data ? hr_malloc(HR_OUTBOX_MAX * sizeof *datas) : NULL;
	char **gen = to ? NULL : hr_calloc(HR_OUTBOX_MAX, sizeof *gen);
	while (done < n) {
		int k = (int)(n - done < HR_OUTBOX_MAX ? n - done : HR_OUTBOX_MAX);
		for (int i = 0; i < k; i++) {
			if (to) {
				chunk[i] = addrs[done + i];
			} else {
				hr_free(gen[i]);
				gen[i] = hr_sprintf(pattern, (int)(done + i));
				chunk[i] = gen[i];
			}
			if (datas)
				datas[i] = data;
		}
		hr_outbox_batch b = {
			.channel = channel ? channel : "email",
			.lane = lane ? lane : "bulk",
			.content = content,
			.provider = provider,
			.origin = "test",
			.n = k,
			.addresses = chunk,
			.data = datas,
		};
		int64_t id;
		if (!hr_db_tenant_begin(c, t.schema, t.role, &err) ||
		    !hr_outbox_enqueue(c, (int64_t)t.id, &b, &id, &err) || !hr_db_commit(c, &err)) {
			hr_db_rollback(c);
			die(&err);
		}
		if (first < 0)
			first = id;
		done += k;
		batches++;
	}
	printf("enqueued %ld message(s) in %ld batch(es) for tenant %s; first message id %lld\n", n, batches,
	       t.slug, (long long)first);
	if (gen)
		for (int i = 0; i < HR_OUTBOX_MAX; i++)
			hr_free(gen[i]);
	hr_free(gen);
	for (long i = 0; addrs && i < n; i++)
		hr_free(addrs[i]);
	hr_free(addrs);
	hr_free(chunk);
	hr_free(datas);
	PQfinish(c);
	return 0;
}

static int cmd_clock(ctx *x, const char *verb)
{
	hr_err err = {0};
	int64_t skew;
	if (strcmp(verb, "show") == 0) {
		expect_words(x, 0, 0, "");
	} else if (strcmp(verb, "advance") == 0) {
		expect_words(x, 1, 1, "duration");
		int64_t d;
		if (!hr_duration_parse(x->argv[0], &d, &err)) {
			fprintf(stderr, "heraldctl: %s\n", err.msg);
			exit(2);
		}
		PGconn *c = connect_control(x, true);
		if (!hr_clock_advance(c, d, &skew, &err))
			die(&err);
		PQfinish(c);
	} else if (strcmp(verb, "reset") == 0) {
		expect_words(x, 0, 0, "");
		PGconn *c = connect_control(x, true);
		if (!hr_clock_reset(c, &err))
			die(&err);
		PQfinish(c);
	} else {
		usage_error("unknown clock command '%s'", verb);
	}
	return list(x,
		    "SELECT to_char(herald_clock.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
		    "AS herald_time, (SELECT justify_hours(skew) FROM herald_clock.state) AS skew",
		    0, NULL);
}

static int cmd_local(ctx *x, const char *verb)
{
	expect_words(x, 0, 0, "");
	hr_err err = {0};
	if (hr_config_str(x->cfg, "database_url")) {
		fprintf(stderr, "heraldctl: database_url is set: herald uses that server, not an embedded one\n");
		return 1;
	}
	char *dir = hr_config_str(x->cfg, "data_dir") ? hr_strdup(hr_config_str(x->cfg, "data_dir"))
						      : hr_pgembed_default_dir();
	hr_pgembed_opts o = {
		.data_dir = dir,
		.bin_dir = hr_config_str(x->cfg, "pg_bin_dir"),
		.os_user = hr_config_str(x->cfg, "pg_os_user"),
		.port = (int)hr_config_int(x->cfg, "pg_port"),
	};
	char *dsn = NULL;
	int rc = 0;
	if (strcmp(verb, "start") == 0) {
		if (!hr_pgembed_start(&o, &dsn, &err))
			die(&err);
		printf("%s\n", dsn);
	} else if (strcmp(verb, "stop") == 0) {
		if (!hr_pgembed_stop(&o, &err))
			die(&err);
		printf("embedded PostgreSQL under %s stopped\n", dir);
	} else if (strcmp(verb, "status") == 0) {
		if (hr_pgembed_dsn(dir, &dsn, &err)) {
			printf("running: %s\n", dsn);
		} else {
			printf("not running (data_dir %s)\n", dir);
			rc = 3;
		}
	} else {
		usage_error("unknown local command '%s'", verb);
	}
	hr_free(dsn);
	hr_free(dir);
	return rc;
}

/* File scope: error paths exit() from deep inside, and what main owns must stay reachable. */
static ctx x;

int main(int argc, char **argv)
{
	hr_log_init("heraldctl");
	hr_err err = {0};
	x.cfg = hr_config_new(HR_ROLE_CTL);
	if (!hr_config_load_env(x.cfg, &err) || !hr_config_load_args(x.cfg, &argc, argv, &err)) {
		fprintf(stderr, "heraldctl: %s\n", err.msg);
		return 2;
	}
	if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		hr_config_help(HR_ROLE_CTL, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "config") == 0) {
		if (argc > 2 && strcmp(argv[2], "--markdown") == 0)
			hr_config_markdown(stdout);
		else
			hr_config_show(x.cfg, stdout);
		hr_config_free(x.cfg);
		return 0;
	}
	if (!hr_migrations_load(hr_config_str(x.cfg, "migrations_dir"), &x.set, &err))
		die(&err);
	bool has_verb = strcmp(cmd, "agency") == 0 || strcmp(cmd, "tenant") == 0 ||
			strcmp(cmd, "apikey") == 0 || strcmp(cmd, "local") == 0 ||
			strcmp(cmd, "provider") == 0 || strcmp(cmd, "clock") == 0;
	const char *verb = NULL;
	if (has_verb) {
		if (argc < 3)
			usage_error("'%s' needs a sub-command", cmd);
		verb = argv[2];
	}
	x.argc = argc - (has_verb ? 3 : 2);
	x.argv = argv + (has_verb ? 3 : 2);
	int rc;
	if (strcmp(cmd, "migrate") == 0)
		rc = cmd_migrate(&x);
	else if (strcmp(cmd, "send") == 0)
		rc = cmd_send(&x);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(&x);
	else if (strcmp(cmd, "agency") == 0)
		rc = cmd_agency(&x, verb);
	else if (strcmp(cmd, "tenant") == 0)
		rc = cmd_tenant(&x, verb);
	else if (strcmp(cmd, "apikey") == 0)
		rc = cmd_apikey(&x, verb);
	else if (strcmp(cmd, "local") == 0)
		rc = cmd_local(&x, verb);
	else if (strcmp(cmd, "provider") == 0)
		rc = cmd_provider(&x, verb);
	else if (strcmp(cmd, "clock") == 0)
		rc = cmd_clock(&x, verb);
	else
		usage_error("unknown command '%s'", cmd);
	hr_migrations_free(x.set);
	hr_config_free(x.cfg);
	return rc;
}
