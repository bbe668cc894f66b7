-- Samples PostgreSQL refused to store (issue 9: no poison pill). Kept as the sample's JSON bytes,
-- so that whatever made the original insert fail cannot fail this one.
CREATE TABLE telemetry_quarantine (
    id             bigserial   PRIMARY KEY,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    error          text        NOT NULL,
    sample         bytea       NOT NULL
);
