/* copytext.c -- see copytext.h. */
#include "copytext.h"

#include <string.h>

#include "alloc.h"

void hr_copy_field(hr_copybuf *b, const char *s, bool last)
{
	size_t need = b->len + (s ? 2 * strlen(s) : 2) + 1;
	if (need > b->cap) {
		b->cap = need * 2;
		b->p = hr_realloc(b->p, b->cap);
	}
	char *o = b->p + b->len;
	if (!s) {
		*o++ = '\\';
		*o++ = 'N';
	}
	for (; s && *s; s++) {
		char e = *s == '\\' ? '\\' : *s == '\t' ? 't' : *s == '\n' ? 'n' : *s == '\r' ? 'r' : 0;
		if (e) {
			*o++ = '\\';
			*o++ = e;
		} else {
			*o++ = *s;
		}
	}
	*o++ = last ? '\n' : '\t';
	b->len = (size_t)(o - b->p);
}

void hr_copy_free(hr_copybuf *b)
{
	hr_free(b->p);
	*b = (hr_copybuf){0};
}
