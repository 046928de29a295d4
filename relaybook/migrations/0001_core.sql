-- The core tables: who gets notices (recipients), what is sent (notices, deliveries),
-- what the providers said (delivery_events), retries (resends), what is still to be
-- published to Kafka (outbox), who changed what (audit_log), and which addresses must
-- not be contacted (suppressions).

-- A recipient is an owner or tenant known to the platform, identified by the platform's
-- own id. Preferences belong to the recipient; "not applicable" is derived from a
-- missing address and never stored.
CREATE TABLE recipients (
    id                      text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    name                    text,
    email                   text,
    phone                   text,
    email_wants             text NOT NULL DEFAULT 'yes' CHECK (email_wants IN ('yes', 'no')),
    email_reason            text,
    -- who set the preference: default, owner, manager, support or automatic (bounce policy)
    email_changed_by_kind   text NOT NULL DEFAULT 'default'
        CHECK (email_changed_by_kind IN ('default', 'owner', 'manager', 'support', 'automatic')),
    email_changed_by        text,
    email_changed_at        timestamptz,
    sms_wants               text NOT NULL DEFAULT 'yes' CHECK (sms_wants IN ('yes', 'no')),
    sms_reason              text,
    sms_changed_by_kind     text NOT NULL DEFAULT 'default'
        CHECK (sms_changed_by_kind IN ('default', 'owner', 'manager', 'support', 'automatic')),
    sms_changed_by          text,
    sms_changed_at          timestamptz,
    never_auto_unsubscribe  boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recipients_email_idx ON recipients (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX recipients_phone_idx ON recipients (phone) WHERE phone IS NOT NULL;

-- A notice is one message (email and/or SMS content) to many recipients, published by a
-- platform service about one thing of its own (source service, kind, reference).
CREATE TABLE notices (
    id                uuid PRIMARY KEY,
    source_service    text NOT NULL,
    source_kind       text NOT NULL,
    source_reference  text NOT NULL,
    title             text NOT NULL,
    email_subject     text,
    email_text        text,
    email_html        text,
    sms_text          text,
    status            text NOT NULL
        CHECK (status IN ('draft', 'scheduled', 'sending', 'sent', 'partially_failed', 'failed')),
    send_at           timestamptz,
    released_at       timestamptz,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (email_subject IS NOT NULL OR sms_text IS NOT NULL),
    CHECK (status <> 'scheduled' OR send_at IS NOT NULL)
);
CREATE INDEX notices_source_idx ON notices (source_service, source_kind, source_reference);
CREATE INDEX notices_source_reference_idx ON notices (source_reference);
-- the scheduler's queue: what is due next
CREATE INDEX notices_scheduled_idx ON notices (send_at) WHERE status = 'scheduled';

-- A resend is one manager's retry of some of a notice's failed deliveries.
CREATE TABLE resends (
    id           uuid PRIMARY KEY,
    notice_id    uuid NOT NULL REFERENCES notices (id),
    scope        text NOT NULL CHECK (scope IN ('failed', 'undelivered', 'selected')),
    requested_by text NOT NULL,
    recipients   integer NOT NULL CHECK (recipients >= 0),
    email        integer NOT NULL CHECK (email >= 0),
    sms          integer NOT NULL CHECK (sms >= 0),
    "full"       boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resends_notice_idx ON resends (notice_id, created_at DESC);

-- A delivery is one message to one recipient on one channel: the journal's row. A resend
-- adds a new attempt linked to the one it retries; only the latest attempt of a
-- (notice, recipient, channel) counts in statistics.
CREATE TABLE deliveries (
    id                   uuid PRIMARY KEY,
    notice_id            uuid NOT NULL REFERENCES notices (id),
    recipient_id         text NOT NULL REFERENCES recipients (id),
    channel              text NOT NULL CHECK (channel IN ('email', 'sms')),
    attempt              integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    retry_of             uuid REFERENCES deliveries (id),
    resend_id            uuid REFERENCES resends (id),
    is_latest            boolean NOT NULL DEFAULT true,
    -- the address the message was (or would have been) sent to, as it was then
    address              text,
    status               text NOT NULL
        CHECK (status IN ('queued', 'sent', 'delivered', 'opened', 'clicked', 'failed', 'skipped')),
    reason               text,
    provider_code        text,
    provider             text,
    provider_message_id  text,
    send_attempts        integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    delivered_at         timestamptz,
    opened_at            timestamptz,
    clicked_at           timestamptz,
    failed_at            timestamptz,
    -- a skipped delivery always says why
    CHECK (status <> 'skipped' OR reason IS NOT NULL)
);
-- one current attempt per notice, recipient and channel
CREATE UNIQUE INDEX deliveries_latest_idx
    ON deliveries (notice_id, recipient_id, channel) WHERE is_latest;
-- journal: keyset pagination newest first, alone or within one notice / recipient / status
CREATE INDEX deliveries_journal_idx ON deliveries (created_at DESC, id DESC);
CREATE INDEX deliveries_notice_journal_idx ON deliveries (notice_id, created_at DESC, id DESC);
CREATE INDEX deliveries_recipient_journal_idx
    ON deliveries (recipient_id, created_at DESC, id DESC);
CREATE INDEX deliveries_status_journal_idx ON deliveries (status, created_at DESC, id DESC);
-- statistics and the recipient table of one notice
CREATE INDEX deliveries_notice_status_idx ON deliveries (notice_id, channel, status) WHERE is_latest;
-- correlation of provider events that carry no delivery id (asynchronous bounces)
CREATE INDEX deliveries_address_idx ON deliveries (channel, lower(address), created_at DESC)
    WHERE address IS NOT NULL;
CREATE INDEX deliveries_provider_message_idx ON deliveries (provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- Every provider event, stored once under its canonical id (duplicates collapse here).
-- No foreign key to deliveries: an event may arrive for a delivery matched only later
-- (by address), or for one this database never had; it is kept all the same.
CREATE TABLE delivery_events (
    event_id             text PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 200),
    delivery_id          uuid,
    channel              text NOT NULL CHECK (channel IN ('email', 'sms')),
    provider             text NOT NULL,
    type                 text NOT NULL,
    occurred_at          timestamptz NOT NULL,
    received_at          timestamptz NOT NULL,
    recorded_at          timestamptz NOT NULL DEFAULT now(),
    provider_message_id  text,
    address              text,
    reason               text,
    provider_code        text,
    payload              jsonb NOT NULL
);
CREATE INDEX delivery_events_delivery_idx ON delivery_events (delivery_id, occurred_at)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX delivery_events_unmatched_idx ON delivery_events (channel, lower(address))
    WHERE delivery_id IS NULL;

-- Transactional outbox: rows written in the same transaction as the state they announce,
-- published to Kafka by a relay, then marked. Ordered by id within a key.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    key           text,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;

-- Addresses that must not be contacted, whoever they belong to. At most one active
-- suppression per address and channel; a lifted one stays for the record.
CREATE TABLE suppressions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    address     text NOT NULL,
    rule        text NOT NULL,
    reason      text NOT NULL,
    evidence    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    lifted_at   timestamptz,
    lifted_by   text,
    lift_reason text
);
CREATE UNIQUE INDEX suppressions_active_idx ON suppressions (channel, lower(address))
    WHERE lifted_at IS NULL;

-- Who changed what, when and why: preference overrides, automatic unsubscribes, resends.
CREATE TABLE audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    action        text NOT NULL,
    subject_type  text NOT NULL,
    subject_id    text NOT NULL,
    reason        text,
    details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject_type, subject_id, at DESC);
