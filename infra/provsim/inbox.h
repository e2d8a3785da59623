/*
 * inbox.h -- the last N accepted messages, readable per recipient.
 *
 * A provider's customer sees the text on their phone; the demo and the
 * scenario tests need to see it too (the one-time code a contact must type
 * back, the referral code in the day-after SMS).  Off by default
 * (--inbox 0): benchmarks do not pay for it.  A ring of fixed slots under one
 * mutex; texts are cut at PS_INBOX_TEXT bytes.
 */
#ifndef PS_INBOX_H
#define PS_INBOX_H

#include <stddef.h>

#include <jansson.h>

#define PS_INBOX_TEXT 1024

typedef struct ps_inbox ps_inbox;

ps_inbox *ps_inbox_new(size_t slots);
void ps_inbox_free(ps_inbox *b);
/* Remember one accepted message.  text may be NULL (body-only channels keep the body's JSON). */
void ps_inbox_add(ps_inbox *b, const char *channel, const char *tenant, const char *to, const char *msg_id,
		  const char *text);
/* {"to": to, "messages": [{channel, tenant, message_id, text, at}, ...]}, newest first. */
json_t *ps_inbox_json(ps_inbox *b, const char *to);
void ps_inbox_reset(ps_inbox *b);

#endif
