"""Injected faults: errors, malformed bodies, slow answers and dropped connections on chosen requests.

Faults queue per ``(method, path)`` (exact path, no query) and each one is used by the next matching
request, oldest first. The request is recorded before any fault applies.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tests.fluxemu import acedata, bfl, openai_relay

__all__ = ["Family", "Fault", "FaultBook", "error_for", "family_of"]

Family = Literal["acedata", "openai", "bfl", "plain"]


def family_of(path: str) -> Family:
    """Which vendor's error shape a path answers with."""
    if path.startswith("/flux/"):
        return "acedata"
    if path == "/v1/images/generations":
        return "openai"
    if path.startswith("/v1/"):
        return "bfl"
    return "plain"


def error_for(path: str, *, status: int | None, code: str | None, message: str | None) -> web.Response:
    """The error answer of the vendor that owns ``path`` (plain text outside the vendor paths)."""
    match family_of(path):
        case "acedata":
            return acedata.error_response(status=status, code=code, message=message)
        case "openai":
            return openai_relay.error_response(status=status, code=code, message=message)
        case "bfl":
            return bfl.error_response(status=status, code=code, message=message)
        case "plain":
            status = status or 500
            return web.Response(status=status, text=message or f"{status}: injected fault")


@dataclass(frozen=True)
class Fault:
    """What to do to one request. See ``FluxEmulator.add_fault`` for the meaning of each field."""

    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | str | None = None
    body: bytes | None = None
    delay: float = 0.0
    drop: bool = False
    stream: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError("delay cannot be negative")
        if self.drop and (self.answers_itself or self.retry_after is not None or self.headers):
            raise ValueError("a dropped connection sends no status, body or headers")
        if self.stream is not None and (self.stream < 0 or self.body is not None or self.code or self.message):
            raise ValueError("a streamed body is a size, and replaces the body and the error")
        if not (self.drop or self.delay or self.answers_itself):
            raise ValueError("this fault would do nothing: give a status, code, body, delay or drop")

    @property
    def answers_itself(self) -> bool:
        """Whether the fault answers instead of the endpoint (an error or a raw body)."""
        return (
            self.body is not None
            or self.stream is not None
            or self.status is not None
            or self.code is not None
            or self.message is not None
        )


class FaultBook:
    """The queued faults, FIFO per (method, path)."""

    def __init__(self) -> None:
        self._queues: defaultdict[tuple[str, str], deque[Fault]] = defaultdict(deque)
        #: Bytes of streamed bodies that were written before the client hung up or the stream ended.
        self.streamed_bytes = 0

    def add(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests with this method and path."""
        if times < 1:
            raise ValueError("times must be at least 1")
        self._queues[(method.upper(), path)].extend([fault] * times)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if one is queued; it is used up."""
        queue = self._queues.get((method.upper(), path))
        return queue.popleft() if queue else None

    def middleware(self) -> Middleware:
        """An aiohttp middleware that applies the queued faults."""

        @web.middleware
        async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            fault = self.take(request.method, request.path)
            if fault is None:
                return await handler(request)
            return await self._apply(fault, request, handler)

        return apply_faults

    async def _apply(self, fault: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: the connection is gone
        if fault.stream is not None:
            return await self._stream(fault, request)
        response = await _answer(fault, request, handler)
        response.headers.update(_extra_headers(fault))
        return response

    async def _stream(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        """A 200 (or ``status``) JSON body of ``stream`` bytes, chunked, with no Content-Length."""
        response = web.StreamResponse(status=fault.status or 200, headers=_extra_headers(fault))
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        head, tail = b'{"padding": "', b'"}'
        left = max(fault.stream or 0, len(head) + len(tail)) - len(head) - len(tail)
        try:
            await self._write(response, head)
            while left > 0:
                chunk = b"x" * min(left, STREAM_CHUNK)
                await self._write(response, chunk)
                left -= len(chunk)
            await self._write(response, tail)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as a capped reader does
        return response

    async def _write(self, response: web.StreamResponse, chunk: bytes) -> None:
        await response.write(chunk)
        self.streamed_bytes += len(chunk)


#: The size of the chunks of a streamed body.
STREAM_CHUNK = 64 * 1024


def _extra_headers(fault: Fault) -> dict[str, str]:
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = _retry_after(fault.retry_after)
    return headers


async def _answer(fault: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
    response: web.StreamResponse
    if fault.body is not None:
        response = web.Response(status=fault.status or 200, body=fault.body, content_type="application/json")
    elif fault.answers_itself:
        response = error_for(request.path, status=fault.status, code=fault.code, message=fault.message)
    else:
        response = await handler(request)  # only slow: handled normally, e.g. a submit still creates its task
    return response


def _retry_after(value: float | str) -> str:
    """Seconds, or a string sent as it is (RFC 9110 also allows an HTTP date)."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
