-- Rules finer than the server's (issue: limits by role, who may use the bot, per-member rules, reports, alerts).
--
-- role_limits and member_limits hold overrides of the per-member limits. A NULL column means "this rule does not
-- set it" (the member gets it from elsewhere); 0 means "no limit" (cooldown 0: none), as in guild_settings. A row
-- sets at least one column: clearing the last one deletes the row. Read on every request through the primary key
-- (a server's role rules through its prefix).
CREATE TABLE role_limits (
    guild_id         INTEGER NOT NULL,
    role_id          INTEGER NOT NULL,
    user_daily       INTEGER CHECK (user_daily >= 0),
    user_monthly     INTEGER CHECK (user_monthly >= 0),
    max_count        INTEGER CHECK (max_count >= 1),
    max_concurrent   INTEGER CHECK (max_concurrent >= 0),
    cooldown_seconds REAL    CHECK (cooldown_seconds >= 0),
    updated_at       REAL    NOT NULL,
    updated_by       INTEGER NOT NULL,
    PRIMARY KEY (guild_id, role_id),
    CHECK (coalesce(user_daily, user_monthly, max_count, max_concurrent, cooldown_seconds) IS NOT NULL)
) STRICT, WITHOUT ROWID;

CREATE TABLE member_limits (
    guild_id         INTEGER NOT NULL,
    user_id          INTEGER NOT NULL,
    user_daily       INTEGER CHECK (user_daily >= 0),
    user_monthly     INTEGER CHECK (user_monthly >= 0),
    max_count        INTEGER CHECK (max_count >= 1),
    max_concurrent   INTEGER CHECK (max_concurrent >= 0),
    cooldown_seconds REAL    CHECK (cooldown_seconds >= 0),
    updated_at       REAL    NOT NULL,
    updated_by       INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id),
    CHECK (coalesce(user_daily, user_monthly, max_count, max_concurrent, cooldown_seconds) IS NOT NULL)
) STRICT, WITHOUT ROWID;

-- Who may use the bot: when a server lists roles here, only members with one of them (or Manage Server) may.
CREATE TABLE access_roles (
    guild_id INTEGER NOT NULL,
    role_id  INTEGER NOT NULL,
    added_by INTEGER NOT NULL,
    added_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, role_id)
) STRICT, WITHOUT ROWID;

-- Where the bot tells a server's admins that its budget is running out or the provider refuses the operator.
CREATE TABLE alert_channels (
    guild_id   INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    set_by     INTEGER NOT NULL,
    set_at     REAL    NOT NULL
) STRICT;

-- Alerts already posted, so each is posted once per event, whichever process sees it first: the key names the
-- event ("guild_daily:80:2026-12-03", "guild_monthly:100:2026-12", "provider:credentials").
CREATE TABLE alerts_sent (
    guild_id INTEGER NOT NULL,
    key      TEXT    NOT NULL CHECK (key <> ''),
    sent_at  REAL    NOT NULL,
    PRIMARY KEY (guild_id, key)
) STRICT, WITHOUT ROWID;

-- Requests refused by a rule, counted per server, day (UTC, as in usage) and cause, for /limits report.
CREATE TABLE refusals (
    guild_id INTEGER NOT NULL,
    day      TEXT    NOT NULL,
    cause    TEXT    NOT NULL CHECK (cause <> ''),
    count    INTEGER NOT NULL CHECK (count >= 1),
    PRIMARY KEY (guild_id, day, cause)
) STRICT, WITHOUT ROWID;

-- No index for /limits report: it reads a server's jobs of a period through jobs_member_created's prefix
-- (guild_id), which retention keeps to JOB_RETENTION_DAYS; another index would slow every reservation.
