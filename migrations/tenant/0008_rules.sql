-- 0008_rules.sql -- trigger rules and the contacts going through them.
--
-- Two tables and three columns, no more: every table costs each tenant
-- creation milliseconds (docs/rules.md, "Storage").
--
-- rules: the marketer's definition (JSON, validated by the API, described in
-- docs/rules.md) plus the few columns the engine selects on.
CREATE TABLE rules (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    trigger_kind  text NOT NULL CHECK (trigger_kind IN ('event', 'date', 'inactivity')),
    trigger_event text,            -- trigger_kind = 'event': the event name
    definition    jsonb NOT NULL,
    daily_on      date,            -- date/inactivity rules: last herald day evaluated (UTC)
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rules_event ON rules (trigger_event) WHERE enabled;

-- rule_instances: one contact's way through one rule.  `step` is the index of
-- the next step to run and `due_at` (herald time) when; state says whether it
-- is still running.  entry_key implements the re-entry policy: '' for "once",
-- the period's start for "once per period", the trigger event id for
-- "always" -- a unique index then makes entering twice impossible, also when
-- the engine replays events after a crash.
CREATE TABLE rule_instances (
    id           bigserial PRIMARY KEY,
    rule_id      bigint NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    contact_id   bigint NOT NULL,
    entry_key    text NOT NULL,
    step         int NOT NULL DEFAULT 0,
    state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'done', 'exited')),
    due_at       timestamptz NOT NULL,
    entered_at   timestamptz NOT NULL,
    event_id     bigint,          -- the trigger event, NULL for date/inactivity triggers
    chain        smallint NOT NULL DEFAULT 0, -- rule-emitted events behind the trigger (loop guard)
    context      jsonb NOT NULL DEFAULT '{}', -- what templates see as `event`
    message_ids  bigint[] NOT NULL DEFAULT '{}', -- messages sent by this instance ("not opened")
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule_id, contact_id, entry_key)
);
CREATE INDEX rule_instances_due ON rule_instances (due_at) WHERE state = 'active';

-- Events emitted by rules carry how many rule hops led to them; the engine
-- stops a chain at a fixed depth (loop guard).  NULL for outside events.
ALTER TABLE events ADD COLUMN chain smallint;

-- The engine's position in events: every event with id <= this was looked at.
ALTER TABLE dispatch_state ADD COLUMN rules_event_seen bigint NOT NULL DEFAULT 0;
