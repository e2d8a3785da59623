-- 0002_outbox.sql -- messages and their results, append-only.
--
-- One outbox row is a batch of 1..4096 messages of one channel, lane, template
-- and provider account; message i of batch b has id b * 4096 + i.  A bulk
-- campaign of a million recipients is ~250 outbox rows, and each message then
-- costs one row: its result.  A transactional API send is a batch of one.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    channel          text NOT NULL CHECK (channel IN ('email', 'sms', 'messenger', 'push', 'webhook')),
    lane             text NOT NULL CHECK (lane IN ('transactional', 'bulk')),
    template_id      bigint,
    template_version int,
    content          jsonb,          -- inline Liquid sources when template_id IS NULL
    provider         text NOT NULL,  -- provider account name (herald.provider_accounts)
    origin           text NOT NULL CHECK (origin IN ('api', 'campaign', 'rule', 'test')),
    origin_id        bigint,
    due_at           timestamptz NOT NULL DEFAULT now(),
    addresses        text[] NOT NULL,
    contact_ids      bigint[],       -- per message, NULL entries allowed
    data             jsonb,          -- JSON array, per message personalisation, or NULL
    idempotency_key  text UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(addresses) BETWEEN 1 AND 4096),
    CHECK (contact_ids IS NULL OR cardinality(contact_ids) = cardinality(addresses)),
    CHECK (data IS NULL OR jsonb_array_length(data) = cardinality(addresses)),
    CHECK (template_id IS NOT NULL OR content IS NOT NULL)
);
CREATE INDEX outbox_due ON outbox (due_at);

-- The final outcome of each message, recorded exactly once (primary key).
CREATE TABLE results (
    message_id  bigint PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('sent', 'failed', 'bounced', 'dead')),
    attempts    int NOT NULL,
    provider_id text,
    reason      text,
    latency_us  int,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Dispatch progress: every outbox batch with id < low_water has all its results.
-- One row; advanced by the scheduler, so recovery after a crash scans only the tail.
CREATE TABLE dispatch_state (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    low_water bigint NOT NULL DEFAULT 0
);
INSERT INTO dispatch_state DEFAULT VALUES;
