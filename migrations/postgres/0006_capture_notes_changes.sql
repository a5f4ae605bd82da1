-- Change capture also notes each change for the write's own commit: the
-- trigger appends one line per changed row to the transaction-local setting
-- `cutover.changed` (a JSON array: outbox id, table, key, and the row as
-- to_jsonb renders it, null when deleted). The commit reads that setting in
-- the COMMIT's round trip, so a write needs no statement of its own to learn
-- what it changed. Notes stop at 64 kB (appending is a copy, so a large
-- batch would cost its square): `cutover.overflow` then holds the
-- transaction id, and the commit lists the rest from the outbox afterwards.
-- A rolled-back savepoint drops its notes with its outbox entries.

CREATE OR REPLACE FUNCTION cutover.capture_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.id::text;
    ELSE
        k := NEW.id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('users', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'users', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_tweets() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.id::text;
    ELSE
        k := NEW.id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('tweets', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'tweets', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_personality_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.id::text;
    ELSE
        k := NEW.id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('personality_analysis', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'personality_analysis', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_funnel_progress() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.user_id::text;
    ELSE
        k := NEW.user_id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('funnel_progress', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'funnel_progress', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_funnel_completion() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.user_id::text;
    ELSE
        k := NEW.user_id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('funnel_completion', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'funnel_completion', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_referral_codes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.code::text;
    ELSE
        k := NEW.code::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_codes', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'referral_codes', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_referral_tracking() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.id::text;
    ELSE
        k := NEW.id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_tracking', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'referral_tracking', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_referral_usage_log() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.id::text;
    ELSE
        k := NEW.id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('referral_usage_log', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'referral_usage_log', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_analysis_queue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.job_id::text;
    ELSE
        k := NEW.job_id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('analysis_queue', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'analysis_queue', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION cutover.capture_analysis_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    noted text;
    k text;
    img jsonb := 'null';
    entry bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.chunk_id::text;
    ELSE
        k := NEW.chunk_id::text;
    END IF;
    INSERT INTO cutover.outbox (table_name, row_key) VALUES ('analysis_chunks', k) RETURNING id INTO entry;
    IF coalesce(current_setting('cutover.overflow', true), '') <> '' THEN
        RETURN NULL;
    END IF;
    noted := coalesce(current_setting('cutover.changed', true), '');
    IF length(noted) >= 65536 THEN
        PERFORM set_config('cutover.overflow', txid_current()::text, true);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        img := to_jsonb(NEW);
    END IF;
    PERFORM set_config('cutover.changed',
        noted || jsonb_build_array(entry, 'analysis_chunks', k, img)::text || E'\n', true);
    RETURN NULL;
END
$$;
