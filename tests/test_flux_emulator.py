"""The Flux emulator behaves like the vendors in FLUX_API.md, seen through a real HTTP client on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from tests.fluxemu import FluxEmulator

AUTH = {"authorization": "Bearer test-key"}
BFL_AUTH = {"x-key": "test-key"}
GENERATE = {"action": "generate", "prompt": "a white siamese cat", "size": "1:1"}


# ----- helpers and fixtures ------------------------------------------------------------------------


@pytest.fixture
def emu(flux_emulator: FluxEmulator) -> FluxEmulator:
    """The plugin's fixture under a short name."""
    return flux_emulator


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Receiver:
    """A tiny webhook server that keeps every JSON body POSTed to it."""

    url: str = ""
    bodies: list[Any] = field(default_factory=list)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    received = Receiver()

    async def hook(request: web.Request) -> web.Response:
        received.bodies.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    received.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield received
    await runner.cleanup()


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=AUTH if headers is None else headers) as response:
        return response.status, await response.json()


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, headers=BFL_AUTH if headers is None else headers) as response:
        return response.status, await response.json()


async def fetch_png(http: aiohttp.ClientSession, url: str) -> bytes:
    """GET a result URL and check it is a real PNG served as image/png."""
    async with http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        data = await response.read()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (64, 64)
    return data


def png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


async def retrieve(http: aiohttp.ClientSession, emu: FluxEmulator, task_id: str) -> dict[str, Any]:
    status, record = await post(http, f"{emu.base_url}/flux/tasks", {"action": "retrieve", "id": task_id})
    assert status == 200
    assert isinstance(record, dict)
    return record


# ----- lifecycle -----------------------------------------------------------------------------------


async def test_emulator_binds_loopback_and_closes_cleanly(http: aiohttp.ClientSession) -> None:
    emulator = FluxEmulator(api_key="k")
    with pytest.raises(RuntimeError):
        _ = emulator.base_url  # nothing is bound before start()
    async with emulator:
        assert emulator.base_url.startswith("http://127.0.0.1:")
        assert not emulator.base_url.endswith("/")
        status, _ = await post(http, f"{emulator.base_url}/flux/images", GENERATE, {"authorization": "Bearer k"})
        assert status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, f"{emulator.base_url}/flux/images", GENERATE)


async def test_close_cancels_calls_still_being_served(http: aiohttp.ClientSession) -> None:
    emulator = FluxEmulator()
    await emulator.start()
    emulator.task_delay = 3600.0
    call = asyncio.create_task(post(http, f"{emulator.base_url}/flux/images", GENERATE))
    await emulator.wait_until(lambda: emulator.in_flight() == 1)

    await emulator.close()

    with pytest.raises(aiohttp.ClientConnectionError):
        await call


async def test_tasks_finish_by_themselves_as_real_time_passes(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.task_delay = 0.05  # no advance(): only the emulator's own clock loop can finish this task

    async with asyncio.timeout(5):
        status, answer = await post(http, f"{emu.base_url}/flux/images", GENERATE)

    assert status == 200
    task = emu.tasks[answer["task_id"]]
    assert task.finished_at is not None
    assert task.finished_at == pytest.approx(task.created_at + 0.05)
    assert emu.now() >= task.finished_at


# ----- AceData -------------------------------------------------------------------------------------


async def test_acedata_sync_generate_answers_images_served_as_distinct_pngs(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "count": 2})

    assert status == 200
    assert body["success"] is True
    assert body["task_id"] in emu.tasks and body["trace_id"]
    assert [item["prompt"] for item in body["data"]] == ["a white siamese cat"] * 2
    assert all(isinstance(item["seed"], int) for item in body["data"])
    assert {type(item["timings"]) for item in body["data"]} == {int, dict}  # both shapes the service uses
    images = [await fetch_png(http, item["image_url"]) for item in body["data"]]
    assert images[0] != images[1]
    assert images == [emu.image_bytes(item["image_url"]) for item in body["data"]]
    assert emu.tasks[body["task_id"]].model == "flux-dev"  # the default model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action": "edits"}, "action is invalid"),
        ({"prompt": None}, "prompt is required"),
        ({"size": None}, "size is required"),
        ({"model": "flux-pro-1.1"}, "model is invalid"),  # dropped from the current list
        ({"count": 0}, "count is invalid"),
        ({"action": "edit"}, "image_url is required"),
    ],
)
async def test_acedata_rejects_invalid_images_requests_with_bad_request(
    emu: FluxEmulator, http: aiohttp.ClientSession, change: dict[str, Any], message: str
) -> None:
    body = {key: value for key, value in {**GENERATE, **change}.items() if value is not None}

    status, answer = await post(http, f"{emu.base_url}/flux/images", body)

    assert status == 400
    assert answer["success"] is False
    assert answer["error"] == {"code": "bad_request", "message": message}
    assert answer["trace_id"]
    assert emu.tasks == {}


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "test-key"}])
async def test_acedata_refuses_missing_or_wrong_token(
    emu: FluxEmulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    for path, body in (("/flux/images", GENERATE), ("/flux/tasks", {"action": "retrieve", "id": "x"})):
        status, answer = await post(http, emu.base_url + path, body, headers)
        assert status == 401
        assert answer["success"] is False
        assert answer["error"]["code"] == "invalid_token"
    assert emu.tasks == {}
    assert emu.count("POST", "/flux/images") == 1  # refused requests are still recorded


async def test_acedata_async_task_is_pending_until_the_clock_passes_its_delay(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.task_delay = 1200.0

    status, submitted = await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "async": True})
    assert status == 200
    assert set(submitted) == {"task_id", "trace_id"}

    pending = await retrieve(http, emu, submitted["task_id"])
    assert pending["id"] == submitted["task_id"]
    assert pending["type"] == "images"
    assert pending["request"] == {**GENERATE, "async": True}
    assert {"api_id", "trace_id", "created_at", "started_at"} <= set(pending)
    assert not {"response", "finished_at", "elapsed", "state", "status"} & set(pending)
    assert emu.in_flight() == 1

    emu.advance(1200.0)

    done = await retrieve(http, emu, submitted["task_id"])
    assert done["response"]["success"] is True
    assert done["response"]["task_id"] == submitted["task_id"]
    assert done["elapsed"] == pytest.approx(1200.0)
    assert done["finished_at"] == pytest.approx(done["created_at"] + 1200.0)
    await fetch_png(http, done["response"]["data"][0]["image_url"])
    assert emu.in_flight() == 0


async def test_retrieve_batch_returns_known_tasks_in_request_order(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    ids = [(await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "async": True}))[1]["task_id"] for _ in "abc"]

    status, batch = await post(
        http, f"{emu.base_url}/flux/tasks", {"action": "retrieve_batch", "ids": [ids[2], "unknown", ids[0]]}
    )

    assert status == 200
    assert batch["count"] == 2
    assert [item["id"] for item in batch["items"]] == [ids[2], ids[0]]
    assert all(item["response"]["success"] for item in batch["items"])  # task_delay 0: done at once


async def test_retrieve_batch_refuses_more_than_50_ids_and_unknown_single_ids(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    url = f"{emu.base_url}/flux/tasks"
    status, answer = await post(http, url, {"action": "retrieve_batch", "ids": [f"id{i}" for i in range(51)]})
    assert status == 400
    assert answer["error"] == {"code": "bad_request", "message": "ids must contain at most 50 items"}

    status, answer = await post(http, url, {"action": "retrieve_batch", "ids": [f"id{i}" for i in range(50)]})
    assert (status, answer) == (200, {"items": [], "count": 0})

    status, answer = await post(http, url, {"action": "retrieve", "id": "no-such-task"})
    assert status == 404
    assert answer["error"]["code"] == "not_found"


async def test_callback_is_posted_when_the_task_finishes(
    emu: FluxEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.task_delay = 60.0
    status, submitted = await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "callback_url": receiver.url})
    assert status == 200
    assert set(submitted) == {"task_id"}
    assert emu.callbacks == []

    emu.advance(60.0)
    [delivery] = await emu.wait_for_callbacks(1)

    assert delivery.url == receiver.url
    assert delivery.status == 204
    assert delivery.error is None
    assert receiver.bodies == [delivery.json]
    assert delivery.json["success"] is True
    assert delivery.json["task_id"] == submitted["task_id"]
    await fetch_png(http, delivery.json["data"][0]["image_url"])


async def test_callback_reports_a_failed_task_and_an_unreachable_receiver(
    emu: FluxEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emu.fail_next_task(code="service_unavailable", message="upstream busy")
    await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "callback_url": receiver.url})
    await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "callback_url": "http://127.0.0.1:1/hook"})

    deliveries = await emu.wait_for_callbacks(2)

    failed = next(d for d in deliveries if d.url == receiver.url)
    assert failed.json["success"] is False
    assert failed.json["error"] == {"code": "service_unavailable", "message": "upstream busy"}
    assert {"task_id", "trace_id"} <= set(failed.json)
    unreachable = next(d for d in deliveries if d.url != receiver.url)
    assert unreachable.status is None
    assert unreachable.error


async def test_edit_fetches_the_source_image_like_the_service(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    source = emu.add_file("source.png", png(), "image/png")

    status, answer = await post(
        http,
        f"{emu.base_url}/flux/images",
        {
            "action": "edit",
            "prompt": "make it blue",
            "size": "1:1",
            "model": "flux-kontext-pro",
            "image_url": source,
            "count": 3,
        },
    )

    assert status == 200
    assert len(answer["data"]) == 1  # count is ignored for edits
    assert emu.count("GET", "/files/source.png") == 1
    assert emu.tasks[answer["task_id"]].source_url == source
    assert emu.image_bytes(source) == png()


@pytest.mark.parametrize("source", ["text", "missing", "unreachable"])
async def test_edit_whose_source_cannot_be_fetched_fails_with_fetch_failed(
    emu: FluxEmulator, http: aiohttp.ClientSession, source: str
) -> None:
    urls = {
        "text": emu.add_file("notes.txt", b"not an image", "text/plain"),
        "missing": f"{emu.base_url}/files/missing.png",
        "unreachable": "http://127.0.0.1:1/source.png",
    }
    edit = {"action": "edit", "prompt": "p", "size": "1:1", "image_url": urls[source]}

    status, answer = await post(http, f"{emu.base_url}/flux/images", edit)
    assert status == 500
    assert answer["error"] == {"code": "api_error", "message": "fetch failed"}

    _, submitted = await post(http, f"{emu.base_url}/flux/images", {**edit, "async": True})
    record = await retrieve(http, emu, submitted["task_id"])  # fetched while accepting: known at once
    assert record["response"] == {
        "success": False,
        "task_id": submitted["task_id"],
        "trace_id": submitted["trace_id"],
        "error": {"code": "api_error", "message": "fetch failed"},
    }


async def test_fail_next_task_turns_a_sync_call_into_an_http_error_once(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.fail_next_task()

    status, answer = await post(http, f"{emu.base_url}/flux/images", GENERATE)
    assert status == 500
    assert answer["success"] is False
    assert answer["error"] == {"code": "api_error", "message": "fetch failed"}

    status, _ = await post(http, f"{emu.base_url}/flux/images", GENERATE)
    assert status == 200


async def test_unknown_paths_are_404(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    for method, path in (("POST", "/flux/videos"), ("GET", "/flux/images")):
        async with http.request(method, emu.base_url + path, headers=AUTH) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "no_api"
    for path in ("/nothing", "/images/no-task/0.png", "/files/none"):
        async with http.get(emu.base_url + path) as response:
            assert response.status == 404
    with pytest.raises(KeyError):
        emu.image_bytes(f"{emu.base_url}/images/no-task/0.png")


# ----- OpenAI-style relay --------------------------------------------------------------------------


async def test_openai_relay_answers_urls_with_empty_b64_json(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    status, answer = await post(
        http, f"{emu.base_url}/v1/images/generations", {"model": "flux-kontext-pro", "prompt": "pig", "n": 2}
    )

    assert status == 200
    assert isinstance(answer["created"], int)
    assert [item["b64_json"] for item in answer["data"]] == ["", ""]
    images = [await fetch_png(http, item["url"]) for item in answer["data"]]
    assert images[0] != images[1]
    assert emu.in_flight() == 0


async def test_openai_relay_answers_b64_json_with_empty_url(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.openai_format = "b64_json"
    data_uri = "data:image/png;base64," + base64.b64encode(png()).decode()

    status, answer = await post(
        http,
        f"{emu.base_url}/v1/images/generations",
        {"model": "flux-kontext-max", "prompt": "pig", "input_image": data_uri, "aspect_ratio": "16:9"},
    )

    assert status == 200
    [item] = answer["data"]
    assert item["url"] == ""
    [task] = emu.tasks.values()
    assert base64.b64decode(item["b64_json"]) == emu.image_bytes(task.images[0])
    assert task.provider == "openai"
    assert task.source_url == data_uri
    with pytest.raises(ValueError, match="openai_format"):
        emu.openai_format = "png"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "param"),
    [
        ({"model": "flux-dev", "prompt": "p"}, {}, 401, "invalid_api_key", None),
        ({"model": "flux-dev", "prompt": "p"}, {"authorization": "Bearer no"}, 401, "invalid_api_key", None),
        ({"model": "flux-9", "prompt": "p"}, AUTH, 404, "model_not_found", "model"),
        ({"model": "flux-dev"}, AUTH, 400, "invalid_request_error", "prompt"),
        (
            {"model": "flux-dev", "prompt": "p", "aspect_ratio": "3:2"},
            AUTH,
            400,
            "invalid_request_error",
            "aspect_ratio",
        ),
        (
            {"model": "flux-dev", "prompt": "p", "input_image": "null"},
            AUTH,
            400,
            "invalid_request_error",
            "input_image",
        ),
        (
            {"model": "flux-dev", "prompt": "p", "input_image": "http://127.0.0.1:1/x.png"},
            AUTH,
            400,
            "invalid_request_error",
            "input_image",
        ),
    ],
)
async def test_openai_relay_errors_use_the_openai_shape(
    emu: FluxEmulator,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    code: str,
    param: str | None,
) -> None:
    answered, answer = await post(http, f"{emu.base_url}/v1/images/generations", body, headers)

    assert answered == status
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["code"] == code
    assert answer["error"]["param"] == param
    assert answer["error"]["message"]
    assert emu.tasks == {}


async def test_openai_relay_reports_a_failed_generation_as_an_http_error(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.fail_next_task(code="insufficient_user_quota", message="quota exhausted")

    status, answer = await post(http, f"{emu.base_url}/v1/images/generations", {"model": "flux-pro", "prompt": "p"})

    assert status == 403
    assert answer["error"]["code"] == "insufficient_user_quota"
    assert answer["error"]["message"] == "quota exhausted"


async def test_openai_calls_being_served_count_as_in_flight(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.task_delay = 30.0
    body = {"model": "flux-dev", "prompt": "p"}
    calls = [asyncio.create_task(post(http, f"{emu.base_url}/v1/images/generations", body)) for _ in range(3)]

    await emu.wait_until(lambda: emu.in_flight() == 3)
    assert not any(call.done() for call in calls)
    emu.advance(30.0)
    results = await asyncio.gather(*calls)

    assert [status for status, _ in results] == [200, 200, 200]
    assert emu.max_in_flight == 3
    assert emu.in_flight() == 0


# ----- Black Forest Labs ---------------------------------------------------------------------------


async def test_bfl_task_is_pending_then_ready_with_a_png_sample(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.task_delay = 10.0

    status, submitted = await post(http, f"{emu.base_url}/v1/flux-pro-1.1", {"prompt": "fox", "seed": 7}, BFL_AUTH)
    assert status == 200
    assert submitted["polling_url"] == f"{emu.base_url}/v1/get_result?id={submitted['id']}"

    _, pending = await get(http, submitted["polling_url"])
    assert pending["status"] == "Pending"
    assert pending["result"] is None
    assert isinstance(pending["progress"], float)

    emu.advance(10.0)
    _, ready = await get(http, submitted["polling_url"])
    assert ready["id"] == submitted["id"]
    assert ready["status"] == "Ready"
    assert ready["result"]["seed"] == 7
    assert ready["result"]["prompt"] == "fox"
    assert ready["details"] is None
    await fetch_png(http, ready["result"]["sample"])


@pytest.mark.parametrize("status", ["Error", "Request Moderated", "Content Moderated"])
async def test_bfl_next_status_sets_the_final_status(
    emu: FluxEmulator, http: aiohttp.ClientSession, status: str
) -> None:
    emu.bfl_next_status(status)
    _, submitted = await post(http, f"{emu.base_url}/v1/flux-kontext-pro", {"prompt": "p"}, BFL_AUTH)

    _, polled = await get(http, submitted["polling_url"])

    assert polled == {"id": submitted["id"], "status": status, "result": None, "progress": None, "details": None}
    assert emu.in_flight() == 0


async def test_bfl_task_not_found_and_unknown_words(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.bfl_next_status("Task not found")
    emu.bfl_next_status("Processing")
    _, lost = await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)
    _, stuck = await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)

    emu.advance(3600.0)

    assert await get(http, lost["polling_url"]) == (200, {"id": lost["id"], "status": "Task not found"})
    _, polled = await get(http, stuck["polling_url"])
    assert polled["status"] == "Processing"
    assert emu.in_flight() == 1  # an unknown word never finishes
    assert await get(http, f"{emu.base_url}/v1/get_result?id=nope") == (200, {"id": "nope", "status": "Task not found"})


async def test_bfl_input_image_is_fetched_or_decoded(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    plain = base64.b64encode(png()).decode()
    _, good = await post(http, f"{emu.base_url}/v1/flux-kontext-max", {"prompt": "p", "input_image": plain}, BFL_AUTH)
    bad_url = emu.add_file("bad.png", b"\x89PNG broken", "image/png")
    _, bad = await post(http, f"{emu.base_url}/v1/flux-kontext-max", {"prompt": "p", "input_image": bad_url}, BFL_AUTH)

    assert emu.in_flight() == 0
    assert (await get(http, good["polling_url"]))[1]["status"] == "Ready"
    assert (await get(http, bad["polling_url"]))[1]["status"] == "Error"
    assert emu.tasks[bad["id"]].source_url == bad_url


async def test_bfl_auth_model_and_validation_errors(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    base = emu.base_url
    not_authenticated = {"detail": "Not authenticated - Invalid Authentication"}
    assert await post(http, f"{base}/v1/flux-dev", {"prompt": "p"}, {"x-key": "wrong"}) == (403, not_authenticated)
    assert await get(http, f"{base}/v1/get_result?id=x", {}) == (403, not_authenticated)
    assert await post(http, f"{base}/v1/flux-9000", {"prompt": "p"}, BFL_AUTH) == (404, {"detail": "Not Found"})

    status, answer = await post(http, f"{base}/v1/flux-dev", {"width": 1000, "aspect_ratio": "21:8"}, BFL_AUTH)

    assert status == 422
    assert answer["detail"][0] == {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}
    assert [error["loc"] for error in answer["detail"]] == [
        ["body", "prompt"],
        ["body", "width"],
        ["body", "aspect_ratio"],
    ]
    status, _ = await post(http, f"{base}/v1/flux-pro-1.1", {"prompt": "p", "height": 1472}, BFL_AUTH)
    assert status == 422
    status, _ = await post(http, f"{base}/v1/flux-pro-1.1", {"prompt": "p", "width": 1440, "height": 256}, BFL_AUTH)
    assert status == 200
    assert len(emu.tasks) == 1


# ----- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fault", "status", "expected"),
    [
        (
            "/flux/images",
            {"code": "too_many_requests"},
            429,
            {"success": False, "error": {"code": "too_many_requests", "message": "too many requests"}},
        ),
        (
            "/flux/images",
            {"status": 403, "code": "content_moderated", "message": "nsfw"},
            403,
            {"success": False, "error": {"code": "content_moderated", "message": "nsfw"}},
        ),
        (
            "/v1/images/generations",
            {"code": "rate_limit_exceeded", "message": "slow down"},
            429,
            {
                "error": {
                    "message": "slow down",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
        ),
        (
            "/v1/flux-dev",
            {"status": 429},
            429,
            {"detail": "Rate limit exceeded. Please wait before sending more requests."},
        ),
        ("/v1/flux-dev", {"status": 402}, 402, {"detail": "Insufficient credits"}),
    ],
)
async def test_injected_errors_use_the_vendor_envelope_and_retry_after(
    emu: FluxEmulator,
    http: aiohttp.ClientSession,
    path: str,
    fault: dict[str, Any],
    status: int,
    expected: dict[str, Any],
) -> None:
    emu.add_fault("POST", path, retry_after=2, times=2, **fault)
    bodies = {
        "/flux/images": (GENERATE, AUTH),
        "/v1/images/generations": ({"model": "flux-dev", "prompt": "p"}, AUTH),
        "/v1/flux-dev": ({"prompt": "p"}, BFL_AUTH),
    }
    body, headers = bodies[path]

    for _ in range(2):
        async with http.post(emu.base_url + path, json=body, headers=headers) as response:
            assert response.status == status
            assert response.headers["Retry-After"] == "2"
            answer = await response.json()
        assert ("trace_id" in answer) is path.startswith("/flux/")  # only AceData's envelope has one
        answer.pop("trace_id", None)
        assert answer == expected
    assert emu.tasks == {}

    answered, _ = await post(http, emu.base_url + path, body, headers)
    assert answered == 200  # the fault was used up
    assert len(emu.tasks) == 1


async def test_injected_malformed_body_is_sent_verbatim(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.add_fault("POST", "/flux/images", body=b'{"task_id": ')

    async with http.post(f"{emu.base_url}/flux/images", json={**GENERATE, "async": True}, headers=AUTH) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == b'{"task_id": '
    assert emu.tasks == {}


async def test_slow_answer_still_creates_the_task_after_the_client_gave_up(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.add_fault("POST", "/flux/images", delay=0.3)

    with pytest.raises(TimeoutError):
        await http.post(
            f"{emu.base_url}/flux/images",
            json={**GENERATE, "async": True},
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=0.05),
        )
    assert emu.count("POST", "/flux/images") == 1  # recorded on arrival, before the delay

    await emu.wait_until(lambda: len(emu.tasks) == 1)
    [task] = emu.tasks.values()
    assert task.created_at - emu.requests[0].at >= 0.3


async def test_dropped_connection_answers_nothing_and_creates_no_task(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.add_fault("POST", "/v1/flux-dev", drop=True)

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)

    assert emu.count("POST", "/v1/flux-dev") == 1
    assert emu.tasks == {}
    status, _ = await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)
    assert status == 200


async def test_polling_faults_use_the_get_result_path(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    emu.add_fault("GET", "/v1/get_result", status=503, message="overloaded")
    _, submitted = await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)

    assert await get(http, submitted["polling_url"]) == (503, {"detail": "overloaded"})
    assert (await get(http, submitted["polling_url"]))[1]["status"] == "Ready"


def test_faults_that_would_do_nothing_or_contradict_themselves_are_refused() -> None:
    emulator = FluxEmulator()
    with pytest.raises(ValueError, match="nothing"):
        emulator.add_fault("POST", "/flux/images")
    with pytest.raises(ValueError, match="dropped"):
        emulator.add_fault("POST", "/flux/images", drop=True, status=500)
    with pytest.raises(ValueError, match="times"):
        emulator.add_fault("POST", "/flux/images", status=500, times=0)


# ----- request log, planned outcomes and concurrency ---------------------------------------------


async def test_request_log_records_what_arrived(emu: FluxEmulator, http: aiohttp.ClientSession) -> None:
    await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "async": True})
    async with http.get(f"{emu.base_url}/v1/get_result?id=abc", headers={"X-Key": "test-key"}):
        pass
    async with http.post(f"{emu.base_url}/flux/tasks", data=b"not json", headers=AUTH) as response:
        assert response.status == 400

    submit, poll, garbage = emu.requests
    assert (submit.method, submit.path, submit.json) == ("POST", "/flux/images", {**GENERATE, "async": True})
    assert submit.headers["authorization"] == "Bearer test-key"
    assert (poll.method, poll.path, poll.query) == ("GET", "/v1/get_result", {"id": "abc"})
    assert "x-key" in dict(poll.headers)  # names are stored lower-cased ...
    assert poll.headers["X-KEY"] == poll.headers.get("X-Key") == "test-key"  # ... and looked up in any case
    assert (garbage.body, garbage.json) == (b"not json", None)
    assert submit.at <= poll.at <= garbage.at <= emu.now()
    assert emu.requests_to("post", "/flux/tasks") == [garbage]
    assert emu.count("GET", "/v1/get_result") == 1


async def test_bfl_next_status_waits_for_a_bfl_task_while_failures_go_to_the_next_task(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.bfl_next_status("Content Moderated")
    emu.fail_next_task(code="used_up", message="no balance")

    acedata_status, acedata = await post(http, f"{emu.base_url}/flux/images", GENERATE)
    _, submitted = await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)

    assert acedata_status == 403
    assert acedata["error"] == {"code": "used_up", "message": "no balance"}
    assert (await get(http, submitted["polling_url"]))[1]["status"] == "Content Moderated"


async def test_max_in_flight_counts_pending_tasks_across_providers(
    emu: FluxEmulator, http: aiohttp.ClientSession
) -> None:
    emu.task_delay = 100.0
    for _ in range(2):
        await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "async": True})
    await post(http, f"{emu.base_url}/v1/flux-dev", {"prompt": "p"}, BFL_AUTH)
    assert (emu.in_flight(), emu.max_in_flight) == (3, 3)

    emu.advance(100.0)
    await post(http, f"{emu.base_url}/flux/images", {**GENERATE, "async": True})

    assert (emu.in_flight(), emu.max_in_flight) == (1, 3)
    assert {task.provider for task in emu.tasks.values()} == {"acedata", "bfl"}
