"""What the emulator remembers: requests it received, tasks it runs and callbacks it made.

These are plain dataclasses so tests can assert on them directly. Times are on the emulator's clock
(``FluxEmulator.now()``: wall time plus whatever ``advance()`` added).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

__all__ = [
    "BFL_TERMINAL_STATUSES",
    "CallbackDelivery",
    "EmuTask",
    "Headers",
    "Mode",
    "Outcome",
    "Provider",
    "RecordedRequest",
]

Provider = Literal["acedata", "openai", "bfl"]
"""Which vendor family a task belongs to."""

Mode = Literal["sync", "async", "callback", "poll"]
"""How the result is delivered: in the HTTP answer, by polling /flux/tasks, by callback, or by BFL polling."""

BFL_TERMINAL_STATUSES = frozenset({"Ready", "Error", "Request Moderated", "Content Moderated", "Task not found"})
"""Black Forest Labs statuses after which a task never changes again. Any other word never finishes."""


_T = TypeVar("_T")


class Headers(dict[str, str]):
    """A plain dict of HTTP headers whose names are case-insensitive, as in HTTP.

    Names are stored lower-cased (so it compares equal to a dict with lower-case keys) and looked up in
    any case: ``headers["Authorization"]`` and ``headers["authorization"]`` are the same entry.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    @overload
    def get(self, name: str, default: None = None, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str | _T, /) -> str | _T: ...
    def get(self, name: str, default: object = None, /) -> object:
        return super().get(name.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as it arrived, before any injected delay or fault.

    ``headers`` is a ``Headers`` dict: names lower-cased, looked up case-insensitively. ``json`` is the
    parsed body, or None when the body is empty or not JSON.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    json: Any | None
    at: float


@dataclass(frozen=True)
class CallbackDelivery:
    """One AceData callback POST the emulator made: what it sent and what the receiver answered.

    ``status`` is the receiver's HTTP status, or None when the POST failed; ``error`` then says why.
    """

    url: str
    json: dict[str, Any]
    status: int | None
    error: str | None
    at: float


@dataclass(frozen=True)
class Outcome:
    """How a task ends.

    ``status`` uses Black Forest Labs' words ("Ready" is success). AceData and the OpenAI relay only
    distinguish success from failure, and report a failure with ``code`` and ``message``.
    """

    status: str = "Ready"
    code: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the task produced images."""
        return self.status == "Ready"

    @property
    def terminal(self) -> bool:
        """Whether a task with this outcome ever stops being pending (unknown BFL words never do)."""
        return self.status in BFL_TERMINAL_STATUSES


SUCCESS = Outcome()
FETCH_FAILED = Outcome(status="Error", code="api_error", message="fetch failed")


@dataclass(eq=False)
class EmuTask:
    """A generation the emulator accepted, from submit until it finished.

    The service fetches an edit's source image (``source_url``) while accepting the task and notes in
    ``source_ok`` whether that worked. A task settles once the emulator clock reaches ``due_at``
    (``created_at + task_delay`` at submit): ``outcome`` is then what happened (``planned``, i.e. what the
    test queued with ``fail_next_task``/``bfl_next_status`` or success, unless the source fetch failed).
    It has finished when ``finished_at`` is set; a BFL task whose outcome is an unknown word such as
    "Processing" settles but never finishes, so it stays in flight forever.
    """

    id: str
    provider: Provider
    mode: Mode
    model: str
    prompt: str
    request: Any
    trace_id: str
    created_at: float
    due_at: float
    image_count: int
    planned: Outcome
    callback_url: str | None = None
    requested_seed: int | None = None
    source_url: str | None = None
    source_ok: bool | None = None
    outcome: Outcome | None = None
    finished_at: float | None = None
    images: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    timings: list[int | dict[str, float]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def pending(self) -> bool:
        """Whether the task is still in flight (created, not finished)."""
        return self.finished_at is None
