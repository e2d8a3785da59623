/*
 * faults.h -- provsim's fault injection: what each provider account does
 * wrong, and the per-request verdict.
 *
 * Each account either has its own configuration or follows the default
 * ("account=*").  A configuration is an immutable ps_fault_cfg; a change
 * (command line --fault, or POST /v1/control/faults at run time) builds a new
 * one -- a copy of the account's current configuration (or of the default,
 * for an account that had none) with the given fields replaced -- and
 * publishes it with one atomic pointer store.  Request threads therefore read
 * a consistent configuration without locks.  Old configurations are kept
 * until ps_faults_free(), because a request may still hold one; changes are
 * rare control operations, so that list stays small.
 *
 * Spec syntax (command line): comma-separated key=value, e.g.
 *   account=*,latency_ms=5,p429=0.1,retry_after=1,p500=0.05,ptimeout=0.01,
 *   rate_429_above=300,token=s3cret,dlr_url=http://127.0.0.1:9/dlr,fail_to=+1555000
 * The JSON control body has the same keys (numbers as numbers, strings as
 * strings; "token", "dlr_url" and "fail_to" accept null or "" to clear).
 *
 * Randomness: one draw per request from a counter-based generator
 * (splitmix64 of seed + a global request counter), so a fixed --seed and a
 * sequential client reproduce the same verdicts, and concurrent threads
 * share no lock -- only one atomic add.
 *
 * Errors: parse functions return false with a message in the caller's buffer
 * and change nothing.  Thread safety: all functions are thread-safe except
 * ps_faults_free().
 */
#ifndef HERALD_PROVSIM_FAULTS_H
#define HERALD_PROVSIM_FAULTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

#define PS_WUR __attribute__((warn_unused_result))

typedef struct ps_fault_cfg {
	uint32_t latency_ms;     /* added before every answer, 0 = none */
	double p429;             /* probability of a random 429 */
	uint32_t retry_after;    /* Retry-After seconds sent with a random 429 */
	double p500;             /* probability of a 500 */
	double p503;             /* probability of a 503 */
	double ptimeout;         /* probability of never answering */
	uint32_t hold_ms;        /* how long a "timeout" is held before the socket closes */
	uint32_t rate_429_above; /* accepted requests per second per account, 0 = no ceiling */
	char *token;             /* required bearer token, NULL = no auth */
	char *dlr_url;           /* delivery receipt target, NULL = none */
	char *fail_to;           /* recipients with this prefix get "undelivered" DLRs */
} ps_fault_cfg;

enum ps_verdict {
	PS_OK,        /* accept */
	PS_RATE_429,  /* over the account's rate ceiling */
	PS_RAND_429,  /* random 429 */
	PS_RAND_500,
	PS_RAND_503,
	PS_TIMEOUT,   /* hold the request, never answer */
};

typedef struct ps_faults ps_faults;

ps_faults *ps_faults_new(uint64_t seed);
void ps_faults_free(ps_faults *f);

/* Applies one command-line spec to the default or to an account. */
bool ps_faults_apply_spec(ps_faults *f, ps_registry *accounts, const char *spec,
			  char *err, size_t errlen) PS_WUR;

/* Applies one JSON object (control endpoint); its "account" names the target. */
bool ps_faults_apply_json(ps_faults *f, ps_registry *accounts, json_t *obj,
			  char *err, size_t errlen) PS_WUR;

/* The configuration in force for an account entry. */
const ps_fault_cfg *ps_faults_for(ps_faults *f, const ps_entry *account);

/* The verdict for one complete request on `account` at wall-clock second now_sec. */
enum ps_verdict ps_faults_decide(ps_faults *f, const ps_fault_cfg *cfg, ps_entry *account,
				 uint64_t now_sec);

/* {"default":{...},"accounts":{"name":{...}}}; tokens are masked.  Caller decrefs. */
json_t *ps_faults_json(ps_faults *f, ps_registry *accounts);

#endif
