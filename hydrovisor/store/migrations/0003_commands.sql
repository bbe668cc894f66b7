-- Commands (one row each, status moved only by guarded updates), their status timeline, and the
-- durable notification queue with its dead-letter queue.

CREATE TABLE commands (
    cmd_id           text             PRIMARY KEY CHECK (cmd_id ~ '^[A-Za-z0-9_-]{1,63}$'),
    zone_uid         text,
    node_uid         text             NOT NULL,
    channel          text             NOT NULL,
    cmd              text             NOT NULL,
    params           jsonb            NOT NULL DEFAULT '{}',
    source           text             NOT NULL DEFAULT 'api',
    trace_id         text,
    status           text             NOT NULL CHECK (status IN
        ('QUEUED', 'SENT', 'ACK', 'DONE', 'NO_EFFECT', 'ERROR', 'INVALID', 'BUSY', 'TIMEOUT', 'SEND_FAILED')),
    timeout_s        double precision NOT NULL CHECK (timeout_s > 0),
    deadline_at      timestamptz      NOT NULL,
    publish_attempts integer          NOT NULL DEFAULT 0,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    ack_at           timestamptz,
    terminal_at      timestamptz,
    failed_at        timestamptz,
    error_code       text,
    error_message    text,
    details          jsonb,
    updated_at       timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX commands_open ON commands (deadline_at) WHERE status IN ('QUEUED', 'SENT', 'ACK');
CREATE INDEX commands_node ON commands (node_uid, created_at);
CREATE INDEX commands_zone ON commands (zone_uid, created_at);

-- Every status report, applied or not (late replies after a terminal, duplicates, contradictions).
CREATE TABLE command_events (
    id       bigserial   PRIMARY KEY,
    cmd_id   text        NOT NULL,
    status   text        NOT NULL,
    applied  boolean     NOT NULL,
    source   text        NOT NULL,
    details  jsonb       NOT NULL DEFAULT '{}',
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX command_events_cmd ON command_events (cmd_id, at, id);

-- Notifications that must reach a consumer: exactly one of delivered (deleted), pending, dead-lettered.
CREATE TABLE notifications_pending (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL,
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_due ON notifications_pending (next_attempt_at);

CREATE TABLE notifications_dlq (
    id          bigserial   PRIMARY KEY,
    pending_id  bigint      NOT NULL UNIQUE,
    kind        text        NOT NULL,
    payload     jsonb       NOT NULL,
    attempts    integer     NOT NULL,
    last_error  text,
    created_at  timestamptz NOT NULL,
    moved_at    timestamptz NOT NULL DEFAULT now()
);
