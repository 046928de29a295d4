-- Sending's own table, send_attempts, written here only (tests/relaybook/test_one_writer.py):
-- each attempt to hand a delivery to its provider, numbered, recorded before the call.

-- name: start_attempts
-- Recorded and committed before the provider is called: a job seen again later knows an
-- attempt was made. The lock makes a worker that comes just after another recorded the
-- outcome see it; of two starting the same attempt at the same moment, the second finds
-- its number taken and leaves it. By key, as load_deliveries: through the status index
-- it read every queued delivery for each batch.
INSERT INTO send_attempts (delivery_id, attempt)
SELECT d.id, greatest(d.send_attempts, (SELECT max(a.attempt) FROM send_attempts a
                                        WHERE a.delivery_id = d.id)) + 1
FROM (SELECT DISTINCT unnest($1::uuid[])) AS job (id)
CROSS JOIN LATERAL (SELECT id, send_attempts FROM deliveries
                    WHERE id = job.id AND status = 'queued' LIMIT 1 FOR UPDATE) d
ON CONFLICT DO NOTHING
RETURNING delivery_id AS id, attempt, started_at;
