-- The outbox relay's and the scheduler's queries (dispatcher.outbox), by name.

-- name: due_scheduled_notices
SELECT id FROM notices
WHERE status = 'scheduled' AND send_at <= now()
ORDER BY send_at
LIMIT 100
FOR UPDATE SKIP LOCKED;

-- name: claim_job_page
-- The relay's next due page; replicas skip each other's.
SELECT id, notice_id, resend_id, first_recipient, last_recipient
FROM job_pages
WHERE published_at IS NULL AND (due_at IS NULL OR due_at <= now())
ORDER BY due_at NULLS FIRST, id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- SEND_JOB: each row's key (the recipient id), channel (the header the workers' lanes
-- filter on), agency (a header too) and send-job/v1 message ($1: its created_at), written by PostgreSQL: the
-- relay's Python only passes them on (building, checking and encoding each job there was
-- most of its time; the relay checks one job a page against the contract). The JSON is
-- json_build_object's: the fields in this order, ", " and " : " between them.

-- name: page_jobs
-- A page's send jobs (SEND_JOB): its recipients' latest attempts still queued, in key
-- order (one waiting for a retry is the retry queue's).
SELECT d.recipient_id AS key, d.channel, d.agency_id AS agency, json_build_object(
           'schema', 'send-job/v1', 'agency', d.agency_id, 'job_id', d.id, 'delivery_id', d.id,
           'notice_id', d.notice_id, 'recipient_id', d.recipient_id, 'channel', d.channel,
           'attempt', d.attempt, 'resend_id', d.resend_id, 'created_at', $1::text)::text AS job
FROM deliveries d
WHERE d.notice_id = $2 AND d.is_latest AND d.recipient_id BETWEEN $4 AND $5
  AND d.resend_id IS NOT DISTINCT FROM $3 AND d.status = 'queued'
  AND d.next_attempt_at IS NULL
ORDER BY d.recipient_id, d.channel;

-- name: mark_page_published
UPDATE job_pages SET published_at = now() WHERE id = $1;

-- name: claim_due_retries
-- The relay's next due retries (put back by the send workers), as send jobs (SEND_JOB)
-- with their delivery ids; replicas skip each other's.
SELECT d.id, d.recipient_id AS key, d.channel, d.agency_id AS agency, json_build_object(
           'schema', 'send-job/v1', 'agency', d.agency_id, 'job_id', d.id, 'delivery_id', d.id,
           'notice_id', d.notice_id, 'recipient_id', d.recipient_id, 'channel', d.channel,
           'attempt', d.attempt, 'resend_id', d.resend_id, 'created_at', $1::text)::text AS job
FROM deliveries d
WHERE d.status = 'queued' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at
LIMIT $2
FOR UPDATE SKIP LOCKED;
