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

-- name: project
-- A batch's new events applied to their journal rows at once, by the precedence that
-- relaybook/deliveries/precedence.py describes: the status only climbs (queued < sent < delivered <
-- opened < clicked < failed), each time is the first one implied, the reason and code are
-- those of the first failure, a skipped delivery is left be. $1: the events, one JSON
-- array in the order they came (position; the delivery; the status each proves, or null;
-- when; whether a worker reported it; a failure's reason and code); $2: the statuses by
-- rank, from 1. The rows are locked in id order, so that two trackers never wait on each
-- other in a circle; only those that change are written. Returns the notices to settle:
-- those a worker's outcome touched (a delivery left the queue) or a delivery newly failed
-- in.
WITH e AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS e (position integer, delivery_id uuid, status text, at timestamptz,
              worker boolean, reason text, code text)
), per AS (
    SELECT delivery_id,
           max(array_position($2::text[], status)) AS rank,
           -- a failure the provider reported had been sent; a worker's was refused
           min(at) FILTER (WHERE status <> 'failed' OR NOT worker) AS sent_at,
           min(at) FILTER (WHERE status IN ('delivered', 'opened', 'clicked')) AS delivered_at,
           min(at) FILTER (WHERE status IN ('opened', 'clicked')) AS opened_at,
           min(at) FILTER (WHERE status = 'clicked') AS clicked_at,
           min(at) FILTER (WHERE status = 'failed') AS failed_at,
           (array_agg(reason ORDER BY position) FILTER (WHERE status = 'failed'))[1] AS reason,
           (array_agg(code ORDER BY position) FILTER (WHERE status = 'failed'))[1] AS code,
           bool_or(worker) AS by_worker
    FROM e
    GROUP BY delivery_id
), locked AS (
    SELECT id, notice_id, status, sent_at, delivered_at, opened_at, clicked_at, failed_at,
           reason, provider_code
    FROM deliveries
    WHERE id IN (SELECT delivery_id FROM per)
    ORDER BY id
    FOR UPDATE
), next AS (
    SELECT l.id, l.notice_id, p.by_worker, l.status AS was,
           CASE WHEN m.climbs THEN ($2::text[])[p.rank] ELSE l.status END AS status,
           CASE WHEN m.moves THEN least(l.sent_at, p.sent_at) ELSE l.sent_at END AS sent_at,
           CASE WHEN m.moves THEN least(l.delivered_at, p.delivered_at)
                ELSE l.delivered_at END AS delivered_at,
           CASE WHEN m.moves THEN least(l.opened_at, p.opened_at) ELSE l.opened_at END
               AS opened_at,
           CASE WHEN m.moves THEN least(l.clicked_at, p.clicked_at) ELSE l.clicked_at END
               AS clicked_at,
           CASE WHEN m.moves THEN least(l.failed_at, p.failed_at) ELSE l.failed_at END
               AS failed_at,
           CASE WHEN m.climbs AND ($2::text[])[p.rank] = 'failed' THEN p.reason
                WHEN m.climbs AND l.status = 'queued' THEN NULL  -- a retry's note is over
                ELSE l.reason END AS reason,
           CASE WHEN m.climbs AND ($2::text[])[p.rank] = 'failed' THEN p.code
                WHEN m.climbs AND l.status = 'queued' THEN NULL
                ELSE l.provider_code END AS provider_code,
           l.sent_at AS was_sent_at, l.delivered_at AS was_delivered_at,
           l.opened_at AS was_opened_at, l.clicked_at AS was_clicked_at,
           l.failed_at AS was_failed_at, l.reason AS was_reason,
           l.provider_code AS was_provider_code
    FROM locked l
    JOIN per p ON p.delivery_id = l.id
    CROSS JOIN LATERAL (
        SELECT l.status <> 'skipped' AS moves,  -- never sent: events leave it be
               l.status <> 'skipped'
               AND coalesce(p.rank > coalesce(array_position($2::text[], l.status), 0),
                            false) AS climbs
    ) m
), written AS (
    UPDATE deliveries d
    SET status = n.status, sent_at = n.sent_at, delivered_at = n.delivered_at,
        opened_at = n.opened_at, clicked_at = n.clicked_at, failed_at = n.failed_at,
        reason = n.reason, provider_code = n.provider_code, updated_at = now()
    FROM next n
    WHERE d.id = n.id
      AND (n.status, n.sent_at, n.delivered_at, n.opened_at, n.clicked_at, n.failed_at,
           n.reason, n.provider_code)
          IS DISTINCT FROM (n.was, n.was_sent_at, n.was_delivered_at, n.was_opened_at,
                            n.was_clicked_at, n.was_failed_at, n.was_reason,
                            n.was_provider_code)
)
SELECT coalesce(array_agg(DISTINCT notice_id)
                    FILTER (WHERE by_worker OR (status = 'failed' AND was <> 'failed')),
                '{}')
FROM next;

-- name: settle_notices
SELECT settle_notices($1::uuid[]);
