"""OpenAI-style relays: ``POST {base}/v1/images/generations`` (seeds 003 and 004).

These are synchronous: the connection is held while the image is made (10 s to 2 minutes), so the submit
timeout is long, and the result comes back in the submit's answer, as a URL or inline ``b64_json``.
Kontext edits send the source image as ``input_image``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel, ConfigDict, field_validator

from bot.settings import Provider

from .base import FluxClient
from .catalog import ModelSpec
from .errors import FluxAPIError, FluxError, UpstreamError, error_for
from .http import MAX_JSON_BYTES, Timeouts, parse_model, retry_after_seconds
from .models import EditRequest, GenerateRequest, ResultImage, Submission, TaskState, TaskStatus

__all__ = ["MAX_ANSWER_BYTES", "MAX_INLINE_IMAGE_BYTES", "OpenAIRelayClient", "error_answer", "generation_answer"]

log = logging.getLogger(__name__)

#: The largest image taken inline (``b64_json``), decoded: the same cap as a downloaded result.
MAX_INLINE_IMAGE_BYTES = 25 * 1024 * 1024
#: The longest generation answer read: one inline image at the cap, in base64, and room for the rest.
MAX_ANSWER_BYTES = MAX_INLINE_IMAGE_BYTES * 4 // 3 + MAX_JSON_BYTES


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class RelayImage(_Lenient):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class RelayImagesResponse(_Lenient):
    created: int | None = None
    data: list[RelayImage] | None = None


class RelayError(_Lenient):
    message: str | None = None
    type: str | None = None
    code: str | None = None


class RelayErrorBody(_Lenient):
    error: RelayError | None = None

    @field_validator("error", mode="before")
    @classmethod
    def _bare_string(cls, value: Any) -> Any:
        return {"message": value} if isinstance(value, str) else value


class OpenAIRelayClient(FluxClient):
    provider: ClassVar[Provider] = Provider.OPENAI

    @classmethod
    def default_timeouts(cls) -> Timeouts:
        return Timeouts(submit=aiohttp.ClientTimeout(total=180, connect=10))

    def _headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self._api_key.get_secret_value()}",
            "accept": "application/json",
        }

    def _parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
        return error_answer(status, body, headers)

    async def _submit_generate(self, request: GenerateRequest, spec: ModelSpec) -> Submission:
        payload: dict[str, Any] = {"model": spec.name, "prompt": request.prompt, "aspect_ratio": request.size}
        if request.count > 1:
            payload["n"] = request.count  # relays that ignore it return one image; only delivered ones count
        return await self._generate(payload, request.seed)

    async def _submit_edit(self, request: EditRequest, spec: ModelSpec) -> Submission:
        payload: dict[str, Any] = {"model": spec.name, "prompt": request.prompt, "input_image": request.image_url}
        if request.size:
            payload["aspect_ratio"] = request.size
        return await self._generate(payload, request.seed)

    async def _generate(self, payload: dict[str, Any], seed: int | None) -> Submission:
        payload["output_format"] = "png"
        if seed is not None:
            payload["seed"] = seed  # omitted rather than sent as the string "null" (seed 003's example)
        body = await self._post_submit(f"{self.base_url}/v1/images/generations", payload, max_bytes=MAX_ANSWER_BYTES)
        return generation_answer(body, seed)

    async def statuses(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        """Relays finish inside the submit; there is never a task to ask about."""
        return {}


# -- the parsers of a relay's answers (pure functions: they raise only FluxError) -------------------------


def error_answer(status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
    """The error of a non-2xx answer, by its code (or type), else by its status."""
    try:
        envelope = parse_model(RelayErrorBody, body, "an error answer") if isinstance(body, dict) else None
    except FluxError:
        envelope = None
    error = (envelope or RelayErrorBody()).error or RelayError()
    return error_for(
        status=status,
        code=error.code or error.type,
        message=error.message,
        retry_after=retry_after_seconds(headers),
    )


def generation_answer(body: Any, seed: int | None) -> Submission:
    """The finished task of a generation answer (its images, by URL or inline), or UpstreamError."""
    answer = parse_model(RelayImagesResponse, body, "the relay's answer")
    images = tuple(image for item in answer.data or () if (image := _result_image(item, seed)))
    if not images:
        raise UpstreamError("the relay answered without any usable image")
    handle = f"relay-{uuid.uuid4().hex}"
    return Submission(handle=handle, finished=TaskStatus(handle, TaskState.SUCCEEDED, images=images))


def _result_image(item: RelayImage, seed: int | None) -> ResultImage | None:
    """The image of one ``data`` entry: its URL, or its inline bytes. Gateways send both keys, one empty."""
    if item.url:
        return ResultImage(url=item.url, seed=seed)
    if item.b64_json:
        if len(item.b64_json) // 4 * 3 > MAX_INLINE_IMAGE_BYTES:
            log.warning(
                "ignoring an inline image of about %d bytes (limit %d)",
                len(item.b64_json) // 4 * 3,
                MAX_INLINE_IMAGE_BYTES,
            )
            return None
        try:
            return ResultImage(data=base64.b64decode(item.b64_json, validate=True), seed=seed)
        except (binascii.Error, ValueError):
            return None
    return None
