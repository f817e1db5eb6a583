-- The doorstep: what a driver needs at each stop, proof of delivery, what the customer adds
-- and asks for, and the customer message outbox (e-mail and SMS).

-- A stop's contact and hand-over details (set when the route is planned).
ALTER TABLE stops ADD COLUMN address text NOT NULL DEFAULT '';
ALTER TABLE stops ADD COLUMN phone text NOT NULL DEFAULT '';
ALTER TABLE stops ADD COLUMN email text NOT NULL DEFAULT '';
ALTER TABLE stops ADD COLUMN notes text NOT NULL DEFAULT '';
ALTER TABLE stops ADD COLUMN language text NOT NULL DEFAULT '';
-- [{"ref", "description", "action": "deliver"|"collect"}]: collect = a return to take back.
ALTER TABLE stops ADD COLUMN parcels jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE stops ADD COLUMN proof_required text[] NOT NULL DEFAULT '{}'
    CHECK (proof_required <@ ARRAY['photo', 'signature', 'name', 'pin']::text[]);
-- The code the customer was sent (proof "pin"); never in any Route JSON.
ALTER TABLE stops ADD COLUMN pin text;
-- What the customer may move the delivery to: [{"window_start", "window_end"}] and
-- [{"name", "address"}].
ALTER TABLE stops ADD COLUMN reschedule_windows jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE stops ADD COLUMN pickup_points jsonb NOT NULL DEFAULT '[]'::jsonb;
-- Added by the customer on the tracking page before arrival.
ALTER TABLE stops ADD COLUMN instructions text NOT NULL DEFAULT '';
ALTER TABLE stops ADD COLUMN safe_place text NOT NULL DEFAULT '';
-- The latest report's summary (reason code, next step, far-away reason, proof ids...): what
-- the dispatcher, the driver and the customer page are shown; the full reports are below.
ALTER TABLE stops ADD COLUMN outcome jsonb;

-- Every completion or failure a driver reported. `client_id` is made by the phone, so a
-- report synced twice after an outage is stored once.
CREATE TABLE stop_reports (
    id              bigserial PRIMARY KEY,
    stop_id         bigint NOT NULL REFERENCES stops(id) ON DELETE CASCADE,
    client_id       uuid NOT NULL UNIQUE,
    status          text NOT NULL CHECK (status IN ('completed', 'failed')),
    reason_code     text,
    reason_text     text NOT NULL DEFAULT '',
    next_step       text,
    recipient_name  text NOT NULL DEFAULT '',
    pin_ok          boolean,
    lat             double precision,
    lon             double precision,
    distance_m      double precision,
    far_reason      text NOT NULL DEFAULT '',
    reported_at     timestamptz NOT NULL,  -- the phone's time of the tap
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stop_reports_by_stop ON stop_reports (stop_id, id);

-- Photos and signatures, re-encoded without metadata; kept for TRACKER_PROOF_RETENTION_DAYS.
CREATE TABLE proofs (
    id          bigserial PRIMARY KEY,
    stop_id     bigint NOT NULL REFERENCES stops(id) ON DELETE CASCADE,
    report_id   bigint NOT NULL REFERENCES stop_reports(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('photo', 'signature')),
    media_type  text NOT NULL CHECK (media_type IN ('image/jpeg', 'image/png')),
    data        bytea NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proofs_by_stop ON proofs (stop_id);
CREATE INDEX proofs_by_age ON proofs (created_at);

-- A customer's request to move the delivery; the dispatcher confirms or declines it.
CREATE TABLE reschedule_requests (
    id            bigserial PRIMARY KEY,
    stop_id       bigint NOT NULL REFERENCES stops(id) ON DELETE CASCADE,
    window_start  timestamptz,
    window_end    timestamptz,
    pickup_point  jsonb,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'confirmed', 'declined')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    decided_at    timestamptz,
    CHECK ((window_start IS NOT NULL AND window_end IS NOT NULL) <> (pickup_point IS NOT NULL))
);
-- One open request per stop at a time.
CREATE UNIQUE INDEX reschedule_one_pending ON reschedule_requests (stop_id)
    WHERE status = 'pending';

CREATE TABLE ratings (
    stop_id     bigint PRIMARY KEY REFERENCES stops(id) ON DELETE CASCADE,
    stars       integer NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The company's own wording of each message; built-in defaults cover what is not here.
CREATE TABLE message_templates (
    kind        text NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    language    text NOT NULL,
    subject     text NOT NULL DEFAULT '',
    body        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, channel, language)
);

-- Addresses (e-mail or phone number) whose owner asked for no more messages.
CREATE TABLE message_opt_outs (
    address     text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The customer message outbox: at most one message of a kind per stop and channel, so a
-- repeated event never sends twice. `link` holds the tracking link (which exists nowhere
-- else in plain text) only until the message is sent.
CREATE TABLE messages (
    id               bigserial PRIMARY KEY,
    stop_id          bigint NOT NULL REFERENCES stops(id) ON DELETE CASCADE,
    kind             text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient        text NOT NULL,
    language         text NOT NULL,
    link             text,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    subject          text NOT NULL DEFAULT '',
    body             text NOT NULL DEFAULT '',
    provider_id      text,
    last_error       text,
    UNIQUE (stop_id, kind, channel)
);
CREATE INDEX messages_due ON messages (next_attempt_at, id) WHERE status = 'pending';
