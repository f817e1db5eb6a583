-- Planned routes, their stops, and the events that happen along them.
--
-- The live progress of a route lives here too (routes.route_state, stops.status/eta...), so
-- every server instance sees the same state: a ping posted to one instance and a map
-- connected to another agree on every stop's status and ETA.

CREATE TABLE routes (
    id             bigserial PRIMARY KEY,
    device_id      bigint NOT NULL REFERENCES devices(id),
    planned_start  timestamptz NOT NULL,
    path           geography(LineString, 4326) NOT NULL,
    straight_line  boolean NOT NULL,  -- no planned path was given: the stops joined in order
    status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'completed', 'cancelled')),
    off_route      boolean NOT NULL DEFAULT false,
    -- progress.RouteState.to_json(): the whole state between fixes, read and written under
    -- a per-device advisory lock so instances take turns.
    route_state    jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The ingest hook asks "the device's newest active route" for every batch of pings.
CREATE INDEX routes_active_by_device ON routes (device_id, id DESC) WHERE status = 'active';

CREATE TABLE stops (
    id               bigserial PRIMARY KEY,
    route_id         bigint NOT NULL REFERENCES routes(id) ON DELETE CASCADE,
    seq              integer NOT NULL,
    location         geography(Point, 4326) NOT NULL,
    name             text NOT NULL DEFAULT '',
    recipient        text NOT NULL DEFAULT '',
    service_s        double precision NOT NULL DEFAULT 0 CHECK (service_s >= 0),
    radius_m         double precision NOT NULL DEFAULT 50 CHECK (radius_m > 0),
    planned_arrival  timestamptz,
    window_start     timestamptz,
    window_end       timestamptz,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'arrived', 'completed', 'failed', 'skipped')),
    reason           text,
    arrived_at       timestamptz,
    completed_at     timestamptz,
    -- The ETA last published on the bus (absolute, computed from the fix's own time).
    eta              timestamptz,
    UNIQUE (route_id, seq),
    CHECK (window_end IS NULL OR window_start IS NULL OR window_end >= window_start)
);

CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    type        text NOT NULL,
    time        timestamptz NOT NULL,  -- the time of the fix or request that caused it
    device_id   bigint NOT NULL REFERENCES devices(id),
    route_id    bigint REFERENCES routes(id) ON DELETE CASCADE,
    stop_id     bigint REFERENCES stops(id) ON DELETE CASCADE,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_by_route ON events (route_id, id);
CREATE INDEX events_by_device_time ON events (device_id, time);
