-- Devices, their positions (partitioned by fix time) and the live "last position" of each.
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE devices (
    id          bigserial PRIMARY KEY,
    unique_id   text NOT NULL UNIQUE,
    name        text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,   -- sha256 of the device token; the token itself is never stored
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to devices: every row comes from an authenticated device, and a per-row
-- FK trigger would cost a large share of the COPY rate. Devices are disabled, never deleted.
CREATE TABLE positions (
    device_id   bigint NOT NULL,
    fix_time    timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    geog        geography(Point, 4326) NOT NULL,
    speed       real,
    course      real,
    accuracy    real,
    altitude    real,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (device_id, fix_time)
) PARTITION BY RANGE (fix_time);

-- One partition per calendar month (UTC). The writer calls this before the first row of a
-- month it has not seen; the server also creates the coming months ahead of time.
CREATE FUNCTION tracker_ensure_partition(t timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamp := date_trunc('month', t AT TIME ZONE 'UTC');
    part_name   text := 'positions_' || to_char(month_start, 'YYYYMM');
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        -- Serialise creators: two instances may meet the same new month at once.
        PERFORM pg_advisory_xact_lock(hashtext('tracker_ensure_partition'));
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF positions FOR VALUES FROM (%L) TO (%L)',
            part_name,
            month_start AT TIME ZONE 'UTC',
            (month_start + interval '1 month') AT TIME ZONE 'UTC');
    END IF;
    RETURN part_name;
END $$;

SELECT tracker_ensure_partition(now() + make_interval(months => m)) FROM generate_series(0, 2) AS m;

CREATE TABLE last_positions (
    device_id   bigint PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    fix_time    timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    geog        geography(Point, 4326) NOT NULL,
    speed       real,
    course      real,
    accuracy    real,
    altitude    real,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('dispatcher', 'admin')),
    key_hash    bytea NOT NULL UNIQUE,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
