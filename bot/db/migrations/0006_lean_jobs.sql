-- Jobs that stay cheap as the table grows.
--
-- 1. An ended edit job no longer needs its source: a source kept inline (a data: URI, up to ~13 MB) is dropped
--    when the job ends, so the CHECK "an edit has a source" now holds for live jobs only. SQLite cannot change a
--    CHECK in place: the table is rebuilt and its rows copied. The old table is renamed first (which also points
--    its self-reference, parent_job_id, at the renamed table), so dropping it afterwards sets no parent_job_id
--    of the new table to NULL: PRAGMA foreign_keys = OFF would be a no-op inside the migration's transaction,
--    and a DROP TABLE runs the ON DELETE actions of the tables that reference it.
--    Inline sources of jobs that already ended, and inline result images of posted and failed jobs, are dropped
--    on the way.
-- 2. Indexes that read only the rows a hot path needs:
--    - a member's live jobs (max_concurrent) through a partial index holding live jobs only, instead of
--      jobs_member, which led to every job the member ever had;
--    - ended jobs by the time they ended, for pruning old ones in small batches;
--    - children of a job, so deleting a job finds the rows whose parent_job_id it sets to NULL;
--    - a server's usage of one day read from the index alone: without used and reserved in it, SQLite read
--      the server's usage rows of every day instead (its whole history) to sum one day's.
PRAGMA defer_foreign_keys = ON;

ALTER TABLE jobs RENAME TO jobs_v5;

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
                                   'failed', 'lost')),
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
    CHECK (kind = 'generate' OR source_image_url IS NOT NULL OR status IN ('posted', 'failed', 'lost')),
    CHECK (status NOT IN ('succeeded', 'posted') OR result IS NOT NULL),
    CHECK (status <> 'posted' OR posted_message_id IS NOT NULL),
    CHECK (status = 'posted' OR charged_images = 0),
    CHECK (status NOT IN ('failed', 'lost') OR error_code IS NOT NULL)
) STRICT;

INSERT INTO jobs (
    id, guild_id, channel_id, user_id, kind, prompt, model, size, count, seed, source_image_url, parent_job_id,
    interaction_application_id, interaction_token, interaction_created_at, provider, provider_task_id, status,
    error_code, error_message, created_at, submitted_at, finished_at, posted_at, result, posted_message_id,
    reserved_images, charged_images, usage_day, final_word_owed)
SELECT
    id, guild_id, channel_id, user_id, kind, prompt, model, size, count, seed,
    CASE WHEN status IN ('posted', 'failed', 'lost') AND source_image_url LIKE 'data:%' THEN NULL
         ELSE source_image_url END,
    parent_job_id, interaction_application_id, interaction_token, interaction_created_at, provider,
    provider_task_id, status, error_code, error_message, created_at, submitted_at, finished_at, posted_at,
    CASE WHEN status IN ('posted', 'failed') AND instr(result, '"data:') > 0
         THEN json_set(result, '$.images', json((
             SELECT json_group_array(image.value) FROM json_each(result, '$.images') AS image
             WHERE image.value NOT LIKE 'data:%')))
         ELSE result END,
    posted_message_id, reserved_images, charged_images, usage_day, final_word_owed
FROM jobs_v5;

DROP TABLE jobs_v5;

-- The indexes of migrations 0001, 0004 and 0005, except jobs_member (replaced by jobs_member_live).
-- The runner's lookups by status (queued in order, submitted ones to poll, in-flight after a restart).
CREATE INDEX jobs_status ON jobs (status, id);
-- A member's latest job in one server (cooldown): the last entry of the index, not a scan.
CREATE INDEX jobs_member_created ON jobs (guild_id, user_id, created_at);
-- Callbacks name a provider task: find its job without scanning the table.
CREATE INDEX jobs_provider_task ON jobs (provider_task_id) WHERE provider_task_id IS NOT NULL;
-- Ended jobs whose member has not been given the last word yet.
CREATE INDEX jobs_final_word_owed ON jobs (id) WHERE final_word_owed = 1;

-- A member's live jobs in one server (max_concurrent): only jobs that have not ended are in it.
CREATE INDEX jobs_member_live ON jobs (guild_id, user_id)
    WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded');
-- Ended jobs by the time they ended (every ended job has finished_at): what pruning reads, oldest first.
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE status IN ('posted', 'failed', 'lost');
-- The re-rolls and edits made from a job: deleting it sets their parent_job_id to NULL through this.
CREATE INDEX jobs_parent ON jobs (parent_job_id) WHERE parent_job_id IS NOT NULL;

-- A server's images of one day (guild_daily, /usage), summed from the index alone.
DROP INDEX usage_guild_day;
CREATE INDEX usage_guild_day ON usage (guild_id, day, used, reserved);

-- A job's images are reserved by the database as the job goes in (on its usage day), in the statement that
-- records it, and settled in the statement that ends it: every job row holds a reservation until it ends, and
-- each of these transitions is one statement (bot/db/jobs.py).
CREATE TRIGGER jobs_reserve AFTER INSERT ON jobs
BEGIN
    INSERT INTO usage (guild_id, user_id, day, reserved)
    VALUES (NEW.guild_id, NEW.user_id, NEW.usage_day, NEW.reserved_images)
    ON CONFLICT (guild_id, user_id, day) DO UPDATE SET reserved = reserved + excluded.reserved;
END;

-- The statement that ends a job settles its reservation: what it was charged (posted: what was delivered, at most
-- what was reserved; failed and lost: nothing) moves from reserved to used, the rest is released. A job ends
-- once (the transitions only leave live statuses), so it is settled once.
CREATE TRIGGER jobs_settle AFTER UPDATE OF status ON jobs
WHEN OLD.status IN ('queued', 'submitting', 'submitted', 'succeeded') AND NEW.status IN ('posted', 'failed', 'lost')
BEGIN
    SELECT RAISE(ABORT, 'no usage row holds this job''s reservation')
    WHERE NOT EXISTS (
        SELECT 1 FROM usage WHERE guild_id = NEW.guild_id AND user_id = NEW.user_id AND day = NEW.usage_day);
    UPDATE usage SET reserved = reserved - OLD.reserved_images, used = used + NEW.charged_images
    WHERE guild_id = NEW.guild_id AND user_id = NEW.user_id AND day = NEW.usage_day;
END;

-- The statement that ends a job also drops what only a live job needs: an edit's source given inline (a data:
-- URI, up to ~13 MB) and result images given inline (the posted message has the images; links are kept).
CREATE TRIGGER jobs_drop_inline AFTER UPDATE OF status ON jobs
WHEN NEW.status IN ('posted', 'failed', 'lost')
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
