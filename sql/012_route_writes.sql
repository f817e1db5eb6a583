-- Route work writes every active route's state once per round and its stops when their
-- ETAs move. PostGIS keeps a geography inline (storage MAIN), so a route's road path made
-- its row several kB: every state write copied the path into a new row version on a page
-- of its own, with an entry in every index (41 of 28,116 route updates were HOT in
-- `bench/fleet_bench.py --only routed`, and the table grew to 226 MB for 1,000 routes).
-- Stored out of line, the path stays where it is when the state changes, and room left on
-- each page lets PostgreSQL update in place. Both take effect for rows written from now on.
ALTER TABLE routes ALTER COLUMN path SET STORAGE EXTENDED;
ALTER TABLE routes SET (fillfactor = 50);
ALTER TABLE stops SET (fillfactor = 70);

-- Scoring an arrival reads the ETAs its stop was shown (store/accuracy.py): without this it
-- read every event of the route.
CREATE INDEX events_eta_by_stop ON events (stop_id, id) WHERE type = 'stop.eta_changed';
