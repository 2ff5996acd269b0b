"""Black Forest Labs' own API: ``POST /v1/{model}`` and ``GET /v1/get_result`` (FLUX_API.md section 3).

Auth is ``x-key: <key>``. A submit answers ``{"id", "polling_url"}``; polling answers
``{"id", "status", "result", "progress", "details"}`` with status "Pending" until the task is due, then
"Ready" (``result.sample`` is the image URL) or the status the test queued with ``bfl_next_status``.
Validation errors are FastAPI's 422 ``{"detail": [{"loc", "msg", "type"}]}``. An ``input_image`` (URL,
data URI or bare base64) is fetched while accepting the task; if that fails the task ends "Error".
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from tests.fluxemu.common import InvalidJSON, is_int, read_json_object
from tests.fluxemu.engine import Engine
from tests.fluxemu.records import EmuTask

__all__ = ["MODELS", "BlackForestLabs", "error_response"]

MODELS = (
    "flux-2-pro",
    "flux-2-max",
    "flux-2-flex",
    "flux-2-klein-4b",
    "flux-kontext-pro",
    "flux-kontext-max",
    "flux-pro-1.1",
    "flux-pro-1.1-ultra",
    "flux-dev",
)
PIXEL_SIZE_RULES = {"flux-pro-1.1": (256, 1440, 32), "flux-dev": (256, 1440, 32)}
"""Models whose ``width``/``height`` are checked: (minimum, maximum, multiple of)."""

MIN_RATIO, MAX_RATIO = 9 / 21, 21 / 9
_RATIO = re.compile(r"(?P<w>[1-9]\d*):(?P<h>[1-9]\d*)")

NOT_AUTHENTICATED = "Not authenticated - Invalid Authentication"
DEFAULT_DETAILS = {
    402: "Insufficient credits",
    403: NOT_AUTHENTICATED,
    404: "Not Found",
    429: "Rate limit exceeded. Please wait before sending more requests.",
}
CODE_STATUS = {
    "insufficient_credits": 402,
    "not_authenticated": 403,
    "not_found": 404,
    "validation_error": 422,
    "too_many_requests": 429,
    "rate_limit_exceeded": 429,
}
"""The status an injected fault uses when it gives only a code; other codes get 500."""

FieldError = dict[str, Any]


def error_response(*, status: int | None = None, code: str | None = None, message: str | None = None) -> web.Response:
    """BFL's error body: ``{"detail": "..."}``, or for 422 a list of field errors."""
    if status is None:
        status = CODE_STATUS.get(code or "", 500)
    if status == 422:
        return validation_error([_field_error("body", message or "Invalid request", code or "value_error")])
    detail = message or DEFAULT_DETAILS.get(status, "Internal Server Error")
    return web.json_response({"detail": detail}, status=status)


def validation_error(errors: list[FieldError]) -> web.Response:
    """FastAPI's 422 answer."""
    return web.json_response({"detail": errors}, status=422)


def _field_error(where: str, msg: str, kind: str, name: str | None = None) -> FieldError:
    loc = [where] if name is None else [where, name]
    return {"loc": loc, "msg": msg, "type": kind}


def validate_submit(model: str, body: dict[str, Any]) -> list[FieldError]:
    """The 422 field errors of a submit body for ``model``; empty when it is valid."""
    errors: list[FieldError] = []
    prompt = body.get("prompt")
    if prompt is None:
        errors.append(_field_error("body", "Field required", "missing", "prompt"))
    elif not isinstance(prompt, str):
        errors.append(_field_error("body", "Input should be a valid string", "string_type", "prompt"))
    for name in ("width", "height", "seed"):
        value = body.get(name)
        if value is None:
            continue
        if not is_int(value):
            errors.append(_field_error("body", "Input should be a valid integer", "int_type", name))
        elif name != "seed" and model in PIXEL_SIZE_RULES:
            errors.extend(_pixel_errors(name, value, *PIXEL_SIZE_RULES[model]))
    ratio = body.get("aspect_ratio")
    if ratio is not None and not _ratio_ok(ratio):
        msg = "Value error, Aspect ratio must be between 21:9 and 9:21"
        errors.append(_field_error("body", msg, "value_error", "aspect_ratio"))
    image = body.get("input_image")
    if image is not None and not isinstance(image, str):
        errors.append(_field_error("body", "Input should be a valid string", "string_type", "input_image"))
    return errors


def _pixel_errors(name: str, value: int, low: int, high: int, step: int) -> list[FieldError]:
    if value < low:
        return [_field_error("body", f"Input should be greater than or equal to {low}", "greater_than_equal", name)]
    if value > high:
        return [_field_error("body", f"Input should be less than or equal to {high}", "less_than_equal", name)]
    if value % step:
        return [_field_error("body", f"Input should be a multiple of {step}", "multiple_of", name)]
    return []


def _ratio_ok(ratio: object) -> bool:
    if not isinstance(ratio, str) or not (match := _RATIO.fullmatch(ratio)):
        return False
    return MIN_RATIO <= int(match["w"]) / int(match["h"]) <= MAX_RATIO


class BlackForestLabs:
    """The BFL endpoints, backed by the shared engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def routes(self) -> list[web.RouteDef]:
        """The routes this vendor serves (the polling route first: ``{model}`` would match it too)."""
        return [web.get("/v1/get_result", self.get_result), web.post("/v1/{model}", self.submit)]

    def _authenticated(self, request: web.Request) -> bool:
        return request.headers.get("x-key") == self._engine.api_key

    async def submit(self, request: web.Request) -> web.Response:
        """``POST /v1/{model}``: validate and create a task; answer its id and polling URL."""
        model = request.match_info["model"]
        if model not in MODELS:
            return error_response(status=404)
        if not self._authenticated(request):
            return error_response(status=403)
        try:
            body = await read_json_object(request)
        except InvalidJSON as exc:
            return validation_error([_field_error("body", str(exc), "json_invalid")])
        if errors := validate_submit(model, body):
            return validation_error(errors)
        source = body.get("input_image")
        source_ok = None if source is None else await self._engine.fetch_source(source, plain_base64=True)
        task = self._engine.create_task(
            provider="bfl",
            mode="poll",
            model=model,
            prompt=body["prompt"],
            request=body,
            image_count=1,
            requested_seed=body.get("seed"),
            source=source,
            source_ok=source_ok,
        )
        polling_url = f"{self._engine.base_url}/v1/get_result?id={task.id}"
        return web.json_response({"id": task.id, "polling_url": polling_url})

    async def get_result(self, request: web.Request) -> web.Response:
        """``GET /v1/get_result?id=``: the task's status; an unknown id is a 200 "Task not found"."""
        if not self._authenticated(request):
            return error_response(status=403)
        task_id = request.query.get("id")
        if task_id is None:
            return validation_error([_field_error("query", "Field required", "missing", "id")])
        found = self._engine.tasks_by_ids([task_id])
        if not found:
            return web.json_response({"id": task_id, "status": "Task not found"})
        return web.json_response(self._result(found[0]))

    def _result(self, task: EmuTask) -> dict[str, Any]:
        outcome = task.outcome
        if outcome is None:
            return _poll_body(task.id, "Pending", progress=self._progress(task))
        if outcome.status == "Task not found":
            return {"id": task.id, "status": "Task not found"}
        if not outcome.ok:
            return _poll_body(task.id, outcome.status)
        sample = {"sample": task.images[0], "seed": task.seeds[0], "prompt": task.prompt}
        return _poll_body(task.id, "Ready", result=sample)

    def _progress(self, task: EmuTask) -> float:
        span = task.due_at - task.created_at
        if span <= 0:
            return 0.0
        return round(min(0.99, max(0.0, (self._engine.now() - task.created_at) / span)), 2)


def _poll_body(
    task_id: str, status: str, *, result: dict[str, Any] | None = None, progress: float | None = None
) -> dict[str, Any]:
    return {"id": task_id, "status": status, "result": result, "progress": progress, "details": None}
