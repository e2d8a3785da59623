-- 0013_batch_compression.sql -- batch arrays compressed with lz4, not pglz.
--
-- An outbox or campaign_batches row carries up to 4,096 addresses and contact
-- ids (~100 kB): Postgres compresses them when it stores the row.  pglz took a
-- third of a 1,000,000-recipient campaign run's time (bench/fanout,
-- docs/benchmarks.md); lz4 compresses these arrays several times faster, and
-- decompresses faster for the dispatcher that reads them once.  Only the
-- column's setting changes (no rewrite, no table: new rows use it).  A server
-- built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE outbox ALTER COLUMN addresses SET COMPRESSION lz4,
        ALTER COLUMN contact_ids SET COMPRESSION lz4,
        ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE campaign_batches ALTER COLUMN addresses SET COMPRESSION lz4,
        ALTER COLUMN contact_ids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 not supported by this server: batch arrays stay pglz';
END
$$;
