-- The console's preferences pages (console/preferences.py): what the API's
-- Preferences store does not answer. Every query runs on the scoped pool: row-level
-- security keeps it to the agencies of the person signed in.

-- name: properties
-- One page of the properties the person may see, in (agency, id) order after the
-- cursor's ($1, $2; NULL for the first page), each with how many owners it has.
SELECT p.agency_id, p.id, p.name,
       (SELECT count(*) FROM recipient_properties rp
        WHERE rp.agency_id = p.agency_id AND rp.property_id = p.id) AS owners
FROM properties p
WHERE $1::text IS NULL OR (p.agency_id, p.id) > ($1::text, $2::text)
ORDER BY p.agency_id, p.id
LIMIT $3;

-- name: property
-- A property by id, in one agency ($2) or in any the person sees (an id is unique within
-- its agency only).
SELECT agency_id, id, name FROM properties
WHERE id = $1 AND ($2::text IS NULL OR agency_id = $2)
ORDER BY agency_id
LIMIT 100;

-- name: unsubscribe_evidence
-- For recipients ($1 agencies, $2 ids, side by side), the latest automatic unsubscribe
-- per channel as the bounce policy audited it: its rule and the failures it counted.
-- An owner's own opt-out (STOP) is theirs, not the policy's.
SELECT DISTINCT ON (a.agency_id, a.subject_id, a.details ->> 'channel')
       a.agency_id, a.subject_id AS recipient_id, a.details ->> 'channel' AS channel,
       a.details ->> 'rule' AS rule, a.details -> 'evidence' AS evidence
FROM audit_log a
JOIN unnest($1::text[], $2::text[]) AS r (agency_id, id)
  ON a.agency_id = r.agency_id AND a.subject_id = r.id
WHERE a.subject_type = 'recipient' AND a.actor = 'bounce-policy'
  AND a.action LIKE 'unsubscribe\_%' AND a.action <> 'unsubscribe_opt_out'
ORDER BY a.agency_id, a.subject_id, a.details ->> 'channel', a.at DESC, a.id DESC;

-- name: history
-- One recipient's audit trail, newest first, a page before the audit id $3 (NULL: the
-- newest page): preference changes, support overrides, automatic unsubscribes with
-- their evidence, contact corrections.
SELECT id, at, actor, action, reason, details
FROM audit_log
WHERE subject_type = 'recipient' AND subject_id = $1 AND agency_id = $2
  AND ($3::bigint IS NULL OR id < $3)
ORDER BY id DESC
LIMIT $4;
