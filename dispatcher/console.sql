-- The console's sessions and sign-in throttle (dispatcher.console.sessions).

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

-- name: pick_agency
UPDATE console_sessions SET agency = $2 WHERE token_hash = $1;

-- name: close_session
DELETE FROM console_sessions WHERE token_hash = $1;

-- name: sign_in_wait
-- How long until the email of key $1 may try again: NULL while it has had fewer than $3
-- refusals in the last $2.
SELECT min(at) + $2::interval - now()
FROM (SELECT at FROM sign_in_failures
      WHERE email_key = $1 AND at > now() - $2::interval
      ORDER BY at DESC LIMIT $3) recent
HAVING count(*) >= $3;

-- name: sign_in_refused
WITH forgotten AS (DELETE FROM sign_in_failures WHERE at <= now() - $2::interval)
INSERT INTO sign_in_failures (email_key) VALUES ($1);
