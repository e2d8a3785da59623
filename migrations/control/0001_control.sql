-- 0001_control.sql -- the control schema: placement, agencies, tenants, API keys,
-- provider accounts, audit.  Runs with search_path = herald.

-- Postgres servers that hold tenant schemas.  dsn NULL = the control database itself.
CREATE TABLE db_servers (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9-]{0,38}[a-z0-9]$'),
    dsn         text,
    accepts_new boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO db_servers (name, dsn) VALUES ('control', NULL);

CREATE TABLE agencies (
    id         bigserial PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{0,38}[a-z0-9]$'),
    name       text NOT NULL,
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- quotas and limits for all the agency's tenants (messages per day per channel, contacts, rps)
    limits     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    id             bigserial PRIMARY KEY,
    agency_id      bigint NOT NULL REFERENCES agencies (id),
    slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{0,38}[a-z0-9]$'),
    name           text NOT NULL,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    schema_name    text NOT NULL UNIQUE,
    role_name      text NOT NULL UNIQUE,
    db_server_id   int NOT NULL DEFAULT 1 REFERENCES db_servers (id),
    -- tenant-migration version of the schema; the schema's own schema_migrations is the truth
    schema_version int NOT NULL DEFAULT 0,
    limits         jsonb NOT NULL DEFAULT '{}',
    settings       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_agency ON tenants (agency_id);

-- API keys: only a SHA-256 of the whole key is stored; key_id is the public half.
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    key_id       text NOT NULL UNIQUE,
    secret_hash  text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    agency_id    bigint NOT NULL REFERENCES agencies (id),
    tenant_id    bigint REFERENCES tenants (id),
    scope        text NOT NULL CHECK (scope IN ('agency', 'full', 'send', 'read')),
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK ((scope = 'agency') = (tenant_id IS NULL))
);

-- A tenant's accounts at providers (SMTP relay, SMS gateway, messenger, push, webhook).
-- Secrets are AES-256-GCM sealed with the master key, bound to (tenant, name).
CREATE TABLE provider_accounts (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    name          text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,38}[a-z0-9]$'),
    channel       text NOT NULL CHECK (channel IN ('email', 'sms', 'messenger', 'push', 'webhook')),
    transport     text NOT NULL CHECK (transport IN ('smtp', 'http', 'sink')),
    config        jsonb NOT NULL DEFAULT '{}',
    secret_sealed bytea,
    rate_per_s    int CHECK (rate_per_s IS NULL OR rate_per_s > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
