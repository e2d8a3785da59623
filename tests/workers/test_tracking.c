/*
 * test_tracking.c -- the worker's tracking (workers/tracking.c through
 * render.c) and the RFC 8058 headers it leads to in the MIME output.
 *
 * A batch is rendered as the loop renders it (wk_render_job with the
 * provider account as the scheduler hands it over, "tracking" included);
 * the tracked URLs are then decoded with the master key exactly as
 * herald-api decodes them.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "mime.h"
#include "provider.h"
#include "render.h"
#include "track.h"
#include "wire.h"

#define BASE "https://t.example.com"
static uint8_t master[HR_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};

typedef struct rendered {
	wk_render *r;
	wk_providers *ps;
	wk_provider *p;
	wk_content *c;
	wk_message m;
} rendered;

static const char html_src[] =
	"<html><body><p>Hi {{ contact.first }}</p>"
	"<a href=\"https://shop.example/p?a=1&amp;b=2\">product</a> "
	"<A class=x HREF='http://shop.example/sale'>sale</A> "
	"<a href=mailto:help@shop.example>mail us</a> <a href=\"#top\">top</a> "
	"<a href=\"{{ herald.unsubscribe_url }}\">unsubscribe</a>"
	"</body></html>";

/* Render message 8195 (tenant 7, contact 12) on lane with tracking {opens, clicks}; base NULL = none. */
static void render(rendered *x, int lane, const char *base, bool opens, bool clicks)
{
	memset(x, 0, sizeof *x);
	hr_err err = {0};
	uint8_t tk[HR_KEY_LEN];
	hr_track_tenant_key(master, 7, tk);
	char prov[256], hex[65];
	for (int i = 0; i < HR_KEY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", tk[i]);
	snprintf(prov, sizeof prov, "{\"transport\":\"sink\",\"tracking\":{\"key\":\"%s\",\"opens\":%s,\"clicks\":%s}}", hex,
		 opens ? "true" : "false", clicks ? "true" : "false");
	x->ps = wk_providers_new(4);
	ck_assert_msg(wk_provider_get(x->ps, prov, strlen(prov), &x->p, &err), "%s", err.msg);
	x->r = wk_render_new(16, 1 << 20);
	wk_render_set_public_url(x->r, base);
	json_t *content = json_pack("{s:s, s:s, s:s, s:s}", "from", "shop@example.com", "subject", "Hi", "html", html_src,
				    "text", "plain {{ herald.unsubscribe_url }}");
	char *ctext = json_dumps(content, JSON_COMPACT);
	json_decref(content);
	const char *data = "{\"contact\":{\"id\":12,\"first\":\"Ann\"}}";
	hr_job j = {.message_id = 8195, .attempt = 1, .address = {"ann@example.com", 15}, .data = {data, strlen(data)}};
	hr_job_batch b = {.tenant_id = 7, .tenant = {"acme", 4}, .channel = HR_CH_EMAIL, .lane = (uint8_t)lane,
			  .content = {ctext, strlen(ctext)}, .provider = {prov, strlen(prov)}, .njobs = 1, .jobs = &j};
	ck_assert_msg(wk_content_open(x->r, &b, &x->c, &err), "%s", err.msg);
	ck_assert_msg(wk_render_job(x->r, x->c, &b, &j, x->p, &x->m, &err), "%s", err.msg);
	free(ctext);
}

static void done(rendered *x)
{
	wk_content_close(x->r, x->c);
	wk_message_free(&x->m);
	wk_provider_put(x->ps, x->p);
	wk_providers_free(x->ps);
	wk_render_free(x->r);
}

/* The token of the n-th URL starting with prefix in s (heap), or NULL. */
static char *nth_token(const char *s, const char *prefix, int n)
{
	const char *p = s;
	for (int i = 0; i <= n; i++) {
		p = strstr(p, prefix);
		if (!p)
			return NULL;
		p += strlen(prefix);
	}
	size_t len = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
	return hr_strndup(p, len);
}

static hr_track_token decode(const char *tok, char **buf)
{
	hr_track_token t;
	ck_assert_msg(hr_track_decode(master, tok, &t, buf), "token %s does not verify", tok);
	return t;
}

START_TEST(links_rewritten_pixel_added_tokens_verify)
{
	rendered x;
	render(&x, HR_LANE_TRANSACTIONAL, BASE "/", true, true);
	const char *html = wk_msg_get(&x.m, WK_F_HTML);
	/* two http(s) links tracked, in order, each signing its own decoded URL */
	static const char *const want[] = {"https://shop.example/p?a=1&b=2", "http://shop.example/sale"};
	for (int i = 0; i < 2; i++) {
		char *tok = nth_token(html, BASE "/v1/t/click/", i), *url = NULL;
		ck_assert_msg(tok, "link %d not rewritten:\n%s", i, html);
		hr_track_token t = decode(tok, &url);
		ck_assert_int_eq(t.kind, HR_TRACK_CLICK);
		ck_assert_uint_eq(t.tenant_id, 7);
		ck_assert_uint_eq(t.message_id, 8195);
		ck_assert_uint_eq(t.contact_id, 12);
		ck_assert_str_eq(url, want[i]);
		hr_free(url);
		hr_free(tok);
	}
	ck_assert_ptr_null(nth_token(html, BASE "/v1/t/click/", 2));
	/* left alone: mailto, anchors, herald's own unsubscribe link; the rest byte for byte */
	ck_assert_ptr_nonnull(strstr(html, "<a href=mailto:help@shop.example>mail us</a> <a href=\"#top\">top</a> "));
	ck_assert_ptr_nonnull(strstr(html, "<a href=\"" BASE "/v1/unsubscribe/"));
	ck_assert_ptr_nonnull(strstr(html, "<A class=x HREF='" BASE "/v1/t/click/"));
	ck_assert_ptr_nonnull(strstr(html, "<html><body><p>Hi Ann</p><a href=\"" BASE "/v1/t/click/"));
	/* the pixel, before </body> */
	char *tok = nth_token(html, "<img src=\"" BASE "/v1/t/open/", 0), *buf = NULL;
	ck_assert_msg(tok, "%s", html);
	hr_track_token t = decode(tok, &buf);
	ck_assert_int_eq(t.kind, HR_TRACK_OPEN);
	ck_assert_uint_eq(t.contact_id, 12);
	ck_assert_ptr_nonnull(strstr(html, "height:1px\"></body></html>"));
	/* one changed character: refused */
	tok[3] = tok[3] == 'A' ? 'B' : 'A';
	ck_assert(!hr_track_decode(master, tok, &t, &buf));
	hr_free(tok);
	/* the text part sees the unsubscribe URL too, untouched */
	ck_assert_ptr_nonnull(strstr(wk_msg_get(&x.m, WK_F_TEXT), "plain " BASE "/v1/unsubscribe/"));
	/* a transactional email has no List-Unsubscribe */
	ck_assert(!x.m.set[WK_F_UNSUBSCRIBE]);
	done(&x);
}
END_TEST

START_TEST(bulk_email_has_rfc8058_headers)
{
	rendered x;
	render(&x, HR_LANE_BULK, BASE, true, true);
	wk_mail m = {.from = wk_msg_get(&x.m, WK_F_FROM), .to = "ann@example.com", .subject = "Hi",
		     .text = wk_msg_get(&x.m, WK_F_TEXT), .html = wk_msg_get(&x.m, WK_F_HTML),
		     .unsubscribe = wk_msg_get(&x.m, WK_F_UNSUBSCRIBE), .message_id = 8195, .tenant = "acme"};
	wk_buf b = {0};
	hr_err err = {0};
	ck_assert_msg(wk_mime_build(&b, &m, &err), "%s", err.msg);
	char *tok = nth_token(b.p, "List-Unsubscribe: <" BASE "/v1/unsubscribe/", 0), *buf = NULL;
	ck_assert_msg(tok, "%s", b.p);
	ck_assert_ptr_nonnull(strstr(b.p, tok));
	ck_assert_msg(strstr(b.p, ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "%s", b.p);
	hr_track_token t = decode(tok, &buf);
	ck_assert_int_eq(t.kind, HR_TRACK_UNSUBSCRIBE);
	ck_assert_uint_eq(t.message_id, 8195);
	ck_assert_uint_eq(t.contact_id, 12);
	hr_free(tok);
	wk_buf_free(&b);
	done(&x);
}
END_TEST

START_TEST(tracking_off_leaves_html_alone)
{
	rendered x;
	/* the tenant switched opens and clicks off: no rewriting, no pixel; unsubscribe stays */
	render(&x, HR_LANE_BULK, BASE, false, false);
	const char *html = wk_msg_get(&x.m, WK_F_HTML);
	ck_assert_ptr_null(strstr(html, "/v1/t/"));
	ck_assert_ptr_nonnull(strstr(html, "<a href=\"https://shop.example/p?a=1&amp;b=2\">"));
	ck_assert(x.m.set[WK_F_UNSUBSCRIBE]);
	done(&x);
	/* opens only */
	render(&x, HR_LANE_BULK, BASE, true, false);
	html = wk_msg_get(&x.m, WK_F_HTML);
	ck_assert_ptr_null(strstr(html, "/v1/t/click/"));
	ck_assert_ptr_nonnull(strstr(html, "/v1/t/open/"));
	done(&x);
	/* no public URL on this worker: nothing tracked, no herald unsubscribe URL */
	render(&x, HR_LANE_BULK, NULL, true, true);
	html = wk_msg_get(&x.m, WK_F_HTML);
	ck_assert_ptr_null(strstr(html, "/v1/"));
	ck_assert(!x.m.set[WK_F_UNSUBSCRIBE]);
	done(&x);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_tracking");
	TCase *tc = th_tcase("units");
	tcase_add_test(tc, links_rewritten_pixel_added_tokens_verify);
	tcase_add_test(tc, bulk_email_has_rfc8058_headers);
	tcase_add_test(tc, tracking_off_leaves_html_alone);
	suite_add_tcase(s, tc);
	return th_run(s);
}
