-- Row-level security on every table the API's role reads (issue 33). 0014 granted
-- relaybook_api tables it left unfiltered: as that role, with no agency set or another
-- agency's, every row of send_attempts and address_health was visible, and outbox,
-- suppressions and job_pages had no policy at all. Now each table the role reads has a
-- policy, and the grants no request needs go. What each table is:
--
-- - send_attempts: the send workers' record of each call to a provider. No request reads
--   it (a delivery's count is deliveries.send_attempts): the grant goes.
-- - outbox: the events a request's transaction announces (a changed preference). A
--   request only writes it; the relay publishes it as the tables' owner. Reading goes,
--   and a request writes events of its own agencies only.
-- - job_pages: a fan-out's pages, each of one notice: seen as its notice is.
-- - suppressions and address_health: keyed by address, platform-wide (one sending
--   reputation for all agencies: a suppression is every agency's). An agency sees a row
--   when the address is one of its recipients' on that channel: the preferences it shows
--   and the fan-out's skip reasons read those (consent.contact), and support lifting an
--   automatic unsubscribe lifts and clears those. Another agency's recipients' addresses
--   stay hidden.
-- - sequences: reading one tells a platform-wide count. Inserting needs none (identity
--   columns), USAGE stays.

REVOKE ALL ON send_attempts FROM relaybook_api;
REVOKE SELECT, UPDATE ON outbox FROM relaybook_api;
REVOKE SELECT ON ALL SEQUENCES IN SCHEMA public FROM relaybook_api;

-- Whether the API's caller may see rows about an address: it is the current address on
-- that channel of a recipient of a visible agency (emails compared case-insensitively,
-- as consent.address_key keys them). SECURITY DEFINER: it reads recipients as their
-- owner, by their address indexes; as relaybook_api, the recipients' own policy comes
-- first and keeps lower(email) off its index (lower() is not leakproof), a scan of every
-- recipient for each row checked. It says only yes or no, and sees what relaybook_sees
-- lets it.
CREATE FUNCTION relaybook_sees_address(channel text, address text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT CASE channel
        WHEN 'email' THEN EXISTS (SELECT 1 FROM recipients r
                                  WHERE lower(r.email) = lower(address) AND r.email IS NOT NULL
                                    AND relaybook_sees(r.agency_id))
        WHEN 'sms' THEN EXISTS (SELECT 1 FROM recipients r
                                WHERE r.phone = address AND r.phone IS NOT NULL
                                  AND relaybook_sees(r.agency_id))
        ELSE false END
$$;
REVOKE ALL ON FUNCTION relaybook_sees_address(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION relaybook_sees_address(text, text) TO relaybook_api;

ALTER TABLE suppressions ENABLE ROW LEVEL SECURITY;
CREATE POLICY suppressions_of_visible_recipients ON suppressions TO relaybook_api
    USING (relaybook_sees_address(channel, address))
    WITH CHECK (relaybook_sees_address(channel, address));

ALTER TABLE address_health ENABLE ROW LEVEL SECURITY;
CREATE POLICY address_health_of_visible_recipients ON address_health TO relaybook_api
    USING (relaybook_sees_address(channel, address))
    WITH CHECK (relaybook_sees_address(channel, address));

-- Under a policy, a condition on lower(address) no longer reaches the index on it (lower()
-- is not leakproof, so the policy is checked first, on every row of the channel): the
-- contact rule finds an address's suppressions by this key instead, a plain column.
ALTER TABLE suppressions ADD COLUMN address_key text NOT NULL
    GENERATED ALWAYS AS (lower(address)) STORED;
CREATE INDEX suppressions_active_key_idx ON suppressions (channel, address_key)
    WHERE lifted_at IS NULL;

ALTER TABLE job_pages ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_pages_by_notice ON job_pages TO relaybook_api
    USING (EXISTS (SELECT 1 FROM notices n
                   WHERE n.id = job_pages.notice_id AND relaybook_sees(n.agency_id)))
    WITH CHECK (EXISTS (SELECT 1 FROM notices n
                        WHERE n.id = job_pages.notice_id AND relaybook_sees(n.agency_id)));

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY outbox_written_for_visible_agencies ON outbox FOR INSERT TO relaybook_api
    WITH CHECK (relaybook_sees(payload->>'agency'));
