"""Work that several processes share through one database: leases, roles, claims, and the fair queue.

Any process may dispatch, poll and deliver any job, so work is *claimed*, never assumed:

- **Leases.** Every running process has a row in ``workers`` that it renews (:func:`renew_worker`); a lease
  not renewed in time has expired, and its process counts as gone. A process that stops cleanly retires its
  row at once (:func:`retire_worker`).
- **Owners.** A job being submitted, delivered or told its last word carries the process working on it in
  ``jobs.owner``. Another process takes it over only once that owner's lease has expired, and then with the
  rules of a restart: a job caught mid-submit is never sent again (:func:`orphaned_submits`), and a result is
  looked for in the channel before it is posted (:func:`claim_results`).
- **Roles.** Work done once for the whole bot (polling the provider) belongs to the process holding the role
  (:func:`hold_role`), a lease of its own that another process takes when it expires.
- **The queue.** :func:`claim_queued` starts queued jobs while fewer than the bot's concurrency are at the
  provider, counted across every process, in a fair order (:func:`fair_order`): servers take turns, the one
  served longest ago first, and within a server its members do, so one member's flood cannot hold everyone
  else back.

With SQLite there is one process, and every claim simply succeeds; the same code serves both backends.
Times are the store's clock (unix seconds): processes on several hosts need clocks kept in step (NTP).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping

from bot.db.jobs import job_from_row
from bot.db.models import Job
from bot.db.store import Reader, Store

__all__ = [
    "POLLER",
    "claim_final_words",
    "claim_queued",
    "claim_results",
    "fair_order",
    "forget_other_workers",
    "hold_role",
    "orphaned_submits",
    "prune_turns",
    "queue_order",
    "queue_position",
    "renew_worker",
    "retire_worker",
]

#: The role of the process that polls the provider for the whole bot.
POLLER = "poller"

#: A member never served sorts before every member served at some time; turns given while ordering one
#: queue sort after every real time.
_NEVER = (0, -math.inf)


# -- leases and roles -----------------------------------------------------------------------------------


async def renew_worker(store: Store, owner: str, lease: float) -> None:
    """Start or renew ``owner``'s lease for ``lease`` seconds from now."""
    await store.write_alone(
        """
        INSERT INTO workers (owner, expires_at) VALUES (:owner, :expires)
        ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at
        """,
        {"owner": owner, "expires": store.now() + lease},
    )


async def retire_worker(store: Store, owner: str) -> None:
    """End ``owner``'s lease and give up its roles at once (a clean stop): its work is free to take over now."""
    async with store.transaction() as tx:
        await tx.execute("DELETE FROM roles WHERE owner = :owner", {"owner": owner})
        await tx.execute("DELETE FROM workers WHERE owner = :owner", {"owner": owner})


async def forget_other_workers(store: Store, owner: str) -> int:
    """End every lease but ``owner``'s: for a process known to be the database's only one (SQLite, whose file
    lock keeps a second process out), so that a restart takes its predecessor's work over at once instead of
    waiting for the lease to expire. Returns how many leases ended."""
    async with store.transaction() as tx:
        await tx.execute("DELETE FROM roles WHERE owner <> :owner", {"owner": owner})
        return await tx.execute("DELETE FROM workers WHERE owner <> :owner", {"owner": owner})


async def hold_role(store: Store, name: str, owner: str, lease: float) -> bool:
    """Take or renew role ``name`` for ``owner`` for ``lease`` seconds; False while another process holds it.

    One statement: the row is taken only if it is free, already ``owner``'s, or its lease has expired.
    """
    now = store.now()
    rows = await store.write_alone(
        """
        INSERT INTO roles (name, owner, expires_at) VALUES (:name, :owner, :expires)
        ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
        WHERE roles.owner = excluded.owner OR roles.expires_at <= :now
        RETURNING owner
        """,
        {"name": name, "owner": owner, "expires": now + lease, "now": now},
    )
    return bool(rows)


# -- claims ---------------------------------------------------------------------------------------------


async def claim_queued(store: Store, owner: str, *, concurrency: int) -> list[Job]:
    """Move the next queued jobs, in fair order, to ``submitting`` under ``owner``, while fewer than
    ``concurrency`` jobs are at the provider (submitting or submitted, by any process); return them in order.

    One transaction under the queue's lock, so processes dispatching at the same moment neither take the same
    job nor together exceed ``concurrency``.
    """
    if await _free_slots(store, concurrency) <= 0:  # most rounds: read only, no write lock taken
        return []
    async with store.transaction() as tx:
        await tx.lock("queue")
        free = await _free_slots(tx, concurrency)
        if free <= 0:
            return []
        queued = await _queued(tx)
        if not queued:
            return []
        turns = await _turns(tx, store, {guild for _, guild, _ in queued})
        picks = list(itertools.islice(fair_order(queued, turns), free))
        rows = await tx.fetch_all(
            store.pick(
                sqlite="""
                    UPDATE jobs SET status = 'submitting', owner = :owner
                    WHERE status = 'queued' AND id IN (SELECT value FROM json_each(:ids))
                    RETURNING *
                    """,
                postgresql="""
                    UPDATE jobs SET status = 'submitting', owner = :owner
                    WHERE status = 'queued' AND id = ANY(:ids::bigint[])
                    RETURNING *
                    """,
            ),
            {"owner": owner, "ids": _id_list(store, picks)},
        )
        started = {int(row["id"]): job_from_row(row) for row in rows}
        last = await tx.fetch_one("SELECT max(served_at) FROM queue_turns")
        served = max(store.now(), float(last[0]) if last is not None and last[0] is not None else 0.0)
        # Each member served is stamped with its last turn in this batch, in the order the turns were taken.
        last_turn = {
            (started[job_id].guild_id, started[job_id].user_id): step
            for step, job_id in enumerate(picks, start=1)
            if job_id in started
        }
        for (guild, user), step in last_turn.items():
            await tx.execute(
                """
                INSERT INTO queue_turns (guild_id, user_id, served_at) VALUES (?, ?, ?)
                ON CONFLICT (guild_id, user_id) DO UPDATE SET served_at = excluded.served_at
                """,
                (guild, user, served + step * 1e-3),
            )
    return [started[job_id] for job_id in picks if job_id in started]


async def queue_order(store: Store) -> list[int]:
    """The ids of queued jobs in the order the dispatcher will start them (see :func:`fair_order`)."""
    queued = await _queued(store)
    if not queued:
        return []
    return list(fair_order(queued, await _turns(store, store, {guild for _, guild, _ in queued})))


async def queue_position(store: Store, job_id: int) -> int | None:
    """The job's 1-based place in :func:`queue_order`, or None if it is not queued."""
    order = await queue_order(store)
    return order.index(job_id) + 1 if job_id in order else None


async def orphaned_submits(store: Store, owner: str, *, own: bool = False) -> list[Job]:
    """Jobs caught ``submitting`` by a process that is gone (with ``own``, also by ``owner`` itself, whose
    recording of a submit failed): whether the provider received them is unknown, so they are never sent again.

    With ``own`` the caller skips its own submits under way; marking a job lost is guarded by its status, so
    two processes finding the same orphan cannot both end it.
    """
    rows = await store.fetch_all(
        """
        SELECT * FROM jobs AS j
        WHERE status = 'submitting'
          AND (j.owner IS NULL OR (:own = 1 AND j.owner = :owner)
               OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.owner = j.owner AND w.expires_at > :now))
        ORDER BY id
        """,
        {"owner": owner, "own": int(own), "now": store.now()},
    )
    return [job_from_row(row) for row in rows]


async def claim_results(store: Store, owner: str, *, limit: int = 100) -> list[Job]:
    """Succeeded jobs for ``owner`` to post: its own, and those of processes that are gone, taken over.

    A taken-over result may have been posted already by the process that is gone, so the caller looks for
    it in the channel first. The caller skips its own deliveries under way.
    """
    rows = await store.write_alone(
        store.pick(
            sqlite="""
                UPDATE jobs SET owner = :owner WHERE id IN (
                    SELECT id FROM jobs AS j
                    WHERE status = 'succeeded' AND (j.owner IS NULL OR j.owner = :owner
                           OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.owner = j.owner AND w.expires_at > :now))
                    ORDER BY id LIMIT :limit)
                RETURNING *
                """,
            postgresql="""
                UPDATE jobs SET owner = :owner WHERE id IN (
                    SELECT id FROM jobs AS j
                    WHERE status = 'succeeded' AND (j.owner IS NULL OR j.owner = :owner
                           OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.owner = j.owner AND w.expires_at > :now))
                    ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
                RETURNING *
                """,
        ),
        {"owner": owner, "now": store.now(), "limit": limit},
    )
    return sorted((job_from_row(row) for row in rows), key=lambda job: job.id)


async def claim_final_words(store: Store, owner: str) -> list[Job]:
    """Ended jobs whose member is still owed the last word, for ``owner`` to say: its own, and those of
    processes that are gone, taken over; oldest first. The caller skips the words it is saying right now."""
    rows = await store.write_alone(
        store.pick(
            sqlite="""
                UPDATE jobs SET owner = :owner WHERE id IN (
                    SELECT id FROM jobs AS j WHERE final_word_owed = 1 AND (j.owner IS NULL OR j.owner = :owner
                           OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.owner = j.owner AND w.expires_at > :now)))
                RETURNING *
                """,
            postgresql="""
                UPDATE jobs SET owner = :owner WHERE id IN (
                    SELECT id FROM jobs AS j WHERE final_word_owed = 1 AND (j.owner IS NULL OR j.owner = :owner
                           OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.owner = j.owner AND w.expires_at > :now))
                    FOR UPDATE SKIP LOCKED)
                RETURNING *
                """,
        ),
        {"owner": owner, "now": store.now()},
    )
    return sorted((job_from_row(row) for row in rows), key=lambda job: job.id)


async def prune_turns(store: Store, *, before: float) -> int:
    """Forget turns older than ``before``: a member served that long ago ranks like one never served."""
    rows = await store.write_alone("DELETE FROM queue_turns WHERE served_at < :before RETURNING 1", {"before": before})
    return len(rows)


# -- the fair order -------------------------------------------------------------------------------------


def fair_order(queued: Iterable[tuple[int, int, int]], served: Mapping[tuple[int, int], float]) -> Iterator[int]:
    """Queued jobs ``(job id, guild id, user id)`` in the order they are to start: round-robin across servers,
    and within a server across its members; each member's own jobs in the order they came.

    At each turn the server served longest ago goes first (``served`` maps ``(guild, user)`` to when that member
    was last served; a server was last served when any of its members was), and within it the member served
    longest ago. Those never served go first of all; ties go to the oldest job. Taking turns by time served,
    rather than by position in the queue, is what keeps a member who queued forty jobs an hour ago from
    winning every tie against one who just asked.
    """
    waiting: dict[tuple[int, int], deque[int]] = {}
    for job_id, guild, user in sorted(queued):
        waiting.setdefault((guild, user), deque()).append(job_id)
    guild_served: dict[int, tuple[float, float]] = {}
    for (guild, _), at in served.items():
        guild_served[guild] = max(guild_served.get(guild, _NEVER), (0, at))
    members: dict[int, list[tuple[tuple[float, float], int, int]]] = {}
    for (guild, user), jobs in waiting.items():
        members.setdefault(guild, []).append((_when(served.get((guild, user))), jobs[0], user))
    guilds: list[tuple[tuple[float, float], int, int]] = []
    for guild, heap in members.items():
        heapq.heapify(heap)
        guilds.append((guild_served.get(guild, _NEVER), min(first for _, first, _ in heap), guild))
    heapq.heapify(guilds)
    for turn in itertools.count():
        if not guilds:
            return
        _, _, guild = heapq.heappop(guilds)
        heap = members[guild]
        _, _, user = heapq.heappop(heap)
        jobs = waiting[(guild, user)]
        yield jobs.popleft()
        now = (1, turn)
        if jobs:
            heapq.heappush(heap, (now, jobs[0], user))
        if heap:
            heapq.heappush(guilds, (now, heap[0][1], guild))


async def _free_slots(reader: Reader, concurrency: int) -> int:
    """How many more jobs may go to the provider: ``concurrency`` less those there now, by every process;
    0 when nothing is queued."""
    row = await reader.fetch_one(
        """
        SELECT (SELECT count(*) FROM jobs WHERE status IN ('submitting', 'submitted')),
               EXISTS (SELECT 1 FROM jobs WHERE status = 'queued')
        """
    )
    assert row is not None
    return max(concurrency - int(row[0]), 0) if row[1] else 0


def _when(at: float | None) -> tuple[float, float]:
    return _NEVER if at is None else (0, at)


async def _queued(reader: Reader) -> list[tuple[int, int, int]]:
    rows = await reader.fetch_all("SELECT id, guild_id, user_id FROM jobs WHERE status = 'queued' ORDER BY id")
    return [(int(row[0]), int(row[1]), int(row[2])) for row in rows]


async def _turns(reader: Reader, store: Store, guilds: set[int]) -> dict[tuple[int, int], float]:
    """When each member of ``guilds`` was last served; ``reader`` is the store or a transaction of it."""
    rows = await reader.fetch_all(
        store.pick(
            sqlite="""
                SELECT guild_id, user_id, served_at FROM queue_turns
                WHERE guild_id IN (SELECT value FROM json_each(:guilds))
                """,
            postgresql="SELECT guild_id, user_id, served_at FROM queue_turns WHERE guild_id = ANY(:guilds::bigint[])",
        ),
        {"guilds": _id_list(store, guilds)},
    )
    return {(int(row[0]), int(row[1])): float(row[2]) for row in rows}


def _id_list(store: Store, ids: Iterable[int]) -> object:
    """``ids`` as one parameter: a JSON list for SQLite's ``json_each``, an array for PostgreSQL's ``ANY``."""
    listed = sorted(int(each) for each in ids)
    return json.dumps(listed) if store.dialect == "sqlite" else listed
