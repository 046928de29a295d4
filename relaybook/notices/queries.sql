-- Notices, by name: creation, release, settling, the notice with its statistics and the
-- notices list (relaybook.notices.store, relaybook.notices.listing); resends
-- (relaybook.notices.resends). Every statement that writes a notice is here
-- (tests/relaybook/test_one_writer.py); the deliveries a notice fans out to are written
-- by the deliveries' transitions (relaybook/deliveries/queries.sql: fan_out,
-- add_resend_attempts, retire_attempts).

-- name: claim_idempotency_key
-- Claims (caller, key) for this request; a concurrent claim waits here until ours commits.
INSERT INTO idempotency_keys (caller, key, request_hash, status, response, agency_id)
VALUES ($1, $2, $3, 0, 'null', $4)
ON CONFLICT (caller, key) DO NOTHING
RETURNING caller;

-- name: idempotency_answer
SELECT request_hash, status, response FROM idempotency_keys WHERE caller = $1 AND key = $2;

-- name: store_idempotency_answer
UPDATE idempotency_keys SET status = $3, response = $4 WHERE caller = $1 AND key = $2;

-- name: ensure_agency
-- Agencies and properties are the platform's: named by a notice, they exist from then on.
INSERT INTO agencies (id) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: ensure_properties
INSERT INTO properties (agency_id, id)
SELECT $1, id FROM unnest($2::text[]) AS p (id)
ON CONFLICT DO NOTHING;

-- name: link_properties
-- The properties each recipient owns or rents in ($2 recipients, $3 properties, paired).
INSERT INTO recipient_properties (agency_id, recipient_id, property_id)
SELECT $1, r, p FROM unnest($2::text[], $3::text[]) AS l (r, p)
ON CONFLICT DO NOTHING;

-- name: insert_notice
INSERT INTO notices (id, source_service, source_kind, source_reference, title, email_subject,
                     email_text, email_html, sms_text, status, send_at, released_at, created_by,
                     agency_id, property_id, default_language, content)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
        CASE WHEN $10 = 'sending' THEN now() END, $12, $13, $14, $15, $16);

-- name: upsert_recipients
-- One statement for the whole list. An address (or a language) left out of the request is
-- kept; one given as null is cleared (the recipient no longer has it). Unchanged rows are
-- not rewritten.
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[],
                         $8::text[], $9::bool[])
        AS g (id, name, email, phone, email_given, phone_given, language, language_given)
), updated AS (
    UPDATE recipients r
    SET name = COALESCE(g.name, r.name),
        email = CASE WHEN g.email_given THEN g.email ELSE r.email END,
        phone = CASE WHEN g.phone_given THEN g.phone ELSE r.phone END,
        language = CASE WHEN g.language_given THEN g.language ELSE r.language END,
        updated_at = now()
    FROM given g
    WHERE r.agency_id = $7 AND r.id = g.id
      AND (r.name, r.email, r.phone, r.language) IS DISTINCT FROM (
          COALESCE(g.name, r.name),
          CASE WHEN g.email_given THEN g.email ELSE r.email END,
          CASE WHEN g.phone_given THEN g.phone ELSE r.phone END,
          CASE WHEN g.language_given THEN g.language ELSE r.language END)
    RETURNING r.id
)
INSERT INTO recipients (agency_id, id, name, email, phone, language)
SELECT $7, id, name, email, phone, language FROM given
WHERE NOT EXISTS (SELECT 1 FROM updated u WHERE u.id = given.id)
ON CONFLICT (agency_id, id) DO NOTHING;

-- name: insert_notice_data
-- What the notice says to each recipient of their own ($3 the recipients, $4 their data,
-- paired): once per recipient, whatever the channels.
INSERT INTO notice_data (notice_id, agency_id, recipient_id, data)
SELECT $1, $2, r, d FROM unnest($3::text[], $4::jsonb[]) AS u (r, d);

-- name: insert_job_pages
-- The pages of a fan-out ($2: the resend, or null for the notice's own): its recipients
-- in order, $4 to a page; due now if the notice is released ($3), else once it is.
INSERT INTO job_pages (notice_id, resend_id, first_recipient, last_recipient, due_at)
SELECT $1, $2, min(id), max(id), CASE WHEN NOT $3 THEN 'infinity'::timestamptz END
FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / $4 AS page
      FROM (SELECT DISTINCT unnest($5::text[]) AS id) AS given) AS numbered
GROUP BY page;

-- name: notice
SELECT id, source_service, source_kind, source_reference, title, email_subject, sms_text,
       status, send_at, released_at, created_by, created_at, agency_id, property_id
FROM notices WHERE id = $1;

-- name: notices
-- One page of the notices list, newest first. {where} is built from fixed conditions
-- (relaybook/notices/listing.py: LIST_FILTERS); row-level security keeps the caller's agencies.
SELECT id, source_service, source_kind, source_reference, title, email_subject, sms_text,
       status, send_at, released_at, created_by, created_at, agency_id, property_id
FROM notices n
WHERE {where}
ORDER BY created_at DESC, id DESC
LIMIT {limit};

-- name: notice_stats
-- The funnel per channel over each recipient's latest attempt: sent counts every message
-- the provider accepted (failed ones too); delivered, opened and clicked count every
-- message whose status got that far (a bounce after a "delivered" is not delivered);
-- queued, failed and skipped are states. The status only climbs (relaybook/deliveries/precedence.py).
SELECT channel,
       count(*) AS recipients,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
       count(*) FILTER (WHERE status IN ('delivered', 'opened', 'clicked')) AS delivered,
       count(*) FILTER (WHERE status IN ('opened', 'clicked')) AS opened,
       count(*) FILTER (WHERE status = 'clicked') AS clicked,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'skipped') AS skipped
FROM deliveries
WHERE notice_id = $1 AND is_latest
GROUP BY channel
ORDER BY channel;

-- name: release_notice
-- Sends a draft or scheduled notice now: its waiting deliveries become due.
WITH released AS (
    UPDATE notices SET status = 'sending', released_at = now(), updated_at = now()
    WHERE id = $1 AND status IN ('draft', 'scheduled')
    RETURNING id
), due AS (
    UPDATE job_pages p SET due_at = NULL
    FROM released
    WHERE p.notice_id = released.id AND p.published_at IS NULL
)
SELECT count(*) AS released FROM released;

-- name: settle_notice
-- A notice released with nothing to send (every delivery skipped) is settled at once.
SELECT settle_notices(ARRAY[$1::uuid]);

-- name: settle_notices
-- The notices a batch of delivery events touched (the tracker).
SELECT settle_notices($1::uuid[]);

-- name: settle_notices_function
-- A notice's final status, its one writer once it is sending: sent when no latest attempt
-- failed, failed when none got anywhere (all failed or skipped), else partially_failed;
-- not while any is queued. Applied by the migrations from here
-- (relaybook/migrations/defined_settle_notices.sql; its history: 0003, then 0018).
-- Settling a notice is serialised per notice. Two trackers (or a tracker and the
-- dispatcher) that each record the last outcome of a different message of one notice,
-- in overlapping transactions, each saw the other's message still queued and left the
-- notice 'sending' for good. Now each settler first locks the notices (in id order: no
-- waiting in a circle), and only then reads their deliveries, in a statement of its own
-- (a fresh snapshot): the later one waits for the earlier to commit and sees its rows.
-- FOR NO KEY UPDATE, the lock the status update takes anyway: new deliveries of a
-- notice (their foreign key's KEY SHARE) are not held up.
CREATE OR REPLACE FUNCTION settle_notices(ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    settled integer;
BEGIN
    PERFORM 1 FROM notices WHERE id = ANY (ids) ORDER BY id FOR NO KEY UPDATE;
    WITH candidates AS (
        SELECT n.id, n.status
        FROM notices n
        WHERE n.id = ANY (ids)
          AND n.status IN ('sending', 'sent', 'partially_failed', 'failed')
          AND NOT EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.notice_id = n.id AND d.is_latest AND d.status = 'queued')
    ), outcome AS (
        SELECT c.id, c.status AS was,
               CASE
                   WHEN count(*) FILTER (WHERE d.status NOT IN ('failed', 'skipped')) = 0
                       THEN 'failed'
                   WHEN count(*) FILTER (WHERE d.status = 'failed') = 0 THEN 'sent'
                   ELSE 'partially_failed'
               END AS now
        FROM candidates c
        JOIN deliveries d ON d.notice_id = c.id AND d.is_latest
        GROUP BY c.id, c.status
    ), changed AS (
        UPDATE notices n SET status = o.now, updated_at = now()
        FROM outcome o
        WHERE n.id = o.id AND o.now <> o.was
        RETURNING n.id
    )
    SELECT count(*)::integer INTO settled FROM changed;
    RETURN settled;
END
$$;

-- name: notice_exists
SELECT EXISTS (SELECT 1 FROM notices WHERE id = $1);

-- name: lock_notice
-- Resends of one notice take turns: the second sees the first's new attempts.
SELECT id, status, agency_id FROM notices WHERE id = $1 FOR UPDATE;

-- name: resend_candidates
-- Each recipient's latest attempt per channel, with the recipient's name and why they
-- cannot be contacted there now: the contact rule's skip reason (relaybook/reachability/queries.sql;
-- NULL: they may be), as the fan-out, the worker and the preferences read it.
SELECT d.id, d.recipient_id, r.name, d.channel, d.status, consent.skip_reason AS reason
FROM deliveries d
JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
CROSS JOIN LATERAL (SELECT d.channel) AS ch
-- include: relaybook.reachability.contact
WHERE d.notice_id = $1 AND d.is_latest;

-- name: insert_resend
INSERT INTO resends (id, notice_id, scope, requested_by, recipients, email, sms, "full",
                     agency_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: notice_sending_again
UPDATE notices SET status = 'sending', updated_at = now() WHERE id = $1;

-- name: resend_history
SELECT id, created_at, scope, requested_by, recipients, email, sms, "full"
FROM resends WHERE notice_id = $1
ORDER BY created_at DESC, id DESC;

-- name: load_contents
-- The content of notices ($1), what relaybook.notices.rendering renders from: once per
-- notice for a send worker's batch (read with every delivery, a 20 KB HTML email came
-- back 1000 times for each request of 1000 emails), and for a preview.
SELECT id, email_subject, email_text, email_html, sms_text, source_kind, source_reference,
       title, agency_id, default_language, content
FROM notices WHERE id = ANY($1::uuid[]);

-- name: preview_recipient
-- A recipient of the notice ($1) and what its templates read of them: null if the notice
-- has no message for them.
SELECT r.id AS recipient_id, r.name, r.language AS reads, nd.data,
       array_agg(DISTINCT d.channel) AS channels
FROM deliveries d
JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
LEFT JOIN notice_data nd ON nd.notice_id = d.notice_id AND nd.recipient_id = d.recipient_id
WHERE d.notice_id = $1 AND d.recipient_id = $2
GROUP BY r.id, r.name, r.language, nd.data;
