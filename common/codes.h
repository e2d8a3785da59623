/*
 * codes.h -- one-time codes (OTP) and promo / referral codes of a tenant.
 *
 * Used by herald-api (api/otp.c, api/codes.c) and by the scheduler's rule
 * engine, which issues codes to contacts as a rule action.  Every function
 * that touches the database runs in the caller's transaction, opened with
 * hr_db_tenant_begin() for the tenant: the caller commits or rolls back, so
 * an issue or a redemption is part of whatever else the caller does (a send,
 * a rule step) and is never half done.
 *
 * OTP: codes are CSPRNG digits; only HMAC-SHA256(otp key, "tenant:salt:code")
 * is stored, where the otp key is derived from the operator's master key
 * (hr_otp_key) and salt is random per OTP.  Four digits have only 10^4 values,
 * so a bare hash would fall to an offline search; with the keyed hash, a
 * database dump without the master key reveals nothing.  Hashes are compared
 * with hr_ct_equal.
 *
 * Pools: a pool is `promo` (codes uploaded or generated in advance, each
 * redeemable redemption_limit times, default 1) or `referral` (a personal
 * code per contact, made on issue when the pool has no free code, redeemable
 * redemption_limit times, default 3, by contacts other than its owner; each
 * redemption adds credit_amount to the owner's attribute credit_attribute).
 * A contact holds at most one code per pool: issuing again returns it.
 * Codes are upper-case [A-Z0-9_-], unique across all of a tenant's pools.
 *
 * Concurrency: issuing takes a free code with FOR UPDATE SKIP LOCKED (two
 * issuers never get the same code) under a transaction-scoped advisory lock
 * on (pool, contact) (one contact never gets two); redeeming locks the code's
 * row, so concurrent redemptions of one code are serialised and the ones
 * past the limit are refused without writing anything.
 *
 * Events are stamped with herald time (herald_clock.now(), common/clock.h), as
 * every event rules react to; OTP expiry is real time, a security bound.
 *
 * Errors: bool + hr_err as everywhere.  Refusals that callers must tell apart
 * also set an hr_code_refusal.  Thread safety: as the PGconn (one thread).
 */
#ifndef HERALD_CODES_H
#define HERALD_CODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "crypto.h"
#include "err.h"

#define HR_CODE_MAX 64          /* longest code, bytes */
#define HR_CODE_MAX_REDEMPTIONS 1000 /* redemptions are kept on the code's row */
#define HR_OTP_MIN_DIGITS 4
#define HR_OTP_MAX_DIGITS 10

/* ---- OTP primitives ---- */

/* The OTP key: HMAC-SHA256(master, "herald/otp/v1"). */
void hr_otp_key(const uint8_t master[HR_KEY_LEN], uint8_t key[HR_KEY_LEN]);
/* digits uniformly random decimal digits into out[digits + 1]. */
void hr_otp_generate(int digits, char *out);
/* Hex HMAC-SHA256(key, "<tenant_id>:<salt>:<code>") into out[65]. */
void hr_otp_hash(const uint8_t key[HR_KEY_LEN], int64_t tenant_id, const char *salt, const char *code,
		 char out[65]);

/* ---- codes ---- */

/* len characters of the unambiguous alphabet (no 0/O, 1/I/L) into out[len + 1]. */
void hr_code_random(char *out, size_t len);
/* Validate a code (1..HR_CODE_MAX of A-Z a-z 0-9 _ -) and upper-case it into out. */
bool hr_code_normalize(const char *in, char out[HR_CODE_MAX + 1], hr_err *err) HR_MUST_CHECK;

typedef struct hr_code_pool {
	int64_t id;
	char name[65];
	char kind[12];             /* promo | referral */
	int redemption_limit;      /* per code */
	char credit_attribute[65]; /* referral: the owner's attribute credited */
	int64_t credit_amount;
	int code_length;           /* generated codes, prefix excluded */
	char prefix[17];           /* generated codes start with it */
} hr_code_pool;

/* A pool by id (name NULL) or by name (id 0); HR_ERR_NOTFOUND when missing. */
bool hr_code_pool_get(PGconn *c, int64_t id, const char *name, hr_code_pool *out, hr_err *err) HR_MUST_CHECK;

/* Add n new unique random codes to the pool (retrying the rare collisions). */
bool hr_codes_generate(PGconn *c, const hr_code_pool *p, int n, hr_err *err) HR_MUST_CHECK;

typedef enum hr_code_refusal {
	HR_CODE_OK = 0,
	HR_CODE_UNKNOWN,          /* no such code */
	HR_CODE_POOL_EMPTY,       /* promo pool without a free code */
	HR_CODE_OWN,              /* a referrer redeeming their own code */
	HR_CODE_ALREADY_REDEEMED, /* this contact redeemed this code before */
	HR_CODE_EXHAUSTED,        /* the code reached its redemption limit */
} hr_code_refusal;

typedef struct hr_code {
	int64_t id;
	int64_t pool_id;
	int64_t contact_id;
	char code[HR_CODE_MAX + 1];
	int max_redemptions;
	int redeemed;
	bool issued_now; /* false: the contact already held it */
} hr_code;

/*
 * Issue a code of the pool to a contact (an existing, unmerged contact id):
 * the one it holds, else a free one, else (referral pools) a new one.  Emits
 * the event `code_issued` when a code is newly issued.  An empty promo pool
 * fails with HR_ERR_CONFLICT and *why = HR_CODE_POOL_EMPTY.
 */
bool hr_code_issue(PGconn *c, const hr_code_pool *p, int64_t contact_id, hr_code *out, hr_code_refusal *why,
		   hr_err *err) HR_MUST_CHECK;

typedef struct hr_redemption {
	int64_t code_id;
	int64_t pool_id;
	char pool[65];
	char kind[12];
	int redeemed;              /* redemptions of the code, this one included */
	int max_redemptions;
	int64_t referrer_id;       /* referral: the credited owner (after merges); 0 = none */
	char credit_attribute[65];
	char credits[40];          /* referral: the owner's new balance, as JSON number text */
} hr_redemption;

/*
 * Redeem a code (normalised) for a contact (an existing, unmerged contact id).
 * Records the redemption on the code, emits `code_redeemed` for the contact
 * and, for referral codes, credits the owner and emits `referral_credited`
 * for them.  Refusals (HR_ERR_NOTFOUND / HR_ERR_INVALID / HR_ERR_CONFLICT with
 * *why set) write nothing.
 */
bool hr_code_redeem(PGconn *c, const char *code, int64_t contact_id, hr_redemption *out, hr_code_refusal *why,
		    hr_err *err) HR_MUST_CHECK;

#endif
