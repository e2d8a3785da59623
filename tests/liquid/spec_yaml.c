/*
 * spec_yaml.c -- see spec_yaml.h.  An event-driven libyaml parser building
 * jansson values with an explicit stack.
 */
#include "spec_yaml.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

typedef struct anchor {
	char *name;
	json_t *v;
} anchor;

typedef struct frame {
	json_t *v;      /* container */
	char *key;      /* pending mapping key (mappings only) */
	char *anchor;   /* anchor to register when the container closes */
} frame;

typedef struct loader {
	anchor *anchors;
	size_t nanchors, capanchors;
	frame stack[256];
	int depth;
	json_t *root;
} loader;

static void add_anchor(loader *l, const char *name, json_t *v)
{
	if (l->nanchors == l->capanchors) {
		l->capanchors = l->capanchors ? l->capanchors * 2 : 64;
		l->anchors = realloc(l->anchors, l->capanchors * sizeof *l->anchors);
	}
	l->anchors[l->nanchors].name = strdup(name);
	l->anchors[l->nanchors].v = json_incref(v);
	l->nanchors++;
}

static json_t *find_anchor(loader *l, const char *name)
{
	for (size_t i = l->nanchors; i-- > 0;)
		if (strcmp(l->anchors[i].name, name) == 0)
			return l->anchors[i].v;
	return NULL;
}

static bool is_int(const char *s, long long *out)
{
	const char *p = s;
	if (*p == '-' || *p == '+')
		p++;
	if (!isdigit((unsigned char)*p))
		return false;
	char buf[64];
	size_t k = 0;
	for (const char *q = s; *q; q++) {
		if (*q == '_')
			continue;
		if (!(isdigit((unsigned char)*q) || ((*q == '-' || *q == '+') && q == s)))
			return false;
		if (k + 1 >= sizeof buf)
			return false;
		buf[k++] = *q;
	}
	buf[k] = 0;
	errno = 0;
	*out = strtoll(buf, NULL, 10);
	return errno == 0;
}

static bool is_float(const char *s, double *out)
{
	if (!strcmp(s, ".inf") || !strcmp(s, ".Inf") || !strcmp(s, "+.inf")) {
		*out = 1.0 / 0.0;
		return true;
	}
	if (!strcmp(s, "-.inf") || !strcmp(s, "-.Inf")) {
		*out = -1.0 / 0.0;
		return true;
	}
	const char *p = s;
	if (*p == '-' || *p == '+')
		p++;
	bool digits = false, dot = false, exp = false;
	for (; *p; p++) {
		if (isdigit((unsigned char)*p))
			digits = true;
		else if (*p == '.' && !dot && !exp)
			dot = true;
		else if ((*p == 'e' || *p == 'E') && digits && !exp) {
			exp = true;
			if (p[1] == '-' || p[1] == '+')
				p++;
		} else if (*p == '_')
			continue;
		else
			return false;
	}
	if (!digits || (!dot && !exp))
		return false;
	*out = strtod(s, NULL);
	return true;
}

static json_t *scalar(const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	if (tag && strcmp(tag, "tag:yaml.org,2002:str") == 0)
		return json_stringn(s, n);
	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return json_stringn(s, n);
	if (n == 0 || !strcmp(s, "~") || !strcasecmp(s, "null"))
		return json_null();
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") || !strcmp(s, "yes") || !strcmp(s, "Yes") || !strcmp(s, "on") || !strcmp(s, "On"))
		return json_true();
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE") || !strcmp(s, "no") || !strcmp(s, "No") || !strcmp(s, "off") || !strcmp(s, "Off"))
		return json_false();
	long long i;
	double d;
	if (is_int(s, &i))
		return json_integer(i);
	if (is_float(s, &d))
		return json_real(d);
	return json_stringn(s, n);
}

/* Attach v to the current container (steals v). */
static bool attach(loader *l, json_t *v, char *err, size_t errcap)
{
	if (l->depth == 0) {
		if (!l->root)
			l->root = v;
		else
			json_decref(v);
		return true;
	}
	frame *f = &l->stack[l->depth - 1];
	if (json_is_array(f->v)) {
		json_array_append_new(f->v, v);
		return true;
	}
	if (!f->key) {
		/* the value is a key */
		if (json_is_string(v)) {
			f->key = strndup(json_string_value(v), json_string_length(v));
		} else if (json_is_integer(v)) {
			char tmp[32];
			snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
			f->key = strdup(tmp);
		} else if (json_is_null(v)) {
			f->key = strdup("");
		} else if (json_is_true(v) || json_is_false(v)) {
			f->key = strdup(json_is_true(v) ? "true" : "false");
		} else if (json_is_real(v)) {
			char tmp[64];
			snprintf(tmp, sizeof tmp, "%g", json_real_value(v));
			f->key = strdup(tmp);
		} else {
			snprintf(err, errcap, "unsupported mapping key type");
			json_decref(v);
			return false;
		}
		json_decref(v);
		return true;
	}
	if (!strcmp(f->key, "<<") && json_is_object(v)) {
		/* merge key */
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x)
			if (!json_object_get(f->v, k))
				json_object_set(f->v, k, x);
		json_decref(v);
	} else {
		json_object_set_new(f->v, f->key, v);
	}
	free(f->key);
	f->key = NULL;
	return true;
}

bool spec_yaml_load(const char *path, json_t **out, char *err, size_t errcap)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		snprintf(err, errcap, "%s: %s", path, strerror(errno));
		return false;
	}
	yaml_parser_t p;
	yaml_parser_initialize(&p);
	yaml_parser_set_input_file(&p, fp);
	loader l;
	memset(&l, 0, sizeof l);
	bool ok = true, done = false;
	while (ok && !done) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&p, &ev)) {
			snprintf(err, errcap, "%s:%zu: %s", path, p.problem_mark.line + 1, p.problem ? p.problem : "YAML error");
			ok = false;
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_SCALAR_EVENT: {
			json_t *v = scalar(&ev);
			if (ev.data.scalar.anchor)
				add_anchor(&l, (const char *)ev.data.scalar.anchor, v);
			ok = attach(&l, v, err, errcap);
			break;
		}
		case YAML_ALIAS_EVENT: {
			json_t *v = find_anchor(&l, (const char *)ev.data.alias.anchor);
			if (!v) {
				snprintf(err, errcap, "%s: unknown alias %s", path, ev.data.alias.anchor);
				ok = false;
				break;
			}
			ok = attach(&l, json_incref(v), err, errcap);
			break;
		}
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			if (l.depth >= 255) {
				snprintf(err, errcap, "%s: nesting too deep", path);
				ok = false;
				break;
			}
			frame *f = &l.stack[l.depth++];
			f->v = ev.type == YAML_SEQUENCE_START_EVENT ? json_array() : json_object();
			f->key = NULL;
			const yaml_char_t *an = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
			f->anchor = an ? strdup((const char *)an) : NULL;
			break;
		}
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT: {
			frame f = l.stack[--l.depth];
			free(f.key);
			if (f.anchor) {
				add_anchor(&l, f.anchor, f.v);
				free(f.anchor);
			}
			ok = attach(&l, f.v, err, errcap);
			break;
		}
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	while (l.depth > 0) {
		frame *f = &l.stack[--l.depth];
		json_decref(f->v);
		free(f->key);
		free(f->anchor);
	}
	for (size_t i = 0; i < l.nanchors; i++) {
		free(l.anchors[i].name);
		json_decref(l.anchors[i].v);
	}
	free(l.anchors);
	yaml_parser_delete(&p);
	fclose(fp);
	if (!ok) {
		json_decref(l.root);
		return false;
	}
	*out = l.root ? l.root : json_null();
	return true;
}
