/*
 * evoracle.h -- what the usual way (jansson, then the validators) reads of an
 * event batch, to hold api/eventscan.c against: used by test_eventscan.c and
 * the fuzz target.
 */
#ifndef HERALD_EVORACLE_H
#define HERALD_EVORACLE_H

#include <stdbool.h>
#include <stddef.h>

#include "eventscan.h"

/*
 * buf as api_body_json and the validators of events.c's parse_item read it:
 * true when it is {"events": [...]} of valid anonymous events, each with
 * its name, occurred_at (or NULL) and properties as hr_json_dump writes
 * them (or NULL).  Callers free with evoracle_free.
 */
typedef struct evoracle {
	size_t n;
	char *name[EVSCAN_MAX_EVENTS], *at[EVSCAN_MAX_EVENTS], *props[EVSCAN_MAX_EVENTS];
} evoracle;

bool evoracle_read(evoracle *o, const char *buf, size_t len);
void evoracle_free(evoracle *o);

/* NULL when evscan_read's reading of buf is the oracle's, else what differs
 * (static text).  Call only when evscan_read took buf. */
const char *evoracle_compare(const evscan *s, const char *buf, size_t len);

#endif
