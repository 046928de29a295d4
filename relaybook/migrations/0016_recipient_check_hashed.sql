-- A delivery's recipient is checked against each delivery again, not against each
-- distinct (agency, recipient) (0014). The planner knows how many rows a statement's
-- transition table holds but not how many distinct values: it guessed 200 recipients,
-- and looked each of a 100,000-recipient fan-out's up by index (about 200 ms) instead of
-- one hashed anti-join over them all (about 35 ms, as 0006 did before agencies). The
-- notice stays checked once per distinct (notice, agency): a statement has one or a few.
CREATE OR REPLACE FUNCTION deliveries_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT notice_id, agency_id FROM new_deliveries) d
               WHERE NOT EXISTS (SELECT 1 FROM notices n
                                 WHERE n.id = d.notice_id AND n.agency_id = d.agency_id)) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery refers to a notice of its agency that does not exist';
    END IF;
    IF (SELECT count(*) FROM new_deliveries d
        WHERE NOT EXISTS (SELECT 1 FROM recipients r
                          WHERE r.agency_id = d.agency_id AND r.id = d.recipient_id)) > 0 THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery refers to a recipient that does not exist';
    END IF;
    RETURN NULL;
END
$$;
