"""``GET /healthz`` and ``GET /metrics`` on ``METRICS_LISTEN``, for Docker health checks and Prometheus."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web
from discord.ext import commands
from prometheus_client import CONTENT_TYPE_LATEST

from bot.db import Store
from bot.metrics import ACTIVE_STATES, Metrics
from bot.settings import listen_address

__all__ = ["DATABASE_TIMEOUT", "GATEWAY_GRACE", "GatewayWatch", "HealthServer"]

log = logging.getLogger(__name__)

#: Seconds the gateway may be disconnected (a reconnect, a resume) before the bot counts as unhealthy.
GATEWAY_GRACE = 5.0
#: Seconds the database has to answer a health check's query.
DATABASE_TIMEOUT = 2.0

#: One query for every state of ``fluxbot_jobs`` (a placeholder per state of ACTIVE_STATES).
_JOB_COUNTS = "SELECT status, count(*) FROM jobs WHERE status IN (?, ?, ?, ?) GROUP BY status"


class GatewayWatch:
    """Follows the client's gateway connection through discord.py's connect, resumed and disconnect events."""

    def __init__(self, client: commands.Bot, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._connected = False
        self._since = clock()  # not connected yet: start-up counts as a disconnection
        client.add_listener(self._on_connected, "on_connect")
        client.add_listener(self._on_connected, "on_resumed")
        client.add_listener(self._on_disconnect, "on_disconnect")

    async def _on_connected(self) -> None:
        self._connected = True

    async def _on_disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self._since = self._clock()

    def state(self) -> str:
        """``connected``; ``reconnecting`` while disconnected for less than :data:`GATEWAY_GRACE`;
        ``disconnected`` after that, or once the client is closed."""
        if self._client.is_closed():
            return "disconnected"
        if self._connected:
            return "connected"
        return "reconnecting" if self._clock() - self._since < GATEWAY_GRACE else "disconnected"


class HealthServer:
    """The HTTP server on ``METRICS_LISTEN``; :attr:`port` is the bound port once started (for port 0)."""

    def __init__(self, *, client: commands.Bot, store: Store, metrics: Metrics, listen: str) -> None:
        self._gateway = GatewayWatch(client)
        self._store = store
        self._metrics = metrics
        self._host, self._port = listen_address(listen)  # checked when the settings loaded
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except BaseException as exc:
            await self._runner.cleanup()
            if isinstance(exc, OSError):  # in use, or not an address of this machine: say which setting
                where = f"METRICS_LISTEN={self._host}:{self._port}"
                raise OSError(exc.errno, f"cannot serve {where}: {exc.strerror}") from exc
            raise
        self.port = self._runner.addresses[0][1]
        log.info("serving /healthz and /metrics on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        gateway = self._gateway.state()
        database = "ok" if await self._database_answers() else "unusable"
        healthy = gateway != "disconnected" and database == "ok"
        body = {"status": "ok" if healthy else "down", "gateway": gateway, "database": database}
        return web.json_response(body, status=200 if healthy else 503)

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT):
                await self._store.fetch_one("SELECT count(*) FROM sqlite_master")
        except Exception as exc:  # any failure at all means the database cannot be used now
            log.warning("health check: the database did not answer: %s", type(exc).__name__)
            return False
        return True

    async def _serve_metrics(self, _: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT):
                rows = await self._store.fetch_all(_JOB_COUNTS, ACTIVE_STATES)
            counts: dict[str, int] | None = {str(row[0]): int(row[1]) for row in rows}
        except Exception as exc:  # the other metrics are still worth serving
            log.warning("metrics: could not count jobs: %s", type(exc).__name__)
            counts = None
        return web.Response(body=self._metrics.render(counts), headers={"Content-Type": CONTENT_TYPE_LATEST})
