"""AceDataCloud's Flux API (``https://api.acedata.cloud``), the primary provider.

Submits go to ``POST /flux/images`` with ``async: true`` (and ``callback_url`` when configured), so the
answer is a task id at once; tasks are followed with ``POST /flux/tasks`` ``retrieve_batch``, 50 ids per
request. Task records have no state field: see :func:`task_status`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from bot.settings import Provider

from .base import FluxClient
from .catalog import ModelSpec
from .errors import CallbackError, FluxAPIError, FluxError, UpstreamError, error_for
from .http import parse_model, retry_after_seconds
from .models import EditRequest, GenerateRequest, ResultImage, Submission, TaskState, TaskStatus, sane_seed

__all__ = [
    "BATCH_SIZE",
    "AceDataClient",
    "batch_answer",
    "callback_answer",
    "error_answer",
    "submit_answer",
    "task_status",
]

log = logging.getLogger(__name__)

#: The most ids one ``retrieve_batch`` carries (the vendor's own tools never send more).
BATCH_SIZE = 50
#: What a task id looks like (the service's are UUIDs); anything else is never stored nor sent back.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class AceError(_Lenient):
    code: str | None = None
    message: str | None = None


def _error_object(value: Any) -> Any:
    """``error`` has been seen as a bare string as well as ``{code, message}``."""
    return {"message": value} if isinstance(value, str) else value


class AceImage(_Lenient):
    image_url: str | None = None
    prompt: str | None = None
    seed: int | None = None
    #: Sometimes an integer, sometimes ``{"inference": 3.3}``.
    timings: float | dict[str, Any] | None = None

    @field_validator("seed", mode="before")
    @classmethod
    def _int_or_none(cls, value: Any) -> int | None:
        return sane_seed(value)  # seed 000 documents a seed of "pop upbeat"; 1e400 has been seen too


class AceImagesResponse(_Lenient):
    """The synchronous answer of ``/flux/images``, also a task's ``response`` and a callback's body."""

    success: bool | None = None
    task_id: str | None = None
    trace_id: str | None = None
    data: list[AceImage] | None = None
    error: AceError | None = None

    _error = field_validator("error", mode="before")(_error_object)


class AceTask(_Lenient):
    id: str
    trace_id: str | None = None
    response: AceImagesResponse | None = None


class AceBatch(_Lenient):
    #: Each record is read on its own, so that one unreadable record does not hide the others.
    items: list[Any] = []


class AceErrorBody(_Lenient):
    success: bool | None = None
    error: AceError | None = None
    trace_id: str | None = None

    _error = field_validator("error", mode="before")(_error_object)


def task_status(handle: str, response: AceImagesResponse | None, trace_id: str | None = None) -> TaskStatus:
    """A task's state from its ``response``: absent means pending; ``success: false`` or an error means
    failed; image URLs mean succeeded; anything else is treated as still pending (until the deadline)."""
    trace_id = (response.trace_id if response else None) or trace_id
    if response is None:
        return TaskStatus(handle, TaskState.PENDING, trace_id=trace_id)
    if response.success is False or response.error is not None:
        error = response.error or AceError()
        failure = error_for(status=None, code=error.code, message=error.message, trace_id=trace_id)
        return TaskStatus(handle, TaskState.FAILED, error=failure, trace_id=trace_id)
    images = tuple(ResultImage(url=item.image_url, seed=item.seed) for item in response.data or () if item.image_url)
    state = TaskState.SUCCEEDED if images else TaskState.PENDING
    return TaskStatus(handle, state, images=images, trace_id=trace_id)


class AceDataClient(FluxClient):
    provider: ClassVar[Provider] = Provider.ACEDATA
    supports_callbacks: ClassVar[bool] = True
    accepts_inline_images: ClassVar[bool] = False  # image_url must be a publicly fetchable URL

    def _headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self._api_key.get_secret_value()}",
            "accept": "application/json",
        }

    def _parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
        return error_answer(status, body, headers)

    async def _submit_generate(self, request: GenerateRequest, spec: ModelSpec) -> Submission:
        payload = {
            "action": "generate",
            "prompt": request.prompt,
            "model": spec.name,
            "size": request.size,
            "count": request.count,
        }
        return await self._submit_images(payload)

    async def _submit_edit(self, request: EditRequest, spec: ModelSpec) -> Submission:
        payload = {
            "action": "edit",
            "prompt": request.prompt,
            "model": spec.name,
            "image_url": request.image_url,
            # Documented as optional, but the service rejects a request without a size.
            "size": request.size or "1:1",
        }
        return await self._submit_images(payload)

    async def _submit_images(self, payload: dict[str, Any]) -> Submission:
        payload["async"] = True
        if self.callback_url:
            payload["callback_url"] = self.callback_url
        return submit_answer(await self._post_submit(f"{self.base_url}/flux/images", payload))

    async def statuses(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        """One ``retrieve_batch`` per 50 handles, sent concurrently.

        A handle that is not a task id the service could know (see :data:`_TASK_ID`) is never sent: it is
        FAILED at once, so that it cannot spoil the batch of the others. A batch that failed after retries
        leaves its tasks out (asked again next time); when every batch failed and there is nothing else to
        report, its error is raised.
        """
        found: dict[str, TaskStatus] = {}
        unique: list[str] = []
        for handle in dict.fromkeys(handles):
            if _TASK_ID.fullmatch(handle):
                unique.append(handle)
            else:
                found[handle] = _unpollable(handle)
        chunks = [unique[start : start + BATCH_SIZE] for start in range(0, len(unique), BATCH_SIZE)]
        answers = await asyncio.gather(*(self._retrieve_batch(chunk) for chunk in chunks), return_exceptions=True)
        failures: list[FluxError] = []
        for answer in answers:
            if isinstance(answer, FluxError):
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                found.update(answer)
        if failures and len(failures) == len(chunks) and not found:
            raise failures[0]
        for failure in failures:
            log.warning("a status batch failed; its tasks are asked again next time: %s", failure)
        return found

    async def _retrieve_batch(self, ids: Sequence[str]) -> dict[str, TaskStatus]:
        body = await self._poll("POST", f"{self.base_url}/flux/tasks", {"action": "retrieve_batch", "ids": list(ids)})
        return batch_answer(body, ids)

    async def probe_key(self) -> bool:
        """``retrieve`` of a made-up task id (task lookups are free)."""
        payload = {"action": "retrieve", "id": str(uuid.uuid4())}
        await self._send("POST", f"{self.base_url}/flux/tasks", payload=payload, submit=False)
        return True

    def parse_callback(self, body: Any) -> TaskStatus:
        """Read a callback POST (the synchronous response shape with ``task_id``).

        Callbacks are not signed: the caller must only act on one whose ``handle`` matches a task it
        submitted itself, and keeps polling as the fallback.
        """
        return callback_answer(body)


# -- the parsers of AceData's answers (pure functions: they raise only FluxError) ---------------------------


def error_answer(status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
    """The error of a non-2xx answer, by its code, else by its status (a body that cannot be read has none)."""
    try:
        envelope = parse_model(AceErrorBody, body, "an error answer") if isinstance(body, dict) else AceErrorBody()
    except FluxError:
        envelope = AceErrorBody()
    error = envelope.error or AceError()
    return error_for(
        status=status,
        code=error.code,
        message=error.message,
        trace_id=envelope.trace_id,
        retry_after=retry_after_seconds(headers),
    )


def submit_answer(body: Any) -> Submission:
    """The task a ``/flux/images`` answer started, or the error it reports, or UpstreamError."""
    answer = parse_model(AceImagesResponse, body, "the /flux/images answer")
    if answer.task_id:
        if not _TASK_ID.fullmatch(answer.task_id):
            raise UpstreamError("/flux/images answered a task_id that cannot be followed", trace_id=answer.trace_id)
        return Submission(handle=answer.task_id, trace_id=answer.trace_id)
    status = task_status("", answer)
    if status.error is not None:
        raise status.error
    raise UpstreamError("/flux/images answered without a task_id", trace_id=answer.trace_id)


def batch_answer(body: Any, ids: Sequence[str]) -> dict[str, TaskStatus]:
    """The statuses of the wanted ``ids`` in a ``retrieve_batch`` answer; a record that cannot be read is
    left out (asked again next time), so that it cannot hide the others."""
    batch = parse_model(AceBatch, body, "the /flux/tasks answer")
    wanted = set(ids)
    found: dict[str, TaskStatus] = {}
    for item in batch.items:
        try:
            task = parse_model(AceTask, item, "a /flux/tasks record")
        except UpstreamError as error:
            log.warning("skipping a task record; its task is asked again next time: %s", error)
            continue
        if task.id in wanted:
            found[task.id] = task_status(task.id, task.response, task.trace_id)
    return found


def callback_answer(body: Any) -> TaskStatus:
    """A callback body's final status; CallbackError if it is not one."""
    answer = parse_model(AceImagesResponse, body, "the callback body", error=CallbackError)
    if not answer.task_id:
        raise CallbackError("callback body has no task_id")
    if not _TASK_ID.fullmatch(answer.task_id):
        raise CallbackError("callback body names a task_id the service never gives")
    status = task_status(answer.task_id, answer)
    if status.state is TaskState.PENDING:
        raise CallbackError("callback body carries neither images nor an error")
    return status


def _unpollable(handle: str) -> TaskStatus:
    error = UpstreamError(f"the stored task id {handle[:40]!r} cannot be sent to the service")
    return TaskStatus(handle, TaskState.FAILED, error=error)
