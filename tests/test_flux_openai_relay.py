"""The OpenAI-style relay client (seeds 003 and 004) against the Flux emulator."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from pydantic import SecretStr

from bot.flux import (
    BadRequestError,
    BalanceError,
    CredentialsError,
    EditRequest,
    FluxError,
    GenerateRequest,
    InvalidParameters,
    ModerationError,
    OpenAIRelayClient,
    RateLimitedError,
    TaskState,
    UpstreamError,
)
from tests.conftest import KEY, NO_WAIT, SleepRecorder, png_bytes
from tests.fluxemu import FluxEmulator


@pytest.fixture
def client(
    flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder
) -> OpenAIRelayClient:
    return OpenAIRelayClient(
        session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT, sleep=sleeps
    )


def kontext(**changes: object) -> GenerateRequest:
    return GenerateRequest.model_validate({"prompt": "a small pig", "model": "flux-kontext-pro", **changes})


async def test_a_generation_finishes_inside_the_submit(
    client: OpenAIRelayClient, flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    submission = await client.generate(kontext(size="16:9"))

    (sent,) = flux_emulator.requests_to("POST", "/v1/images/generations")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "flux-kontext-pro",
        "prompt": "a small pig",
        "aspect_ratio": "16:9",
        "output_format": "png",
    }
    assert "null" not in sent.body.decode()
    assert submission.finished is not None
    assert submission.finished.state is TaskState.SUCCEEDED
    (image,) = submission.finished.images
    assert image.url is not None
    async with http_session.get(image.url) as response:
        assert await response.read() == flux_emulator.image_bytes(image.url)
    assert await client.statuses([submission.handle]) == {}


async def test_inline_base64_results_are_decoded(client: OpenAIRelayClient, flux_emulator: FluxEmulator) -> None:
    flux_emulator.openai_format = "b64_json"

    submission = await client.generate(kontext(seed=42))

    assert submission.finished is not None
    (image,) = submission.finished.images
    assert image.url is None
    assert image.data is not None
    assert image.data.startswith(b"\x89PNG")
    assert image.seed == 42
    (sent,) = flux_emulator.requests_to("POST", "/v1/images/generations")
    assert sent.json is not None
    assert sent.json["seed"] == 42


async def test_an_edit_sends_the_source_as_input_image(client: OpenAIRelayClient, flux_emulator: FluxEmulator) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()

    submission = await client.edit(EditRequest(prompt="add a hat", model="flux-kontext-max", image_url=data_uri))

    assert submission.finished is not None
    assert submission.finished.state is TaskState.SUCCEEDED
    (sent,) = flux_emulator.requests_to("POST", "/v1/images/generations")
    assert sent.json is not None
    assert sent.json["input_image"] == data_uri


async def test_an_unusable_source_image_is_a_bad_request(
    client: OpenAIRelayClient, flux_emulator: FluxEmulator
) -> None:
    text_file = flux_emulator.add_file("notes.txt", b"hello", "text/plain")

    with pytest.raises(BadRequestError):
        await client.edit(EditRequest(prompt="add a hat", model="flux-kontext-pro", image_url=text_file))


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "invalid_api_key", CredentialsError),
        (403, "insufficient_user_quota", BalanceError),
        (400, "prompt_blocked", ModerationError),
        (400, "sensitive_words_detected", ModerationError),
        (404, "model_not_found", BadRequestError),
        (429, "rate_limit_exceeded", RateLimitedError),
        (500, "api_error", UpstreamError),
    ],
)
async def test_relay_errors_map_to_their_class(
    client: OpenAIRelayClient, flux_emulator: FluxEmulator, status: int, code: str, expected: type[FluxError]
) -> None:
    times = client.retry.attempts if status == 429 else 1
    flux_emulator.add_fault("POST", "/v1/images/generations", status=status, code=code, times=times)

    with pytest.raises(expected) as caught:
        await client.generate(kontext())
    assert caught.value.status == status
    assert flux_emulator.count("POST", "/v1/images/generations") == times


async def test_a_wrong_key_is_a_credentials_error(
    flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    client = OpenAIRelayClient(session=http_session, api_key=SecretStr("wrong"), base_url=flux_emulator.base_url)

    with pytest.raises(CredentialsError):
        await client.generate(kontext())


async def test_a_429_then_success(
    client: OpenAIRelayClient, flux_emulator: FluxEmulator, sleeps: SleepRecorder
) -> None:
    flux_emulator.add_fault("POST", "/v1/images/generations", status=429, code="rate_limit_exceeded", retry_after=1.5)

    submission = await client.generate(kontext())

    assert submission.finished is not None
    assert flux_emulator.count("POST", "/v1/images/generations") == 2
    assert sleeps.delays == [1.5]


@pytest.mark.parametrize("body", [b"{}", b'{"data": [{"url": "", "b64_json": ""}]}', b'{"data": [{"url": "ht'])
async def test_an_answer_without_an_image_is_an_upstream_error(
    client: OpenAIRelayClient, flux_emulator: FluxEmulator, body: bytes
) -> None:
    flux_emulator.add_fault("POST", "/v1/images/generations", body=body)

    with pytest.raises(UpstreamError):
        await client.generate(kontext())
    assert flux_emulator.count("POST", "/v1/images/generations") == 1


async def test_sizes_outside_the_kontext_enum_are_refused_locally(
    client: OpenAIRelayClient, flux_emulator: FluxEmulator
) -> None:
    with pytest.raises(InvalidParameters) as caught:
        await client.generate(kontext(size="3:2"))
    assert "21:9" in str(caught.value.user_message)
    assert flux_emulator.requests == []
