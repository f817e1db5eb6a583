-- Orders (deliveries and pickups), the depots vans leave from and the vehicles that carry
-- them: the input of route planning. Geocoded addresses are cached here too, so an
-- address looked up once is never sent to the geocoder again.

CREATE TABLE depots (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (name <> ''),
    location    geography(Point, 4326) NOT NULL,
    address     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL CHECK (name <> ''),
    -- The phone or tracker riding in it; a route dispatched to this vehicle goes to it.
    device_id       bigint REFERENCES devices(id),
    -- {unit: amount}, e.g. {"parcels": 120, "kg": 800}; a unit it does not name is unlimited.
    capacity        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The working day as local times of day in `time_zone` (IANA name); an end at or before
    -- the start ends on the next day. NULL: no limit on that side.
    shift_start     time,
    shift_end       time,
    time_zone       text NOT NULL DEFAULT 'UTC',
    start_depot_id  bigint REFERENCES depots(id),
    end_depot_id    bigint REFERENCES depots(id),
    skills          text[] NOT NULL DEFAULT '{}',
    max_duration_s  integer CHECK (max_duration_s > 0),
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id               bigserial PRIMARY KEY,
    -- The shop's own order number; unique when given, so a re-import cannot double an order.
    external_id      text UNIQUE,
    kind             text NOT NULL DEFAULT 'delivery' CHECK (kind IN ('delivery', 'pickup')),
    -- NULL until the address is geocoded (geocode_status tells how far that got).
    location         geography(Point, 4326),
    address          text NOT NULL DEFAULT '',
    recipient        text NOT NULL DEFAULT '',
    phone            text NOT NULL DEFAULT '',
    email            text NOT NULL DEFAULT '',
    -- [[start, end], ...] as ISO-8601 UTC strings, sorted, non-overlapping; [] = any time.
    windows          jsonb NOT NULL DEFAULT '[]'::jsonb,
    service_s        double precision NOT NULL DEFAULT 0 CHECK (service_s >= 0),
    -- {unit: amount}, e.g. {"parcels": 2, "kg": 7.5}.
    size             jsonb NOT NULL DEFAULT '{}'::jsonb,
    skills           text[] NOT NULL DEFAULT '{}',
    priority         integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 100),
    notes            text NOT NULL DEFAULT '',
    date             date NOT NULL,  -- the delivery day it is planned for
    status           text NOT NULL DEFAULT 'unplanned'
                     CHECK (status IN ('unplanned', 'planned', 'dispatched', 'delivered',
                                       'failed', 'cancelled')),
    geocode_status   text NOT NULL DEFAULT 'given'
                     CHECK (geocode_status IN ('given', 'pending', 'resolved', 'ambiguous',
                                               'unresolved')),
    -- What the geocoder offered: [{lat, lon, label, importance}], best first.
    geocode_candidates jsonb NOT NULL DEFAULT '[]'::jsonb,
    route_id         bigint REFERENCES routes(id) ON DELETE SET NULL,
    stop_id          bigint REFERENCES stops(id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Only a given or resolved order has coordinates the planner may use.
    CHECK (location IS NOT NULL OR geocode_status NOT IN ('given', 'resolved'))
);

-- The planner asks "the day's unplanned orders"; the dispatcher's list pages by id.
CREATE INDEX orders_by_date_status ON orders (date, status, id);
CREATE INDEX orders_by_geocode ON orders (geocode_status, id)
    WHERE geocode_status IN ('pending', 'ambiguous', 'unresolved');
CREATE INDEX orders_by_stop ON orders (stop_id) WHERE stop_id IS NOT NULL;

-- One answer per (endpoint, normalised query): a geocoder's terms usually forbid asking the
-- same question twice, and the answer rarely changes.
CREATE TABLE geocode_cache (
    endpoint    text NOT NULL,
    query       text NOT NULL,
    results     jsonb NOT NULL,  -- the candidates, as stored in orders.geocode_candidates
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, query)
);
