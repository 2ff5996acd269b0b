-- A member's own defaults for /imagine and /edit (model, size, count), used when a request leaves the option
-- out. Per member across servers: a default a server does not allow is ignored there (with a note), not an
-- error. NULL = no default of their own (the bot's). Read on every request through the primary key.
CREATE TABLE member_settings (
    user_id    INTEGER PRIMARY KEY,
    model      TEXT    CHECK (model IS NULL OR model <> ''),
    size       TEXT    CHECK (size IS NULL OR size <> ''),
    count      INTEGER CHECK (count IS NULL OR count >= 1),
    updated_at REAL    NOT NULL,
    CHECK (model IS NOT NULL OR size IS NOT NULL OR count IS NOT NULL)
) STRICT;
