"""Injected failures of the bot's REST requests: Discord's 5xx, 429 and dropped connections.

What each fault does is what real Discord does:

- ``server_error``: a 5xx answer, and the request had no effect (a message post created nothing).
- ``rate_limited``: a 429 with ``retry_after`` in the JSON body and the ``Retry-After`` / ``X-RateLimit-*``
  headers of a per-route limit (the same shape as :meth:`DiscordEmulator.rate_limit` answers); no effect.
- ``dropped``: the connection closes without an answer, either before Discord acted (``after=False``:
  nothing created) or after (``after=True``: the message exists, the bot never hears of it; only the post's
  ``nonce`` with ``enforce_nonce`` lets a repeat find it again).

``emu.rest_faults.add(method, route, choose)`` calls ``choose(call)`` for each matching request (``route``
is a template or an fnmatch pattern of paths, as for ``rate_limit``); the call carries the request's JSON,
so a chooser can decide per message nonce and attempt. Every fault applied is kept in ``injected``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatch
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .model import RestCall

__all__ = ["Chooser", "FaultKind", "FaultRule", "InjectedFault", "RestFault", "RestFaults"]


class FaultKind(StrEnum):
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    DROPPED = "dropped"


@dataclass(frozen=True)
class RestFault:
    """What happens to one request instead of (or, for a drop ``after``, on top of) a normal answer."""

    kind: FaultKind
    status: int = 503
    retry_after: float = 1.0
    after: bool = False  # for DROPPED: the request took effect before the connection closed

    @classmethod
    def server_error(cls, status: int = 503) -> RestFault:
        if not 500 <= status < 600:
            raise ValueError("a server error is a 5xx")
        return cls(FaultKind.SERVER_ERROR, status=status)

    @classmethod
    def rate_limited(cls, retry_after: float) -> RestFault:
        if retry_after < 0:
            raise ValueError("retry_after cannot be negative")
        return cls(FaultKind.RATE_LIMITED, status=429, retry_after=retry_after)

    @classmethod
    def dropped(cls, *, after: bool) -> RestFault:
        return cls(FaultKind.DROPPED, status=0, after=after)

    @property
    def name(self) -> str:
        """A short label for reports: ``server_error_503``, ``rate_limited``, ``dropped_before``/``_after``."""
        if self.kind is FaultKind.SERVER_ERROR:
            return f"server_error_{self.status}"
        if self.kind is FaultKind.DROPPED:
            return "dropped_after" if self.after else "dropped_before"
        return str(self.kind)

    @property
    def handled(self) -> bool:
        """Whether the request still reaches its handler (takes effect)."""
        return self.kind is FaultKind.DROPPED and self.after

    def answer(self, headers: dict[str, str], now: float, bucket: str) -> tuple[int, Any]:
        """The status and body Discord sends instead of handling the request (headers are added in place)."""
        if self.kind is FaultKind.RATE_LIMITED:
            headers.update(
                {
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{now + self.retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
                    "X-RateLimit-Bucket": bucket,
                    "Retry-After": str(math.ceil(self.retry_after)),
                    "X-RateLimit-Scope": "user",
                }
            )
            body = {
                "message": "You are being rate limited.",
                "retry_after": round(self.retry_after, 3),
                "global": False,
            }
            return 429, body
        if self.kind is FaultKind.SERVER_ERROR:
            return self.status, {"message": f"{self.status}: {HTTPStatus(self.status).phrase}", "code": 0}
        return 0, None  # dropped: nothing is ever sent


@dataclass(frozen=True)
class InjectedFault:
    """A fault that was applied, and to which request (``call.status`` is what Discord decided, or 0)."""

    call: RestCall
    fault: RestFault


Chooser = Callable[[RestCall], "RestFault | None"]


@dataclass
class FaultRule:
    method: str
    route: str
    choose: Chooser

    def matches(self, method: str, route: str, path: str) -> bool:
        return self.method in ("*", method) and (self.route == route or fnmatch(path, self.route))


@dataclass
class RestFaults:
    """The fault rules of one emulator, and what they did."""

    rules: list[FaultRule] = field(default_factory=list)
    injected: list[InjectedFault] = field(default_factory=list)
    bucket: str = field(default_factory=lambda: secrets.token_hex(16))

    def add(self, method: str, route: str, choose: Chooser) -> FaultRule:
        """Ask ``choose(call)`` about every matching request; the first rule that returns a fault wins."""
        rule = FaultRule(method.upper(), route, choose)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """No more faults from now on (what was injected stays recorded)."""
        self.rules.clear()

    def take(self, method: str, route: str, call: RestCall) -> RestFault | None:
        for rule in self.rules:
            if rule.matches(method, route, call.path) and (fault := rule.choose(call)) is not None:
                self.injected.append(InjectedFault(call, fault))
                return fault
        return None

    def count(self) -> dict[str, int]:
        """How many faults of each kind were applied (by :attr:`RestFault.name`)."""
        counts: dict[str, int] = {}
        for injected in self.injected:
            counts[injected.fault.name] = counts.get(injected.fault.name, 0) + 1
        return counts

    @staticmethod
    def drop(request: web.Request) -> None:
        """Close the request's connection: the client gets no answer at all."""
        if request.transport is not None:
            request.transport.close()
