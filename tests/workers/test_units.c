/*
 * test_units.c -- table-driven tests of the worker's pure parts:
 * classify.c (the result mapping), mime.c (RFC 5322 / MIME building),
 * render.c's snippets (partials from content.snippets) and http1.c (HTTP/1.1
 * answers, fed whole and one byte at a time).
 */
#include <check.h>
#include <string.h>

#include "classify.h"
#include "harness.h"
#include "http1.h"
#include "mime.h"
#include "render.h"
#include "wire.h"

START_TEST(smtp_table)
{
	struct {
		CURLcode rc;
		long code;
		const char *enh;
		uint8_t want;
	} cases[] = {
		{CURLE_OK, 250, "2.0.0", HR_RES_SENT},
		{CURLE_OK, 0, "", HR_RES_SENT},
		{CURLE_SEND_ERROR, 421, "4.7.0", HR_RES_THROTTLED},
		{CURLE_WEIRD_SERVER_REPLY, 421, "", HR_RES_THROTTLED},
		{CURLE_SEND_ERROR, 454, "4.7.0", HR_RES_THROTTLED},
		{CURLE_SEND_ERROR, 450, "4.2.1", HR_RES_RETRY},
		{CURLE_SEND_ERROR, 451, "4.3.0", HR_RES_RETRY},
		{CURLE_SEND_ERROR, 452, "4.2.2", HR_RES_RETRY},
		{CURLE_SEND_ERROR, 447, "", HR_RES_RETRY},
		{CURLE_SEND_ERROR, 550, "5.1.1", HR_RES_BOUNCED},
		{CURLE_SEND_ERROR, 551, "5.1.6", HR_RES_BOUNCED},
		{CURLE_SEND_ERROR, 553, "5.1.3", HR_RES_BOUNCED},
		{CURLE_SEND_ERROR, 550, "5.7.1", HR_RES_PERMANENT},
		{CURLE_SEND_ERROR, 550, "", HR_RES_PERMANENT},
		{CURLE_SEND_ERROR, 552, "5.1.1", HR_RES_PERMANENT},
		{CURLE_SEND_ERROR, 554, "5.6.0", HR_RES_PERMANENT},
		{CURLE_LOGIN_DENIED, 535, "5.7.8", HR_RES_PERMANENT},
		{CURLE_COULDNT_CONNECT, 0, "", HR_RES_RETRY},
		{CURLE_OPERATION_TIMEDOUT, 250, "", HR_RES_RETRY},
		{CURLE_SSL_CONNECT_ERROR, 0, "", HR_RES_RETRY},
		{CURLE_URL_MALFORMAT, 0, "", HR_RES_PERMANENT},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint8_t got = wk_classify_smtp(cases[i].rc, cases[i].code, cases[i].enh);
		ck_assert_msg(got == cases[i].want, "smtp rc=%d code=%ld enh=%s: got %s, want %s", cases[i].rc,
			      cases[i].code, cases[i].enh, hr_result_name(got), hr_result_name(cases[i].want));
	}
}
END_TEST

START_TEST(http_table)
{
	struct {
		CURLcode rc;
		long status;
		uint8_t want;
	} cases[] = {
		{CURLE_OK, 200, HR_RES_SENT},      {CURLE_OK, 202, HR_RES_SENT},
		{CURLE_OK, 429, HR_RES_THROTTLED}, {CURLE_OK, 408, HR_RES_RETRY},
		{CURLE_OK, 425, HR_RES_RETRY},     {CURLE_OK, 500, HR_RES_RETRY},
		{CURLE_OK, 503, HR_RES_RETRY},     {CURLE_OK, 400, HR_RES_PERMANENT},
		{CURLE_OK, 401, HR_RES_PERMANENT}, {CURLE_OK, 404, HR_RES_PERMANENT},
		{CURLE_OK, 413, HR_RES_PERMANENT}, {CURLE_OK, 301, HR_RES_PERMANENT},
		{CURLE_OPERATION_TIMEDOUT, 0, HR_RES_RETRY},
		{CURLE_COULDNT_CONNECT, 0, HR_RES_RETRY},
		{CURLE_COULDNT_RESOLVE_HOST, 0, HR_RES_RETRY},
		{CURLE_RECV_ERROR, 200, HR_RES_RETRY},
		{CURLE_GOT_NOTHING, 0, HR_RES_RETRY},
		{CURLE_UNSUPPORTED_PROTOCOL, 0, HR_RES_PERMANENT},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint8_t got = wk_classify_http(cases[i].rc, cases[i].status);
		ck_assert_msg(got == cases[i].want, "http rc=%d status=%ld: got %s, want %s", cases[i].rc,
			      cases[i].status, hr_result_name(got), hr_result_name(cases[i].want));
	}
}
END_TEST

START_TEST(http1_answers)
{
	struct {
		const char *in;
		bool head;         /* the request was HEAD */
		bool eof;          /* the server closes after `in` */
		wk_h1_state want;  /* H1_DONE or H1_BAD */
		int status;
		bool keep_alive;
		const char *body;  /* kept body (body_max 8), or the error's start */
		const char *retry_after;
		size_t left;       /* bytes after the answer */
	} cases[] = {
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, false, H1_DONE, 200, true, "hello", "", 0},
		{"HTTP/1.1 202 Accepted\r\ncontent-length:  3 \r\nConnection: close\r\n\r\nabcXY", false, false, H1_DONE, 202,
		 false, "abc", "", 2},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n"
		 "3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
		 false, false, H1_DONE, 200, true, "abc01234", "", 0},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Slow\r\nRetry-After:  7\r\nContent-Length: 0\r\n\r\n", false,
		 false, H1_DONE, 429, true, "", "7", 0},
		{"HTTP/1.0 200 OK\r\n\r\n{\"id\":1}", false, true, H1_DONE, 200, false, "{\"id\":1}", "", 0},
		{"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", false, false, H1_DONE, 200,
		 true, "ok", "", 0},
		{"HTTP/1.1 204 No Content\r\n\r\n", false, false, H1_DONE, 204, true, "", "", 0},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\n", true, false, H1_DONE, 200, true, "", "", 0},
		{"HTTP/1.1 503 Busy\nRetry-After: Wed, 21 Oct 2099 07:28:00 GMT\nContent-Length: 1\n\nx", false, false,
		 H1_DONE, 503, true, "x", "Wed, 21 Oct 2099 07:28:00 GMT", 0},
		/* Malformed: a clear failure. */
		{"HTTP/2 200\r\n\r\n", false, false, H1_BAD, 0, false, "not an HTTP/1.x status line", "", 0},
		{"SPAM\r\n\r\n", false, false, H1_BAD, 0, false, "not an HTTP/1.x status line", "", 0},
		{"HTTP/1.1 2000 OK\r\n\r\n", false, false, H1_BAD, 0, false, "not an HTTP/1.x status line", "", 0},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", false, false, H1_BAD, 200, false, "a Content-Length", "", 0},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, false, H1_BAD, 200, false,
		 "conflicting", "", 0},
		{"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", false, false, H1_BAD, 200, false, "a header line", "", 0},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, false, H1_BAD, 200, true,
		 "a chunk-size line without", "", 0},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", false, false, H1_BAD, 200, true,
		 "chunk data longer", "", 0},
		{"HTTP/1.1 101 Switching\r\n\r\n", false, false, H1_BAD, 101, true, "101", "", 0},
		/* Cut short: EOF before the end is not an answer. */
		{"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false, true, H1_BODY_LEN, 200, true, "abc", "", 0},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", false, true, H1_CHUNK_SIZE, 200,
		 true, "abc", "", 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			wk_h1 r = {.body_max = 8};
			wk_h1_reset(&r, cases[i].head);
			const char *in = cases[i].in;
			size_t n = strlen(in), have = 0, used = 0;
			/* The caller's buffer: bytes arrive (all, or one at a time), parsed bytes leave. */
			while (r.state != H1_DONE && r.state != H1_BAD && have < n) {
				have = bytewise ? have + 1 : n;
				used += wk_h1_feed(&r, in + used, have - used);
			}
			if (cases[i].eof)
				wk_h1_eof(&r);
			ck_assert_msg(r.state == cases[i].want, "case %zu (%s): state %d, want %d (%s)", i,
				      bytewise ? "bytewise" : "whole", r.state, cases[i].want, r.error ? r.error : "");
			ck_assert_msg(r.status == cases[i].status, "case %zu: status %d, want %d", i, r.status,
				      cases[i].status);
			if (r.state == H1_BAD) {
				ck_assert_msg(strncmp(r.error, cases[i].body, strlen(cases[i].body)) == 0,
					      "case %zu: error '%s', want '%s...'", i, r.error, cases[i].body);
			} else {
				ck_assert_msg(r.keep_alive == cases[i].keep_alive, "case %zu: keep_alive %d", i,
					      r.keep_alive);
				ck_assert_msg(r.body.len == strlen(cases[i].body) &&
						      memcmp(r.body.p ? r.body.p : "", cases[i].body, r.body.len) == 0,
					      "case %zu: body '%.*s', want '%s'", i, (int)r.body.len, r.body.p ? r.body.p : "",
					      cases[i].body);
				ck_assert_str_eq(r.retry_after, cases[i].retry_after);
			}
			if (r.state == H1_DONE && !bytewise)
				ck_assert_msg(n - used == cases[i].left, "case %zu: %zu bytes left, want %zu", i, n - used,
					      cases[i].left);
			wk_buf_free(&r.body);
		}
	}
}
END_TEST

static wk_mail base_mail(void)
{
	return (wk_mail){.from = "news@acme.test", .to = "u@example.test", .subject = "Hi", .text = "t",
			 .message_id = 42, .tenant = "acme", .date = 0};
}

START_TEST(mime_headers)
{
	wk_buf b = {0};
	hr_err err;
	wk_mail m = base_mail();
	ck_assert(wk_mime_build(&b, &m, &err));
	const char *want[] = {"Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n", "From: <news@acme.test>\r\n",
			      "To: <u@example.test>\r\n", "Subject: Hi\r\n", "Message-ID: <42.acme@herald>\r\n",
			      "MIME-Version: 1.0\r\n", "Content-Type: text/plain; charset=utf-8\r\n",
			      "Content-Transfer-Encoding: quoted-printable\r\n\r\nt\r\n"};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		ck_assert_msg(strstr(b.p, want[i]), "want '%s' in:\n%s", want[i], b.p);
	ck_assert_msg(!strstr(b.p, "List-Unsubscribe"), "%s", b.p);

	/* A tenant slug that is not atext does not go into the Message-ID. */
	wk_buf_reset(&b);
	m.tenant = "a b@c";
	ck_assert(wk_mime_build(&b, &m, &err));
	ck_assert_msg(strstr(b.p, "Message-ID: <42.t@herald>\r\n"), "%s", b.p);
	wk_buf_free(&b);
}
END_TEST

START_TEST(mime_injection_refused)
{
	struct {
		const char *from, *to, *reply_to, *unsub, *field;
	} cases[] = {
		{"a@b.test\r\nBcc: x@y.test", "u@example.test", NULL, NULL, "From"},
		{"a@b.test", "u@example.test\r\nBcc: x@y", NULL, NULL, "to"},
		{"a@b.test", "u@example.test", "r@b.test\nX: y", NULL, "Reply-To"},
		{"a@b.test", "u@example.test", NULL, "https://x.test/\r\nX: y", "unsubscribe_url"},
		{"a@b.test", "u@example.test", NULL, "https://x.test/a>b", "unsubscribe_url"},
		{"no address", "u@example.test", NULL, NULL, "From"},
		{"a@b.test", "<u@example.test>", NULL, NULL, "to"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		wk_buf b = {0};
		hr_err err = {0};
		wk_mail m = base_mail();
		m.from = cases[i].from;
		m.to = cases[i].to;
		m.reply_to = cases[i].reply_to;
		m.unsubscribe = cases[i].unsub;
		ck_assert_msg(!wk_mime_build(&b, &m, &err), "case %zu built:\n%s", i, b.p);
		ck_assert_msg(!strcmp(err.field, cases[i].field), "case %zu: got field '%s', want '%s'", i, err.field,
			      cases[i].field);
		wk_buf_free(&b);
	}
	/* A line break in the subject is folded to a space, never a header. */
	wk_buf b = {0};
	hr_err err;
	wk_mail m = base_mail();
	m.subject = "Hi\r\nBcc: x@y.test";
	ck_assert(wk_mime_build(&b, &m, &err));
	ck_assert_msg(!strstr(b.p, "\r\nBcc:"), "%s", b.p);
	wk_buf_free(&b);
}
END_TEST

START_TEST(mime_encodings)
{
	wk_buf b = {0};
	hr_err err;
	wk_mail m = base_mail();
	/* 40 x "é" = 80 bytes: more than one encoded word, split between characters. */
	char subj[200] = "";
	for (int i = 0; i < 40; i++)
		strcat(subj, "\xc3\xa9");
	m.subject = subj;
	char text[400];
	memset(text, 'x', 200);
	strcpy(text + 200, "\n.leading dot\nend=with equals \ntrailing space ");
	m.text = text;
	m.html = "<p>\xc3\xa9</p>";
	m.unsubscribe = "https://u.test/1";
	ck_assert(wk_mime_build(&b, &m, &err));
	/* Words of 42 bytes (21 characters), folded onto continuation lines. */
	ck_assert_msg(strstr(b.p, "Subject: =?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOp?=\r\n"
				  " =?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6k=?=\r\n"),
		      "%s", b.p);
	/* No line longer than 78 + CRLF; quoted-printable soft breaks and escapes. */
	for (const char *p = b.p, *nl; (nl = strstr(p, "\r\n")); p = nl + 2)
		ck_assert_msg(nl - p <= 78, "line of %d chars: %.*s", (int)(nl - p), (int)(nl - p), p);
	ck_assert_msg(strstr(b.p, "=\r\nxxxx"), "no soft line break:\n%s", b.p);
	ck_assert_msg(strstr(b.p, "\r\n=2Eleading dot\r\n"), "%s", b.p);
	ck_assert_msg(strstr(b.p, "end=3Dwith equals=20\r\n"), "%s", b.p);
	ck_assert_msg(strstr(b.p, "<p>=C3=A9</p>"), "%s", b.p);
	ck_assert_msg(strstr(b.p, "multipart/alternative"), "%s", b.p);
	ck_assert_msg(strstr(b.p, "List-Unsubscribe: <https://u.test/1>\r\n"
				  "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
		      "%s", b.p);
	wk_buf_free(&b);

	char addr[64];
	ck_assert(wk_mime_addr("\"Acme, Inc\" <news@acme.test>", addr, sizeof addr));
	ck_assert_str_eq(addr, "news@acme.test");
	ck_assert(wk_mime_addr("  plain@acme.test ", addr, sizeof addr));
	ck_assert_str_eq(addr, "plain@acme.test");
	ck_assert(!wk_mime_addr("Name <broken", addr, sizeof addr));
	ck_assert(!wk_mime_addr("Name <a b@c>", addr, sizeof addr));
}
END_TEST

static hr_str str(const char *s)
{
	return (hr_str){s, (uint32_t)strlen(s)};
}

/* A stored version's snippets come from its content; no other partial exists. */
START_TEST(render_snippets_from_content)
{
	static const struct {
		const char *content, *data, *want; /* want NULL: open or render fails */
		bool open_fails;
	} cases[] = {
		{"{\"text\": \"A{% render 'x', n: n %}{% include 'y' %}\", \"snippets\": {\"x\": \"<{{ n }}>\", "
		 "\"y\": \"[{% render 'x', n: 2 %}]\"}}", "{\"n\": 1}", "A<1>[<2>]", false},
		{"{\"text\": \"{% render 'missing' %}\", \"snippets\": {\"x\": \"x\"}}", "{}", NULL, false},
		{"{\"text\": \"{% render 'x' %}\"}", "{}", NULL, false},
		{"{\"text\": \"t\", \"snippets\": [\"x\"]}", "{}", NULL, true},
		{"{\"text\": \"t\", \"snippets\": {\"x\": 1}}", "{}", NULL, true},
		{"{\"text\": \"{% render 'x' %}\", \"snippets\": {\"x\": \"{% if %}\"}}", "{}", NULL, false},
	};
	wk_render *r = wk_render_new(16, 1 << 20);
	wk_message m = {0};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		hr_job j = {.message_id = 4096, .attempt = 1, .address = str("+14155550101"), .data = str(cases[i].data)};
		hr_job_batch b = {.tenant_id = 1, .tenant = str("t"), .channel = HR_CH_SMS, .lane = HR_LANE_TRANSACTIONAL,
				  .template_id = 7, .template_version = (uint32_t)i + 1, .content = str(cases[i].content),
				  .njobs = 1, .jobs = &j};
		wk_content *c = NULL;
		hr_err err = {0};
		bool opened = wk_content_open(r, &b, &c, &err);
		ck_assert_msg(opened == !cases[i].open_fails, "case %zu: open %d: %s", i, opened, err.msg);
		if (!opened)
			continue;
		bool ok = wk_render_job(r, c, &b, &j, NULL, &m, &err);
		ck_assert_msg(ok == (cases[i].want != NULL), "case %zu: render %d: %s", i, ok, err.msg);
		if (ok)
			ck_assert_str_eq(wk_msg_get(&m, WK_F_TEXT), cases[i].want);
		wk_content_close(r, c);
	}
	wk_message_free(&m);
	wk_render_free(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_units");
	TCase *tc = th_tcase("units");
	tcase_add_test(tc, smtp_table);
	tcase_add_test(tc, http_table);
	tcase_add_test(tc, http1_answers);
	tcase_add_test(tc, mime_headers);
	tcase_add_test(tc, mime_injection_refused);
	tcase_add_test(tc, mime_encodings);
	tcase_add_test(tc, render_snippets_from_content);
	suite_add_tcase(s, tc);
	return th_run(s);
}
