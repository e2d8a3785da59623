/*
 * fanout_bench.c -- the driver of bench/fanout: a campaign run to a
 * 1,000,000-contact segment (an attribute and an event condition) against a
 * plain INSERT ... SELECT of the same rows, on the same database, in the same
 * run, alternating, RUNS times each.
 *
 *   fanout:        hr_audience_materialise() -- the runner's statement: the
 *                  segment, consent, suppressions, the frequency cap (on),
 *                  batches of 4,096 into the outbox -- in one transaction with
 *                  the run row, as scheduler/campaigns.c runs it.
 *   insert_select: INSERT INTO plain (contact_id, address) SELECT c.id,
 *                  c.email FROM contacts c WHERE <the same segment SQL>, with
 *                  the server's settings (the baseline of the goal).
 *   insert_select_nojit: the same with jit = off (the fan-out turns JIT off
 *                  for its statement; shown so that the ratio is not read as
 *                  won by a setting the plain statement could use too).
 *
 * usage: herald-bench-fanout DSN MIGRATIONS_DIR [N] [RUNS]
 * BENCH_EXPLAIN=1 prints every statement's plan (auto_explain: ANALYZE,
 * BUFFERS, WAL, nested statements) to stderr -- for profiling, not timing.
 * Last line: recipients= fanout_s= insert_select_s= ratio= (medians), then
 * insert_select_nojit_s= ratio_nojit=, and the same two sides in CPU seconds
 * of the database backend (/proc; the database runs here): fanout_cpu_s=
 * insert_select_cpu_s= ratio_cpu= -- on a machine shared with other work the
 * wall-clock ratio varies with the load, the CPU one much less.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "audience.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "segment.h"
#include "tenancy.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void must(bool ok, const hr_err *err)
{
	if (!ok) {
		fprintf(stderr, "bench/fanout: %s\n", err->msg);
		exit(1);
	}
}

static void exec(PGconn *c, const char *sql)
{
	hr_err err = {0};
	must(hr_db_exec(c, sql, &err), &err);
}

static void print_notice(void *arg, const char *msg)
{
	(void)arg;
	fputs(msg, stderr);
}

/* CPU seconds (user + system) the database backend of c has used so far. */
static double backend_cpu_s(PGconn *c)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", PQbackendPID(c));
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	char buf[1024];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command name may hold spaces */
	unsigned long long ut = 0, st = 0;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	hr_log_init("bench-fanout");
	if (argc < 3) {
		fprintf(stderr, "usage: herald-bench-fanout DSN MIGRATIONS_DIR [N] [RUNS]\n");
		return 2;
	}
	const char *dsn = argv[1];
	long n = argc > 3 ? atol(argv[3]) : 1000000;
	int runs = argc > 4 ? atoi(argv[4]) : 3;
	hr_err err = {0};
	hr_migration_set *set;
	hr_migrate_report rep;
	must(hr_migrations_load(argv[2], &set, &err), &err);
	must(hr_migrate_all(dsn, set, 1, true, &rep, &err), &err);
	PGconn *c;
	hr_tenant t;
	must(hr_db_connect(dsn, &c, &err), &err);
	must(hr_agency_create(c, "bench", "bench", NULL, &err), &err);
	must(hr_tenant_create(c, set, "bench", "fanout", NULL, &t, &err), &err);
	char *q = hr_sprintf(
		"SET search_path TO %s;"
		"INSERT INTO contacts (email, attributes) SELECT 'u' || i || '@example.com', "
		"jsonb_build_object('plan', 'pro', 'n', i) FROM generate_series(1, %ld) i;"
		"INSERT INTO events (contact_id, name, occurred_at) SELECT id, 'visit', now() - interval '2 days' FROM contacts;"
		"INSERT INTO consents (contact_id, channel, purpose, granted, at) SELECT id, 'email', 'marketing', true, now() "
		"FROM contacts;"
		"INSERT INTO templates (name, channel) VALUES ('news', 'email');"
		"INSERT INTO template_versions (template_id, version, content) VALUES (1, 1, '{\"text\":\"hi\"}');"
		"INSERT INTO segments (name, rule) VALUES ('s', '{}');"
		"INSERT INTO campaigns (name, segment_id, channel, messages, calendar, state, activated_at) VALUES "
		"('b', 1, 'email', '{}', '{\"kind\":\"now\"}', 'completed', now());"
		"CREATE TABLE plain (contact_id bigint, address text);"
		"GRANT ALL ON plain TO %s; RESET search_path",
		t.schema, n, t.role);
	exec(c, q);
	hr_free(q);
	static const char *const tables[] = {"contacts", "events", "consents"};
	for (int k = 0; k < 3; k++) { /* VACUUM refuses to run inside a multi-statement string */
		q = hr_sprintf("VACUUM ANALYZE %s.%s", t.schema, tables[k]);
		exec(c, q);
		hr_free(q);
	}
	const char *rule = "{\"and\": [{\"attribute\": \"plan\", \"op\": \"eq\", \"value\": \"pro\"}, "
			   "{\"event\": \"visit\", \"when\": {\"op\": \"within_last\", \"days\": 30}}]}";
	hr_segment_opts o = {.now_unix = (int64_t)time(NULL), .first_param = 1};
	hr_segment_sql seg;
	must(hr_segment_compile(rule, &o, &seg, &err), &err);
	const char *explain = getenv("BENCH_EXPLAIN");
	if (explain && *explain && strcmp(explain, "0") != 0) {
		PQsetNoticeProcessor(c, print_notice, NULL);
		exec(c, "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
			"SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; "
			"SET auto_explain.log_wal = on; SET auto_explain.log_nested_statements = on; "
			"SET auto_explain.log_level = notice");
	}
	double *fan = hr_calloc((size_t)runs, sizeof *fan), *ins = hr_calloc((size_t)runs, sizeof *ins),
	       *insj = hr_calloc((size_t)runs, sizeof *insj), *fanc = hr_calloc((size_t)runs, sizeof *fanc),
	       *insc = hr_calloc((size_t)runs, sizeof *insc);
	int64_t recipients = 0;
	for (int k = 0; k < runs; k++) {
		/* plain INSERT ... SELECT of the same rows: server settings, then without JIT */
		char *pq = hr_sprintf("INSERT INTO plain (contact_id, address) SELECT c.id, c.email FROM contacts c "
				      "WHERE c.merged_into IS NULL AND %s",
				      seg.where);
		for (int j = 0; j < 2; j++) {
			must(hr_db_tenant_begin(c, t.schema, t.role, &err), &err);
			if (j == 1)
				exec(c, "SET LOCAL jit = off");
			double t0 = now_s(), c0 = backend_cpu_s(c);
			must(hr_db_query(c, pq, seg.nparams, (const char *const *)seg.params, NULL, &err), &err);
			must(hr_db_commit(c, &err), &err);
			(j ? insj : ins)[k] = now_s() - t0;
			if (!j)
				insc[k] = backend_cpu_s(c) - c0;
			q = hr_sprintf("TRUNCATE %s.plain", t.schema);
			exec(c, q);
			hr_free(q);
		}
		hr_free(pq);
		/* the campaign run: run row + the fan-out, one transaction */
		const char *zones[] = {""};
		int64_t dues[] = {(int64_t)time(NULL) - 1};
		hr_audience a = {.channel = "email", .where = seg.where, .nparams = seg.nparams,
				 .params = (const char *const *)seg.params, .cap = {.max = 100, .period_s = 86400},
				 .nzones = 1, .zones = zones, .nslots = 1, .dues = dues, .template_id = 1,
				 .template_version = 1, .provider = "main", .origin = "campaign", .hold_later = true};
		hr_audience_result res;
		double t0 = now_s(), c0 = backend_cpu_s(c);
		must(hr_db_tenant_begin(c, t.schema, t.role, &err), &err);
		PGresult *r;
		must(hr_db_query(c,
				 "INSERT INTO campaign_runs (campaign_id, run_at, started_at, channel, template_id, "
				 "template_version, provider) VALUES (1, now(), now(), 'email', 1, 1, 'main') RETURNING id",
				 0, NULL, &r, &err),
		     &err);
		a.origin_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
		must(hr_audience_materialise(c, t.id, &a, &res, &err), &err);
		must(hr_db_commit(c, &err), &err);
		fan[k] = now_s() - t0;
		fanc[k] = backend_cpu_s(c) - c0;
		recipients = res.recipients;
		fprintf(stderr,
			"run %d: recipients=%lld fanout_s=%.3f insert_select_s=%.3f insert_select_nojit_s=%.3f "
			"fanout_cpu_s=%.2f insert_select_cpu_s=%.2f\n",
			k + 1, (long long)res.recipients, fan[k], ins[k], insj[k], fanc[k], insc[k]);
		/* the next run starts from the same state */
		q = hr_sprintf("DELETE FROM %s.outbox", t.schema);
		exec(c, q);
		hr_free(q);
		q = hr_sprintf("VACUUM %s.outbox", t.schema);
		exec(c, q);
		hr_free(q);
	}
	qsort(fan, (size_t)runs, sizeof *fan, cmp);
	qsort(ins, (size_t)runs, sizeof *ins, cmp);
	qsort(insj, (size_t)runs, sizeof *insj, cmp);
	qsort(fanc, (size_t)runs, sizeof *fanc, cmp);
	qsort(insc, (size_t)runs, sizeof *insc, cmp);
	double f = fan[runs / 2], i = ins[runs / 2], ij = insj[runs / 2], fc = fanc[runs / 2], ic = insc[runs / 2];
	printf("recipients=%lld fanout_s=%.3f insert_select_s=%.3f ratio=%.2f runs=%d insert_select_nojit_s=%.3f "
	       "ratio_nojit=%.2f fanout_cpu_s=%.2f insert_select_cpu_s=%.2f ratio_cpu=%.2f\n",
	       (long long)recipients, f, i, i / f, runs, ij, ij / f, fc, ic, fc > 0 ? ic / fc : 0);
	hr_segment_sql_free(&seg);
	hr_free(fan);
	hr_free(ins);
	hr_free(insj);
	hr_free(fanc);
	hr_free(insc);
	hr_migrations_free(set);
	PQfinish(c);
	return 0;
}
