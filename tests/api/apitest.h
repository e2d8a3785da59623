/*
 * apitest.h -- what herald-api's tests share: one real herald-api process
 * per test binary (started by the check parent on a fresh, migrated
 * database, port 0, its `listening port=N` line read with a deadline; it dies
 * with the parent through PR_SET_PDEATHSIG and is stopped with SIGTERM at the
 * end, which must exit 0 -- under ASan that includes "no leaks"), a fresh
 * agency + tenant + keys per test, and HTTP calls through libcurl.
 * Helpers fail the test with a check assertion instead of returning errors.
 */
#ifndef HERALD_TEST_APITEST_H
#define HERALD_TEST_APITEST_H

#include <stdbool.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "tenancy.h"

#define MASTER_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

typedef struct srv {
	int pid;
	int port;
	char log[512];
} srv;

/* Start herald-api on dsn; extra_env "K=V K=V" or NULL. */
void srv_start(srv *s, const char *dsn, const char *extra_env);
/* SIGTERM, wait; returns the exit status.  Fails the test on sanitizer reports in the log. */
int srv_stop(srv *s);

/* The suite's shared server and database (set up by api_suite_setup, an unchecked fixture). */
void api_suite_setup(void);
void api_suite_teardown(void);
extern srv the_srv;
extern char *the_dsn;

typedef struct fx {
	PGconn *c;              /* control connection */
	char agency[48];
	char agency_key[64];
	hr_tenant t;
	char full[64], send[64], read[64]; /* tenant keys */
} fx;

/* A fresh agency with an agency key and one tenant with full/send/read keys. */
void fx_open(fx *f);
void fx_close(fx *f);
/* A provider account `name` of the tenant for `channel`, on the sink transport. */
void fx_provider(fx *f, const char *name, const char *channel);

typedef struct resp {
	long status;
	char *body;
	json_t *json;         /* NULL when the body is not JSON */
	char ctype[128];
	char retry_after[16];
	char location[160];
	char allow[64];
} resp;

/*
 * One request to the_srv (or port if > 0).  key NULL = no Authorization;
 * tenant NULL = no Herald-Tenant; body NULL = none, sent as application/json
 * with body_len bytes (-1 = strlen).
 */
resp *call_at(int port, const char *method, const char *path, const char *key, const char *tenant,
	      const char *body, long body_len);
resp *call(const char *method, const char *path, const char *key, const char *tenant, const char *body);
void resp_free(resp *r);
/*
 * n requests at once: n threads released together by a barrier, request i with
 * body_fmt formatted with i (NULL = no body).  Returns the n answers (heap);
 * free with resps_free.
 */
resp **call_at_once(int port, int n, const char *method, const char *path, const char *key, const char *body_fmt);
void resps_free(resp **r, int n);
/* One extra request header ("Name: value") for the following calls, or NULL. */
extern const char *extra_header;

/* Assert a problem+json with status and (pointer != NULL) an errors[] entry with that pointer. */
void expect_problem(resp *r, long status, const char *pointer);
/* A number from SQL on the control connection; %s in fmt is replaced by the tenant schema. */
long count(fx *f, const char *fmt);

#endif
