-- 0005_tracking.sql -- delivery receipts, engagement tracking and webhooks out.
--
-- Delivery receipts (delivered, bounced, complained) and engagement (opened,
-- clicked, unsubscribed) are events of the tenant's one append-only event
-- stream, tied to their message by events.message_id: rules and reports read
-- them where they read every other event, and GET /v1/messages/{id} lists a
-- message's events through the partial index.  A column and an index rather
-- than a table of their own: every table costs each tenant creation files.
ALTER TABLE events ADD COLUMN message_id bigint;
CREATE INDEX events_message ON events (message_id) WHERE message_id IS NOT NULL;

-- Webhook subscriptions.  The signing secret is sealed (AES-256-GCM) under
-- the master key, bound to "tenant:<id>/webhook:<id>"; it is shown once.
-- Deleted subscriptions keep their row (deleted_at) so the log stays readable.
CREATE TABLE webhooks (
    id            bigserial PRIMARY KEY,
    url           text NOT NULL,
    event_types   text[] NOT NULL,
    secret_sealed bytea NOT NULL,
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);

-- One row per (subscription, event): the queue of herald-api's delivery
-- thread and the delivery log.  `log` holds every attempt
-- ({at, status, error, ms}); next_at is when a pending delivery is due.
CREATE TABLE webhook_deliveries (
    webhook_id bigint NOT NULL,
    id         bigserial,
    event_id   bigint NOT NULL,
    event_type text NOT NULL,
    payload    jsonb NOT NULL,
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts   int NOT NULL DEFAULT 0,
    next_at    timestamptz NOT NULL DEFAULT now(),
    log        jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    done_at    timestamptz,
    PRIMARY KEY (webhook_id, id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
