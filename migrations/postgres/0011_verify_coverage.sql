-- A verify gates the move to `live` only when it covered every table.
ALTER TABLE cutover.verify_runs ADD COLUMN all_tables BOOLEAN NOT NULL DEFAULT FALSE;
