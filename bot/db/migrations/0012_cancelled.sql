-- A member may cancel their job while it is queued or at the provider: a new ending, 'cancelled'.
--
-- Cancelled while queued, nothing was sent and nothing is charged. Cancelled once the submit may have been sent
-- (submitting, submitted), the provider bills it anyway: the job is charged what it reserved. So a cancelled job,
-- like a posted one, may have charged_images > 0; and it ends like the others (no live source needed, pruned,
-- settled, inline data dropped). SQLite cannot change a CHECK in place: the table is rebuilt as in 0006 (renamed
-- first, so that dropping the old one sets no parent_job_id to NULL), with every index and trigger made again.
PRAGMA defer_foreign_keys = ON;

ALTER TABLE jobs RENAME TO jobs_v11;

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
    source_image_url           TEXT,                         -- the image an edit starts from; inline ones
                                                             -- (data: URIs) are dropped when the job ends
    parent_job_id              INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    interaction_application_id INTEGER,                      -- to edit the "thinking..." response
    interaction_token          TEXT,                         -- valid for 15 minutes after creation
    interaction_created_at     REAL,
    provider                   TEXT    NOT NULL CHECK (provider IN ('acedata', 'openai', 'bfl')),
    provider_task_id           TEXT,                         -- opaque handle (BFL: the polling URL)
    status                     TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN (
                                   'queued', 'submitting', 'submitted', 'succeeded', 'posted',
                                   'failed', 'lost', 'cancelled')),
    error_code                 TEXT,
    error_message              TEXT,
    created_at                 REAL    NOT NULL,
    submitted_at               REAL,
    finished_at                REAL,
    posted_at                  REAL,
    result                     TEXT CHECK (result IS NULL OR json_valid(result)),  -- {"images": [...], "seed": n};
                                                             -- inline images are dropped once posted or failed
    posted_message_id          INTEGER,
    reserved_images            INTEGER NOT NULL CHECK (reserved_images >= 0),
    charged_images             INTEGER NOT NULL DEFAULT 0 CHECK (charged_images BETWEEN 0 AND reserved_images),
    usage_day                  TEXT    NOT NULL,             -- the usage row holding the reservation
    final_word_owed            INTEGER NOT NULL DEFAULT 0 CHECK (final_word_owed IN (0, 1)),
    owner                      TEXT,                         -- the process working on the job (0007)
    CHECK (kind = 'generate' OR source_image_url IS NOT NULL OR status IN ('posted', 'failed', 'lost', 'cancelled')),
    CHECK (status NOT IN ('succeeded', 'posted') OR result IS NOT NULL),
    CHECK (status <> 'posted' OR posted_message_id IS NOT NULL),
    CHECK (status IN ('posted', 'cancelled') OR charged_images = 0),
    CHECK (status NOT IN ('failed', 'lost') OR error_code IS NOT NULL)
) STRICT;

INSERT INTO jobs (
    id, guild_id, channel_id, user_id, kind, prompt, model, size, count, seed, source_image_url, parent_job_id,
    interaction_application_id, interaction_token, interaction_created_at, provider, provider_task_id, status,
    error_code, error_message, created_at, submitted_at, finished_at, posted_at, result, posted_message_id,
    reserved_images, charged_images, usage_day, final_word_owed, owner)
SELECT
    id, guild_id, channel_id, user_id, kind, prompt, model, size, count, seed, source_image_url, parent_job_id,
    interaction_application_id, interaction_token, interaction_created_at, provider, provider_task_id, status,
    error_code, error_message, created_at, submitted_at, finished_at, posted_at, result, posted_message_id,
    reserved_images, charged_images, usage_day, final_word_owed, owner
FROM jobs_v11;

DROP TABLE jobs_v11;

-- The indexes of 0006 and 0007; jobs_ended now holds cancelled jobs too.
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_member_created ON jobs (guild_id, user_id, created_at);
CREATE INDEX jobs_provider_task ON jobs (provider_task_id) WHERE provider_task_id IS NOT NULL;
CREATE INDEX jobs_final_word_owed ON jobs (id) WHERE final_word_owed = 1;
CREATE INDEX jobs_member_live ON jobs (guild_id, user_id)
    WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded');
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE status IN ('posted', 'failed', 'lost', 'cancelled');
CREATE INDEX jobs_parent ON jobs (parent_job_id) WHERE parent_job_id IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (id, guild_id, user_id) WHERE status = 'queued';
CREATE INDEX jobs_succeeded ON jobs (id, owner) WHERE status = 'succeeded';

CREATE TRIGGER jobs_reserve AFTER INSERT ON jobs
BEGIN
    INSERT INTO usage (guild_id, user_id, day, reserved)
    VALUES (NEW.guild_id, NEW.user_id, NEW.usage_day, NEW.reserved_images)
    ON CONFLICT (guild_id, user_id, day) DO UPDATE SET reserved = reserved + excluded.reserved;
END;

-- The statement that ends a job settles its reservation: what it was charged moves from reserved to used, the
-- rest is released. Posted: what was delivered, at most what was reserved; cancelled: nothing while queued,
-- everything reserved once the submit may have been sent (the provider bills it); failed and lost: nothing.
CREATE TRIGGER jobs_settle AFTER UPDATE OF status ON jobs
WHEN OLD.status IN ('queued', 'submitting', 'submitted', 'succeeded')
     AND NEW.status IN ('posted', 'failed', 'lost', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'no usage row holds this job''s reservation')
    WHERE NOT EXISTS (
        SELECT 1 FROM usage WHERE guild_id = NEW.guild_id AND user_id = NEW.user_id AND day = NEW.usage_day);
    UPDATE usage SET reserved = reserved - OLD.reserved_images, used = used + NEW.charged_images
    WHERE guild_id = NEW.guild_id AND user_id = NEW.user_id AND day = NEW.usage_day;
END;

CREATE TRIGGER jobs_drop_inline AFTER UPDATE OF status ON jobs
WHEN NEW.status IN ('posted', 'failed', 'lost', 'cancelled')
     AND (NEW.source_image_url LIKE 'data:%' OR instr(NEW.result, '"data:') > 0)
BEGIN
    UPDATE jobs SET
        source_image_url = CASE WHEN source_image_url LIKE 'data:%' THEN NULL ELSE source_image_url END,
        result = CASE WHEN instr(result, '"data:') > 0
            THEN json_set(result, '$.images', json((
                SELECT json_group_array(image.value) FROM json_each(result, '$.images') AS image
                WHERE image.value NOT LIKE 'data:%')))
            ELSE result END
    WHERE id = NEW.id;
END;
