-- The language of the member who asked for a job: the same column as SQLite migration 0013_job_locale.sql,
-- and reserve_job recording it with the rest of the job (the function of 0003 with one more parameter;
-- PostgreSQL keeps a function per signature, so the old one is dropped).
ALTER TABLE jobs ADD COLUMN locale text;

DROP FUNCTION reserve_job(
    bigint, bigint, bigint, bigint, text, text, text, text, integer, bigint, text, bigint, bigint, text,
    double precision, text, double precision, text, bigint, bigint, bigint, double precision,
    text, text, bigint, bigint);

CREATE FUNCTION reserve_job(
    lock_key bigint,
    p_guild_id bigint, p_channel_id bigint, p_user_id bigint, p_kind text, p_prompt text, p_model text,
    p_size text, p_count integer, p_seed bigint, p_source_image_url text, p_parent_job_id bigint,
    p_interaction_application_id bigint, p_interaction_token text, p_interaction_created_at double precision,
    p_locale text, p_provider text, p_now double precision, p_day text,
    p_user_daily bigint, p_guild_daily bigint, p_max_concurrent bigint, p_cooldown double precision,
    p_month_first text, p_month_following text, p_user_monthly bigint, p_guild_monthly bigint
) RETURNS SETOF jobs
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY
    INSERT INTO jobs (
        guild_id, channel_id, user_id, kind, prompt, model, size, count, seed,
        source_image_url, parent_job_id, interaction_application_id, interaction_token,
        interaction_created_at, locale, provider, status, created_at, reserved_images, usage_day)
    SELECT
        p_guild_id, p_channel_id, p_user_id, p_kind, p_prompt, p_model, p_size, p_count, p_seed,
        p_source_image_url, p_parent_job_id, p_interaction_application_id, p_interaction_token,
        p_interaction_created_at, p_locale, p_provider, 'queued', p_now, p_count, p_day
    WHERE (p_user_monthly IS NULL OR p_count + (
               SELECT coalesce(sum(u.used + u.reserved), 0) FROM usage AS u
               WHERE u.guild_id = p_guild_id AND u.user_id = p_user_id
                 AND u.day >= p_month_first AND u.day < p_month_following) <= p_user_monthly)
      AND (p_guild_monthly IS NULL OR p_count + (
               SELECT coalesce(sum(u.used + u.reserved), 0) FROM usage AS u
               WHERE u.guild_id = p_guild_id
                 AND u.day >= p_month_first AND u.day < p_month_following) <= p_guild_monthly)
      AND (p_user_daily IS NULL OR p_count + (
               SELECT coalesce(sum(u.used + u.reserved), 0) FROM usage AS u
               WHERE u.guild_id = p_guild_id AND u.user_id = p_user_id AND u.day = p_day) <= p_user_daily)
      AND (p_guild_daily IS NULL OR p_count + (
               SELECT coalesce(sum(u.used + u.reserved), 0) FROM usage AS u
               WHERE u.guild_id = p_guild_id AND u.day = p_day) <= p_guild_daily)
      AND (p_max_concurrent IS NULL OR (
               SELECT count(*) FROM jobs AS j
               WHERE j.guild_id = p_guild_id AND j.user_id = p_user_id
                 AND j.status IN ('queued', 'submitting', 'submitted', 'succeeded')) < p_max_concurrent)
      AND (p_cooldown <= 0 OR coalesce(p_now - (
               SELECT j.created_at FROM jobs AS j WHERE j.guild_id = p_guild_id AND j.user_id = p_user_id
               ORDER BY j.created_at DESC LIMIT 1) >= p_cooldown, true))
    RETURNING *;
END
$$;
