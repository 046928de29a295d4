-- Every query of the dispatcher (API, outbox relay, scheduler), by name.

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
-- (dispatcher/notices.py: LIST_FILTERS); row-level security keeps the caller's agencies.
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

-- name: mark_retries_published
UPDATE deliveries SET next_attempt_at = NULL WHERE id = ANY($1::uuid[]);

-- name: settle_notice
-- A notice released with nothing to send (every delivery skipped) is settled at once.
SELECT settle_notices(ARRAY[$1::uuid]);

-- name: journal
-- One page of the journal, newest first. {where} is built from fixed conditions
-- (dispatcher/journal.py: FILTERS), each on a column the journal indexes lead with.
SELECT d.id, d.notice_id, d.recipient_id, d.channel, d.status, d.address, d.attempt,
       d.created_at, d.sent_at, d.delivered_at, d.opened_at, d.clicked_at, d.failed_at,
       d.reason, d.provider_code
FROM deliveries d
WHERE {where}
ORDER BY d.created_at DESC, d.id DESC
LIMIT {limit};

-- name: journal_by_notices
-- One page of the journal of the few notices {notices} picks (dispatcher/journal.py:
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

-- name: notice_exists
SELECT EXISTS (SELECT 1 FROM notices WHERE id = $1);

-- name: lock_preferences
-- The recipient's own preferences, held until the change commits.
SELECT id, email, phone, email_wants, email_changed_by_kind, sms_wants, sms_changed_by_kind
FROM recipients WHERE agency_id = $2 AND id = $1 FOR UPDATE;

-- name: contact_causes
-- What the contact rule finds on one channel ($3) of a recipient: the causes a change
-- must be allowed to lift (relaybook/reachability/authority.py).
SELECT consent.address, consent.owner_block, consent.auto_block
FROM recipients r
CROSS JOIN (SELECT $3::text AS channel) AS ch
-- include: relaybook.reachability.contact
WHERE r.agency_id = $2 AND r.id = $1;

-- name: set_preference
-- $2: channel; the other channel's columns are left as they are. $7: the agency.
UPDATE recipients
SET email_wants = CASE WHEN $2 = 'email' THEN $3 ELSE email_wants END,
    email_reason = CASE WHEN $2 = 'email' THEN $4 ELSE email_reason END,
    email_changed_by_kind = CASE WHEN $2 = 'email' THEN $5 ELSE email_changed_by_kind END,
    email_changed_by = CASE WHEN $2 = 'email' THEN $6 ELSE email_changed_by END,
    email_changed_at = CASE WHEN $2 = 'email' THEN now() ELSE email_changed_at END,
    sms_wants = CASE WHEN $2 = 'sms' THEN $3 ELSE sms_wants END,
    sms_reason = CASE WHEN $2 = 'sms' THEN $4 ELSE sms_reason END,
    sms_changed_by_kind = CASE WHEN $2 = 'sms' THEN $5 ELSE sms_changed_by_kind END,
    sms_changed_by = CASE WHEN $2 = 'sms' THEN $6 ELSE sms_changed_by END,
    sms_changed_at = CASE WHEN $2 = 'sms' THEN now() ELSE sms_changed_at END,
    updated_at = now()
WHERE agency_id = $7 AND id = $1;

-- name: set_never_auto_unsubscribe
UPDATE recipients SET never_auto_unsubscribe = $2, updated_at = now()
WHERE agency_id = $3 AND id = $1;

-- name: lift_suppressions
-- The causes of one kind at the address lift: the owner's own ($5 true: on their behalf)
-- or the automatic ones ($5 false: a support override). Never the other kind. By
-- address_key: under row-level security a condition on lower(address) reaches no index.
UPDATE suppressions SET lifted_at = now(), lifted_by = $3, lift_reason = $4
WHERE channel = $1 AND address_key = lower($2) AND lifted_at IS NULL AND by_owner = $5
RETURNING id, rule;

-- name: clear_address_counts
-- ...and its failures so far no longer count (the bounce policy counts after cleared_at).
INSERT INTO address_health (channel, address, cleared_at) VALUES ($1, $2, now())
ON CONFLICT (channel, address) DO UPDATE SET cleared_at = now();

-- name: audit_preference
INSERT INTO audit_log (actor, action, subject_type, subject_id, reason, details, agency_id)
VALUES ($1, $2, 'recipient', $3, $4, $5::jsonb, $6);

-- name: preferences_overview
-- Recipients with their preferences as the contact rule shows them (relaybook/reachability/queries.sql):
-- what each channel's next send obeys. {where} is built from fixed conditions
-- (dispatcher/preferences.py: OVERVIEW_FILTERS); one recipient is the same with its key.
SELECT r.id, r.name, r.email, r.phone, r.never_auto_unsubscribe, r.agency_id,
       e.wants AS email_wants, e.reason AS email_reason, e.changed_by AS email_changed_by_kind,
       e.changed_by_name AS email_changed_by, e.changed_at AS email_changed_at,
       e.skip_reason AS email_skip_reason,
       s.wants AS sms_wants, s.reason AS sms_reason, s.changed_by AS sms_changed_by_kind,
       s.changed_by_name AS sms_changed_by, s.changed_at AS sms_changed_at,
       s.skip_reason AS sms_skip_reason
FROM recipients r
CROSS JOIN LATERAL (
    SELECT consent.* FROM (SELECT 'email'::text AS channel) AS ch
    -- include: relaybook.reachability.contact
) AS e
CROSS JOIN LATERAL (
    SELECT consent.* FROM (SELECT 'sms'::text AS channel) AS ch
    -- include: relaybook.reachability.contact
) AS s
WHERE {where}
ORDER BY r.agency_id, r.id
LIMIT {limit};

-- name: lock_notice
-- Resends of one notice take turns: the second sees the first's new attempts.
SELECT id, status, agency_id FROM notices WHERE id = $1 FOR UPDATE;

-- name: recipient_agencies
-- The agencies (among those the caller sees) that have a recipient with this id.
SELECT agency_id FROM recipients WHERE id = $1 ORDER BY agency_id LIMIT 2;

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

-- name: update_contact
-- A manager corrects a recipient's name or addresses (null removes one). A new address
-- starts with a clean slate at the bounce policy (counts belong to addresses).
UPDATE recipients
SET name = CASE WHEN $2 THEN $3 ELSE name END,
    email = CASE WHEN $4 THEN $5 ELSE email END,
    phone = CASE WHEN $6 THEN $7 ELSE phone END,
    updated_at = now()
WHERE agency_id = $8 AND id = $1
RETURNING id;
