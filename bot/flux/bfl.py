"""Black Forest Labs' own API (``https://api.bfl.ai``).

Submit ``POST /v1/<model>`` with the ``x-key`` header; the answer carries ``polling_url``, which is the
task's handle and the only URL to poll (BFL may route it to a regional host). Each task makes one image.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from yarl import URL

from bot.settings import Provider

from .base import FluxClient
from .catalog import ModelSpec, ratio_to_pixels
from .errors import (
    CredentialsError,
    FluxAPIError,
    FluxError,
    ModerationError,
    UpstreamError,
    error_for,
)
from .http import parse_model, retry_after_seconds
from .models import EditRequest, GenerateRequest, ResultImage, Submission, TaskState, TaskStatus, sane_seed

__all__ = ["BflClient", "error_answer", "key_may_go_to", "poll_answer", "submit_answer"]

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
        return error_answer(status, body, headers)

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
        return submit_answer(await self._post_submit(f"{self.base_url}/v1/{spec.name}", payload), self.base_url)

    async def probe_key(self) -> bool:
        """``get_result`` of a made-up task id (polls are free)."""
        await self._send("GET", f"{self.base_url}/v1/get_result?id={uuid.uuid4()}", payload=None, submit=False)
        return True

    async def statuses(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        """Poll each task's ``polling_url``, a few at a time (BFL has no batch query).

        A handle that can never be polled (not a URL, or not a URL the API key may be sent to, see
        :func:`key_may_go_to`) is not requested: it comes back FAILED at once with an
        :class:`UpstreamError`. A poll that failed after retries is left out (asked again next time).
        """
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def poll(handle: str) -> TaskStatus | FluxError:
            if not key_may_go_to(handle, self.base_url):
                error = UpstreamError(f"refusing to send the API key to the polling URL {_shown(handle)}")
                return TaskStatus(handle, TaskState.FAILED, error=error)
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
        return poll_answer(handle, await self._poll("GET", handle))


def key_may_go_to(url: str, base_url: str) -> bool:
    """Whether the API key may be sent to ``url``, a polling URL BFL gave for the API at ``base_url``.

    Only with the base's scheme and port (the default one of the scheme unless the base names one). The
    host is the base's own, or — over https only — a host under the base's parent domain (``api.eu.bfl.ai``
    serves tasks of ``api.bfl.ai``). A URL that cannot be read is never trusted.
    """
    try:
        target, base = URL(url), URL(base_url)
        host, base_host = target.host or "", base.host or ""
        same_origin_kind = target.scheme == base.scheme and target.port == base.port
    except (ValueError, TypeError):
        return False
    if not (target.absolute and base_host and same_origin_kind) or target.user is not None:
        return False
    if host == base_host:
        return True
    parent = base_host.removeprefix("api.")
    return target.scheme == "https" and parent != base_host and "." in parent and host.endswith("." + parent)


def _shown(url: str) -> str:
    """A handle for the log: short, and in repr form so that nothing in it is mistaken for log structure."""
    return repr(url[:80])


# -- the parsers of BFL's answers (pure functions: they raise only FluxError) ------------------------------


def error_answer(status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
    """The error of a non-2xx answer, by its status (BFL sends no codes), with the reason in ``detail``."""
    return error_for(
        status=status,
        code=None,
        message=_error_message(body),
        retry_after=retry_after_seconds(headers),
        status_overrides=_STATUS_OVERRIDES,
    )


def submit_answer(body: Any, base_url: str) -> Submission:
    """The task a submit answer started (its handle is the polling URL), or UpstreamError."""
    answer = parse_model(BflSubmitted, body, "BFL's submit answer")
    return Submission(handle=answer.polling_url or f"{base_url}/v1/get_result?id={answer.id}")


def poll_answer(handle: str, body: Any) -> TaskStatus:
    """Where the task stands according to a poll answer, or UpstreamError."""
    return _task_status(handle, parse_model(BflResult, body, "BFL's poll answer"))


def _error_message(body: Any) -> str | None:
    """The reason in BFL's error body: ``{"detail": "..."}`` or FastAPI's ``{"detail": [{"loc", "msg"}]}``."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail or None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc, msg = detail[0].get("loc"), detail[0].get("msg")
        parts = loc if isinstance(loc, list) else []
        where = ".".join(str(part) for part in parts if isinstance(part, str | int) and part != "body")
        reason = msg if isinstance(msg, str) else "invalid"
        return f"{where}: {reason}" if where else reason
    return None


def _task_status(handle: str, answer: BflResult) -> TaskStatus:
    status = answer.status
    if status == "Ready":
        result = answer.result or {}
        sample = result.get("sample")
        if isinstance(sample, str) and sample:
            image = ResultImage(url=sample, seed=sane_seed(result.get("seed")))
            return TaskStatus(handle, TaskState.SUCCEEDED, images=(image,))
        return TaskStatus(handle, TaskState.FAILED, error=UpstreamError("BFL said Ready without an image"))
    if status in {"Request Moderated", "Content Moderated"}:
        return TaskStatus(handle, TaskState.FAILED, error=ModerationError(f"BFL: {status}", code=status))
    if status in {"Error", "Task not found"}:
        return TaskStatus(handle, TaskState.FAILED, error=UpstreamError(f"BFL: {status}", code=status))
    return TaskStatus(handle, TaskState.PENDING)  # "Pending", and unknown words until the job's deadline
