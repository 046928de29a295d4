-- What the bounce policy needs: what it counted against each address, once per provider
-- event, and each address's last success and last reset. Counters and suppressions
-- belong to the address (email lowercased, phone as E.164), preferences to the recipient:
-- an address shared by two recipients counts once for both, and a recipient's new
-- address starts with a clean slate.

CREATE TABLE address_events (
    event_id       text PRIMARY KEY,
    channel        text NOT NULL CHECK (channel IN ('email', 'sms')),
    address        text NOT NULL,
    -- hard, soft, sender_side (recorded, never counted), complaint, provider_suppressed,
    -- opt_out, opt_in
    kind           text NOT NULL,
    note           text NOT NULL,
    provider_code  text,
    delivery_id    uuid,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX address_events_count_idx ON address_events (channel, address, kind, occurred_at);

CREATE TABLE address_health (
    channel          text NOT NULL CHECK (channel IN ('email', 'sms')),
    address          text NOT NULL,
    -- soft failures count only after this (delivered, opened, clicked, read)
    last_success_at  timestamptz,
    -- a support override: nothing before it counts any more
    cleared_at       timestamptz,
    PRIMARY KEY (channel, address)
);
