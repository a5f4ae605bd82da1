-- Change capture reads the changed row's key directly (one function per
-- table) instead of converting the whole row to jsonb to find it: the
-- trigger runs on every captured write, and rows such as tweets and profiles
-- carry kilobytes of text and JSON.

CREATE FUNCTION cutover.capture_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('users', OLD.id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('users', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON users;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_users();

CREATE FUNCTION cutover.capture_tweets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('tweets', OLD.id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('tweets', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON tweets;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON tweets
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_tweets();

CREATE FUNCTION cutover.capture_personality_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('personality_analysis', OLD.id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('personality_analysis', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON personality_analysis;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON personality_analysis
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_personality_analysis();

CREATE FUNCTION cutover.capture_funnel_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('funnel_progress', OLD.user_id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('funnel_progress', NEW.user_id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON funnel_progress;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON funnel_progress
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_funnel_progress();

CREATE FUNCTION cutover.capture_funnel_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('funnel_completion', OLD.user_id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('funnel_completion', NEW.user_id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON funnel_completion;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON funnel_completion
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_funnel_completion();

CREATE FUNCTION cutover.capture_referral_codes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_codes', OLD.code::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_codes', NEW.code::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON referral_codes;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON referral_codes
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_referral_codes();

CREATE FUNCTION cutover.capture_referral_tracking() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_tracking', OLD.id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_tracking', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON referral_tracking;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON referral_tracking
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_referral_tracking();

CREATE FUNCTION cutover.capture_referral_usage_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_usage_log', OLD.id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_usage_log', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON referral_usage_log;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON referral_usage_log
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_referral_usage_log();

CREATE FUNCTION cutover.capture_analysis_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('analysis_queue', OLD.job_id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('analysis_queue', NEW.job_id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON analysis_queue;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON analysis_queue
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_analysis_queue();

CREATE FUNCTION cutover.capture_analysis_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('analysis_chunks', OLD.chunk_id::text);
    ELSE
        INSERT INTO cutover.outbox (table_name, row_key) VALUES ('analysis_chunks', NEW.chunk_id::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER cutover_capture ON analysis_chunks;
CREATE TRIGGER cutover_capture AFTER INSERT OR UPDATE OR DELETE ON analysis_chunks
    FOR EACH ROW WHEN (current_setting('cutover.capture', true) = 'on')
    EXECUTE FUNCTION cutover.capture_analysis_chunks();

DROP FUNCTION cutover.capture_change();

