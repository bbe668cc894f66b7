-- Zones come alive (issue 11): versioned zone settings, command/decision columns on the zone
-- timeline, alert severity and who resolved an alert and why, the audit of safety resets.

-- Every version of a zone's settings document is kept; the newest is the zone's settings. A new
-- version is only ever (latest + 1): two writers editing the same version cannot both win (the
-- primary key refuses the second). Removed with its zone; zone events and alerts are not.
CREATE TABLE zone_settings_versions (
    zone_uid   text        NOT NULL REFERENCES zones (uid) ON DELETE CASCADE,
    version    integer     NOT NULL CHECK (version >= 1),
    document   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text        NOT NULL,
    PRIMARY KEY (zone_uid, version)
);

-- zones.settings becomes version 1 of each existing zone: one place for a zone's settings.
INSERT INTO zone_settings_versions (zone_uid, version, document, created_at, created_by)
SELECT uid, 1, settings, created_at, 'migration' FROM zones;
ALTER TABLE zones DROP COLUMN settings;

ALTER TABLE zone_events
    ADD COLUMN cmd_id      text,
    ADD COLUMN decision    text,
    ADD COLUMN reason_code text;
CREATE INDEX zone_events_cmd ON zone_events (cmd_id) WHERE cmd_id IS NOT NULL;

ALTER TABLE alerts
    ADD COLUMN severity        text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolved_reason text;
CREATE INDEX alerts_zone ON alerts (zone_uid, status, last_seen_at);

-- "Reset safety lock" (DOMAIN §4): who, why, and which alerts it resolved. Kept after the zone is deleted.
CREATE TABLE safety_resets (
    id        bigserial   PRIMARY KEY,
    zone_uid  text        NOT NULL,
    by        text        NOT NULL,
    reason    text        NOT NULL,
    alert_ids bigint[]    NOT NULL DEFAULT '{}',
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX safety_resets_zone ON safety_resets (zone_uid, at);
