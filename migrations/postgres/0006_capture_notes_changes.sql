-- Change capture also notes each change for the write's own commit: the
-- trigger appends one line per changed row to the transaction-local setting
-- `cutover.changed` (a JSON array: outbox id, table, key, and the row as
-- to_jsonb renders it, null when deleted). The commit reads that setting in
-- the COMMIT's round trip, so a write needs no statement of its own to learn
-- what it changed. Notes stop at 64 kB (appending is a copy, so a large
-- batch would cost its square): `cutover.overflow` then holds the
-- transaction id, and the commit lists the rest from the outbox afterwards.
-- A rolled-back savepoint drops its notes with its outbox entries.
--
-- One function for every table, given the table and its key column as
-- trigger arguments: the row is rendered as jsonb for its note anyway, so
-- the key is read from that rendering (migration 0005's per-table functions
-- read it directly to avoid the rendering; with notes the two cost the same).

CREATE FUNCTION cutover.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tname text := TG_ARGV[0];
    img jsonb;
    k text;
    noted text;
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        img := to_jsonb(OLD);
    ELSE
        img := to_jsonb(NEW);
    END IF;
    k := img ->> TG_ARGV[1];
    INSERT INTO cutover.outbox (table_name, row_key) VALUES (tname, k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        img := 'null';
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, tname, k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('users', 'id'),
        ('tweets', 'id'),
        ('personality_analysis', 'id'),
        ('funnel_progress', 'user_id'),
        ('funnel_completion', 'user_id'),
        ('referral_codes', 'code'),
        ('referral_tracking', 'id'),
        ('referral_usage_log', 'id'),
        ('analysis_queue', 'job_id'),
        ('analysis_chunks', 'chunk_id')
    ) AS captured (name, key)
    LOOP
        EXECUTE format('DROP TRIGGER cutover_capture ON %I', t.name);
        EXECUTE format(
            'CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW WHEN (current_setting(''cutover.capture'', true) = ''on'') '
            'EXECUTE FUNCTION cutover.capture(%L, %L)',
            t.name, t.name, t.key);
        EXECUTE format('DROP FUNCTION cutover.capture_%s()', t.name);
    END LOOP;
END
$$;
