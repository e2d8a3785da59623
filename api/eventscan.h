/*
 * eventscan.h -- the common event batch, read in one pass without a JSON tree.
 *
 * POST /v1/events with {"events": [...]} is herald-api's busiest request, and
 * building jansson's tree of it (an object, a hash table and a string per
 * member, freed again) and writing the properties back out was ~40 % of
 * herald-api's CPU in bench/api, on a machine the ingest keeps busy.
 * evscan_read reads such a body in one pass and writes each event's
 * properties straight out as the JSON text events.c stores.
 *
 * It only ever accepts: it never explains.  A body it is not sure of gives
 * false, and the request goes the usual way (api_body_json, then events.c's
 * validators), which answers it as before: the fast path changes no answer.
 * It takes a body that is {"events": [1 to 1,000 events]} and nothing else,
 * each event having only name (a string of 1 to 128 bytes without escapes or
 * control characters), properties (an object or null), occurred_at (an RFC
 * 3339 string without escapes, or null) and contact only as null; and in the
 * properties, JSON that jansson reads with JSON_REJECT_DUPLICATES and no
 * number that jansson refuses or that hr_json_dump would write otherwise.
 * It gives up on: an escape in a key, more than EVSCAN_MAX_KEYS keys in one
 * object, nesting deeper than EVSCAN_MAX_DEPTH, an integer of 19 digits or
 * more, -0, and anything jansson or the validators refuse.
 *
 * The properties are written compact, in the order sent; strings as sent
 * (their escapes too: PostgreSQL's jsonb reads them the same), integers as
 * sent, reals as hr_json_dump writes them (jsonout.h).  So the jsonb stored
 * is the same as through jansson's tree (tests/api/test_eventscan.c checks it
 * against jansson, tests/api/test_api.c in the database).
 */
#ifndef HERALD_EVENTSCAN_H
#define HERALD_EVENTSCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

#define EVSCAN_MAX_EVENTS 1000
#define EVSCAN_MAX_KEYS 32
#define EVSCAN_MAX_DEPTH 16
#define EVSCAN_NONE ((size_t)-1)

/* One event: offsets into evscan.text of NUL-terminated strings, EVSCAN_NONE when absent. */
typedef struct evscan_event {
	size_t name, props, at;
} evscan_event;

typedef struct evscan {
	hr_sbuf text;       /* the names, properties and times, each NUL-terminated */
	size_t n;
	evscan_event ev[EVSCAN_MAX_EVENTS];
} evscan;

/* Read buf[0..len); true with s filled when the fast path takes it.  s
 * needs evscan_free either way. */
bool evscan_read(evscan *s, const char *buf, size_t len);
void evscan_free(evscan *s);

#endif
