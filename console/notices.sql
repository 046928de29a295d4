-- The console's notices pages (console.notices), run on the API's scoped pool:
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
