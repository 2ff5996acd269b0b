-- Blocked members: the same table as SQLite migration 0009_blocked_members.sql (a server may refuse one member
-- every request, with an optional reason shown to them), read through its primary key.
CREATE TABLE blocked_members (
    guild_id   bigint NOT NULL,
    user_id    bigint NOT NULL,
    reason     text CHECK (reason IS NULL OR (reason <> '' AND reason = trim(reason))),
    blocked_by bigint NOT NULL,
    blocked_at double precision NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
