-- Customer tracking links and delivery notifications (webhooks with a durable outbox).

-- Each stop's tracking link: only the SHA-256 digest of its random token is kept, so a
-- leaked database does not open any customer page. `done_at` is the server time at which
-- the stop became done (the fix times in `completed_at` may lie in the past for replayed
-- drives); the link stops working TRACKER_TRACKING_TTL_S after it.
ALTER TABLE stops ADD COLUMN tracking_hash bytea CHECK (octet_length(tracking_hash) = 32);
ALTER TABLE stops ADD COLUMN done_at timestamptz;
CREATE UNIQUE INDEX stops_by_tracking_hash ON stops (tracking_hash) WHERE tracking_hash IS NOT NULL;

CREATE FUNCTION tracker_stop_done_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('completed', 'failed', 'skipped') THEN
        IF TG_OP = 'INSERT' OR OLD.status NOT IN ('completed', 'failed', 'skipped') THEN
            NEW.done_at := now();
        END IF;
    ELSE
        NEW.done_at := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER stops_done_at BEFORE INSERT OR UPDATE OF status ON stops
    FOR EACH ROW EXECUTE FUNCTION tracker_stop_done_at();

-- Subscriptions. The secret signs every delivery (HMAC-SHA256), so it is kept as is; it is
-- shown to the subscriber once, when the subscription is created.
CREATE TABLE webhooks (
    id               bigserial PRIMARY KEY,
    url              text NOT NULL,
    secret           text NOT NULL,
    events           text[] NOT NULL CHECK (cardinality(events) > 0),
    -- stop.eta_changed is delivered when the ETA moved at least this far from the last one
    -- delivered to this subscription for the stop.
    eta_threshold_s  double precision NOT NULL DEFAULT 300 CHECK (eta_threshold_s >= 0),
    description      text NOT NULL DEFAULT '',
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

-- The outbox: one row per (subscription, event), written in the transaction that stores the
-- event, so an event is queued exactly once and a restart loses none. `body` is the exact
-- JSON that is signed and sent on every attempt.
CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    public_id        uuid NOT NULL UNIQUE,
    webhook_id       bigint NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id         bigint REFERENCES events(id) ON DELETE SET NULL,
    event_type       text NOT NULL,
    body             bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; while an attempt runs, the end of its lease (a worker
    -- that died mid-attempt leaves the row to be retried then).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id DESC);

CREATE TABLE webhook_attempts (
    id             bigserial PRIMARY KEY,
    delivery_id    bigint NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    started_at     timestamptz NOT NULL,
    duration_ms    double precision NOT NULL,
    status_code    integer,  -- null when no HTTP answer came (refused, timed out)
    error          text,
    UNIQUE (delivery_id, attempt)
);

-- The ETA last delivered to a subscription for a stop: what the next change is measured from.
CREATE TABLE webhook_eta_marks (
    webhook_id  bigint NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    stop_id     bigint NOT NULL REFERENCES stops(id) ON DELETE CASCADE,
    eta         timestamptz NOT NULL,
    PRIMARY KEY (webhook_id, stop_id)
);
