-- fluxbot schema, version 1.
-- Applied by bot/db/store.py inside one transaction together with `PRAGMA user_version = 1`.
-- Never edit a released migration: add 0002_<name>.sql instead.
-- Times are REAL unix seconds (UTC); usage days are 'YYYY-MM-DD' in UTC; Discord ids are INTEGER.

-- Every image job, from the moment it is accepted until its images are posted (or it fails).
-- Lifecycle (enforced by bot/db/jobs.py): queued -> submitting -> submitted -> succeeded -> posted;
-- any non-terminal -> failed; submitting -> lost.
CREATE TABLE jobs (
    id                         INTEGER PRIMARY KEY,
    guild_id                   INTEGER NOT NULL,             -- 0 for direct messages
    channel_id                 INTEGER NOT NULL,
    user_id                    INTEGER NOT NULL,
    kind                       TEXT    NOT NULL CHECK (kind IN ('generate', 'edit')),
    prompt                     TEXT    NOT NULL,
    model                      TEXT    NOT NULL,
    size                       TEXT    NOT NULL,
    count                      INTEGER NOT NULL CHECK (count >= 1),
    seed                       INTEGER,
    source_image_url           TEXT,                         -- the image an edit starts from
    parent_job_id              INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    interaction_application_id INTEGER,                      -- to edit the "thinking..." response
    interaction_token          TEXT,                         -- valid for 15 minutes after creation
    interaction_created_at     REAL,
    provider                   TEXT    NOT NULL CHECK (provider IN ('acedata', 'openai', 'bfl')),
    provider_task_id           TEXT,                         -- opaque handle (BFL: the polling URL)
    status                     TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN (
                                   'queued', 'submitting', 'submitted', 'succeeded', 'posted',
                                   'failed', 'lost')),
    error_code                 TEXT,
    error_message              TEXT,
    created_at                 REAL    NOT NULL,
    submitted_at               REAL,
    finished_at                REAL,
    posted_at                  REAL,
    result                     TEXT CHECK (result IS NULL OR json_valid(result)),  -- {"images": [...], "seed": n}
    posted_message_id          INTEGER,
    reserved_images            INTEGER NOT NULL CHECK (reserved_images >= 0),
    charged_images             INTEGER NOT NULL DEFAULT 0 CHECK (charged_images BETWEEN 0 AND reserved_images),
    usage_day                  TEXT    NOT NULL,             -- the usage row holding the reservation
    CHECK (kind = 'generate' OR source_image_url IS NOT NULL),
    CHECK (status NOT IN ('succeeded', 'posted') OR result IS NOT NULL),
    CHECK (status <> 'posted' OR posted_message_id IS NOT NULL),
    CHECK (status = 'posted' OR charged_images = 0),
    CHECK (status NOT IN ('failed', 'lost') OR error_code IS NOT NULL)
) STRICT;

-- The runner's lookups by status (queued in order, in-flight after a restart).
CREATE INDEX jobs_status ON jobs (status, id);
-- A member's active jobs (max_concurrent) and latest job (cooldown) in one server.
CREATE INDEX jobs_member ON jobs (guild_id, user_id, status);
CREATE INDEX jobs_member_created ON jobs (guild_id, user_id, created_at);

-- Images per member, server and UTC day: `reserved` by jobs still running, `used` by posted jobs.
CREATE TABLE usage (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    day      TEXT    NOT NULL,
    reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    used     INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (guild_id, user_id, day)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_guild_day ON usage (guild_id, day);

-- Per-server overrides. NULL means "use the default from the bot's settings".
CREATE TABLE guild_settings (
    guild_id         INTEGER PRIMARY KEY,
    user_daily       INTEGER CHECK (user_daily >= 0),
    guild_daily      INTEGER CHECK (guild_daily >= 0),
    max_count        INTEGER CHECK (max_count >= 1),
    max_concurrent   INTEGER CHECK (max_concurrent >= 1),
    cooldown_seconds REAL    CHECK (cooldown_seconds >= 0),
    allowed_models   TEXT    CHECK (allowed_models IS NULL OR json_valid(allowed_models)),   -- JSON list
    allowed_channels TEXT    CHECK (allowed_channels IS NULL OR json_valid(allowed_channels)), -- JSON list
    updated_at       REAL    NOT NULL,
    updated_by       INTEGER NOT NULL
) STRICT;

-- Terms refused in prompts, stored trimmed and case-folded.
CREATE TABLE blocklist (
    guild_id INTEGER NOT NULL,
    term     TEXT    NOT NULL CHECK (term <> '' AND term = trim(term)),
    added_by INTEGER NOT NULL,
    added_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, term)
) STRICT, WITHOUT ROWID;

-- Audit trail of every change to guild_settings and the blocklist. Values are JSON text, NULL = unset.
CREATE TABLE limit_changes (
    id        INTEGER PRIMARY KEY,
    guild_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,   -- who made the change
    field     TEXT    NOT NULL,
    old_value TEXT,
    new_value TEXT,
    at        REAL    NOT NULL
) STRICT;

CREATE INDEX limit_changes_guild ON limit_changes (guild_id, id);
