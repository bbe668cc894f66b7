-- Zone automation (issue 12): workflows with their stages and commands, and each zone's automation
-- state (the water state workflows leave behind, the emergency-stop latch).

-- One row per workflow run. Kept after the zone is deleted (like commands and the timeline: they name
-- the zone by uid only). At most one runs per zone: the partial unique index refuses a second.
CREATE TABLE zone_workflows (
    id           text        PRIMARY KEY,
    zone_uid     text        NOT NULL,
    type         text        NOT NULL,
    params       jsonb       NOT NULL DEFAULT '{}',
    status       text        NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    stage        text        NOT NULL,
    reason_code  text,
    message      text,
    stages       jsonb       NOT NULL DEFAULT '[]',
    commands     jsonb       NOT NULL DEFAULT '[]',
    cancel_requested_at timestamptz,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz
);
CREATE UNIQUE INDEX zone_workflows_one_running ON zone_workflows (zone_uid) WHERE status = 'running';
CREATE INDEX zone_workflows_zone ON zone_workflows (zone_uid, created_at);

-- What automation knows of a zone between workflows. The emergency stop is a latch: set by the
-- operator's emergency stop or the node's emergency_stop_activated, cleared only by an operator.
CREATE TABLE zone_automation (
    zone_uid            text        PRIMARY KEY,
    water_state         text        NOT NULL DEFAULT 'unknown',
    estop_active        boolean     NOT NULL DEFAULT false,
    estop_reason        text,
    estop_at            timestamptz,
    estop_cleared_by    text,
    solution_started_at timestamptz,
    -- three dose rounds in a row with no effect: corrections stay off until then (fail closed)
    correction_blocked_until timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
