/*
 * rule.h -- a trigger rule's definition: parsed and validated once, used by
 * the API (which refuses a bad rule with the JSON pointer of its wrong part)
 * and by the rule engine in herald-scheduler (scheduler/rules.c, which runs
 * what the API stored).  The language is documented in docs/rules.md.
 *
 * A rule is: a trigger (an event with a property filter, optionally reaching
 * an audience of other contacts; a date attribute's anniversary; or
 * inactivity), a re-entry policy, exit events, and a sequence of steps, each
 * = wait (a delay and/or until a local time) + conditions + actions.
 * Conditions are segment conditions (common/segment.c); hr_rule_parse
 * compiles each once to check it, and keeps its JSON text for the engine,
 * which compiles it again at run time with "now" = herald time.
 *
 * Contract: hr_rule_parse returns false with err->kind HR_ERR_INVALID and
 * err->field = the JSON pointer of the first wrong part ("/steps/1/actions/0/
 * send/channel"); it never touches a database.  The parsed rule owns every
 * string (free with hr_rule_free).  No globals; thread-safe.
 */
#ifndef HERALD_RULE_H
#define HERALD_RULE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define HR_RULE_MAX_STEPS 20
#define HR_RULE_MAX_ACTIONS 10
#define HR_RULE_MAX_NAMES 10      /* exit events, audience events, inactivity events, unless */
#define HR_RULE_MAX_CHAIN 5       /* rule-emitted events in a row before the loop guard stops */

typedef enum { HR_TRIG_EVENT = 1, HR_TRIG_DATE, HR_TRIG_INACTIVITY } hr_trig_kind;
typedef enum { HR_REENTRY_ONCE = 1, HR_REENTRY_PERIOD, HR_REENTRY_ALWAYS } hr_reentry;
typedef enum {
	HR_ACT_SEND = 1,
	HR_ACT_SET,
	HR_ACT_INCREMENT,
	HR_ACT_EMIT,
	HR_ACT_WEBHOOK,
	HR_ACT_ISSUE_CODE,
} hr_act_kind;

/* An event name with an optional property filter (JSON text of the condition or NULL). */
typedef struct hr_rule_event {
	char *name;
	char *where;
} hr_rule_event;

typedef struct hr_rule_action {
	hr_act_kind kind;
	char *cond;            /* segment condition (JSON) the contact must match, or NULL */
	/* send / webhook */
	char *channel, *provider, *lane, *purpose, *to;
	char *content;         /* inline Liquid sources (JSON object text), or NULL */
	int64_t template_id;
	int template_version;
	/* set / increment */
	char *attribute;       /* a top-level attribute name */
	char *value;           /* set: JSON text of the value */
	double by;             /* increment */
	/* emit */
	char *event;
	char *properties;      /* JSON object text */
	/* issue_code */
	int64_t pool_id;       /* a code pool of the tenant (common/codes.h) */
} hr_rule_action;

typedef struct hr_rule_step {
	int64_t delay_s;       /* wait this long after the previous step (or the trigger) */
	int at_minute;         /* then until this local time (minutes after midnight), -1 = no */
	char *cond;            /* segment condition, or NULL */
	hr_rule_event unless[HR_RULE_MAX_NAMES]; /* skip when one happened since entry (about this instance) */
	int nunless;
	hr_rule_action actions[HR_RULE_MAX_ACTIONS];
	int nactions;
} hr_rule_step;

typedef struct hr_rule {
	char *name;
	bool enabled;
	hr_trig_kind trigger;
	/* event trigger */
	hr_rule_event on;                 /* the event and its filter */
	char *audience_events[HR_RULE_MAX_NAMES]; /* audience: contacts who did one of these... */
	int naudience;
	char *audience_match;             /* ...with this property equal to the trigger's... */
	int audience_days;                /* ...within this many days */
	/* date trigger */
	char *date_attribute;
	int days_before;
	/* inactivity trigger */
	int inactive_days;
	char *inactive_events[HR_RULE_MAX_NAMES]; /* none = any event */
	int ninactive;
	/* re-entry */
	hr_reentry reentry;
	int64_t period_s;
	hr_rule_event exits[HR_RULE_MAX_NAMES];
	int nexits;
	hr_rule_step steps[HR_RULE_MAX_STEPS];
	int nsteps;
} hr_rule;

/* Parse and validate; *out is heap (hr_rule_free). */
bool hr_rule_parse(const char *json, hr_rule **out, hr_err *err) HR_MUST_CHECK;
void hr_rule_free(hr_rule *r);

#endif
