-- 0006_imports.sql -- contact import jobs (POST /v1/imports, GET /v1/imports/{id}).
--
-- One row per import.  The import's contacts are written in one transaction
-- on one connection; this row is updated on a second connection after every
-- chunk, so another client sees the progress while the import runs.  The
-- final summary (status, counts, and the first rejected rows with their line
-- numbers) is written in the import's own transaction, so 'succeeded' means
-- the contacts are committed.  One table: tenant creation pays per table.
CREATE TABLE imports (
    id          bigserial PRIMARY KEY,
    format      text NOT NULL CHECK (format IN ('ndjson', 'csv')),
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_read   bigint NOT NULL DEFAULT 0,  -- records parsed (good + bad)
    imported    bigint NOT NULL DEFAULT 0,  -- good rows applied (created + updated)
    created     bigint NOT NULL DEFAULT 0,  -- new contacts
    updated     bigint NOT NULL DEFAULT 0,  -- rows that updated an existing contact
    merged      bigint NOT NULL DEFAULT 0,  -- contacts merged into another (merged_into set)
    rejected    bigint NOT NULL DEFAULT 0,  -- bad rows
    errors      jsonb NOT NULL DEFAULT '[]', -- the first rejected rows: [{line, field, detail}]
    failure     text,                       -- why a failed import failed
    bytes       bigint NOT NULL DEFAULT 0,  -- body bytes received
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
