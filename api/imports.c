/*
 * imports.c -- bulk contact import: POST /v1/imports (NDJSON or CSV,
 * streamed), GET /v1/imports, GET /v1/imports/{id}.
 *
 * The body is never held whole: server.c hands it over piece by piece
 * (api_stream) and this file cuts it into records (a line; for CSV a record
 * may span lines inside quotes), validates each exactly as PUT /v1/contacts
 * does (contact_parse: the same members, the same email and phone
 * normalisation with the tenant's default_country_code), and collects good
 * rows into chunks of IMPORT_CHUNK.  A bad record is counted and reported
 * with its line number (the first line of a CSV record), the member or
 * column at fault and what is wrong; the job keeps the problems of the
 * first IMPORT_MAX_ERRORS rejected rows and counts the rest.
 *
 * Connections: the import brings two of its own (never a pooled one, which
 * it would hold across callbacks).  `db` carries ONE transaction for the
 * whole import, so an import either commits every good row or -- body too
 * large, client gone, database error -- nothing; `prog` writes the job row's
 * progress (committed at once, after every chunk and, while only rejected
 * rows come, every IMPORT_PROGRESS_MS; synchronous_commit off) so GET
 * /v1/imports/{id} from another connection sees it while the body streams.
 * The final summary is written by `db` itself just before its COMMIT:
 * status `succeeded` and committed contacts are one atomic fact.
 *
 * A chunk is applied set-based, whatever its size.  Step 0, while it works:
 * its rows that share no identifier with another row are COPYed straight
 * into contacts (behind a savepoint) -- right exactly when none of them
 * names an existing contact, as in a first import, and then as fast as a
 * plain COPY.  The first chunk whose COPY meets a unique violation is rolled
 * back, and it and every later chunk take the staged path (four statements):
 *   1. COPY into a temporary staging table (no WAL, no index);
 *   2. INSERT ... SELECT ... ON CONFLICT DO NOTHING of the rows that share
 *      no identifier with another row of the chunk: a row that conflicts
 *      names an existing contact and comes back (anti-join on RETURNING);
 *   3. for those: one UPDATE ... FROM of the rows that name exactly one
 *      existing contact, a live one (not merged) that no other row of the
 *      chunk names;
 *   4. what is left -- rows sharing an identifier within the chunk (the same
 *      normalised email or phone twice), rows naming several contacts (a
 *      merge), rows naming a merged one -- goes one by one, in line order,
 *      through contact_upsert(), the very code of PUT /v1/contacts, so
 *      duplicates become one contact and merges are recorded as PUT records
 *      them.  Rows of steps 2-3 touch no contact and no identifier that any
 *      other row of the chunk touches, so the result is the same as applying
 *      every row in line order.
 * A conflict with a concurrent request in steps 1-3 rolls the chunk back to
 * its savepoint and applies it row by row; a row that still conflicts is
 * rejected ("import it again") instead of failing the import.
 *
 * Threads: everything here runs on the MHD thread of the request's
 * connection; an imp belongs to one request.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "api.h"
#include "db.h"
#include "log.h"

#define IMPORT_CHUNK 5000        /* good rows applied per set-based round */
#define IMPORT_MAX_ROW 65536     /* bytes of one record */
#define IMPORT_MAX_ERRORS 100    /* rejected rows whose problems the job keeps */
#define IMPORT_PROGRESS_MS 250   /* the job row's progress is written at most this often */
#define IMPORT_MAX_COLS 256      /* CSV columns */

#define IMPORT_JSON                                                                                         \
	"jsonb_build_object('id', i.id, 'format', i.format, 'status', i.status, 'rows_read', i.rows_read, "  \
	"'imported', i.imported, 'created', i.created, 'updated', i.updated, 'merged', i.merged, "          \
	"'rejected', i.rejected, 'errors', i.errors, 'failure', i.failure, 'bytes', i.bytes, "               \
	"'created_at', i.created_at, 'updated_at', i.updated_at, 'finished_at', i.finished_at)::text"

/* One good row, normalised, waiting for its chunk to be applied. */
typedef struct imp_row {
	long long line;
	char *external_id, *attributes, *time_zone, *locale; /* heap or NULL */
	char email[256];                                      /* "" = none */
	char phone[20];                                       /* "" = none */
	bool dup;                                             /* shares an identifier with another row of the chunk */
} imp_row;

typedef enum { FMT_NDJSON, FMT_CSV } imp_fmt;

/*
 * Where a CSV record's end is looked for: a newline ends the record except
 * inside a quoted field, and a quote opens one only at a field's start -- so
 * a stray quote in the middle of a field spoils that row alone, and only a
 * field that opens a quote and never closes it runs on over the lines.
 */
enum { CS_START, CS_PLAIN, CS_QUOTED, CS_QUOTE };

/* A CSV column's meaning. */
typedef enum { COL_EXTERNAL_ID, COL_EMAIL, COL_PHONE, COL_TIME_ZONE, COL_LOCALE, COL_ATTRIBUTES, COL_ATTR } colkind;

typedef struct imp {
	PGconn *db;     /* the import's one transaction */
	PGconn *prog;   /* progress, committed on its own */
	char id[24];    /* the job's id */
	char schema[64], role[64];
	char *cc;       /* the tenant's default_country_code, or NULL */
	imp_fmt fmt;
	/* record assembly */
	char *rec;
	size_t len, cap;
	long long nl;        /* newlines consumed so far */
	long long rec_line;  /* the line the current record starts on */
	bool in_rec;         /* rec_line is set */
	int cstate;          /* CSV: where the record's bytes are (CS_*), to find its end */
	bool skipping;       /* the record passed IMPORT_MAX_ROW: its bytes are dropped up to its newline */
	bool first;          /* no record seen yet (a UTF-8 BOM may open the body) */
	/* CSV */
	bool header;         /* the header row was read */
	size_t ncols;
	char **cols;         /* column names (heap) */
	colkind *kinds;
	char **fields;       /* one record's fields (point into rec), IMPORT_MAX_COLS + 1 */
	size_t *flens;
	/* the chunk */
	imp_row *rows;
	size_t nrows;
	char *copy;          /* COPY text of the chunk */
	size_t clen, ccap;
	/* the summary */
	long long rows_read, created, updated, merged, rejected, bytes, kept_rows;
	json_t *errors;
	long long progress_at; /* monotonic ms of the last progress write */
	long long shown;       /* rows_read at that write */
	bool dead;             /* answered already (failed): ignore the rest */
	bool staged;           /* a direct COPY met an existing contact: later chunks use the staging table */
} imp;

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void row_free(imp_row *w)
{
	hr_free(w->external_id);
	hr_free(w->attributes);
	hr_free(w->time_zone);
	hr_free(w->locale);
	memset(w, 0, sizeof *w);
}

static void imp_free(void *p)
{
	imp *m = p;
	if (!m)
		return;
	if (m->db)
		PQfinish(m->db);
	if (m->prog)
		PQfinish(m->prog);
	for (size_t i = 0; i < m->nrows; i++)
		row_free(&m->rows[i]);
	hr_free(m->rows);
	for (size_t i = 0; i < m->ncols; i++)
		hr_free(m->cols[i]);
	hr_free(m->cols);
	hr_free(m->kinds);
	hr_free(m->fields);
	hr_free(m->flens);
	hr_free(m->rec);
	hr_free(m->copy);
	hr_free(m->cc);
	json_decref(m->errors);
	hr_free(m);
}

/* ---- rejected rows ---- */

/* One problem of a rejected row; the caller counts the row once (reject_done). */
static void problem(imp *m, long long line, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void problem(imp *m, long long line, const char *field, const char *fmt, ...)
{
	if (m->kept_rows >= IMPORT_MAX_ERRORS)
		return;
	char d[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d, sizeof d, fmt, ap);
	va_end(ap);
	json_t *dj = json_string(d), *fj = json_string(field);
	json_array_append_new(m->errors, json_pack("{s:I, s:o, s:o}", "line", (json_int_t)line, "field",
						   fj ? fj : json_string("?"), "detail",
						   dj ? dj : json_string("is not valid")));
}

static void reject_done(imp *m)
{
	m->rejected++;
	if (m->kept_rows < IMPORT_MAX_ERRORS)
		m->kept_rows++;
}

static void reject(imp *m, long long line, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reject(imp *m, long long line, const char *field, const char *fmt, ...)
{
	char d[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d, sizeof d, fmt, ap);
	va_end(ap);
	problem(m, line, field, "%s", d);
	reject_done(m);
}

/* The validator's errors ({pointer, detail}) as the row's problems, fields named without the "/". */
static void reject_jv(imp *m, long long line, jv *v)
{
	size_t i;
	json_t *e;
	json_array_foreach(v->errors, i, e) {
		const char *ptr = json_string_value(json_object_get(e, "pointer"));
		const char *d = json_string_value(json_object_get(e, "detail"));
		char name[256];
		size_t k = 0;
		for (const char *p = ptr && *ptr == '/' ? ptr + 1 : ""; *p && k < sizeof name - 1; p++) {
			if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
				name[k++] = p[1] == '0' ? '~' : '/';
				p++;
			} else {
				name[k++] = *p;
			}
		}
		name[k] = '\0';
		problem(m, line, name, "%s", d ? d : "is not valid");
	}
	reject_done(m);
}

/* ---- the job row ---- */

static bool progress(imp *m, const char *status, const char *failure, hr_err *err)
{
	char c[7][24];
	long long v[] = {m->rows_read, m->created + m->updated, m->created, m->updated, m->merged, m->rejected,
			 m->bytes};
	for (int i = 0; i < 7; i++)
		snprintf(c[i], sizeof c[i], "%lld", v[i]);
	char *errors = api_dump(m->errors);
	const char *p[] = {m->id, c[0], c[1], c[2], c[3], c[4], c[5], c[6], errors, status, failure};
	bool ok = hr_db_tenant_begin(m->prog, m->schema, m->role, err) &&
		  hr_db_query(m->prog,
			      "UPDATE imports SET rows_read = $2, imported = $3, created = $4, updated = $5, "
			      "merged = $6, rejected = $7, bytes = $8, errors = $9, status = $10, failure = $11, "
			      "updated_at = now(), finished_at = CASE WHEN $10 = 'running' THEN NULL ELSE now() END "
			      "WHERE id = $1",
			      11, p, NULL, err) &&
		  hr_db_commit(m->prog, err);
	if (!ok)
		hr_db_rollback(m->prog);
	hr_free(errors);
	m->progress_at = mono_ms();
	m->shown = m->rows_read;
	return ok;
}

/*
 * The import is over without its contacts: roll back, record why (nothing
 * imported, the rows read and rejected as far as they went), answer.
 */
static void fail(api_req *r, imp *m, int status, const char *type, const char *title, const char *why)
{
	hr_db_rollback(m->db);
	m->created = m->updated = m->merged = 0;
	hr_err err = {0};
	if (!progress(m, "failed", why, &err))
		hr_warn("api: import %s: cannot record its failure: %s", m->id, err.msg);
	m->dead = true;
	if (r) {
		api_problem(r, status, type, title, why, NULL);
		json_t *body = json_loads(r->resp, 0, NULL);
		if (body) {
			json_object_set_new(body, "import_id", json_integer(strtoll(m->id, NULL, 10)));
			const char *ct = r->ctype;
			api_json(r, status, body);
			r->ctype = ct;
		}
	}
}

static void fail_db(api_req *r, imp *m, const hr_err *e)
{
	hr_warn("api: import %s: %s", m->id, e->msg);
	fail(r, m, 503, "unavailable", "The database is unavailable",
	     "the database failed during the import; nothing was imported, send the file again");
}

/* ---- applying a chunk ---- */

static void copy_put(imp *m, const char *s, bool last)
{
	size_t need = m->clen + (s ? 2 * strlen(s) : 2) + 2;
	if (need > m->ccap) {
		m->ccap = need * 2;
		m->copy = hr_realloc(m->copy, m->ccap);
	}
	char *o = m->copy + m->clen;
	if (!s) {
		*o++ = '\\';
		*o++ = 'N';
	} else {
		for (; *s; s++) {
			switch (*s) {
			case '\\': *o++ = '\\'; *o++ = '\\'; break;
			case '\t': *o++ = '\\'; *o++ = 't'; break;
			case '\n': *o++ = '\\'; *o++ = 'n'; break;
			case '\r': *o++ = '\\'; *o++ = 'r'; break;
			default: *o++ = *s;
			}
		}
	}
	*o++ = last ? '\n' : '\t';
	m->clen = (size_t)(o - m->copy);
}

static uint64_t fnv(int kind, const char *s)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* Mark the rows that share an identifier (the same kind and value) with another row of the chunk. */
static void mark_dups(imp *m)
{
	typedef struct slot {
		const char *v;
		uint32_t row;
		int kind;
	} slot;
	size_t cap = 8;
	while (cap < m->nrows * 6)
		cap <<= 1;
	slot *t = hr_calloc(cap, sizeof *t);
	for (size_t i = 0; i < m->nrows; i++) {
		imp_row *w = &m->rows[i];
		const char *ids[] = {w->external_id, w->email[0] ? w->email : NULL, w->phone[0] ? w->phone : NULL};
		for (int k = 0; k < 3; k++) {
			if (!ids[k])
				continue;
			size_t at = (size_t)fnv(k, ids[k]) & (cap - 1);
			while (t[at].v && !(t[at].kind == k && strcmp(t[at].v, ids[k]) == 0))
				at = (at + 1) & (cap - 1);
			if (!t[at].v) {
				t[at] = (slot){ids[k], (uint32_t)i, k};
			} else {
				w->dup = true;
				m->rows[t[at].row].dup = true;
			}
		}
	}
	hr_free(t);
}

/* COPY the chunk into the staging table, or (direct) its rows without duplicates into contacts. */
static bool copy_chunk(imp *m, bool direct, hr_err *err)
{
	m->clen = 0;
	for (size_t i = 0; i < m->nrows; i++) {
		imp_row *w = &m->rows[i];
		if (direct) {
			if (w->dup)
				continue;
			copy_put(m, w->external_id, false);
			copy_put(m, w->email[0] ? w->email : NULL, false);
			copy_put(m, w->phone[0] ? w->phone : NULL, false);
			copy_put(m, w->attributes ? w->attributes : "{}", false);
			copy_put(m, w->time_zone, false);
			copy_put(m, w->locale, true);
			continue;
		}
		char line[24];
		snprintf(line, sizeof line, "%lld", w->line);
		copy_put(m, line, false);
		copy_put(m, w->external_id, false);
		copy_put(m, w->email[0] ? w->email : NULL, false);
		copy_put(m, w->phone[0] ? w->phone : NULL, false);
		copy_put(m, w->attributes, false);
		copy_put(m, w->time_zone, false);
		copy_put(m, w->locale, false);
		copy_put(m, w->dup ? "t" : "f", true);
	}
	if (!direct && !hr_db_exec(m->db, "TRUNCATE import_stage", err))
		return false;
	PGresult *res = PQexec(m->db, direct ? "COPY contacts (external_id, email, phone, attributes, time_zone, "
					       "locale) FROM STDIN"
					     : "COPY import_stage FROM STDIN");
	if (PQresultStatus(res) != PGRES_COPY_IN) {
		hr_db_fail(m->db, res, "import: COPY", err);
		PQclear(res);
		return false;
	}
	PQclear(res);
	if (PQputCopyData(m->db, m->copy, (int)m->clen) != 1 || PQputCopyEnd(m->db, NULL) != 1)
		return hr_db_fail(m->db, NULL, "import: COPY", err);
	bool ok = true;
	while ((res = PQgetResult(m->db))) {
		if (ok && PQresultStatus(res) != PGRES_COMMAND_OK)
			ok = hr_db_fail(m->db, res, "import: COPY", err);
		PQclear(res);
	}
	return ok;
}

/* Lines of a result's first column into a Postgres array literal "{1,2}" (heap). */
static char *lines_array(PGresult *res)
{
	int n = PQntuples(res);
	size_t cap = (size_t)n * 21 + 3, len = 0;
	char *a = hr_malloc(cap);
	a[len++] = '{';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(a + len, cap - len, "%s%s", i ? "," : "", PQgetvalue(res, i, 0));
	snprintf(a + len, cap - len, "}");
	return a;
}

/*
 * Steps 1-3 of the file comment.  *slow: the lines left for contact_upsert
 * (a result, ascending), or NULL when none.
 */
static bool apply_sets(imp *m, size_t good, PGresult **slow, hr_err *err)
{
	*slow = NULL;
	PGresult *rest = NULL;
	if (!copy_chunk(m, false, err) ||
	    !hr_db_query(m->db,
			 "WITH ins AS (INSERT INTO contacts (external_id, email, phone, attributes, time_zone, locale) "
			 "SELECT external_id, email, phone, coalesce(attributes, '{}'), time_zone, locale "
			 "FROM import_stage WHERE NOT dup ORDER BY line ON CONFLICT DO NOTHING "
			 "RETURNING coalesce(external_id, '') AS x, coalesce(email, '') AS e, coalesce(phone, '') AS p) "
			 "SELECT s.line FROM import_stage s WHERE s.dup OR NOT EXISTS (SELECT 1 FROM ins "
			 "WHERE ins.x = coalesce(s.external_id, '') AND ins.e = coalesce(s.email, '') "
			 "AND ins.p = coalesce(s.phone, '')) ORDER BY s.line",
			 0, NULL, &rest, err))
		return false;
	size_t nrest = (size_t)PQntuples(rest);
	m->created += (long long)(good - nrest);
	if (nrest == 0) {
		PQclear(rest);
		return true;
	}
	char *lines = lines_array(rest);
	PQclear(rest);
	const char *p[] = {lines};
	bool ok = hr_db_query(
		m->db,
		"WITH s AS (SELECT * FROM import_stage WHERE line = ANY($1::bigint[])), "
		"hits AS (SELECT s.line, c.id, c.merged_into FROM s JOIN contacts c ON c.external_id = s.external_id "
		"UNION SELECT s.line, c.id, c.merged_into FROM s JOIN contacts c ON c.email = s.email "
		"UNION SELECT s.line, c.id, c.merged_into FROM s JOIN contacts c ON c.phone = s.phone), "
		"agg AS (SELECT line, count(*) AS n, min(id) AS id, bool_and(merged_into IS NULL) AS live "
		"FROM hits GROUP BY line), "
		"shared AS (SELECT coalesce(merged_into, id) AS id FROM hits GROUP BY 1 HAVING count(DISTINCT line) > 1), "
		"upd AS (UPDATE contacts c SET external_id = coalesce(s.external_id, c.external_id), "
		"email = coalesce(s.email, c.email), phone = coalesce(s.phone, c.phone), "
		"attributes = c.attributes || coalesce(s.attributes, '{}'), time_zone = coalesce(s.time_zone, c.time_zone), "
		"locale = coalesce(s.locale, c.locale), updated_at = now() "
		"FROM s JOIN agg a ON a.line = s.line WHERE c.id = a.id AND NOT s.dup AND a.n = 1 AND a.live "
		"AND NOT EXISTS (SELECT 1 FROM shared WHERE shared.id = a.id) RETURNING s.line) "
		"SELECT s.line FROM s WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.line = s.line) ORDER BY s.line",
		1, p, slow, err);
	hr_free(lines);
	if (!ok)
		return false;
	m->updated += (long long)(nrest - (size_t)PQntuples(*slow));
	return true;
}

/* Step 4: one row as PUT /v1/contacts would apply it, behind a savepoint. */
static bool apply_one(imp *m, imp_row *w, hr_err *err)
{
	contact_in in = {.external_id = w->external_id, .has_email = w->email[0] != '\0',
			 .has_phone = w->phone[0] != '\0', .attributes = w->attributes, .time_zone = w->time_zone,
			 .locale = w->locale};
	memcpy(in.email, w->email, sizeof in.email);
	memcpy(in.phone, w->phone, sizeof in.phone);
	if (!hr_db_exec(m->db, "SAVEPOINT import_row", err))
		return false;
	bool created = false;
	json_t *c = NULL;
	hr_err e = {0};
	if (!contact_upsert(m->db, &in, &created, &c, &e)) {
		if (e.kind != HR_ERR_CONFLICT) {
			*err = e;
			return false;
		}
		reject(m, w->line, "", "another request changed these contacts at the same time; import the row again");
		return hr_db_exec(m->db, "ROLLBACK TO SAVEPOINT import_row", err);
	}
	if (created)
		m->created++;
	else
		m->updated++;
	m->merged += (long long)json_array_size(json_object_get(c, "merged"));
	json_decref(c);
	return hr_db_exec(m->db, "RELEASE SAVEPOINT import_row", err);
}

/* Apply the chunk's rows (all of them good) and empty it. */
static bool flush(imp *m, hr_err *err)
{
	if (m->nrows == 0)
		return true;
	mark_dups(m);
	PGresult *slow = NULL;
	bool ok = hr_db_exec(m->db, "SAVEPOINT import_chunk", err);
	long long created = m->created, updated = m->updated;
	if (ok && !m->staged) {
		/* Step 0: straight into contacts, right when no row names an existing contact. */
		if (copy_chunk(m, true, err)) {
			for (size_t i = 0; i < m->nrows; i++)
				m->created += !m->rows[i].dup;
			for (size_t i = 0; ok && i < m->nrows; i++)
				if (m->rows[i].dup)
					ok = apply_one(m, &m->rows[i], err);
			goto done;
		}
		if (err->kind != HR_ERR_CONFLICT) {
			ok = false;
			goto done;
		}
		m->staged = true;
		ok = hr_db_exec(m->db, "ROLLBACK TO SAVEPOINT import_chunk", err);
	}
	if (ok && !apply_sets(m, m->nrows, &slow, err)) {
		if (err->kind != HR_ERR_CONFLICT) {
			ok = false;
		} else {
			/* A concurrent request took an identifier: redo the chunk row by row. */
			m->created = created;
			m->updated = updated;
			ok = hr_db_exec(m->db, "ROLLBACK TO SAVEPOINT import_chunk", err);
			for (size_t i = 0; ok && i < m->nrows; i++)
				ok = apply_one(m, &m->rows[i], err);
			goto done;
		}
	}
	if (ok && slow) {
		size_t k = 0;
		for (int i = 0; ok && i < PQntuples(slow); i++) {
			long long line = strtoll(PQgetvalue(slow, i, 0), NULL, 10);
			while (k < m->nrows && m->rows[k].line < line)
				k++;
			if (k == m->nrows || m->rows[k].line != line)
				hr_panic("api: import %s: staged line %lld is not in the chunk", m->id, line);
			ok = apply_one(m, &m->rows[k], err);
		}
	}
done:
	PQclear(slow);
	if (ok)
		ok = hr_db_exec(m->db, "RELEASE SAVEPOINT import_chunk", err);
	for (size_t i = 0; i < m->nrows; i++)
		row_free(&m->rows[i]);
	m->nrows = 0;
	if (ok)
		ok = progress(m, "running", NULL, err);
	return ok;
}

/* ---- records ---- */

static char *dup_or_null(const char *s)
{
	return s ? hr_strdup(s) : NULL;
}

/* A parsed record (a JSON object) -> a good row, or a rejected one. */
static bool take_object(imp *m, json_t *o, long long line, hr_err *err)
{
	jv v;
	jv_init(&v);
	contact_in in;
	if (!contact_parse(&v, o, m->cc, &in)) {
		reject_jv(m, line, &v);
		jv_free(&v);
		return true;
	}
	jv_free(&v);
	imp_row *w = &m->rows[m->nrows++];
	w->line = line;
	w->external_id = dup_or_null(in.external_id);
	w->time_zone = dup_or_null(in.time_zone);
	w->locale = dup_or_null(in.locale);
	w->attributes = in.attributes;
	if (in.has_email)
		memcpy(w->email, in.email, sizeof w->email);
	if (in.has_phone)
		memcpy(w->phone, in.phone, sizeof w->phone);
	return m->nrows < IMPORT_CHUNK || flush(m, err);
}

/* Byte offset of the first invalid UTF-8 sequence (or NUL), or -1. */
static long utf8_bad(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t k;
		uint32_t cp;
		if (c == 0)
			return (long)i;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07;
		} else {
			return (long)i;
		}
		for (size_t j = 1; j <= k; j++) {
			if (i + j >= n || (s[i + j] & 0xc0) != 0x80)
				return (long)i;
			cp = (cp << 6) | (s[i + j] & 0x3f);
		}
		if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return (long)i;
		i += k + 1;
	}
	return -1;
}

/*
 * Split a CSV record (RFC 4180) in place into m->fields.  false with *col
 * (1-based) and *why on bad quoting or too many fields.
 */
static bool csv_split(imp *m, char *s, size_t n, size_t *nf, size_t *col, const char **why)
{
	size_t f = 0, i = 0;
	for (;;) {
		if (f == IMPORT_MAX_COLS + 1) {
			*col = f;
			*why = "has more than 256 fields";
			return false;
		}
		char *out = s + i, *start = out;
		if (i < n && s[i] == '"') {
			i++;
			for (;;) {
				if (i >= n) {
					*col = f + 1;
					*why = "has a quoted field that is never closed";
					return false;
				}
				if (s[i] == '"') {
					if (i + 1 < n && s[i + 1] == '"') {
						*out++ = '"';
						i += 2;
						continue;
					}
					i++;
					break;
				}
				*out++ = s[i++];
			}
			if (i < n && s[i] != ',') {
				*col = f + 1;
				*why = "has characters after a closing quote (a quote inside a field must be doubled)";
				return false;
			}
		} else {
			while (i < n && s[i] != ',') {
				if (s[i] == '"') {
					*col = f + 1;
					*why = "has a quote inside an unquoted field (quote the whole field and double the quote)";
					return false;
				}
				*out++ = s[i++];
			}
		}
		m->fields[f] = start;
		m->flens[f] = (size_t)(out - start);
		f++;
		if (i >= n)
			break;
		*out = '\0'; /* the separator's byte, or earlier: the field is shorter than its source */
		i++;         /* the comma */
	}
	/* Terminate the last field (it may end at the record's end). */
	m->fields[f - 1][m->flens[f - 1]] = '\0';
	*nf = f;
	return true;
}

static bool csv_header(api_req *r, imp *m, size_t nf)
{
	static const struct {
		const char *name;
		colkind kind;
	} known[] = {{"external_id", COL_EXTERNAL_ID}, {"email", COL_EMAIL},	   {"phone", COL_PHONE},
		     {"time_zone", COL_TIME_ZONE},     {"locale", COL_LOCALE},	   {"attributes", COL_ATTRIBUTES}};
	m->cols = hr_calloc(nf, sizeof *m->cols);
	m->kinds = hr_calloc(nf, sizeof *m->kinds);
	m->ncols = nf;
	char why[300] = "";
	bool ident = false;
	for (size_t i = 0; i < nf && !why[0]; i++) {
		const char *name = m->fields[i];
		m->cols[i] = hr_strdup(name);
		m->kinds[i] = COL_ATTR;
		for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
			if (strcmp(name, known[k].name) == 0)
				m->kinds[i] = known[k].kind;
		ident |= m->kinds[i] <= COL_PHONE;
		if (m->flens[i] == 0 || m->flens[i] > 128)
			snprintf(why, sizeof why, "line %lld: column %zu of the header must have a name of 1 to 128 bytes",
				 m->rec_line, i + 1);
		for (size_t k = 0; k < i && !why[0]; k++)
			if (strcmp(m->cols[k], name) == 0)
				snprintf(why, sizeof why, "line %lld: the header names column '%.128s' twice", m->rec_line,
					 name);
	}
	if (!why[0] && !ident)
		snprintf(why, sizeof why,
			 "line %lld: the header has none of the columns external_id, email, phone: no row could name a contact",
			 m->rec_line);
	if (why[0]) {
		fail(r, m, 422, "validation", "The request is not valid", why);
		return false;
	}
	m->header = true;
	return true;
}

static bool take_csv(imp *m, long long line, hr_err *err)
{
	json_t *o = json_object(), *attrs = NULL, *cattrs = json_object();
	jv v;
	jv_init(&v);
	for (size_t i = 0; i < m->ncols; i++) {
		const char *f = m->fields[i];
		size_t len = m->flens[i];
		if (len == 0)
			continue; /* an empty field sets nothing */
		json_t *str = json_stringn(f, len);
		if (!str) {
			jv_add(&v, "", m->cols[i], "is not valid UTF-8");
			continue;
		}
		switch (m->kinds[i]) {
		case COL_ATTRIBUTES: {
			json_decref(str);
			json_error_t je;
			attrs = json_loadb(f, len, JSON_REJECT_DUPLICATES, &je);
			if (!json_is_object(attrs)) {
				jv_add(&v, "", "attributes", "must be a JSON object (%s)", attrs ? "got another value" : je.text);
				json_decref(attrs);
				attrs = NULL;
			}
			break;
		}
		case COL_ATTR:
			json_object_set_new(cattrs, m->cols[i], str);
			break;
		default:
			json_object_set_new(o, m->cols[i], str);
		}
	}
	if (json_object_size(cattrs)) {
		if (!attrs)
			attrs = json_object();
		json_object_update(attrs, cattrs);
	}
	if (attrs)
		json_object_set_new(o, "attributes", attrs);
	json_decref(cattrs);
	bool ok = true;
	if (!jv_ok(&v))
		reject_jv(m, line, &v);
	else
		ok = take_object(m, o, line, err);
	jv_free(&v);
	json_decref(o);
	return ok;
}

/* A complete record in m->rec (its newline excluded).  false = the import failed (answered). */
static bool record(api_req *r, imp *m)
{
	char *s = m->rec;
	size_t n = m->len;
	long long line = m->rec_line;
	if (m->first && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
		s += 3;
		n -= 3;
	}
	m->first = false;
	if (n && s[n - 1] == '\r')
		n--;
	size_t blank = 0;
	while (blank < n && (s[blank] == ' ' || s[blank] == '\t' || s[blank] == '\r'))
		blank++;
	if (blank == n)
		return true; /* empty lines are not rows */
	hr_err err = {0};
	bool ok = true;
	if (m->fmt == FMT_NDJSON) {
		m->rows_read++;
		json_error_t je;
		json_t *o = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
		if (!o)
			reject(m, line, "", "malformed JSON at column %d: %s", je.column, je.text);
		else if (!json_is_object(o))
			reject(m, line, "", "must be a JSON object");
		else
			ok = take_object(m, o, line, &err);
		json_decref(o);
	} else {
		long bad = utf8_bad((const unsigned char *)s, n);
		size_t nf = 0, col = 0;
		const char *why = NULL;
		if (m->header)
			m->rows_read++;
		if (bad >= 0) {
			if (!m->header) {
				char d[128];
				snprintf(d, sizeof d, "line %lld: the header is not valid UTF-8 (byte %ld)", line, bad + 1);
				fail(r, m, 422, "validation", "The request is not valid", d);
				return false;
			}
			reject(m, line, "", "is not valid UTF-8 (byte %ld of the row)", bad + 1);
		} else if (!csv_split(m, s, n, &nf, &col, &why)) {
			if (!m->header) {
				char d[256];
				snprintf(d, sizeof d, "line %lld: the header %s (field %zu)", line, why, col);
				fail(r, m, 422, "validation", "The request is not valid", d);
				return false;
			}
			reject(m, line, "", "%s (field %zu)", why, col);
		} else if (!m->header) {
			return csv_header(r, m, nf);
		} else if (nf != m->ncols) {
			reject(m, line, "", "has %zu fields; the header has %zu", nf, m->ncols);
		} else {
			ok = take_csv(m, line, &err);
		}
	}
	if (!ok)
		fail_db(r, m, &err);
	return ok;
}

static bool rec_append(imp *m, const char *p, size_t n)
{
	if (m->len + n > IMPORT_MAX_ROW)
		return false;
	if (m->len + n + 1 > m->cap) {
		m->cap = (m->len + n + 1) * 2;
		if (m->cap > IMPORT_MAX_ROW + 1)
			m->cap = IMPORT_MAX_ROW + 1;
		m->rec = hr_realloc(m->rec, m->cap);
	}
	memcpy(m->rec + m->len, p, n);
	m->len += n;
	return true;
}

/* Body bytes: cut records, hand each to record().  Stops once the import failed. */
static void feed(api_req *r, imp *m, const char *buf, size_t n)
{
	size_t i = 0;
	while (i < n && !m->dead) {
		if (m->skipping) {
			const char *nl = memchr(buf + i, '\n', n - i);
			if (!nl)
				return;
			i = (size_t)(nl - buf) + 1;
			m->nl++;
			m->skipping = false;
			m->cstate = CS_START;
			continue;
		}
		if (!m->in_rec) {
			m->in_rec = true;
			m->rec_line = m->nl + 1;
			m->len = 0;
		}
		size_t j = i;
		bool end = false;
		if (m->fmt == FMT_NDJSON) {
			const char *nl = memchr(buf + i, '\n', n - i);
			j = nl ? (size_t)(nl - buf) : n;
			end = nl != NULL;
		} else {
			for (; j < n && !end; j++) {
				char c = buf[j];
				switch (m->cstate) {
				case CS_QUOTED:
					if (c == '"')
						m->cstate = CS_QUOTE;
					else if (c == '\n')
						m->nl++;
					break;
				case CS_START:
				case CS_PLAIN:
				case CS_QUOTE:
					if (c == '\n')
						end = true;
					else if (c == '"' && m->cstate != CS_PLAIN)
						m->cstate = CS_QUOTED; /* an opening quote, or "" inside a quoted field */
					else
						m->cstate = c == ',' ? CS_START : CS_PLAIN;
					break;
				}
			}
			if (end) {
				j--; /* at the newline */
				m->cstate = CS_START;
			}
		}
		if (!rec_append(m, buf + i, j - i)) {
			m->rows_read++;
			reject(m, m->rec_line, "", "is longer than %d bytes", IMPORT_MAX_ROW);
			m->in_rec = false;
			m->len = 0;
			m->skipping = !end;
			m->cstate = CS_START;
			if (end)
				m->nl++;
			i = end ? j + 1 : n;
			continue;
		}
		if (!end)
			return;
		m->nl++;
		m->in_rec = false;
		i = j + 1;
		if (!record(r, m))
			return;
	}
}

/* ---- the stream callbacks ---- */

static bool media_type(const char *ct, const char *want)
{
	size_t n = strlen(want);
	if (strncasecmp(ct, want, n) != 0)
		return false;
	const char *p = ct + n;
	while (*p == ' ')
		p++;
	if (!*p)
		return true;
	if (*p != ';')
		return false;
	/* Parameters: only charset=utf-8 (any case, optionally quoted). */
	p++;
	while (*p == ' ')
		p++;
	return strcasecmp(p, "charset=utf-8") == 0 || strcasecmp(p, "charset=\"utf-8\"") == 0;
}

static void import_open(api_req *r)
{
	const char *ct = api_header(r, "Content-Type");
	imp_fmt f;
	if (ct && (media_type(ct, "application/x-ndjson") || media_type(ct, "application/ndjson") ||
		   media_type(ct, "application/jsonl")))
		f = FMT_NDJSON;
	else if (ct && media_type(ct, "text/csv"))
		f = FMT_CSV;
	else {
		api_problem(r, 415, "unsupported-media-type", "Unsupported media type",
			    "send the contacts as Content-Type: application/x-ndjson (one JSON object per line) or "
			    "text/csv (UTF-8, a header row)",
			    NULL);
		return;
	}
	imp *m = hr_calloc(1, sizeof *m);
	m->fmt = f;
	m->first = true;
	m->errors = json_array();
	m->rows = hr_calloc(IMPORT_CHUNK, sizeof *m->rows);
	m->fields = hr_calloc(IMPORT_MAX_COLS + 1, sizeof *m->fields);
	m->flens = hr_calloc(IMPORT_MAX_COLS + 1, sizeof *m->flens);
	const char *cc = json_string_value(json_object_get(r->tenant_settings, "default_country_code"));
	m->cc = cc ? hr_strdup(cc) : NULL;
	snprintf(m->schema, sizeof m->schema, "%s", r->tenant.schema);
	snprintf(m->role, sizeof m->role, "%s", r->tenant.role);
	r->state = m;
	r->state_free = imp_free;
	hr_err err = {0};
	PGresult *res = NULL;
	const char *p[] = {f == FMT_CSV ? "csv" : "ndjson"};
	if (!hr_db_connect(api_dsn(r), &m->prog, &err) || !hr_db_connect(api_dsn(r), &m->db, &err) ||
	    !hr_db_exec(m->prog, "SET synchronous_commit = off", &err) ||
	    !hr_db_tenant_begin(m->prog, m->schema, m->role, &err) ||
	    !hr_db_query(m->prog, "INSERT INTO imports (format) VALUES ($1) RETURNING id", 1, p, &res, &err) ||
	    !hr_db_commit(m->prog, &err)) {
		PQclear(res);
		api_problem_err(r, &err);
		return;
	}
	snprintf(m->id, sizeof m->id, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	m->progress_at = mono_ms();
	if (!hr_db_tenant_begin(m->db, m->schema, m->role, &err) ||
	    !hr_db_exec(m->db,
			"CREATE TEMP TABLE import_stage (line bigint, external_id text, email text, phone text, "
			"attributes jsonb, time_zone text, locale text, dup boolean) ON COMMIT DROP",
			&err))
		fail_db(r, m, &err);
}

static void import_data(api_req *r, const char *buf, size_t n)
{
	imp *m = r->state;
	m->bytes += (long long)n;
	feed(r, m, buf, n);
	/* Rows that are all rejected fill no chunk: show them anyway, now and then. */
	hr_err err = {0};
	if (!m->dead && m->rows_read != m->shown && mono_ms() - m->progress_at >= IMPORT_PROGRESS_MS &&
	    !progress(m, "running", NULL, &err))
		fail_db(r, m, &err);
}

static void import_finish(api_req *r)
{
	imp *m = r->state;
	if (m->dead)
		return;
	if (m->in_rec && !m->skipping) {
		/* The last record has no newline. */
		m->in_rec = false;
		if (!record(r, m))
			return;
	}
	if (m->fmt == FMT_CSV && !m->header) {
		fail(r, m, 422, "validation", "The request is not valid",
		     "the CSV body is empty: it needs a header row (e.g. external_id,email,phone)");
		return;
	}
	hr_err err = {0};
	PGresult *res = NULL;
	if (!flush(m, &err)) {
		fail_db(r, m, &err);
		return;
	}
	char *errors = api_dump(m->errors);
	char c[7][24];
	long long v[] = {m->rows_read, m->created + m->updated, m->created, m->updated, m->merged, m->rejected, m->bytes};
	for (int i = 0; i < 7; i++)
		snprintf(c[i], sizeof c[i], "%lld", v[i]);
	const char *p[] = {m->id, c[0], c[1], c[2], c[3], c[4], c[5], c[6], errors};
	bool ok = hr_db_query(m->db,
			      "WITH i AS (UPDATE imports SET status = 'succeeded', rows_read = $2, imported = $3, "
			      "created = $4, updated = $5, merged = $6, rejected = $7, bytes = $8, errors = $9, "
			      "updated_at = now(), finished_at = now() WHERE id = $1 RETURNING *) "
			      "SELECT " IMPORT_JSON " FROM i",
			      9, p, &res, &err) &&
		  hr_db_commit(m->db, &err);
	hr_free(errors);
	if (!ok) {
		PQclear(res);
		fail_db(r, m, &err);
		return;
	}
	json_t *body = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	m->dead = true;
	snprintf(r->location, sizeof r->location, "/v1/imports/%s", m->id);
	api_json(r, 201, body ? body : json_object());
}

static void import_too_large(api_req *r)
{
	char d[160];
	snprintf(d, sizeof d, "the body is larger than the %ld bytes an import accepts (api_import_max_body); nothing "
		 "was imported", hr_config_int(api_cfg(r), "api_import_max_body"));
	imp *m = r->state;
	if (m && !m->dead)
		fail(r, m, 413, "too-large", "Request body too large", d);
	else
		api_problem(r, 413, "too-large", "Request body too large", d, NULL);
}

static void import_abort(api_req *r)
{
	imp *m = r->state;
	if (!m->dead && m->id[0])
		fail(NULL, m, 0, NULL, NULL,
		     "the connection closed before the body was complete; nothing was imported");
}

const api_stream imports_stream = {
	.limit = "api_import_max_body",
	.open = import_open,
	.finish = import_finish,
	.too_large = import_too_large,
	.abort = import_abort,
	.data = import_data,
};

void imports_post(api_req *r)
{
	hr_panic("api: POST /v1/imports is streamed; %s reached the collected-body path", r->path);
}

/* ---- reading jobs ---- */

static json_t *col_json(PGresult *res, int row, int col)
{
	json_t *j = json_loads(PQgetvalue(res, row, col), 0, NULL);
	return j ? j : json_null();
}

void imports_get(api_req *r)
{
	const char *s = r->param[0];
	size_t n = strlen(s);
	if (n < 1 || n > 18 || strspn(s, "0123456789") != n || s[0] == '0') {
		api_problem(r, 404, "not-found", "Not found", "no such import", NULL);
		return;
	}
	const char *p[] = {s};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db, "SELECT " IMPORT_JSON " FROM imports i WHERE id = $1", 1, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	if (PQntuples(res) == 0)
		api_problem(r, 404, "not-found", "Not found", "no such import", NULL);
	else
		api_json(r, 200, col_json(res, 0, 0));
	PQclear(res);
}

void imports_list(api_req *r)
{
	/* newest first: the cursor is the last id shown, the next page is below it */
	char before[24] = "9223372036854775807", limit[16];
	if (!api_list_args(r, "v1:", before, sizeof before, limit))
		return;
	if (!*before || strspn(before, "0123456789") != strlen(before)) {
		api_bad_param(r, "cursor", "is not a cursor this API returned");
		return;
	}
	const char *p[] = {before, limit};
	PGresult *res;
	hr_err err = {0};
	if (!hr_db_query(r->db,
			 "SELECT " IMPORT_JSON ", i.id FROM imports i WHERE i.id < $1::bigint ORDER BY i.id DESC "
			 "LIMIT $2::int + 1",
			 2, p, &res, &err)) {
		api_problem_err(r, &err);
		return;
	}
	api_list_reply(r, res, atoi(limit), "v1:");
	PQclear(res);
}
