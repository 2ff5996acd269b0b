"""Reading a body that comes from outside the bot: never more than a cap, whatever Content-Length says."""

from __future__ import annotations

import aiohttp

__all__ = ["BodyTooLarge", "read_capped"]

_CHUNK_SIZE = 64 * 1024


class BodyTooLarge(Exception):
    """The body passed the cap; ``size`` says how large it was known to be (``"N bytes"`` or ``"more than N
    bytes"``)."""

    def __init__(self, size: str) -> None:
        super().__init__(size)
        self.size = size


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or :class:`BodyTooLarge` as soon as it is known to pass ``max_bytes`` (from Content-Length,
    or when more arrived): the rest is never read."""
    length = response.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(f"{length} bytes")
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_SIZE):
        buffer += chunk
        if len(buffer) > max_bytes:
            raise BodyTooLarge(f"more than {max_bytes} bytes")
    return bytes(buffer)
