-- Who may call: API tokens bound to agencies and expiring, and the people who sign in to
-- the console. Agencies are the platform's own text ids; NULL agencies: every agency.

-- A token is bound to the agencies listed, or platform-wide (NULL); it may expire. The
-- lookup by hash reads revoked_at and expires_at on every request: no cache to outlive a
-- revocation.
ALTER TABLE api_tokens
    ADD COLUMN agencies   text[] CHECK (cardinality(agencies) > 0),
    ADD COLUMN expires_at timestamptz;

-- People of the console. Only an argon2id hash of the password is kept. Support and ops
-- staff work on every agency; the others on the agencies listed.
CREATE TABLE people (
    id               uuid PRIMARY KEY,
    email            text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    role             text NOT NULL
        CHECK (role IN ('viewer', 'manager', 'administrator', 'support', 'ops')),
    agencies         text[] CHECK (cardinality(agencies) > 0),
    password_hash    text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    disabled_at      timestamptz,
    last_sign_in_at  timestamptz,
    CHECK ((role IN ('support', 'ops')) = (agencies IS NULL))
);

-- one person per address, whatever its case
CREATE UNIQUE INDEX people_email_key ON people (lower(email));
