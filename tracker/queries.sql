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

