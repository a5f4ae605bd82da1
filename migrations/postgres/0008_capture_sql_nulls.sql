-- `to_jsonb` renders a JSON column's SQL NULL and its JSON `null` alike,
-- so a note could not tell them apart and the copy to SQLite turned a JSON
-- `null` into SQL NULL. Each note now carries a fifth element: the nullable
-- JSON columns (given as trigger arguments after the key column) that hold
-- SQL NULL. Only columns the rendering shows as `null` are looked at.

CREATE OR REPLACE FUNCTION cutover.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tname text := TG_ARGV[0];
    img jsonb;
    k text;
    noted text;
    entry bigint;
    sql_nulls jsonb := '[]';
    is_null boolean;
    i int;
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
    ELSE
        FOR i IN 2 .. TG_NARGS - 1 LOOP
            IF img -> TG_ARGV[i] = 'null'::jsonb THEN
                EXECUTE format('SELECT ($1).%I IS NULL', TG_ARGV[i]) USING NEW INTO is_null;
                IF is_null THEN
                    sql_nulls := sql_nulls || to_jsonb(TG_ARGV[i]);
                END IF;
            END IF;
        END LOOP;
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, tname, k, img, sql_nulls)::text || E'\n', true);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('users', 'id', ARRAY['profile_data']),
        ('tweets', 'id', ARRAY['metadata']),
        ('personality_analysis', 'id', ARRAY[]::text[]),
        ('funnel_progress', 'user_id', ARRAY['completed_commands', 'command_responses']),
        ('funnel_completion', 'user_id', ARRAY['completion_data']),
        ('referral_codes', 'code', ARRAY[]::text[]),
        ('referral_tracking', 'id', ARRAY[]::text[]),
        ('referral_usage_log', 'id', ARRAY[]::text[]),
        ('analysis_queue', 'job_id', ARRAY[]::text[]),
        ('analysis_chunks', 'chunk_id', ARRAY['result'])
    ) AS captured (name, key, json_nullable)
    LOOP
        EXECUTE format('DROP TRIGGER cutover_capture ON %I', t.name);
        EXECUTE format(
            'CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW WHEN (current_setting(''cutover.capture'', true) = ''on'') '
            'EXECUTE FUNCTION cutover.capture(%s)',
            t.name,
            (SELECT string_agg(quote_literal(a), ', ')
             FROM unnest(ARRAY[t.name, t.key] || t.json_nullable) AS a));
    END LOOP;
END
$$;
