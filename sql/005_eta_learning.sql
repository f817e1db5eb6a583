-- ETAs that learn (issue 12): visits, intervals, and travel times learned from past drives.

-- Leaving a stop's geofence records a visit; the driver or dispatcher completes the stop
-- (unless TRACKER_AUTO_COMPLETE=departure).
ALTER TABLE stops DROP CONSTRAINT stops_status_check;
ALTER TABLE stops ADD CONSTRAINT stops_status_check
    CHECK (status IN ('pending', 'arrived', 'visited', 'completed', 'failed', 'skipped'));

-- Every ETA comes with its 80 % interval (10th and 90th percentiles).
ALTER TABLE stops ADD COLUMN eta_earliest timestamptz;
ALTER TABLE stops ADD COLUMN eta_latest timestamptz;
-- Passed by without a visit: expected after the others, and not "the next stop".
ALTER TABLE stops ADD COLUMN deferred boolean NOT NULL DEFAULT false;

-- Travel time learned from stored drives, by stretch of road: a grid cell of about 110 m
-- (0.001 degree of latitude and longitude), the heading octant it was crossed in, and the
-- hour of the week (UTC) the crossing began. One row sums the crossings: their count and
-- the sum and sum of squares of the log of seconds per metre (time standing still in the
-- cell, at a stop or a light, included), so the typical pace is a geometric mean and its
-- spread a standard deviation. Shared by every instance and every route.
CREATE TABLE learned_cells (
    cell_y        integer NOT NULL,
    cell_x        integer NOT NULL,
    heading       smallint NOT NULL CHECK (heading BETWEEN 0 AND 7),
    hour_of_week  smallint NOT NULL CHECK (hour_of_week BETWEEN 0 AND 167),
    passes        integer NOT NULL CHECK (passes > 0),
    sum_log_pace  double precision NOT NULL,
    sum_log_pace2 double precision NOT NULL,
    PRIMARY KEY (cell_y, cell_x, heading, hour_of_week)
);

-- A route's drive is learned once, after it ended (completed, or silent for a while).
ALTER TABLE routes ADD COLUMN learned_at timestamptz;
CREATE INDEX routes_to_learn ON routes (id) WHERE learned_at IS NULL;
