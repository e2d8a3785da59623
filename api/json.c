/*
 * json.c -- validating request bodies field by field.
 *
 * The validator never stops at the first problem: a client fixing a form
 * wants every bad field at once.  Pointers are RFC 6901 (~ -> ~0, / -> ~1).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "api.h"

void jv_init(jv *v)
{
	v->errors = json_array();
}

void jv_free(jv *v)
{
	json_decref(v->errors);
	v->errors = NULL;
}

bool jv_ok(const jv *v)
{
	return json_array_size(v->errors) == 0;
}

char *jv_ptr(const char *base, const char *name)
{
	size_t n = strlen(base) + 2 * strlen(name) + 2;
	char *p = hr_malloc(n), *o = p;
	o += sprintf(o, "%s/", base);
	for (const char *s = name; *s; s++) {
		if (*s == '~' || *s == '/') {
			*o++ = '~';
			*o++ = *s == '~' ? '0' : '1';
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return p;
}

void jv_add(jv *v, const char *base, const char *name, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	json_t *e = json_object();
	char *ptr = name ? jv_ptr(base, name) : hr_strdup(base);
	json_t *p = json_string(ptr);
	/* A member name from the request that is not UTF-8 cannot reach here
	 * (the parser refuses it), but never let a pointer be null. */
	json_object_set_new(e, "pointer", p ? p : json_string(base));
	json_t *d = json_string(detail);
	json_object_set_new(e, "detail", d ? d : json_string("invalid"));
	hr_free(ptr);
	json_array_append_new(v->errors, e);
}

void jv_only(jv *v, json_t *obj, const char *base, const char *const *allowed)
{
	const char *k;
	json_t *val;
	json_object_foreach(obj, k, val) {
		bool ok = false;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = strcmp(*a, k) == 0;
		if (!ok)
			jv_add(v, base, k, "unknown field");
	}
}

static json_t *field(jv *v, json_t *obj, const char *base, const char *name, bool required)
{
	json_t *f = json_object_get(obj, name);
	if ((!f || json_is_null(f)) && required)
		jv_add(v, base, name, "is required");
	return json_is_null(f) ? NULL : f;
}

const char *jv_str(jv *v, json_t *obj, const char *base, const char *name, bool required, size_t maxlen)
{
	json_t *f = field(v, obj, base, name, required);
	if (!f)
		return NULL;
	if (!json_is_string(f)) {
		jv_add(v, base, name, "must be a string");
		return NULL;
	}
	const char *s = json_string_value(f);
	size_t n = json_string_length(f);
	if (n == 0) {
		jv_add(v, base, name, "must not be empty");
		return NULL;
	}
	if (n > maxlen) {
		jv_add(v, base, name, "must be at most %zu bytes", maxlen);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			jv_add(v, base, name, "must not contain control characters");
			return NULL;
		}
	return s;
}

json_t *jv_obj(jv *v, json_t *obj, const char *base, const char *name, bool required)
{
	json_t *f = field(v, obj, base, name, required);
	if (f && !json_is_object(f)) {
		jv_add(v, base, name, "must be an object");
		return NULL;
	}
	return f;
}

void jv_bool(jv *v, json_t *obj, const char *base, const char *name, bool required, bool *present, bool *out)
{
	json_t *f = field(v, obj, base, name, required);
	*present = false;
	if (!f)
		return;
	if (!json_is_boolean(f)) {
		jv_add(v, base, name, "must be true or false");
		return;
	}
	*present = true;
	*out = json_is_true(f);
}

void jv_int(jv *v, json_t *obj, const char *base, const char *name, bool required, int64_t min,
	    int64_t max, bool *present, int64_t *out)
{
	json_t *f = field(v, obj, base, name, required);
	*present = false;
	if (!f)
		return;
	if (!json_is_integer(f)) {
		jv_add(v, base, name, "must be an integer");
		return;
	}
	int64_t x = (int64_t)json_integer_value(f);
	if (x < min || x > max) {
		jv_add(v, base, name, "must be between %lld and %lld", (long long)min, (long long)max);
		return;
	}
	*present = true;
	*out = x;
}

static bool digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static int num(const char *s, int n)
{
	int x = 0;
	for (int i = 0; i < n; i++)
		x = x * 10 + (s[i] - '0');
	return x;
}

bool jv_rfc3339(const char *s)
{
	/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
	if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
	    !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) || s[13] != ':' ||
	    !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
		return false;
	int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2), h = num(s + 11, 2), mi = num(s + 14, 2),
	    se = num(s + 17, 2);
	/* The month's own length: PostgreSQL refuses 2026-02-30, and a 422 that
	 * points at the field beats its error. */
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) || h > 23 ||
	    mi > 59 || se > 60)
		return false;
	const char *p = s + 19;
	if (*p == '.') {
		p++;
		int n = 0;
		while (isdigit((unsigned char)p[n]))
			n++;
		if (n < 1 || n > 9)
			return false;
		p += n;
	}
	if (*p == 'Z' || *p == 'z')
		return p[1] == '\0';
	if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) && p[6] == '\0')
		return num(p + 1, 2) <= 23 && num(p + 4, 2) <= 59;
	return false;
}
