-- The dispatcher's workspace: routes listed by day, keys revoked (not deleted), why a route
-- ended early, and the event history read by van and type.

-- Routes are listed by the UTC day of their planned start (newest first).
CREATE INDEX routes_by_planned_start ON routes (planned_start DESC, id DESC);

-- Why a route was cancelled: `cancelled` (by a dispatcher, with their reason) or `replaced`
-- (a newer route of the same van started). NULL for routes that are active or completed.
ALTER TABLE routes ADD COLUMN ended_reason text;

-- A revoked key keeps its row (the list shows who had access, and when it ended).
ALTER TABLE api_keys ADD COLUMN revoked_at timestamptz;

-- A rotated device token: when the current one was issued.
ALTER TABLE devices ADD COLUMN token_issued_at timestamptz;

-- The event feed reloads the latest events, optionally of one type.
CREATE INDEX events_by_type ON events (type, id DESC);

-- With TRACKER_LINK_SECRET, a stop's link token is HMAC(secret, salt): the salt is kept so a
-- dispatcher can be shown the link again; the database alone (salt and digest) opens nothing.
ALTER TABLE stops ADD COLUMN tracking_salt bytea CHECK (octet_length(tracking_salt) = 16);
