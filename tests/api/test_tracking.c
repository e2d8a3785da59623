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
	/* Fast retries, few attempts: the failing receiver's log fills in well under a second. */
	srv_start(&the_srv, the_dsn,
		  "HERALD_WEBHOOK_RETRY_BASE_MS=50 HERALD_WEBHOOK_MAX_ATTEMPTS=3 HERALD_WEBHOOK_TIMEOUT_MS=3000");
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

Suite *tracking_suite(void);
Suite *tracking_suite(void)
{
	Suite *s = suite_create("api_tracking");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, suite_setup, api_suite_teardown);
	tcase_add_test(tc, callbacks_record_receipts_and_suppress);
	tcase_add_test(tc, tracking_tokens_record_events_and_refuse_forgeries);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(tracking_suite());
}
