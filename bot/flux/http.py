"""One HTTP exchange with a provider: explicit timeout, byte cap, JSON parsed defensively, failures typed."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from yarl import URL

from bot import metrics
from bot.bodies import BodyTooLarge, read_capped

from .errors import FluxAPIError, FluxConnectionError, FluxError, FluxTimeoutError, UpstreamError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_RETRY_AFTER",
    "ErrorParser",
    "Timeouts",
    "parse_json",
    "parse_model",
    "retry_after_seconds",
    "send_json",
]

log = logging.getLogger(__name__)

#: The most bytes of a provider's answer that are read; a longer answer is refused (a typed error).
MAX_JSON_BYTES = 4 * 1024 * 1024
#: The longest ``Retry-After`` taken at its word, in seconds; a longer one is cut to this.
MAX_RETRY_AFTER = 24 * 3600.0
_DELAY_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")

#: Builds the error for a non-2xx answer from its status, its parsed body (None if not JSON) and headers.
ErrorParser = Callable[[int, Any, Mapping[str, str]], FluxAPIError]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts per kind of call. Synchronous providers need a long ``submit`` (they hold the connection)."""

    submit: aiohttp.ClientTimeout = field(default_factory=lambda: aiohttp.ClientTimeout(total=60, connect=10))
    poll: aiohttp.ClientTimeout = field(default_factory=lambda: aiohttp.ClientTimeout(total=30, connect=10))


async def send_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    client_timeout: aiohttp.ClientTimeout,
    parse_error: ErrorParser,
    payload: Mapping[str, Any] | None = None,
    max_bytes: int = MAX_JSON_BYTES,
) -> Any:
    """Send one request and return the JSON body of a 2xx answer.

    Redirects are never followed (they would carry the API key elsewhere): a 3xx is an
    :class:`UpstreamError`. At most ``max_bytes`` of the answer are read, whatever its Content-Length says.

    Raises :class:`FluxConnectionError` (with ``reached_server`` False only when the connection could not
    be opened), :class:`FluxTimeoutError`, the provider's error from ``parse_error`` (built without the body
    when it was too long), or :class:`UpstreamError` for a 2xx answer that is not JSON or is too long.
    """
    try:
        URL(url)
    except ValueError as exc:
        raise FluxConnectionError(f"{method} to an unusable URL: {type(exc).__name__}", reached_server=False) from exc
    too_large: BodyTooLarge | None = None
    raw = b""
    started, outcome = time.monotonic(), "error"  # what fluxbot_provider_requests_total counts it as
    try:
        async with session.request(
            method, url, headers=headers, json=payload, timeout=client_timeout, allow_redirects=False
        ) as response:
            status = response.status
            outcome = str(status)
            response_headers = dict(response.headers)
            try:
                raw = await read_capped(response, max_bytes)
            except BodyTooLarge as exc:
                too_large = exc
    except aiohttp.ClientConnectorError as exc:
        raise FluxConnectionError(f"could not connect to {_host(url)}: {exc.os_error}", reached_server=False) from exc
    except aiohttp.InvalidURL as exc:  # refused before any connection
        raise FluxConnectionError(f"{method} to an unusable URL: {type(exc).__name__}", reached_server=False) from exc
    except TimeoutError as exc:
        outcome = "timeout"
        raise FluxTimeoutError(f"{method} {_path(url)} got no answer within {client_timeout.total}s") from exc
    except aiohttp.ClientError as exc:
        raise FluxConnectionError(f"{method} {_path(url)} failed: {type(exc).__name__}", reached_server=True) from exc
    finally:
        metrics.current().provider_request(url, outcome, time.monotonic() - started)

    if 300 <= status < 400:
        raise UpstreamError(
            f"{method} {_path(url)} answered a redirect ({status}); redirects are not followed", status=status
        )
    body = None if too_large else parse_json(raw)
    if status >= 400:
        raise parse_error(status, body, response_headers)
    if too_large is not None:
        raise UpstreamError(
            f"{method} {_path(url)} answered {status} with {too_large.size}; the limit is {max_bytes}", status=status
        )
    if body is None:
        raise UpstreamError(
            f"{method} {_path(url)} answered {status} with a body that is not JSON: {raw[:80]!r}", status=status
        )
    return body


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, or None when it is not JSON (or nested too deeply to parse)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def parse_model(model: type[M], body: Any, what: str, *, error: Callable[[str], FluxError] = UpstreamError) -> M:
    """``body`` read as ``model``, or ``error(detail)`` raised for anything that does not fit.

    The one place where provider and callback JSON becomes our models: whatever validation can raise on
    hostile input (pydantic's errors, numbers too large for an int, nesting too deep) ends as a typed error.
    """
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise error(f"{what} has an unexpected shape: {exc.error_count()} errors") from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise error(f"{what} has an unexpected shape: {type(exc).__name__}") from exc


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds, or None when absent or unreadable.

    Both RFC 9110 forms are read: delay-seconds (a fraction is tolerated) and an HTTP date (a date in the
    past is 0; a zone other than GMT that cannot be read counts as GMT). The result is at most
    :data:`MAX_RETRY_AFTER`.
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _host(url: str) -> str:
    try:
        return URL(url).host or url
    except ValueError:
        return "an unreadable URL"


def _path(url: str) -> str:
    try:
        return URL(url).path
    except ValueError:
        return "an unreadable URL"
