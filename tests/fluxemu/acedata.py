"""AceDataCloud's Flux API: ``POST /flux/images`` and ``POST /flux/tasks`` (FLUX_API.md section 1).

Every call needs ``authorization: Bearer <key>``. Errors use the envelope
``{"success": false, "error": {"code", "message"}, "trace_id"}`` with the status of the code.

``/flux/images`` has three modes: synchronous (the answer waits until the task finishes), ``"async":
true`` (answers ``{"task_id","trace_id"}`` at once) and ``callback_url`` (answers ``{"task_id"}`` at once
and POSTs the synchronous answer to the URL when the task finishes). An edit downloads ``image_url`` like
the real service (while accepting it); if that fails the task fails with api_error "fetch failed".
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fluxemu.common import InvalidJSON, is_int, read_json_object
from tests.fluxemu.engine import Engine
from tests.fluxemu.records import EmuTask, Outcome

__all__ = ["MODELS", "AceData", "error_response"]

MODELS = (
    "flux-dev",
    "flux-pro",
    "flux-kontext-pro",
    "flux-kontext-max",
    "flux-2-flex",
    "flux-2-pro",
    "flux-2-max",
    "flux-2-klein",
)
"""The current model list (the vendor dropped flux-pro-1.1 and flux-pro-1.1-ultra in May 2026)."""

DEFAULT_MODEL = "flux-dev"
MAX_BATCH = 50
API_ID = "7a3b5c1e-2f4d-4e8a-9b6c-0d1e2f3a4b5c"
"""The id of the Flux Images API in AceData's records; the same for every task."""

CODE_STATUS = {
    "bad_request": 400,
    "token_mismatched": 400,
    "api_not_implemented": 400,
    "no_token": 400,
    "disabled": 400,
    "invalid_token": 401,
    "token_expired": 401,
    "used_up": 403,
    "no_api": 404,
    "not_found": 404,
    "too_many_requests": 429,
    "api_error": 500,
    "service_unavailable": 503,
}
"""HTTP status of each documented error code. An unknown code without an explicit status gets 400."""

STATUS_CODE = {
    400: "bad_request",
    401: "invalid_token",
    403: "used_up",
    404: "no_api",
    429: "too_many_requests",
    500: "api_error",
    503: "service_unavailable",
}
"""The code an injected fault uses when it gives only a status."""

DEFAULT_MESSAGES = {
    "bad_request": "bad request",
    "invalid_token": "invalid token",
    "token_expired": "token expired",
    "used_up": "your balance is used up",
    "no_api": "api not found",
    "not_found": "task not found",
    "too_many_requests": "too many requests",
    "api_error": "fetch failed",
    "service_unavailable": "service unavailable",
}

_SIZE = re.compile(r"\d+[x:]\d+")


def error_response(
    *, status: int | None = None, code: str | None = None, message: str | None = None, trace_id: str | None = None
) -> web.Response:
    """AceData's error envelope. ``status`` wins over the code's own status; either may be left out."""
    if code is None:
        code = _code_for_status(status or 500)
    if status is None:
        status = CODE_STATUS.get(code, 400)
    error = {"code": code, "message": message or DEFAULT_MESSAGES.get(code, code.replace("_", " "))}
    payload = {"success": False, "error": error, "trace_id": trace_id or str(uuid.uuid4())}
    return web.json_response(payload, status=status)


def _code_for_status(status: int) -> str:
    return STATUS_CODE.get(status, "api_error" if status >= 500 else "bad_request")


class Rejected(Exception):
    """A request AceData refuses; becomes an error envelope."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImagesOrder:
    """A validated ``/flux/images`` body."""

    action: str
    prompt: str
    model: str
    count: int
    image_url: str | None
    callback_url: str | None
    is_async: bool


def parse_images_body(body: dict[str, Any]) -> ImagesOrder:
    """Validate a ``/flux/images`` body the way the real service does; raise Rejected otherwise."""
    action = body.get("action")
    if action not in ("generate", "edit"):
        raise Rejected("action is invalid")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Rejected("prompt is required")
    size = body.get("size")
    if size is None or size == "":
        raise Rejected("size is required")  # documented as optional, but the server rejects its absence
    if not isinstance(size, str) or not _SIZE.fullmatch(size):
        raise Rejected("size is invalid")
    model = body.get("model", DEFAULT_MODEL)
    if model not in MODELS:
        raise Rejected("model is invalid")
    count = body.get("count", 1)
    if not is_int(count) or count < 1:
        raise Rejected("count is invalid")
    image_url = body.get("image_url")
    if action == "edit" and (not isinstance(image_url, str) or not image_url):
        raise Rejected("image_url is required")
    callback_url = body.get("callback_url")
    if callback_url is not None and (
        not isinstance(callback_url, str) or not callback_url.startswith(("http://", "https://"))
    ):
        raise Rejected("callback_url is invalid")
    is_async = body.get("async", False)
    if not isinstance(is_async, bool):
        raise Rejected("async is invalid")
    return ImagesOrder(
        action=action,
        prompt=prompt,
        model=model,
        count=1 if action == "edit" else count,  # count is ignored for edits
        image_url=image_url if action == "edit" else None,
        callback_url=callback_url,
        is_async=is_async,
    )


def task_response(task: EmuTask) -> dict[str, Any]:
    """The synchronous answer of a finished task: its ``response`` field and its callback body."""
    outcome = task.outcome
    assert outcome is not None
    if not outcome.ok:
        return {"success": False, "task_id": task.id, "trace_id": task.trace_id, "error": _error(outcome)}
    data = [
        {"image_url": url, "prompt": task.prompt, "seed": seed, "timings": timings}
        for url, seed, timings in zip(task.images, task.seeds, task.timings, strict=True)
    ]
    return {"success": True, "task_id": task.id, "trace_id": task.trace_id, "data": data}


def task_record(task: EmuTask) -> dict[str, Any]:
    """A task as ``/flux/tasks`` returns it. No state field: ``response`` appears only when finished."""
    record: dict[str, Any] = {
        "id": task.id,
        "api_id": API_ID,
        "trace_id": task.trace_id,
        "created_at": task.created_at,
        "started_at": task.created_at,
        "type": "images",
        "request": task.request,
    }
    if task.finished_at is not None:
        record["finished_at"] = task.finished_at
        record["elapsed"] = round(task.finished_at - task.created_at, 3)
        record["response"] = task_response(task)
    return record


def _refusal(exc: InvalidJSON | Rejected) -> web.Response:
    return error_response(code=exc.code if isinstance(exc, Rejected) else "bad_request", message=str(exc))


def _error(outcome: Outcome) -> dict[str, str]:
    code = outcome.code or "api_error"
    return {"code": code, "message": outcome.message or DEFAULT_MESSAGES.get(code, code)}


class AceData:
    """The ``/flux/*`` endpoints, backed by the shared engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        engine.on_finish(self._send_callback)

    def routes(self) -> list[web.RouteDef]:
        """The routes this vendor serves."""
        return [web.post("/flux/images", self.images), web.post("/flux/tasks", self.tasks)]

    def _check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("authorization")
        if header is None:
            return error_response(code="invalid_token", message="token is required")
        if header != f"Bearer {self._engine.api_key}":
            return error_response(code="invalid_token", message="invalid token")
        return None

    async def images(self, request: web.Request) -> web.Response:
        """``POST /flux/images``: generate or edit, in the mode the body asks for."""
        if (denied := self._check_auth(request)) is not None:
            return denied
        try:
            body = await read_json_object(request)
            order = parse_images_body(body)
        except (InvalidJSON, Rejected) as exc:
            return _refusal(exc)
        source_ok = None if order.image_url is None else await self._engine.fetch_source(order.image_url)
        task = self._engine.create_task(
            provider="acedata",
            mode="callback" if order.callback_url else "async" if order.is_async else "sync",
            model=order.model,
            prompt=order.prompt,
            request=body,
            image_count=order.count,
            callback_url=order.callback_url,
            source=order.image_url,
            source_ok=source_ok,
        )
        if order.is_async:
            return web.json_response({"task_id": task.id, "trace_id": task.trace_id})
        if order.callback_url is not None:
            return web.json_response({"task_id": task.id})
        outcome = await self._engine.finished(task)
        if outcome.ok:
            return web.json_response(task_response(task))
        error = _error(outcome)
        return error_response(code=error["code"], message=error["message"], trace_id=task.trace_id)

    async def tasks(self, request: web.Request) -> web.Response:
        """``POST /flux/tasks``: ``retrieve`` one task or ``retrieve_batch`` up to 50 (unknown ids left out)."""
        if (denied := self._check_auth(request)) is not None:
            return denied
        try:
            body = await read_json_object(request)
            return self._retrieve(body)
        except (InvalidJSON, Rejected) as exc:
            return _refusal(exc)

    def _retrieve(self, body: dict[str, Any]) -> web.Response:
        action = body.get("action")
        if action == "retrieve":
            task_id = body.get("id")
            if not isinstance(task_id, str) or not task_id:
                raise Rejected("id is required")
            found = self._engine.tasks_by_ids([task_id])
            if not found:
                raise Rejected("task not found", code="not_found")
            return web.json_response(task_record(found[0]))
        if action == "retrieve_batch":
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise Rejected("ids is required")
            if len(ids) > MAX_BATCH:
                raise Rejected(f"ids must contain at most {MAX_BATCH} items")
            items = [task_record(task) for task in self._engine.tasks_by_ids(ids)]
            return web.json_response({"items": items, "count": len(items)})
        raise Rejected("action is invalid")

    def _send_callback(self, task: EmuTask) -> None:
        if task.provider == "acedata" and task.callback_url is not None:
            self._engine.send_callback(task.callback_url, task_response(task))
