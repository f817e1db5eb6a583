-- Sign-in sessions of the map pages: the cookie holds a random id, never the credential it
-- was opened with. Only the SHA-256 digest of that id is kept (a leaked database opens no
-- session). A session lives until it expires, is signed out or revoked, or its key is
-- disabled or deleted; an admin session also needs the admin token it was opened with
-- (`credential_hash`) to be the current one.
CREATE TABLE sessions (
    id               bigserial PRIMARY KEY,
    token_hash       bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    role             text NOT NULL CHECK (role IN ('dispatcher', 'admin')),
    key_id           bigint REFERENCES api_keys(id) ON DELETE CASCADE,
    credential_hash  bytea NOT NULL CHECK (octet_length(credential_hash) = 32),
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    user_agent       text NOT NULL DEFAULT '',
    client           text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_by_key ON sessions (key_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Webhook attempt logs keep a status or a short reason, never a client library's error
-- text (which told open, closed and filtered ports of internal hosts apart): what earlier
-- versions logged is reduced to the same short reasons.
UPDATE webhook_attempts SET error = CASE
        WHEN error ILIKE '%timeout%' THEN 'timed out'
        WHEN error ILIKE 'ConnectError%' THEN 'connect failed'
        ELSE 'request failed' END
    WHERE error IS NOT NULL AND error NOT LIKE 'HTTP %'
      AND error NOT IN ('timed out', 'connect failed', 'protocol error', 'request failed')
      AND error NOT LIKE 'blocked: %' AND error NOT LIKE 'dns: %';
UPDATE webhook_deliveries SET last_error = CASE
        WHEN last_error ILIKE '%timeout%' THEN 'timed out'
        WHEN last_error ILIKE 'ConnectError%' THEN 'connect failed'
        ELSE 'request failed' END
    WHERE last_error IS NOT NULL AND last_error NOT LIKE 'HTTP %'
      AND last_error <> 'subscription deleted'
      AND last_error NOT IN ('timed out', 'connect failed', 'protocol error', 'request failed')
      AND last_error NOT LIKE 'blocked: %' AND last_error NOT LIKE 'dns: %';
