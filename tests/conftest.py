"""Shared fixtures: the emulators of the services that live outside this machine, and an HTTP session."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from bot.db import Job, JobKind, NewJob, Provider, QuotaLimits, SqliteStore, Store, create_job
from bot.flux import RetryPolicy
from bot.settings import Settings, load_settings

pytest_plugins = ["tests.fluxemu.fixtures", "tests.fakediscord.fixtures", "tests.fluxbot_harness", "tests.pgfixtures"]

#: The API key the Flux emulator expects by default.
KEY = "test-key"
#: Retries without waiting, for tests.
NO_WAIT = RetryPolicy(initial_delay=0, max_delay=0)


class SleepRecorder:
    """Stands in for asyncio.sleep so retries run at once and their delays can be checked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


#: The databases every store-backed test runs on.
STORE_BACKENDS = ("sqlite", "postgresql")


class FakeClock:
    """A clock the test moves by hand: give it to a store (or the bot's parts) as their ``clock``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def open_backend(
    request: pytest.FixtureRequest, backend: str, path: Path, clock: Callable[[], float] = time.time
) -> AsyncIterator[Store]:
    """A fresh store of ``backend``, migrated like the bot's: a SQLite file at ``path``, or an empty PostgreSQL
    database of the test's own (fixture ``postgresql_url``; skipped, or failed in CI, without a server)."""
    if backend == "sqlite":
        async with await SqliteStore.open(path, clock=clock) as opened:
            yield opened
        return
    from bot.db.postgres import PostgresStore

    url = request.getfixturevalue("postgresql_url")
    async with await PostgresStore.open(url, clock=clock) as opened:
        yield opened


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the SQLite store of a test lives."""
    return tmp_path / "fluxbot.db"


@pytest.fixture
def clock() -> Callable[[], float]:
    """The stores' clock: the real time, unless a test module overrides this fixture (with a FakeClock)."""
    return time.time


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, db_path: Path, clock: Callable[[], float]) -> AsyncIterator[Store]:
    """A fresh store, migrated like the bot's: once a SQLite file in the test's own folder, once a PostgreSQL
    database of its own."""
    async with open_backend(request, request.param, db_path, clock) as opened:
        yield opened


@pytest.fixture
async def other_store(
    request: pytest.FixtureRequest, store: Store, db_path: Path, clock: Callable[[], float]
) -> AsyncIterator[Store]:
    """A second connection to the database of ``store``, as another process would have."""
    async with open_backend(request, store.dialect, db_path, clock) as opened:
        yield opened


@pytest.fixture
def settings() -> Settings:
    """The bot's settings with only the required variables set (the defaults for everything else)."""
    return load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k")


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def recorded_job(
    store: Store, *, guild: int, channel: int, user: int, prompt: str, model: str = "flux-dev", count: int = 1
) -> Job:
    """A queued generation of ``count`` images of ``model`` in size 1:1, recorded without limits."""
    new = NewJob(
        guild_id=guild,
        channel_id=channel,
        user_id=user,
        kind=JobKind.GENERATE,
        prompt=prompt,
        model=model,
        size="1:1",
        count=count,
        provider=Provider.ACEDATA,
    )
    job = await create_job(store, new, QuotaLimits())
    assert isinstance(job, Job), job
    return job


async def queued_jobs(store: Store, guild: int, channel: int, user: int, n: int = 1) -> list[Job]:
    """``n`` jobs of one image each, asked by ``user`` in ``channel`` of ``guild``, recorded without limits."""
    return [
        await recorded_job(
            store,
            guild=guild,
            channel=channel,
            user=user,
            prompt=f"a lighthouse in {guild}/{channel}, #{index} of {user}",
        )
        for index in range(n)
    ]


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (connecting to it is refused until someone does)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def png_bytes(width: int = 48, height: int = 32, colour: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    """A real PNG image of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()
