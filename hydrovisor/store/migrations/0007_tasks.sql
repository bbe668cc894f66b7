-- Scheduled tasks (issue 13, DOMAIN §5): the tasks themselves, the idempotency keys that make a
-- correlation id name one task, each task's timeline, and the scheduler's per-zone cursors.

-- One row per task (a retry is a row of its own, with its own correlation id). Kept after the zone is
-- deleted: like workflows, tasks name the zone by uid only. Terminal statuses never change: every
-- update is guarded by the status it moves from (hydrovisor/tasks/contract.py PREDECESSORS).
CREATE TABLE tasks (
    id                       text        PRIMARY KEY,
    zone_uid                 text        NOT NULL,
    task_type                text        NOT NULL CHECK (task_type IN ('irrigation', 'lighting', 'ventilation',
                                                                       'solution_change', 'mist', 'diagnostics')),
    payload                  jsonb       NOT NULL DEFAULT '{}',
    scheduled_for            timestamptz,
    due_at                   timestamptz NOT NULL,
    expires_at               timestamptz NOT NULL,
    correlation_id           text        NOT NULL,
    fingerprint              text        NOT NULL,
    status                   text        NOT NULL CHECK (status IN ('accepted', 'running', 'completed', 'failed',
                                                                    'expired', 'rejected')),
    decision                 text        CHECK (decision IN ('run', 'skip', 'retry', 'fail')),
    reason_code              text,
    error_code               text,
    action_required          boolean     NOT NULL DEFAULT false,
    command_submitted        boolean     NOT NULL DEFAULT false,
    command_effect_confirmed boolean     NOT NULL DEFAULT false,
    attempt                  integer     NOT NULL DEFAULT 1 CHECK (attempt BETWEEN 1 AND 3),
    parent_correlation_id    text,
    workflow_id              text,
    cmd_id                   text,
    created_by               text        NOT NULL,
    accepted_at              timestamptz NOT NULL,
    started_at               timestamptz,
    finished_at              timestamptz,
    next_attempt_at          timestamptz,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at > due_at),
    CHECK (scheduled_for IS NULL OR scheduled_for <= due_at),
    -- an effect is confirmed only by the command's DONE, on a task that completed
    CHECK (NOT command_effect_confirmed OR (command_submitted AND status = 'completed')),
    CHECK ((status IN ('completed', 'failed', 'expired', 'rejected')) = (finished_at IS NOT NULL))
);
-- the dispatcher's query: accepted tasks by due time (a partial index stays as small as the backlog)
CREATE INDEX tasks_due ON tasks (due_at, id) WHERE status = 'accepted';
CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('accepted', 'running');
CREATE INDEX tasks_zone ON tasks (zone_uid, accepted_at);
CREATE INDEX tasks_accepted ON tasks (accepted_at, id);
CREATE INDEX tasks_correlation ON tasks (correlation_id);

-- A correlation id names one task while its key lives: 24 h after receipt, or until that task expires
-- when that is later (a pending task's id is never reused). The primary key makes two concurrent
-- requests with one id race on a single row: one inserts, the other finds it (INSERT ... ON CONFLICT).
-- A request after the key lapsed takes the key over (ON CONFLICT ... DO UPDATE WHERE lapsed) and creates
-- a new task; the old task keeps its row.
CREATE TABLE task_idempotency_keys (
    correlation_id text        PRIMARY KEY,
    fingerprint    text        NOT NULL,
    task_id        text        NOT NULL REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);

-- Each task's timeline. Written after the task, best effort: a failed write is logged, never fails the task.
CREATE TABLE task_events (
    id         bigserial   PRIMARY KEY,
    task_id    text        NOT NULL,
    type       text        NOT NULL,
    status     text        NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_events_task ON task_events (task_id, at, id);

-- How far the scheduler has planned each zone's schedule of one kind (irrigation, lighting, ...). It only
-- moves forward (GREATEST), so a late or repeated write never makes a window run twice.
CREATE TABLE schedule_cursors (
    zone_uid   text        NOT NULL,
    kind       text        NOT NULL,
    cursor     timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_uid, kind)
);
