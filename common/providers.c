/*
 * providers.c -- see providers.h.
 */
#include "providers.h"
#include "track.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "alloc.h"
#include "db.h"
#include "pgembed.h"
#include "tenancy.h"

static bool read_key_file(const char *path, uint8_t key[HR_KEY_LEN], hr_err *err)
{
	char buf[128];
	FILE *f = fopen(path, "r");
	if (!f)
		return hr_fail(err, HR_ERR_IO, "master_key_file", "cannot read master key file %s: %s", path,
			       strerror(errno));
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (!hr_key_from_hex(buf, key, err)) {
		char msg[sizeof err->msg];
		snprintf(msg, sizeof msg, "%s", err->msg);
		return hr_fail(err, HR_ERR_INVALID, "master_key_file", "%s: %s", path, msg);
	}
	return true;
}

bool hr_master_key_load(const hr_config *cfg, uint8_t key[HR_KEY_LEN], hr_err *err)
{
	const char *hex = hr_config_str(cfg, "master_key");
	if (hex)
		return hr_key_from_hex(hex, key, err);
	const char *file = hr_config_str(cfg, "master_key_file");
	if (file)
		return read_key_file(file, key, err);
	if (hr_config_str(cfg, "database_url"))
		return hr_fail(err, HR_ERR_INVALID, "master_key",
			       "no master key: with database_url set, give master_key or "
			       "master_key_file (herald never invents a key for an external database)");
	/* The embedded stack: data_dir/master.key, created on first use. */
	char *dir = hr_config_str(cfg, "data_dir") ? hr_strdup(hr_config_str(cfg, "data_dir"))
						   : hr_pgembed_default_dir();
	char *path = hr_sprintf("%s/master.key", dir);
	hr_free(dir);
	bool ok;
	if (access(path, F_OK) == 0) {
		ok = read_key_file(path, key, err);
	} else {
		hr_random_bytes(key, HR_KEY_LEN);
		char hexbuf[2 * HR_KEY_LEN + 2];
		for (int i = 0; i < HR_KEY_LEN; i++)
			snprintf(hexbuf + 2 * i, 3, "%02x", key[i]);
		hexbuf[2 * HR_KEY_LEN] = '\n';
		hexbuf[2 * HR_KEY_LEN + 1] = '\0';
		/* O_EXCL: two processes racing to create it must not both win. */
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd < 0 && errno == EEXIST) {
			ok = read_key_file(path, key, err);
		} else if (fd < 0) {
			ok = hr_fail(err, HR_ERR_IO, "master_key_file", "cannot create %s: %s", path,
				     strerror(errno));
		} else {
			ok = write(fd, hexbuf, strlen(hexbuf)) == (ssize_t)strlen(hexbuf) && fsync(fd) == 0;
			close(fd);
			if (!ok)
				hr_fail(err, HR_ERR_IO, "master_key_file", "cannot write %s", path);
		}
	}
	hr_free(path);
	return ok;
}

static bool json_object_text(const char *text, const char *field, json_t **out, hr_err *err)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	if (!j)
		return hr_fail(err, HR_ERR_INVALID, field, "%s is not valid JSON: %s at line %d column %d",
			       field, je.text, je.line, je.column);
	if (!json_is_object(j)) {
		json_decref(j);
		return hr_fail(err, HR_ERR_INVALID, field, "%s must be a JSON object", field);
	}
	*out = j;
	return true;
}

static bool one_of(const char *v, const char *const *set)
{
	for (; *set; set++)
		if (v && strcmp(v, *set) == 0)
			return true;
	return false;
}

static char *aad_for(int64_t tenant_id, const char *name)
{
	return hr_sprintf("tenant:%lld/account:%s", (long long)tenant_id, name);
}

bool hr_provider_put(PGconn *c, const uint8_t key[HR_KEY_LEN], const char *tenant_slug,
		     const hr_provider_spec *s, hr_err *err)
{
	static const char *const channels[] = {"email", "sms", "messenger", "push", "webhook", NULL};
	static const char *const transports[] = {"smtp", "http", "sink", NULL};
	if (!hr_slug_valid(s->name, "name", err))
		return false;
	if (!one_of(s->channel, channels))
		return hr_fail(err, HR_ERR_INVALID, "channel",
			       "channel must be email, sms, messenger, push or webhook");
	if (!one_of(s->transport, transports))
		return hr_fail(err, HR_ERR_INVALID, "transport", "transport must be smtp, http or sink");
	if (strcmp(s->transport, "smtp") == 0 && strcmp(s->channel, "email") != 0)
		return hr_fail(err, HR_ERR_INVALID, "transport", "smtp serves the email channel only");
	if (s->rate_per_s < 0)
		return hr_fail(err, HR_ERR_INVALID, "rate_per_s", "rate_per_s must be 0 (none) or positive");
	json_t *cfg = NULL, *sec = NULL;
	if (!json_object_text(s->config ? s->config : "{}", "config", &cfg, err))
		return false;
	/* Cost of the channel cascade (docs/cascade.md): a price per message sent, with its currency. */
	json_t *price = json_object_get(cfg, "price"), *cur = json_object_get(cfg, "currency");
	if (price || cur) {
		const char *c3 = json_string_value(cur);
		bool cur_ok = c3 && strlen(c3) == 3 && c3[0] >= 'A' && c3[0] <= 'Z' && c3[1] >= 'A' && c3[1] <= 'Z' &&
			      c3[2] >= 'A' && c3[2] <= 'Z';
		if (!json_is_number(price) || json_number_value(price) < 0 || json_number_value(price) > 1000000) {
			json_decref(cfg);
			return hr_fail(err, HR_ERR_INVALID, "config", "config.price must be a number from 0 to 1000000 (per message)");
		}
		if (!cur_ok) {
			json_decref(cfg);
			return hr_fail(err, HR_ERR_INVALID, "config", "config.currency must be an ISO 4217 code such as \"EUR\"");
		}
	}
	if (s->secret && !json_object_text(s->secret, "secret", &sec, err)) {
		json_decref(cfg);
		return false;
	}
	hr_tenant t;
	bool ok = hr_tenant_get(c, tenant_slug, &t, err);
	if (ok) {
		/* 15 digits: a price of 0.05 is stored as 0.05, not 0.050000000000000003 */
		char *cfgtext = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
		char tid[32], rate[16];
		snprintf(tid, sizeof tid, "%lld", (long long)t.id);
		snprintf(rate, sizeof rate, "%d", s->rate_per_s);
		char *sealed_hex = NULL;
		if (sec) {
			char *sectext = json_dumps(sec, JSON_COMPACT);
			char *aad = aad_for(t.id, s->name);
			uint8_t *sealed;
			size_t len;
			hr_seal(key, aad, sectext, strlen(sectext), &sealed, &len);
			sealed_hex = hr_malloc(2 * len + 3);
			memcpy(sealed_hex, "\\x", 2);
			for (size_t i = 0; i < len; i++)
				snprintf(sealed_hex + 2 + 2 * i, 3, "%02x", sealed[i]);
			hr_free(sealed);
			hr_free(aad);
			/* The plaintext secret must not linger in freed memory. */
			memset(sectext, 0, strlen(sectext));
			free(sectext);
		}
		const char *p[] = {tid, s->name, s->channel, s->transport, cfgtext, sealed_hex,
				   s->rate_per_s ? rate : NULL};
		ok = hr_db_query(c,
				 "INSERT INTO herald.provider_accounts (tenant_id, name, channel, transport, "
				 "config, secret_sealed, rate_per_s) VALUES ($1, $2, $3, $4, $5, $6, $7) "
				 "ON CONFLICT (tenant_id, name) DO UPDATE SET channel = excluded.channel, "
				 "transport = excluded.transport, config = excluded.config, "
				 "secret_sealed = coalesce(excluded.secret_sealed, provider_accounts.secret_sealed), "
				 "rate_per_s = excluded.rate_per_s, updated_at = now()",
				 7, p, NULL, err);
		free(cfgtext);
		hr_free(sealed_hex);
	}
	json_decref(cfg);
	json_decref(sec);
	return ok;
}

bool hr_provider_resolve(PGconn *c, const uint8_t key[HR_KEY_LEN], int64_t tenant_id,
			 const char *name, bool mask_secrets, char **json, hr_err *err)
{
	char tid[32];
	snprintf(tid, sizeof tid, "%lld", (long long)tenant_id);
	const char *p[] = {tid, name};
	PGresult *r;
	/* Binary result for the bytea column. */
	r = PQexecParams(c,
			 "SELECT a.channel, a.transport, a.config::text, a.secret_sealed, coalesce(a.rate_per_s, 0), "
			 "coalesce(t.settings->>'track_opens', 'true'), coalesce(t.settings->>'track_clicks', 'true') "
			 "FROM herald.provider_accounts a JOIN herald.tenants t ON t.id = a.tenant_id "
			 "WHERE a.tenant_id = $1 AND a.name = $2",
			 2, NULL, p, NULL, NULL, 1);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		hr_db_fail(c, r, "provider account lookup", err);
		PQclear(r);
		return false;
	}
	if (PQntuples(r) == 0) {
		PQclear(r);
		return hr_fail(err, HR_ERR_NOTFOUND, "provider", "no provider account '%s'", name);
	}
	json_t *obj = NULL;
	char *cfg = hr_strndup(PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2));
	bool ok = json_object_text(cfg, "config", &obj, err);
	hr_free(cfg);
	if (ok && !PQgetisnull(r, 0, 3)) {
		char *aad = aad_for(tenant_id, name), *plain = NULL;
		size_t plen = 0;
		ok = hr_open(key, aad, (const uint8_t *)PQgetvalue(r, 0, 3), (size_t)PQgetlength(r, 0, 3),
			     &plain, &plen, err);
		hr_free(aad);
		json_t *sec = NULL;
		if (ok)
			ok = json_object_text(plain, "secret", &sec, err);
		if (ok) {
			const char *k;
			json_t *v;
			json_object_foreach(sec, k, v)
				json_object_set_new(obj, k, mask_secrets ? json_string("********") : json_incref(v));
			json_decref(sec);
		}
		if (plain) {
			memset(plain, 0, plen);
			hr_free(plain);
		}
	}
	if (ok) {
		json_object_set_new(obj, "name", json_string(name));
		/* binary results: channel/transport are text bytes, rate is int4 big-endian */
		json_object_set_new(obj, "channel",
				    json_stringn(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0)));
		json_object_set_new(obj, "transport",
				    json_stringn(PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1)));
		const unsigned char *rb = (const unsigned char *)PQgetvalue(r, 0, 4);
		int32_t rate = (int32_t)((uint32_t)rb[0] << 24 | (uint32_t)rb[1] << 16 | (uint32_t)rb[2] << 8 | rb[3]);
		json_object_set_new(obj, "rate_per_s", json_integer(rate));
		/* Email accounts carry the tenant's tracking key (workers/tracking.h): it signs only this
		 * tenant's tracking tokens, and the worker never needs the master key. */
		if (PQgetlength(r, 0, 0) == 5 && !memcmp(PQgetvalue(r, 0, 0), "email", 5)) {
			uint8_t tk[HR_KEY_LEN];
			char hex[2 * HR_KEY_LEN + 1];
			hr_track_tenant_key(key, (uint32_t)tenant_id, tk);
			for (int i = 0; i < HR_KEY_LEN; i++)
				snprintf(hex + 2 * i, 3, "%02x", tk[i]);
			memset(tk, 0, sizeof tk);
			json_object_set_new(obj, "tracking",
					    json_pack("{s:s, s:b, s:b}", "key", mask_secrets ? "********" : hex, "opens",
						      PQgetlength(r, 0, 5) == 4 && !memcmp(PQgetvalue(r, 0, 5), "true", 4),
						      "clicks",
						      PQgetlength(r, 0, 6) == 4 && !memcmp(PQgetvalue(r, 0, 6), "true", 4)));
			memset(hex, 0, sizeof hex);
		}
		char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
		*json = hr_strdup(text);
		memset(text, 0, strlen(text));
		free(text);
	}
	json_decref(obj);
	PQclear(r);
	return ok;
}
