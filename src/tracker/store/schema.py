"""The database schema, declared once as SQLAlchemy Core tables with GeoAlchemy2 types.

The migrations in `sql/` are what creates and changes the database (hand-written SQL:
partitioning, triggers, functions); this is the schema they must produce, in one place
for reading, and `tests/integration/test_schema.py` fails when the two disagree (tables,
columns and their types and nullability, keys, foreign keys, unique constraints, indexes
and the number of check constraints). Queries are written in SQL against asyncpg, which
is faster on the hot path than going through SQLAlchemy; this module is their reference.
"""

from __future__ import annotations

from geoalchemy2 import Geography, Geometry
from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    Time,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP

metadata = MetaData()

Timestamp = TIMESTAMP(timezone=True)
Point = Geography("POINT", srid=4326, spatial_index=False)
Line = Geography("LINESTRING", srid=4326, spatial_index=False)
EMPTY_JSON = text("'{}'::jsonb")
NOW = text("now()")


def _fix_columns() -> list[Column[object]]:
    # positions and last_positions share the fix's columns.
    return [
        Column("fix_time", Timestamp, nullable=False),
        Column("received_at", Timestamp, nullable=False),
        Column("geog", Point, nullable=False),
        Column("speed", REAL),
        Column("course", REAL),
        Column("accuracy", REAL),
        Column("altitude", REAL),
        Column("attributes", JSONB, nullable=False, server_default=EMPTY_JSON),
    ]


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", Text, primary_key=True),
    Column("applied_at", Timestamp, nullable=False, server_default=NOW),
)

devices = Table(
    "devices",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("unique_id", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    # sql/009_workspace.sql: when the current token was issued by a rotation.
    Column("token_issued_at", Timestamp),
)

# Range-partitioned by month on fix_time (sql/001_ingest.sql); no foreign key to devices.
positions = Table(
    "positions",
    metadata,
    Column("device_id", BigInteger, nullable=False),
    *_fix_columns(),
    PrimaryKeyConstraint("device_id", "fix_time"),
)

last_positions = Table(
    "last_positions",
    metadata,
    Column(
        "device_id",
        BigInteger,
        ForeignKey("devices.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    *_fix_columns(),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    # sql/009_workspace.sql: a revoked key keeps its row.
    Column("revoked_at", Timestamp),
    CheckConstraint("role IN ('dispatcher', 'admin')"),
)

routes = Table(
    "routes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("device_id", BigInteger, ForeignKey("devices.id"), nullable=False),
    Column("planned_start", Timestamp, nullable=False),
    Column("path", Line, nullable=False),
    Column("straight_line", Boolean, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("off_route", Boolean, nullable=False, server_default=text("false")),
    Column("route_state", JSONB, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("updated_at", Timestamp, nullable=False, server_default=NOW),
    # sql/007_planning.sql: the plan it was dispatched from, and re-planning's revision.
    Column("plan_id", BigInteger, ForeignKey("plans.id")),
    Column("revision", Integer, nullable=False, server_default=text("0")),
    # sql/004_route_work.sql: moves on with every write of route_state.
    Column("state_seq", BigInteger, nullable=False, server_default=text("0")),
    # sql/009_workspace.sql: why a route ended early ('cancelled' or 'replaced').
    Column("ended_reason", Text),
    # sql/005_eta_learning.sql: when its drive was folded into learned_cells.
    Column("learned_at", Timestamp),
    CheckConstraint("status IN ('active', 'completed', 'cancelled')"),
    Index(
        "routes_active_by_device",
        "device_id",
        text("id DESC"),
        postgresql_where=text("status = 'active'"),
    ),
    Index("routes_by_planned_start", text("planned_start DESC"), text("id DESC")),
    Index("routes_to_learn", "id", postgresql_where=text("learned_at IS NULL")),
)

# sql/005_eta_learning.sql: travel time learned from stored drives, by cell, heading and
# hour of the week.
learned_cells = Table(
    "learned_cells",
    metadata,
    Column("cell_y", Integer, primary_key=True),
    Column("cell_x", Integer, primary_key=True),
    Column("heading", SmallInteger, primary_key=True),
    Column("hour_of_week", SmallInteger, primary_key=True),
    Column("passes", Integer, nullable=False),
    Column("sum_log_pace", Double, nullable=False),
    Column("sum_log_pace2", Double, nullable=False),
    CheckConstraint("heading BETWEEN 0 AND 7"),
    CheckConstraint("hour_of_week BETWEEN 0 AND 167"),
    CheckConstraint("passes > 0"),
)

stops = Table(
    "stops",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("route_id", BigInteger, ForeignKey("routes.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("location", Point, nullable=False),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("recipient", Text, nullable=False, server_default=text("''")),
    Column("service_s", Double, nullable=False, server_default=text("0")),
    Column("radius_m", Double, nullable=False, server_default=text("50")),
    Column("planned_arrival", Timestamp),
    Column("window_start", Timestamp),
    Column("window_end", Timestamp),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("reason", Text),
    Column("arrived_at", Timestamp),
    Column("completed_at", Timestamp),
    Column("eta", Timestamp),
    # sql/005_eta_learning.sql: the ETA's 80 % interval; passed by without a visit.
    Column("eta_earliest", Timestamp),
    Column("eta_latest", Timestamp),
    Column("deferred", Boolean, nullable=False, server_default=text("false")),
    # sql/003_tracking.sql: the customer link's token digest and when the stop became done.
    Column("tracking_hash", LargeBinary),
    Column("done_at", Timestamp),
    # sql/009_workspace.sql: the salt a derived link token was made from.
    Column("tracking_salt", LargeBinary),
    # sql/010_doorstep.sql: contact and hand-over details, what the customer added, and
    # the latest report's summary.
    Column("address", Text, nullable=False, server_default=text("''")),
    Column("phone", Text, nullable=False, server_default=text("''")),
    Column("email", Text, nullable=False, server_default=text("''")),
    Column("notes", Text, nullable=False, server_default=text("''")),
    Column("language", Text, nullable=False, server_default=text("''")),
    Column("parcels", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("proof_required", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("pin", Text),
    Column("reschedule_windows", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("pickup_points", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("instructions", Text, nullable=False, server_default=text("''")),
    Column("safe_place", Text, nullable=False, server_default=text("''")),
    Column("outcome", JSONB),
    CheckConstraint("proof_required <@ ARRAY['photo', 'signature', 'name', 'pin']::text[]"),
    UniqueConstraint("route_id", "seq"),
    CheckConstraint("service_s >= 0"),
    CheckConstraint("radius_m > 0"),
    CheckConstraint(
        "status IN ('pending', 'arrived', 'visited', 'completed', 'failed', 'skipped')"
    ),
    CheckConstraint("window_end IS NULL OR window_start IS NULL OR window_end >= window_start"),
    CheckConstraint("octet_length(tracking_hash) = 32"),
    CheckConstraint("octet_length(tracking_salt) = 16"),
    Index(
        "stops_by_tracking_hash",
        "tracking_hash",
        unique=True,
        postgresql_where=text("tracking_hash IS NOT NULL"),
    ),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("type", Text, nullable=False),
    Column("time", Timestamp, nullable=False),
    Column("device_id", BigInteger, ForeignKey("devices.id"), nullable=False),
    Column("route_id", BigInteger, ForeignKey("routes.id", ondelete="CASCADE")),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE")),
    Column("data", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Index("events_by_route", "route_id", "id"),
    Index("events_by_device_time", "device_id", "time"),
    Index("events_by_type", "type", text("id DESC")),
    # sql/012_route_writes.sql: the ETAs a stop was shown, for scoring its arrival.
    Index(
        "events_eta_by_stop",
        "stop_id",
        "id",
        postgresql_where=text("type = 'stop.eta_changed'"),
    ),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("eta_threshold_s", Double, nullable=False, server_default=text("300")),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("deleted_at", Timestamp),
    CheckConstraint("cardinality(events) > 0"),
    CheckConstraint("eta_threshold_s >= 0"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("public_id", Uuid, nullable=False, unique=True),
    Column("webhook_id", BigInteger, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", BigInteger, ForeignKey("events.id", ondelete="SET NULL")),
    Column("event_type", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Timestamp, nullable=False, server_default=NOW),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("delivered_at", Timestamp),
    Column("last_error", Text),
    CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')"),
    Index(
        "webhook_deliveries_due",
        "next_attempt_at",
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
    Index("webhook_deliveries_by_webhook", "webhook_id", text("id DESC")),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column(
        "delivery_id",
        BigInteger,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("duration_ms", Double, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    UniqueConstraint("delivery_id", "attempt"),
)

webhook_eta_marks = Table(
    "webhook_eta_marks",
    metadata,
    Column(
        "webhook_id",
        BigInteger,
        ForeignKey("webhooks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE"), primary_key=True),
    Column("eta", Timestamp, nullable=False),
)

# sql/006_orders.sql: depots, vehicles and orders (the input of planning), geocoder cache.
depots = Table(
    "depots",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False),
    Column("location", Point, nullable=False),
    Column("address", Text, nullable=False, server_default=text("''")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("updated_at", Timestamp, nullable=False, server_default=NOW),
    CheckConstraint("name <> ''"),
)

vehicles = Table(
    "vehicles",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False),
    Column("device_id", BigInteger, ForeignKey("devices.id")),
    Column("capacity", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("shift_start", Time),
    Column("shift_end", Time),
    Column("time_zone", Text, nullable=False, server_default=text("'UTC'")),
    Column("start_depot_id", BigInteger, ForeignKey("depots.id")),
    Column("end_depot_id", BigInteger, ForeignKey("depots.id")),
    Column("skills", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("max_duration_s", Integer),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("updated_at", Timestamp, nullable=False, server_default=NOW),
    CheckConstraint("name <> ''"),
    CheckConstraint("max_duration_s > 0"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("external_id", Text, unique=True),
    Column("kind", Text, nullable=False, server_default=text("'delivery'")),
    # NULL until geocoded. A type of its own: geoalchemy2 ties a geometry type's
    # nullability to the first column it is attached to.
    Column("location", Geography("POINT", srid=4326, spatial_index=False), nullable=True),
    Column("address", Text, nullable=False, server_default=text("''")),
    Column("recipient", Text, nullable=False, server_default=text("''")),
    Column("phone", Text, nullable=False, server_default=text("''")),
    Column("email", Text, nullable=False, server_default=text("''")),
    Column("windows", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("service_s", Double, nullable=False, server_default=text("0")),
    Column("size", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("skills", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("notes", Text, nullable=False, server_default=text("''")),
    Column("date", Date, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'unplanned'")),
    Column("geocode_status", Text, nullable=False, server_default=text("'given'")),
    Column("geocode_candidates", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("route_id", BigInteger, ForeignKey("routes.id", ondelete="SET NULL")),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="SET NULL")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("updated_at", Timestamp, nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('delivery', 'pickup')"),
    CheckConstraint("service_s >= 0"),
    CheckConstraint("priority BETWEEN 0 AND 100"),
    CheckConstraint(
        "status IN ('unplanned', 'planned', 'dispatched', 'delivered', 'failed', 'cancelled')"
    ),
    CheckConstraint(
        "geocode_status IN ('given', 'pending', 'resolved', 'ambiguous', 'unresolved')"
    ),
    CheckConstraint("location IS NOT NULL OR geocode_status NOT IN ('given', 'resolved')"),
    Index("orders_by_date_status", "date", "status", "id"),
    Index(
        "orders_by_geocode",
        "geocode_status",
        "id",
        postgresql_where=text("geocode_status IN ('pending', 'ambiguous', 'unresolved')"),
    ),
    Index("orders_by_stop", "stop_id", postgresql_where=text("stop_id IS NOT NULL")),
)

geocode_cache = Table(
    "geocode_cache",
    metadata,
    Column("endpoint", Text, nullable=False),
    Column("query", Text, nullable=False),
    Column("results", JSONB, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    PrimaryKeyConstraint("endpoint", "query"),
)

# sql/007_planning.sql: the road network (pgRouting) and plans.
road_imports = Table(
    "road_imports",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("source", Text, nullable=False),
    Column("ways", Integer, nullable=False),
    Column("edges", Integer, nullable=False),
    Column("vertices", Integer, nullable=False),
    Column("imported_at", Timestamp, nullable=False, server_default=NOW),
)

road_vertices = Table(
    "road_vertices",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("osm_node_id", BigInteger, nullable=False),
    Column("component", BigInteger),
    Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
)

road_edges = Table(
    "road_edges",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("osm_way_id", BigInteger, nullable=False),
    Column("source", BigInteger, ForeignKey("road_vertices.id"), nullable=False),
    Column("target", BigInteger, ForeignKey("road_vertices.id"), nullable=False),
    Column("class", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("length_m", Double, nullable=False),
    Column("speed_kmh", Double, nullable=False),
    Column("cost_s", Double, nullable=False),
    Column("reverse_cost_s", Double, nullable=False),
    Column("main", Boolean, nullable=False, server_default=text("false")),
    Column("geom", Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False),
    CheckConstraint("length_m >= 0"),
    CheckConstraint("speed_kmh > 0"),
    Index("road_edges_geom", "geom", postgresql_using="gist"),
    Index("road_edges_main_geom", "geom", postgresql_using="gist", postgresql_where=text("main")),
)

plans = Table(
    "plans",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("date", Date, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'proposed'")),
    Column("roads", Boolean, nullable=False),
    Column("proposal", JSONB, nullable=False),
    Column("routes", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("dispatched_at", Timestamp),
    CheckConstraint("status IN ('proposed', 'dispatched')"),
    Index("plans_by_date", "date", "id"),
)


# Sign-in sessions (sql/008_hardening.sql): the cookie's random id is kept as its digest.
sessions = Table(
    "sessions",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("key_id", BigInteger, ForeignKey("api_keys.id", ondelete="CASCADE")),
    Column("credential_hash", LargeBinary, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("last_seen_at", Timestamp, nullable=False, server_default=NOW),
    Column("expires_at", Timestamp, nullable=False),
    Column("user_agent", Text, nullable=False, server_default=text("''")),
    Column("client", Text, nullable=False, server_default=text("''")),
    CheckConstraint("octet_length(token_hash) = 32"),
    CheckConstraint("role IN ('dispatcher', 'admin')"),
    CheckConstraint("octet_length(credential_hash) = 32"),
    Index("sessions_by_key", "key_id"),
    Index("sessions_by_expiry", "expires_at"),
)

# -- sql/010_doorstep.sql: proof of delivery, customer requests, the message outbox ---------

stop_reports = Table(
    "stop_reports",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", Uuid, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("reason_code", Text),
    Column("reason_text", Text, nullable=False, server_default=text("''")),
    Column("next_step", Text),
    Column("recipient_name", Text, nullable=False, server_default=text("''")),
    Column("pin_ok", Boolean),
    Column("lat", Double),
    Column("lon", Double),
    Column("distance_m", Double),
    Column("far_reason", Text, nullable=False, server_default=text("''")),
    Column("reported_at", Timestamp, nullable=False),
    Column("received_at", Timestamp, nullable=False, server_default=NOW),
    CheckConstraint("status IN ('completed', 'failed')"),
    Index("stop_reports_by_stop", "stop_id", "id"),
)

proofs = Table(
    "proofs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE"), nullable=False),
    Column(
        "report_id",
        BigInteger,
        ForeignKey("stop_reports.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", Text, nullable=False),
    Column("media_type", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('photo', 'signature')"),
    CheckConstraint("media_type IN ('image/jpeg', 'image/png')"),
    Index("proofs_by_stop", "stop_id"),
    Index("proofs_by_age", "created_at"),
)

reschedule_requests = Table(
    "reschedule_requests",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE"), nullable=False),
    Column("window_start", Timestamp),
    Column("window_end", Timestamp),
    Column("pickup_point", JSONB),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("decided_at", Timestamp),
    CheckConstraint("status IN ('pending', 'confirmed', 'declined')"),
    CheckConstraint(
        "(window_start IS NOT NULL AND window_end IS NOT NULL) <> (pickup_point IS NOT NULL)"
    ),
    Index(
        "reschedule_one_pending",
        "stop_id",
        unique=True,
        postgresql_where=text("status = 'pending'"),
    ),
)

ratings = Table(
    "ratings",
    metadata,
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE"), primary_key=True),
    Column("stars", Integer, nullable=False),
    Column("comment", Text, nullable=False, server_default=text("''")),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    CheckConstraint("stars BETWEEN 1 AND 5"),
)

message_templates = Table(
    "message_templates",
    metadata,
    Column("kind", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=text("''")),
    Column("body", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False, server_default=NOW),
    PrimaryKeyConstraint("kind", "channel", "language"),
    CheckConstraint("channel IN ('email', 'sms')"),
)

message_opt_outs = Table(
    "message_opt_outs",
    metadata,
    Column("address", Text, primary_key=True),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("link", Text),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Timestamp, nullable=False, server_default=NOW),
    Column("created_at", Timestamp, nullable=False, server_default=NOW),
    Column("sent_at", Timestamp),
    Column("subject", Text, nullable=False, server_default=text("''")),
    Column("body", Text, nullable=False, server_default=text("''")),
    Column("provider_id", Text),
    Column("last_error", Text),
    UniqueConstraint("stop_id", "kind", "channel"),
    CheckConstraint("channel IN ('email', 'sms')"),
    CheckConstraint("status IN ('pending', 'sent', 'failed', 'suppressed', 'cancelled')"),
    Index(
        "messages_due",
        "next_attempt_at",
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
)

# -- sql/011_eta_accuracy.sql: live ETA accuracy, one row per arrival ------------------------
eta_accuracy = Table(
    "eta_accuracy",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column(
        "arrival_event_id",
        BigInteger,
        ForeignKey("events.id", ondelete="SET NULL"),
        unique=True,
    ),
    Column("route_id", BigInteger, ForeignKey("routes.id", ondelete="SET NULL")),
    Column("stop_id", BigInteger, ForeignKey("stops.id", ondelete="SET NULL")),
    Column("arrived_at", Timestamp, nullable=False),
    Column("horizons_s", ARRAY(Integer), nullable=False),
    Column("errors_s", ARRAY(Double), nullable=False),
    Column("inside", ARRAY(Boolean), nullable=False),
    Column("accurate", ARRAY(Boolean), nullable=False),
    CheckConstraint(
        "cardinality(errors_s) = cardinality(horizons_s) "
        "AND cardinality(inside) = cardinality(horizons_s) "
        "AND cardinality(accurate) = cardinality(horizons_s)"
    ),
    Index("eta_accuracy_by_time", "arrived_at"),
)
