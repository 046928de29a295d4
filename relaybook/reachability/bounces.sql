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
-- At most one active suppression per address and rule: a rule already active comes back
-- empty and nothing more is done, but another rule (an owner's STOP while the address is
-- suppressed for bounces) is recorded beside it. $6: when it expires (NULL: until
-- lifted). by_owner: the rule is the owner's own word (the schema says which are).
INSERT INTO suppressions (channel, address, rule, reason, evidence, expires_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (channel, lower(address), rule) WHERE lifted_at IS NULL DO NOTHING
RETURNING id, by_owner;

-- name: recipients_at
-- The recipients whose current address this is and whom a suppression of it concerns: an
-- automatic one ($3 false) spares those marked "never auto-unsubscribe". Their
-- preferences are not copied: the contact rule reads the suppression itself.
SELECT r.agency_id, r.id
FROM recipients r
WHERE CASE WHEN $1 = 'email' THEN lower(r.email) = $2 ELSE r.phone = $2 END
  AND ($3 OR NOT r.never_auto_unsubscribe);

-- name: lift_owner_opt_out
-- The owner opted back in (START, resubscribed from the email): their own opt-outs of the
-- address lift, nobody else's decision (an automatic suppression stays).
UPDATE suppressions SET lifted_at = now(), lifted_by = 'owner', lift_reason = $3
WHERE channel = $1 AND lower(address) = $2 AND lifted_at IS NULL AND by_owner
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

-- name: note_opt_in
-- The owner's START is their latest word on the channel for the recipients at the number
-- whose own preference says yes (a "no" of theirs or a manager's stays as it is): what the
-- preferences show as who last decided, and why.
UPDATE recipients r
SET email_changed_by_kind = CASE WHEN $1 = 'email' THEN 'owner' ELSE email_changed_by_kind END,
    email_changed_by = CASE WHEN $1 = 'email' THEN NULL ELSE email_changed_by END,
    email_reason = CASE WHEN $1 = 'email' THEN $3 ELSE email_reason END,
    email_changed_at = CASE WHEN $1 = 'email' THEN now() ELSE email_changed_at END,
    sms_changed_by_kind = CASE WHEN $1 = 'sms' THEN 'owner' ELSE sms_changed_by_kind END,
    sms_changed_by = CASE WHEN $1 = 'sms' THEN NULL ELSE sms_changed_by END,
    sms_reason = CASE WHEN $1 = 'sms' THEN $3 ELSE sms_reason END,
    sms_changed_at = CASE WHEN $1 = 'sms' THEN now() ELSE sms_changed_at END,
    updated_at = now()
WHERE CASE WHEN $1 = 'email' THEN lower(r.email) = $2 AND r.email_wants = 'yes'
           ELSE r.phone = $2 AND r.sms_wants = 'yes' END;

-- name: reachable_at
-- The recipients at an address whom the contact rule lets be contacted there now (after
-- a suppression lifted): they are announced as subscribed again.
SELECT r.agency_id, r.id
FROM recipients r
CROSS JOIN (SELECT $1::text AS channel) AS ch
-- include: relaybook.reachability.contact
WHERE CASE WHEN $1 = 'email' THEN lower(r.email) = $2 ELSE r.phone = $2 END
  AND consent.wants = 'yes';
