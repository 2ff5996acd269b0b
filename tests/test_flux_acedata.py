"""The AceDataCloud client against the Flux emulator, over loopback."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from bot.flux import (
    AccountError,
    AceDataClient,
    BadRequestError,
    BalanceError,
    CredentialsError,
    EditRequest,
    FluxConnectionError,
    FluxError,
    GenerateRequest,
    InvalidParameters,
    ModerationError,
    RateLimitedError,
    TaskState,
    UpstreamError,
)
from tests.conftest import KEY, NO_WAIT, SleepRecorder, png_bytes
from tests.fluxemu import FluxEmulator


@pytest.fixture
def client(flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder) -> AceDataClient:
    return AceDataClient(
        session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT, sleep=sleeps
    )


def cat(**changes: object) -> GenerateRequest:
    return GenerateRequest.model_validate({"prompt": "a white siamese cat", "model": "flux-dev", **changes})


async def test_generation_is_submitted_async_and_its_images_are_real(
    client: AceDataClient, flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    submission = await client.generate(cat(count=2, size="16:9"))

    (sent,) = flux_emulator.requests_to("POST", "/flux/images")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "action": "generate",
        "prompt": "a white siamese cat",
        "model": "flux-dev",
        "size": "16:9",
        "count": 2,
        "async": True,
    }
    status = (await client.statuses([submission.handle]))[submission.handle]
    assert status.state is TaskState.SUCCEEDED
    assert len(status.images) == 2
    for image in status.images:
        assert image.url is not None
        async with http_session.get(image.url) as response:
            body = await response.read()
        assert body == flux_emulator.image_bytes(image.url)
        assert Image.open(io.BytesIO(body)).format == "PNG"


async def test_a_task_stays_pending_until_the_provider_finishes_it(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.task_delay = 20 * 60
    handle = (await client.generate(cat())).handle

    assert (await client.statuses([handle]))[handle].state is TaskState.PENDING
    flux_emulator.advance(20 * 60 + 1)
    assert (await client.statuses([handle]))[handle].state is TaskState.SUCCEEDED


async def test_an_edit_sends_the_image_url_the_provider_fetches(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    source = flux_emulator.add_file("source.png", png_bytes(), "image/png")

    handle = (await client.edit(EditRequest(prompt="make it blue", model="flux-kontext-pro", image_url=source))).handle

    (sent,) = flux_emulator.requests_to("POST", "/flux/images")
    assert sent.json is not None
    assert (sent.json["action"], sent.json["image_url"], sent.json["size"]) == ("edit", source, "1:1")
    status = (await client.statuses([handle]))[handle]
    assert status.state is TaskState.SUCCEEDED
    assert len(status.images) == 1


async def test_an_edit_of_an_unreachable_image_fails_the_task(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    missing = f"{flux_emulator.base_url}/files/nothing-here.png"
    handle = (await client.edit(EditRequest(prompt="make it blue", model="flux-kontext-pro", image_url=missing))).handle

    status = (await client.statuses([handle]))[handle]
    assert status.state is TaskState.FAILED
    assert isinstance(status.error, UpstreamError)


async def test_a_failed_task_carries_its_error_and_trace_id(client: AceDataClient, flux_emulator: FluxEmulator) -> None:
    flux_emulator.fail_next_task(code="used_up", message="balance exhausted")
    handle = (await client.generate(cat())).handle

    status = (await client.statuses([handle]))[handle]
    assert status.state is TaskState.FAILED
    assert isinstance(status.error, BalanceError)
    assert status.error.trace_id
    assert str(status.error.user_message).startswith("The bot's image service account needs attention")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "bad_request", BadRequestError),
        (400, "token_mismatched", CredentialsError),
        (401, "invalid_token", CredentialsError),
        (401, "token_expired", CredentialsError),
        (403, "used_up", BalanceError),
        (404, "no_api", AccountError),
        (429, "too_many_requests", RateLimitedError),
        (500, "api_error", UpstreamError),
        (503, "service_unavailable", UpstreamError),
    ],
)
async def test_each_error_code_maps_to_its_class_and_a_failed_submit_is_not_resent(
    client: AceDataClient, flux_emulator: FluxEmulator, status: int, code: str, expected: type[FluxError]
) -> None:
    # A 429 is retried (the provider refused it); exhaust the retries so the error surfaces.
    times = client.retry.attempts if status == 429 else 1
    flux_emulator.add_fault("POST", "/flux/images", status=status, code=code, message="model is invalid", times=times)

    with pytest.raises(expected) as caught:
        await client.generate(cat())

    assert type(caught.value) is expected
    assert caught.value.status == status
    assert caught.value.code == code
    assert caught.value.trace_id
    assert flux_emulator.count("POST", "/flux/images") == times
    if expected is BadRequestError:
        assert "model is invalid" in str(caught.value.user_message)


async def test_a_bare_403_is_content_moderation(client: AceDataClient, flux_emulator: FluxEmulator) -> None:
    body = json.dumps({"success": False, "error": "blocked by the safety filter", "trace_id": "t-1"}).encode()
    flux_emulator.add_fault("POST", "/flux/images", status=403, body=body)

    with pytest.raises(ModerationError) as caught:
        await client.generate(cat())
    assert caught.value.trace_id == "t-1"
    assert "rephrase" in str(caught.value.user_message)


async def test_a_submit_refused_with_429_is_retried_after_retry_after(
    client: AceDataClient, flux_emulator: FluxEmulator, sleeps: SleepRecorder
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", status=429, code="too_many_requests", retry_after=2)

    submission = await client.generate(cat())

    assert submission.handle in flux_emulator.tasks
    assert flux_emulator.count("POST", "/flux/images") == 2
    assert sleeps.delays == [2.0]


async def test_a_submit_whose_connection_dropped_is_not_sent_again(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", drop=True)

    with pytest.raises(FluxConnectionError) as caught:
        await client.generate(cat())

    assert caught.value.reached_server is True
    assert flux_emulator.count("POST", "/flux/images") == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_a_submit_answered_with_5xx_is_not_sent_again(
    client: AceDataClient, flux_emulator: FluxEmulator, status: int
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", status=status, code="api_error")

    with pytest.raises(UpstreamError):
        await client.generate(cat())
    assert flux_emulator.count("POST", "/flux/images") == 1


async def test_a_refused_connection_is_retried_because_nothing_was_sent(
    http_session: aiohttp.ClientSession, sleeps: SleepRecorder
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AceDataClient(
        session=http_session, api_key=SecretStr(KEY), base_url=f"http://127.0.0.1:{port}", retry=NO_WAIT, sleep=sleeps
    )

    with pytest.raises(FluxConnectionError) as caught:
        await client.generate(cat())

    assert caught.value.reached_server is False
    assert len(sleeps.delays) == client.retry.attempts - 1


async def test_a_malformed_answer_is_an_upstream_error_and_not_resent(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", body=b'{"task_id": ')

    with pytest.raises(UpstreamError) as caught:
        await client.generate(cat())
    assert "not JSON" in str(caught.value)
    assert flux_emulator.count("POST", "/flux/images") == 1


async def test_status_polls_are_retried_on_server_errors_and_rate_limits(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    handle = (await client.generate(cat())).handle
    flux_emulator.add_fault("POST", "/flux/tasks", status=503, code="service_unavailable")
    flux_emulator.add_fault("POST", "/flux/tasks", status=429, code="too_many_requests", retry_after=0)
    flux_emulator.add_fault("POST", "/flux/tasks", body=b"<html>bad gateway</html>", status=502)

    status = (await client.statuses([handle]))[handle]

    assert status.state is TaskState.SUCCEEDED
    assert flux_emulator.count("POST", "/flux/tasks") == 4


async def test_a_poll_that_keeps_failing_raises_after_its_retries(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    handle = (await client.generate(cat())).handle
    flux_emulator.add_fault("POST", "/flux/tasks", status=500, code="api_error", times=client.retry.attempts)

    with pytest.raises(UpstreamError):
        await client.statuses([handle])
    assert flux_emulator.count("POST", "/flux/tasks") == client.retry.attempts


async def test_120_pending_jobs_cost_three_batched_requests_per_tick(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.task_delay = 3600
    handles = [(await client.generate(cat(prompt=f"cat #{n}"))).handle for n in range(120)]

    statuses = await client.statuses(handles)

    batches = flux_emulator.requests_to("POST", "/flux/tasks")
    assert len(batches) == 3
    assert all(b.json is not None and b.json["action"] == "retrieve_batch" for b in batches)
    assert sorted(len(b.json["ids"]) for b in batches if b.json) == [20, 50, 50]
    assert set(statuses) == set(handles)
    assert {s.state for s in statuses.values()} == {TaskState.PENDING}


@pytest.fixture
async def callback_inbox() -> AsyncIterator[tuple[str, list[object]]]:
    received: list[object] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/flux-callback", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/flux-callback", received
    await runner.cleanup()


async def test_a_callback_is_requested_and_parsed_back_to_its_task(
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
    callback_inbox: tuple[str, list[object]],
) -> None:
    url, received = callback_inbox
    client = AceDataClient(
        session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, callback_url=url
    )

    handle = (await client.generate(cat(count=3))).handle
    await flux_emulator.wait_for_callbacks(1, timeout=5)

    (sent,) = flux_emulator.requests_to("POST", "/flux/images")
    assert sent.json is not None
    assert sent.json["callback_url"] == url
    assert sent.json["async"] is True
    status = client.parse_callback(received[0])
    assert status.handle == handle
    assert status.state is TaskState.SUCCEEDED
    assert len(status.images) == 3


def test_a_failure_callback_and_a_malformed_one_are_told_apart(http_session: aiohttp.ClientSession) -> None:
    from bot.flux import CallbackError

    client = AceDataClient(session=http_session, api_key=SecretStr(KEY), base_url="http://127.0.0.1:9")
    failed = client.parse_callback(
        {"success": False, "task_id": "t", "trace_id": "x", "error": {"code": "api_error", "message": "fetch failed"}}
    )
    assert failed.state is TaskState.FAILED
    assert isinstance(failed.error, UpstreamError)
    for body in ({"success": True, "data": []}, {"task_id": "t"}, ["not", "an", "object"]):
        with pytest.raises(CallbackError):
            client.parse_callback(body)


def test_a_result_is_parsed_defensively(http_session: aiohttp.ClientSession) -> None:
    client = AceDataClient(session=http_session, api_key=SecretStr(KEY), base_url="http://127.0.0.1:9")
    status = client.parse_callback(
        {
            "task_id": "t",  # no "success" key at all
            "data": [
                {"image_url": "https://cdn.example/a.png", "seed": "pop upbeat", "timings": 1752743801},
                {"image_url": "https://cdn.example/b.png", "seed": 1698551532, "timings": {"inference": 3.3}},
                {"prompt": "no url here"},
            ],
            "something_new": {"kept": True},
        }
    )
    assert status.state is TaskState.SUCCEEDED
    assert [image.seed for image in status.images] == [None, 1698551532]
    assert status.seed == 1698551532


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (cat(model="flux-pro-1.1"), "flux-2-pro"),  # dropped by the vendor in May 2026
        (cat(model="flux-2-pro", size="1024x1024"), "16:9"),  # FLUX.2 takes ratios only
        (cat(size="1000x1000"), "1024x1792"),
        (cat(size="5:4"), "21:9"),
        (cat(prompt="   "), "empty"),
        (cat(prompt="x" * 2001), "2000"),
    ],
)
async def test_invalid_requests_are_refused_before_any_network_call(
    client: AceDataClient, flux_emulator: FluxEmulator, request_: GenerateRequest, named: str
) -> None:
    with pytest.raises(InvalidParameters) as caught:
        await client.generate(request_)
    assert named in str(caught.value.user_message)
    assert flux_emulator.requests == []


async def test_a_model_that_cannot_edit_is_refused_with_the_ones_that_can(
    client: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    with pytest.raises(InvalidParameters) as caught:
        await client.edit(EditRequest(prompt="blue", model="flux-2-klein", image_url="https://x.example/a.png"))
    assert "flux-kontext-pro" in str(caught.value.user_message)
    assert flux_emulator.requests == []


async def test_the_key_never_shows_in_reprs_errors_or_logs(
    client: AceDataClient, flux_emulator: FluxEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flux_emulator.add_fault("POST", "/flux/images", status=429, code="too_many_requests", retry_after=0)
    flux_emulator.add_fault("POST", "/flux/images", status=401, code="invalid_token")

    with pytest.raises(CredentialsError) as caught:
        await client.generate(cat())

    texts = [repr(client), str(caught.value), repr(caught.value), str(caught.value.user_message), caplog.text]
    assert all(KEY not in text for text in texts)
