-- Messages a consumer could not handle, kept as they were consumed so that ops can see
-- them (`relaybook dead-letters list`) and publish them again after a fix
-- (`relaybook dead-letters replay`). The dead-letters topic carries the same messages for
-- other tools; this table is what the command line reads. A batch consumed again after a
-- crash records each of its dead letters once (the unique key).
CREATE TABLE dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    consumer_group   text NOT NULL,
    -- contract_violation, data_error, constraint_violation, encoding_error,
    -- database_error, handler_error (relaybook.platform.faults.reason)
    reason           text NOT NULL,
    error            text NOT NULL,
    key              bytea,
    value            bytea NOT NULL,
    headers          jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    replayed_by      text,
    UNIQUE (consumer_group, source_topic, source_partition, source_offset)
);
-- what `dead-letters list` shows first: the ones not replayed yet
CREATE INDEX dead_letters_pending_idx ON dead_letters (id) WHERE replayed_at IS NULL;
