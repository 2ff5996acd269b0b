"""Fuzzing every parser of provider and callback input: whatever arrives, only our typed errors come out.

The parsers are pure functions (the clients call them on the JSON they read), so most properties run
them directly on generated JSON: arbitrary values, and near-valid answers whose leaves are arbitrary
(absurd numbers such as ``1e400``, wrong types, deep nesting). A few cases go end to end through the real
clients against the Flux emulator, from raw bytes on the wire.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.flux import (
    AceDataClient,
    BflClient,
    CallbackError,
    FluxAPIError,
    FluxClient,
    FluxError,
    GenerateRequest,
    InvalidParameters,
    OpenAIRelayClient,
    RetryPolicy,
    TaskState,
    acedata,
    bfl,
    catalog_for,
    openai_relay,
)
from bot.flux.catalog import ratio_to_pixels
from bot.flux.errors import error_for, shown_reason
from bot.flux.http import MAX_RETRY_AFTER, parse_json, retry_after_seconds
from bot.settings import Provider
from tests.conftest import KEY
from tests.fluxemu import FluxEmulator

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Keys the vendors use, so that generated objects often look like real answers.
KEYS = st.sampled_from(
    [
        "success", "task_id", "trace_id", "data", "error", "code", "message", "image_url", "seed", "timings",
        "prompt", "items", "id", "response", "status", "result", "sample", "polling_url", "detail", "loc",
        "msg", "type", "url", "b64_json", "created", "revised_prompt", "progress",
    ]
)  # fmt: skip
ABSURD_NUMBERS = st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0, 2**63, 2**64, -(2**63) - 1, 10**40])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    ABSURD_NUMBERS,
    st.text(max_size=40),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), inner, max_size=5)
    ),
    max_leaves=20,
)
DEEP = json.loads(b'{"data": ' + b"[" * 900 + b"]" * 900 + b"}")


def leaf(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field that is usually the right kind of value, sometimes anything at all."""
    return st.one_of(value, JSON)


def fixed(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of these fields (each one may be missing) and an occasional stray field."""
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda found: st.dictionaries(KEYS, JSON, max_size=2).map(lambda extra: {**extra, **found})
    )


TEXT = st.text(max_size=30)
ACE_ERROR = leaf(st.one_of(TEXT, fixed(code=leaf(TEXT), message=leaf(TEXT))))
ACE_IMAGE = fixed(image_url=leaf(TEXT), seed=leaf(st.one_of(st.integers(), ABSURD_NUMBERS)), timings=JSON)
ACE_RESPONSE = fixed(
    success=leaf(st.booleans()),
    task_id=leaf(TEXT),
    trace_id=leaf(TEXT),
    data=leaf(st.lists(ACE_IMAGE, max_size=3)),
    error=ACE_ERROR,
)
ACE_BATCH = fixed(items=leaf(st.lists(fixed(id=leaf(TEXT), trace_id=leaf(TEXT), response=leaf(ACE_RESPONSE)))))
ACE_ERROR_BODY = fixed(success=JSON, error=ACE_ERROR, trace_id=leaf(TEXT))

BFL_SUBMIT = fixed(id=leaf(TEXT), polling_url=leaf(TEXT))
BFL_POLL = fixed(
    id=leaf(TEXT),
    status=leaf(st.sampled_from(["Pending", "Ready", "Error", "Task not found", "Content Moderated", "?"])),
    result=leaf(fixed(sample=leaf(TEXT), seed=leaf(st.one_of(st.integers(), ABSURD_NUMBERS)))),
)
BFL_ERROR_BODY = fixed(detail=leaf(st.one_of(TEXT, st.lists(fixed(loc=JSON, msg=JSON, type=JSON), max_size=2))))

RELAY_ANSWER = fixed(
    created=leaf(st.integers()),
    data=leaf(st.lists(fixed(url=leaf(TEXT), b64_json=leaf(st.one_of(TEXT, st.just("aGVsbG8=")))), max_size=3)),
)
RELAY_ERROR_BODY = fixed(error=leaf(st.one_of(TEXT, fixed(message=leaf(TEXT), type=leaf(TEXT), code=leaf(TEXT)))))

STATUSES = st.integers(min_value=100, max_value=599)
HEADERS = st.dictionaries(st.sampled_from(["Retry-After", "retry-after", "X-Other"]), st.text(max_size=40), max_size=2)


def only_flux_errors(call: Any, *args: Any) -> Any:
    """Run ``call``; a FluxError is an allowed outcome (returned), anything else fails the test."""
    try:
        return call(*args)
    except FluxError as error:
        assert str(error.user_message)
        return error


# -- AceData ----------------------------------------------------------------------------------------


@FUZZ
@given(body=st.one_of(ACE_BATCH, JSON), ids=st.lists(TEXT, max_size=3))
@example(body={"items": [{"id": "t", "response": {"data": [{"image_url": "u", "seed": math.inf}]}}]}, ids=["t"])
def test_acedata_batch_answers(body: Any, ids: list[str]) -> None:
    found = only_flux_errors(acedata.batch_answer, body, ids)
    if isinstance(found, dict):
        assert set(found) <= set(ids)
        for status in found.values():
            assert (status.state is TaskState.FAILED) == (status.error is not None)


@FUZZ
@given(body=st.one_of(ACE_RESPONSE, JSON))
@example(body={"task_id": "t", "data": [{"image_url": "u", "seed": 1e400}]})
def test_acedata_submit_answers(body: Any) -> None:
    only_flux_errors(acedata.submit_answer, body)


@FUZZ
@given(body=st.one_of(ACE_RESPONSE, JSON))
@example(body={"success": True, "task_id": "t", "data": [{"image_url": "u", "seed": -math.inf}]})
def test_callback_bodies(body: Any) -> None:
    status = only_flux_errors(acedata.callback_answer, body)
    assert not isinstance(status, FluxError) or isinstance(status, CallbackError)


@FUZZ
@given(status=STATUSES, body=st.one_of(ACE_ERROR_BODY, JSON), headers=HEADERS)
def test_acedata_error_bodies(status: int, body: Any, headers: dict[str, str]) -> None:
    assert isinstance(acedata.error_answer(status, body, headers), FluxAPIError)


# -- Black Forest Labs ------------------------------------------------------------------------------


@FUZZ
@given(body=st.one_of(BFL_SUBMIT, JSON))
def test_bfl_submit_answers(body: Any) -> None:
    only_flux_errors(bfl.submit_answer, body, "https://api.bfl.ai")


@FUZZ
@given(body=st.one_of(BFL_POLL, JSON))
@example(body={"status": "Ready", "result": {"sample": "u", "seed": 1e400}})
def test_bfl_poll_answers(body: Any) -> None:
    status = only_flux_errors(bfl.poll_answer, "https://api.bfl.ai/v1/get_result?id=1", body)
    if not isinstance(status, FluxError) and status.images:
        assert status.seed is None or 0 <= status.seed < 2**63


@FUZZ
@given(status=STATUSES, body=st.one_of(BFL_ERROR_BODY, JSON), headers=HEADERS)
def test_bfl_error_bodies(status: int, body: Any, headers: dict[str, str]) -> None:
    assert isinstance(bfl.error_answer(status, body, headers), FluxAPIError)


@FUZZ
@given(url=st.one_of(st.text(max_size=60), st.builds("https://{}/{}".format, st.text(max_size=20), TEXT)))
@example(url="http://[::1")
@example(url="https://api.eu.bfl.ai:99999/x")
def test_bfl_polling_urls(url: str) -> None:
    assert bfl.key_may_go_to(url, "https://api.bfl.ai") in (True, False)


# -- OpenAI-style relays ----------------------------------------------------------------------------


@FUZZ
@given(body=st.one_of(RELAY_ANSWER, JSON), seed=st.one_of(st.none(), st.integers(min_value=0, max_value=2**31)))
def test_relay_answers(body: Any, seed: int | None) -> None:
    only_flux_errors(openai_relay.generation_answer, body, seed)


@FUZZ
@given(status=STATUSES, body=st.one_of(RELAY_ERROR_BODY, JSON), headers=HEADERS)
def test_relay_error_bodies(status: int, body: Any, headers: dict[str, str]) -> None:
    assert isinstance(openai_relay.error_answer(status, body, headers), FluxAPIError)


def test_deep_nesting_everywhere() -> None:
    """Nesting just below what json.loads refuses, in every parser and field (examples are not printable)."""
    only_flux_errors(acedata.batch_answer, DEEP, ["t"])
    only_flux_errors(acedata.batch_answer, {"items": [DEEP, {"id": "t", "response": DEEP}]}, ["t"])
    only_flux_errors(acedata.submit_answer, DEEP)
    only_flux_errors(acedata.callback_answer, DEEP)
    only_flux_errors(bfl.poll_answer, "h", {"status": "Ready", "result": {"sample": "u", "seed": DEEP}})
    only_flux_errors(openai_relay.generation_answer, DEEP, None)
    for error_answer in (acedata.error_answer, bfl.error_answer, openai_relay.error_answer):
        assert isinstance(error_answer(422, {"detail": [{"loc": DEEP, "msg": DEEP}], "error": DEEP}, {}), FluxAPIError)


# -- raw bytes, Retry-After, and the text shown to members --------------------------------------------


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), JSON.map(lambda value: json.dumps(value).encode())))
@example(raw=b"[" * 100_000)
@example(raw=b'{"seed": 1e400, "n": ' + b"9" * 5000 + b"}")
def test_raw_bytes_through_every_parser(raw: bytes) -> None:
    body = parse_json(raw)
    only_flux_errors(acedata.submit_answer, body)
    only_flux_errors(bfl.submit_answer, body, "https://api.bfl.ai")
    only_flux_errors(bfl.poll_answer, "https://api.bfl.ai/v1/get_result?id=1", body)
    only_flux_errors(openai_relay.generation_answer, body, None)
    only_flux_errors(acedata.batch_answer, body, ["t"])
    only_flux_errors(acedata.callback_answer, body)
    for error_answer in (acedata.error_answer, bfl.error_answer, openai_relay.error_answer):
        assert isinstance(error_answer(500, body, {}), FluxAPIError)


def http_dates() -> st.SearchStrategy[str]:
    moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
    zones = st.sampled_from(["GMT", "UTC", "CET", "EST", "-0000", "+0100", "+9999", "Z", ""])
    return st.builds(lambda when, zone: when.strftime("%a, %d %b %Y %H:%M:%S ") + zone, moments, zones)


@FUZZ
@given(value=st.one_of(st.text(max_size=40), http_dates(), st.floats().map(str), st.integers().map(str)))
@example(value="Wed, 21 Oct 2015 07:28:00 CET")
@example(value="1e999")
@example(value="9" * 400)
def test_retry_after_values(value: str) -> None:
    seconds = retry_after_seconds({"Retry-After": value})
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= MAX_RETRY_AFTER)


def test_a_future_http_date_is_its_distance_from_now() -> None:
    when = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = retry_after_seconds({"Retry-After": when})
    assert seconds is not None and 290 <= seconds <= 300


@FUZZ
@given(message=st.text(max_size=400))
@example(message="[Re-verify your account](https://evil.example) <@123> @everyone <#1> <@&2> `code`")
@example(message="h\u200bttps://x and ht\u200btp://y")
def test_a_provider_reason_never_becomes_a_link_or_mention(message: str) -> None:
    shown = shown_reason(message)
    assert "`" not in shown and "](" not in shown and "://" not in shown
    assert all(part.startswith("\u200b") for part in shown.split("@")[1:])
    assert len(shown) <= 120
    user_message = str(error_for(status=400, code=None, message=message).user_message)
    assert user_message.count("`") in (0, 2)


# -- end to end: raw bytes on the wire, through the real clients --------------------------------------

CLIENTS: dict[Provider, tuple[type[FluxClient], str, str]] = {
    Provider.ACEDATA: (AceDataClient, "POST", "/flux/tasks"),
    Provider.BFL: (BflClient, "GET", "/v1/get_result"),
    Provider.OPENAI: (OpenAIRelayClient, "POST", "/v1/images/generations"),
}


async def through_the_client(provider: Provider, status: int, raw: bytes, retry_after: str) -> None:
    cls, method, path = CLIENTS[provider]
    async with FluxEmulator() as emulator, aiohttp.ClientSession() as session:
        client = cls(session=session, api_key=SecretStr(KEY), base_url=emulator.base_url, retry=RetryPolicy(attempts=1))
        model = catalog_for(provider).models[0].name
        request = GenerateRequest(prompt="a fuzzed lighthouse", model=model)
        try:
            if provider is Provider.OPENAI:
                emulator.add_fault(method, path, status=status, body=raw, retry_after=retry_after)
                await client.generate(request)
            else:
                handle = (await client.generate(request)).handle
                emulator.add_fault(method, path, status=status, body=raw, retry_after=retry_after)
                await client.statuses([handle])
        except FluxError:
            pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    provider=st.sampled_from(list(CLIENTS)),
    status=st.sampled_from([200, 201, 302, 400, 401, 404, 422, 429, 500, 503]),
    raw=st.one_of(st.binary(max_size=100), JSON.map(lambda value: json.dumps(value).encode())),
    retry_after=st.one_of(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30), http_dates()
    ),
)
@example(provider=Provider.OPENAI, status=200, raw=b"[" * 100_000, retry_after="1")
@example(provider=Provider.ACEDATA, status=503, raw=b"{}", retry_after="Wed, 21 Oct 2015 07:28:00 CET")
def test_raw_answers_through_the_clients(provider: Provider, status: int, raw: bytes, retry_after: str) -> None:
    asyncio.run(through_the_client(provider, status, raw, retry_after.strip()))


# -- what members type: model, size, count, prompt ------------------------------------------------------

SIZES = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"[0-9]{1,6}[x:][0-9]{1,6}\n?", fullmatch=True),
    st.sampled_from(["1024x1024\n", "\u0661\u0660\u0662\u0664x\u0661\u0660\u0662\u0664", "0:5", "16:0", "00:00"]),
)


@FUZZ
@given(
    provider=st.sampled_from(list(Provider)),
    model=st.one_of(st.text(max_size=20), st.sampled_from(["flux-2-pro", "flux-dev", "flux-kontext-pro"])),
    size=SIZES,
    count=st.integers(min_value=-(2**70), max_value=2**70),
    prompt=st.text(max_size=50),
)
def test_member_requests_are_checked_into_invalid_parameters_only(
    provider: Provider, model: str, size: str, count: int, prompt: str
) -> None:
    catalog = catalog_for(provider)
    try:
        spec = catalog.check_generate(prompt=prompt, model=model, size=size, count=count)
        catalog.check_edit(prompt=prompt, model=model, size=size)
    except InvalidParameters:
        return
    width, height = ratio_to_pixels(size, multiple=spec.pixels.multiple if spec.pixels else 32)
    assert width > 0 and height > 0
    assert size.isascii() and "\n" not in size
