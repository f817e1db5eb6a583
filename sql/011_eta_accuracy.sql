-- Live ETA accuracy: each stop arrival scored against the ETAs shown before it.
--
-- One row per arrival, written once, in the transaction that stores its stop.arrived
-- event. Its arrays hold one entry per horizon (every minute from 1 to 90 min before the
-- arrival, from the first one at which the stop had an ETA): the ETA shown then (the
-- stop's last stop.eta_changed event by then) minus the arrival, whether its 80 %
-- interval held the arrival (NULL: none shown), and TransitApp's verdict (NULL beyond 15
-- min). Arrays, not a row per horizon: about 1.5 kB per arrival instead of ~12 kB.
-- Kept when the route is deleted (the deployment's record), so the references go NULL.
CREATE TABLE eta_accuracy (
    id                bigserial PRIMARY KEY,
    arrival_event_id  bigint UNIQUE REFERENCES events(id) ON DELETE SET NULL,
    route_id          bigint REFERENCES routes(id) ON DELETE SET NULL,
    stop_id           bigint REFERENCES stops(id) ON DELETE SET NULL,
    arrived_at        timestamptz NOT NULL,
    horizons_s        integer[] NOT NULL,
    errors_s          double precision[] NOT NULL,  -- ETA − arrival
    inside            boolean[] NOT NULL,
    accurate          boolean[] NOT NULL,
    CHECK (cardinality(errors_s) = cardinality(horizons_s)
           AND cardinality(inside) = cardinality(horizons_s)
           AND cardinality(accurate) = cardinality(horizons_s))
);
CREATE INDEX eta_accuracy_by_time ON eta_accuracy (arrived_at);
