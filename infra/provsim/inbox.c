/*
 * inbox.c -- the last N accepted messages.  See inbox.h.
 */
#include "inbox.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

typedef struct slot {
	char channel[16], tenant[64], to[257], msg_id[129];
	char text[PS_INBOX_TEXT];
	double at; /* seconds since the epoch */
	int used;
} slot;

struct ps_inbox {
	pthread_mutex_t mu;
	slot *s;
	size_t n, next;
};

ps_inbox *ps_inbox_new(size_t slots)
{
	ps_inbox *b = hr_calloc(1, sizeof *b);
	pthread_mutex_init(&b->mu, NULL);
	b->n = slots;
	b->s = hr_calloc(slots, sizeof *b->s);
	return b;
}

void ps_inbox_free(ps_inbox *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->mu);
	hr_free(b->s);
	hr_free(b);
}

static void copy(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}

void ps_inbox_add(ps_inbox *b, const char *channel, const char *tenant, const char *to, const char *msg_id,
		  const char *text)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&b->mu);
	slot *s = &b->s[b->next];
	b->next = (b->next + 1) % b->n;
	copy(s->channel, sizeof s->channel, channel);
	copy(s->tenant, sizeof s->tenant, tenant);
	copy(s->to, sizeof s->to, to);
	copy(s->msg_id, sizeof s->msg_id, msg_id);
	copy(s->text, sizeof s->text, text);
	s->at = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	s->used = 1;
	pthread_mutex_unlock(&b->mu);
}

json_t *ps_inbox_json(ps_inbox *b, const char *to)
{
	json_t *list = json_array();
	pthread_mutex_lock(&b->mu);
	for (size_t k = 0; k < b->n; k++) {
		slot *s = &b->s[(b->next + b->n - 1 - k) % b->n];
		if (!s->used)
			break;
		if (strcmp(s->to, to) != 0)
			continue;
		json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:f}", "channel", s->channel, "tenant",
						      s->tenant, "message_id", s->msg_id, "text", s->text, "at", s->at));
	}
	pthread_mutex_unlock(&b->mu);
	return json_pack("{s:s, s:o}", "to", to, "messages", list);
}

void ps_inbox_reset(ps_inbox *b)
{
	pthread_mutex_lock(&b->mu);
	memset(b->s, 0, b->n * sizeof *b->s);
	b->next = 0;
	pthread_mutex_unlock(&b->mu);
}
