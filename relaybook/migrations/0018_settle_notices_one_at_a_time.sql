-- Settling a notice is serialised per notice. Two trackers (or a tracker and the
-- dispatcher) that each record the last outcome of a different message of one notice,
-- in overlapping transactions, each saw the other's message still queued and left the
-- notice 'sending' for good. Now each settler first locks the notices (in id order: no
-- waiting in a circle), and only then reads their deliveries, in a statement of its own
-- (a fresh snapshot): the later one waits for the earlier to commit and sees its rows.
-- FOR NO KEY UPDATE, the lock the status update takes anyway: new deliveries of a
-- notice (their foreign key's KEY SHARE) are not held up.
CREATE OR REPLACE FUNCTION settle_notices(ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    settled integer;
BEGIN
    PERFORM 1 FROM notices WHERE id = ANY (ids) ORDER BY id FOR NO KEY UPDATE;
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
    SELECT count(*)::integer INTO settled FROM changed;
    RETURN settled;
END
$$;
