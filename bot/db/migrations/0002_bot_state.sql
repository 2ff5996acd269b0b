-- Small facts the bot keeps about itself across restarts, such as the fingerprint of the
-- application commands it last synced with Discord (syncing is rate limited: only when they change).
CREATE TABLE bot_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
