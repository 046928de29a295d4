-- Send jobs are published a page at a time. Stamping each delivery as published wrote a
-- new version of every row with all of its indexes (as much work as the fan-out itself:
-- 200,000 row versions for a 100,000-recipient notice on two channels). A page instead
-- names a range of one fan-out's recipients; the relay reads that range's queued
-- deliveries through deliveries_latest_idx, produces their jobs and stamps the page.
-- A delivery put back by a send worker for a retry is its own entry: next_attempt_at
-- says when it is due, and the relay clears it once the job is published.

-- One range of recipients of a notice's fan-out (resend_id null) or of one resend: their
-- latest attempts still queued. Ranges of one fan-out never overlap, and a recipient's
-- messages are always in the same page, so their jobs stay in order.
CREATE TABLE job_pages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notice_id        uuid NOT NULL REFERENCES notices (id),
    resend_id        uuid REFERENCES resends (id),
    first_recipient  text NOT NULL,
    last_recipient   text NOT NULL CHECK (last_recipient >= first_recipient),
    -- null: due now; infinity: waiting for its notice's release
    due_at           timestamptz,
    published_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- the relay's queue of pages, soonest first
CREATE INDEX job_pages_pending_idx ON job_pages (due_at NULLS FIRST, id)
    WHERE published_at IS NULL;
-- releasing a notice makes its pages due
CREATE INDEX job_pages_notice_idx ON job_pages (notice_id);

-- Jobs due but not published yet are due now, one by one (a page of their fan-out could
-- also cover jobs published already); jobs published already have no due time any more.
UPDATE deliveries SET next_attempt_at = now()
WHERE status = 'queued' AND job_published_at IS NULL AND next_attempt_at IS NULL;
UPDATE deliveries SET next_attempt_at = NULL
WHERE job_published_at IS NOT NULL AND next_attempt_at IS NOT NULL;
-- The deliveries waiting for their notice's release become pages that wait likewise (one
-- page per fan-out: the relay publishes a page of any size).
INSERT INTO job_pages (notice_id, resend_id, first_recipient, last_recipient, due_at)
SELECT notice_id, resend_id, min(recipient_id), max(recipient_id), 'infinity'
FROM deliveries
WHERE status = 'queued' AND job_published_at IS NULL AND next_attempt_at = 'infinity'
GROUP BY notice_id, resend_id;
UPDATE deliveries SET next_attempt_at = NULL
WHERE status = 'queued' AND job_published_at IS NULL AND next_attempt_at = 'infinity';

DROP INDEX deliveries_unpublished_idx;
ALTER TABLE deliveries DROP COLUMN job_published_at;
-- the relay's queue of retries, soonest first
CREATE INDEX deliveries_retry_idx ON deliveries (next_attempt_at)
    WHERE status = 'queued' AND next_attempt_at IS NOT NULL;
