-- Tables and columns of the legacy SQLite file that the schema does not
-- describe, which the operator acknowledged by name (`cutover backfill
-- --ignore-unknown`) as left behind: nothing of them is copied. One row per
-- name (`notes` for a table, `users.nickname` for a column), updated by each
-- run that acknowledges it, with the counts that run saw.
CREATE TABLE cutover.acknowledged_drift (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('table', 'column')),
    rows BIGINT NOT NULL,
    non_null BIGINT,
    acknowledged_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
