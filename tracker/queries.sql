-- Every query of the journal tracker, by name.

-- name: match_addresses
-- Events the provider sent without our correlation id (asynchronous bounces), matched on
-- the address: the latest message sent to it on that channel, created before the event
-- (give or take the providers' clocks and their whole-second timestamps).
SELECT u.position, m.id
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY
    AS u (channel, address, at, position)
CROSS JOIN LATERAL (
    SELECT d.id FROM deliveries d
    WHERE d.channel = u.channel AND lower(d.address) = lower(u.address)
      AND d.address IS NOT NULL AND d.sent_at IS NOT NULL
      AND d.created_at <= u.at + interval '5 minutes'
    ORDER BY d.created_at DESC
    LIMIT 1
) m;

-- name: match_message_ids
-- Twilio callbacks that lost their delivery id: the message id is unique per text.
SELECT provider_message_id, id FROM deliveries
WHERE provider_message_id = ANY($1::text[]) AND channel = 'sms';

-- name: insert_events
-- Each event once: a duplicate (same id) is dropped here, and only the new ones come back
-- to be projected. $1 the events as one JSON array (each stored as its payload), $2 the
-- delivery each is about (null: none), in the same order: one parameter of text instead
-- of a dozen arrays, whose binding cost the tracker more than building them.
INSERT INTO delivery_events (event_id, delivery_id, channel, provider, type, occurred_at,
                             received_at, provider_message_id, address, reason,
                             provider_code, payload, agency_id)
SELECT e.event->>'event_id', e.delivery_id, e.event->>'channel', e.event->>'provider',
       e.event->>'type', (e.event->>'occurred_at')::timestamptz,
       (e.event->>'received_at')::timestamptz, e.event->>'provider_message_id',
       e.event->>'address', e.event->>'reason', e.event->>'provider_code', e.event,
       (SELECT d.agency_id FROM deliveries d WHERE d.id = e.delivery_id)
FROM ROWS FROM (jsonb_array_elements($1::jsonb), unnest($2::uuid[])) AS e (event, delivery_id)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;
