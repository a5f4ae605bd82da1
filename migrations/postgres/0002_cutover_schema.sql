-- The tool's own state, kept apart from the application's tables.
CREATE SCHEMA IF NOT EXISTS cutover;

-- The current stage: one row. Every process watches it (LISTEN cutover_stage,
-- polling as the fallback).
CREATE TABLE cutover.state (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    stage TEXT NOT NULL DEFAULT 'off'
        CHECK (stage IN ('off', 'dualwrite', 'shadow', 'live', 'rampdown', 'complete')),
    version BIGINT NOT NULL DEFAULT 0,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    changed_by TEXT,
    forced BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO cutover.state DEFAULT VALUES;

-- Every stage change, for the runbook's audit trail.
CREATE TABLE cutover.stage_history (
    id BIGSERIAL PRIMARY KEY,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    forced BOOLEAN NOT NULL DEFAULT FALSE,
    changed_by TEXT,
    pause_ms DOUBLE PRECISION,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Backfill progress: one row per table, the last key copied.
CREATE TABLE cutover.checkpoints (
    table_name TEXT PRIMARY KEY,
    last_key TEXT,
    rows_copied BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0,
    completed BOOLEAN NOT NULL DEFAULT FALSE,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ
);

-- Legacy rows (or values) that could not be copied exactly (DESIGN §5).
-- `original` holds every column of the source row; text that is not UTF-8
-- or holds NUL is kept as hex so the row is recoverable byte for byte.
CREATE TABLE cutover.rejects (
    id BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    row_key TEXT NOT NULL,
    column_name TEXT,
    reason TEXT NOT NULL CHECK (reason IN ('orphan', 'invalid_timestamp', 'invalid_boolean',
        'invalid_json', 'nul_char', 'invalid_utf8', 'invalid_integer', 'check_violation',
        'not_null', 'unique_violation')),
    detail TEXT,
    policy TEXT NOT NULL DEFAULT 'reject-row',
    row_copied BOOLEAN NOT NULL DEFAULT FALSE,
    original JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (table_name, row_key, column_name)
);

-- Keys changed on PostgreSQL while it is authoritative, not yet applied to SQLite.
CREATE TABLE cutover.outbox (
    id BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    row_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_key ON cutover.outbox (table_name, row_key);

-- Results of `cutover verify`, the last of which gates the move to `live`.
CREATE TABLE cutover.verify_runs (
    id BIGSERIAL PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    divergent_rows BIGINT NOT NULL DEFAULT 0,
    clean BOOLEAN NOT NULL DEFAULT FALSE,
    report JSONB
);
