-- Every reason not to contact an address is recorded on its own, and an owner's own
-- opt-out is marked as theirs (issue 33).
--
-- Before, an address had at most one active suppression: an owner's STOP that arrived
-- while the address was already suppressed for hard bounces was lost, and support lifting
-- the bounces then lifted everything. The bounce policy also copied each suppression onto
-- the preferences of the recipients at the address, so that what a preference showed and
-- what a send obeyed were two copies that could part. Now:
-- - an address holds one active suppression per rule (hard_bounces, soft_bounces,
--   provider_suppressed, complaint, opt_out), each lifted on its own;
-- - `by_owner` says the owner asked for it (the rules opt_out, for STOP and the
--   unsubscribe link, and complaint): only the owner lifts it (START, or a change made on
--   their behalf with evidence);
-- - a recipient's `*_wants` columns hold the decisions about the person (a manager's, an
--   owner's made through their agency, support's); the contact rule (relaybook/reachability/queries.sql)
--   reads both, and every reader (preferences, fan-out, resends, the worker) reads it.

-- The owner's own causes, by rule: the one place that says which they are.
ALTER TABLE suppressions ADD COLUMN by_owner boolean NOT NULL
    GENERATED ALWAYS AS (rule IN ('opt_out', 'complaint')) STORED;

DROP INDEX suppressions_active_idx;
CREATE UNIQUE INDEX suppressions_active_idx ON suppressions (channel, lower(address), rule)
    WHERE lifted_at IS NULL;

-- An owner's opt-out that the old single suppression lost (it came while another cause
-- was active, or was lifted with it) is restored: the owner's latest own word on the
-- address, from the bounce policy's record of every provider event, is an opt-out, and
-- no active owner suppression says so.
INSERT INTO suppressions (channel, address, rule, reason, evidence, created_at)
SELECT last.channel, last.address, last.kind,
       last.note || ' (restored: an earlier version lost it)',
       jsonb_build_array(jsonb_build_object('event_id', last.event_id, 'kind', last.kind,
                                            'occurred_at', last.occurred_at)),
       last.occurred_at
FROM (SELECT DISTINCT ON (channel, address) *
      FROM address_events
      WHERE kind IN ('opt_out', 'complaint', 'opt_in')
      ORDER BY channel, address, occurred_at DESC, recorded_at DESC) last
WHERE last.kind <> 'opt_in'
  AND NOT EXISTS (SELECT 1 FROM suppressions s
                  WHERE s.channel = last.channel AND lower(s.address) = last.address
                    AND s.lifted_at IS NULL AND s.by_owner)
ON CONFLICT DO NOTHING;

-- The copies the bounce policy made on recipients go: the suppressions say it now.
UPDATE recipients
SET email_wants = 'yes', email_reason = NULL, email_changed_by_kind = 'default',
    email_changed_by = NULL, email_changed_at = NULL
WHERE email_changed_by = 'bounce-policy';
UPDATE recipients
SET sms_wants = 'yes', sms_reason = NULL, sms_changed_by_kind = 'default',
    sms_changed_by = NULL, sms_changed_at = NULL
WHERE sms_changed_by = 'bounce-policy';
