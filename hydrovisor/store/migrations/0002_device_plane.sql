-- The device plane: greenhouses, zones, nodes and their channels, zone timeline, alerts,
-- node error reports, telemetry (raw, latest, rollups).

CREATE TABLE greenhouses (
    uid        text        PRIMARY KEY CHECK (uid ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zones (
    uid             text        PRIMARY KEY CHECK (uid ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    greenhouse_uid  text        NOT NULL REFERENCES greenhouses (uid),
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    settings        jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- node_secret is the HMAC key the server signs commands with, so it is kept as is (never
-- logged or returned by the API); the MQTT password is only stored hashed.
CREATE TABLE nodes (
    uid                text        PRIMARY KEY CHECK (uid ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    hardware_id        text        NOT NULL UNIQUE,
    type               text        NOT NULL DEFAULT 'unknown',
    fw_version         text,
    hardware_revision  text,
    state              text        NOT NULL DEFAULT 'REGISTERED'
        CHECK (state IN ('REGISTERED', 'ASSIGNED', 'ACTIVE', 'DEGRADED', 'MAINTENANCE', 'DECOMMISSIONED')),
    validated          boolean     NOT NULL DEFAULT false,
    zone_uid           text        REFERENCES zones (uid),
    pending_zone_uid   text        REFERENCES zones (uid),
    pending_since      timestamptz,
    node_secret        text        NOT NULL,
    mqtt_password_hash text,
    online             boolean     NOT NULL DEFAULT false,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at       timestamptz,
    heartbeat          jsonb,
    config_report      jsonb,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_zone ON nodes (zone_uid);

CREATE TABLE node_channels (
    node_uid      text NOT NULL REFERENCES nodes (uid) ON DELETE CASCADE,
    name          text NOT NULL,
    type          text NOT NULL CHECK (type IN ('SENSOR', 'ACTUATOR')),
    metric        text,
    unit          text,
    actuator_type text,
    relay_type    text CHECK (relay_type IS NULL OR relay_type IN ('NO', 'NC')),
    safe_limits   jsonb,
    ml_per_second double precision,
    PRIMARY KEY (node_uid, name)
);

-- The zone timeline: ordered by (created_at, id).
CREATE TABLE zone_events (
    id             bigserial   PRIMARY KEY,
    zone_uid       text,
    node_uid       text,
    type           text        NOT NULL,
    details        jsonb       NOT NULL DEFAULT '{}',
    correlation_id text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX zone_events_timeline ON zone_events (zone_uid, created_at, id);

CREATE TABLE alerts (
    id            bigserial   PRIMARY KEY,
    zone_uid      text,
    node_uid      text,
    source        text        NOT NULL CHECK (source IN ('biz', 'infra')),
    code          text        NOT NULL,
    type          text        NOT NULL,
    details       jsonb       NOT NULL DEFAULT '{}',
    status        text        NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'RESOLVED')),
    dedupe_key    text        NOT NULL DEFAULT '',
    count         integer     NOT NULL DEFAULT 1,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);
CREATE UNIQUE INDEX alerts_active_dedupe ON alerts (coalesce(zone_uid, ''), code, dedupe_key)
    WHERE status = 'ACTIVE';

CREATE TABLE node_errors (
    id          bigserial   PRIMARY KEY,
    node_uid    text        NOT NULL,
    level       text        NOT NULL,
    component   text,
    error_code  text,
    message     text,
    details     jsonb       NOT NULL DEFAULT '{}',
    ts          timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX node_errors_node ON node_errors (node_uid, created_at);

-- Append-only samples. metric is the canonical name, or OTHER with the device's name kept in
-- metric_original.
CREATE TABLE telemetry_samples (
    zone_uid        text             NOT NULL,
    node_uid        text             NOT NULL,
    channel         text             NOT NULL,
    metric          text             NOT NULL,
    metric_original text,
    value           double precision NOT NULL,
    ts              timestamptz      NOT NULL,
    received_at     timestamptz      NOT NULL DEFAULT now(),
    source          text             NOT NULL CHECK (source IN ('mqtt', 'http')),
    flags           jsonb
);
CREATE INDEX telemetry_samples_series ON telemetry_samples (zone_uid, node_uid, metric, ts);
CREATE INDEX telemetry_samples_received ON telemetry_samples USING brin (received_at);

CREATE TABLE telemetry_last (
    zone_uid   text             NOT NULL,
    node_uid   text             NOT NULL,
    channel    text             NOT NULL,
    metric     text             NOT NULL,
    value      double precision NOT NULL,
    ts         timestamptz      NOT NULL,
    flags      jsonb,
    updated_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_uid, node_uid, channel, metric)
);

CREATE TABLE telemetry_rollups (
    bucket       text             NOT NULL CHECK (bucket IN ('1m', '1h', '1d')),
    zone_uid     text             NOT NULL,
    node_uid     text             NOT NULL,
    channel      text             NOT NULL,
    metric       text             NOT NULL,
    bucket_start timestamptz      NOT NULL,
    sum          double precision NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    count        bigint           NOT NULL,
    PRIMARY KEY (bucket, zone_uid, node_uid, channel, metric, bucket_start)
);

-- Rollups are advanced over received_at (arrival order), so late samples are never skipped.
CREATE TABLE rollup_watermarks (
    bucket text        PRIMARY KEY,
    upto   timestamptz NOT NULL
);
