"""Black Forest Labs' own API (``https://api.bfl.ai``).

Submit ``POST /v1/<model>`` with the ``x-key`` header; the answer carries ``polling_url``, which is the
task's handle and the only URL to poll (BFL may route it to a regional host). Each task makes one image.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from yarl import URL

from bot.settings import Provider

from .base import FluxClient
from .catalog import ModelSpec, ratio_to_pixels
from .errors import (
    BadRequestError,
    CredentialsError,
    FluxAPIError,
    FluxError,
    ModerationError,
    UpstreamError,
    error_for,
)
from .http import retry_after_seconds
from .models import EditRequest, GenerateRequest, ResultImage, Submission, TaskState, TaskStatus

__all__ = ["BflClient"]

log = logging.getLogger(__name__)

#: Polls sent at once: BFL has no batch endpoint, and allows about 24 concurrent requests per account.
POLL_CONCURRENCY = 8

_STATUS_OVERRIDES: Mapping[int, type[FluxAPIError]] = {403: CredentialsError}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class BflSubmitted(_Lenient):
    id: str
    polling_url: str | None = None


class BflResult(_Lenient):
    id: str | None = None
    status: str
    result: dict[str, Any] | None = None


class BflClient(FluxClient):
    provider: ClassVar[Provider] = Provider.BFL

    def _headers(self) -> dict[str, str]:
        return {"x-key": self._api_key.get_secret_value(), "accept": "application/json"}

    def _parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            where = ".".join(str(part) for part in detail[0].get("loc", ()) if part != "body")
            reason = str(detail[0].get("msg", "invalid"))
            message: str | None = f"{where}: {reason}" if where else reason
        else:
            message = str(detail) if detail else None
        return error_for(
            status=status,
            code=None,
            message=message,
            retry_after=retry_after_seconds(headers),
            status_overrides=_STATUS_OVERRIDES,
        )

    async def _submit_generate(self, request: GenerateRequest, spec: ModelSpec) -> Submission:
        return await self._submit_task(spec, request.prompt, request.size, request.seed, image=None)

    async def _submit_edit(self, request: EditRequest, spec: ModelSpec) -> Submission:
        return await self._submit_task(spec, request.prompt, request.size, request.seed, image=request.image_url)

    async def _submit_task(
        self, spec: ModelSpec, prompt: str, size: str | None, seed: int | None, *, image: str | None
    ) -> Submission:
        payload: dict[str, Any] = {"prompt": prompt, "output_format": "png"}
        if size is not None:
            if spec.pixels is not None:
                payload["width"], payload["height"] = ratio_to_pixels(size, multiple=spec.pixels.multiple)
            else:
                payload["aspect_ratio"] = size
        if seed is not None:
            payload["seed"] = seed
        if image is not None:
            payload["input_image"] = image
        body = await self._post_submit(f"{self.base_url}/v1/{spec.name}", payload)
        try:
            answer = BflSubmitted.model_validate(body)
        except ValidationError as exc:
            raise UpstreamError(f"BFL answered an unexpected shape: {exc.error_count()} errors") from exc
        return Submission(handle=answer.polling_url or f"{self.base_url}/v1/get_result?id={answer.id}")

    async def statuses(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        """Poll each task's ``polling_url``, a few at a time (BFL has no batch query)."""
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def poll(handle: str) -> TaskStatus | FluxError:
            async with gate:
                try:
                    return await self._poll_one(handle)
                except FluxError as error:
                    return error

        found: dict[str, TaskStatus] = {}
        unique = list(dict.fromkeys(handles))
        for handle, outcome in zip(unique, await asyncio.gather(*map(poll, unique)), strict=True):
            if isinstance(outcome, FluxError):
                log.warning("polling a BFL task failed; asked again next time: %s", outcome)
            else:
                found[handle] = outcome
        return found

    async def _poll_one(self, handle: str) -> TaskStatus:
        if not self._trusted(handle):
            raise BadRequestError(f"refusing to send the API key to an unexpected polling host {URL(handle).host}")
        body = await self._poll("GET", handle)
        try:
            answer = BflResult.model_validate(body)
        except ValidationError as exc:
            raise UpstreamError(f"BFL answered an unexpected shape: {exc.error_count()} errors") from exc
        return _task_status(handle, answer)

    def _trusted(self, url: str) -> bool:
        """Whether ``url`` belongs to the configured API, so the key may go there (``api.eu.bfl.ai`` may
        serve tasks of ``api.bfl.ai``)."""
        host, base_host = URL(url).host or "", URL(self.base_url).host or ""
        parent = base_host.removeprefix("api.")
        return host == base_host or (parent != base_host and host.endswith("." + parent))


def _task_status(handle: str, answer: BflResult) -> TaskStatus:
    status = answer.status
    if status == "Ready":
        result = answer.result or {}
        sample = result.get("sample")
        if isinstance(sample, str) and sample:
            seed = result.get("seed")
            image = ResultImage(url=sample, seed=seed if isinstance(seed, int) else None)
            return TaskStatus(handle, TaskState.SUCCEEDED, images=(image,))
        return TaskStatus(handle, TaskState.FAILED, error=UpstreamError("BFL said Ready without an image"))
    if status in {"Request Moderated", "Content Moderated"}:
        return TaskStatus(handle, TaskState.FAILED, error=ModerationError(f"BFL: {status}", code=status))
    if status in {"Error", "Task not found"}:
        return TaskStatus(handle, TaskState.FAILED, error=UpstreamError(f"BFL: {status}", code=status))
    return TaskStatus(handle, TaskState.PENDING)  # "Pending", and unknown words until the job's deadline
