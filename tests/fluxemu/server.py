"""``FluxEmulator``: one loopback aiohttp server emulating AceData, an OpenAI-style relay and BFL at once.

Routes (they do not collide):

- AceData: ``POST /flux/images``, ``POST /flux/tasks``; any other ``/flux/*`` is a 404 ``no_api``.
- OpenAI-style relay: ``POST /v1/images/generations``.
- Black Forest Labs: ``POST /v1/{model}``, ``GET /v1/get_result?id=``.
- Results: ``GET /images/{task_id}/{n}.png`` (PNG bytes); test files: ``GET /files/{name}``.
- Anything else: plain 404.

Middlewares, outermost first: record the request (on arrival) and track its handler so that
``close()`` can cancel it, apply injected faults, turn routing misses into the vendor's 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fluxemu import acedata
from tests.fluxemu.acedata import AceData
from tests.fluxemu.bfl import BlackForestLabs
from tests.fluxemu.common import parse_json
from tests.fluxemu.engine import Engine
from tests.fluxemu.faults import Fault, FaultBook, family_of
from tests.fluxemu.openai_relay import OpenAIRelay
from tests.fluxemu.records import Headers, RecordedRequest

__all__ = ["FluxEmulator"]

SHUTDOWN_TIMEOUT = 0.25
"""How long aiohttp lets requests finish on shutdown (``close()`` has cancelled them already)."""


class FluxEmulator(Engine):
    """The Flux vendors on loopback. ``start()`` binds 127.0.0.1 on a free port; ``close()`` undoes it all.

    The state, clock and task API (``tasks``, ``advance``, ``fail_next_task``, ``requests`` ...) come from
    ``Engine``; this class adds the HTTP server and fault injection.
    """

    def __init__(self, api_key: str = "test-key") -> None:
        super().__init__(api_key)
        self._faults = FaultBook()
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> FluxEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port, start serving, and start the clock."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already started")
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        _host, port = runner.addresses[0][:2]
        self._start_engine(f"http://127.0.0.1:{port}")

    async def close(self) -> None:
        """Stop serving, cancel background work (clock, callbacks), close the client session.

        Requests still being served (a synchronous call waiting for its task, an injected delay) are
        cancelled at once: their clients see the connection close.
        """
        for handler in self._handlers:
            handler.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._stop_engine()

    def add_fault(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        retry_after: float | str | None = None,
        body: bytes | None = None,
        delay: float = 0.0,
        drop: bool = False,
        stream: int | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Misbehave on the next ``times`` requests with this method and exact path (FIFO per pair).

        - ``status``/``code``/``message``: answer with the error of the vendor owning the path, in its
          shape; a missing status comes from the code, a missing code from the status.
        - ``body``: answer ``status`` (default 200) with these raw bytes as application/json.
        - ``retry_after``: add a ``Retry-After`` header to the answer: seconds, or a string sent as it is
          (an HTTP date, or something malformed).
        - ``stream``: answer ``status`` (default 200) with a JSON body of this many bytes, sent in chunks
          without Content-Length; ``streamed_bytes`` counts what was written before the client hung up.
        - ``headers``: more headers on the answer (e.g. ``Location`` with a 3xx ``status`` and a ``body``).
        - ``delay``: sleep this long first. With nothing else set, the request is then handled normally:
          a slow answer, after which a submit has still created its task.
        - ``drop``: close the connection without answering (after ``delay``); a submit creates no task.
        """
        fault = Fault(
            status=status,
            code=code,
            message=message,
            retry_after=retry_after,
            body=body,
            delay=delay,
            drop=drop,
            stream=stream,
            headers=dict(headers or {}),
        )
        self._faults.add(method, path, fault, times)

    @property
    def streamed_bytes(self) -> int:
        """Bytes of ``stream`` faults written so far (a client that stops reading stops this growing)."""
        return self._faults.streamed_bytes

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._faults.middleware(), _vendor_not_found])
        for vendor in (AceData(self), OpenAIRelay(self), BlackForestLabs(self)):
            app.add_routes(vendor.routes())
        app.add_routes([web.get("/images/{task_id}/{name}", self._serve_result)])
        app.add_routes([web.get("/files/{name:.+}", self._serve_file)])
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.record(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=Headers(request.headers.items()),
                body=body,
                json=parse_json(body),
                at=self.now(),
            )
        )
        current = asyncio.current_task()
        assert current is not None
        self._handlers.add(current)
        try:
            return await handler(request)
        finally:
            self._handlers.discard(current)

    async def _serve_result(self, request: web.Request) -> web.Response:
        data = self.result_image(request.path)
        if data is None:
            raise web.HTTPNotFound
        return web.Response(body=data, content_type="image/png")

    async def _serve_file(self, request: web.Request) -> web.Response:
        hosted = self.hosted_file(request.match_info["name"])
        if hosted is None:
            raise web.HTTPNotFound
        data, content_type = hosted
        return web.Response(body=data, headers={"Content-Type": content_type})


@web.middleware
async def _vendor_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths (or methods) are 404: AceData's ``no_api`` under /flux/, aiohttp's plain 404 elsewhere."""
    if request.match_info.http_exception is None:
        return await handler(request)
    if family_of(request.path) == "acedata":
        return acedata.error_response(code="no_api", message=f"api {request.path} not found")
    raise web.HTTPNotFound
