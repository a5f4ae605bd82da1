-- The authority (DESIGN §3): which side is authoritative, under which epoch.
-- The same row lives in the SQLite file (`_cutover_authority`), where every
-- write reads it under SQLite's write lock. Here it fences copies made
-- outside that lock: a copy made under epoch e commits only while this row
-- still says e (it reads the row FOR SHARE in its own transaction, so a
-- flip's update waits for the copies in flight).
CREATE TABLE cutover.authority (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    epoch BIGINT NOT NULL DEFAULT 0,
    stage TEXT NOT NULL
        CHECK (stage IN ('off', 'dualwrite', 'shadow', 'live', 'rampdown', 'complete')),
    fallback BOOLEAN NOT NULL DEFAULT FALSE,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO cutover.authority (stage) SELECT stage FROM cutover.state;

-- Keys both sides changed across a fallback: a write PostgreSQL may have
-- committed (its COMMIT's outcome was unknown, or its copy to SQLite had
-- not landed) and a later write SQLite took while it stood in. SQLite's
-- image wins (it is the newer write the application saw acknowledged);
-- PostgreSQL's is kept here, never merged silently.
CREATE TABLE cutover.conflicts (
    id BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    row_key TEXT NOT NULL,
    postgres_image JSONB,
    sqlite_image JSONB,
    detail TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
