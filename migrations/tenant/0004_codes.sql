-- 0004_codes.sql -- one-time codes (OTP), promo and referral codes.
--
-- Three tables, because every table costs each tenant creation a few files:
-- redemptions live on the code's own row (a counter and a small jsonb array),
-- which is also the row that serialises concurrent redemptions of one code.

-- One row per OTP sent.  Only an HMAC of the code is stored (common/codes.c);
-- a newer OTP for the same recipient and purpose supersedes the older ones.
CREATE TABLE otp_codes (
    id           bigserial PRIMARY KEY,
    channel      text NOT NULL CHECK (channel IN ('sms', 'email')),
    recipient    text NOT NULL,           -- normalised address (E.164 or lower-cased email)
    purpose      text NOT NULL,
    contact_id   bigint,
    salt         text NOT NULL,
    code_hash    text NOT NULL,           -- hex HMAC-SHA256(otp key, tenant:salt:code)
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'verified', 'locked', 'superseded')),
    attempts     int NOT NULL DEFAULT 0,
    max_attempts int NOT NULL,
    message_id   bigint NOT NULL,         -- the outbox message that carries the code
    expires_at   timestamptz NOT NULL,
    verified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- The send rate per recipient and "the latest OTP of this recipient and purpose".
CREATE INDEX otp_codes_recipient ON otp_codes (recipient, created_at);

CREATE TABLE code_pools (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('promo', 'referral')),
    settings   jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A code of a pool.  contact_id: the contact it was issued to (for referral
-- codes, the referrer).  One code per contact and pool; free codes have no
-- contact, and that same index finds them.
CREATE TABLE codes (
    id              bigserial PRIMARY KEY,
    pool_id         bigint NOT NULL REFERENCES code_pools (id),
    code            text NOT NULL UNIQUE,  -- upper-case; unique across the tenant's pools
    contact_id      bigint REFERENCES contacts (id),
    issued_at       timestamptz,
    max_redemptions int NOT NULL CHECK (max_redemptions >= 1),
    redeemed        int NOT NULL DEFAULT 0 CHECK (redeemed <= max_redemptions),
    redemptions     jsonb NOT NULL DEFAULT '[]',  -- [{"contact_id": n, "at": "..."}], in order
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (pool_id, contact_id)
);
