-- Work that several processes share (one database, several fluxbot processes), and a fair queue.
--
-- 1. jobs.owner: the process working on a job right now - submitting it, delivering its result, or giving its
--    member the last word. NULL when nobody is (queued, or left over from an earlier version).
-- 2. workers: one row per live process, holding its lease. A process renews its lease while it runs; a job whose
--    owner has no live lease is free to be taken over by another process.
-- 3. roles: work that one process at a time does for the whole bot (polling the provider), held under a lease.
-- 4. queue_turns: when each member of each server was last served by the dispatcher, so that the queue takes
--    servers and members in turns, the one served longest ago first.
ALTER TABLE jobs ADD COLUMN owner TEXT;

CREATE TABLE workers (
    owner      TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE roles (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE queue_turns (
    guild_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    served_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
) WITHOUT ROWID;

CREATE INDEX queue_turns_served ON queue_turns (served_at);

-- The queue as the dispatcher reads it (who asked, in order), from the index alone.
CREATE INDEX jobs_queue ON jobs (id, guild_id, user_id) WHERE status = 'queued';

-- Results waiting for a process to post them.
CREATE INDEX jobs_succeeded ON jobs (id, owner) WHERE status = 'succeeded';
