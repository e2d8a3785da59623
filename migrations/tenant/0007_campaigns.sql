-- 0007_campaigns.sql -- segments, campaigns, their runs, and the batches a run
-- holds until their (herald) time comes.  Four tables, no extra indexes: each
-- table costs every tenant creation a few milliseconds (docs/architecture.md).
--
-- Times in these tables are herald time (herald_clock.now()), not the
-- database clock: a test or the demo moves herald time forward and every
-- campaign acts as if that much time had passed.

-- A segment: a rule of the language of docs/segments.md.  refs lists the
-- segments its rule names ({"segment": id}), so a referenced segment cannot be
-- deleted from under it.
CREATE TABLE segments (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    rule       jsonb NOT NULL,
    refs       bigint[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A campaign: segment + per-channel template and provider account + calendar.
-- state: active (runs when due), paused, cancelled, completed (no run left and
-- nothing held).  next_run_at is the next calendar run in herald time (NULL:
-- none); the scheduler's campaign runner advances it in the run's transaction.
CREATE TABLE campaigns (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    segment_id   bigint NOT NULL REFERENCES segments (id),
    channel      text NOT NULL CHECK (channel IN ('email', 'sms', 'messenger')),
    messages     jsonb NOT NULL,   -- {"<channel>": {"template": id, "provider": "name"}, ...}
    fallback     text,             -- the cascade's next channel (recorded; a key of messages)
    calendar     jsonb NOT NULL,   -- scheduler/calendar.h, docs/calendar.md
    state        text NOT NULL CHECK (state IN ('active', 'paused', 'cancelled', 'completed')),
    activated_at timestamptz NOT NULL,
    next_run_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per run, unique per (campaign, scheduled instant): the runner
-- inserts it in the same transaction as the run's outbox rows, so a crash
-- never materialises a run twice nor loses one.
CREATE TABLE campaign_runs (
    id               bigserial PRIMARY KEY,
    campaign_id      bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    run_at           timestamptz NOT NULL,
    started_at       timestamptz NOT NULL,
    channel          text NOT NULL,
    template_id      bigint,
    template_version int,
    provider         text NOT NULL,
    recipients       int NOT NULL DEFAULT 0,  -- messages materialised (now + held)
    error            text,                    -- why the run sent nothing (e.g. a broken segment)
    UNIQUE (campaign_id, run_at)
);

-- Batches of a run due later (a recipient's local time, a spread window,
-- quiet hours): moved to the outbox by the runner when herald time reaches
-- due_at, while their campaign is active.  Pausing keeps them here; cancelling
-- deletes them.
CREATE TABLE campaign_batches (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    due_at      timestamptz NOT NULL,
    addresses   text[] NOT NULL,
    contact_ids bigint[] NOT NULL
);

-- The herald time of a campaign or rule message (its due instant), for the
-- frequency cap: outbox.due_at is the dispatcher's real time and cannot say
-- which herald day a message belonged to once the clock moved.
ALTER TABLE outbox ADD COLUMN herald_at timestamptz;
CREATE INDEX outbox_herald_at ON outbox (herald_at) WHERE herald_at IS NOT NULL;
