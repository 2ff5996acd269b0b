-- max_concurrent = 0 now means "no limit" (like user_daily and guild_daily), so the CHECK allows 0.
-- SQLite cannot change a CHECK in place: rebuild the table and copy the rows.
CREATE TABLE guild_settings_v3 (
    guild_id         INTEGER PRIMARY KEY,
    user_daily       INTEGER CHECK (user_daily >= 0),
    guild_daily      INTEGER CHECK (guild_daily >= 0),
    max_count        INTEGER CHECK (max_count >= 1),
    max_concurrent   INTEGER CHECK (max_concurrent >= 0),
    cooldown_seconds REAL    CHECK (cooldown_seconds >= 0),
    allowed_models   TEXT    CHECK (allowed_models IS NULL OR json_valid(allowed_models)),   -- JSON list
    allowed_channels TEXT    CHECK (allowed_channels IS NULL OR json_valid(allowed_channels)), -- JSON list
    updated_at       REAL    NOT NULL,
    updated_by       INTEGER NOT NULL
) STRICT;

INSERT INTO guild_settings_v3 SELECT * FROM guild_settings;
DROP TABLE guild_settings;
ALTER TABLE guild_settings_v3 RENAME TO guild_settings;
