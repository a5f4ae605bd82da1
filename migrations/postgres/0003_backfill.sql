-- Backfill state beyond the per-table checkpoints of 0002.

-- The SQLite rowid a rejected row came from: two legacy rows can share a key
-- text (a NULL key, or a blob and a text key with the same bytes), the rowid
-- tells them apart.
ALTER TABLE cutover.rejects ADD COLUMN source_rowid BIGINT;

-- Secondary indexes dropped by `cutover backfill --defer-indexes`, kept until
-- they are rebuilt, so a killed run rebuilds them when it resumes.
CREATE TABLE cutover.deferred_indexes (
    index_name TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    definition TEXT NOT NULL,
    dropped_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
