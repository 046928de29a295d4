-- Recipients' preferences, by name (relaybook.reachability.preferences): read as the
-- contact rule shows them (queries.sql), changed, audited.

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
-- (relaybook/reachability/preferences.py: OVERVIEW_FILTERS); one recipient is the same with its key.
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

-- name: recipient_agencies
-- The agencies (among those the caller sees) that have a recipient with this id.
SELECT agency_id FROM recipients WHERE id = $1 ORDER BY agency_id LIMIT 2;

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
