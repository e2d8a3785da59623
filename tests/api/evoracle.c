/*
 * evoracle.c -- see evoracle.h.  The same rules as events.c's parse_item and
 * events_post, restated with the same validators (jv_*), so that a rule the
 * scanner forgets shows as a body it takes and this refuses.
 */
#include "evoracle.h"

#include <string.h>

#include "alloc.h"
#include "api.h"
#include "jsonout.h"

static char *field_str(jv *v, json_t *o, const char *name, bool required, size_t maxlen)
{
	const char *s = jv_str(v, o, "", name, required, maxlen);
	return s ? hr_strdup(s) : NULL;
}

bool evoracle_read(evoracle *o, const char *buf, size_t len)
{
	memset(o, 0, sizeof *o);
	api_req r = {0};
	api_body_json(&r, buf, len);
	bool ok = r.status == 0;
	hr_free(r.resp);
	jv v;
	jv_init(&v);
	json_t *list = json_object_get(r.json, "events");
	if (ok) {
		static const char *const top[] = {"events", NULL};
		jv_only(&v, r.json, "", top);
		ok = json_is_array(list) && json_array_size(list) >= 1 && json_array_size(list) <= EVSCAN_MAX_EVENTS;
	}
	for (size_t i = 0; ok && i < json_array_size(list); i++) {
		static const char *const allowed[] = {"name", "contact", "properties", "occurred_at", NULL};
		json_t *e = json_array_get(list, i);
		if (!json_is_object(e)) {
			ok = false;
			break;
		}
		jv_only(&v, e, "", allowed);
		o->name[i] = field_str(&v, e, "name", true, 128);
		json_t *c = json_object_get(e, "contact");
		if (c && !json_is_null(c)) /* a reference: looked up, never the fast path's */
			ok = false;
		json_t *p = jv_obj(&v, e, "", "properties", false);
		o->props[i] = p ? hr_json_dump(p) : NULL;
		o->at[i] = field_str(&v, e, "occurred_at", false, 40);
		if (o->at[i] && !jv_rfc3339(o->at[i]))
			ok = false;
		o->n = i + 1;
	}
	ok = ok && jv_ok(&v);
	jv_free(&v);
	json_decref(r.json);
	return ok;
}

void evoracle_free(evoracle *o)
{
	for (size_t i = 0; i < o->n; i++) {
		hr_free(o->name[i]);
		hr_free(o->at[i]);
		hr_free(o->props[i]);
	}
	o->n = 0;
}

static bool same(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* The properties the scanner wrote, read back and written as the usual way writes them. */
static char *redump(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return NULL;
	char *d = hr_json_dump(j);
	json_decref(j);
	return d;
}

const char *evoracle_compare(const evscan *s, const char *buf, size_t len)
{
	evoracle o;
	const char *bad = NULL;
	if (!evoracle_read(&o, buf, len)) {
		bad = "the scanner took a body that the usual way refuses";
		goto out;
	}
	if (o.n != s->n) {
		bad = "a different number of events";
		goto out;
	}
	for (size_t i = 0; i < s->n && !bad; i++) {
		const evscan_event *e = &s->ev[i];
		const char *props = e->props == EVSCAN_NONE ? NULL : s->text.p + e->props;
		if (!same(s->text.p + e->name, o.name[i]))
			bad = "a different name";
		else if (!same(e->at == EVSCAN_NONE ? NULL : s->text.p + e->at, o.at[i]))
			bad = "a different occurred_at";
		else if (!props != !o.props[i])
			bad = "properties present in one reading only";
		else if (props && !strchr(props, '\\') && strcmp(props, o.props[i]) != 0)
			/* without escapes, the text itself: numbers, order, compactness */
			bad = "different properties text";
		else if (props) {
			/* with escapes: the same value (jsonb reads the escapes as jansson does) */
			char *d = redump(props);
			if (!d || strcmp(d, o.props[i]) != 0)
				bad = d ? "different properties" : "properties that do not parse";
			hr_free(d);
		}
	}
out:
	evoracle_free(&o);
	return bad;
}
