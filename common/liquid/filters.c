/*
 * filters.c -- filter name resolution (parse time only).
 */
#include <string.h>

#include "filters.h"

lq_filter_fn lq_filter_lookup(const char *name, size_t n)
{
	static const lq_filter_def *const tables[] = {lq_filters_str, lq_filters_num, lq_filters_arr, lq_filters_date};
	for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
		for (const lq_filter_def *d = tables[t]; d->name; d++)
			if (strlen(d->name) == n && memcmp(d->name, name, n) == 0)
				return d->fn;
	return NULL;
}
