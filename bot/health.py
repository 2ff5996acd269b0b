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
    """Follows each shard's gateway connection through discord.py's shard connect, resumed and disconnect
    events. The bot is as connected as its least connected shard: a shard down is an outage for its servers."""

    def __init__(self, client: commands.AutoShardedBot, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._started = clock()  # not connected yet: start-up counts as a disconnection
        self._connected: set[int] = set()
        self._down_since: dict[int, float] = {}
        client.add_listener(self._on_connected, "on_shard_connect")
        client.add_listener(self._on_connected, "on_shard_resumed")
        client.add_listener(self._on_disconnect, "on_shard_disconnect")

    async def _on_connected(self, shard_id: int) -> None:
        self._connected.add(shard_id)

    async def _on_disconnect(self, shard_id: int) -> None:
        if shard_id in self._connected:
            self._connected.discard(shard_id)
            self._down_since[shard_id] = self._clock()

    def _shard_ids(self) -> list[int]:
        """The shards the client runs; none before it knows its shard count (at connection)."""
        if self._client.shard_ids is not None:
            return sorted(self._client.shard_ids)
        count: int | None = self._client.shard_count  # discord.py annotates it as int; None until known
        return list(range(count)) if count is not None else []

    def _shard_state(self, shard_id: int) -> str:
        if shard_id in self._connected:
            return "connected"
        since = self._down_since.get(shard_id, self._started)
        return "reconnecting" if self._clock() - since < GATEWAY_GRACE else "disconnected"

    def shards(self) -> dict[int, str]:
        """Each shard's state (see :meth:`state`)."""
        return {shard_id: self._shard_state(shard_id) for shard_id in self._shard_ids()}

    def state(self) -> str:
        """``connected`` when every shard is; ``reconnecting`` while a shard has been disconnected for less
        than :data:`GATEWAY_GRACE`; ``disconnected`` once one has been for longer, or the client is closed."""
        if self._client.is_closed():
            return "disconnected"
        states = set(self.shards().values())
        if not states:  # the shard count is not known yet: still starting
            return "reconnecting" if self._clock() - self._started < GATEWAY_GRACE else "disconnected"
        return next((worst for worst in ("disconnected", "reconnecting") if worst in states), "connected")


class HealthServer:
    """The HTTP server on ``METRICS_LISTEN``; :attr:`port` is the bound port once started (for port 0)."""

    def __init__(self, *, client: commands.AutoShardedBot, store: Store, metrics: Metrics, listen: str) -> None:
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
        body: dict[str, object] = {"status": "ok" if healthy else "down", "gateway": gateway, "database": database}
        if len(shards := self._gateway.shards()) > 1:  # which shard is down; with one, "gateway" says it all
            body["shards"] = {str(shard_id): state for shard_id, state in shards.items()}
        return web.json_response(body, status=200 if healthy else 503)

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT):
                await self._store.fetch_one("SELECT count(*) FROM bot_state")  # a table of ours, on either database
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
