"""Provider callbacks (CALLBACK_PUBLIC_URL): a result arrives without waiting for the next poll, and a
callback the bot cannot tie to a job it is waiting for changes nothing."""

from __future__ import annotations

import gzip
import logging
import sqlite3

import aiohttp
import pytest

from tests.conftest import free_port
from tests.fluxbot_harness import FluxbotHarness, is_result, results_in, status_line


def callback_settings() -> tuple[str, dict[str, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/flux/callback"
    # Polls only once an hour: whatever arrives sooner came through the callback.
    return url, {"CALLBACK_PUBLIC_URL": url, "CALLBACK_LISTEN": f"127.0.0.1:{port}", "FLUX_POLL_INTERVAL": "3600"}


async def test_a_callback_delivers_the_result_before_the_next_poll(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 0.3
    url, env = callback_settings()
    async with fluxbot.running(**env):
        await world.member.slash(world.channel, "imagine", prompt="a comet")
        await flux.wait_for_callbacks(1, timeout=5)
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=5)

    (sent,) = flux.requests_to("POST", "/flux/images")
    assert sent.json is not None and sent.json["callback_url"] == url
    (delivery,) = flux.callbacks
    assert delivery.status == 200
    (task,) = flux.tasks.values()
    assert [f.data for f in result.attachments] == [flux.image_bytes(u) for u in task.images]


async def test_callbacks_that_name_no_waiting_job_are_refused_and_change_nothing(
    fluxbot: FluxbotHarness, http_session: aiohttp.ClientSession
) -> None:
    url, env = callback_settings()
    forged = {"success": True, "task_id": "not-ours", "data": [{"image_url": "http://127.0.0.1:9/evil.png"}]}
    async with fluxbot.running(**env):
        async with http_session.post(url, json=forged) as unknown:
            unknown_status = unknown.status
        async with http_session.post(url, data=b"{not json") as garbage:
            garbage_status = garbage.status
        async with http_session.post(url, json={"task_id": "x"}) as empty:
            empty_status = empty.status

    assert (unknown_status, garbage_status, empty_status) == (404, 400, 400)
    assert not [m for m in fluxbot.world.channel.messages.values() if is_result(m)]


async def test_a_forged_callback_for_a_real_task_is_checked_with_the_provider_not_believed(
    fluxbot: FluxbotHarness, http_session: aiohttp.ClientSession
) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    url, env = callback_settings()
    async with fluxbot.running(**env):
        inter = await world.member.slash(world.channel, "imagine", prompt="a comet")
        await world.emu.wait_until(lambda: "Generating" in status_line(inter), 5, "the job to be submitted")
        (task_id,) = flux.tasks
        polls_before = flux.count("POST", "/flux/tasks")
        forged = {"success": True, "task_id": task_id, "data": [{"image_url": f"{flux.base_url}/files/evil.png"}]}
        async with http_session.post(url, json=forged) as answer:
            status = answer.status
        await flux.wait_until(lambda: flux.count("POST", "/flux/tasks") > polls_before)

    assert status == 200
    assert flux.count("GET", "/files/evil.png") == 0
    assert not [m for m in world.channel.messages.values() if is_result(m)]


async def test_each_callback_has_only_its_own_task_looked_up(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 0.3
    _, env = callback_settings()
    async with fluxbot.running(**env):
        for n in range(10):
            await world.member.slash(world.channel, "imagine", prompt=f"comet {n}")
        await flux.wait_for_callbacks(10, timeout=10)
        await world.emu.wait_until(lambda: len(results_in(world.channel)) == 10, 10, "ten results")

    lookups = [request.json for request in flux.requests_to("POST", "/flux/tasks")]
    assert len(lookups) == 10  # not a poll of every pending job per callback
    assert sorted(task_id for body in lookups for task_id in body["ids"]) == sorted(flux.tasks)


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_hostile_callback_bodies_get_a_4xx_and_no_traceback(
    fluxbot: FluxbotHarness, http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Unauthenticated callers cannot make the receiver fail: deep nesting (a 500 and an ERROR traceback
    before), bodies that are not objects, not JSON, not UTF-8, absurd numbers, or too large."""
    url, env = callback_settings()
    deep = b'{"task_id": "t", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    absurd = b'{"success": true, "task_id": "not-ours", "data": [{"image_url": "https://x/a.png", "seed": 1e400}]}'
    bodies: list[tuple[bytes, str, int]] = [
        (deep, "application/json", 400),
        (b"[" * 300 + b"]" * 300, "application/json", 400),
        (b"[]", "application/json", 400),
        (b'"a string"', "application/json", 400),
        (b"1e400", "application/json", 400),
        (b"null", "application/json", 400),
        (b"", "application/json", 400),
        (b"\xff\xfe\x00garbage", "application/octet-stream", 400),
        (b"task_id=x", "application/x-www-form-urlencoded", 400),
        (b'{"task_id": 12, "success": false}', "text/plain", 400),
        (absurd, "application/json", 404),  # read fine (seed dropped): names no task we wait for
        (b'{"a": "' + b"x" * (300 * 1024) + b'"}', "application/json", 413),
    ]
    caplog.set_level(logging.INFO)
    statuses = []
    async with fluxbot.running(**env):
        for body, content_type, _ in bodies:
            async with http_session.post(url, data=body, headers={"Content-Type": content_type}) as answer:
                statuses.append(answer.status)
        async with http_session.get(url) as wrong_method:
            statuses.append(wrong_method.status)
        bomb = gzip.compress(b'{"a": "' + b" " * (64 * 1024 * 1024) + b'"}')  # 64 MiB once inflated
        async with http_session.post(url, data=bomb, headers={"Content-Encoding": "gzip"}) as inflated:
            statuses.append(inflated.status)

    assert statuses == [expected for _, _, expected in bodies] + [405, 413]
    assert no_errors_logged(caplog) == []


async def test_a_callback_that_cannot_be_looked_up_still_prompts_a_poll(
    fluxbot: FluxbotHarness, http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The store failing under the lookup (e.g. "database is locked") is not the caller's fault: 202, a poll."""
    url, env = callback_settings()
    body = {"success": True, "task_id": "some-task", "data": [{"image_url": "https://x/a.png"}]}
    async with fluxbot.running(**env) as bot:
        polls = []

        async def locked(_body: object) -> bool:
            raise sqlite3.OperationalError("database is locked")

        bot.runner.accept_callback = locked  # type: ignore[method-assign]
        bot.runner.poll_now = lambda: polls.append(1)  # type: ignore[method-assign]
        async with http_session.post(url, json=body) as answer:
            status = answer.status

    assert status == 202
    assert polls == [1]
    assert no_errors_logged(caplog) == []
