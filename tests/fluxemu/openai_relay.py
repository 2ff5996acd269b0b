"""An OpenAI-style relay: ``POST /v1/images/generations`` (FLUX_API.md section 2, seeds 003 and 004).

Synchronous: the answer waits until the generation finishes and is
``{"created", "data": [{"url", "b64_json"}, ...]}`` with the unused key empty, as the common gateway does
(``FluxEmulator.openai_format`` chooses which one is filled). Errors are
``{"error": {"message", "type", "param", "code"}}``. An ``input_image`` (URL or ``data:image/...;base64,``)
is fetched or decoded before the generation starts; a bad one is a 400. While a call is being served it
counts as a task in flight, and it appears in ``FluxEmulator.tasks`` with provider "openai".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fluxemu.common import InvalidJSON, is_int, read_json_object
from tests.fluxemu.engine import Engine

__all__ = ["MODELS", "OpenAIRelay", "error_response"]

MODELS = (
    "flux-kontext-pro",
    "flux-kontext-max",
    "flux-pro-1.1-ultra",
    "flux-pro-1.1",
    "flux-dev",
    "flux-pro",
    "flux-2-pro",
    "flux-2-max",
    "flux-2-flex",
)
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "9:21")
OUTPUT_FORMATS = ("jpeg", "png")

CODE_STATUS = {
    "invalid_request_error": 400,
    "prompt_blocked": 400,
    "sensitive_words_detected": 400,
    "invalid_api_key": 401,
    "insufficient_user_quota": 403,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "upstream_error": 502,
    "service_unavailable": 503,
}
"""HTTP status of each error code. An unknown code without an explicit status gets 500."""

STATUS_CODE = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "insufficient_user_quota",
    404: "model_not_found",
    429: "rate_limit_exceeded",
    500: "api_error",
    502: "upstream_error",
    503: "service_unavailable",
}
"""The code an injected fault uses when it gives only a status."""


def error_response(
    *, status: int | None = None, code: str | None = None, message: str | None = None, param: str | None = None
) -> web.Response:
    """The OpenAI error shape; ``type`` is "invalid_request_error" below 500 and "server_error" from 500."""
    if code is None:
        code = STATUS_CODE.get(status or 500, "api_error")
    if status is None:
        status = CODE_STATUS.get(code, 500)
    error = {
        "message": message or code.replace("_", " "),
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param,
        "code": code,
    }
    return web.json_response({"error": error}, status=status)


class Rejected(Exception):
    """A request the relay refuses; becomes an error body."""

    def __init__(self, message: str, *, param: str | None, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def response(self) -> web.Response:
        """This refusal as an HTTP answer."""
        return error_response(status=self.status, code=self.code, message=self.message, param=self.param)


@dataclass(frozen=True)
class GenerationOrder:
    """A validated generations body."""

    model: str
    prompt: str
    n: int
    seed: int | None
    input_image: str | None


def parse_generations_body(body: dict[str, Any]) -> GenerationOrder:
    """Validate a generations body; raise Rejected otherwise. Unknown fields are ignored, as relays do."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Rejected("model is required", param="model")
    if model not in MODELS:
        raise Rejected(f"The model `{model}` does not exist", param="model", status=404, code="model_not_found")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Rejected("prompt is required", param="prompt")
    for name, allowed in (("aspect_ratio", ASPECT_RATIOS), ("output_format", OUTPUT_FORMATS)):
        value = body.get(name)
        if value is not None and value not in allowed:
            raise Rejected(f"{name} must be one of {', '.join(allowed)}", param=name)
    n = body.get("n", 1)
    if not is_int(n) or n < 1:
        raise Rejected("n must be a positive integer", param="n")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise Rejected("seed must be an integer", param="seed")
    input_image = body.get("input_image")
    if input_image is not None and not isinstance(input_image, str):
        raise Rejected("input_image must be a URL or a data URI", param="input_image")
    return GenerationOrder(model=model, prompt=prompt, n=n, seed=seed, input_image=input_image)


class OpenAIRelay:
    """The ``/v1/images/generations`` endpoint, backed by the shared engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def routes(self) -> list[web.RouteDef]:
        """The routes this vendor serves."""
        return [web.post("/v1/images/generations", self.generations)]

    async def generations(self, request: web.Request) -> web.Response:
        """``POST /v1/images/generations``: validate, fetch the input image, generate, answer."""
        if request.headers.get("authorization") != f"Bearer {self._engine.api_key}":
            return error_response(code="invalid_api_key", message="Invalid token", status=401)
        try:
            body = await read_json_object(request)
        except InvalidJSON as exc:
            return error_response(code="invalid_request_error", message=str(exc))
        try:
            order = parse_generations_body(body)
            if order.input_image is not None and not await self._engine.fetch_source(order.input_image):
                raise Rejected("input_image is not a valid image URL or data URI", param="input_image")
        except Rejected as exc:
            return exc.response()
        task = self._engine.create_task(
            provider="openai",
            mode="sync",
            model=order.model,
            prompt=order.prompt,
            request=body,
            image_count=order.n,
            requested_seed=order.seed,
            source=order.input_image,
            source_ok=True if order.input_image is not None else None,
        )
        outcome = await self._engine.finished(task)
        if not outcome.ok:
            return error_response(code=outcome.code, message=outcome.message)
        return web.json_response({"created": int(task.finished_at or 0), "data": self._items(task.images)})

    def _items(self, urls: list[str]) -> list[dict[str, str]]:
        if self._engine.openai_format == "b64_json":
            return [{"url": "", "b64_json": base64.b64encode(self._engine.image_bytes(url)).decode()} for url in urls]
        return [{"url": url, "b64_json": ""} for url in urls]
