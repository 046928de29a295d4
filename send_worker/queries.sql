-- Every query of the send workers, by name.

-- name: load_deliveries
-- What a worker needs to send a batch of jobs, read fresh: the delivery's state, the
-- recipient's current address and whether the contact rule lets it be used (the notice's
-- content is read once per notice: relaybook/notices/queries.sql load_contents).
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
       -- what its templates say to this recipient: their language and their own data
       r.language AS reads, nd.data,
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
                   WHERE delivery_id = d.id ORDER BY attempt DESC LIMIT 1) a ON true
LEFT JOIN LATERAL (SELECT data FROM notice_data
                   WHERE notice_id = d.notice_id AND recipient_id = d.recipient_id) nd ON true;

-- The outcomes themselves (skipped, accepted, failed, a retry, held) are the deliveries'
-- transitions: relaybook/deliveries/queries.sql. OUTCOME: what an outcome's event is made
-- of, as recorded there; load_deliveries reads the same columns back when a job comes
-- again before its event was published, so both announce the same event.

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
