-- 0014_quota_usage.sql -- messages sent through the API per UTC day and channel,
-- counted against the messages_per_day limit of the tenant and its agency
-- (common/limits.h, api/quota.c).  One row per (day, channel); only written
-- for a channel that has a limit, in the send's own transaction, so a send
-- that is refused or rolled back is not counted.
CREATE TABLE quota_usage (
    day     date NOT NULL,
    channel text NOT NULL,
    used    bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (day, channel)
);
