"""Hostile or broken provider answers end as our typed errors, against the Flux emulator over loopback.

Each test reproduces one way a provider's answer used to escape as a stray exception, hang on to memory,
carry the API key elsewhere, or put the provider's words (links, mentions) in front of members.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.flux import (
    AceDataClient,
    BadRequestError,
    BflClient,
    CallbackError,
    FluxClient,
    FluxConnectionError,
    GenerateRequest,
    InvalidParameters,
    OpenAIRelayClient,
    RateLimitedError,
    TaskState,
    UpstreamError,
    catalog_for,
)
from bot.flux.bfl import key_may_go_to
from bot.flux.errors import MAX_SHOWN_REASON, error_for
from bot.flux.http import MAX_JSON_BYTES, MAX_RETRY_AFTER, retry_after_seconds
from bot.flux.openai_relay import MAX_INLINE_IMAGE_BYTES
from bot.settings import Provider
from tests.conftest import KEY, NO_WAIT, SleepRecorder
from tests.fluxemu import FluxEmulator

MiB = 1024 * 1024


def make(cls: type[FluxClient], emulator: FluxEmulator, session: aiohttp.ClientSession, sleeps: SleepRecorder) -> Any:
    return cls(session=session, api_key=SecretStr(KEY), base_url=emulator.base_url, retry=NO_WAIT, sleep=sleeps)


@pytest.fixture
def ace(flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder) -> AceDataClient:
    client: AceDataClient = make(AceDataClient, flux_emulator, http_session, sleeps)
    return client


@pytest.fixture
def bfl(flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder) -> BflClient:
    client: BflClient = make(BflClient, flux_emulator, http_session, sleeps)
    return client


@pytest.fixture
def relay(flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder) -> OpenAIRelayClient:
    client: OpenAIRelayClient = make(OpenAIRelayClient, flux_emulator, http_session, sleeps)
    return client


def request_for(provider: Provider, **changes: object) -> GenerateRequest:
    model = catalog_for(provider).models[0].name
    return GenerateRequest.model_validate({"prompt": "a lighthouse", "model": model, **changes})


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def http_date(delta: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


# -- Retry-After: both RFC 9110 forms, and garbage ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: retry now
        ("Wed, 21 Oct 2015 07:28:00 CET", 0.0),  # an unknown zone gave a naive datetime and a TypeError
        ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0),
        ("99999999999999999999", None),
        ("999999999999", MAX_RETRY_AFTER),
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("soon", None),
        ("", None),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        ("Wed, 21 Oct 2015 99:28:00 GMT", None),
        ("Wed, 21 Oct 2015 07:28:00 +9999", None),
    ],
)
def test_retry_after_reads_both_forms_and_refuses_garbage(value: str, expected: float | None) -> None:
    assert retry_after_seconds({"Retry-After": value}) == expected


def test_a_retry_after_date_in_the_future_is_seconds_from_now() -> None:
    seconds = retry_after_seconds({"retry-after": http_date(timedelta(seconds=30))})
    assert seconds is not None and 25 <= seconds <= 30


@pytest.mark.parametrize("status", [429, 503])
async def test_a_poll_answered_with_a_retry_after_date_is_retried(
    ace: AceDataClient, flux_emulator: FluxEmulator, sleeps: SleepRecorder, status: int
) -> None:
    handle = (await ace.generate(request_for(Provider.ACEDATA))).handle
    flux_emulator.add_fault("POST", "/flux/tasks", status=status, retry_after="Wed, 21 Oct 2015 07:28:00 CET")
    flux_emulator.add_fault("POST", "/flux/tasks", status=status, retry_after=http_date(timedelta(seconds=4)))

    status_now = (await ace.statuses([handle]))[handle]

    assert status_now.state is TaskState.SUCCEEDED
    assert flux_emulator.count("POST", "/flux/tasks") == 3
    if status == 429:  # a 429's date is waited out; a 503 backs off as usual (NO_WAIT: 0)
        assert sleeps.delays[0] == 0.0 and 0 < sleeps.delays[1] <= 4


async def test_a_submit_refused_with_a_retry_after_date_is_a_rate_limit(
    bfl: BflClient, flux_emulator: FluxEmulator, sleeps: SleepRecorder
) -> None:
    flux_emulator.add_fault("POST", "/v1/flux-2-pro", status=429, retry_after=http_date(timedelta(hours=2)))

    with pytest.raises(RateLimitedError) as refused:
        await bfl.generate(request_for(Provider.BFL, model="flux-2-pro"))

    assert refused.value.retry_after is not None and refused.value.retry_after > 3600
    assert sleeps.delays == []  # longer than the policy waits: handed back to the caller


# -- BFL handles that can never be polled ------------------------------------------------------------


def recording_session(seen: list[str]) -> aiohttp.ClientSession:
    trace = aiohttp.TraceConfig()

    async def on_start(_session: object, _ctx: object, params: aiohttp.TraceRequestStartParams) -> None:
        seen.append(str(params.url))

    trace.on_request_start.append(on_start)
    return aiohttp.ClientSession(trace_configs=[trace])


@pytest.mark.parametrize(
    "poisoned",
    [
        "http://[::1",  # yarl cannot parse it: it used to raise out of statuses()
        "http://[::1]:99999/v1/get_result?id=x",
        "not a url at all",
        "/v1/get_result?id=relative",
        "",
    ],
)
async def test_an_unpollable_handle_fails_alone_and_the_others_are_polled(
    flux_emulator: FluxEmulator, sleeps: SleepRecorder, poisoned: str
) -> None:
    seen: list[str] = []
    async with recording_session(seen) as session:
        client: BflClient = make(BflClient, flux_emulator, session, sleeps)
        good = (await client.generate(request_for(Provider.BFL, model="flux-2-pro"))).handle

        found = await client.statuses([poisoned, good])

    assert found[good].state is TaskState.SUCCEEDED
    assert found[poisoned].state is TaskState.FAILED
    assert isinstance(found[poisoned].error, UpstreamError)
    assert KEY not in str(found[poisoned].error)
    assert all(url.startswith(flux_emulator.base_url) for url in seen)


# -- the BFL key goes only to the configured API -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.bfl.ai/v1/get_result?id=1", True),
        ("https://api.eu.bfl.ai/v1/get_result?id=1", True),
        ("https://api.us1.bfl.ai:443/v1/get_result?id=1", True),
        ("http://api.eu.bfl.ai/v1/get_result?id=1", False),  # the key in clear text
        ("http://api.bfl.ai/v1/get_result?id=1", False),
        ("https://api.eu.bfl.ai:8443/v1/get_result?id=1", False),  # another port
        ("https://api.bfl.ai:8443/v1/get_result?id=1", False),
        ("https://bfl.ai.evil.example/v1/get_result?id=1", False),
        ("https://evilbfl.ai/v1/get_result?id=1", False),
        ("https://user:pw@api.bfl.ai/v1/get_result?id=1", False),
        ("https://[::1/v1", False),
        ("//api.bfl.ai/v1/get_result?id=1", False),
    ],
)
def test_the_key_may_go_only_to_https_hosts_of_the_base(url: str, allowed: bool) -> None:
    assert key_may_go_to(url, "https://api.bfl.ai") is allowed


def test_a_plain_http_base_trusts_only_itself() -> None:
    """Tests run the emulator over plain http: there, only the very same scheme, host and port."""
    base = "http://127.0.0.1:8080"
    assert key_may_go_to("http://127.0.0.1:8080/v1/get_result?id=1", base)
    assert not key_may_go_to("http://127.0.0.1:8081/v1/get_result?id=1", base)
    assert not key_may_go_to("https://127.0.0.1:8080/v1/get_result?id=1", base)
    assert not key_may_go_to("http://127.0.0.2:8080/v1/get_result?id=1", base)


async def test_the_key_is_not_sent_to_another_port_and_the_task_fails(
    flux_emulator: FluxEmulator, sleeps: SleepRecorder
) -> None:
    async with FluxEmulator() as elsewhere:
        foreign = f"{elsewhere.base_url}/v1/get_result?id=abc"
        seen: list[str] = []
        async with recording_session(seen) as session:
            client: BflClient = make(BflClient, flux_emulator, session, sleeps)
            found = await client.statuses([foreign])

        assert found[foreign].state is TaskState.FAILED
        assert seen == []
        assert elsewhere.requests == []


async def test_a_redirect_is_not_followed_so_the_key_stays_home(
    bfl: BflClient, flux_emulator: FluxEmulator, sleeps: SleepRecorder
) -> None:
    handle = (await bfl.generate(request_for(Provider.BFL, model="flux-2-pro"))).handle
    async with FluxEmulator() as elsewhere:
        location = {"Location": f"{elsewhere.base_url}/v1/get_result?id=stolen"}
        flux_emulator.add_fault("GET", "/v1/get_result", status=307, body=b"{}", headers=location, times=4)
        flux_emulator.add_fault("POST", "/v1/flux-2-pro", status=308, body=b'{"id": "x"}', headers=location)

        assert await bfl.statuses([handle]) == {}  # asked again next time, like any failed poll
        with pytest.raises(UpstreamError, match="redirect"):
            await bfl.generate(request_for(Provider.BFL, model="flux-2-pro"))

        assert elsewhere.requests == []
    assert flux_emulator.count("POST", "/v1/flux-2-pro") == 2  # the redirected submit was not resent


@pytest.mark.parametrize("provider", [Provider.ACEDATA, Provider.OPENAI])
async def test_no_provider_follows_a_redirect(
    flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession, sleeps: SleepRecorder, provider: Provider
) -> None:
    cls, path = {
        Provider.ACEDATA: (AceDataClient, "/flux/images"),
        Provider.OPENAI: (OpenAIRelayClient, "/v1/images/generations"),
    }[provider]
    client: FluxClient = make(cls, flux_emulator, http_session, sleeps)
    async with FluxEmulator() as elsewhere:
        target = f"{elsewhere.base_url}{path}"
        flux_emulator.add_fault("POST", path, status=307, body=b"{}", headers={"Location": target})
        with pytest.raises(UpstreamError, match="redirect"):
            await client.generate(request_for(provider))
        assert elsewhere.requests == []


# -- bodies that cannot be parsed: nesting, numbers ---------------------------------------------------


async def test_a_relay_answering_deeply_nested_json_is_an_upstream_error(
    relay: OpenAIRelayClient, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.add_fault("POST", "/v1/images/generations", body=nested(100_000))

    with pytest.raises(UpstreamError):
        await relay.generate(request_for(Provider.OPENAI))
    assert flux_emulator.count("POST", "/v1/images/generations") == 1


@pytest.mark.parametrize("status", [400, 429, 500])
async def test_a_deeply_nested_error_body_is_still_typed_by_its_status(
    relay: OpenAIRelayClient, flux_emulator: FluxEmulator, status: int
) -> None:
    flux_emulator.add_fault(
        "POST", "/v1/images/generations", status=status, body=b'{"error": ' + nested(100_000) + b"}", times=4
    )

    with pytest.raises({400: BadRequestError, 429: RateLimitedError, 500: UpstreamError}[status]):
        await relay.generate(request_for(Provider.OPENAI))


async def test_deeply_nested_poll_answers_are_upstream_errors(
    ace: AceDataClient, bfl: BflClient, flux_emulator: FluxEmulator
) -> None:
    ace_handle = (await ace.generate(request_for(Provider.ACEDATA))).handle
    bfl_handle = (await bfl.generate(request_for(Provider.BFL, model="flux-2-pro"))).handle
    flux_emulator.add_fault("POST", "/flux/tasks", body=b'{"items": ' + nested(100_000) + b"}", times=4)
    flux_emulator.add_fault("GET", "/v1/get_result", body=nested(100_000), times=4)

    with pytest.raises(UpstreamError):
        await ace.statuses([ace_handle])
    assert await bfl.statuses([bfl_handle]) == {}


def ace_record(task_id: str) -> dict[str, Any]:
    """A finished task's ``response`` whose seed is the placeholder "SEED" (see :func:`with_raw_seed`)."""
    image = {"image_url": "https://cdn.example/a.png", "seed": "SEED"}
    return {"success": True, "task_id": task_id, "data": [image]}


def with_raw_seed(document: object, seed: str) -> bytes:
    """JSON text of ``document`` whose "SEED" placeholder is replaced by the raw number ``seed``."""
    return json.dumps(document).replace('"SEED"', seed).encode()


@pytest.mark.parametrize("seed", ["1e400", "-1e400", "1e30", "-7", "3.5", "true", '"pop upbeat"', "1" * 25])
async def test_an_absurd_seed_becomes_none_in_polls_submits_and_callbacks(
    ace: AceDataClient, flux_emulator: FluxEmulator, seed: str
) -> None:
    handle = (await ace.generate(request_for(Provider.ACEDATA))).handle
    record = ace_record(handle)
    flux_emulator.add_fault(
        "POST", "/flux/tasks", body=with_raw_seed({"items": [{"id": handle, "response": record}]}, seed)
    )

    polled = (await ace.statuses([handle]))[handle]

    assert polled.state is TaskState.SUCCEEDED and polled.seed is None
    flux_emulator.add_fault("POST", "/flux/images", body=with_raw_seed(ace_record("t-2"), seed))
    assert (await ace.generate(request_for(Provider.ACEDATA))).handle == "t-2"
    called_back = ace.parse_callback(json.loads(with_raw_seed(record, seed)))
    assert called_back.state is TaskState.SUCCEEDED and called_back.seed is None


async def test_a_sane_seed_is_kept(ace: AceDataClient, flux_emulator: FluxEmulator) -> None:
    record = ace_record("t-1")
    assert ace.parse_callback(json.loads(with_raw_seed(record, "1698551532"))).seed == 1698551532
    assert ace.parse_callback(json.loads(with_raw_seed(record, "1698551532.0"))).seed == 1698551532


async def test_one_unreadable_task_record_does_not_hide_the_others(
    ace: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    first = (await ace.generate(request_for(Provider.ACEDATA))).handle
    second = (await ace.generate(request_for(Provider.ACEDATA))).handle
    good = {"id": second, "response": ace_record(second)}
    broken = {"id": first, "response": {"data": "not a list", "success": True}}
    flux_emulator.add_fault("POST", "/flux/tasks", body=json.dumps({"items": [broken, 17, good]}).encode())

    found = await ace.statuses([first, second])

    assert set(found) == {second}  # the broken one is asked again next time, up to its deadline
    assert found[second].state is TaskState.SUCCEEDED


async def test_an_acedata_handle_the_service_cannot_know_fails_alone(
    ace: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    good = (await ace.generate(request_for(Provider.ACEDATA))).handle
    poisoned = "x" * 5000

    found = await ace.statuses([poisoned, good])

    assert found[poisoned].state is TaskState.FAILED and isinstance(found[poisoned].error, UpstreamError)
    assert found[good].state is TaskState.SUCCEEDED
    ((sent,),) = [r.json["ids"] for r in flux_emulator.requests_to("POST", "/flux/tasks") if r.json]
    assert sent == good


async def test_a_task_id_that_cannot_be_followed_is_refused_at_submit(
    ace: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", body=json.dumps({"task_id": "../../" + "y" * 300}).encode())

    with pytest.raises(UpstreamError, match="cannot be followed"):
        await ace.generate(request_for(Provider.ACEDATA))


# -- byte caps -------------------------------------------------------------------------------------


async def test_an_oversized_status_answer_is_refused(ace: AceDataClient, flux_emulator: FluxEmulator) -> None:
    handle = (await ace.generate(request_for(Provider.ACEDATA))).handle
    padding = b" " * (10 * MiB)
    flux_emulator.add_fault("POST", "/flux/tasks", body=b'{"items": []' + padding + b"}", times=4)

    with pytest.raises(UpstreamError, match="limit"):
        await ace.statuses([handle])
    assert flux_emulator.count("POST", "/flux/tasks") == 4  # retried like any upstream failure
    assert (await ace.statuses([handle]))[handle].state is TaskState.SUCCEEDED


async def test_a_huge_streamed_answer_is_abandoned_with_bounded_memory(
    bfl: BflClient, flux_emulator: FluxEmulator
) -> None:
    """No Content-Length to go by: the reader stops once the cap is passed, and memory stays near the cap."""
    total = 256 * MiB
    handle = (await bfl.generate(request_for(Provider.BFL, model="flux-2-pro"))).handle
    flux_emulator.add_fault("GET", "/v1/get_result", stream=total)
    flux_emulator.add_fault("GET", "/v1/get_result", stream=total, status=500)

    tracemalloc.start()
    try:
        found = await bfl.statuses([handle])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert found[handle].state is TaskState.SUCCEEDED  # the third poll was answered normally
    assert peak < 4 * MAX_JSON_BYTES
    assert flux_emulator.streamed_bytes < total // 4


async def test_a_relay_inline_image_over_the_cap_is_refused_before_decoding(
    relay: OpenAIRelayClient, flux_emulator: FluxEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_decode = base64.b64decode

    def spy(text: str | bytes, validate: bool = False) -> bytes:
        decoded.append(len(text))
        return real_decode(text, validate=validate)

    monkeypatch.setattr(base64, "b64decode", spy)
    oversized = "A" * ((MAX_INLINE_IMAGE_BYTES // 3 + 1) * 4)
    flux_emulator.add_fault(
        "POST", "/v1/images/generations", body=json.dumps({"data": [{"b64_json": oversized}]}).encode()
    )

    with pytest.raises(UpstreamError, match="usable image"):
        await relay.generate(request_for(Provider.OPENAI))
    assert decoded == []


# -- member-facing text is ours --------------------------------------------------------------------


MASKED_LINK = "Bad `prompt`. [Re-verify your account](https://evil.example/verify) <@123> @everyone https://x.example"


def assert_neutral(message: str) -> None:
    assert "](" not in message
    assert "https://" not in message
    assert "<@1" not in message and "@everyone" not in message
    assert message.count("`") <= 2
    assert len(message) < 100 + MAX_SHOWN_REASON


@pytest.mark.parametrize(
    ("provider", "path"),
    [(Provider.ACEDATA, "/flux/images"), (Provider.OPENAI, "/v1/images/generations"), (Provider.BFL, "/v1/flux-2-pro")],
)
async def test_a_provider_reason_reaches_members_only_as_neutral_code(
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
    sleeps: SleepRecorder,
    provider: Provider,
    path: str,
) -> None:
    cls: Callable[..., FluxClient] = {
        Provider.ACEDATA: AceDataClient,
        Provider.OPENAI: OpenAIRelayClient,
        Provider.BFL: BflClient,
    }[provider]
    client = cls(session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT)
    flux_emulator.add_fault("POST", path, status=400, message=MASKED_LINK + " " + "x" * 500)

    with pytest.raises(BadRequestError) as refused:
        await client.generate(
            request_for(provider, model="flux-2-pro") if provider is Provider.BFL else request_for(provider)
        )

    assert_neutral(str(refused.value.user_message))
    assert "Re-verify your account" in str(refused.value.user_message)
    assert "evil.example/verify" in refused.value.detail  # the operator still sees it all in the log


def test_our_own_validation_text_is_shown_as_it_is() -> None:
    with pytest.raises(InvalidParameters) as refused:
        catalog_for(Provider.ACEDATA).check_generate(prompt="x", model="no-such-model", size="1:1", count=1)
    assert str(refused.value.user_message) == refused.value.detail


def test_an_empty_or_blank_reason_gives_our_sentence_alone() -> None:
    error = error_for(status=400, code=None, message="` \u200b `")
    assert error.user_message == BadRequestError.default_user_message


async def test_an_unusable_url_is_refused_before_anything_is_sent(
    http_session: aiohttp.ClientSession, sleeps: SleepRecorder
) -> None:
    client = AceDataClient(session=http_session, api_key=SecretStr(KEY), base_url="http://[::1", retry=NO_WAIT)

    with pytest.raises(FluxConnectionError) as refused:
        await client.generate(request_for(Provider.ACEDATA))
    assert refused.value.reached_server is False  # so a submit may safely be tried again later


async def test_an_unknowable_acedata_handle_fails_even_while_the_service_is_down(
    ace: AceDataClient, flux_emulator: FluxEmulator
) -> None:
    good = (await ace.generate(request_for(Provider.ACEDATA))).handle
    flux_emulator.add_fault("POST", "/flux/tasks", status=503, times=4)

    found = await ace.statuses([good, "bad id with spaces"])

    assert set(found) == {"bad id with spaces"} and found["bad id with spaces"].state is TaskState.FAILED
    flux_emulator.add_fault("POST", "/flux/tasks", status=503, times=4)
    with pytest.raises(UpstreamError):
        await ace.statuses([good])  # nothing else to report: the failure itself is


def test_a_callback_naming_an_impossible_task_id_is_refused(ace: AceDataClient) -> None:
    body = {"success": True, "task_id": "t" * 100_000, "data": [{"image_url": "https://x/a.png"}]}
    with pytest.raises(CallbackError):
        ace.parse_callback(body)


def test_a_provider_message_is_one_line_in_the_log() -> None:
    error = error_for(status=500, code=None, message="boom\nINFO fake log line\r\n")
    assert "\n" not in str(error) and "\r" not in str(error)
