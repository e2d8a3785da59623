/*
 * jsonout.c -- see jsonout.h.
 */
#include "jsonout.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "strbuf.h"

int hr_num_text(char *out, size_t cap, double d)
{
	/* NaN and infinities are not JSON (jansson refuses to make them); keep the text valid anyway. */
	if (!isfinite(d))
		return snprintf(out, cap, "null");
	/* The fewest significant digits that read back as d ... */
	int prec;
	for (prec = 1; prec < 17; prec++) {
		snprintf(out, cap, "%.*e", prec - 1, d);
		if (strtod(out, NULL) == d)
			break;
	}
	/* ... written without an exponent where %.17g writes none (100.0, not 1e+02). */
	int exp10 = atoi(strchr(out, 'e') + 1);
	if (exp10 >= 0 && exp10 < 17 && prec < exp10 + 1)
		prec = exp10 + 1;
	return snprintf(out, cap, "%.*g", prec, d);
}

int hr_json_real(char *out, size_t cap, double d)
{
	int n = hr_num_text(out, cap, d);
	/* %g may print an integer ("1", "100"): jansson, and JSON readers, then see an integer. */
	if (!strpbrk(out, ".eEn") && (size_t)n + 2 < cap) {
		memcpy(out + n, ".0", 3);
		n += 2;
	}
	return n;
}

static void put_string(hr_sbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	hr_sbuf_addn(b, "\"", 1);
	size_t run = 0; /* bytes copied as they are, pending */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			run++;
			continue;
		}
		hr_sbuf_addn(b, s + i - run, run);
		run = 0;
		char esc[7] = {'\\', 0};
		size_t el = 2;
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			el = 6;
		}
		hr_sbuf_addn(b, esc, el);
	}
	hr_sbuf_addn(b, s + n - run, run);
	hr_sbuf_addn(b, "\"", 1);
}

static void put_value(hr_sbuf *b, const json_t *v)
{
	char num[40];
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		hr_sbuf_addn(b, "{", 1);
		const char *k;
		json_t *x;
		bool first = true;
		/* json_object_foreach takes a non-const object; it does not change it. */
		json_object_foreach ((json_t *)v, k, x) {
			if (!first)
				hr_sbuf_addn(b, ",", 1);
			first = false;
			put_string(b, k, strlen(k));
			hr_sbuf_addn(b, ":", 1);
			put_value(b, x);
		}
		hr_sbuf_addn(b, "}", 1);
		break;
	}
	case JSON_ARRAY:
		hr_sbuf_addn(b, "[", 1);
		for (size_t i = 0; i < json_array_size(v); i++) {
			if (i)
				hr_sbuf_addn(b, ",", 1);
			put_value(b, json_array_get(v, i));
		}
		hr_sbuf_addn(b, "]", 1);
		break;
	case JSON_STRING:
		put_string(b, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		hr_sbuf_addn(b, num, (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
		break;
	case JSON_REAL:
		hr_sbuf_addn(b, num, (size_t)hr_json_real(num, sizeof num, json_real_value(v)));
		break;
	case JSON_TRUE:
		hr_sbuf_addn(b, "true", 4);
		break;
	case JSON_FALSE:
		hr_sbuf_addn(b, "false", 5);
		break;
	case JSON_NULL:
		hr_sbuf_addn(b, "null", 4);
		break;
	}
}

char *hr_json_dump(const json_t *v)
{
	hr_sbuf b = {0};
	if (v)
		put_value(&b, v);
	else
		hr_sbuf_addn(&b, "null", 4);
	return b.p;
}
