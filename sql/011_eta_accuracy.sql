-- Live ETA accuracy: each stop arrival scored against the ETAs shown before it.
--
-- One row per (arrival, horizon): the ETA shown `horizon_s` seconds before the arrival
-- (the last stop.eta_changed event of the stop at that moment), its error against the
-- arrival, whether its 80 % interval held it, and TransitApp's verdict (NULL beyond 15
-- min). Written once per arrival, in the transaction that stores the stop.arrived event;
-- kept when the route is deleted (the deployment's record), so the references go NULL.
CREATE TABLE eta_accuracy (
    id                bigserial PRIMARY KEY,
    arrival_event_id  bigint REFERENCES events(id) ON DELETE SET NULL,
    route_id          bigint REFERENCES routes(id) ON DELETE SET NULL,
    stop_id           bigint REFERENCES stops(id) ON DELETE SET NULL,
    arrived_at        timestamptz NOT NULL,
    horizon_s         integer NOT NULL CHECK (horizon_s > 0),
    error_s           double precision NOT NULL,  -- ETA − arrival
    inside            boolean,                     -- NULL: no interval was shown
    accurate          boolean,                     -- NULL: beyond the TransitApp bands
    UNIQUE (arrival_event_id, horizon_s)
);
CREATE INDEX eta_accuracy_by_time ON eta_accuracy (arrived_at);
