-- The console's journal pages' own queries (console.journal), run on the API's
-- scoped pool: row-level security keeps the person's agencies. The journal's rows
-- themselves are relaybook/journal/queries.sql's (JournalReader), as the API reads them.

-- name: journal_labels
-- What a page of journal rows shows beside them: each message's notice (title, source)
-- and its recipient's name. Primary-key look-ups of one page's rows.
SELECT d.id, n.title, n.source_service, n.source_kind, n.source_reference, r.name
FROM deliveries d
JOIN notices n ON n.id = d.notice_id
LEFT JOIN recipients r ON r.agency_id = d.agency_id AND r.id = d.recipient_id
WHERE d.id = ANY($1::uuid[]);

-- name: unreachable
-- One page of the owners a notice reached on no channel: each of their latest attempts
-- (is_latest, the rows notice_stats counts: a resend's attempt replaces the one it
-- retries) failed or was skipped. A message still queued, or sent without an outcome
-- yet, is not unreachable yet; drafts and scheduled notices were not sent. Notices
-- newest first, each one's owners in id order. {where}: fixed conditions on the notices
-- (relaybook.notices.listing.LIST_FILTERS, the notice's id, the cursor's notice); {after}: the
-- cursor's recipient id within the cursor's notice, '' elsewhere (ids are never empty).
-- The candidates come from the failed and skipped attempts (deliveries_notice_status_idx),
-- so a notice delivered to everyone costs one index probe, whatever its size.
SELECT n.id AS notice_id, n.created_at AS notice_created_at, n.title, n.source_service,
       n.source_kind, n.source_reference, n.property_id, u.recipient_id, r.name,
       ARRAY(SELECT p.property_id FROM recipient_properties p
             WHERE p.agency_id = r.agency_id AND p.recipient_id = r.id
             ORDER BY p.property_id) AS properties,
       u.channels
FROM notices n
CROSS JOIN LATERAL (
    SELECT c.recipient_id,
           (SELECT json_object_agg(d.channel, json_build_object(
                       'delivery_id', d.id, 'status', d.status, 'reason', d.reason,
                       'provider_code', d.provider_code))
            FROM deliveries d
            WHERE d.notice_id = n.id AND d.recipient_id = c.recipient_id AND d.is_latest
           )::text AS channels
    FROM (SELECT DISTINCT d.recipient_id FROM deliveries d
          WHERE d.notice_id = n.id AND d.is_latest AND d.status IN ('failed', 'skipped')
            AND d.recipient_id > {after}) c
    WHERE NOT EXISTS (SELECT 1 FROM deliveries o
                      WHERE o.notice_id = n.id AND o.recipient_id = c.recipient_id
                        AND o.is_latest AND o.status NOT IN ('failed', 'skipped'))
    ORDER BY c.recipient_id
    LIMIT {limit}
) u
JOIN recipients r ON r.agency_id = n.agency_id AND r.id = u.recipient_id
WHERE n.status NOT IN ('draft', 'scheduled') AND {where}
ORDER BY n.created_at DESC, n.id DESC, u.recipient_id
LIMIT {limit};
