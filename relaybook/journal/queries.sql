-- The journal, by name: its pages, one message with its timeline, a notice's recipients
-- (relaybook.journal.reader); and the one statement that stores its events (insert_events).

-- name: journal
-- One page of the journal, newest first. {where} is built from fixed conditions
-- (relaybook/journal/reader.py: FILTERS), each on a column the journal indexes lead with.
SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.status, d.address, d.attempt,
       d.created_at, d.sent_at, d.delivered_at, d.opened_at, d.clicked_at, d.failed_at,
       d.reason, d.provider_code, d.language, d.content_sha256, d.segments
FROM deliveries d
WHERE {where}
ORDER BY d.created_at DESC, d.id DESC
LIMIT {limit};

-- name: journal_by_notices
-- One page of the journal of the few notices {notices} picks (relaybook/journal/reader.py:
-- NARROW): each notice's newest messages by its own index (deliveries_notice_journal_idx),
-- a page at most of each, then the newest of those.
SELECT d.*
FROM notices n
CROSS JOIN LATERAL (
    SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.status, d.address, d.attempt,
           d.created_at, d.sent_at, d.delivered_at, d.opened_at, d.clicked_at, d.failed_at,
           d.reason, d.provider_code, d.language, d.content_sha256, d.segments
    FROM deliveries d
    WHERE d.notice_id = n.id AND {where}
    ORDER BY d.created_at DESC, d.id DESC
    LIMIT {limit}
) d
WHERE {notices}
ORDER BY d.created_at DESC, d.id DESC
LIMIT {limit};

-- name: delivery
SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.status, d.address, d.attempt,
       d.retry_of, d.resend_id, d.is_latest, d.provider, d.provider_message_id,
       d.send_attempts, d.created_at, d.sent_at, d.delivered_at, d.opened_at, d.clicked_at,
       d.failed_at, d.reason, d.provider_code, d.language, d.content_sha256, d.segments,
       n.title, n.source_service, n.source_kind, n.source_reference
FROM deliveries d
JOIN notices n ON n.id = d.notice_id
WHERE d.id = $1;

-- name: delivery_timeline
SELECT payload FROM delivery_events
WHERE delivery_id = $1
ORDER BY occurred_at, recorded_at, event_id;

-- name: notice_recipients
-- One page of a notice's recipients in id order, each with its channels' latest attempts;
-- with a status, only recipients with a message in that status.
SELECT d.recipient_id, r.name,
       json_object_agg(d.channel, json_build_object(
           'delivery_id', d.id, 'status', d.status, 'reason', d.reason,
           'provider_code', d.provider_code, 'address', d.address)) AS channels
FROM deliveries d
JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
WHERE d.notice_id = $1 AND d.is_latest AND d.recipient_id > $2
GROUP BY d.recipient_id, r.name
HAVING $3::text IS NULL OR bool_or(d.status = $3)
ORDER BY d.recipient_id
LIMIT $4;

-- name: insert_events
-- The journal's events are written here only (tests/relaybook/test_one_writer.py): by the
-- tracker (tracker.journal), for every event a provider or a worker announced.
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
