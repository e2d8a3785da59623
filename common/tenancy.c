/*
 * tenancy.c -- see tenancy.h.
 */
#include "tenancy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "crypto.h"
#include "db.h"

bool hr_slug_valid(const char *slug, const char *field, hr_err *err)
{
	size_t n = slug ? strlen(slug) : 0;
	if (n < 2 || n > 40)
		return hr_fail(err, HR_ERR_INVALID, field,
			       "%s must be 2 to 40 characters long, got %zu", field, n);
	if (slug[0] < 'a' || slug[0] > 'z')
		return hr_fail(err, HR_ERR_INVALID, field, "%s must start with a letter a-z", field);
	for (size_t i = 0; i < n; i++) {
		char ch = slug[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
			return hr_fail(err, HR_ERR_INVALID, field,
				       "%s may contain only a-z, 0-9 and '-'; character %zu is not one of them",
				       field, i + 1);
	}
	if (slug[n - 1] == '-')
		return hr_fail(err, HR_ERR_INVALID, field, "%s must not end with '-'", field);
	return true;
}

static void derive(const char *prefix, const char *slug, char *out, size_t len)
{
	snprintf(out, len, "%s%s", prefix, slug);
	for (char *p = out; *p; p++)
		if (*p == '-')
			*p = '_';
}

bool hr_agency_create(PGconn *c, const char *slug, const char *name, int64_t *id, hr_err *err)
{
	if (!hr_slug_valid(slug, "slug", err))
		return false;
	const char *p[] = {slug, name && *name ? name : slug};
	PGresult *r;
	if (!hr_db_query(c, "INSERT INTO herald.agencies (slug, name) VALUES ($1, $2) RETURNING id", 2,
			 p, &r, err)) {
		if (err && err->kind == HR_ERR_CONFLICT)
			hr_fail(err, HR_ERR_CONFLICT, "slug", "agency '%s' already exists", slug);
		return false;
	}
	if (id)
		*id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return true;
}

static const char tenant_cols[] =
	"SELECT t.id, t.agency_id, t.slug, a.slug, t.schema_name, t.role_name, t.status, s.name, "
	"t.schema_version FROM herald.tenants t JOIN herald.agencies a ON a.id = t.agency_id "
	"JOIN herald.db_servers s ON s.id = t.db_server_id ";

static void tenant_from_row(PGresult *r, int row, hr_tenant *t)
{
	memset(t, 0, sizeof *t);
	t->id = strtoll(PQgetvalue(r, row, 0), NULL, 10);
	t->agency_id = strtoll(PQgetvalue(r, row, 1), NULL, 10);
	snprintf(t->slug, sizeof t->slug, "%s", PQgetvalue(r, row, 2));
	snprintf(t->agency_slug, sizeof t->agency_slug, "%s", PQgetvalue(r, row, 3));
	snprintf(t->schema, sizeof t->schema, "%s", PQgetvalue(r, row, 4));
	snprintf(t->role, sizeof t->role, "%s", PQgetvalue(r, row, 5));
	snprintf(t->status, sizeof t->status, "%s", PQgetvalue(r, row, 6));
	snprintf(t->dsn_server, sizeof t->dsn_server, "%s", PQgetvalue(r, row, 7));
	t->schema_version = atoi(PQgetvalue(r, row, 8));
}

bool hr_tenant_get(PGconn *c, const char *slug, hr_tenant *out, hr_err *err)
{
	if (!hr_slug_valid(slug, "tenant", err))
		return false;
	char *sql = hr_sprintf("%s WHERE t.slug = $1", tenant_cols);
	PGresult *r;
	const char *p[] = {slug};
	bool ok = hr_db_query(c, sql, 1, p, &r, err);
	hr_free(sql);
	if (!ok)
		return false;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return hr_fail(err, HR_ERR_NOTFOUND, "tenant", "no tenant '%s'", slug);
	}
	tenant_from_row(r, 0, out);
	PQclear(r);
	return true;
}

bool hr_tenant_create(PGconn *c, const hr_migration_set *set, const char *agency_slug,
		      const char *slug, const char *name, hr_tenant *out, hr_err *err)
{
	if (!hr_slug_valid(agency_slug, "agency", err) || !hr_slug_valid(slug, "slug", err))
		return false;
	char schema[64], role[64], ver[16];
	derive("t_", slug, schema, sizeof schema);
	derive("herald_t_", slug, role, sizeof role);
	snprintf(ver, sizeof ver, "%d", hr_migrations_latest(set->tenant, set->ntenant));
	PGresult *r;
	if (!hr_db_exec(c, "BEGIN", err))
		return false;
	const char *pa[] = {agency_slug};
	if (!hr_db_query(c, "SELECT id FROM herald.agencies WHERE slug = $1 FOR SHARE", 1, pa, &r, err))
		goto fail;
	if (PQntuples(r) == 0) {
		PQclear(r);
		hr_fail(err, HR_ERR_NOTFOUND, "agency", "no agency '%s'", agency_slug);
		goto fail;
	}
	const char *agency_id = PQgetvalue(r, 0, 0);
	const char *p[] = {agency_id, slug, name && *name ? name : slug, schema, role, ver};
	PGresult *ins;
	bool ok = hr_db_query(c,
			      "INSERT INTO herald.tenants (agency_id, slug, name, schema_name, role_name, "
			      "schema_version) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			      6, p, &ins, err);
	PQclear(r);
	if (!ok) {
		if (err && err->kind == HR_ERR_CONFLICT)
			hr_fail(err, HR_ERR_CONFLICT, "slug", "tenant '%s' already exists", slug);
		goto fail;
	}
	PQclear(ins);
	if (!hr_migrate_new_schema(c, set, schema, role, err)) {
		/* A role or schema of that name left over outside herald.tenants. */
		if (err && strstr(err->msg, "already exists"))
			hr_fail(err, HR_ERR_CONFLICT, "slug",
				"cannot create tenant '%s': schema %s or role %s already exists in the database",
				slug, schema, role);
		goto fail;
	}
	if (!hr_db_commit(c, err))
		goto fail;
	return out ? hr_tenant_get(c, slug, out, err) : true;
fail:
	hr_db_rollback(c);
	return false;
}

bool hr_tenant_set_status(PGconn *c, const char *slug, const char *status, hr_err *err)
{
	if (!hr_slug_valid(slug, "tenant", err))
		return false;
	if (strcmp(status, "active") && strcmp(status, "suspended"))
		return hr_fail(err, HR_ERR_INVALID, "status", "status must be active or suspended, not '%s'",
			       status);
	const char *p[] = {slug, status};
	PGresult *r;
	if (!hr_db_query(c,
			 "UPDATE herald.tenants SET status = $2, updated_at = now() WHERE slug = $1 "
			 "RETURNING id",
			 2, p, &r, err))
		return false;
	int n = PQntuples(r);
	PQclear(r);
	if (n == 0)
		return hr_fail(err, HR_ERR_NOTFOUND, "tenant", "no tenant '%s'", slug);
	return true;
}

static bool scope_valid(const char *scope, bool agency_key, hr_err *err)
{
	if (agency_key) {
		if (strcmp(scope, "agency") != 0)
			return hr_fail(err, HR_ERR_INVALID, "scope",
				       "a key without a tenant is an agency key: its scope must be 'agency'");
		return true;
	}
	if (strcmp(scope, "full") && strcmp(scope, "send") && strcmp(scope, "read"))
		return hr_fail(err, HR_ERR_INVALID, "scope",
			       "a tenant key's scope must be full, send or read, not '%s'", scope);
	return true;
}

bool hr_apikey_create(PGconn *c, const char *agency_slug, const char *tenant_slug,
		      const char *scope, const char *name, char key_out[HR_KEY_LEN_TOTAL + 1],
		      char key_id_out[HR_KEY_ID_LEN + 1], hr_err *err)
{
	if (!hr_slug_valid(agency_slug, "agency", err))
		return false;
	if (tenant_slug && !hr_slug_valid(tenant_slug, "tenant", err))
		return false;
	if (!scope_valid(scope, tenant_slug == NULL, err))
		return false;
	PGresult *r;
	const char *pa[] = {agency_slug};
	if (!hr_db_query(c, "SELECT id FROM herald.agencies WHERE slug = $1", 1, pa, &r, err))
		return false;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return hr_fail(err, HR_ERR_NOTFOUND, "agency", "no agency '%s'", agency_slug);
	}
	char agency_id[32], tenant_id[32] = "";
	snprintf(agency_id, sizeof agency_id, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	if (tenant_slug) {
		const char *pt[] = {tenant_slug, agency_id};
		if (!hr_db_query(c, "SELECT id FROM herald.tenants WHERE slug = $1 AND agency_id = $2", 2,
				 pt, &r, err))
			return false;
		if (PQntuples(r) == 0) {
			PQclear(r);
			return hr_fail(err, HR_ERR_NOTFOUND, "tenant", "agency '%s' has no tenant '%s'",
				       agency_slug, tenant_slug);
		}
		snprintf(tenant_id, sizeof tenant_id, "%s", PQgetvalue(r, 0, 0));
		PQclear(r);
	}
	char id[HR_KEY_ID_LEN + 1], secret[HR_KEY_SECRET_LEN + 1], hash[65];
	hr_random_token(id, HR_KEY_ID_LEN);
	hr_random_token(secret, HR_KEY_SECRET_LEN);
	snprintf(key_out, HR_KEY_LEN_TOTAL + 1, "hk_%s_%s", id, secret);
	hr_sha256_hex(key_out, strlen(key_out), hash);
	const char *p[] = {id, hash, agency_id, tenant_slug ? tenant_id : NULL, scope, name ? name : ""};
	if (!hr_db_query(c,
			 "INSERT INTO herald.api_keys (key_id, secret_hash, agency_id, tenant_id, scope, name) "
			 "VALUES ($1, $2, $3, $4, $5, $6)",
			 6, p, NULL, err))
		return false;
	snprintf(key_id_out, HR_KEY_ID_LEN + 1, "%s", id);
	return true;
}

bool hr_apikey_revoke(PGconn *c, const char *key_id, hr_err *err)
{
	const char *p[] = {key_id};
	PGresult *r;
	if (!hr_db_query(c,
			 "UPDATE herald.api_keys SET revoked_at = coalesce(revoked_at, now()) "
			 "WHERE key_id = $1 RETURNING id",
			 1, p, &r, err))
		return false;
	int n = PQntuples(r);
	PQclear(r);
	if (n == 0)
		return hr_fail(err, HR_ERR_NOTFOUND, "key_id", "no API key with id '%s'", key_id);
	return true;
}

static bool denied(hr_err *err)
{
	return hr_fail(err, HR_ERR_NOTFOUND, "Authorization", "invalid, revoked or suspended API key");
}

bool hr_apikey_verify(PGconn *c, const char *key, hr_principal *out, hr_err *err)
{
	size_t n = key ? strlen(key) : 0;
	if (n != HR_KEY_LEN_TOTAL || strncmp(key, "hk_", 3) != 0 || key[3 + HR_KEY_ID_LEN] != '_')
		return denied(err);
	char id[HR_KEY_ID_LEN + 1], hash[65];
	memcpy(id, key + 3, HR_KEY_ID_LEN);
	id[HR_KEY_ID_LEN] = '\0';
	hr_sha256_hex(key, n, hash);
	const char *p[] = {id};
	PGresult *r;
	if (!hr_db_query(c,
			 "SELECT k.id, k.secret_hash, k.scope, k.agency_id, a.slug, k.tenant_id, "
			 "k.revoked_at IS NULL AND a.status = 'active' "
			 "FROM herald.api_keys k JOIN herald.agencies a ON a.id = k.agency_id "
			 "WHERE k.key_id = $1",
			 1, p, &r, err))
		return false;
	bool ok = PQntuples(r) == 1 && strlen(PQgetvalue(r, 0, 1)) == 64 &&
		  hr_ct_equal(PQgetvalue(r, 0, 1), hash, 64) && strcmp(PQgetvalue(r, 0, 6), "t") == 0;
	if (!ok) {
		PQclear(r);
		return denied(err);
	}
	memset(out, 0, sizeof *out);
	out->key_pk = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	snprintf(out->key_id, sizeof out->key_id, "%s", id);
	snprintf(out->scope, sizeof out->scope, "%s", PQgetvalue(r, 0, 2));
	out->agency_id = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
	snprintf(out->agency_slug, sizeof out->agency_slug, "%s", PQgetvalue(r, 0, 4));
	char tenant_id[32] = "";
	if (!PQgetisnull(r, 0, 5))
		snprintf(tenant_id, sizeof tenant_id, "%s", PQgetvalue(r, 0, 5));
	PQclear(r);
	if (tenant_id[0]) {
		char *sql = hr_sprintf("%s WHERE t.id = $1", tenant_cols);
		const char *pt[] = {tenant_id};
		ok = hr_db_query(c, sql, 1, pt, &r, err);
		hr_free(sql);
		if (!ok)
			return false;
		ok = PQntuples(r) == 1;
		if (ok)
			tenant_from_row(r, 0, &out->tenant);
		PQclear(r);
		if (!ok || strcmp(out->tenant.status, "active") != 0)
			return denied(err);
		out->has_tenant = true;
	}
	return true;
}

bool hr_principal_tenant(PGconn *c, const hr_principal *p, const char *slug, hr_tenant *out,
			 hr_err *err)
{
	if (p->has_tenant) {
		if (slug && strcmp(slug, p->tenant.slug) != 0)
			return hr_fail(err, HR_ERR_NOTFOUND, "tenant", "no tenant '%s'", slug);
		*out = p->tenant;
		return true;
	}
	if (!slug)
		return hr_fail(err, HR_ERR_INVALID, "tenant", "an agency key must name the tenant to act on");
	hr_tenant t;
	if (!hr_tenant_get(c, slug, &t, err))
		return false;
	if (t.agency_id != p->agency_id)
		return hr_fail(err, HR_ERR_NOTFOUND, "tenant", "no tenant '%s'", slug);
	*out = t;
	return true;
}
