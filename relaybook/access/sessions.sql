-- The console's sessions (relaybook.access.sessions) and sign-in throttle
-- (relaybook.access.throttle).

-- name: open_session
INSERT INTO console_sessions (token_hash, person_id, csrf, time_zone, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::interval);

-- name: forget_expired_sessions
DELETE FROM console_sessions WHERE expires_at <= now() OR seen_at <= now() - $1::interval;

-- name: find_session
-- $2: how long a session lives without a request
UPDATE console_sessions s SET seen_at = now()
FROM people p
WHERE s.token_hash = $1 AND p.id = s.person_id AND p.disabled_at IS NULL
  AND s.expires_at > now() AND s.seen_at > now() - $2::interval
RETURNING p.id, p.email, p.role, p.agencies, s.csrf, s.agency, s.time_zone;

-- name: session_alive
-- Whether find_session would find the session of hash $1, without marking it seen.
SELECT EXISTS (
    SELECT FROM console_sessions s JOIN people p ON p.id = s.person_id
    WHERE s.token_hash = $1 AND p.disabled_at IS NULL
      AND s.expires_at > now() AND s.seen_at > now() - $2::interval
);

-- name: pick_agency
UPDATE console_sessions SET agency = $2 WHERE token_hash = $1;

-- name: close_session
DELETE FROM console_sessions WHERE token_hash = $1;

-- name: sign_in_counters
-- Locks the counters of one sign-in attempt (keys $1, sorted: concurrent attempts lock
-- them in the same order), creating those missing and restarting those whose window $2
-- is over; returns them as they are. The caller decides, then counts (sign_in_admitted)
-- in the same transaction: an attempt on the same counters waits until then.
INSERT INTO sign_in_throttle AS t (key)
SELECT key FROM unnest($1::bytea[]) AS key ORDER BY key
ON CONFLICT (key) DO UPDATE
SET started_at = CASE WHEN t.started_at <= now() - $2::interval THEN now() ELSE t.started_at END,
    failures = CASE WHEN t.started_at <= now() - $2::interval THEN 0 ELSE t.failures END
RETURNING key, failures, started_at + $2::interval AS window_ends, last_at, known_until,
          now() AS now;

-- name: sign_in_admitted
-- The attempt will be judged: a failure of each of its counters $1 until proved right.
UPDATE sign_in_throttle SET failures = failures + 1, last_at = now()
WHERE key = ANY($1::bytea[]);

-- name: sign_in_succeeded
-- The password was right: the (email, address) $1 forgets its failures and is known for
-- $3; the other counters $2 take the attempt back. After sign_in_counters, in its
-- transaction (which locked them, and restarted those whose window was over).
WITH pair AS (
    UPDATE sign_in_throttle SET failures = 0, started_at = now(),
                                known_until = now() + $3::interval
    WHERE key = $1
)
UPDATE sign_in_throttle SET failures = greatest(failures - 1, 0)
WHERE key = ANY($2::bytea[]);

-- name: forget_sign_in_counters
-- Counters whose window ($1) is over and that keep no address known; those another
-- attempt holds are left for the next time.
DELETE FROM sign_in_throttle
WHERE key IN (SELECT key FROM sign_in_throttle
              WHERE started_at <= now() - $1::interval
                AND (known_until IS NULL OR known_until <= now())
              ORDER BY started_at LIMIT 1000 FOR UPDATE SKIP LOCKED);
