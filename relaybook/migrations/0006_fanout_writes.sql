-- Cheaper fan-out writes, same guarantees. Measured on 200,000 deliveries inserted in one
-- statement, before and after in one sitting: PostgreSQL 15 5.5-5.9 s -> 3.6-3.7 s,
-- PostgreSQL 18 5.3-5.8 s -> 4.4-4.6 s.

-- Time-ordered delivery ids (UUID version 7: milliseconds since 1970, then random bits).
-- Random ids scattered every insert of a fan-out across the whole primary key and the
-- journal indexes (which end with the id); time-ordered ones land side by side.
-- PostgreSQL 18 has uuidv7(); this one also runs on older servers.
CREATE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- A delivery's notice and recipient are checked once per statement, in one set-based
-- pass, instead of by a foreign-key trigger per row (1.2 s on PostgreSQL 15: each row
-- looked its notice and recipient up and locked them). The foreign keys' other half is
-- kept by refusing what would orphan a delivery: notices and recipients are never deleted
-- (they are the journal's history), their ids never change, and a delivery never moves
-- to another notice or recipient. retry_of and resend_id keep their foreign keys (null on
-- a first send, they cost next to nothing).
ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_notice_id_fkey,
    DROP CONSTRAINT deliveries_recipient_id_fkey;

CREATE FUNCTION deliveries_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_deliveries d
               WHERE NOT EXISTS (SELECT 1 FROM notices n WHERE n.id = d.notice_id)) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery refers to a notice that does not exist';
    END IF;
    IF EXISTS (SELECT 1 FROM new_deliveries d
               WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.id = d.recipient_id)) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery refers to a recipient that does not exist';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_check_references
    AFTER INSERT ON deliveries REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_check_references();

-- TG_ARGV[0]: what is refused, and why
CREATE FUNCTION refuse_orphaning_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE restrict_violation USING MESSAGE = TG_ARGV[0];
END
$$;
CREATE TRIGGER notices_keep_deliveries BEFORE DELETE OR TRUNCATE ON notices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_orphaning_deliveries(
        'notices are never deleted: their deliveries refer to them');
CREATE TRIGGER notices_keep_ids BEFORE UPDATE OF id ON notices
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION refuse_orphaning_deliveries(
        'a notice''s id never changes: its deliveries refer to it');
CREATE TRIGGER recipients_keep_deliveries BEFORE DELETE OR TRUNCATE ON recipients
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_orphaning_deliveries(
        'recipients are never deleted: their deliveries refer to them');
CREATE TRIGGER recipients_keep_ids BEFORE UPDATE OF id ON recipients
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION refuse_orphaning_deliveries(
        'a recipient''s id never changes: their deliveries refer to it');
CREATE TRIGGER deliveries_keep_references BEFORE UPDATE OF notice_id, recipient_id ON deliveries
    FOR EACH ROW WHEN (OLD.notice_id IS DISTINCT FROM NEW.notice_id
                       OR OLD.recipient_id IS DISTINCT FROM NEW.recipient_id)
    EXECUTE FUNCTION refuse_orphaning_deliveries(
        'a delivery never moves to another notice or recipient');
