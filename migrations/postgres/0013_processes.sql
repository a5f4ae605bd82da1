-- Every process that embeds the dual store heartbeats here, so
-- `cutover status` can show who runs which stage and epoch.
CREATE TABLE cutover.processes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    actor TEXT,
    stage TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    fallback BOOLEAN NOT NULL DEFAULT FALSE,
    outbox_pending BIGINT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at TIMESTAMPTZ
);
