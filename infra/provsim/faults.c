/*
 * faults.c -- see faults.h.
 *
 * A patch records which fields a spec or JSON object sets; applying it to a
 * base configuration yields the new configuration.  Both input syntaxes fill
 * the same patch through one field table, so they cannot drift apart.
 */
#include "faults.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define DEFAULT_HOLD_MS 60000

struct retired {
	struct retired *next;
	ps_fault_cfg *cfg;
};

struct ps_faults {
	_Atomic(const ps_fault_cfg *) dflt; /* default for accounts without their own */
	_Atomic uint64_t draws;             /* request counter feeding the generator */
	uint64_t seed;
	pthread_mutex_t mu;                 /* serialises changes; guards `all` */
	struct retired *all;                /* every configuration ever published */
};

enum ftype { F_MS, F_PROB, F_UINT, F_STR };

static const struct field {
	const char *name;
	enum ftype type;
	size_t off;
} fields[] = {
	{"latency_ms", F_MS, offsetof(ps_fault_cfg, latency_ms)},
	{"p429", F_PROB, offsetof(ps_fault_cfg, p429)},
	{"retry_after", F_UINT, offsetof(ps_fault_cfg, retry_after)},
	{"p500", F_PROB, offsetof(ps_fault_cfg, p500)},
	{"p503", F_PROB, offsetof(ps_fault_cfg, p503)},
	{"ptimeout", F_PROB, offsetof(ps_fault_cfg, ptimeout)},
	{"hold_ms", F_MS, offsetof(ps_fault_cfg, hold_ms)},
	{"rate_429_above", F_UINT, offsetof(ps_fault_cfg, rate_429_above)},
	{"token", F_STR, offsetof(ps_fault_cfg, token)},
	{"dlr_url", F_STR, offsetof(ps_fault_cfg, dlr_url)},
	{"fail_to", F_STR, offsetof(ps_fault_cfg, fail_to)},
};
#define NFIELDS (sizeof fields / sizeof fields[0])

struct patch {
	char account[129];    /* "*" = the default */
	bool set[NFIELDS];
	double num[NFIELDS];  /* numeric values */
	char *str[NFIELDS];   /* string values (heap), NULL = clear */
};

static void patch_free(struct patch *p)
{
	for (size_t i = 0; i < NFIELDS; i++)
		hr_free(p->str[i]);
}

static int field_index(const char *name, size_t len)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strlen(fields[i].name) == len && memcmp(fields[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

static bool check_num(int i, double v, char *err, size_t errlen)
{
	double max = fields[i].type == F_PROB ? 1.0 : fields[i].type == F_MS ? 3600000.0 : 16000000.0;
	if (!isfinite(v) || v < 0 || v > max || (fields[i].type != F_PROB && v != floor(v))) {
		snprintf(err, errlen, "%s: want %s in [0, %.0f]", fields[i].name,
			 fields[i].type == F_PROB ? "a probability" : "an integer", max);
		return false;
	}
	return true;
}

static bool set_account(struct patch *p, const char *v, size_t len, char *err, size_t errlen)
{
	if (len == 0 || len >= sizeof p->account || memchr(v, '/', len)) {
		snprintf(err, errlen, "account: want 1..128 characters without '/'");
		return false;
	}
	memcpy(p->account, v, len);
	p->account[len] = '\0';
	return true;
}

static bool patch_from_spec(const char *spec, struct patch *p, char *err, size_t errlen)
{
	strcpy(p->account, "*");
	const char *s = spec;
	while (*s) {
		const char *end = strchr(s, ',');
		size_t n = end ? (size_t)(end - s) : strlen(s);
		const char *eq = memchr(s, '=', n);
		if (!eq) {
			snprintf(err, errlen, "'%.*s': want key=value", (int)n, s);
			goto fail;
		}
		size_t klen = (size_t)(eq - s), vlen = n - klen - 1;
		const char *v = eq + 1;
		if (klen == 7 && memcmp(s, "account", 7) == 0) {
			if (!set_account(p, v, vlen, err, errlen))
				goto fail;
		} else {
			int i = field_index(s, klen);
			if (i < 0) {
				snprintf(err, errlen, "unknown key '%.*s'", (int)klen, s);
				goto fail;
			}
			p->set[i] = true;
			if (fields[i].type == F_STR) {
				hr_free(p->str[i]);
				p->str[i] = vlen ? hr_strndup(v, vlen) : NULL;
			} else {
				char buf[64], *ep;
				if (vlen == 0 || vlen >= sizeof buf) {
					snprintf(err, errlen, "%s: empty or too long", fields[i].name);
					goto fail;
				}
				memcpy(buf, v, vlen);
				buf[vlen] = '\0';
				errno = 0;
				double d = strtod(buf, &ep);
				if (errno || *ep) {
					snprintf(err, errlen, "%s: '%s' is not a number", fields[i].name, buf);
					goto fail;
				}
				if (!check_num(i, d, err, errlen))
					goto fail;
				p->num[i] = d;
			}
		}
		s += n;
		if (*s == ',')
			s++;
	}
	return true;
fail:
	return false;
}

static bool patch_from_json(json_t *obj, struct patch *p, char *err, size_t errlen)
{
	strcpy(p->account, "*");
	if (!json_is_object(obj)) {
		snprintf(err, errlen, "body: want a JSON object");
		goto fail;
	}
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "account") == 0) {
			if (!json_is_string(v)) {
				snprintf(err, errlen, "account: want a string");
				goto fail;
			}
			if (!set_account(p, json_string_value(v), json_string_length(v), err, errlen))
				goto fail;
			continue;
		}
		int i = field_index(key, strlen(key));
		if (i < 0) {
			snprintf(err, errlen, "unknown field '%s'", key);
			goto fail;
		}
		p->set[i] = true;
		if (fields[i].type == F_STR) {
			if (json_is_null(v)) {
				p->str[i] = NULL;
			} else if (json_is_string(v)) {
				p->str[i] = json_string_length(v) ? hr_strdup(json_string_value(v)) : NULL;
			} else {
				snprintf(err, errlen, "%s: want a string or null", key);
				goto fail;
			}
		} else {
			if (!json_is_number(v)) {
				snprintf(err, errlen, "%s: want a number", key);
				goto fail;
			}
			if (!check_num(i, json_number_value(v), err, errlen))
				goto fail;
			p->num[i] = json_number_value(v);
		}
	}
	return true;
fail:
	return false;
}

static ps_fault_cfg *cfg_copy(const ps_fault_cfg *base)
{
	ps_fault_cfg *c = hr_calloc(1, sizeof *c);
	*c = *base;
	c->token = base->token ? hr_strdup(base->token) : NULL;
	c->dlr_url = base->dlr_url ? hr_strdup(base->dlr_url) : NULL;
	c->fail_to = base->fail_to ? hr_strdup(base->fail_to) : NULL;
	return c;
}

static void cfg_free(ps_fault_cfg *c)
{
	hr_free(c->token);
	hr_free(c->dlr_url);
	hr_free(c->fail_to);
	hr_free(c);
}

static void remember(ps_faults *f, ps_fault_cfg *c)
{
	struct retired *r = hr_malloc(sizeof *r);
	r->cfg = c;
	r->next = f->all;
	f->all = r;
}

ps_faults *ps_faults_new(uint64_t seed)
{
	ps_faults *f = hr_calloc(1, sizeof *f);
	f->seed = seed;
	pthread_mutex_init(&f->mu, NULL);
	ps_fault_cfg zero = {.retry_after = 1, .hold_ms = DEFAULT_HOLD_MS};
	ps_fault_cfg *c = cfg_copy(&zero);
	remember(f, c);
	atomic_store(&f->dflt, c);
	return f;
}

void ps_faults_free(ps_faults *f)
{
	if (!f)
		return;
	while (f->all) {
		struct retired *r = f->all;
		f->all = r->next;
		cfg_free(r->cfg);
		hr_free(r);
	}
	pthread_mutex_destroy(&f->mu);
	hr_free(f);
}

static bool apply(ps_faults *f, ps_registry *accounts, struct patch *p, char *err, size_t errlen)
{
	pthread_mutex_lock(&f->mu);
	ps_entry *acct = NULL;
	const ps_fault_cfg *base = atomic_load(&f->dflt);
	if (strcmp(p->account, "*") != 0) {
		acct = ps_registry_get(accounts, p->account, strlen(p->account));
		if (ps_entry_faults(acct))
			base = ps_entry_faults(acct);
	}
	ps_fault_cfg *c = cfg_copy(base);
	for (size_t i = 0; i < NFIELDS; i++) {
		if (!p->set[i])
			continue;
		char *at = (char *)c + fields[i].off;
		switch (fields[i].type) {
		case F_PROB:
			*(double *)at = p->num[i];
			break;
		case F_MS:
		case F_UINT:
			*(uint32_t *)at = (uint32_t)p->num[i];
			break;
		case F_STR:
			hr_free(*(char **)at);
			*(char **)at = p->str[i];
			p->str[i] = NULL; /* moved */
			break;
		}
	}
	if (c->p429 + c->p500 + c->p503 + c->ptimeout > 1.0 + 1e-9) {
		snprintf(err, errlen, "p429 + p500 + p503 + ptimeout exceeds 1");
		cfg_free(c);
		goto fail;
	}
	remember(f, c);
	if (acct)
		ps_entry_set_faults(acct, c);
	else
		atomic_store_explicit(&f->dflt, c, memory_order_release);
	pthread_mutex_unlock(&f->mu);
	return true;
fail:
	pthread_mutex_unlock(&f->mu);
	return false;
}

bool ps_faults_apply_spec(ps_faults *f, ps_registry *accounts, const char *spec,
			  char *err, size_t errlen)
{
	struct patch p = {0};
	bool ok = patch_from_spec(spec, &p, err, errlen) && apply(f, accounts, &p, err, errlen);
	patch_free(&p);
	return ok;
}

bool ps_faults_apply_json(ps_faults *f, ps_registry *accounts, json_t *obj,
			  char *err, size_t errlen)
{
	struct patch p = {0};
	bool ok = patch_from_json(obj, &p, err, errlen) && apply(f, accounts, &p, err, errlen);
	patch_free(&p);
	return ok;
}

const ps_fault_cfg *ps_faults_for(ps_faults *f, const ps_entry *account)
{
	const ps_fault_cfg *c = ps_entry_faults(account);
	return c ? c : atomic_load_explicit(&f->dflt, memory_order_acquire);
}

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

enum ps_verdict ps_faults_decide(ps_faults *f, const ps_fault_cfg *cfg, ps_entry *account,
				 uint64_t now_sec)
{
	if (cfg->rate_429_above && !ps_entry_rate_admit(account, cfg->rate_429_above, now_sec))
		return PS_RATE_429;
	if (cfg->p429 == 0 && cfg->p500 == 0 && cfg->p503 == 0 && cfg->ptimeout == 0)
		return PS_OK; /* no draw: keeps the fault-free hot path off the shared counter */
	uint64_t n = atomic_fetch_add_explicit(&f->draws, 1, memory_order_relaxed);
	double u = (double)(splitmix64(f->seed * 0x9e3779b97f4a7c15ull + n) >> 11) * 0x1p-53;
	double acc = cfg->ptimeout;
	if (u < acc)
		return PS_TIMEOUT;
	if (u < (acc += cfg->p429))
		return PS_RAND_429;
	if (u < (acc += cfg->p500))
		return PS_RAND_500;
	if (u < (acc += cfg->p503))
		return PS_RAND_503;
	return PS_OK;
}

static json_t *cfg_json(const ps_fault_cfg *c)
{
	json_t *o = json_object();
	for (size_t i = 0; i < NFIELDS; i++) {
		const char *at = (const char *)c + fields[i].off;
		json_t *v;
		switch (fields[i].type) {
		case F_PROB:
			v = json_real(*(const double *)at);
			break;
		case F_MS:
		case F_UINT:
			v = json_integer(*(const uint32_t *)at);
			break;
		default: {
			const char *s = *(char *const *)at;
			if (s && strcmp(fields[i].name, "token") == 0)
				s = "***";
			v = s ? json_string(s) : json_null();
		}
		}
		json_object_set_new(o, fields[i].name, v);
	}
	return o;
}

static void add_account(ps_entry *e, void *arg)
{
	const ps_fault_cfg *c = ps_entry_faults(e);
	if (c)
		json_object_set_new(arg, ps_entry_name(e), cfg_json(c));
}

json_t *ps_faults_json(ps_faults *f, ps_registry *accounts)
{
	json_t *o = json_object(), *acc = json_object();
	json_object_set_new(o, "default", cfg_json(atomic_load(&f->dflt)));
	ps_registry_each(accounts, add_account, acc);
	json_object_set_new(o, "accounts", acc);
	return o;
}
