-- A delivery held after a crash (send_worker/unknown_outcomes.py) that the provider's
-- events move on before its due time is no longer the relay's to send again; a worker
-- looks at it again then (send_worker/queries.sql, claim_moved_on). That look was a timer
-- in the worker that held it, lost when that worker stopped or died. Now the due time
-- stays on the row and any worker finds it through this index, which holds only rows out
-- of the queue with a due time: those, and the odd retry whose call timed out although
-- the provider took the message, moved on by its events during the backoff (a look lets
-- it go). A queued delivery's due time is the relay's (deliveries_retry_idx); a fan-out's
-- rows, queued, cost this index nothing.
CREATE INDEX deliveries_moved_on_idx ON deliveries (next_attempt_at)
    WHERE status <> 'queued' AND next_attempt_at IS NOT NULL;
