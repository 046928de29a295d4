-- The journal, by name: its pages, one message with its timeline, a notice's recipients
-- (relaybook.journal.reader).

-- name: journal
-- One page of the journal, newest first. {where} is built from fixed conditions
-- (relaybook/journal/reader.py: FILTERS), each on a column the journal indexes lead with.
SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.status, d.address, d.attempt,
       d.created_at, d.sent_at, d.delivered_at, d.opened_at, d.clicked_at, d.failed_at,
       d.reason, d.provider_code
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
           d.reason, d.provider_code
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
       d.failed_at, d.reason, d.provider_code,
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
