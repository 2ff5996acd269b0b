"""Work shared by several processes (bot/db/work.py), on both backends: leases, roles, claims, the fair queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import db
from bot.db import Job, JobStatus, QuotaLimits, Store, work
from tests.conftest import STORE_BACKENDS, open_backend, queued_jobs

LEASE = 10.0
NO_LIMITS = QuotaLimits(user_daily=None, guild_daily=None, max_concurrent=None, cooldown=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def queue(store: Store, guild: int, user: int, n: int = 1) -> list[Job]:
    return await queued_jobs(store, guild, 7, user, n)


# -- the fair order, as a function --------------------------------------------------------------------------


def test_a_flood_does_not_hold_back_members_who_asked_once() -> None:
    flood = [(job_id, 1, 100) for job_id in range(1, 41)]
    others = [(41 + n, 1, 200 + n) for n in range(5)]
    order = list(work.fair_order(flood + others, {}))
    # Nobody was served yet: the flooder's oldest job, then each member once, then the flood.
    assert order[:6] == [1, 41, 42, 43, 44, 45]
    assert order[6:] == list(range(2, 41))


def test_the_member_served_longest_ago_goes_first_even_against_older_jobs() -> None:
    # The flooder's jobs are older, but the flooder was served a moment ago; the newcomer never was.
    order = list(work.fair_order([(5, 1, 100), (6, 1, 100), (9, 1, 200)], {(1, 100): 1000.0}))
    assert order == [9, 5, 6]


def test_servers_take_turns_before_members_do() -> None:
    # Server 1 has three members waiting; server 2 one member with three jobs.
    queued = [(1, 1, 10), (2, 1, 11), (3, 1, 12), (4, 2, 20), (5, 2, 20), (6, 2, 20)]
    assert list(work.fair_order(queued, {})) == [1, 4, 2, 5, 3, 6]
    # Server 1 was served more recently than server 2: server 2 first.
    assert list(work.fair_order(queued, {(1, 10): 50.0, (2, 99): 40.0})) == [4, 2, 5, 3, 6, 1]


@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 4)),
        max_size=40,
    ),
    st.dictionaries(st.tuples(st.integers(1, 3), st.integers(1, 4)), st.floats(0, 1e6), max_size=6),
)
def test_the_fair_order_is_a_permutation_keeping_each_members_own_order(
    askers: list[tuple[int, int]], served: dict[tuple[int, int], float]
) -> None:
    queued = [(job_id, guild, user) for job_id, (guild, user) in enumerate(askers, start=1)]
    order = list(work.fair_order(queued, served))
    assert sorted(order) == [job_id for job_id, _, _ in queued]
    member_of = {job_id: (guild, user) for job_id, guild, user in queued}
    for member in set(member_of.values()):
        own = [job_id for job_id in order if member_of[job_id] == member]
        assert own == sorted(own)
    # Round-robin: before a member's k-th job starts, every member of its server with k jobs waiting had k-1 start.
    started: dict[tuple[int, int], int] = {}
    waiting = {member: sum(1 for m in member_of.values() if m == member) for member in set(member_of.values())}
    for job_id in order:
        guild, user = member_of[job_id]
        mine = started.get((guild, user), 0)
        for (other_guild, other), count in waiting.items():
            if other_guild == guild and count > mine:
                assert started.get((other_guild, other), 0) >= mine
        started[(guild, user)] = mine + 1


# -- claims on a real database ------------------------------------------------------------------------------


async def test_claims_start_jobs_in_fair_order_and_never_exceed_the_concurrency(store: Store) -> None:
    await work.renew_worker(store, "a", LEASE)
    flood = await queue(store, 1, 100, 6)
    others = [(await queue(store, 1, 200 + n))[0] for n in range(3)]
    first = await work.claim_queued(store, "a", concurrency=2)
    assert [job.id for job in first] == [flood[0].id, others[0].id]
    assert all(job.status is JobStatus.SUBMITTING for job in first)
    assert await work.claim_queued(store, "a", concurrency=2) == []  # both slots taken
    assert await db.mark_failed(store, first[0].id, "x", "y")
    # One slot free: the members never served come before the flooder's next job.
    assert [job.id for job in await work.claim_queued(store, "a", concurrency=2)] == [others[1].id]
    assert await db.mark_failed(store, first[1].id, "x", "y")
    assert [job.id for job in await work.claim_queued(store, "a", concurrency=2)] == [others[2].id]
    order = await work.queue_order(store)
    assert order == [job.id for job in flood[1:]]


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_processes_claiming_at_once_take_each_job_once_within_the_concurrency(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock, backend: str
) -> None:
    path = tmp_path / "shared.db"
    async with (
        open_backend(request, backend, path, clock) as first,
        open_backend(request, backend, path, clock) as second,
    ):
        await queue(first, 1, 100, 30)
        processes = [("a", first), ("b", second)]
        for owner, each in processes:
            await work.renew_worker(each, owner, LEASE)
        claims = await asyncio.gather(*(work.claim_queued(each, owner, concurrency=5) for owner, each in processes * 4))
        claimed = [job.id for batch in claims for job in batch]
        assert len(claimed) == len(set(claimed)) == 5
        assert await db.count_in(second, JobStatus.SUBMITTING) == 5


async def test_a_role_has_one_holder_until_its_lease_expires(store: Store, clock: Clock) -> None:
    assert await work.hold_role(store, work.POLLER, "a", LEASE)
    assert not await work.hold_role(store, work.POLLER, "b", LEASE)
    clock.now += LEASE / 2
    assert await work.hold_role(store, work.POLLER, "a", LEASE)  # renewed
    clock.now += LEASE - 1
    assert not await work.hold_role(store, work.POLLER, "b", LEASE)
    clock.now += 2  # "a" stopped renewing
    assert await work.hold_role(store, work.POLLER, "b", LEASE)
    assert not await work.hold_role(store, work.POLLER, "a", LEASE)
    await work.retire_worker(store, "b")  # a clean stop gives the role up at once
    assert await work.hold_role(store, work.POLLER, "a", LEASE)


async def test_work_of_a_process_that_is_gone_is_taken_over_only_after_its_lease(store: Store, clock: Clock) -> None:
    await work.renew_worker(store, "a", LEASE)
    await work.renew_worker(store, "b", LEASE)
    submitting, delivering, ending = await queue(store, 1, 100, 3)
    assert len(await work.claim_queued(store, "a", concurrency=3)) == 3
    assert await db.mark_submitted(store, delivering.id, "task-2")
    assert await db.mark_succeeded(store, delivering.id, ["https://cdn.example/2.png"], None)
    assert await db.mark_failed(store, ending.id, "x", "it failed")

    # "a" is alive: "b" takes nothing of it.
    assert await work.orphaned_submits(store, "b") == []
    assert await work.claim_results(store, "b") == []
    assert await work.claim_final_words(store, "b") == []
    # Its own work "a" may pick up again (a delivery that met a busy database, say).
    assert [job.id for job in await work.claim_results(store, "a")] == [delivering.id]
    assert [job.id for job in await work.orphaned_submits(store, "a", own=True)] == [submitting.id]

    clock.now += LEASE + 1  # "a" stopped renewing; "b" did
    await work.renew_worker(store, "b", LEASE)
    assert [job.id for job in await work.orphaned_submits(store, "b")] == [submitting.id]
    assert [job.id for job in await work.claim_results(store, "b")] == [delivering.id]
    assert [job.id for job in await work.claim_final_words(store, "b")] == [ending.id]
    # Taken over: now "b"'s, so a returning "a" does not take them back while "b" lives.
    await work.renew_worker(store, "a", LEASE)
    assert await work.claim_results(store, "a") == []
    assert await work.claim_final_words(store, "a") == []


async def test_a_sole_process_forgets_every_earlier_lease(store: Store) -> None:
    await work.renew_worker(store, "old", LEASE)
    assert await work.hold_role(store, work.POLLER, "old", LEASE)
    assert await work.forget_other_workers(store, "new") == 1
    assert await work.hold_role(store, work.POLLER, "new", LEASE)


async def test_old_turns_are_forgotten(store: Store, clock: Clock) -> None:
    await work.renew_worker(store, "a", LEASE)
    await queue(store, 1, 100, 2)
    await work.claim_queued(store, "a", concurrency=1)
    assert await work.prune_turns(store, before=clock.now - 60) == 0
    assert await work.prune_turns(store, before=clock.now + 60) == 1


async def test_a_member_served_twice_in_one_claim_is_stamped_with_their_later_turn(store: Store) -> None:
    await work.renew_worker(store, "a", LEASE)
    first = await queue(store, 1, 100, 3)  # member 100 asks three times, member 200 once: 100, 200, 100
    other = await queue(store, 1, 200)
    claimed = await work.claim_queued(store, "a", concurrency=3)
    assert [job.id for job in claimed] == [first[0].id, other[0].id, first[1].id]
    turns = {
        (int(row[0]), int(row[1])): float(row[2])
        for row in await store.fetch_all("SELECT guild_id, user_id, served_at FROM queue_turns")
    }
    assert turns[(1, 100)] > turns[(1, 200)]  # 100's last turn came after 200's
