-- Who may call the dispatcher: API tokens (relaybook.access.auth) and the console's people
-- (relaybook.access.people), by name.

-- name: token_by_hash
-- Every request: revocation and expiry are read here each time, so they apply at once.
SELECT name, scopes, agencies, revoked_at IS NOT NULL AS revoked,
       expires_at IS NOT NULL AND expires_at <= now() AS expired
FROM api_tokens WHERE token_hash = $1;

-- name: insert_token
INSERT INTO api_tokens (id, name, token_hash, scopes, agencies, expires_at)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: list_tokens
SELECT id, name, scopes, agencies, created_at, expires_at, revoked_at
FROM api_tokens ORDER BY created_at, name;

-- name: revoke_token
-- By id ($1, NULL when the argument is no uuid) or name; a second revocation keeps the first time.
WITH target AS (
    SELECT id, revoked_at FROM api_tokens WHERE id = $1 OR name = $2 FOR UPDATE
)
UPDATE api_tokens t SET revoked_at = coalesce(target.revoked_at, now())
FROM target WHERE t.id = target.id
RETURNING t.id, t.name, t.revoked_at, target.revoked_at IS NOT NULL AS already;

-- name: insert_person
INSERT INTO people (id, email, role, agencies, password_hash) VALUES ($1, $2, $3, $4, $5)
RETURNING created_at;

-- name: person_by_email
SELECT id, email, role, agencies, password_hash, disabled_at
FROM people WHERE lower(email) = lower($1);

-- name: signed_in
-- $2: a new hash when the parameters changed since the stored one was made, else NULL
UPDATE people SET last_sign_in_at = now(), password_hash = coalesce($2, password_hash)
WHERE id = $1;

-- name: list_people
SELECT email, role, agencies, created_at, last_sign_in_at, disabled_at
FROM people ORDER BY lower(email);

-- name: disable_person
WITH target AS (SELECT id, disabled_at FROM people WHERE lower(email) = lower($1) FOR UPDATE)
UPDATE people p SET disabled_at = coalesce(target.disabled_at, now())
FROM target WHERE p.id = target.id
RETURNING p.email, p.disabled_at, target.disabled_at IS NOT NULL AS already;
