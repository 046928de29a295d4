-- What the journal tracker needs: a notice's status follows its deliveries.

-- Settles the status of notices being sent (or sent) from their deliveries' latest
-- attempts: once none is queued, `sent` when none failed, `failed` when none reached
-- the provider or every one that did failed (a notice that reached nobody must stand out),
-- `partially_failed` otherwise. A late bounce moves a `sent`
-- notice to `partially_failed`. Returns how many notices changed. Called by the tracker
-- for the notices each batch touched, and by the dispatcher for a notice with nothing
-- to send.
CREATE FUNCTION settle_notices(ids uuid[]) RETURNS integer
LANGUAGE sql AS $$
    WITH candidates AS (
        SELECT n.id, n.status
        FROM notices n
        WHERE n.id = ANY (ids)
          AND n.status IN ('sending', 'sent', 'partially_failed', 'failed')
          AND NOT EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.notice_id = n.id AND d.is_latest AND d.status = 'queued')
    ), outcome AS (
        SELECT c.id, c.status AS was,
               CASE
                   WHEN count(*) FILTER (WHERE d.status NOT IN ('failed', 'skipped')) = 0
                       THEN 'failed'
                   WHEN count(*) FILTER (WHERE d.status = 'failed') = 0 THEN 'sent'
                   ELSE 'partially_failed'
               END AS now
        FROM candidates c
        JOIN deliveries d ON d.notice_id = c.id AND d.is_latest
        GROUP BY c.id, c.status
    ), changed AS (
        UPDATE notices n SET status = o.now, updated_at = now()
        FROM outcome o
        WHERE n.id = o.id AND o.now <> o.was
        RETURNING n.id
    )
    SELECT count(*)::integer FROM changed
$$;
