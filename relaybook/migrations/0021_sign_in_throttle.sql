-- The console's sign-in throttle (dispatcher.console.throttle): one counter row per
-- (email, address), email, address, and one for everyone, each keyed by a SHA-256 (never
-- an email nor an address). An attempt locks its counters and is counted before its
-- password is checked, so concurrent attempts see each other.
--
-- failures: in the window that started at started_at; last_at: when an attempt was last
-- admitted; known_until: an (email, address) that signed in lately, exempt from the
-- limits of the email, the address and everyone. sign_in_failures (0017) is no longer
-- written: it is dropped a release later, once no pod of the release before runs.
CREATE TABLE sign_in_throttle (
    key          bytea PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    failures     integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_at      timestamptz,
    known_until  timestamptz
);
CREATE INDEX sign_in_throttle_started_idx ON sign_in_throttle (started_at);
