-- 0001_core.sql -- a tenant's own schema: contacts, consent, suppressions, events,
-- templates.  Runs with search_path = the tenant schema, as the schema owner;
-- the tenant role gets DML rights through the schema's default privileges.

CREATE TABLE contacts (
    id          bigserial PRIMARY KEY,
    external_id text UNIQUE,
    email       text UNIQUE,   -- normalised
    phone       text UNIQUE,   -- E.164
    attributes  jsonb NOT NULL DEFAULT '{}',
    time_zone   text,
    locale      text,
    merged_into bigint REFERENCES contacts (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every consent change, append-only: who, where, when.
CREATE TABLE consent_log (
    id         bigserial PRIMARY KEY,
    contact_id bigint NOT NULL REFERENCES contacts (id),
    channel    text NOT NULL,
    purpose    text NOT NULL,
    granted    boolean NOT NULL,
    source     text NOT NULL,
    actor      text,
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_log_contact ON consent_log (contact_id, at);

-- Current consent per (contact, channel, purpose), kept with consent_log.
CREATE TABLE consents (
    contact_id bigint NOT NULL REFERENCES contacts (id),
    channel    text NOT NULL,
    purpose    text NOT NULL,
    granted    boolean NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (contact_id, channel, purpose)
);

CREATE TABLE suppressions (
    channel text NOT NULL,
    address text NOT NULL,
    reason  text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address)
);

CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    contact_id  bigint,
    name        text NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_contact ON events (contact_id, name, occurred_at);

CREATE TABLE templates (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'messenger', 'push', 'webhook')),
    current_version int NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE template_versions (
    template_id bigint NOT NULL REFERENCES templates (id),
    version     int NOT NULL,
    content     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);

-- Named partials for {% render %} / {% include %}.
CREATE TABLE snippets (
    name       text PRIMARY KEY,
    body       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
