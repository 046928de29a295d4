-- Every statement that writes a delivery (a row of ``deliveries``), by name: the
-- deliveries' transitions (relaybook/deliveries/__init__.py says who calls which). No
-- other package's SQL inserts, updates or deletes deliveries
-- (tests/relaybook/test_one_writer.py).
--
-- "The status only climbs" is written once, here, as delivery_status_after(was, proven)
-- (status_rule, applied by the migrations: relaybook/migrations/defined_delivery_status.sql);
-- every statement that moves a status goes through it.

-- name: status_rule
-- The statuses a delivery climbs through, lowest first: queued < sent < delivered <
-- opened < clicked < failed (a failure outranks them all, so a late "delivered" never
-- hides a bounce). skipped: never sent; only a queued delivery becomes skipped, and
-- nothing moves it after. Whoever writes a status (a worker recording its outcome, a
-- tracker projecting the provider's events) writes delivery_status_after(the row's
-- status, the status it proves): two writers meeting on one row, in either order, leave
-- the higher. Inlined by the planner (IMMUTABLE, one expression): no call per row.
CREATE OR REPLACE FUNCTION delivery_statuses() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['queued', 'sent', 'delivered', 'opened', 'clicked', 'failed']
$$;

CREATE OR REPLACE FUNCTION delivery_status_after(was text, proven text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN was = 'skipped' THEN was
        WHEN was = 'queued' AND proven = 'skipped' THEN proven
        WHEN array_position(delivery_statuses(), proven)
             > array_position(delivery_statuses(), was) THEN proven
        ELSE was
    END
$$;

-- Creating deliveries: a notice's fan-out and a resend's new attempts (relaybook.notices).

-- name: fan_out
-- One delivery per recipient and channel, queued or skipped with the reason. The relay
-- finds the queued ones through the fan-out's job pages (insert_job_pages). The ids are
-- one uuid_v7() numbered in the order the rows are written (migration 0008), and the rows
-- are written in recipient order: each index entry goes after the one before, in
-- deliveries_latest_idx and the recipient's journal too, not at random places in them.
-- The recipients are found first, each once: joined after the channels, the planner
-- could work out the reason of every recipient in the table before matching the list.
-- The reason is the contact rule's (relaybook/reachability/queries.sql), as everywhere it is shown.
WITH first AS MATERIALIZED (SELECT uuid_v7() AS id)
INSERT INTO deliveries (id, notice_id, recipient_id, channel, address, status, reason,
                        agency_id)
SELECT uuid_v7_step(first.id, (r.position - 1) * cardinality($3::text[]) + ch.position),
       $1, r.id, ch.channel, consent.address,
       CASE WHEN consent.skip_reason IS NULL THEN 'queued' ELSE 'skipped' END,
       consent.skip_reason, $4
FROM first
CROSS JOIN (SELECT n.position, r.*
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS position
                  FROM unnest($2::text[]) AS given (id)) AS n
            JOIN recipients r ON r.agency_id = $4 AND r.id = n.id
            OFFSET 0) AS r
CROSS JOIN unnest($3::text[]) WITH ORDINALITY AS ch (channel, position)
-- include: relaybook.reachability.contact
ORDER BY r.position, ch.position;

-- name: retire_attempts
UPDATE deliveries SET is_latest = false, updated_at = now() WHERE id = ANY($1::uuid[]);

-- name: add_resend_attempts
-- The new attempts, linked to the ones they retry, queued for the relay like a first send.
INSERT INTO deliveries (id, notice_id, recipient_id, channel, attempt, retry_of, resend_id,
                        address, status, agency_id)
SELECT uuid_v7(), d.notice_id, d.recipient_id, d.channel, d.attempt + 1, d.id, $2,
       CASE d.channel WHEN 'email' THEN r.email ELSE r.phone END, 'queued', d.agency_id
FROM deliveries d
JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
WHERE d.id = ANY($1::uuid[])
ORDER BY d.recipient_id, d.channel;

-- The relay (dispatcher.outbox).

-- name: clear_retries_due
UPDATE deliveries SET next_attempt_at = NULL WHERE id = ANY($1::uuid[]);

-- The send workers' outcomes (send_worker.worker, send_worker.unknown_outcomes): recorded
-- in the worker's own transaction, before its events are published.

-- name: skip
-- Queued deliveries the contact rule refuses, with its reason.
UPDATE deliveries d
SET status = delivery_status_after(d.status, 'skipped'), reason = u.reason, updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u (id, reason)
WHERE d.id = u.id AND d.status = 'queued';

-- Each outcome also records the attempt on the delivery ($1 ids, $2 attempt numbers,
-- $3 when they started, as start_attempts (relaybook/sending/queries.sql) returned it, $4
-- the addresses they went to) and what it sent, as rendered (CONTENT: its language, the
-- SHA-256 of its content, a text's segments; null when it was not rendered, which keeps
-- what an earlier attempt recorded), in the same new row version. OUTCOME: what the outcome's event
-- is made of, as recorded; the worker's load_deliveries reads the same columns back when
-- a job comes again before its event was published, so both announce the same event.

-- name: content_recorded
-- CONTENT, as each outcome records it: what the attempt sent, or what an earlier one did.
language = COALESCE(u.language, d.language),
content_sha256 = COALESCE(u.content_sha256, d.content_sha256),
segments = COALESCE(u.segments, d.segments)

-- name: record_accepted
-- Never moves a delivery backwards: a webhook may have advanced it already.
UPDATE deliveries d
SET status = delivery_status_after(d.status, 'sent'),
    provider = $9, provider_message_id = u.message_id, sent_at = COALESCE(d.sent_at, now()),
    reason = CASE WHEN d.status = 'queued' THEN NULL ELSE d.reason END,
    -- one moved on keeps its claim (claim_moved_on) until its event is published too
    next_attempt_at = CASE WHEN d.status = 'queued' THEN NULL ELSE d.next_attempt_at END,
    updated_at = now(),
    send_attempts = greatest(d.send_attempts, u.attempt), attempt_started_at = u.started_at,
    address = u.address,
    -- include: relaybook.deliveries.content_recorded
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::smallint[], $8::text[])
         AS u (id, attempt, started_at, address, language, content_sha256, segments, message_id)
WHERE d.id = u.id
RETURNING d.id, d.channel, d.agency_id, 'accepted' AS outcome, d.sent_at AS outcome_at, d.address AS sent_to,
          d.provider, d.provider_message_id, d.reason, d.provider_code, d.send_attempts;

-- name: record_failed
-- A refusal: only a delivery still queued (one the provider's events moved on keeps theirs).
UPDATE deliveries d
SET status = delivery_status_after(d.status, 'failed'), reason = u.reason, provider_code = u.code, provider = $10,
    failed_at = now(), updated_at = now(), next_attempt_at = NULL,
    send_attempts = greatest(d.send_attempts, u.attempt), attempt_started_at = u.started_at,
    address = u.address,
    -- include: relaybook.deliveries.content_recorded
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::smallint[], $8::text[], $9::text[])
         AS u (id, attempt, started_at, address, language, content_sha256, segments, reason, code)
WHERE d.id = u.id AND d.status = 'queued'
RETURNING d.id, d.channel, d.agency_id, 'failed' AS outcome, d.failed_at AS outcome_at, d.address AS sent_to,
          d.provider, d.provider_message_id, d.reason, d.provider_code, d.send_attempts;

-- name: schedule_retry
-- Back to the relay's queue, due at the given time, with the transient error as reason.
UPDATE deliveries d
SET next_attempt_at = u.due, reason = u.reason, updated_at = now(),
    send_attempts = greatest(d.send_attempts, u.attempt), attempt_started_at = u.started_at,
    address = u.address,
    -- include: relaybook.deliveries.content_recorded
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::smallint[], $8::timestamptz[], $9::text[])
         AS u (id, attempt, started_at, address, language, content_sha256, segments, due, reason)
WHERE d.id = u.id AND d.status = 'queued';

-- name: hold
-- Back to the relay's queue until the provider has had time to say whether it took the
-- message ($2 when); no attempt is counted: none is made. One that the provider's events
-- (through the tracker) move on meanwhile leaves the relay's queue but keeps its due time:
-- a worker looks again at it then (claim_moved_on), even one started since; so does one
-- moved on between its reading and this.
UPDATE deliveries d
SET next_attempt_at = u.due, updated_at = now(),
    reason = CASE WHEN d.status = 'queued' THEN $3 ELSE d.reason END
FROM unnest($1::uuid[], $2::timestamptz[]) AS u (id, due)
WHERE d.id = u.id AND d.provider_message_id IS NULL;

-- name: claim_moved_on
-- Deliveries out of the queue whose due time came ($2 at most, the earliest first): held
-- ones moved on, mostly. Each claimed for $1 s: a worker that dies before release_moved_on
-- leaves them to the next look after that. Replicas skip each other's. Through
-- deliveries_moved_on_idx, which only they are in.
UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => $1)
FROM (SELECT id FROM deliveries
      WHERE status <> 'queued' AND next_attempt_at <= now()
      ORDER BY next_attempt_at
      LIMIT $2
      FOR UPDATE SKIP LOCKED) AS due
WHERE d.id = due.id
RETURNING d.id;

-- name: release_moved_on
-- Looked at, and what was found recorded and announced.
UPDATE deliveries SET next_attempt_at = NULL
WHERE id = ANY($1::uuid[]) AND status <> 'queued';

-- The journal tracker (tracker.journal): the providers' outcomes.

-- name: project_events
-- The providers' outcomes (delivered, bounced, opened, ...): a batch's new events applied
-- to their journal rows at once. The status climbs by delivery_status_after (status_rule),
-- each time is the first one implied, the reason and code are those of the first
-- failure, a skipped delivery is left be (relaybook/deliveries/precedence.py: which status
-- each event proves). $1: the events, one JSON array in the order they came (position;
-- the delivery; the status each proves, or null; when; whether it is a worker's outcome;
-- a failure's reason and code). A worker's outcome (worker: true) is not projected: the
-- worker recorded it itself (record_accepted, record_failed, skip), in the transaction
-- that sent it; it comes with no status and no time, only for its notice to be settled.
-- The rows are locked in id order, so that two trackers never wait on each other in a
-- circle; only those that change are written. Returns the notices to settle: those a
-- worker's outcome touched (a delivery left the queue) or a delivery newly failed in.
WITH e AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS e (position integer, delivery_id uuid, status text, at timestamptz,
              worker boolean, reason text, code text)
), per AS (
    SELECT delivery_id,
           max(array_position(delivery_statuses(), status)) AS rank,
           -- whatever the provider reports about a message, it had been sent
           min(at) FILTER (WHERE status IS NOT NULL) AS sent_at,
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
           m.status,
           CASE WHEN m.moves THEN least(l.sent_at, p.sent_at) ELSE l.sent_at END AS sent_at,
           CASE WHEN m.moves THEN least(l.delivered_at, p.delivered_at)
                ELSE l.delivered_at END AS delivered_at,
           CASE WHEN m.moves THEN least(l.opened_at, p.opened_at) ELSE l.opened_at END
               AS opened_at,
           CASE WHEN m.moves THEN least(l.clicked_at, p.clicked_at) ELSE l.clicked_at END
               AS clicked_at,
           CASE WHEN m.moves THEN least(l.failed_at, p.failed_at) ELSE l.failed_at END
               AS failed_at,
           CASE WHEN m.climbs AND m.status = 'failed' THEN p.reason
                WHEN m.climbs AND l.status = 'queued' THEN NULL  -- a retry's note is over
                ELSE l.reason END AS reason,
           CASE WHEN m.climbs AND m.status = 'failed' THEN p.code
                WHEN m.climbs AND l.status = 'queued' THEN NULL
                ELSE l.provider_code END AS provider_code,
           l.sent_at AS was_sent_at, l.delivered_at AS was_delivered_at,
           l.opened_at AS was_opened_at, l.clicked_at AS was_clicked_at,
           l.failed_at AS was_failed_at, l.reason AS was_reason,
           l.provider_code AS was_provider_code
    FROM locked l
    JOIN per p ON p.delivery_id = l.id
    CROSS JOIN LATERAL (
        SELECT delivery_status_after(l.status, (delivery_statuses())[p.rank]) AS status
    ) s
    CROSS JOIN LATERAL (
        SELECT l.status <> 'skipped' AS moves,  -- never sent: events leave it be
               s.status <> l.status AS climbs, s.status
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
