-- 0011_cascade.sql -- the channel cascade (docs/cascade.md): a message names
-- fallback channels, each sent to the recipients of the previous step that
-- have no delivery receipt when its validity window ends.
--
-- Columns, not a table (every table costs each tenant creation time), and the
-- cascade is kept per outbox batch, not per message: a campaign batch of
-- 4,096 messages that falls back to SMS is one UPDATE of its row and one new
-- outbox row, whatever the number of undelivered messages.
--
--   cascade       the steps still to come for this batch's undelivered
--                 messages: a JSON array of {channel, provider, template_id,
--                 template_version | content, to, purpose, after_s}; NULL when
--                 the batch has no fallback.
--   cascade_at    herald time at which the undelivered messages fall back;
--                 NULL once the scheduler advanced the cascade (or never).
--   cascade_prev  the batch this one is the fallback of (NULL: a first step).
--   cascade_next  the fallback batch created from this one (NULL: none, e.g.
--                 every message was delivered).
--
-- The scheduler advances a due batch in one statement that inserts the
-- fallback batch and clears cascade_at, so a cascade step is taken exactly
-- once (scheduler/campaigns.c, common/cascade.c).
ALTER TABLE outbox ADD COLUMN cascade jsonb;
ALTER TABLE outbox ADD COLUMN cascade_at timestamptz;
ALTER TABLE outbox ADD COLUMN cascade_prev bigint;
ALTER TABLE outbox ADD COLUMN cascade_next bigint;
CREATE INDEX outbox_cascade_due ON outbox (cascade_at) WHERE cascade_at IS NOT NULL;

-- A campaign's validity window for its `channel` before `fallback` is sent
-- (seconds; used only when fallback is set).
ALTER TABLE campaigns ADD COLUMN fallback_after_s int NOT NULL DEFAULT 600
    CHECK (fallback_after_s BETWEEN 60 AND 604800);
