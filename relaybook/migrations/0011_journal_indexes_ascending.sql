-- The journal's indexes in ascending order. They were declared newest first (DESC), but
-- a fan-out writes its deliveries with increasing ids: each went in front of the one
-- before, every full page split in two halves, and the indexes grew half empty (200,000
-- deliveries: 42 MB for deliveries_journal_idx where 23 MB hold them). In ascending
-- order each goes after the one before, where PostgreSQL fills pages before it splits
-- them. The journal still reads newest first: a B-tree is read backwards as well as
-- forwards. Writing 200,000 deliveries: 3.1 s -> 2.5 s (dispatcher/queries.sql has the
-- other half: the rows are written in recipient order).
DROP INDEX deliveries_journal_idx;
CREATE INDEX deliveries_journal_idx ON deliveries (created_at, id);
DROP INDEX deliveries_notice_journal_idx;
CREATE INDEX deliveries_notice_journal_idx ON deliveries (notice_id, created_at, id);
DROP INDEX deliveries_recipient_journal_idx;
CREATE INDEX deliveries_recipient_journal_idx ON deliveries (recipient_id, created_at, id);
DROP INDEX deliveries_status_journal_idx;
CREATE INDEX deliveries_status_journal_idx ON deliveries (status, created_at, id);
