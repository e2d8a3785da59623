/*
 * jsonout.h -- JSON text from jansson values, with every number as sent.
 *
 * jansson's json_dumps writes a real with 17 significant digits, so a price of
 * 19.99 that a client sent becomes 19.989999999999998 in what herald stores
 * (an event's revenue, a contact's attribute, a message's data) and shows
 * back; PostgreSQL's jsonb keeps that text as an exact numeric, so sums in
 * reports and equality in segments see the long value.  hr_json_dump writes
 * each real with the fewest significant digits that read back as the same
 * double (19.99, 0.1; 0.30000000000000004 where the client sent that), and
 * always with a '.' or an exponent so that it stays a real (1.0).  Everything
 * else is as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes it: objects
 * in their keys' order, UTF-8 as is, the same escapes.
 */
#ifndef HERALD_JSONOUT_H
#define HERALD_JSONOUT_H

#include <stddef.h>

#include <jansson.h>

/* Compact JSON text of v (any value, or "null" for NULL); hr_free() it. */
char *hr_json_dump(const json_t *v);

/* d (finite) in the fewest significant digits that read back as d: "19.99", "1", "1e+300".
 * Returns the length; out needs 32 bytes. */
int hr_num_text(char *out, size_t cap, double d);
/* The same as a JSON real: with ".0" where it would read as an integer ("1.0"). */
int hr_json_real(char *out, size_t cap, double d);

#endif
