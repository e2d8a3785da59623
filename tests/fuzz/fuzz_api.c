/*
 * fuzz_api.c -- libFuzzer target: herald-api's request parsing and JSON
 * handling, everything that runs on a request before the database does.
 *
 * Input layout: "METHOD\nPATH\nBODY".  The method and path go through the
 * router (api_route_find: pattern match, path parameters, 404/405 problems);
 * the body through the server's JSON parser (api_body_json: duplicate keys,
 * invalid UTF-8, \u0000, non-objects), then every member through the JSON
 * validators (jv_*), every string through the normalisers (email, E.164
 * phone, time zone, locale, RFC 3339) and every object through the contact
 * reference parser, and the collected errors through the problem+json
 * renderer.  The body also goes through the event batch's fast reader
 * (api/eventscan.c): whatever it takes, the usual way must take and read the
 * same (tests/api/evoracle.c), else the target aborts.  Sanitizers turn any
 * memory error, leak or UB into a crash.
 *
 * Build and run: see docs/api.md ("Fuzzing").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api.h"
#include "eventscan.h"
#include "evoracle.h"

static void strings(json_t *v, jv *val, int depth)
{
	if (depth > 8)
		return;
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char out[256], phone[20];
		hr_err err = {0};
		(void)!hr_email_normalize(s, out, &err);
		(void)!hr_phone_normalize(s, "44", phone, &err);
		(void)!hr_phone_normalize(s, NULL, phone, &err);
		(void)hr_tz_valid(s);
		(void)hr_locale_valid(s);
		(void)jv_rfc3339(s);
		return;
	}
	const char *k;
	json_t *c;
	size_t i;
	if (json_is_object(v)) {
		const char *kind;
		char ref[256];
		(void)contact_ref_parse(val, v, "/ref", "1", &kind, ref);
		json_object_foreach(v, k, c) {
			bool present, b;
			int64_t n;
			(void)jv_str(val, v, "", k, false, 64);
			(void)jv_obj(val, v, "", k, false);
			jv_bool(val, v, "", k, false, &present, &b);
			jv_int(val, v, "", k, false, -5, 1000000, &present, &n);
			strings(c, val, depth + 1);
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, c)
			strings(c, val, depth + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	const char *nl1 = memchr(p, '\n', size);
	if (!nl1)
		return 0;
	const char *nl2 = memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1));
	if (!nl2)
		return 0;
	char *method = hr_strndup(p, (size_t)(nl1 - p));
	char *path = hr_strndup(nl1 + 1, (size_t)(nl2 - nl1 - 1));

	api_req r = {0};
	r.method = method;
	r.path = path;
	(void)api_route_find(&r);
	for (int i = 0; i < API_MAX_PARAMS; i++)
		hr_free(r.param[i]);
	hr_free(r.resp);

	evscan *es = hr_malloc(sizeof *es);
	es->text = (hr_sbuf){0};
	if (evscan_read(es, nl2 + 1, (size_t)(end - nl2 - 1))) {
		const char *bad = evoracle_compare(es, nl2 + 1, (size_t)(end - nl2 - 1));
		if (bad) {
			fprintf(stderr, "eventscan: %s\n", bad);
			abort();
		}
	}
	evscan_free(es);
	hr_free(es);

	api_req b = {0};
	api_body_json(&b, nl2 + 1, (size_t)(end - nl2 - 1));
	if (b.json && json_is_object(b.json)) {
		static const char *const allowed[] = {"channel", "to", "contact", "email", "phone", NULL};
		jv v;
		jv_init(&v);
		jv_only(&v, b.json, "", allowed);
		strings(b.json, &v, 0);
		if (!jv_ok(&v)) {
			hr_free(b.resp);
			b.resp = NULL;
			api_problem_invalid(&b, v.errors); /* steals the errors */
		} else {
			jv_free(&v);
		}
	}
	json_decref(b.json);
	hr_free(b.resp);
	hr_free(method);
	hr_free(path);
	return 0;
}
