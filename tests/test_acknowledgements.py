"""Acknowledgements first: the work after a member's acknowledgement lets the interactions still arriving be
acknowledged before it (the real bot on the loopback Discord)."""

from __future__ import annotations

import asyncio

import pytest

import bot.app
from tests.fluxbot_harness import FluxbotHarness


async def test_recording_a_job_waits_while_interactions_keep_arriving(
    fluxbot: FluxbotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.app, "ACKNOWLEDGEMENTS_QUIET", 0.2)  # wide margins: a slow machine changes nothing
    monkeypatch.setattr(bot.app, "ACKNOWLEDGEMENTS_FIRST_AT_MOST", 30.0)
    world = fluxbot.world
    async with fluxbot.running() as flux_bot:
        flux_bot.dispatch("interaction", None)
        waiting = asyncio.create_task(flux_bot.acknowledgements_first())
        for _ in range(10):  # a burst: one interaction every 10 ms
            await asyncio.sleep(0.01)
            flux_bot.dispatch("interaction", None)
        burst_over_first = not waiting.done()
        await waiting  # once the burst is over

        # An interaction's own job is recorded all the same.
        inter = await world.member.slash(world.channel, "imagine", prompt="a quiet harbour")
        await world.emu.wait_until(lambda: fluxbot.flux.tasks, 10, "the job to reach the provider")

    assert burst_over_first
    assert inter.acknowledged


async def test_work_held_back_by_a_burst_goes_on_in_the_order_it_came(
    fluxbot: FluxbotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.app, "ACKNOWLEDGEMENTS_QUIET", 0.5)
    monkeypatch.setattr(bot.app, "ACKNOWLEDGEMENTS_FIRST_AT_MOST", 30.0)
    order: list[int] = []
    async with fluxbot.running() as flux_bot:

        async def held_back(n: int) -> None:
            await flux_bot.acknowledgements_first()
            order.append(n)

        waiting = []
        for n in range(6):  # each one comes after an interaction, and starts waiting before the next
            flux_bot.dispatch("interaction", None)
            waiting.append(asyncio.create_task(held_back(n)))
            await asyncio.sleep(0.005)
        await asyncio.gather(*waiting)

    assert order == list(range(6))
