-- Change capture for the outbox while PostgreSQL is authoritative.
--
-- A write transaction of the PostgreSQL store that must be copied to SQLite
-- sets `cutover.capture = on` (transaction-local); these triggers then note
-- the key of every row it inserts, updates or deletes in cutover.outbox, in
-- the same transaction, tagged with the transaction id so the store can read
-- back exactly its own changes. Without the setting (backfill, applies coming
-- from SQLite, other clients) the WHEN clause skips the trigger entirely.
ALTER TABLE cutover.outbox ADD COLUMN txid BIGINT NOT NULL DEFAULT txid_current();
CREATE INDEX outbox_txid ON cutover.outbox (txid);

CREATE FUNCTION cutover.capture_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES (TG_TABLE_NAME, to_jsonb(OLD) ->> TG_ARGV[0]);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES (TG_TABLE_NAME, to_jsonb(NEW) ->> TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON tweets
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON personality_analysis
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON funnel_progress
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('user_id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON funnel_completion
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('user_id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON referral_codes
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('code');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON referral_tracking
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON referral_usage_log
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON analysis_queue
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('job_id');
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON analysis_chunks
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_change('chunk_id');
