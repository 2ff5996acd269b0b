-- Work that several processes share (one database, several fluxbot processes), and a fair queue: the same tables,
-- columns and indexes as SQLite migration 0007_shared_work.sql (read it for what each one is for).
--
-- 1. jobs.owner: the process working on a job right now; NULL when nobody is.
-- 2. workers: one row per live process, holding its lease.
-- 3. roles: work that one process at a time does for the whole bot (polling the provider), held under a lease.
-- 4. queue_turns: when each member of each server was last served by the dispatcher.
ALTER TABLE jobs ADD COLUMN owner text;

CREATE TABLE workers (
    owner      text PRIMARY KEY,
    expires_at double precision NOT NULL
);

CREATE TABLE roles (
    name       text PRIMARY KEY,
    owner      text NOT NULL,
    expires_at double precision NOT NULL
);

CREATE TABLE queue_turns (
    guild_id  bigint NOT NULL,
    user_id   bigint NOT NULL,
    served_at double precision NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE INDEX queue_turns_served ON queue_turns (served_at);

-- The queue as the dispatcher reads it (who asked, in order), from the index alone.
CREATE INDEX jobs_queue ON jobs (id, guild_id, user_id) WHERE status = 'queued';

-- Results waiting for a process to post them.
CREATE INDEX jobs_succeeded ON jobs (id, owner) WHERE status = 'succeeded';
