-- Every query of the send workers, by name.

-- name: load_deliveries
-- What a worker needs to send a batch of jobs, read fresh: the delivery's state, the
-- notice's content, the recipient's current address and preference, any suppression.
SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.status, d.provider_message_id,
       d.send_attempts, n.email_subject, n.email_text, n.email_html, n.sms_text,
       n.source_kind, r.name,
       CASE d.channel WHEN 'email' THEN r.email ELSE r.phone END AS address,
       CASE d.channel WHEN 'email' THEN r.email_wants ELSE r.sms_wants END AS wants,
       CASE d.channel WHEN 'email' THEN r.email_changed_by_kind
                      ELSE r.sms_changed_by_kind END AS wants_changed_by,
       EXISTS (SELECT 1 FROM suppressions s
               WHERE s.channel = d.channel
                 AND lower(s.address) = lower(CASE d.channel WHEN 'email' THEN r.email
                                                             ELSE r.phone END)
                 AND s.lifted_at IS NULL
                 AND (s.expires_at IS NULL OR s.expires_at > now())
                 -- "never auto-unsubscribe": only the owner's own opt-out stops them
                 AND NOT (r.never_auto_unsubscribe AND s.rule <> 'opt_out')) AS suppressed
FROM deliveries d
JOIN notices n ON n.id = d.notice_id
JOIN recipients r ON r.id = d.recipient_id
WHERE d.id = ANY($1::uuid[]);

-- name: skip
UPDATE deliveries d SET status = 'skipped', reason = u.reason, updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u (id, reason)
WHERE d.id = u.id AND d.status = 'queued';

-- name: start_attempts
-- Recorded and committed before the provider is called: a job seen again later knows an
-- attempt was made.
UPDATE deliveries d
SET attempt_started_at = now(), send_attempts = d.send_attempts + 1, address = u.address,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u (id, address)
WHERE d.id = u.id AND d.status = 'queued'
RETURNING d.id, d.send_attempts;

-- name: record_accepted
-- Never moves a delivery backwards: a webhook may have advanced it already.
UPDATE deliveries d
SET status = CASE WHEN d.status = 'queued' THEN 'sent' ELSE d.status END,
    provider = $3, provider_message_id = u.message_id, sent_at = COALESCE(d.sent_at, now()),
    reason = CASE WHEN d.status = 'queued' THEN NULL ELSE d.reason END,
    next_attempt_at = NULL, updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u (id, message_id)
WHERE d.id = u.id;

-- name: record_failed
UPDATE deliveries d
SET status = 'failed', reason = u.reason, provider_code = u.code, provider = $4,
    failed_at = now(), updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u (id, reason, code)
WHERE d.id = u.id AND d.status = 'queued';

-- name: schedule_retry
-- Back to the relay's queue, due at the given time, with the transient error as reason.
UPDATE deliveries d
SET next_attempt_at = u.due, reason = u.reason, updated_at = now()
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS u (id, due, reason)
WHERE d.id = u.id AND d.status = 'queued';
