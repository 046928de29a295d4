-- What the dispatcher and the send workers need: API tokens, idempotency keys, and the
-- send-job bookkeeping on each delivery.

-- Per-service API tokens: only a SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Idempotency-Key: the first answer to (caller, key), and a hash of the request it answered.
CREATE TABLE idempotency_keys (
    caller        text NOT NULL,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash  bytea NOT NULL,
    status        integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);

-- Each queued delivery of a notice being sent is its own outbox entry: the relay publishes
-- a send job for it and stamps job_published_at; a retry clears the stamp and sets when.
-- (Writing a separate outbox row per delivery would write every job of a 100,000-recipient
-- notice twice.)
ALTER TABLE deliveries
    ADD COLUMN job_published_at  timestamptz,
    ADD COLUMN next_attempt_at   timestamptz,
    ADD COLUMN attempt_started_at timestamptz;

-- the relay's queue: queued deliveries without a published job, soonest first
CREATE INDEX deliveries_unpublished_idx ON deliveries (next_attempt_at NULLS FIRST, created_at)
    WHERE status = 'queued' AND job_published_at IS NULL;
