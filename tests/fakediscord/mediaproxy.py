"""Discord's media proxy (``images-ext-1.discordapp.net/external/…``), which serves embed images.

Discord gives every ``http(s)`` image and thumbnail of an embed a ``proxy_url`` of its own, whatever the
author sent, and fetches the original from *its* side of the internet when that link is requested. Here
"the internet" is :attr:`MediaProxy.public_origins` (``http://127.0.0.1:port`` of servers a test publishes,
e.g. the Flux emulator): anything else, such as a server standing for the bot's own network, is out of
Discord's reach, so the proxy answers 404 and never connects to it. Redirects are followed the same way.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl
from aiohttp import web

from .model import sign

if TYPE_CHECKING:
    from .emulator import DiscordEmulator

__all__ = ["MediaProxy", "ProxyFetch"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ProxyFetch:
    """One GET of a ``proxy_url``: the original it names and what the proxy answered."""

    original: str
    status: int


class MediaProxy:
    def __init__(self, emu: DiscordEmulator) -> None:
        self.emu = emu
        #: Origins (``scheme://host:port``) Discord's side can reach: a test adds the servers that are public.
        self.public_origins: set[str] = set()
        #: Every GET of a proxy URL, in arrival order.
        self.log: list[ProxyFetch] = []
        self._secret = secrets.token_bytes(16)

    def publish(self, url: str) -> None:
        """Make the origin of ``url`` part of the public web the proxy fetches from."""
        self.public_origins.add(str(yarl.URL(url).origin()))

    def proxy_url(self, url: str) -> str:
        """The ``proxy_url`` Discord gives an embed image at ``url``."""
        original = yarl.URL(url)
        rest = f"{original.raw_authority}{original.raw_path}"
        query = f"?{original.raw_query_string}" if original.raw_query_string else ""
        signature = sign(self._secret, f"{original.scheme}://{rest}{query}", 0)
        return f"{self.emu.base_url}/external/{signature}/{original.scheme}/{rest}{query}"

    def with_proxy_urls(self, embeds: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """``embeds`` as Discord stores them: each http(s) image and thumbnail gets Discord's own
        ``proxy_url`` (one the author sent is ignored)."""
        stored = copy.deepcopy(list(embeds or []))
        for embed in stored:
            for key in ("image", "thumbnail"):
                media = embed.get(key)
                if not isinstance(media, dict):
                    continue
                media.pop("proxy_url", None)
                url = media.get("url")
                if isinstance(url, str) and url.startswith(("http://", "https://")):
                    media["proxy_url"] = self.proxy_url(url)
        return stored

    async def handle(self, request: web.Request) -> web.Response:
        """GET ``/external/{sig}/{scheme}/{authority}/{path}``: the original's bytes, fetched if public."""
        _, _, signature, scheme, rest = [*request.rel_url.raw_path.split("/", 4), "", "", ""][:5]
        query = f"?{request.rel_url.raw_query_string}" if request.rel_url.raw_query_string else ""
        original = f"{scheme}://{rest}{query}"
        if signature != sign(self._secret, original, 0):
            return self._answer(original, web.Response(status=404, text="Not Found"))
        current = yarl.URL(original, encoded=True)
        async with aiohttp.ClientSession() as session:
            for _ in range(_MAX_REDIRECTS + 1):
                if str(current.origin()) not in self.public_origins:
                    break  # not on the public web: Discord cannot reach it
                async with session.get(current, allow_redirects=False) as upstream:
                    location = upstream.headers.get("Location")
                    if upstream.status in _REDIRECTS and location:
                        current = upstream.url.join(yarl.URL(location))
                        continue
                    if upstream.status != 200:
                        break
                    body = await upstream.content.read(_MAX_BYTES)
                    content_type = upstream.headers.get("Content-Type", "application/octet-stream")
                    return self._answer(original, web.Response(body=body, headers={"Content-Type": content_type}))
        return self._answer(original, web.Response(status=404, text="Not Found"))

    def _answer(self, original: str, response: web.Response) -> web.Response:
        self.log.append(ProxyFetch(original, response.status))
        self.emu._bump()
        return response
