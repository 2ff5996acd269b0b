"""The gateway websocket: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME, dispatches.

Frames are queued synchronously and written by one task per connection, so events keep the order in
which the emulator produced them, and a REST handler or a test actor can dispatch without awaiting.

Shards, as Discord has them: an IDENTIFY may carry ``shard: [i, n]``; that session then gets READY with only
the guilds of shard ``i`` (``(guild_id >> 22) % n == i``) and only their events; direct messages go to shard 0.
A session without ``shard`` is shard ``[0, 1]`` (every guild). :attr:`GatewayMixin.shard_count` is what
``GET /gateway/bot`` recommends; with :attr:`GatewayMixin.require_shard_count` an IDENTIFY with another count
is closed (4011 "Sharding required." when it has fewer shards, 4010 "Invalid shard." otherwise). A shard
that is already connected cannot be identified a second time (4010), and a new IDENTIFY of a shard replaces
its earlier, disconnected sessions (they can no longer RESUME).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web

from .constants import API_VERSION, KNOWN_INTENTS, PRIVILEGED_INTENTS, Intent

if TYPE_CHECKING:
    from .emulator import DiscordEmulator
    from .model import Guild

__all__ = ["Connection", "Dispatch", "GatewayMixin", "Session", "shard_of"]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41250


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events: Discord's ``(guild_id >> 22) % shard_count``."""
    return (guild_id >> 22) % shard_count


@dataclass
class _Close:
    code: int
    reason: str


class Connection:
    """One websocket connection; a session moves to a new connection when the bot resumes."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: Session | None = None
        #: Heartbeats (op 1) the client sent on this connection.
        self.heartbeats = 0
        self._queue: asyncio.Queue[dict[str, Any] | _Close | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name="fakediscord gateway writer")

    def send(self, frame: dict[str, Any]) -> None:
        self._queue.put_nowait(frame)

    def close(self, code: int, reason: str = "") -> None:
        self._queue.put_nowait(_Close(code, reason))

    async def stop(self) -> None:
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                if isinstance(item, _Close):
                    await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                await self.ws.send_str(json.dumps(item))
            except (ConnectionError, RuntimeError):  # the bot went away; a RESUME replays what it missed
                return


@dataclass
class Dispatch:
    """One event sent to the bot."""

    session_id: str
    seq: int
    event: str
    data: dict[str, Any]
    shard: tuple[int, int] | None = None  # the receiving session's shard (None: it identified without one)


@dataclass(eq=False)
class Session:
    emu: DiscordEmulator
    id: str
    intents: int
    identify: dict[str, Any]
    seq: int = 0
    conn: Connection | None = None
    ready: bool = False
    buffer: list[dict[str, Any]] = field(default_factory=list)
    #: ``(shard id, shard count)`` from IDENTIFY; None when it sent none (it then gets everything, like [0, 1]).
    shard: tuple[int, int] | None = None
    #: A later IDENTIFY of the same shard replaced this session: it gets no more events and cannot RESUME.
    superseded: bool = False

    def handles(self, guild_id: int | None) -> bool:
        """Whether this session gets the events of ``guild_id`` (None: direct messages, which go to shard 0)."""
        if self.shard is None:
            return True
        shard_id, shard_count = self.shard
        return shard_id == (0 if guild_id is None else shard_of(guild_id, shard_count))

    @property
    def live(self) -> bool:
        """Identified, READY sent, and connected now."""
        return self.ready and self.conn is not None and not self.superseded

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        frame = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.buffer.append(frame)
        self.emu.gateway_log.append(Dispatch(self.id, self.seq, event, data, self.shard))
        if self.conn is not None:
            self.conn.send(frame)


class GatewayMixin:
    """The gateway half of :class:`~tests.fakediscord.emulator.DiscordEmulator`."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        #: Every IDENTIFY payload received (token removed): ``intents``, ``properties``, ``shard``...
        self.identifies: list[dict[str, Any]] = []
        self.gateway_log: list[Dispatch] = []
        self.presences: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.resumes = 0
        #: Where READY tells the bot to RESUME (None: this emulator's own gateway URL).
        self.resume_gateway_url: str | None = None
        #: The shard count ``GET /gateway/bot`` recommends (discord.py's AutoShardedClient runs that many
        #: when it is not given one), and the count :meth:`add_guild` spreads ``shard=`` guilds over.
        self.shard_count = 1
        #: When True, IDENTIFY must carry ``shard: [i, shard_count]``: fewer shards are closed with 4011,
        #: another count with 4010 (as Discord does once a bot is too big for fewer shards).
        self.require_shard_count = False
        #: ``session_start_limit.max_concurrency`` of ``GET /gateway/bot``: how many shards may identify at once.
        self.max_concurrency = 1
        self._connections: set[Connection] = set()

    @property
    def intents(self) -> int | None:
        """The intents of the last IDENTIFY (None before any)."""
        return self.identifies[-1].get("intents") if self.identifies else None

    def live_shards(self) -> dict[int, Session]:
        """The connected, READY sessions by shard id (a session without ``shard`` counts as shard 0)."""
        return {(s.shard or (0, 1))[0]: s for s in self.sessions.values() if s.live}

    def sessions_for(self, guild_id: int | None) -> list[Session]:
        """The live sessions that get the events of ``guild_id`` (None: direct messages)."""
        return [s for s in self.sessions.values() if s.live and s.handles(guild_id)]

    # -- test controls ----------------------------------------------------------------------------
    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the bot reconnects to ``resume_gateway_url`` and RESUMEs."""
        for conn in list(self._connections):
            if conn.session is not None:
                conn.send({"op": 7, "d": None, "s": None, "t": None})

    def drop_connections(self, code: int = 4000, *, shard: int | None = None) -> None:
        """Close every gateway connection (``shard``: only those of that shard id) with ``code`` (4000 is
        resumable; 4004/4014 are fatal)."""
        for conn in list(self._connections):
            session = conn.session
            if shard is None or (session is not None and (session.shard or (0, 1))[0] == shard):
                conn.close(code, "closed by the emulator")

    async def wait_caught_up(self, timeout: float = 5.0) -> None:
        """Until every connected bot has handled every event sent to it so far (its cache reflects them).

        A test that changes the world (deletes a role, say) and then looks at the bot's cache needs this:
        the bot reads events on its own task. Discord may ask for a heartbeat (op 1) at any time, and
        discord.py answers at once from the loop that parses events in order, so an answer means the
        events before the request are in its cache. Two requests, because the client's periodic heartbeat
        (from another thread, every 41 s) could arrive in between and pass for one answer.
        """
        conns = [c for c in self._connections if c.session is not None and c.session.live]
        marks = {c: c.heartbeats for c in conns}
        for conn in conns:
            conn.send({"op": 1, "d": None, "s": None, "t": None})
            conn.send({"op": 1, "d": None, "s": None, "t": None})

        def answered() -> bool:
            return all(c.heartbeats >= marks[c] + 2 or c not in self._connections for c in conns)

        await self.wait_until(answered, timeout, "the bot to answer heartbeat requests (op 1)")

    # -- dispatch ---------------------------------------------------------------------------------
    def _dispatch(
        self,
        event: str,
        data: dict[str, Any] | Callable[[Session], dict[str, Any]],
        *,
        guild_id: int | None,
        intent: int | None = None,
    ) -> None:
        """Send an event to the sessions of the shard of ``guild_id`` (None: a DM, shard 0) that asked for
        ``intent``."""
        for session in self.sessions.values():
            if not session.ready or session.superseded or not session.handles(guild_id):
                continue
            if intent is not None and not session.intents & intent:
                continue
            session.dispatch(event, data(session) if callable(data) else data)

    def _dispatch_guild_create(self, guild: Guild) -> None:
        for session in self.sessions.values():
            if session.ready and not session.superseded and session.handles(guild.id):
                payload = self._guild_create_payload(session, guild)
                del payload["unavailable"]  # a guild joined after READY: discord.py calls on_guild_join
                session.dispatch("GUILD_CREATE", payload)

    def _guild_create_payload(self, session: Session, guild: Guild) -> dict[str, Any]:
        # With the members intent a small guild comes with every member, so discord.py sees it as chunked
        # and does not need to request members before on_ready; without it only the bot itself.
        everyone = session.intents & Intent.GUILD_MEMBERS
        return guild.payload(members=guild.members.values() if everyone else [guild.bot_member])

    # -- the websocket ----------------------------------------------------------------------------
    async def _handle_gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws)
        self._connections.add(conn)
        conn.send({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        frame = json.loads(msg.data)
                    except ValueError:
                        conn.close(4002, "Error while decoding payload.")
                        continue
                    self._on_frame(conn, frame)
                elif msg.type is WSMsgType.BINARY:
                    conn.close(4002, "Error while decoding payload.")
        finally:
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
            self._connections.discard(conn)
            await conn.stop()
            self._bump()
        return ws

    def _on_frame(self, conn: Connection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            self.heartbeats += 1
            conn.heartbeats += 1
            conn.send({"op": 11, "d": None, "s": None, "t": None})
            self._bump()
        elif op == 2:
            self._identify(conn, data or {})
        elif op == 6:
            self._resume(conn, data or {})
        elif op == 3:
            self.presences.append(data or {})
        elif op == 8:
            self._request_members(conn, data or {})
        elif op == 4:
            pass  # voice state: not emulated
        else:
            conn.close(4001, "Unknown opcode.")

    def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if data.get("token") != self.token:
            conn.close(4004, "Authentication failed.")
            return
        intents = data.get("intents")
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        self._bump()
        if not isinstance(intents, int) or intents & ~KNOWN_INTENTS:
            conn.close(4013, "Invalid intent(s).")
            return
        if self.reject_privileged_intents and intents & PRIVILEGED_INTENTS:
            conn.close(4014, "Disallowed intent(s).")
            return
        shard = self._identified_shard(conn, data.get("shard"))
        if shard is False:
            return
        for earlier in self.sessions.values():
            if earlier.shard == shard and shard is not None:
                earlier.superseded = True
        session = Session(self, secrets.token_hex(16), intents, data, shard=shard)
        self.sessions[session.id] = session
        session.conn = conn
        conn.session = session
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "email": None, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds.values() if session.handles(g.id)],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url or self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["fakediscord"],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        session.dispatch("READY", ready)
        for guild in self.guilds.values():
            if session.handles(guild.id):
                session.dispatch("GUILD_CREATE", self._guild_create_payload(session, guild))
        session.ready = True
        self._bump()

    def _identified_shard(self, conn: Connection, shard: Any) -> tuple[int, int] | Literal[False] | None:
        """IDENTIFY's ``shard`` checked as Discord does; False when the connection was closed for it."""
        if shard is None:
            if self.require_shard_count and self.shard_count > 1:
                conn.close(4011, "Sharding required.")
                return False
            return None
        valid = (
            isinstance(shard, list)
            and len(shard) == 2
            and all(type(n) is int for n in shard)
            and 0 <= shard[0] < shard[1]
        )
        if not valid:
            conn.close(4010, "Invalid shard.")
            return False
        shard_id, shard_count = shard
        if self.require_shard_count and shard_count != self.shard_count:
            if shard_count < self.shard_count:
                conn.close(4011, "Sharding required.")
            else:
                conn.close(4010, "Invalid shard.")
            return False
        if any(s.live and s.shard == (shard_id, shard_count) for s in self.sessions.values()):
            conn.close(4010, "Invalid shard.")  # this shard is connected already, in another session
            return False
        return (shard_id, shard_count)

    def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or session.superseded or data.get("token") != self.token:
            conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        if session.conn is not None and session.conn is not conn:
            session.conn.close(4000, "Session resumed elsewhere.")
        session.conn = conn
        conn.session = session
        seq = data.get("seq") or 0
        for frame in session.buffer:
            if frame["s"] > seq:
                conn.send(frame)
        session.dispatch("RESUMED", {"_trace": ["fakediscord"]})
        self.resumes += 1
        self._bump()

    def _request_members(self, conn: Connection, data: dict[str, Any]) -> None:
        session = conn.session
        if session is None:
            conn.close(4003, "Not authenticated.")
            return
        guild_ids = data.get("guild_id")
        guild_ids = guild_ids if isinstance(guild_ids, list) else [guild_ids]
        query = (data.get("query") or "").lower()
        limit = int(data.get("limit") or 0) or None
        user_ids = {int(u) for u in (data.get("user_ids") or [])}
        for gid in guild_ids:
            guild = self.guilds.get(int(gid))
            if guild is None:
                continue
            members = [
                m
                for m in guild.members.values()
                if (not user_ids or m.id in user_ids) and m.name.lower().startswith(query)
            ][:limit]
            payload: dict[str, Any] = {
                "guild_id": str(guild.id),
                "members": [m.payload() for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [str(u) for u in user_ids - {m.id for m in members}],
            }
            if data.get("nonce") is not None:
                payload["nonce"] = data["nonce"]
            session.dispatch("GUILD_MEMBERS_CHUNK", payload)

    async def _close_gateway(self) -> None:
        for conn in list(self._connections):
            conn.close(WSCloseCode.GOING_AWAY, "emulator shutting down")
        for conn in list(self._connections):
            await conn.stop()
