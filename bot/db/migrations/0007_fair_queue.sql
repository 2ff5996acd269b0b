-- The queue is fair: one member's flood, or one server's, cannot hold everyone else back.
--
-- queue_turns remembers when each member was last served (a job of theirs left the queue for the provider),
-- as a counter that grows by one per job served. One row per member and server, whatever their history.
CREATE TABLE queue_turns (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    turn     INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX queue_turns_turn ON queue_turns (turn);
CREATE INDEX queue_turns_guild ON queue_turns (guild_id, turn);

CREATE TRIGGER jobs_take_turn AFTER UPDATE OF status ON jobs
WHEN OLD.status = 'queued' AND NEW.status = 'submitting'
BEGIN
    INSERT INTO queue_turns (guild_id, user_id, turn)
    VALUES (NEW.guild_id, NEW.user_id, (SELECT coalesce(max(turn), 0) + 1 FROM queue_turns))
    ON CONFLICT (guild_id, user_id) DO UPDATE SET turn = excluded.turn;
END;

-- Queued jobs in the order they are served, round-robin across servers and, within a server, across its
-- members: every server's first job comes before any server's second, the server served longest ago (or
-- never) first; within a server likewise for its members; a member's own jobs oldest first. `place` is a
-- job's 1-based place. Only queued jobs are read (through jobs_status), whatever the history behind them.
CREATE VIEW queue AS
WITH queued AS (
    SELECT job.id, job.guild_id,
           row_number() OVER (PARTITION BY job.guild_id, job.user_id ORDER BY job.id) AS member_round,
           (SELECT turn FROM queue_turns AS t
            WHERE t.guild_id = job.guild_id AND t.user_id = job.user_id) AS member_served,
           (SELECT max(turn) FROM queue_turns AS t WHERE t.guild_id = job.guild_id) AS server_served
    FROM jobs AS job WHERE job.status = 'queued'
), in_server AS (
    SELECT id, server_served,
           row_number() OVER (
               PARTITION BY guild_id ORDER BY member_round, coalesce(member_served, 0), id) AS server_round
    FROM queued
)
SELECT id, row_number() OVER (ORDER BY server_round, coalesce(server_served, 0), id) AS place FROM in_server;
