"""The Black Forest Labs client against the Flux emulator."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from bot.flux import (
    BadRequestError,
    BalanceError,
    BflClient,
    CredentialsError,
    EditRequest,
    GenerateRequest,
    ModerationError,
    RateLimitedError,
    TaskState,
    UpstreamError,
)
from tests.conftest import KEY, NO_WAIT, SleepRecorder, png_bytes
from tests.fluxemu import FluxEmulator


@pytest.fixture
def client(flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder) -> BflClient:
    return BflClient(
        session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT, sleep=sleeps
    )


def flux2(**changes: object) -> GenerateRequest:
    return GenerateRequest.model_validate({"prompt": "a lighthouse at dusk", "model": "flux-2-pro", **changes})


async def test_submit_then_poll_the_returned_url_until_ready(
    client: BflClient, flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    flux_emulator.task_delay = 30
    submission = await client.generate(flux2(size="16:9", seed=7))

    (sent,) = flux_emulator.requests_to("POST", "/v1/flux-2-pro")
    assert sent.headers["x-key"] == KEY
    assert sent.json is not None
    assert (sent.json["width"], sent.json["height"]) == (1360, 768)
    assert sent.json["seed"] == 7
    assert submission.handle.startswith(f"{flux_emulator.base_url}/v1/get_result?id=")

    assert (await client.statuses([submission.handle]))[submission.handle].state is TaskState.PENDING
    flux_emulator.advance(31)
    status = (await client.statuses([submission.handle]))[submission.handle]

    assert status.state is TaskState.SUCCEEDED
    (image,) = status.images
    assert image.url is not None
    async with http_session.get(image.url) as response:
        assert await response.read() == flux_emulator.image_bytes(image.url)
    assert all(r.headers.get("x-key") == KEY for r in flux_emulator.requests_to("GET", "/v1/get_result"))


async def test_kontext_takes_an_aspect_ratio_and_an_input_image(client: BflClient, flux_emulator: FluxEmulator) -> None:
    source = flux_emulator.add_file("photo.png", png_bytes(), "image/png")

    submission = await client.edit(
        EditRequest(prompt="make it night", model="flux-kontext-pro", image_url=source, size="4:3")
    )

    (sent,) = flux_emulator.requests_to("POST", "/v1/flux-kontext-pro")
    assert sent.json is not None
    assert (sent.json["aspect_ratio"], sent.json["input_image"]) == ("4:3", source)
    assert "width" not in sent.json
    status = (await client.statuses([submission.handle]))[submission.handle]
    assert status.state is TaskState.SUCCEEDED


@pytest.mark.parametrize(
    ("word", "state", "error"),
    [
        ("Error", TaskState.FAILED, UpstreamError),
        ("Task not found", TaskState.FAILED, UpstreamError),
        ("Request Moderated", TaskState.FAILED, ModerationError),
        ("Content Moderated", TaskState.FAILED, ModerationError),
        ("Processing", TaskState.PENDING, None),
    ],
)
async def test_each_final_status_word(
    client: BflClient, flux_emulator: FluxEmulator, word: str, state: TaskState, error: type[Exception] | None
) -> None:
    flux_emulator.bfl_next_status(word)
    handle = (await client.generate(flux2())).handle

    status = (await client.statuses([handle]))[handle]

    assert status.state is state
    if error is None:
        assert status.error is None
    else:
        assert isinstance(status.error, error)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(402, BalanceError), (403, CredentialsError), (422, BadRequestError), (500, UpstreamError)],
)
async def test_submit_errors_map_by_status(
    client: BflClient, flux_emulator: FluxEmulator, status: int, expected: type[Exception]
) -> None:
    flux_emulator.add_fault("POST", "/v1/flux-2-pro", status=status)

    with pytest.raises(expected):
        await client.generate(flux2())
    assert flux_emulator.count("POST", "/v1/flux-2-pro") == 1


async def test_a_validation_error_names_the_field(
    flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    client = BflClient(session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url)
    flux_emulator.add_fault("POST", "/v1/flux-dev", status=422)
    with pytest.raises(BadRequestError):
        await client.generate(flux2(model="flux-dev", size="1024x768"))


async def test_a_wrong_key_is_refused_as_credentials(
    flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    client = BflClient(session=http_session, api_key=SecretStr("nope"), base_url=flux_emulator.base_url)
    with pytest.raises(CredentialsError):
        await client.generate(flux2())


async def test_a_429_on_submit_is_retried_after_retry_after(
    client: BflClient, flux_emulator: FluxEmulator, sleeps: SleepRecorder
) -> None:
    flux_emulator.add_fault("POST", "/v1/flux-2-pro", status=429, retry_after=3)

    await client.generate(flux2())

    assert flux_emulator.count("POST", "/v1/flux-2-pro") == 2
    assert sleeps.delays == [3.0]
    with pytest.raises(RateLimitedError):
        flux_emulator.add_fault("POST", "/v1/flux-2-pro", status=429, retry_after=600)
        await client.generate(flux2())  # a Retry-After beyond the policy's bound is not waited out


async def test_polls_are_retried_and_a_malformed_poll_is_asked_again_later(
    client: BflClient, flux_emulator: FluxEmulator
) -> None:
    handle = (await client.generate(flux2())).handle
    flux_emulator.add_fault("GET", "/v1/get_result", status=503)
    assert (await client.statuses([handle]))[handle].state is TaskState.SUCCEEDED

    flux_emulator.add_fault("GET", "/v1/get_result", body=b"{not json", times=client.retry.attempts)
    assert await client.statuses([handle]) == {}


async def test_the_key_is_never_sent_to_a_foreign_polling_host(client: BflClient, flux_emulator: FluxEmulator) -> None:
    foreign = "http://127.0.0.2:9/v1/get_result?id=abc"

    (status,) = (await client.statuses([foreign])).values()

    assert status.state is TaskState.FAILED  # it can never be polled: the job fails instead of waiting
    assert isinstance(status.error, UpstreamError)
    assert flux_emulator.requests == []


@pytest.mark.parametrize("body", [b'{"id": ', b'{"polling_url": "no id"}', b"[]"])
async def test_a_malformed_submit_answer_is_an_upstream_error_and_not_resent(
    client: BflClient, flux_emulator: FluxEmulator, body: bytes
) -> None:
    flux_emulator.add_fault("POST", "/v1/flux-2-pro", body=body)

    with pytest.raises(UpstreamError):
        await client.generate(flux2())
    assert flux_emulator.count("POST", "/v1/flux-2-pro") == 1
