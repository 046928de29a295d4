-- Asynchronous bounces are matched on the address to the latest message the provider
-- took (tracker: match_addresses). A delivery enters the address index once it is sent,
-- no longer when it is written: a fan-out no longer pays for an index entry per delivery
-- at random places in the index (13 % of inserting 200,000 deliveries), the sending
-- worker's outcome writes a new row version with every index entry anyway, and a
-- bounce can no longer be matched to a newer message still queued or skipped, which
-- the provider never had.
DROP INDEX deliveries_address_idx;
CREATE INDEX deliveries_address_idx ON deliveries (channel, lower(address), created_at DESC)
    WHERE address IS NOT NULL AND sent_at IS NOT NULL;
