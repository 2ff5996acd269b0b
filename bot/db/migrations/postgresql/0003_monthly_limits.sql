-- Monthly budgets: the same columns as SQLite migration 0008_monthly_limits.sql (a server's images per member
-- and for the whole server per calendar month, UTC; NULL: the bot's default; 0: no limit), and reserve_job
-- checking them with the daily limits, under the same quota lock and in the same statement.
--
-- A month is a range of usage days [p_month_first, p_month_following), read through the same indexes as one day.
ALTER TABLE guild_settings ADD COLUMN user_monthly integer CHECK (user_monthly >= 0);
ALTER TABLE guild_settings ADD COLUMN guild_monthly integer CHECK (guild_monthly >= 0);

DROP FUNCTION reserve_job(
    bigint, bigint, bigint, bigint, text, text, text, text, integer, bigint, text, bigint, bigint, text,
    double precision, text, double precision, text, bigint, bigint, bigint, double precision);

CREATE FUNCTION reserve_job(
    lock_key bigint,
    p_guild_id bigint, p_channel_id bigint, p_user_id bigint, p_kind text, p_prompt text, p_model text,
    p_size text, p_count integer, p_seed bigint, p_source_image_url text, p_parent_job_id bigint,
    p_interaction_application_id bigint, p_interaction_token text, p_interaction_created_at double precision,
    p_provider text, p_now double precision, p_day text,
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
        interaction_created_at, provider, status, created_at, reserved_images, usage_day)
    SELECT
        p_guild_id, p_channel_id, p_user_id, p_kind, p_prompt, p_model, p_size, p_count, p_seed,
        p_source_image_url, p_parent_job_id, p_interaction_application_id, p_interaction_token,
        p_interaction_created_at, p_provider, 'queued', p_now, p_count, p_day
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
