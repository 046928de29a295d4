-- The contact rule: may this recipient be contacted on this channel now, and if not, why.
-- One rule, one place: the preferences the API and the console show, the fan-out's and
-- the resend's skip reasons and the send worker's last check all include this fragment
-- (relaybook.platform.sql: a line `-- include: relaybook.reachability.contact`), so what is shown is what is done.
--
-- The including query names the recipient's row `r` and has a relation `ch` with a
-- `channel` column in scope; the fragment adds a relation `consent` with:
--   address      the recipient's current address on the channel (NULL: none)
--   wants        'yes', 'no', or 'not_applicable' without an address
--   skip_reason  NULL when they may be contacted, else no_address, opted_out (the owner's
--                own opt-out, or a person's "no") or auto_unsubscribed (the bounce policy)
--   changed_by   who decided what is shown: default, owner, manager, support, automatic
--   changed_by_name, reason, changed_at: the author, their words, and when
--   owner_block  an owner's own opt-out at the address is active (only they may lift it)
--   auto_block   an automatic suppression at the address applies to this recipient
--
-- Causes, in the order they are shown: an owner's own opt-out of the address (STOP,
-- unsubscribe link, spam complaint), then the recipient's own preference when it says
-- no, then an automatic suppression of the address (hard or soft bounces, the provider's
-- own list; not for a recipient marked "never auto-unsubscribe"). Every cause stays
-- recorded under the one shown: lifting one never lifts another.

-- name: contact
CROSS JOIN LATERAL (
    SELECT a.address,
           CASE WHEN a.address IS NULL THEN 'not_applicable'
                WHEN s.owner_block OR s.auto_block OR a.wants = 'no' THEN 'no'
                ELSE 'yes' END AS wants,
           CASE WHEN a.address IS NULL THEN 'no_address'
                WHEN s.owner_block THEN 'opted_out'
                WHEN a.wants = 'no' AND a.kind = 'automatic' THEN 'auto_unsubscribed'
                WHEN a.wants = 'no' THEN 'opted_out'
                WHEN s.auto_block THEN 'auto_unsubscribed' END AS skip_reason,
           CASE WHEN shown.suppression THEN s.changed_by ELSE a.kind END AS changed_by,
           CASE WHEN shown.suppression THEN 'bounce-policy' ELSE a.changed_by END
               AS changed_by_name,
           CASE WHEN shown.suppression THEN s.reason ELSE a.reason END AS reason,
           CASE WHEN shown.suppression THEN s.created_at ELSE a.changed_at END AS changed_at,
           s.owner_block,
           s.auto_block
    FROM (SELECT CASE ch.channel WHEN 'email' THEN r.email ELSE r.phone END AS address,
                 CASE ch.channel WHEN 'email' THEN r.email_wants ELSE r.sms_wants END AS wants,
                 CASE ch.channel WHEN 'email' THEN r.email_changed_by_kind
                                 ELSE r.sms_changed_by_kind END AS kind,
                 CASE ch.channel WHEN 'email' THEN r.email_changed_by
                                 ELSE r.sms_changed_by END AS changed_by,
                 CASE ch.channel WHEN 'email' THEN r.email_reason ELSE r.sms_reason END AS reason,
                 CASE ch.channel WHEN 'email' THEN r.email_changed_at
                                 ELSE r.sms_changed_at END AS changed_at) a
    -- the active suppressions of the address that apply to this recipient (none in the
    -- common case: one index probe), the owner's first, then the newest
    CROSS JOIN LATERAL (
        SELECT coalesce(bool_or(x.by_owner), false) AS owner_block,
               coalesce(bool_or(NOT x.by_owner), false) AS auto_block,
               CASE WHEN bool_or(x.by_owner) THEN 'owner' ELSE 'automatic' END AS changed_by,
               (array_agg(x.reason ORDER BY x.by_owner DESC, x.id DESC))[1] AS reason,
               (array_agg(x.created_at ORDER BY x.by_owner DESC, x.id DESC))[1] AS created_at
        FROM suppressions x
        -- address_key (lower(address), stored), never lower(x.address): under the API's
        -- row-level security that reaches no index (0022)
        WHERE x.channel = ch.channel AND x.address_key = lower(a.address)
          AND x.lifted_at IS NULL
          AND (x.expires_at IS NULL OR x.expires_at > now())
          AND (x.by_owner OR NOT r.never_auto_unsubscribe)
    ) s
    -- what is shown comes from a suppression: the owner's opt-out, or an automatic one
    -- when the recipient's own preference does not say no
    CROSS JOIN LATERAL (
        SELECT a.address IS NOT NULL
               AND (s.owner_block OR (s.auto_block AND a.wants <> 'no')) AS suppression
    ) shown
    -- kept a subquery, or the planner copies each column into every use and looks the
    -- suppressions up once per use
    OFFSET 0
) AS consent

-- name: shown
-- One recipient's channel as the contact rule shows it: $1 recipient, $2 channel, $3
-- agency (what the tests and ops read back).
SELECT consent.*
FROM recipients r
CROSS JOIN (SELECT $2::text AS channel) AS ch
-- include: relaybook.reachability.contact
WHERE r.id = $1 AND r.agency_id = $3;

-- name: count_off
-- How many recipients the contact rule keeps off channel $1.
SELECT count(*)
FROM recipients r
CROSS JOIN (SELECT $1::text AS channel) AS ch
-- include: relaybook.reachability.contact
WHERE consent.wants = 'no';
