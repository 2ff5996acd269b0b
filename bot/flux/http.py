"""One HTTP exchange with a provider: explicit timeout, JSON parsed defensively, failures typed."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from yarl import URL

from .errors import FluxAPIError, FluxConnectionError, FluxTimeoutError, UpstreamError

__all__ = ["ErrorParser", "Timeouts", "retry_after_seconds", "send_json"]

log = logging.getLogger(__name__)

#: Builds the error for a non-2xx answer from its status, its parsed body (None if not JSON) and headers.
ErrorParser = Callable[[int, Any, Mapping[str, str]], FluxAPIError]


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
) -> Any:
    """Send one request and return the JSON body of a 2xx answer.

    Raises :class:`FluxConnectionError` (with ``reached_server`` False only when the connection could not
    be opened), :class:`FluxTimeoutError`, the provider's error from ``parse_error``, or
    :class:`UpstreamError` for a 2xx answer that is not JSON.
    """
    try:
        async with session.request(method, url, headers=headers, json=payload, timeout=client_timeout) as response:
            status = response.status
            raw = await response.read()
            response_headers = dict(response.headers)
    except aiohttp.ClientConnectorError as exc:
        raise FluxConnectionError(f"could not connect to {_host(url)}: {exc.os_error}", reached_server=False) from exc
    except TimeoutError as exc:
        raise FluxTimeoutError(f"{method} {_path(url)} got no answer within {client_timeout.total}s") from exc
    except aiohttp.ClientError as exc:
        raise FluxConnectionError(f"{method} {_path(url)} failed: {type(exc).__name__}", reached_server=True) from exc

    body = _parse_json(raw)
    if status >= 400:
        raise parse_error(status, body, response_headers)
    if body is None:
        raise UpstreamError(
            f"{method} {_path(url)} answered {status} with a body that is not JSON: {raw[:80]!r}", status=status
        )
    return body


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds (it may be a number or an HTTP date), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _host(url: str) -> str:
    return URL(url).host or url


def _path(url: str) -> str:
    return URL(url).path
