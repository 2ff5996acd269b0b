"""``GET /metrics`` on METRICS_LISTEN: Prometheus text from the real bot, after real jobs against the emulators."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import FluxBot
from bot.db import JobStatus, jobs_in
from bot.metrics import Metrics, endpoint_of
from tests.fakediscord import Interaction
from tests.fluxbot_harness import FluxbotHarness, is_result, status_line

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bot: FluxBot) -> tuple[str, Samples]:
    """The content type of ``/metrics`` and its samples, parsed by prometheus-client's own parser."""
    assert bot.health_server is not None and bot.health_server.port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.health_server.port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
        content_type = response.headers["Content-Type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples that have (at least) these labels."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


async def test_metrics_count_a_delivered_job_its_images_and_the_requests_it_took(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    fluxbot.flux.task_delay = 3600.0  # the task stays at the provider until the test moves its clock
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0") as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a lighthouse at dusk", count=2)
        async with asyncio.timeout(5):  # the provider's answer recorded: the job is submitted
            while not await jobs_in(bot.store, JobStatus.SUBMITTED):
                await asyncio.sleep(0.02)
        _, waiting = await scrape(bot)

        fluxbot.flux.advance(3600)
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        await world.emu.wait_until(lambda: "Done" in status_line(inter), 5, "the member told it is done")
        content_type, done = await scrape(bot)

    assert content_type.startswith("text/plain; version=")  # prometheus-client's own text format
    # while the task runs, the gauge (read from the database at each scrape) shows it submitted
    assert value(waiting, "fluxbot_jobs", state="submitted") == 1
    assert value(waiting, "fluxbot_jobs", state="queued") == 0
    assert total(waiting, "fluxbot_jobs_total") == 0

    assert value(done, "fluxbot_jobs", state="submitted") == 0
    assert value(done, "fluxbot_jobs_total", kind="generate", outcome="posted") == 1
    assert value(done, "fluxbot_images_total") == 2
    assert value(done, "fluxbot_job_seconds_count", kind="generate") == 1
    submits = value(done, "fluxbot_provider_requests_total", provider="acedata", endpoint="/flux/images", status="200")
    assert submits == len(fluxbot.flux.requests_to("POST", "/flux/images")) == 1
    polls = value(done, "fluxbot_provider_requests_total", provider="acedata", endpoint="/flux/tasks", status="200")
    assert polls == len(fluxbot.flux.requests_to("POST", "/flux/tasks")) >= 1
    assert value(done, "fluxbot_provider_request_seconds_count", provider="acedata") == submits + polls
    # discord.py's own requests: login, command sync, the deferral, status edits, the post...
    assert total(done, "fluxbot_discord_requests_total", status="200") >= 3
    assert total(done, "fluxbot_quota_refusals_total") == 0


async def test_metrics_count_failed_jobs_by_outcome_and_quota_refusals_by_limit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    fluxbot.flux.fail_next_task("api_error", "the model fell over")
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0", DEFAULT_USER_DAILY="1") as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a broken vase", count=1)
        await world.emu.wait_until(lambda: settled(inter), 10, "the failure")
        assert "Done" not in status_line(inter)
        # the failed job was not charged, so one more image is allowed today, and then no more
        second = await world.member.slash(world.channel, "imagine", prompt="a whole vase", count=1)
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        await world.emu.wait_until(lambda: "Done" in status_line(second), 5, "the second job done")
        third = await world.member.slash(world.channel, "imagine", prompt="another vase", count=1)
        await world.emu.wait_until(lambda: settled(third), 5, "the refusal")
        _, samples = await scrape(bot)

    assert value(samples, "fluxbot_jobs_total", kind="generate", outcome="failed") == 1
    assert value(samples, "fluxbot_jobs_total", kind="generate", outcome="posted") == 1
    assert value(samples, "fluxbot_quota_refusals_total", limit="user_daily") == 1
    assert value(samples, "fluxbot_images_total") == 1


async def test_without_metrics_listen_nothing_is_served(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running() as bot:
        assert bot.health_server is None


def settled(inter: Interaction) -> bool:
    """Done, failed or refused: anything but a progress line."""
    text = status_line(inter)
    return bool(text) and not text.startswith(("⏳", "🎨"))


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://api.acedata.cloud/flux/images", "/flux/images"),
        ("https://api.bfl.ai/v1/flux-pro-1.1", "/v1/flux-pro-1.1"),
        ("https://api.us1.bfl.ai/v1/get_result?id=7f0c2a4e-0d52-4a43-9f1e-3c1b2a9d8e11", "/v1/get_result"),
        ("https://relay.example/v1/tasks/7f0c2a4e-0d52-4a43-9f1e-3c1b2a9d8e11", "/v1/tasks/{id}"),
        ("https://relay.example/v1/tasks/123456/result", "/v1/tasks/{id}/result"),
    ],
)
def test_the_endpoint_label_is_a_path_template_never_an_id_or_a_query(url: str, endpoint: str) -> None:
    assert endpoint_of(url) == endpoint


def test_two_bots_in_one_process_keep_their_own_counts() -> None:
    first, second = Metrics("acedata"), Metrics("bfl")
    first.job_posted("generate", 3, 12.0)
    first_text = first.render(None).decode()
    second_text = second.render({"queued": 2}).decode()

    assert "fluxbot_images_total 3.0" in first_text
    assert "fluxbot_images_total 0.0" in second_text
    assert 'fluxbot_jobs{state="queued"} 2.0' in second_text
    assert "fluxbot_jobs{" not in first_text  # not known (the database did not answer) rather than a wrong 0


def test_the_example_grafana_dashboard_queries_only_series_the_bot_exposes() -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    metrics = Metrics("acedata")
    metrics.job_posted("generate", 1, 1.0)
    metrics.provider_request("http://flux/flux/images", 200, 0.1)
    metrics.quota_refused("user_daily")
    metrics.discord_requests_total.labels(status="200").inc()
    exposed = {
        sample.name
        for family in text_string_to_metric_families(metrics.render({"queued": 0}).decode())
        for sample in family.samples
    }
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bfluxbot_\w+", target["expr"])
    }
    assert queried and queried <= exposed, queried - exposed
    assert len(dashboard["panels"]) == len({panel["id"] for panel in dashboard["panels"]})
