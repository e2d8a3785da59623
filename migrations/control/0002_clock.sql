-- 0002_clock.sql -- herald's clock: the database's now() plus an operator-set skew.
--
-- Everything that decides *when* (campaign calendars, rule delays, quiet
-- hours, frequency-cap periods, default event times) reads the time from
-- herald_clock.now(), never from now() directly.  In production the skew is 0
-- and herald_clock.now() = now().  Tests and the demo move time forward with
-- `heraldctl clock advance 1d` so that a day-long delay runs in a second; the
-- command NOTIFYs `herald_clock` so that schedulers re-evaluate at once.
--
-- A schema of its own with USAGE for everyone: tenant roles (SET LOCAL ROLE
-- in the API and the scheduler) must be able to call it, and must not be
-- able to see anything else of the control schema.  Only the owner updates it.
CREATE SCHEMA herald_clock;

CREATE TABLE herald_clock.state (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    skew interval NOT NULL DEFAULT '0' CHECK (skew >= interval '0')
);
INSERT INTO herald_clock.state DEFAULT VALUES;

-- STABLE: one value per statement, like now(); inlined by the planner.
CREATE FUNCTION herald_clock.now() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT now() + skew FROM herald_clock.state $$;

GRANT USAGE ON SCHEMA herald_clock TO PUBLIC;
GRANT SELECT ON herald_clock.state TO PUBLIC;
