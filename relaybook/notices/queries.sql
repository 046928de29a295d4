-- Notices, by name: creation with its fan-out, release, the notice with its statistics
-- and the notices list (relaybook.notices.store, relaybook.notices.listing); resends
-- (relaybook.notices.resends).

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
                     agency_id, property_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
        CASE WHEN $10 = 'sending' THEN now() END, $12, $13, $14);

-- name: upsert_recipients
-- One statement for the whole list. An address left out of the request is kept; one given
-- as null is cleared (the recipient no longer has it). Unchanged rows are not rewritten.
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[])
        AS g (id, name, email, phone, email_given, phone_given)
), updated AS (
    UPDATE recipients r
    SET name = COALESCE(g.name, r.name),
        email = CASE WHEN g.email_given THEN g.email ELSE r.email END,
        phone = CASE WHEN g.phone_given THEN g.phone ELSE r.phone END,
        updated_at = now()
    FROM given g
    WHERE r.agency_id = $7 AND r.id = g.id
      AND (r.name, r.email, r.phone) IS DISTINCT FROM (
          COALESCE(g.name, r.name),
          CASE WHEN g.email_given THEN g.email ELSE r.email END,
          CASE WHEN g.phone_given THEN g.phone ELSE r.phone END)
    RETURNING r.id
)
INSERT INTO recipients (agency_id, id, name, email, phone)
SELECT $7, id, name, email, phone FROM given
WHERE NOT EXISTS (SELECT 1 FROM updated u WHERE u.id = given.id)
ON CONFLICT (agency_id, id) DO NOTHING;

-- name: insert_deliveries
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

-- name: retire_attempts
UPDATE deliveries SET is_latest = false, updated_at = now() WHERE id = ANY($1::uuid[]);

-- name: insert_attempts
-- The new attempts, linked to the ones they retry, queued for the relay like a first send.
INSERT INTO deliveries (id, notice_id, recipient_id, channel, attempt, retry_of, resend_id,
                        address, status, agency_id)
SELECT uuid_v7(), d.notice_id, d.recipient_id, d.channel, d.attempt + 1, d.id, $2,
       CASE d.channel WHEN 'email' THEN r.email ELSE r.phone END, 'queued', d.agency_id
FROM deliveries d
JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
WHERE d.id = ANY($1::uuid[])
ORDER BY d.recipient_id, d.channel;

-- name: notice_sending_again
UPDATE notices SET status = 'sending', updated_at = now() WHERE id = $1;

-- name: resend_history
SELECT id, created_at, scope, requested_by, recipients, email, sms, "full"
FROM resends WHERE notice_id = $1
ORDER BY created_at DESC, id DESC;
