-- What ops watch of the dispatcher's work waiting (dispatcher.outbox.Backlog), read every
-- few seconds: each count or age below is read through a partial index, or from the few
-- notices being sent.

-- name: backlog
-- pages: send-job pages due and not published yet, and how long the oldest has waited
-- (since its notice was released, or it was written); events: the event outbox's rows
-- not published yet; retries: deliveries a worker put back whose time has come; queued:
-- the oldest delivery still queued of a notice being sent (the first send's rows share
-- one created_at, so any queued row of the notice tells it).
SELECT
    (SELECT count(*) FROM job_pages
     WHERE published_at IS NULL AND (due_at IS NULL OR due_at <= now())) AS pages,
    (SELECT extract(epoch FROM now() - min(coalesce(due_at, created_at))) FROM job_pages
     WHERE published_at IS NULL AND (due_at IS NULL OR due_at <= now())) AS oldest_page_s,
    (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS events,
    (SELECT extract(epoch FROM now() - min(created_at)) FROM outbox
     WHERE published_at IS NULL) AS oldest_event_s,
    (SELECT count(*) FROM deliveries
     WHERE status = 'queued' AND next_attempt_at <= now()) AS retries,
    (SELECT extract(epoch FROM now() - min(next_attempt_at)) FROM deliveries
     WHERE status = 'queued' AND next_attempt_at <= now()) AS oldest_retry_s,
    (SELECT extract(epoch FROM now() - min(greatest(n.released_at, (
         SELECT d.created_at FROM deliveries d
         WHERE d.notice_id = n.id AND d.is_latest AND d.status = 'queued' LIMIT 1))))
     FROM notices n WHERE n.status = 'sending') AS oldest_queued_s;
