"""The rule that protects the paid plan, for every provider: a submit whose outcome is unknown is never
sent again, while one that certainly did not start a task is retried."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import pytest
from pydantic import SecretStr

from bot.flux import (
    AceDataClient,
    BflClient,
    FluxClient,
    FluxConnectionError,
    FluxTimeoutError,
    GenerateRequest,
    OpenAIRelayClient,
    Timeouts,
    UpstreamError,
)
from tests.conftest import KEY, NO_WAIT
from tests.fluxemu import FluxEmulator


@dataclass(frozen=True)
class Provider:
    client: type[FluxClient]
    path: str
    model: str


PROVIDERS = [
    pytest.param(Provider(AceDataClient, "/flux/images", "flux-dev"), id="acedata"),
    pytest.param(Provider(OpenAIRelayClient, "/v1/images/generations", "flux-kontext-pro"), id="openai"),
    pytest.param(Provider(BflClient, "/v1/flux-2-pro", "flux-2-pro"), id="bfl"),
]


def impatient(provider: Provider, emu: FluxEmulator, session: aiohttp.ClientSession) -> FluxClient:
    """A client that gives a submit 0.2 s."""
    return provider.client(
        session=session,
        api_key=SecretStr(KEY),
        base_url=emu.base_url,
        retry=NO_WAIT,
        timeouts=Timeouts(submit=aiohttp.ClientTimeout(total=0.2)),
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_submit_that_timed_out_is_sent_once(
    provider: Provider, flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    flux_emulator.add_fault("POST", provider.path, delay=0.6)  # the provider answers, but too late

    with pytest.raises(FluxTimeoutError):
        await impatient(provider, flux_emulator, http_session).generate(
            GenerateRequest(prompt="a harbour", model=provider.model)
        )

    assert flux_emulator.count("POST", provider.path) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        pytest.param({"drop": True}, FluxConnectionError, id="dropped"),
        pytest.param({"status": 500}, UpstreamError, id="500"),
        pytest.param({"status": 503}, UpstreamError, id="503"),
        pytest.param({"body": b'{"id": '}, UpstreamError, id="malformed"),
    ],
)
async def test_a_submit_that_may_have_started_a_task_is_sent_once(
    provider: Provider,
    fault: dict[str, object],
    error: type[Exception],
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
) -> None:
    flux_emulator.add_fault("POST", provider.path, **fault, times=2)  # type: ignore[arg-type]

    with pytest.raises(error):
        await impatient(provider, flux_emulator, http_session).generate(
            GenerateRequest(prompt="a harbour", model=provider.model)
        )

    assert flux_emulator.count("POST", provider.path) == 1
