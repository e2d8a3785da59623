/*
 * test_webhook_guard.c -- a tenant's webhook cannot reach herald's own
 * network: with webhook_allow_private off (the default, this suite's
 * server), a URL whose host is a loopback, private, link-local or other
 * non-public IP literal (or localhost) is refused when saved, and a
 * delivery whose host turns out to be at such an address -- a row saved
 * before, a name that resolves there -- is refused when it connects, with
 * the reason in the delivery log and nothing sent.
 *
 * The delivery case saves a public URL, then points the row at a listening
 * socket on 127.0.0.1 behind the API's back (as a row saved while
 * webhook_allow_private was on would be) and queues a delivery as
 * webhooks_record does.  The socket is never accept()ed by the test: had the
 * server connected, the kernel would hold the connection in the socket's
 * backlog, and the non-blocking accept at the end would take it.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "api.h"
#include "apitest.h"
#include "harness.h"

static int addr_kind_is(const char *ip, const char *want)
{
	uint8_t a[16];
	int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
	ck_assert_msg(inet_pton(fam, ip, a) == 1, "%s", ip);
	const char *got = api_addr_not_public(fam, a);
	if (!want)
		return got == NULL;
	return got && strcmp(got, want) == 0;
}

START_TEST(addresses_are_classified)
{
	static const struct {
		const char *ip, *kind;
	} cases[] = {
		{"127.0.0.1", "loopback"}, {"127.255.1.2", "loopback"}, {"10.1.2.3", "private"},
		{"172.16.0.1", "private"}, {"172.31.255.255", "private"}, {"192.168.1.1", "private"},
		{"169.254.169.254", "link-local"}, {"100.64.0.1", "shared (carrier-grade NAT)"},
		{"0.0.0.0", "unspecified"}, {"224.0.0.1", "multicast"}, {"255.255.255.255", "reserved"},
		{"::1", "loopback"}, {"::", "unspecified"}, {"fe80::1", "link-local"}, {"fd00::1", "private"},
		{"ff02::1", "multicast"}, {"::ffff:127.0.0.1", "loopback"}, {"::ffff:10.0.0.1", "private"},
		{"64:ff9b::a9fe:a9fe", "link-local"},
		/* public, including the neighbours of the ranges above */
		{"8.8.8.8", NULL}, {"172.15.255.255", NULL}, {"172.32.0.1", NULL}, {"100.128.0.1", NULL},
		{"169.253.1.1", NULL}, {"11.0.0.1", NULL}, {"2001:4860:4860::8888", NULL}, {"::ffff:8.8.8.8", NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ck_assert_msg(addr_kind_is(cases[i].ip, cases[i].kind), "%s: want %s", cases[i].ip,
			      cases[i].kind ? cases[i].kind : "public");
	ck_assert_str_eq(api_url_host_not_public("http://LOCALHOST:8080/x"), "loopback");
	ck_assert_str_eq(api_url_host_not_public("https://api.localhost/x"), "loopback");
	ck_assert_str_eq(api_url_host_not_public("http://[::1]:9/"), "loopback");
	ck_assert_str_eq(api_url_host_not_public("http://[fe80::1%25eth0]/"), "link-local");
	ck_assert_str_eq(api_url_host_not_public("http://10.0.0.7/hook"), "private");
	ck_assert_ptr_null(api_url_host_not_public("https://hooks.example.com/x"));
	ck_assert_ptr_null(api_url_host_not_public("https://notlocalhost.example/x"));
}
END_TEST

START_TEST(non_public_urls_are_refused_when_saved)
{
	fx f;
	fx_open(&f);
	static const char *const urls[] = {
		"http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook",
		"http://169.254.169.254/latest/meta-data", "https://10.1.2.3/hook", "http://192.168.0.10:9000/",
	};
	static const char *const kinds[] = {"loopback", "loopback", "loopback", "link-local", "private", "private"};
	for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
		char body[256];
		snprintf(body, sizeof body, "{\"url\":\"%s\",\"event_types\":[\"email_opened\"]}", urls[i]);
		resp *r = call("POST", "/v1/webhooks", f.full, NULL, body);
		expect_problem(r, 422, "/url");
		ck_assert_msg(strstr(r->body, kinds[i]) && strstr(r->body, "webhook_allow_private"), "%s: %s", urls[i],
			      r->body);
		resp_free(r);
	}
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.webhooks"), 0);
	/* a public one is saved; moving it to a private address is refused and leaves it as it was */
	resp *r = call("POST", "/v1/webhooks", f.full, NULL,
		       "{\"url\":\"https://hooks.example.com/h\",\"event_types\":[\"email_opened\"]}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	char path[64];
	snprintf(path, sizeof path, "/v1/webhooks/%lld", (long long)json_integer_value(json_object_get(r->json, "id")));
	resp_free(r);
	r = call("PATCH", path, f.full, NULL, "{\"url\":\"http://172.20.0.5/h\"}");
	expect_problem(r, 422, "/url");
	resp_free(r);
	ck_assert_int_eq(count(&f, "SELECT count(*) FROM %s.webhooks WHERE url = 'https://hooks.example.com/h'"), 1);
	fx_close(&f);
}
END_TEST

START_TEST(a_delivery_to_a_non_public_address_is_refused_at_connect)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(ls, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(listen(ls, 8), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
	fcntl(ls, F_SETFL, O_NONBLOCK);

	fx f;
	fx_open(&f);
	resp *r = call("POST", "/v1/webhooks", f.full, NULL,
		       "{\"url\":\"https://hooks.example.com/h\",\"event_types\":[\"email_opened\"]}");
	ck_assert_msg(r->status == 201, "%s", r->body);
	long long hook = (long long)json_integer_value(json_object_get(r->json, "id"));
	resp_free(r);
	char *sql = hr_sprintf("UPDATE %s.webhooks SET url = 'http://127.0.0.1:%d/h' WHERE id = %lld; "
			       "WITH e AS (INSERT INTO %s.events (name, properties, occurred_at) "
			       "VALUES ('email_opened', '{}', now()) "
			       "RETURNING id) INSERT INTO %s.webhook_deliveries (webhook_id, event_id, event_type, payload) "
			       "SELECT %lld, e.id, 'email_opened', '{\"type\":\"email_opened\"}' FROM e; "
			       "SELECT pg_notify('herald_webhooks', '%lld')",
			       f.t.schema, ntohs(sa.sin_port), hook, f.t.schema, f.t.schema, hook, (long long)f.t.id);
	PGresult *x = PQexec(f.c, sql);
	ck_assert_msg(PQresultStatus(x) == PGRES_TUPLES_OK, "%s", PQerrorMessage(f.c));
	PQclear(x);
	hr_free(sql);

	/* the first attempt is logged at once (retries are 5 s apart by default) */
	char *logq = hr_sprintf("SELECT count(*) FROM %%s.webhook_deliveries WHERE webhook_id = %lld AND "
				"jsonb_array_length(log) > 0",
				hook);
	for (int i = 0; i < 500 && count(&f, logq) == 0; i++) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
	}
	hr_free(logq);
	sql = hr_sprintf("SELECT status, log -> 0 ->> 'error' FROM %s.webhook_deliveries WHERE webhook_id = %lld",
			 f.t.schema, hook);
	x = PQexec(f.c, sql);
	hr_free(sql);
	ck_assert_int_eq(PQntuples(x), 1);
	const char *why = PQgetvalue(x, 0, 1);
	ck_assert_msg(strstr(why, "127.0.0.1") && strstr(why, "loopback") && strstr(why, "webhook_allow_private"),
		      "logged: '%s'", why);
	ck_assert_str_eq(PQgetvalue(x, 0, 0), "pending"); /* retried later, as any failed attempt */
	PQclear(x);
	/* nothing reached the socket: no connection waits in its backlog */
	int c = accept(ls, NULL, NULL);
	ck_assert_msg(c < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "herald-api connected to the loopback address");
	close(ls);
	fx_close(&f);
}
END_TEST

Suite *guard_suite(void);
Suite *guard_suite(void)
{
	Suite *s = suite_create("api_webhook_guard");
	TCase *tc = th_tcase("http");
	tcase_add_unchecked_fixture(tc, api_suite_setup, api_suite_teardown);
	tcase_add_test(tc, addresses_are_classified);
	tcase_add_test(tc, non_public_urls_are_refused_when_saved);
	tcase_add_test(tc, a_delivery_to_a_non_public_address_is_refused_at_connect);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(guard_suite());
}
