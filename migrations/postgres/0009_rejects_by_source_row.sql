-- One ledger entry per source row: two legacy rows whose keys read the same
-- as text (a TEXT key and a BLOB key with the same bytes, two NULL keys)
-- each keep their own entry and original image. Entries recorded by the
-- dual store (a row the application changed) have no rowid and stay unique
-- by key.
ALTER TABLE cutover.rejects DROP CONSTRAINT rejects_table_name_row_key_column_name_key;
CREATE UNIQUE INDEX rejects_by_source_row
    ON cutover.rejects (table_name, source_rowid, column_name)
    WHERE source_rowid IS NOT NULL;
CREATE UNIQUE INDEX rejects_by_key
    ON cutover.rejects (table_name, row_key, column_name)
    WHERE source_rowid IS NULL;
