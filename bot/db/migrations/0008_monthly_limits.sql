-- Monthly budgets: a server may limit images per member and for the whole server per calendar month (UTC).
-- NULL means "use the default from the bot's settings"; 0 means "no limit", as for the daily limits.
--
-- No new index: a month is a range of usage days, read through the same indexes as one day (the primary key
-- (guild_id, user_id, day) for a member, usage_guild_day for the server).
ALTER TABLE guild_settings ADD COLUMN user_monthly INTEGER CHECK (user_monthly >= 0);
ALTER TABLE guild_settings ADD COLUMN guild_monthly INTEGER CHECK (guild_monthly >= 0);
