"""The one retry policy of the Flux client (capped exponential backoff with jitter, honouring Retry-After).

Two rules decide what may be retried:

* **Status polls** are free and idempotent: they are retried after 429, 5xx, timeouts and connection errors.
* **Submits start a paid generation.** A submit is retried only when the provider certainly did not act on
  it: the connection was refused before the request was sent, or the provider answered 429 (it refused the
  request). After a timeout, a dropped connection or a 5xx, the task may exist and be billed even though we
  never saw its id; sending the request again could create — and bill — a second task. Such a submit's
  outcome is reported as unknown instead (the vendor's own SDK gets this wrong; see FLUX_API.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import FluxConnectionError, FluxError, FluxTimeoutError, RateLimitedError, UpstreamError

__all__ = ["RetryPolicy", "Sleep", "call_with_retries", "retryable_poll", "retryable_submit"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Doublings past which the backoff stays at its cap (2.0 ** n overflows a float near n = 1024).
_MAX_DOUBLINGS = 64
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait. Tests use ``initial_delay=0`` to run without waiting."""

    attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    #: A Retry-After longer than this is not waited out here: the caller reschedules the work instead.
    max_retry_after: float = 60.0
    #: Where the jitter's randomness comes from (a seeded ``random.Random().random`` makes it repeatable).
    uniform: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, retry_number: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry ``retry_number`` (0-based), or None to give up now."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff = min(self.initial_delay * 2.0 ** min(retry_number, _MAX_DOUBLINGS), self.max_delay)
        return backoff * (1 - self.jitter * self.uniform())


def retryable_submit(error: FluxError) -> bool:
    """A submit may be sent again only if the provider certainly did not start a task."""
    if isinstance(error, FluxConnectionError):
        return not error.reached_server
    return isinstance(error, RateLimitedError)


def retryable_poll(error: FluxError) -> bool:
    """A status poll may always be repeated after a transient failure."""
    return isinstance(error, RateLimitedError | UpstreamError | FluxConnectionError | FluxTimeoutError)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retryable: Callable[[FluxError], bool],
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Await ``call()``, retrying the errors ``retryable`` allows, as ``policy`` says."""
    for retry_number in range(policy.attempts):
        try:
            return await call()
        except FluxError as error:
            last_try = retry_number == policy.attempts - 1
            retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
            delay = None if last_try or not retryable(error) else policy.delay(retry_number, retry_after)
            if delay is None:
                raise
            log.info("retrying in %.2fs after %s", delay, error)
            await sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
