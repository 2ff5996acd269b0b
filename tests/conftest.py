"""Shared fixtures: the emulators of the services that live outside this machine, and an HTTP session."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image

from bot.flux import RetryPolicy

pytest_plugins = ["tests.fluxemu.fixtures", "tests.fakediscord.fixtures", "tests.fluxbot_harness"]

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


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def png_bytes(width: int = 48, height: int = 32, colour: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    """A real PNG image of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()
