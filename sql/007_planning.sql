-- The road network (pgRouting edges and vertices from an OpenStreetMap extract) and route
-- plans (VROOM's proposals, then the routes they were dispatched as).
CREATE EXTENSION IF NOT EXISTS pgrouting;

-- One network at a time: `tracker roads import` replaces the whole of it in one transaction.
CREATE TABLE road_imports (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL,          -- the file's name
    ways         integer NOT NULL,       -- drivable OSM ways read
    edges        integer NOT NULL,
    vertices     integer NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE road_vertices (
    id           bigint PRIMARY KEY,
    osm_node_id  bigint NOT NULL,
    -- Strongly connected component (pgr_strongComponents): points are snapped only to the
    -- largest one, so no stop lands on an island a vehicle cannot leave or reach.
    component    bigint,
    geom         geometry(Point, 4326) NOT NULL
);

CREATE TABLE road_edges (
    id              bigint PRIMARY KEY,
    osm_way_id      bigint NOT NULL,
    source          bigint NOT NULL REFERENCES road_vertices(id),
    target          bigint NOT NULL REFERENCES road_vertices(id),
    class           text NOT NULL,      -- the OSM highway value
    name            text NOT NULL DEFAULT '',
    length_m        double precision NOT NULL CHECK (length_m >= 0),
    speed_kmh       double precision NOT NULL CHECK (speed_kmh > 0),
    -- Seconds to drive source -> target and back; negative = that direction is closed
    -- (a one-way street), as pgRouting reads it.
    cost_s          double precision NOT NULL,
    reverse_cost_s  double precision NOT NULL,
    -- Both ends in the largest strongly connected component.
    main            boolean NOT NULL DEFAULT false,
    geom            geometry(LineString, 4326) NOT NULL
);

CREATE INDEX road_edges_geom ON road_edges USING gist (geom);
CREATE INDEX road_edges_main_geom ON road_edges USING gist (geom) WHERE main;

-- A plan: the proposal as answered (per vehicle the ordered stops with planned arrivals,
-- the unassigned orders with reasons), then, once dispatched, the routes made of it.
CREATE TABLE plans (
    id             bigserial PRIMARY KEY,
    date           date NOT NULL,
    status         text NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed', 'dispatched')),
    -- true: travel times from the road network; false: straight lines (no roads loaded).
    roads          boolean NOT NULL,
    proposal       jsonb NOT NULL,
    -- Dispatch, route by route: {"<index in proposal.routes>": route id}. A dispatch that
    -- was interrupted resumes where it stopped.
    routes         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at  timestamptz
);

CREATE INDEX plans_by_date ON plans (date, id);

-- The plan a route was dispatched from, and a revision counter that re-planning bumps when
-- it replaces a route's remaining stops and path: every instance caches a route's plan by
-- (id, revision), so an edited route is never advanced with a stale one.
ALTER TABLE routes ADD COLUMN plan_id bigint REFERENCES plans(id);
ALTER TABLE routes ADD COLUMN revision integer NOT NULL DEFAULT 0;
