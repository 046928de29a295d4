-- Every query of the send workers, by name.

-- name: load_deliveries
-- What a worker needs to send a batch of jobs, read fresh: the delivery's state, the
-- recipient's current address and whether the contact rule lets it be used (the notice's
-- content is read once per notice: load_notices).
-- Each row by its key, whatever the statistics say: LATERAL (... LIMIT 1) cannot become a
-- hash join. Right after a large fan-out the planner has no statistics on the new rows
-- and scanned all deliveries and hashed all recipients for each batch of 1000 (62 ms
-- instead of a few).
SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.agency_id, d.status,
       d.provider_message_id,
       greatest(d.send_attempts, a.attempt) AS attempts_made,
       -- an attempt newer than the delivery's send_attempts: started, and a crash came
       -- before its answer was recorded (unknown_outcomes.py); null on the common path
       CASE WHEN a.attempt > d.send_attempts THEN a.attempt END AS unknown_attempt,
       CASE WHEN a.attempt > d.send_attempts THEN a.started_at END AS unknown_since,
       -- the outcome a worker recorded already, to announce again (see OUTCOME below)
       CASE WHEN d.provider_message_id IS NOT NULL THEN 'accepted'
            WHEN d.status = 'failed' AND d.send_attempts > 0 THEN 'failed' END AS outcome,
       CASE WHEN d.provider_message_id IS NOT NULL THEN d.sent_at
            ELSE d.failed_at END AS outcome_at,
       d.address AS sent_to, d.provider, d.reason, d.provider_code, d.send_attempts, r.name,
       -- the contact rule (relaybook/reachability/queries.sql), as the preferences show it: the
       -- recipient's current address, and why they may not be contacted there (NULL: go)
       consent.address, consent.skip_reason
FROM (SELECT DISTINCT unnest($1::uuid[])) AS job (id)  -- a job given twice is sent once
CROSS JOIN LATERAL (SELECT * FROM deliveries WHERE id = job.id LIMIT 1) d
CROSS JOIN LATERAL (SELECT * FROM recipients
                    WHERE agency_id = d.agency_id AND id = d.recipient_id LIMIT 1) r
CROSS JOIN LATERAL (SELECT d.channel) AS ch
-- include: relaybook.reachability.contact
-- the latest attempt, as the max(attempt) this replaced: one backward step on the key
LEFT JOIN LATERAL (SELECT attempt, started_at FROM send_attempts
                   WHERE delivery_id = d.id ORDER BY attempt DESC LIMIT 1) a ON true;

-- name: load_notices
-- The content of the notices of a batch, once each: read with every delivery, a 20 KB
-- HTML email came back 1000 times for each request of 1000 emails.
SELECT id, email_subject, email_text, email_html, sms_text, source_kind
FROM notices WHERE id = ANY($1::uuid[]);

-- name: skip
UPDATE deliveries d SET status = 'skipped', reason = u.reason, updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u (id, reason)
WHERE d.id = u.id AND d.status = 'queued';

-- name: start_attempts
-- Recorded and committed before the provider is called: a job seen again later knows an
-- attempt was made. The lock makes a worker that comes just after another recorded the
-- outcome see it; of two starting the same attempt at the same moment, the second finds
-- its number taken and leaves it. By key, as load_deliveries: through the status index
-- it read every queued delivery for each batch.
INSERT INTO send_attempts (delivery_id, attempt)
SELECT d.id, greatest(d.send_attempts, (SELECT max(a.attempt) FROM send_attempts a
                                        WHERE a.delivery_id = d.id)) + 1
FROM (SELECT DISTINCT unnest($1::uuid[])) AS job (id)
CROSS JOIN LATERAL (SELECT id, send_attempts FROM deliveries
                    WHERE id = job.id AND status = 'queued' LIMIT 1 FOR UPDATE) d
ON CONFLICT DO NOTHING
RETURNING delivery_id AS id, attempt, started_at;

-- Each outcome also records the attempt on the delivery ($1 ids, $2 attempt numbers,
-- $3 when they started, as start_attempts returned it, $4 the addresses they went to), in
-- the same new row version. OUTCOME: what the outcome's event is made of, as recorded;
-- load_deliveries reads the same columns back when a job comes again before its event
-- was published, so both announce the same event.

-- name: record_accepted
-- Never moves a delivery backwards: a webhook may have advanced it already.
UPDATE deliveries d
SET status = CASE WHEN d.status = 'queued' THEN 'sent' ELSE d.status END,
    provider = $6, provider_message_id = u.message_id, sent_at = COALESCE(d.sent_at, now()),
    reason = CASE WHEN d.status = 'queued' THEN NULL ELSE d.reason END,
    -- one moved on keeps its claim (claim_moved_on) until its event is published too
    next_attempt_at = CASE WHEN d.status = 'queued' THEN NULL ELSE d.next_attempt_at END,
    updated_at = now(),
    send_attempts = greatest(d.send_attempts, u.attempt), attempt_started_at = u.started_at,
    address = u.address
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[])
         AS u (id, attempt, started_at, address, message_id)
WHERE d.id = u.id
RETURNING d.id, d.channel, d.agency_id, 'accepted' AS outcome, d.sent_at AS outcome_at, d.address AS sent_to,
          d.provider, d.provider_message_id, d.reason, d.provider_code, d.send_attempts;

-- name: record_failed
UPDATE deliveries d
SET status = 'failed', reason = u.reason, provider_code = u.code, provider = $7,
    failed_at = now(), updated_at = now(), next_attempt_at = NULL,
    send_attempts = greatest(d.send_attempts, u.attempt), attempt_started_at = u.started_at,
    address = u.address
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])
         AS u (id, attempt, started_at, address, reason, code)
WHERE d.id = u.id AND d.status = 'queued'
RETURNING d.id, d.channel, d.agency_id, 'failed' AS outcome, d.failed_at AS outcome_at, d.address AS sent_to,
          d.provider, d.provider_message_id, d.reason, d.provider_code, d.send_attempts;

-- name: schedule_retry
-- Back to the relay's queue, due at the given time, with the transient error as reason.
UPDATE deliveries d
SET next_attempt_at = u.due, reason = u.reason, updated_at = now(),
    send_attempts = greatest(d.send_attempts, u.attempt), attempt_started_at = u.started_at,
    address = u.address
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::timestamptz[], $6::text[])
         AS u (id, attempt, started_at, address, due, reason)
WHERE d.id = u.id AND d.status = 'queued';

-- Attempts whose outcome a crash left unknown (unknown_outcomes.py): the rare path.

-- name: taken_by_events
-- SendGrid's own word on emails in doubt: for each, the first of its events that proves
-- SendGrid took the email ($2: those types), with the message id (the X-Message-Id is the
-- event's sg_message_id up to the first '.'). Through delivery_events' delivery index.
SELECT DISTINCT ON (e.delivery_id) e.delivery_id AS id,
       split_part(e.provider_message_id, '.', 1) AS message_id
FROM delivery_events e
WHERE e.delivery_id = ANY($1::uuid[]) AND e.type = ANY($2::text[])
  AND e.provider_message_id <> ''
ORDER BY e.delivery_id, e.occurred_at;

-- name: recorded_message_ids
-- Which of these provider message ids a delivery already has: a message found at the
-- provider is another delivery's (a resend's earlier one) if it is recorded there.
SELECT provider_message_id FROM deliveries WHERE provider_message_id = ANY($1::text[]);

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
