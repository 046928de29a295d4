-- The console (dispatcher.console): its sessions, kept on the server, its sign-in
-- throttle, and the announcements its live pages wait for.

-- A session is found by the SHA-256 of its cookie (the cookie itself is never stored),
-- and ends when its person signs out or is disabled, after IDLE of nothing, or at
-- expires_at whatever happens. agency: the one the person picked to work on (NULL: all
-- they may see); time_zone: their browser's, for the dates shown.
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    person_id   uuid NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    csrf        text NOT NULL,
    agency      text,
    time_zone   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_person_idx ON console_sessions (person_id);
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);

-- Refused sign-ins, by the SHA-256 of the lowercased email (never the email): past a few
-- in a window, that email's sign-ins are refused without checking the password.
CREATE TABLE sign_in_failures (
    email_key  bytea NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_idx ON sign_in_failures (email_key, at);

-- Every statement that writes deliveries announces the notices it touched (one
-- notification per notice and transaction: PostgreSQL folds identical ones), so that a
-- notice's page open in a browser updates without reloading.
CREATE FUNCTION deliveries_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relaybook_notice', notice_id::text)
    FROM (SELECT DISTINCT notice_id FROM changed_deliveries) d;
    RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_announce_insert
    AFTER INSERT ON deliveries REFERENCING NEW TABLE AS changed_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_announce();
CREATE TRIGGER deliveries_announce_update
    AFTER UPDATE ON deliveries REFERENCING NEW TABLE AS changed_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_announce();
