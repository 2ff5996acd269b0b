-- Blocked members: a server may refuse one member every request, with an optional reason shown to them.
-- Looked up on every request through the primary key (guild_id, user_id); listed per server by /limits show
-- through the same key's prefix.
CREATE TABLE blocked_members (
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    reason     TEXT CHECK (reason IS NULL OR (reason <> '' AND reason = trim(reason))),
    blocked_by INTEGER NOT NULL,
    blocked_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
) STRICT, WITHOUT ROWID;
