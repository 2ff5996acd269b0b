"""Several fluxbot processes on one PostgreSQL database: the promises of one process hold for the whole bot.

Three real ``fluxbot`` processes (``SHARD_COUNT=3``, one shard each) share a real PostgreSQL server, the loopback
Discord and the Flux emulator. Six servers, two on each shard, ten members each; every member asks five times
against tight quotas, then one process is SIGKILLed mid-run and never restarted. Its shard goes silent, but the
jobs it accepted are the whole bot's: the other two take its work over once its lease expires.
"""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import asyncpg
import pytest

from tests.fakediscord import DiscordEmulator, Interaction
from tests.fakediscord.fixtures import World, add_world
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment, is_result, status_line
from tests.fluxbot_process import fluxbot_processes, logs_of, wait_all_online
from tests.fluxemu import FluxEmulator

PROCESSES = 3
SERVERS_PER_SHARD = 2
MEMBERS_PER_SERVER = 10
ASKS_PER_MEMBER = 5
USER_DAILY = 4
GUILD_DAILY = 36  # ten members could take 40: the server's limit binds too
CONCURRENCY = 6
#: Seconds a process's claims last: how soon the others take over the killed one's work.
LEASE = 2


def sharded_servers(emu: DiscordEmulator) -> list[World]:
    emu.shard_count = PROCESSES
    emu.max_concurrency = 16  # no 5 s pause between identifies
    worlds = []
    for shard in range(PROCESSES):
        for n in range(SERVERS_PER_SHARD):
            worlds.append(add_world(emu, f"server {n} on shard {shard}", shard=shard))
    return worlds


def submits_per_prompt(flux: FluxEmulator) -> collections.Counter[str]:
    return collections.Counter(r.json["prompt"] for r in flux.requests_to("POST", "/flux/images") if r.json)


def most_tasks_at_once(flux: FluxEmulator) -> int:
    """The most tasks the provider was generating at one moment (from creation to when it was done)."""
    edges = sorted(
        [(task.created_at, 1) for task in flux.tasks.values()] + [(task.due_at, -1) for task in flux.tasks.values()]
    )
    most = running = 0
    for _, step in edges:  # at equal times an end sorts before a start: a slot freed and taken is not two
        running += step
        most = max(most, running)
    return most


@pytest.mark.timeout(300)
async def test_three_processes_one_killed_every_job_posted_once_or_failed_with_quotas_and_concurrency_exact(
    fluxbot: FluxbotHarness, postgresql_url: str, tmp_path: Path
) -> None:
    emu, flux = fluxbot.discord, fluxbot.flux
    worlds = sharded_servers(emu)
    flux.task_delay = 0.25  # each job keeps a provider slot for a while: the concurrency is what decides
    envs = [
        fluxbot_environment(
            emu,
            flux,
            tmp_path / "unused.db",
            DATABASE_URL=postgresql_url,
            SHARD_COUNT=str(PROCESSES),
            SHARD_IDS=str(shard),
            DEFAULT_USER_DAILY=str(USER_DAILY),
            DEFAULT_GUILD_DAILY=str(GUILD_DAILY),
            FLUX_MAX_CONCURRENCY=str(CONCURRENCY),
            FLUX_POLL_INTERVAL="0.1",
            WORK_LEASE_SECONDS=str(LEASE),
        )
        for shard in range(PROCESSES)
    ]
    asks: dict[str, tuple[World, Interaction]] = {}
    async with fluxbot_processes(envs, tmp_path) as bots:
        await wait_all_online(bots, emu)

        async def member_asks(world: World, index: int) -> None:
            member = world.guild.add_member(f"member {index}")
            for ask in range(ASKS_PER_MEMBER):
                prompt = f"{world.guild.name}, member {index}, ask {ask}"
                inter = await member.slash(world.channel, "imagine", prompt=prompt)
                asks[prompt] = (world, inter)
                await inter.wait_acknowledged(timeout=5)
                await emu.wait_until(lambda inter=inter: status_line(inter), 30, f"an answer to {prompt!r}")

        await asyncio.gather(*(member_asks(world, index) for world in worlds for index in range(MEMBERS_PER_SERVER)))
        assert len(asks) == PROCESSES * SERVERS_PER_SHARD * MEMBERS_PER_SERVER * ASKS_PER_MEMBER

        # Mid-run: some results are out, most are not. The process polling for the whole bot dies and is
        # not restarted: another must take the role over, or no result would be posted again.
        await emu.wait_until(lambda: len(flux.tasks) >= 60, 60, "60 jobs at the provider")
        assert len(flux.tasks) < GUILD_DAILY * len(worlds), "all jobs were sent before the kill: not mid-run"
        conn = await asyncpg.connect(postgresql_url)
        try:
            poller = await conn.fetchval("SELECT owner FROM roles WHERE name = 'poller'")
            (victim,) = [bot for bot in bots if f":{bot.pid}:" in poller]
            survivors = [bot for bot in bots if bot is not victim]
            assert await victim.kill() == -signal.SIGKILL

            async def settled() -> bool:
                left = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE status NOT IN ('posted', 'failed', 'lost') OR final_word_owed = 1"
                )
                return int(left) == 0

            try:
                async with asyncio.timeout(200):
                    while not await settled():
                        await asyncio.sleep(0.2)
            except TimeoutError:
                stuck = await conn.fetch(
                    "SELECT id, status, owner, final_word_owed FROM jobs"
                    " WHERE status NOT IN ('posted', 'failed', 'lost') OR final_word_owed = 1"
                )
                workers = await conn.fetch("SELECT * FROM workers")
                raise AssertionError(f"jobs not settled: {stuck}\nworkers: {workers}\n{logs_of(bots)}") from None
            jobs = await conn.fetch("SELECT * FROM jobs ORDER BY id")
            usage = await conn.fetch("SELECT * FROM usage")
        finally:
            await conn.close()
        survivors_logs = logs_of(survivors)
        errors = [line for bot in survivors for line in bot.log_lines(" ERROR ")]
        assert any(bot.log_lines("polls the image service for the whole bot") for bot in survivors), survivors_logs

    by_prompt = {job["prompt"]: job for job in jobs}
    assert len(by_prompt) == len(jobs), "one job per accepted request"

    # Every request got an answer: a job, or a refusal naming the limit.
    for prompt, (_, inter) in asks.items():
        if prompt not in by_prompt:
            assert "limit" in status_line(inter), (prompt, status_line(inter))

    # Quotas exact across processes: no member past 4, every server at exactly 36, and usage matching what
    # was delivered (nothing reserved is left, nothing failed is charged).
    per_member = collections.Counter((job["guild_id"], job["user_id"]) for job in jobs)
    per_server = collections.Counter(job["guild_id"] for job in jobs)
    assert max(per_member.values()) <= USER_DAILY
    assert set(per_server.values()) == {GUILD_DAILY}, per_server
    charged = collections.Counter()
    for job in jobs:
        if job["status"] == "posted":
            charged[(job["guild_id"], job["user_id"])] += job["count"]
    assert {(row["guild_id"], row["user_id"]): row["used"] for row in usage if row["used"]} == dict(charged)
    assert all(row["reserved"] == 0 for row in usage)

    # Every accepted job posted exactly once, or failed with a message to its member; never sent twice.
    submits = submits_per_prompt(flux)
    assert max(submits.values()) == 1, [p for p, n in submits.items() if n > 1]
    statuses = collections.Counter(job["status"] for job in jobs)
    for job in jobs:
        world, inter = asks[job["prompt"]]
        posts = [
            m
            for m in world.channel.messages.values()
            if is_result(m) and not m.deleted and m.embeds and m.embeds[0]["footer"]["text"] == f"Job #{job['id']}"
        ]
        if job["status"] == "posted":
            assert len(posts) == 1, (job["id"], job["prompt"], len(posts))
            assert posts[0].id == job["posted_message_id"]
        else:
            assert posts == [], (job["id"], job["status"])
            assert job["error_message"] and job["error_message"] in status_line(inter), (job["id"], status_line(inter))
    assert statuses["posted"] >= len(jobs) - CONCURRENCY, statuses  # at most the killed process's submits are lost

    # Never more tasks at the provider than FLUX_MAX_CONCURRENCY, across the three processes.
    assert most_tasks_at_once(flux) <= CONCURRENCY
    assert errors == [], survivors_logs
