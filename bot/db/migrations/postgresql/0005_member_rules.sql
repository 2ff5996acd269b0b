-- Rules finer than the server's: the same tables as SQLite migration 0010_member_rules.sql (role and member
-- overrides, access roles, the alert channel, alerts already posted, refusals counted per day and cause).
CREATE TABLE role_limits (
    guild_id         bigint NOT NULL,
    role_id          bigint NOT NULL,
    user_daily       integer CHECK (user_daily >= 0),
    user_monthly     integer CHECK (user_monthly >= 0),
    max_count        integer CHECK (max_count >= 1),
    max_concurrent   integer CHECK (max_concurrent >= 0),
    cooldown_seconds double precision CHECK (cooldown_seconds >= 0),
    updated_at       double precision NOT NULL,
    updated_by       bigint NOT NULL,
    PRIMARY KEY (guild_id, role_id),
    CHECK (coalesce(user_daily, user_monthly, max_count, max_concurrent, cooldown_seconds) IS NOT NULL)
);

CREATE TABLE member_limits (
    guild_id         bigint NOT NULL,
    user_id          bigint NOT NULL,
    user_daily       integer CHECK (user_daily >= 0),
    user_monthly     integer CHECK (user_monthly >= 0),
    max_count        integer CHECK (max_count >= 1),
    max_concurrent   integer CHECK (max_concurrent >= 0),
    cooldown_seconds double precision CHECK (cooldown_seconds >= 0),
    updated_at       double precision NOT NULL,
    updated_by       bigint NOT NULL,
    PRIMARY KEY (guild_id, user_id),
    CHECK (coalesce(user_daily, user_monthly, max_count, max_concurrent, cooldown_seconds) IS NOT NULL)
);

CREATE TABLE access_roles (
    guild_id bigint NOT NULL,
    role_id  bigint NOT NULL,
    added_by bigint NOT NULL,
    added_at double precision NOT NULL,
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE alert_channels (
    guild_id   bigint PRIMARY KEY,
    channel_id bigint NOT NULL,
    set_by     bigint NOT NULL,
    set_at     double precision NOT NULL
);

CREATE TABLE alerts_sent (
    guild_id bigint NOT NULL,
    key      text   NOT NULL CHECK (key <> ''),
    sent_at  double precision NOT NULL,
    PRIMARY KEY (guild_id, key)
);

CREATE TABLE refusals (
    guild_id bigint  NOT NULL,
    day      text    NOT NULL,
    cause    text    NOT NULL CHECK (cause <> ''),
    count    integer NOT NULL CHECK (count >= 1),
    PRIMARY KEY (guild_id, day, cause)
);
