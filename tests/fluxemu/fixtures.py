"""Pytest fixtures for the Flux emulator (registered as a plugin by tests/conftest.py)."""

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fluxemu.server import FluxEmulator

__all__ = ["flux_emulator"]


@pytest_asyncio.fixture
async def flux_emulator() -> AsyncIterator[FluxEmulator]:
    """A started FluxEmulator (api key "test-key"), closed after the test."""
    async with FluxEmulator() as emulator:
        yield emulator
