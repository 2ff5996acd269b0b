"""The optional receiver of provider callbacks (``CALLBACK_PUBLIC_URL``, ``CALLBACK_LISTEN``).

A callback only makes a job finish sooner: the runner checks the result with the provider before using
it, and polling goes on regardless, so a lost or forged callback changes nothing.
"""

from __future__ import annotations

import logging

from aiohttp import web
from yarl import URL

from bot.flux import CallbackError
from bot.flux.http import parse_json
from bot.jobs import JobRunner
from bot.settings import listen_address

__all__ = ["CallbackReceiver"]

log = logging.getLogger(__name__)

#: Callback bodies are small JSON documents; anything larger is refused unread.
MAX_BODY = 256 * 1024


class CallbackReceiver:
    """An HTTP server that hands the callbacks POSTed to ``public_url``'s path to the runner."""

    def __init__(self, runner: JobRunner, *, public_url: str, listen: str) -> None:
        self._runner = runner
        self.path = URL(public_url).path or "/"
        self._host, self._port = listen_address(listen)  # checked when the settings loaded
        self._app = web.Application(client_max_size=MAX_BODY)
        self._app.router.add_post(self.path, self._receive)
        self._runner_app = web.AppRunner(self._app, access_log=None)
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner_app.setup()
        site = web.TCPSite(self._runner_app, self._host, self._port)
        await site.start()
        self.port = self._runner_app.addresses[0][1]
        log.info("receiving provider callbacks on %s:%d%s", self._host, self.port, self.path)

    async def stop(self) -> None:
        await self._runner_app.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        """Any body gets a 2xx or a 4xx answer, never a 5xx: nothing a caller sends is our failure."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "too large"}, status=413)
        try:
            known = await self._runner.accept_callback(parse_json(raw))
        except CallbackError as exc:
            log.info("refused a malformed callback: %s", exc)
            return web.json_response({"error": "not a Flux callback"}, status=400)
        except Exception as exc:  # an unauthenticated caller must never see a 5xx nor put a traceback in the log
            # The body named a task, but it could not be looked up (e.g. the database is busy): poll anyway,
            # which is all a callback ever does.
            log.warning("could not look a callback up (%s: %s); polling now anyway", type(exc).__name__, exc)
            self._runner.poll_now()
            return web.json_response({"ok": True}, status=202)
        return web.json_response({"ok": True}) if known else web.json_response({"error": "unknown task"}, status=404)
