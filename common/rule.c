/*
 * rule.c -- see rule.h.  One recursive-descent walk over the JSON; every
 * check fails with the pointer of the part it looked at.
 */
#include "rule.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "clock.h"
#include "jsonout.h"
#include "segment.h"

#define PTR_MAX 128

typedef struct px {
	char ptr[PTR_MAX];
	size_t len;
	hr_err *err;
} px;

static size_t push(px *x, const char *key)
{
	size_t m = x->len;
	x->len += (size_t)snprintf(x->ptr + x->len, sizeof x->ptr - x->len, "/%s", key);
	if (x->len >= sizeof x->ptr)
		x->len = sizeof x->ptr - 1;
	return m;
}

static size_t push_i(px *x, size_t i)
{
	char k[24];
	snprintf(k, sizeof k, "%zu", i);
	return push(x, k);
}

static void pop(px *x, size_t m)
{
	x->len = m;
	x->ptr[m] = '\0';
}

static bool bad(px *x, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool bad(px *x, const char *key, const char *fmt, ...)
{
	size_t m = key ? push(x, key) : x->len;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	hr_fail(x->err, HR_ERR_INVALID, x->len ? x->ptr : "/", "%s", msg);
	pop(x, m);
	return false;
}

static bool only(px *x, json_t *o, const char *const *allowed)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		bool ok = false;
		for (int i = 0; allowed[i] && !ok; i++)
			ok = !strcmp(k, allowed[i]);
		if (!ok)
			return bad(x, k, "unknown member");
	}
	return true;
}

static bool object(px *x, json_t *v, const char *key)
{
	return json_is_object(v) || bad(x, key, "must be an object");
}

/* A required (or optional, when out may stay NULL) string of 1..max bytes. */
static bool str(px *x, json_t *o, const char *key, bool required, size_t max, char **out)
{
	json_t *v = json_object_get(o, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return !required || bad(x, key, "is required");
	if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > max)
		return bad(x, key, "must be a string of 1 to %zu bytes", max);
	*out = hr_strdup(json_string_value(v));
	return true;
}

static bool name_ok(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_' || *s == '-'))
			return false;
	return true;
}

static bool int_in(px *x, json_t *o, const char *key, bool required, int64_t lo, int64_t hi, int64_t *out)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return !required || bad(x, key, "is required");
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return bad(x, key, "must be an integer from %lld to %lld", (long long)lo, (long long)hi);
	*out = json_integer_value(v);
	return true;
}

/* Compile a segment condition (or a property condition) to check it; keep its text. */
static bool condition(px *x, json_t *v, const char *key, bool props, char **out)
{
	char *text = hr_json_dump(v);
	hr_segment_opts o = {.now_unix = hr_clock_now() / 1000000};
	hr_segment_sql sql;
	hr_err e = {0};
	bool ok = props ? hr_segment_compile_where(text, &o, &sql, &e) : hr_segment_compile(text, &o, &sql, &e);
	hr_segment_sql_free(&sql);
	if (!ok) {
		size_t m = push(x, key);
		char full[PTR_MAX + 128];
		snprintf(full, sizeof full, "%s%s", x->ptr, strcmp(e.field, "/") ? e.field : "");
		hr_fail(x->err, HR_ERR_INVALID, full, "%s", e.msg);
		pop(x, m);
		hr_free(text);
		return false;
	}
	*out = text;
	return true;
}

/* {"event": name, "where": condition} */
static bool event_ref(px *x, json_t *v, hr_rule_event *out, const char *const *extra)
{
	const char *keys[8] = {"event", "where"};
	for (int i = 0; extra && extra[i]; i++)
		keys[2 + i] = extra[i];
	if (!object(x, v, NULL) || !only(x, v, keys) || !str(x, v, "event", true, 128, &out->name))
		return false;
	json_t *w = json_object_get(v, "where");
	return !w || condition(x, w, "where", true, &out->where);
}

static bool names(px *x, json_t *o, const char *key, bool required, char **out, int *n)
{
	json_t *v = json_object_get(o, key);
	*n = 0;
	if (!v)
		return !required || bad(x, key, "is required");
	if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > HR_RULE_MAX_NAMES)
		return bad(x, key, "must be a list of 1 to %d event names", HR_RULE_MAX_NAMES);
	size_t m = push(x, key);
	for (size_t i = 0; i < json_array_size(v); i++) {
		json_t *e = json_array_get(v, i);
		if (!json_is_string(e) || !json_string_length(e) || json_string_length(e) > 128) {
			char k[24];
			snprintf(k, sizeof k, "%zu", i);
			return bad(x, k, "must be an event name (1 to 128 bytes)");
		}
		out[(*n)++] = hr_strdup(json_string_value(e));
	}
	pop(x, m);
	return true;
}

static bool trigger(px *x, json_t *t, hr_rule *r)
{
	static const char *const keys[] = {"event", "where", "audience", "date", "inactive", NULL};
	if (!object(x, t, NULL) || !only(x, t, keys))
		return false;
	json_t *d = json_object_get(t, "date"), *in = json_object_get(t, "inactive"),
	       *ev = json_object_get(t, "event");
	if (!!d + !!in + !!ev != 1)
		return bad(x, NULL, "give exactly one of event, date and inactive");
	if (ev) {
		static const char *const extra[] = {"audience", NULL};
		r->trigger = HR_TRIG_EVENT;
		if (!event_ref(x, t, &r->on, extra))
			return false;
		json_t *a = json_object_get(t, "audience");
		if (!a)
			return true;
		static const char *const akeys[] = {"events", "match", "days", NULL};
		size_t m = push(x, "audience");
		int64_t days = 0;
		if (!object(x, a, NULL) || !only(x, a, akeys) ||
		    !names(x, a, "events", true, r->audience_events, &r->naudience) ||
		    !str(x, a, "match", true, 128, &r->audience_match) || !int_in(x, a, "days", true, 1, 3660, &days))
			return false;
		if (!name_ok(r->audience_match))
			return bad(x, "match", "must be a property name (letters, digits, _ and -)");
		r->audience_days = (int)days;
		pop(x, m);
		return true;
	}
	if (json_object_get(t, "where") || json_object_get(t, "audience"))
		return bad(x, json_object_get(t, "where") ? "where" : "audience", "belongs to event triggers");
	if (d) {
		static const char *const dkeys[] = {"attribute", "days_before", NULL};
		size_t m = push(x, "date");
		int64_t before = 0;
		r->trigger = HR_TRIG_DATE;
		if (!object(x, d, NULL) || !only(x, d, dkeys) || !str(x, d, "attribute", true, 128, &r->date_attribute) ||
		    !int_in(x, d, "days_before", false, 0, 366, &before))
			return false;
		if (!name_ok(r->date_attribute))
			return bad(x, "attribute", "must be an attribute name (letters, digits, _ and -)");
		r->days_before = (int)before;
		pop(x, m);
		return true;
	}
	static const char *const ikeys[] = {"days", "events", NULL};
	size_t m = push(x, "inactive");
	int64_t days = 0;
	r->trigger = HR_TRIG_INACTIVITY;
	if (!object(x, in, NULL) || !only(x, in, ikeys) || !int_in(x, in, "days", true, 1, 3660, &days) ||
	    !names(x, in, "events", false, r->inactive_events, &r->ninactive))
		return false;
	r->inactive_days = (int)days;
	pop(x, m);
	return true;
}

static bool channel_ok(const char *c)
{
	return !strcmp(c, "email") || !strcmp(c, "sms") || !strcmp(c, "messenger") || !strcmp(c, "push");
}

static bool send_like(px *x, json_t *s, hr_rule_action *a, bool webhook)
{
	static const char *const skeys[] = {"channel", "provider", "template", "content", "lane", "purpose", NULL};
	static const char *const wkeys[] = {"provider", "to", "template", "content", NULL};
	if (!object(x, s, NULL) || !only(x, s, webhook ? wkeys : skeys))
		return false;
	if (webhook) {
		a->channel = hr_strdup("webhook");
		a->lane = hr_strdup("transactional");
		if (!str(x, s, "to", false, 512, &a->to))
			return false;
		if (a->to && strncmp(a->to, "http://", 7) && strncmp(a->to, "https://", 8))
			return bad(x, "to", "must be an http(s) URL");
	} else {
		if (!str(x, s, "channel", true, 16, &a->channel) || !str(x, s, "lane", false, 16, &a->lane) ||
		    !str(x, s, "purpose", false, 64, &a->purpose))
			return false;
		if (!channel_ok(a->channel))
			return bad(x, "channel", "must be email, sms, messenger or push (webhooks: the webhook action)");
		if (!a->lane)
			a->lane = hr_strdup("bulk");
		if (strcmp(a->lane, "bulk") && strcmp(a->lane, "transactional"))
			return bad(x, "lane", "must be bulk or transactional");
		if (!a->purpose)
			a->purpose = hr_strdup("marketing");
	}
	if (!str(x, s, "provider", true, 40, &a->provider))
		return false;
	if (!name_ok(a->provider))
		return bad(x, "provider", "is not an account name");
	json_t *tpl = json_object_get(s, "template"), *content = json_object_get(s, "content");
	if (!!tpl == !!content)
		return bad(x, tpl ? "content" : "template", "give exactly one of template and content");
	if (content) {
		if (!json_is_object(content) || !json_object_size(content))
			return bad(x, "content", "must be an object of Liquid sources, e.g. {\"text\": \"...\"}");
		const char *k;
		json_t *v;
		size_t m = push(x, "content");
		json_object_foreach(content, k, v)
			if (!json_is_string(v))
				return bad(x, k, "must be a string (a Liquid source)");
		pop(x, m);
		a->content = hr_json_dump(content);
		return true;
	}
	static const char *const tkeys[] = {"id", "version", NULL};
	size_t m = push(x, "template");
	int64_t id = 0, ver = 0;
	if (!object(x, tpl, NULL) || !only(x, tpl, tkeys) || !int_in(x, tpl, "id", true, 1, INT64_MAX, &id) ||
	    !int_in(x, tpl, "version", true, 1, 1000000, &ver))
		return false;
	a->template_id = id;
	a->template_version = (int)ver;
	pop(x, m);
	return true;
}

static bool action(px *x, json_t *v, hr_rule_action *a)
{
	static const char *const kinds[] = {"send", "set", "increment", "emit", "webhook", "issue_code", NULL};
	if (!object(x, v, NULL))
		return false;
	json_t *cond = json_object_get(v, "if");
	if (cond && !condition(x, cond, "if", false, &a->cond))
		return false;
	int found = 0;
	const char *k;
	json_t *body = NULL;
	json_object_foreach(v, k, body) {
		if (!strcmp(k, "if"))
			continue;
		int i = 0;
		while (kinds[i] && strcmp(kinds[i], k))
			i++;
		if (!kinds[i])
			return bad(x, k, "unknown action: expected send, set, increment, emit, webhook or issue_code (and if)");
		found++;
		a->kind = (hr_act_kind)(i + 1);
	}
	if (found != 1)
		return bad(x, NULL, "an action is one of send, set, increment, emit, webhook or issue_code (with an optional if)");
	static const char *const names_[] = {"", "send", "set", "increment", "emit", "webhook", "issue_code"};
	body = json_object_get(v, names_[a->kind]);
	size_t m = push(x, names_[a->kind]);
	bool ok = false;
	switch (a->kind) {
	case HR_ACT_SEND:
	case HR_ACT_WEBHOOK:
		ok = send_like(x, body, a, a->kind == HR_ACT_WEBHOOK);
		break;
	case HR_ACT_SET:
	case HR_ACT_INCREMENT: {
		static const char *const setk[] = {"attribute", "value", NULL};
		static const char *const inck[] = {"attribute", "by", NULL};
		bool set = a->kind == HR_ACT_SET;
		if (!object(x, body, NULL) || !only(x, body, set ? setk : inck) ||
		    !str(x, body, "attribute", true, 128, &a->attribute))
			break;
		if (!name_ok(a->attribute)) {
			bad(x, "attribute", "must be an attribute name (letters, digits, _ and -)");
			break;
		}
		json_t *val = json_object_get(body, set ? "value" : "by");
		if (set) {
			if (!val) {
				bad(x, "value", "is required (null removes the attribute)");
				break;
			}
			a->value = hr_json_dump(val);
		} else {
			a->by = 1;
			if (val && (!json_is_number(val) || !isfinite(json_number_value(val)) ||
				    fabs(json_number_value(val)) > 1e12)) {
				bad(x, "by", "must be a number (default 1)");
				break;
			}
			if (val)
				a->by = json_number_value(val);
		}
		ok = true;
		break;
	}
	case HR_ACT_EMIT: {
		static const char *const ek[] = {"event", "properties", NULL};
		if (!object(x, body, NULL) || !only(x, body, ek) || !str(x, body, "event", true, 128, &a->event))
			break;
		json_t *p = json_object_get(body, "properties");
		if (p && !json_is_object(p)) {
			bad(x, "properties", "must be an object");
			break;
		}
		a->properties = p ? hr_json_dump(p) : hr_strdup("{}");
		ok = true;
		break;
	}
	case HR_ACT_ISSUE_CODE: {
		/* {"pool": id}: that the pool exists is the API's check (it needs the tenant's schema). */
		static const char *const ik[] = {"pool", NULL};
		ok = object(x, body, NULL) && only(x, body, ik) && int_in(x, body, "pool", true, 1, INT64_MAX, &a->pool_id);
		break;
	}
	}
	if (ok)
		pop(x, m);
	return ok;
}

/* "15m", "1d", or seconds. */
static bool duration(px *x, json_t *o, const char *key, int64_t *out)
{
	json_t *v = json_object_get(o, key);
	*out = 0;
	if (!v)
		return true;
	hr_err e = {0};
	int64_t us = 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 10LL * 366 * 86400) {
		*out = json_integer_value(v);
		return true;
	}
	if (!json_is_string(v) || !hr_duration_parse(json_string_value(v), &us, &e))
		return bad(x, key, "must be a duration such as \"90s\", \"15m\", \"1h\", \"3d\" or \"1w\" (or seconds)");
	*out = us / 1000000;
	return true;
}

static bool step(px *x, json_t *v, hr_rule_step *s)
{
	static const char *const keys[] = {"wait", "if", "unless", "actions", NULL};
	if (!object(x, v, NULL) || !only(x, v, keys))
		return false;
	s->at_minute = -1;
	json_t *w = json_object_get(v, "wait");
	if (w) {
		static const char *const wk[] = {"delay", "until", NULL};
		size_t m = push(x, "wait");
		if (!object(x, w, NULL) || !only(x, w, wk) || !duration(x, w, "delay", &s->delay_s))
			return false;
		json_t *u = json_object_get(w, "until");
		if (u) {
			int hh = -1, mm = -1;
			char tail = 0;
			if (!json_is_string(u) || sscanf(json_string_value(u), "%2d:%2d%c", &hh, &mm, &tail) != 2 ||
			    hh < 0 || hh > 23 || mm < 0 || mm > 59 || json_string_length(u) != 5)
				return bad(x, "until", "must be a local time HH:MM, e.g. \"10:00\"");
			s->at_minute = hh * 60 + mm;
		}
		pop(x, m);
	}
	json_t *c = json_object_get(v, "if");
	if (c && !condition(x, c, "if", false, &s->cond))
		return false;
	json_t *un = json_object_get(v, "unless");
	if (un) {
		size_t m = push(x, "unless");
		if (!json_is_array(un) || json_array_size(un) < 1 || json_array_size(un) > HR_RULE_MAX_NAMES)
			return bad(x, NULL, "must be a list of 1 to %d events", HR_RULE_MAX_NAMES);
		for (size_t i = 0; i < json_array_size(un); i++) {
			size_t m2 = push_i(x, i);
			if (!event_ref(x, json_array_get(un, i), &s->unless[s->nunless++], NULL))
				return false;
			pop(x, m2);
		}
		pop(x, m);
	}
	json_t *acts = json_object_get(v, "actions");
	if (!acts)
		return bad(x, "actions", "is required");
	size_t m = push(x, "actions");
	if (!json_is_array(acts) || json_array_size(acts) < 1 || json_array_size(acts) > HR_RULE_MAX_ACTIONS)
		return bad(x, NULL, "must be a list of 1 to %d actions", HR_RULE_MAX_ACTIONS);
	for (size_t i = 0; i < json_array_size(acts); i++) {
		size_t m2 = push_i(x, i);
		s->nactions++;
		if (!action(x, json_array_get(acts, i), &s->actions[i]))
			return false;
		pop(x, m2);
	}
	pop(x, m);
	return true;
}

static bool parse(px *x, json_t *root, hr_rule *r)
{
	static const char *const keys[] = {"name", "enabled", "trigger", "reentry", "exit", "steps", NULL};
	if (!json_is_object(root))
		return bad(x, NULL, "a rule is a JSON object");
	if (!only(x, root, keys) || !str(x, root, "name", true, 200, &r->name))
		return false;
	json_t *en = json_object_get(root, "enabled");
	if (en && !json_is_boolean(en))
		return bad(x, "enabled", "must be true or false");
	r->enabled = !en || json_is_true(en);
	json_t *t = json_object_get(root, "trigger");
	if (!t)
		return bad(x, "trigger", "is required");
	size_t m = push(x, "trigger");
	if (!trigger(x, t, r))
		return false;
	pop(x, m);
	/* Re-entry: "once" (default), "always", or {"once_per": duration}. */
	json_t *re = json_object_get(root, "reentry");
	r->reentry = HR_REENTRY_ONCE;
	if (re) {
		if (json_is_string(re) && !strcmp(json_string_value(re), "once"))
			r->reentry = HR_REENTRY_ONCE;
		else if (json_is_string(re) && !strcmp(json_string_value(re), "always"))
			r->reentry = HR_REENTRY_ALWAYS;
		else if (json_is_object(re) && json_object_size(re) == 1 && json_object_get(re, "once_per")) {
			m = push(x, "reentry");
			if (!duration(x, re, "once_per", &r->period_s))
				return false;
			if (r->period_s < 60)
				return bad(x, "once_per", "must be at least a minute");
			pop(x, m);
			r->reentry = HR_REENTRY_PERIOD;
		} else
			return bad(x, "reentry", "must be \"once\", \"always\" or {\"once_per\": \"30d\"}");
	}
	json_t *ex = json_object_get(root, "exit");
	if (ex) {
		m = push(x, "exit");
		if (!json_is_array(ex) || json_array_size(ex) > HR_RULE_MAX_NAMES)
			return bad(x, NULL, "must be a list of up to %d events", HR_RULE_MAX_NAMES);
		for (size_t i = 0; i < json_array_size(ex); i++) {
			size_t m2 = push_i(x, i);
			if (!event_ref(x, json_array_get(ex, i), &r->exits[r->nexits++], NULL))
				return false;
			pop(x, m2);
		}
		pop(x, m);
	}
	json_t *st = json_object_get(root, "steps");
	if (!st)
		return bad(x, "steps", "is required");
	m = push(x, "steps");
	if (!json_is_array(st) || json_array_size(st) < 1 || json_array_size(st) > HR_RULE_MAX_STEPS)
		return bad(x, NULL, "must be a list of 1 to %d steps", HR_RULE_MAX_STEPS);
	for (size_t i = 0; i < json_array_size(st); i++) {
		size_t m2 = push_i(x, i);
		r->nsteps++;
		if (!step(x, json_array_get(st, i), &r->steps[i]))
			return false;
		pop(x, m2);
	}
	pop(x, m);
	return true;
}

bool hr_rule_parse(const char *json, hr_rule **out, hr_err *err)
{
	*out = NULL;
	px x = {.err = err};
	json_error_t je;
	json_t *root = json_loads(json ? json : "", JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return hr_fail(err, HR_ERR_INVALID, "/", "invalid JSON at line %d column %d: %s", je.line, je.column,
			       je.text);
	hr_rule *r = hr_calloc(1, sizeof *r);
	bool ok = parse(&x, root, r);
	json_decref(root);
	if (!ok) {
		hr_rule_free(r);
		return false;
	}
	*out = r;
	return true;
}

static void event_free(hr_rule_event *e)
{
	hr_free(e->name);
	hr_free(e->where);
}

void hr_rule_free(hr_rule *r)
{
	if (!r)
		return;
	hr_free(r->name);
	event_free(&r->on);
	for (int i = 0; i < r->naudience; i++)
		hr_free(r->audience_events[i]);
	hr_free(r->audience_match);
	hr_free(r->date_attribute);
	for (int i = 0; i < r->ninactive; i++)
		hr_free(r->inactive_events[i]);
	for (int i = 0; i < r->nexits; i++)
		event_free(&r->exits[i]);
	for (int i = 0; i < r->nsteps; i++) {
		hr_rule_step *s = &r->steps[i];
		hr_free(s->cond);
		for (int j = 0; j < s->nunless; j++)
			event_free(&s->unless[j]);
		for (int j = 0; j < s->nactions; j++) {
			hr_rule_action *a = &s->actions[j];
			hr_free(a->cond);
			hr_free(a->channel);
			hr_free(a->provider);
			hr_free(a->lane);
			hr_free(a->purpose);
			hr_free(a->to);
			hr_free(a->content);
			hr_free(a->attribute);
			hr_free(a->value);
			hr_free(a->event);
			hr_free(a->properties);
		}
	}
	hr_free(r);
}
