"""The provider-neutral requests and results that the rest of the bot exchanges with a Flux client.

Each provider module has its own wire models (the vendors' JSON shapes); these are what they translate to.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .catalog import MAX_COUNT
from .errors import FluxError

__all__ = [
    "MAX_SEED",
    "EditRequest",
    "GenerateRequest",
    "ResultImage",
    "Submission",
    "TaskState",
    "TaskStatus",
    "sane_seed",
]

#: The largest seed kept from a provider's answer (it must fit a SQLite integer); others are dropped.
MAX_SEED = 2**63 - 1


def sane_seed(value: object) -> int | None:
    """A seed a provider reported, as a non-negative int up to :data:`MAX_SEED`, or None for anything else
    (a string, a bool, a fraction, ``1e400``, a number too large to store)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and (text := value.strip()).isascii() and text.isdecimal() and len(text) <= 19:
        value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED:
        return value
    return None


class GenerateRequest(BaseModel):
    """Make ``count`` new images from a prompt."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    model: str
    size: str = "1:1"
    count: int = Field(1, ge=1, le=MAX_COUNT)
    seed: int | None = None


class EditRequest(BaseModel):
    """Change one image according to a prompt.

    ``image_url`` is a URL the provider can fetch itself, or a ``data:image/...;base64,`` URI where the
    provider accepts one.
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    model: str
    image_url: str
    size: str | None = None
    seed: int | None = None


class TaskState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ResultImage:
    """One result: a URL to download at once (they expire), or the bytes when the provider inlined them."""

    url: str | None = None
    data: bytes | None = None
    seed: int | None = None

    def __repr__(self) -> str:
        size = f"{len(self.data)} bytes" if self.data is not None else None
        return f"ResultImage(url={self.url!r}, data={size}, seed={self.seed!r})"


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """Where one provider task stands. ``error`` is set exactly when ``state`` is FAILED."""

    handle: str
    state: TaskState
    images: tuple[ResultImage, ...] = ()
    error: FluxError | None = None
    trace_id: str | None = None

    @property
    def seed(self) -> int | None:
        return next((image.seed for image in self.images if image.seed is not None), None)


@dataclass(frozen=True, slots=True)
class Submission:
    """A task the provider accepted.

    ``handle`` is what :meth:`FluxClient.statuses` takes to follow it (AceData's task id, Black Forest
    Labs' polling URL) and what the store keeps. Synchronous providers finish within the submit call and
    set ``finished``.
    """

    handle: str
    trace_id: str | None = None
    finished: TaskStatus | None = None
