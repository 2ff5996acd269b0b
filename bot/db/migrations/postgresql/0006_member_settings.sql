-- A member's own defaults for /imagine and /edit: the same table as SQLite migration 0011_member_settings.sql.
CREATE TABLE member_settings (
    user_id    bigint PRIMARY KEY,
    model      text    CHECK (model IS NULL OR model <> ''),
    size       text    CHECK (size IS NULL OR size <> ''),
    count      integer CHECK (count IS NULL OR count >= 1),
    updated_at double precision NOT NULL,
    CHECK (model IS NOT NULL OR size IS NOT NULL OR count IS NOT NULL)
);
