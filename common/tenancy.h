/*
 * tenancy.h -- agencies, tenants and API keys in the control schema.
 *
 * An agency owns tenants; a tenant is one client brand with its own Postgres
 * schema (t_<slug>) and its own NOLOGIN role (herald_t_<slug>) that has
 * rights on that schema only.  Slugs are 2-40 characters of [a-z0-9-],
 * starting with a letter and not ending with '-'; schema and role names are
 * derived from them ('-' becomes '_', which a slug cannot contain, so two
 * slugs never map to one name) and are always quoted when used in SQL.
 *
 * API keys look like  hk_<key id: 12 chars>_<secret: 32 chars>.  Only the
 * SHA-256 of the whole key is stored; verification looks the row up by key id
 * and compares hashes in constant time.  Scopes: `agency` (manage the agency's
 * tenants, act on any of them), tenant `full`, `send` and `read`.
 *
 * Every function takes a connection to the control database and returns bool
 * with detail in hr_err: HR_ERR_INVALID (bad slug, scope...), HR_ERR_NOTFOUND
 * (unknown, or not yours), HR_ERR_CONFLICT (duplicate), HR_ERR_DB.
 * Nothing is changed when a function fails.
 */
#ifndef HERALD_TENANCY_H
#define HERALD_TENANCY_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "err.h"
#include "migrate.h"

#define HR_KEY_ID_LEN 12
#define HR_KEY_SECRET_LEN 32
#define HR_KEY_LEN_TOTAL (3 + HR_KEY_ID_LEN + 1 + HR_KEY_SECRET_LEN)

typedef struct hr_tenant {
	int64_t id;
	int64_t agency_id;
	char slug[48];
	char agency_slug[48];
	char schema[64];
	char role[64];
	char status[16];
	char dsn_server[48]; /* name of the db_servers row holding the schema */
	int schema_version;
} hr_tenant;

typedef struct hr_principal {
	int64_t key_pk;
	char key_id[HR_KEY_ID_LEN + 1];
	char scope[8];     /* agency | full | send | read */
	int64_t agency_id;
	char agency_slug[48];
	bool has_tenant;   /* tenant key: tenant below is its tenant */
	hr_tenant tenant;
} hr_principal;

/* Validate a slug; `field` names it in the error (e.g. "slug", "/tenant"). */
bool hr_slug_valid(const char *slug, const char *field, hr_err *err) HR_MUST_CHECK;

bool hr_agency_create(PGconn *c, const char *slug, const char *name, int64_t *id, hr_err *err) HR_MUST_CHECK;

/*
 * Create a tenant of an agency: the control row, the role and the schema at
 * the set's latest tenant version -- all in one transaction.
 */
bool hr_tenant_create(PGconn *c, const hr_migration_set *set, const char *agency_slug,
		      const char *slug, const char *name, hr_tenant *out, hr_err *err) HR_MUST_CHECK;

bool hr_tenant_get(PGconn *c, const char *slug, hr_tenant *out, hr_err *err) HR_MUST_CHECK;

/* status: "active" or "suspended". */
bool hr_tenant_set_status(PGconn *c, const char *slug, const char *status, hr_err *err) HR_MUST_CHECK;

/*
 * Create a key.  tenant_slug NULL makes an agency key (scope must be "agency");
 * otherwise the tenant must belong to the agency.  key_out receives the whole
 * key (shown once, never stored); key_id_out its public id.
 */
bool hr_apikey_create(PGconn *c, const char *agency_slug, const char *tenant_slug,
		      const char *scope, const char *name, char key_out[HR_KEY_LEN_TOTAL + 1],
		      char key_id_out[HR_KEY_ID_LEN + 1], hr_err *err) HR_MUST_CHECK;

bool hr_apikey_revoke(PGconn *c, const char *key_id, hr_err *err) HR_MUST_CHECK;

/*
 * Authenticate a presented key.  Unknown, malformed and revoked keys, and keys
 * of a suspended agency or tenant, all fail with HR_ERR_NOTFOUND and the same
 * message, so a caller learns nothing about which.
 */
bool hr_apikey_verify(PGconn *c, const char *key, hr_principal *out, hr_err *err) HR_MUST_CHECK;

/*
 * The tenant a principal may act on: its own (tenant key; slug must be NULL
 * or its own) or, for an agency key, the named tenant of that agency.
 * Anything else is HR_ERR_NOTFOUND, as if it did not exist.
 */
bool hr_principal_tenant(PGconn *c, const hr_principal *p, const char *slug, hr_tenant *out,
			 hr_err *err) HR_MUST_CHECK;

#endif
