-- The rows a write transaction changed, as its commit reports them to the
-- other side: each changed key once, with its highest outbox id (the
-- version) and its row rendered by to_jsonb (NULL when deleted), in the
-- order the keys were first changed.
--
-- A function so that the readback travels in one simple-protocol message
-- with the COMMIT (one round trip less per write) while its plans stay
-- cached for the session. A loop with one statement per table, rather than
-- one statement with a subquery per table, so a call locks and opens only
-- the tables the transaction changed.
--
-- One arm per table of `tables::ALL`; the test
-- `image::tests::changed_rows_covers_every_table` checks them.

CREATE FUNCTION cutover.changed_rows()
RETURNS TABLE (id bigint, table_name text, row_key text, image jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    FOR id, table_name, row_key IN
        SELECT max(o.id), o.table_name, o.row_key FROM cutover.outbox o
        WHERE o.txid = txid_current()
        GROUP BY o.table_name, o.row_key ORDER BY min(o.id)
    LOOP
        image := NULL;
        CASE table_name
            WHEN 'users' THEN
                SELECT to_jsonb(r) INTO image FROM users r WHERE r.id = row_key;
            WHEN 'tweets' THEN
                SELECT to_jsonb(r) INTO image FROM tweets r WHERE r.id = row_key;
            WHEN 'personality_analysis' THEN
                SELECT to_jsonb(r) INTO image FROM personality_analysis r WHERE r.id = row_key;
            WHEN 'funnel_progress' THEN
                SELECT to_jsonb(r) INTO image FROM funnel_progress r WHERE r.user_id = row_key;
            WHEN 'funnel_completion' THEN
                SELECT to_jsonb(r) INTO image FROM funnel_completion r WHERE r.user_id = row_key;
            WHEN 'referral_codes' THEN
                SELECT to_jsonb(r) INTO image FROM referral_codes r WHERE r.code = row_key;
            WHEN 'referral_tracking' THEN
                SELECT to_jsonb(r) INTO image FROM referral_tracking r WHERE r.id = row_key::int;
            WHEN 'referral_usage_log' THEN
                SELECT to_jsonb(r) INTO image FROM referral_usage_log r WHERE r.id = row_key::int;
            WHEN 'analysis_queue' THEN
                SELECT to_jsonb(r) INTO image FROM analysis_queue r WHERE r.job_id = row_key::int;
            WHEN 'analysis_chunks' THEN
                SELECT to_jsonb(r) INTO image FROM analysis_chunks r WHERE r.chunk_id = row_key::int;
            ELSE
                NULL;
        END CASE;
        RETURN NEXT;
    END LOOP;
END
$$;
