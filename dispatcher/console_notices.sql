-- The console's notices pages (dispatcher.console.notices), run on the API's scoped pool:
-- row-level security keeps the person's agencies.

-- name: notices_counts
-- The counts the notices list shows for one page of notices ($1), per notice and channel,
-- over each recipient's latest attempt, as the notice's own statistics count them
-- (notice_stats in queries.sql): sent is every message the provider accepted, delivered
-- every one delivered (opened and clicked ones too), failed and skipped are states.
SELECT notice_id, channel,
       count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
       count(*) FILTER (WHERE status IN ('delivered', 'opened', 'clicked')) AS delivered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'skipped') AS skipped
FROM deliveries
WHERE notice_id = ANY ($1::uuid[]) AND is_latest
GROUP BY notice_id, channel;

-- name: left_out
-- Who a resend of notice $1 would leave out, and why: every latest attempt (as
-- resend_candidates in queries.sql) of each recipient with a failed or unconfirmed message
-- on a channel where they cannot be contacted now, with that reason. The reasons are the
-- fan-out's (insert_deliveries in queries.sql: no_address, auto_unsubscribed, opted_out,
-- suppressed; NULL: may be contacted), written the same way: the three must stay in step.
-- Which of these messages each scope would take is dispatcher.resends.plan's to say (it
-- decides per recipient, so the recipients left aside here change nothing).
WITH candidates AS (
    SELECT DISTINCT recipient_id
    FROM deliveries
    WHERE notice_id = $1 AND is_latest AND status IN ('failed', 'sent')
), messages AS (
    SELECT d.id, d.recipient_id, r.name, d.channel, d.status, x.reason
    FROM deliveries d
    JOIN candidates c ON c.recipient_id = d.recipient_id
    JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
    CROSS JOIN LATERAL (
        SELECT CASE
                   WHEN a.addr IS NULL THEN 'no_address'
                   WHEN a.wants = 'no' AND a.kind = 'automatic' THEN 'auto_unsubscribed'
                   WHEN a.wants = 'no' THEN 'opted_out'
                   WHEN EXISTS (SELECT 1 FROM suppressions s
                                WHERE s.channel = d.channel AND lower(s.address) = lower(a.addr)
                                  AND s.lifted_at IS NULL
                                  AND (s.expires_at IS NULL OR s.expires_at > now())
                                  AND NOT (r.never_auto_unsubscribe AND s.rule <> 'opt_out'))
                       THEN 'suppressed'
               END AS reason
        FROM (SELECT CASE d.channel WHEN 'email' THEN r.email ELSE r.phone END AS addr,
                     CASE d.channel WHEN 'email' THEN r.email_wants ELSE r.sms_wants END AS wants,
                     CASE d.channel WHEN 'email' THEN r.email_changed_by_kind
                                    ELSE r.sms_changed_by_kind END AS kind) a
    ) x
    WHERE d.notice_id = $1 AND d.is_latest
)
SELECT m.id, m.recipient_id, m.name, m.channel, m.status, m.reason
FROM messages m
WHERE m.recipient_id IN (SELECT recipient_id FROM messages
                         WHERE reason IS NOT NULL AND status IN ('failed', 'sent'))
ORDER BY m.recipient_id, m.channel;
