-- 0003_api_idempotency.sql -- idempotent API sends.
--
-- POST /v1/messages with an Idempotency-Key stores the key in
-- outbox.idempotency_key (unique already) and the SHA-256 of the canonical
-- request here: the same key with the same request replays the answer (the
-- message id is derived from the outbox row), the same key with another
-- request is a 409.  A column rather than a table: a new table would cost
-- every tenant creation a file, and the answer needs nothing else.
ALTER TABLE outbox ADD COLUMN request_hash text;
