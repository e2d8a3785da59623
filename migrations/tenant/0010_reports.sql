-- 0010_reports.sql -- indexes the reports (api/reports.c) read the outbox by.
--
-- Reports select a campaign's or a rule's batches by origin_id, and a
-- period's batches by the time their messages belong to (herald time for
-- campaigns and rules, due time for API sends).  Both indexes are over
-- batches (one row per up to 4,096 messages), so they cost the send path
-- next to nothing; no table is added.  The second carries template_id so a
-- template's report filters in the index without visiting other batches.
CREATE INDEX outbox_origin ON outbox (origin_id) WHERE origin_id IS NOT NULL;
CREATE INDEX outbox_at ON outbox ((coalesce(herald_at, due_at)), template_id);
