/*
 * test_tracking.c -- herald-api's provider callbacks, tracking endpoints and
 * webhooks out, over HTTP against real PostgreSQL.
 *
 * Messages are enqueued through POST /v1/messages (no scheduler runs: they
 * stay queued, which is all a receipt or a tracking link needs).  Tracking
 * tokens are made here with common/track.c under the suite server's master
 * key, exactly as a worker makes them with the tenant key.  Webhooks are
 * received by a libmicrohttpd server inside the test, which checks nothing
 * itself: the test verifies each request's Standard Webhooks signature.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "alloc.h"
#include "apitest.h"
#include "crypto.h"
#include "db.h"
#include "harness.h"
#include "providers.h"
#include "track.h"

static uint8_t master[HR_KEY_LEN];

static void suite_setup(void)
{
	hr_err err = {0};
	if (!hr_key_from_hex(MASTER_HEX, master, &err))
		ck_abort_msg("%s", err.msg);
	the_dsn = th_fresh_db();
	hr_migrate_report rep;
	if (!hr_migrate_all(the_dsn, th_migrations(), 2, true, &rep, &err))
		ck_abort_msg("migrate: %s", err.msg);
	/* Fast retries, few attempts: the failing receiver's log fills in well under a second.
	 * Loopback receivers allowed (test_webhook_guard.c checks the default). */
	srv_start(&the_srv, the_dsn,
		  "HERALD_WEBHOOK_RETRY_BASE_MS=50 HERALD_WEBHOOK_MAX_ATTEMPTS=3 HERALD_WEBHOOK_TIMEOUT_MS=3000 "
		  "HERALD_WEBHOOK_ALLOW_PRIVATE=true"); /* the receiver is on 127.0.0.1 */
}

static long long ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void provider(fx *f, const char *name, const char *secret_json)
{
	hr_err err = {0};
	hr_provider_spec p = {.name = name, .channel = "email", .transport = "sink", .config = "{}",
			      .secret = secret_json};
	ck_assert_msg(hr_provider_put(f->c, master, f->t.slug, &p, &err), "%s", err.msg);
}

/* A contact (email ann@example.com, consent for email marketing) and a bulk email to it; its id. */
static long long send_email(fx *f, const char *account, long long *contact)
{
	resp *r = call("PUT", "/v1/contacts", f->full, NULL, "{\"email\":\"ann@example.com\"}");
	ck_assert_msg(r->status == 201 || r->status == 200, "%s", r->body);
	*contact = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	char path[64];
	snprintf(path, sizeof path, "/v1/contacts/%lld/consents", *contact);
	r = call("POST", path, f->full, NULL, "{\"channel\":\"email\",\"purpose\":\"marketing\",\"granted\":true,\"source\":\"form\"}");
	ck_assert_msg(r->status == 201 || r->status == 200, "%s", r->body);
	resp_free(r);
	char body[512];
	snprintf(body, sizeof body,
		 "{\"channel\":\"email\",\"provider\":\"%s\",\"lane\":\"bulk\",\"contact\":{\"id\":%lld},"
		 "\"content\":{\"from\":\"shop@example.com\",\"subject\":\"Hi\",\"html\":\"<a href='https://x.example/'>x</a>\"}}",
		 account, *contact);
	r = call("POST", "/v1/messages", f->full, NULL, body);
	ck_assert_msg(r->status == 202, "%s", r->body);
	long long id = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	return id;
}

/* A POST with a raw body and content type, plus one optional header. */
static resp *post_raw(const char *path, const char *ctype, const char *body, const char *header)
{
	char h1[160];
	snprintf(h1, sizeof h1, "Content-Type: %s", ctype);
	resp *r = hr_calloc(1, sizeof *r);
	CURL *h = curl_easy_init();
	char url[4096];
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", the_srv.port, path);
	struct curl_slist *hd = curl_slist_append(NULL, h1);
	if (header)
		hd = curl_slist_append(hd, header);
	FILE *mem;
	char *out = NULL;
	size_t outlen = 0;
	mem = open_memstream(&out, &outlen);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, mem);
	ck_assert_int_eq(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	char *ct = NULL;
	curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(r->ctype, sizeof r->ctype, "%s", ct ? ct : "");
	curl_slist_free_all(hd);
	curl_easy_cleanup(h);
	fclose(mem);
	r->body = hr_strdup(out ? out : "");
	free(out);
	r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	return r;
}

/* Herald-Signature for body under secret. */
static void sign(const char *secret, const char *body, char out[96])
{
	uint8_t mac[32];
	hr_hmac_sha256(secret, strlen(secret), body, strlen(body), mac);
	int n = sprintf(out, "Herald-Signature: sha256=");
	for (int i = 0; i < 32; i++)
		n += sprintf(out + n, "%02x", mac[i]);
}

static resp *callback(fx *f, const char *account, const char *body, const char *secret, const char *query)
{
	char path[256], sig[96];
	snprintf(path, sizeof path, "/v1/callbacks/%s/%s%s", f->t.slug, account, query ? query : "");
	if (secret)
		sign(secret, body, sig);
	return post_raw(path, "application/json", body, secret ? sig : NULL);
}

#define EVENTS "SELECT count(*) FROM %s.events"
#define SUPP "SELECT count(*) FROM %s.suppressions"

START_TEST(callbacks_record_receipts_and_suppress)
{
	fx f;
	fx_open(&f);
	provider(&f, "mail-main", "{\"callback_secret\":\"cb-secret-1\"}");
	provider(&f, "mail-other", "{\"callback_secret\":\"cb-secret-2\"}");
	provider(&f, "mail-nocb", NULL);
	long long contact, id = send_email(&f, "mail-main", &contact);
	char body[512];

	/* delivered, signed */
	snprintf(body, sizeof body, "{\"message_id\":%lld,\"status\":\"delivered\",\"provider_id\":\"p-1\"}", id);
	resp *r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	ck_assert_int_eq(json_integer_value(json_object_get(r->json, "recorded")), 1);
	resp_free(r);
	char path[64];
	snprintf(path, sizeof path, "/v1/messages/%lld", id);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "delivered");
	json_t *ev = json_object_get(r->json, "events");
	ck_assert_int_eq(json_array_size(ev), 1);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ev, 0), "type")), "message_delivered");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(ev, 0), "detail"), "provider_id")),
			 "p-1");
	resp_free(r);
	/* a provider's retry of the same receipt: counted, not recorded again */
	r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_int_eq(json_integer_value(json_object_get(r->json, "duplicates")), 1);
	resp_free(r);
	ck_assert_int_eq(count(&f, EVENTS), 1);

	/* errors: nothing written */
	long events = count(&f, EVENTS);
	r = callback(&f, "mail-main", body, "wrong-secret", NULL);
	expect_problem(r, 401, NULL);
	resp_free(r);
	r = callback(&f, "mail-main", body, NULL, NULL);
	expect_problem(r, 401, NULL);
	resp_free(r);
	r = callback(&f, "mail-main", body, NULL, "?key=cb-secret-2");
	expect_problem(r, 401, NULL);
	resp_free(r);
	r = callback(&f, "mail-nocb", body, "cb-secret-1", NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = callback(&f, "no-such", body, "cb-secret-1", NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = post_raw("/v1/callbacks/no-such-tenant/mail-main", "application/json", body, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	/* a message of another account, an unknown message, a bad status, a bad bounce, an unknown field */
	r = callback(&f, "mail-other", body, "cb-secret-2", NULL);
	expect_problem(r, 422, "/message_id");
	resp_free(r);
	r = callback(&f, "mail-main", "{\"message_id\":999999,\"status\":\"delivered\"}", "cb-secret-1", NULL);
	expect_problem(r, 422, "/message_id");
	resp_free(r);
	snprintf(body, sizeof body, "{\"message_id\":\"%lld\",\"status\":\"read\"}", id);
	r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	expect_problem(r, 422, "/status");
	resp_free(r);
	snprintf(body, sizeof body, "{\"message_id\":%lld,\"status\":\"bounced\",\"bounce\":\"very\"}", id);
	r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	expect_problem(r, 422, "/bounce");
	resp_free(r);
	snprintf(body, sizeof body, "{\"message_id\":%lld,\"status\":\"delivered\",\"x\":1}", id);
	r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	expect_problem(r, 422, "/x");
	resp_free(r);
	r = callback(&f, "mail-main", "{\"message_id\": ", "cb-secret-1", NULL);
	expect_problem(r, 400, "");
	resp_free(r);
	r = callback(&f, "mail-main", "{\"message_id\":\"<1.othertenant@herald>\",\"status\":\"delivered\"}", "cb-secret-1",
		     NULL);
	expect_problem(r, 422, "/message_id");
	resp_free(r);
	/* a batch is accepted or refused whole: one unknown id refuses the good one too */
	snprintf(body, sizeof body,
		 "{\"receipts\":[{\"message_id\":%lld,\"status\":\"complained\"},{\"message_id\":424242,\"status\":\"delivered\"}]}",
		 id);
	r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	expect_problem(r, 422, "/receipts/1/message_id");
	resp_free(r);
	ck_assert_int_eq(count(&f, EVENTS), events);
	ck_assert_int_eq(count(&f, SUPP), 0);

	/* a soft bounce does not suppress; a hard bounce (provsim's form, key in the URL) does */
	snprintf(body, sizeof body, "{\"message_id\":%lld,\"status\":\"bounced\",\"bounce\":\"soft\"}", id);
	r = callback(&f, "mail-main", body, "cb-secret-1", NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	ck_assert_int_eq(count(&f, SUPP), 0);
	snprintf(body, sizeof body,
		 "{\"message_id\":\"<%lld.%s@herald>\",\"status\":\"undelivered\",\"reason\":\"hard_bounce\",\"provider_id\":\"p-1\"}",
		 id, f.t.slug);
	r = callback(&f, "mail-main", body, NULL, "?key=cb-secret-1");
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.suppressions WHERE address = 'ann@example.com' "
				   "AND channel = 'email' AND reason = 'hard_bounce'"),
			 1);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "bounced");
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "events")), 3);
	resp_free(r);
	/* the suppression blocks the next send */
	r = call("POST", "/v1/messages", f.full, NULL,
		 "{\"channel\":\"email\",\"provider\":\"mail-main\",\"to\":\"ann@example.com\","
		 "\"content\":{\"from\":\"shop@example.com\",\"text\":\"x\"}}");
	expect_problem(r, 422, "/to");
	resp_free(r);
	fx_close(&f);
}
END_TEST

static char *token(fx *f, hr_track_kind kind, long long msg, long long contact, const char *url)
{
	uint8_t key[HR_KEY_LEN];
	hr_track_tenant_key(master, (uint32_t)f->t.id, key);
	hr_track_token t = {.kind = kind, .tenant_id = (uint32_t)f->t.id, .message_id = (uint64_t)msg,
			    .contact_id = (uint64_t)contact, .url = url, .url_len = url ? strlen(url) : 0};
	char *s = hr_track_encode(key, &t);
	ck_assert_ptr_nonnull(s);
	return s;
}

START_TEST(tracking_tokens_record_events_and_refuse_forgeries)
{
	fx f;
	fx_open(&f);
	provider(&f, "mail-main", NULL);
	long long contact, id = send_email(&f, "mail-main", &contact);
	char path[4096];
	/* open: a 1x1 GIF, one email_opened */
	char *tok = token(&f, HR_TRACK_OPEN, id, contact, NULL);
	snprintf(path, sizeof path, "/v1/t/open/%s", tok);
	resp *r = call("GET", path, NULL, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(r->ctype, "image/gif");
	ck_assert(strncmp(r->body, "GIF89a", 6) == 0);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'email_opened' AND contact_id IS NOT NULL "
				   "AND message_id IS NOT NULL"),
			 1);
	/* tampered: every single-character change is refused, and nothing is written */
	long events = count(&f, EVENTS);
	size_t n = strlen(tok);
	for (size_t i = 0; i < n; i++) {
		char *bad = hr_strdup(tok);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		snprintf(path, sizeof path, "/v1/t/open/%s", bad);
		r = call("GET", path, NULL, NULL, NULL);
		ck_assert_msg(r->status == 404, "position %zu: got %ld", i, r->status);
		resp_free(r);
		hr_free(bad);
	}
	/* an open token is not a click or unsubscribe token */
	snprintf(path, sizeof path, "/v1/t/click/%s", tok);
	r = call("GET", path, NULL, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	hr_free(tok);
	/* signed under another master key; a message that does not exist; garbage */
	uint8_t other[HR_KEY_LEN] = {9}, okey[HR_KEY_LEN];
	hr_track_tenant_key(other, (uint32_t)f.t.id, okey);
	hr_track_token ft = {.kind = HR_TRACK_OPEN, .tenant_id = (uint32_t)f.t.id, .message_id = (uint64_t)id};
	tok = hr_track_encode(okey, &ft);
	snprintf(path, sizeof path, "/v1/t/open/%s", tok);
	r = call("GET", path, NULL, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	hr_free(tok);
	tok = token(&f, HR_TRACK_OPEN, id + 4096 * 1000, contact, NULL);
	snprintf(path, sizeof path, "/v1/t/open/%s", tok);
	r = call("GET", path, NULL, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	hr_free(tok);
	r = call("GET", "/v1/t/open/AAAA'--", NULL, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, EVENTS), events);

	/* click: 302 to the signed URL, email_clicked with it */
	const char *url = "https://shop.example/p?a=1&b=2#top";
	tok = token(&f, HR_TRACK_CLICK, id, contact, url);
	snprintf(path, sizeof path, "/v1/t/click/%s", tok);
	r = call("GET", path, NULL, NULL, NULL);
	ck_assert_int_eq(r->status, 302);
	ck_assert_str_eq(r->location, url);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'email_clicked' "
				   "AND properties->>'url' = 'https://shop.example/p?a=1&b=2#top'"),
			 1);
	/* another URL cannot be slipped in: the URL is inside the MAC */
	hr_free(tok);
	uint8_t key[HR_KEY_LEN];
	hr_track_tenant_key(master, (uint32_t)f.t.id, key);
	hr_track_token ct = {.kind = HR_TRACK_CLICK, .tenant_id = (uint32_t)f.t.id, .message_id = (uint64_t)id,
			     .contact_id = (uint64_t)contact, .url = "https://evil.example/", .url_len = 21};
	ck_assert_ptr_null(hr_track_encode(key, &(hr_track_token){.kind = HR_TRACK_CLICK, .url = "javascript:x", .url_len = 12}));
	tok = hr_track_encode(key, &ct);
	/* splice the good token's MAC onto the evil payload */
	char *good = token(&f, HR_TRACK_CLICK, id, contact, "https://shop.example/a");
	size_t gl = strlen(good), el = strlen(tok);
	char *spliced = hr_strdup(tok);
	memcpy(spliced + el - 20, good + gl - 20, 20);
	snprintf(path, sizeof path, "/v1/t/click/%s", spliced);
	r = call("GET", path, NULL, NULL, NULL);
	expect_problem(r, 404, NULL);
	ck_assert_str_eq(r->location, "");
	resp_free(r);
	hr_free(spliced);
	hr_free(good);
	hr_free(tok);

	/* unsubscribe: GET shows a form and changes nothing */
	events = count(&f, EVENTS);
	tok = token(&f, HR_TRACK_UNSUBSCRIBE, id, contact, NULL);
	snprintf(path, sizeof path, "/v1/unsubscribe/%s", tok);
	r = call("GET", path, NULL, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_ptr_nonnull(strstr(r->body, "List-Unsubscribe"));
	ck_assert_ptr_nonnull(strstr(r->ctype, "text/html"));
	resp_free(r);
	/* a POST without the RFC 8058 body is refused */
	r = post_raw(path, "application/x-www-form-urlencoded", "List-Unsubscribe=Later", NULL);
	ck_assert_int_eq(r->status, 400);
	resp_free(r);
	ck_assert_int_eq(count(&f, EVENTS), events);
	ck_assert_int_eq(count(&f, SUPP), 0);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.consents WHERE granted"), 1);
	/* the one-click POST: consent revoked with history, address suppressed, event recorded */
	r = post_raw(path, "application/x-www-form-urlencoded", "List-Unsubscribe=One-Click", NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.consents WHERE granted"), 0);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.consent_log WHERE NOT granted AND "
				   "source = 'one_click_unsubscribe' AND channel = 'email' AND purpose = 'marketing'"),
			 1);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.suppressions WHERE reason = 'unsubscribe'"), 1);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'unsubscribed'"), 1);
	/* again: still 200, nothing new */
	r = post_raw(path, "multipart/form-data; boundary=b",
		     "--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n", NULL);
	ck_assert_msg(r->status == 200, "%s", r->body);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.consent_log WHERE source = 'one_click_unsubscribe'"), 1);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.events WHERE name = 'unsubscribed'"), 1);
	hr_free(tok);
	/* the message lists its engagement */
	snprintf(path, sizeof path, "/v1/messages/%lld", id);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "events")), 3);
	resp_free(r);
	/* a later bulk send is blocked */
	char body[256];
	snprintf(body, sizeof body,
		 "{\"channel\":\"email\",\"provider\":\"mail-main\",\"lane\":\"bulk\",\"contact\":{\"id\":%lld},"
		 "\"content\":{\"from\":\"a@b.co\",\"text\":\"x\"}}",
		 contact);
	r = call("POST", "/v1/messages", f.full, NULL, body);
	expect_problem(r, 422, "/contact");
	resp_free(r);
	fx_close(&f);
}
END_TEST


/* ---- a webhook receiver: /ok answers 200, /fail 500; every request is kept ---- */

typedef struct got {
	char path[16], id[96], ts[32], sig[128];
	char *body;
} got;

static pthread_mutex_t rx_mu = PTHREAD_MUTEX_INITIALIZER;
static got rx[64];
static int nrx;

typedef struct upl {
	char *p;
	size_t n;
} upl;

static enum MHD_Result rx_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *data, size_t *size, void **con_cls)
{
	(void)cls, (void)method, (void)version;
	upl *u = *con_cls;
	if (!u) {
		*con_cls = hr_calloc(1, sizeof(upl));
		return MHD_YES;
	}
	if (*size) {
		u->p = hr_realloc(u->p, u->n + *size + 1);
		memcpy(u->p + u->n, data, *size);
		u->n += *size;
		u->p[u->n] = '\0';
		*size = 0;
		return MHD_YES;
	}
	pthread_mutex_lock(&rx_mu);
	if (nrx < 64) {
		got *g = &rx[nrx++];
		const char *h;
		snprintf(g->path, sizeof g->path, "%s", url);
		snprintf(g->id, sizeof g->id, "%s", (h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id")) ? h : "");
		snprintf(g->ts, sizeof g->ts, "%s",
			 (h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp")) ? h : "");
		snprintf(g->sig, sizeof g->sig, "%s",
			 (h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature")) ? h : "");
		g->body = hr_strdup(u->p ? u->p : "");
	}
	pthread_mutex_unlock(&rx_mu);
	struct MHD_Response *r = MHD_create_response_from_buffer(2, "ok", MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret = MHD_queue_response(c, strcmp(url, "/ok") == 0 ? 200 : 500, r);
	MHD_destroy_response(r);
	return ret;
}

static void rx_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
	(void)cls, (void)c, (void)t;
	upl *u = *con_cls;
	if (u) {
		hr_free(u->p);
		hr_free(u);
		*con_cls = NULL;
	}
}

static int rx_count(const char *path)
{
	int n = 0;
	pthread_mutex_lock(&rx_mu);
	for (int i = 0; i < nrx; i++)
		n += strcmp(rx[i].path, path) == 0;
	pthread_mutex_unlock(&rx_mu);
	return n;
}

/* Verify a request as a Standard Webhooks receiver would, with the whsec_ secret. */
static bool signature_ok(const got *g, const char *whsec)
{
	uint8_t key[64];
	int klen = EVP_DecodeBlock(key, (const unsigned char *)whsec + 6, (int)strlen(whsec + 6));
	if (klen < 0 || strncmp(g->sig, "v1,", 3) != 0)
		return false;
	/* EVP_DecodeBlock counts padding bytes: 24 key bytes encode to 32 characters, no padding */
	char *text = hr_sprintf("%s.%s.%s", g->id, g->ts, g->body);
	uint8_t mac[32];
	hr_hmac_sha256(key, (size_t)klen, text, strlen(text), mac);
	hr_free(text);
	unsigned char want[64];
	EVP_EncodeBlock(want, mac, 32);
	return strcmp((const char *)want, g->sig + 3) == 0;
}

static const char *jget(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

START_TEST(webhooks_deliver_signed_retry_and_log)
{
	struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, rx_handler, NULL,
						MHD_OPTION_NOTIFY_COMPLETED, rx_done, NULL, MHD_OPTION_END);
	ck_assert_ptr_nonnull(d);
	int port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
	fx f;
	fx_open(&f);
	provider(&f, "mail-main", "{\"callback_secret\":\"s3\"}");
	long long contact, id = send_email(&f, "mail-main", &contact);
	char body[512], path[4096];

	/* CRUD and its errors */
	resp *r = call("POST", "/v1/webhooks", f.full, NULL,
		       "{\"url\":\"ftp://x\",\"event_types\":[\"email_opened\",\"nope\",\"email_opened\"],\"x\":1}");
	expect_problem(r, 422, "/url");
	expect_problem(r, 422, "/event_types/1");
	expect_problem(r, 422, "/event_types/2");
	expect_problem(r, 422, "/x");
	resp_free(r);
	r = call("POST", "/v1/webhooks", f.read, NULL, "{\"url\":\"http://a.b/\",\"event_types\":[\"email_opened\"]}");
	expect_problem(r, 403, NULL);
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.webhooks"), 0);
	snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/ok\",\"event_types\":[\"email_opened\",\"message_delivered\"]}",
		 port);
	r = call("POST", "/v1/webhooks", f.full, NULL, body);
	ck_assert_msg(r->status == 201, "%s", r->body);
	char whsec[64];
	snprintf(whsec, sizeof whsec, "%s", jget(r->json, "secret"));
	ck_assert(strncmp(whsec, "whsec_", 6) == 0);
	long long ok_hook = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	snprintf(path, sizeof path, "/v1/webhooks/%lld", ok_hook);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	ck_assert_ptr_null(json_object_get(r->json, "secret")); /* shown once */
	resp_free(r);
	snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/fail\",\"event_types\":[\"email_opened\"]}", port);
	r = call("POST", "/v1/webhooks", f.full, NULL, body);
	ck_assert_int_eq(r->status, 201);
	long long bad_hook = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);

	/* an open goes to both; a receipt to the first only */
	char *tok = token(&f, HR_TRACK_OPEN, id, contact, NULL);
	snprintf(path, sizeof path, "/v1/t/open/%s", tok);
	hr_free(tok);
	r = call("GET", path, NULL, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	snprintf(body, sizeof body, "{\"message_id\":%lld,\"status\":\"delivered\"}", id);
	r = callback(&f, "mail-main", body, "s3", NULL);
	ck_assert_int_eq(r->status, 200);
	resp_free(r);
	long long deadline = ms_now() + 20000;
	while ((rx_count("/ok") < 2 || rx_count("/fail") < 3) && ms_now() < deadline) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
	}
	ck_assert_int_eq(rx_count("/ok"), 2);
	ck_assert_int_eq(rx_count("/fail"), 3); /* webhook_max_attempts = 3 */
	/* every request verifies; the ids differ between deliveries and stay the same across retries */
	pthread_mutex_lock(&rx_mu);
	char fail_id[96] = "";
	bool saw_open = false, saw_delivered = false;
	for (int i = 0; i < nrx; i++) {
		ck_assert_msg(signature_ok(&rx[i], whsec) == (strcmp(rx[i].path, "/ok") == 0), "request %d (%s)", i,
			      rx[i].path);
		ck_assert(llabs(atoll(rx[i].ts) - (long long)time(NULL)) < 60);
		json_t *b = json_loads(rx[i].body, 0, NULL);
		ck_assert_ptr_nonnull(b);
		ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(b, "data"), "message_id")), id);
		if (!strcmp(rx[i].path, "/ok")) {
			saw_open = saw_open || !strcmp(jget(b, "type"), "email_opened");
			saw_delivered = saw_delivered || !strcmp(jget(b, "type"), "message_delivered");
		} else {
			if (!fail_id[0])
				snprintf(fail_id, sizeof fail_id, "%s", rx[i].id);
			ck_assert_str_eq(rx[i].id, fail_id);
		}
		json_decref(b);
	}
	pthread_mutex_unlock(&rx_mu);
	ck_assert(saw_open && saw_delivered);
	/* a forged signature does not verify (the check above can fail) */
	got forged = rx[0];
	forged.body = "{\"type\":\"email_opened\"}";
	ck_assert(!signature_ok(&forged, whsec));

	/* the delivery log: delivered, and failed after 3 attempts with each attempt's HTTP status */
	snprintf(path, sizeof path, "/v1/webhooks/%lld/deliveries", ok_hook);
	r = call("GET", path, f.read, NULL, NULL);
	ck_assert_int_eq(r->status, 200);
	json_t *data = json_object_get(r->json, "data");
	ck_assert_int_eq(json_array_size(data), 2);
	for (size_t i = 0; i < 2; i++)
		ck_assert_str_eq(jget(json_array_get(data, i), "status"), "delivered");
	resp_free(r);
	snprintf(path, sizeof path, "/v1/webhooks/%lld/deliveries", bad_hook);
	deadline = ms_now() + 10000;
	for (;;) {
		r = call("GET", path, f.read, NULL, NULL);
		json_t *d0 = json_array_get(json_object_get(r->json, "data"), 0);
		if (!strcmp(jget(d0, "status"), "failed") || ms_now() > deadline)
			break;
		resp_free(r);
	}
	json_t *d0 = json_array_get(json_object_get(r->json, "data"), 0);
	ck_assert_str_eq(jget(d0, "status"), "failed");
	ck_assert_str_eq(jget(d0, "id"), fail_id);
	ck_assert_int_eq(json_integer_value(json_object_get(d0, "attempts")), 3);
	json_t *log = json_object_get(d0, "log");
	ck_assert_int_eq(json_array_size(log), 3);
	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(log, i), "http_status")), 500);
	resp_free(r);

	/* list, patch, delete */
	r = call("GET", "/v1/webhooks?limit=1", f.read, NULL, NULL);
	ck_assert_int_eq(json_array_size(json_object_get(r->json, "data")), 1);
	ck_assert(json_is_string(json_object_get(r->json, "next_cursor")));
	resp_free(r);
	r = call("GET", "/v1/webhooks?cursor=zz", f.read, NULL, NULL);
	expect_problem(r, 400, NULL);
	resp_free(r);
	snprintf(path, sizeof path, "/v1/webhooks/%lld", bad_hook);
	r = call("PATCH", path, f.full, NULL, "{\"event_types\":[\"unsubscribed\"],\"description\":\"crm\"}");
	ck_assert_int_eq(r->status, 200);
	ck_assert_str_eq(jget(r->json, "description"), "crm");
	resp_free(r);
	r = call("DELETE", path, f.full, NULL, NULL);
	ck_assert_int_eq(r->status, 204);
	resp_free(r);
	r = call("GET", path, f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	r = call("GET", "/v1/webhooks/99999", f.read, NULL, NULL);
	expect_problem(r, 404, NULL);
	resp_free(r);
	fx_close(&f);
	MHD_stop_daemon(d);
	for (int i = 0; i < nrx; i++)
		hr_free(rx[i].body);
	nrx = 0;
}
END_TEST

Suite *tracking_suite(void);
Suite *tracking_suite(void)
{
	Suite *s = suite_create("api_tracking");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, suite_setup, api_suite_teardown);
	tcase_add_test(tc, callbacks_record_receipts_and_suppress);
	tcase_add_test(tc, tracking_tokens_record_events_and_refuse_forgeries);
	tcase_add_test(tc, webhooks_deliver_signed_retry_and_log);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(tracking_suite());
}
