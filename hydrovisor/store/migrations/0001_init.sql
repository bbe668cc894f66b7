-- System-level events (start, stop, failovers, incidents) kept for operators and post-mortems.
CREATE TABLE system_events (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text        NOT NULL,
    incident_id text,
    details     jsonb       NOT NULL DEFAULT '{}'
);
