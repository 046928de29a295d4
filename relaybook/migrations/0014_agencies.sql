-- Agencies (the property-management firms on the platform) and the properties
-- (co-ownerships, buildings) they manage, both named by the platform's own ids. Every
-- notice, recipient, delivery, event, resend, audit entry and idempotency key belongs to
-- one agency; a recipient's id is unique within its agency (the same person with two
-- agencies is two recipients). Suppressions stay platform-wide: all agencies share one
-- sending reputation.
--
-- Rows from before agencies go to the default agency: `relaybook migrate` sets
-- relaybook.default_agency from RELAYBOOK_DEFAULT_AGENCY ('default' when unset). The
-- columns are added with that constant as their default, so no table is rewritten, and
-- keep it: relaybook's own writers always name the agency, a row written by hand (a
-- script, a test) goes where rows from before agencies went.
--
-- Row-level security is the API's backstop: its transactions run as relaybook_api with
-- the caller's agencies in relaybook.agencies (or relaybook.all_agencies = 'on'), so a
-- query that forgets its agency condition still sees nothing of another agency. The
-- consumers work across agencies and connect as the tables' owner, which the policies
-- do not apply to.

CREATE TABLE agencies (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE properties (
    agency_id   text NOT NULL REFERENCES agencies (id),
    id          text NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agency_id, id)
);

DO $$
DECLARE
    fallback text := coalesce(nullif(current_setting('relaybook.default_agency', true), ''),
                              'default');
    tables text[] := ARRAY['notices', 'recipients', 'deliveries', 'resends',
                           'idempotency_keys'];
    name text;
BEGIN
    INSERT INTO agencies (id) VALUES (fallback);
    FOREACH name IN ARRAY tables LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN agency_id text NOT NULL DEFAULT %L',
                       name, fallback);
    END LOOP;
    -- an audit entry or an event about no agency (an uncorrelated bounce, a platform
    -- action) has none: only platform-wide callers see it
    ALTER TABLE audit_log ADD COLUMN agency_id text;
    ALTER TABLE delivery_events ADD COLUMN agency_id text;
    EXECUTE format('UPDATE audit_log SET agency_id = %L', fallback);
    UPDATE delivery_events e SET agency_id = d.agency_id
    FROM deliveries d WHERE d.id = e.delivery_id;
END
$$;

ALTER TABLE notices
    ADD COLUMN property_id text,
    ADD CONSTRAINT notices_agency_fkey FOREIGN KEY (agency_id) REFERENCES agencies (id),
    ADD CONSTRAINT notices_property_fkey FOREIGN KEY (agency_id, property_id)
        REFERENCES properties (agency_id, id);
-- the notices list, newest first: a platform-wide caller's, one agency's, one property's
CREATE INDEX notices_created_idx ON notices (created_at, id);
CREATE INDEX notices_agency_idx ON notices (agency_id, created_at, id);
CREATE INDEX notices_property_idx ON notices (agency_id, property_id, created_at, id)
    WHERE property_id IS NOT NULL;

-- a recipient is one agency's (no foreign key to agencies: its trigger looked the agency
-- up for each of a fan-out's 100,000 recipients; they are written only with a notice of
-- that agency, and the notice's own key checks it)
ALTER TABLE recipients
    DROP CONSTRAINT recipients_pkey,
    ADD PRIMARY KEY (agency_id, id);

-- the properties a recipient owns or rents in: a property's overview lists them even
-- before anything was sent to them
CREATE TABLE recipient_properties (
    agency_id     text NOT NULL,
    property_id   text NOT NULL,
    recipient_id  text NOT NULL,
    PRIMARY KEY (agency_id, property_id, recipient_id),
    FOREIGN KEY (agency_id, property_id) REFERENCES properties (agency_id, id),
    FOREIGN KEY (agency_id, recipient_id) REFERENCES recipients (agency_id, id)
);

-- A delivery's recipient is checked by (agency, id) now, once per statement as before
-- (0006); a delivery is its notice's agency's. Each distinct notice and recipient is
-- looked up once: a fan-out is one notice, and two channels per recipient.
CREATE OR REPLACE FUNCTION deliveries_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT notice_id, agency_id FROM new_deliveries) d
               WHERE NOT EXISTS (SELECT 1 FROM notices n
                                 WHERE n.id = d.notice_id AND n.agency_id = d.agency_id)) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery refers to a notice of its agency that does not exist';
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT agency_id, recipient_id FROM new_deliveries) d
               WHERE NOT EXISTS (SELECT 1 FROM recipients r
                                 WHERE r.agency_id = d.agency_id AND r.id = d.recipient_id)) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'a delivery refers to a recipient that does not exist';
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER recipients_keep_ids ON recipients;
CREATE TRIGGER recipients_keep_ids BEFORE UPDATE OF id, agency_id ON recipients
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.agency_id IS DISTINCT FROM NEW.agency_id)
    EXECUTE FUNCTION refuse_orphaning_deliveries(
        'a recipient''s id and agency never change: their deliveries refer to them');
CREATE TRIGGER notices_keep_agency BEFORE UPDATE OF agency_id ON notices
    FOR EACH ROW WHEN (OLD.agency_id IS DISTINCT FROM NEW.agency_id)
    EXECUTE FUNCTION refuse_orphaning_deliveries('a notice never moves to another agency');

CREATE INDEX resends_agency_idx ON resends (agency_id);
CREATE INDEX audit_log_agency_idx ON audit_log (agency_id, at) WHERE agency_id IS NOT NULL;

-- What the caller of the API may see: every agency, or those listed (a NULL, nothing set,
-- sees nothing). Plain expressions, inlined into each policy: written with scalar
-- subqueries to read the settings once per statement, the checks ran as subplans per
-- row, and a 100,000-recipient notice took 6.5 to 7.7 s to create instead of 4.4.
CREATE FUNCTION relaybook_sees(agency text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT current_setting('relaybook.all_agencies', true) = 'on'
           OR agency = ANY (current_setting('relaybook.agencies', true)::text[])
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'relaybook_api') THEN
        CREATE ROLE relaybook_api NOLOGIN;
    END IF;
END
$$;
GRANT relaybook_api TO CURRENT_USER;
-- what the API's routes touch, and nothing else (tokens, dead letters and migrations are
-- read outside any request's scope); a later migration grants what a new route needs
GRANT USAGE ON SCHEMA public TO relaybook_api;
GRANT SELECT, INSERT, UPDATE ON agencies, properties, recipient_properties, notices, recipients,
    deliveries, resends, idempotency_keys, audit_log, delivery_events, job_pages,
    suppressions, address_health, outbox, send_attempts TO relaybook_api;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO relaybook_api;

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['agencies', 'notices', 'recipients', 'deliveries', 'resends',
                                'idempotency_keys', 'audit_log', 'delivery_events',
                                'properties', 'recipient_properties'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
        EXECUTE format(
            'CREATE POLICY %I ON %I TO relaybook_api USING (relaybook_sees(%I)) '
            'WITH CHECK (relaybook_sees(%I))',
            name || '_by_agency', name,
            CASE name WHEN 'agencies' THEN 'id' ELSE 'agency_id' END,
            CASE name WHEN 'agencies' THEN 'id' ELSE 'agency_id' END);
    END LOOP;
END
$$;
