-- Route progress runs after the ack, in rounds (tracker.services.route_work). The process
-- that ran a route's last round keeps its state in memory; `state_seq` moves on with every
-- write of `route_state`, so a round reads the stored state again only when someone else
-- (another instance, a stop status change, re-planning, a hand-over) wrote it since.
ALTER TABLE routes ADD COLUMN state_seq bigint NOT NULL DEFAULT 0;
