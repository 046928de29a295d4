-- Every query of the bounce policy and the preferences it changes, by name.

-- name: record_successes
-- The latest success per address resets its soft count (GREATEST: order does not matter).
INSERT INTO address_health (channel, address, last_success_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (channel, address) DO UPDATE
SET last_success_at = GREATEST(address_health.last_success_at, EXCLUDED.last_success_at);

-- name: record_events
-- Each provider event once: a duplicate or a replay comes back empty and counts nothing.
INSERT INTO address_events (event_id, channel, address, kind, note, provider_code,
                            delivery_id, occurred_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::uuid[], $8::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;

-- name: lock_address
-- Two policy replicas counting one address wait for each other (events are keyed by
-- delivery, so one address's events can reach both).
SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0));

-- name: count_failures
-- Hard failures within the window; soft ones within the window and since the last
-- success; nothing before a support override counts.
SELECT
    (SELECT count(*) FROM address_events e
     WHERE e.channel = $1 AND e.address = $2 AND e.kind = 'hard'
       AND e.occurred_at > GREATEST(now() - $3::interval, h.cleared_at)) AS hard,
    (SELECT count(*) FROM address_events e
     WHERE e.channel = $1 AND e.address = $2 AND e.kind = 'soft'
       AND e.occurred_at > GREATEST(now() - $4::interval, h.cleared_at, h.last_success_at))
        AS soft,
    (SELECT coalesce(json_agg(json_build_object(
                'event_id', x.event_id, 'kind', x.kind, 'provider_code', x.provider_code,
                'occurred_at', x.occurred_at) ORDER BY x.occurred_at), '[]')
     FROM (SELECT * FROM address_events e
           WHERE e.channel = $1 AND e.address = $2 AND e.kind IN ('hard', 'soft')
             AND e.occurred_at > GREATEST(now() - GREATEST($3::interval, $4::interval),
                                          h.cleared_at)
           ORDER BY e.occurred_at DESC LIMIT 20) x) AS evidence
FROM (SELECT 1) one
LEFT JOIN address_health h ON h.channel = $1 AND h.address = $2;

-- name: suppress
-- At most one active suppression per address: an address already suppressed comes back
-- empty and nothing more is done. $6: when it expires (NULL: until lifted).
INSERT INTO suppressions (channel, address, rule, reason, evidence, expires_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (channel, lower(address)) WHERE lifted_at IS NULL DO NOTHING
RETURNING id;

-- name: unsubscribe_recipients
-- Every recipient whose current address this is, unless already unsubscribed; a recipient
-- marked "never auto-unsubscribe" keeps its preference unless the owner opted out.
UPDATE recipients r
SET email_wants = CASE WHEN $1 = 'email' THEN 'no' ELSE email_wants END,
    email_reason = CASE WHEN $1 = 'email' THEN $3 ELSE email_reason END,
    email_changed_by_kind = CASE WHEN $1 = 'email' THEN $4 ELSE email_changed_by_kind END,
    email_changed_by = CASE WHEN $1 = 'email' THEN 'bounce-policy' ELSE email_changed_by END,
    email_changed_at = CASE WHEN $1 = 'email' THEN now() ELSE email_changed_at END,
    sms_wants = CASE WHEN $1 = 'sms' THEN 'no' ELSE sms_wants END,
    sms_reason = CASE WHEN $1 = 'sms' THEN $3 ELSE sms_reason END,
    sms_changed_by_kind = CASE WHEN $1 = 'sms' THEN $4 ELSE sms_changed_by_kind END,
    sms_changed_by = CASE WHEN $1 = 'sms' THEN 'bounce-policy' ELSE sms_changed_by END,
    sms_changed_at = CASE WHEN $1 = 'sms' THEN now() ELSE sms_changed_at END,
    updated_at = now()
WHERE CASE WHEN $1 = 'email' THEN lower(r.email) = $2 AND r.email_wants = 'yes'
           ELSE r.phone = $2 AND r.sms_wants = 'yes' END
  AND ($4 = 'owner' OR NOT r.never_auto_unsubscribe)
RETURNING r.agency_id, r.id;

-- name: lift_opt_out
-- The owner opted back in (START): their own opt-out is lifted, nobody else's decision.
UPDATE suppressions SET lifted_at = now(), lifted_by = 'owner', lift_reason = $3
WHERE channel = $1 AND lower(address) = $2 AND lifted_at IS NULL AND rule = 'opt_out'
RETURNING id;

-- name: audit
INSERT INTO audit_log (actor, action, subject_type, subject_id, reason, details, agency_id)
SELECT $1, $2, 'recipient', id, $3, $4::jsonb, agency_id
FROM unnest($5::text[], $6::text[]) AS r (agency_id, id);

-- name: expire_suppressions
-- Suppressions whose time is over are lifted, their failures no longer count, and the
-- recipients the policy unsubscribed for them are subscribed again.
WITH expired AS (
    UPDATE suppressions SET lifted_at = now(), lifted_by = 'expiry',
                            lift_reason = 'expired after ' || rule
    WHERE expires_at <= now() AND lifted_at IS NULL
    RETURNING channel, lower(address) AS address, rule
), cleared AS (
    INSERT INTO address_health (channel, address, cleared_at)
    SELECT channel, address, now() FROM expired
    ON CONFLICT (channel, address) DO UPDATE SET cleared_at = now()
)
SELECT channel, address, rule FROM expired;

-- name: resubscribe
-- Subscribes again the recipients at an address whom the policy turned off: $4 'owner'
-- for an opt-out by the owner (after START), 'automatic' for an unsubscribe that expired.
-- Nobody else's decision (a manager's, support's) is touched.
UPDATE recipients r
SET email_wants = CASE WHEN $1 = 'email' THEN 'yes' ELSE email_wants END,
    email_reason = CASE WHEN $1 = 'email' THEN $3 ELSE email_reason END,
    email_changed_at = CASE WHEN $1 = 'email' THEN now() ELSE email_changed_at END,
    sms_wants = CASE WHEN $1 = 'sms' THEN 'yes' ELSE sms_wants END,
    sms_reason = CASE WHEN $1 = 'sms' THEN $3 ELSE sms_reason END,
    sms_changed_at = CASE WHEN $1 = 'sms' THEN now() ELSE sms_changed_at END,
    updated_at = now()
WHERE CASE WHEN $1 = 'email'
           THEN lower(r.email) = $2 AND r.email_wants = 'no'
                AND r.email_changed_by_kind = $4 AND r.email_changed_by = 'bounce-policy'
           ELSE r.phone = $2 AND r.sms_wants = 'no'
                AND r.sms_changed_by_kind = $4 AND r.sms_changed_by = 'bounce-policy' END
RETURNING r.agency_id, r.id;
