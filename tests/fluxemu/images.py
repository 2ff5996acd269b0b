"""Images in and out: the PNGs the emulator "generates" and the source images it fetches for edits."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import re

import aiohttp
from PIL import Image, ImageDraw

__all__ = ["FETCH_TIMEOUT", "SourceError", "load_source", "render_png"]

IMAGE_SIZE = 64
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
"""How long the emulated services wait for a source image before they call the fetch failed."""

_DATA_URI = re.compile(r"data:image/[\w.+-]+;base64,(?P<data>.*)", re.DOTALL)


class SourceError(Exception):
    """The source image of an edit could not be fetched, decoded or opened."""


def render_png(task_id: str, n: int, *, noisy_side: int | None = None) -> bytes:
    """Return a real PNG, the same for the same ``(task_id, n)`` and different otherwise.

    The background and a diagonal band take their colours from a hash of the pair, so two results of
    one task differ as well as results of different tasks. With ``noisy_side`` the image is that many
    pixels square and filled with noise that does not compress (a 2048 px side makes about 12 MB), like
    the large results that must be shrunk to fit Discord's upload limit.
    """
    digest = hashlib.sha256(f"{task_id}/{n}".encode()).digest()
    if noisy_side is not None:
        pixels = random.Random(digest).randbytes(noisy_side * noisy_side * 3)
        image = Image.frombytes("RGB", (noisy_side, noisy_side), pixels)
    else:
        background, band = (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5])
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
        ImageDraw.Draw(image).polygon([(0, 0), (IMAGE_SIZE // 2, 0), (IMAGE_SIZE, IMAGE_SIZE)], fill=band)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def check_image(data: bytes) -> None:
    """Raise SourceError unless Pillow can open ``data`` as an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many types for undecodable bytes; all mean "not an image"
        raise SourceError(f"not an image: {exc}") from exc


async def load_source(session: aiohttp.ClientSession, ref: str, *, plain_base64: bool = False) -> bytes:
    """Fetch or decode the image an edit refers to, as the real services do, and return its bytes.

    ``ref`` is an http(s) URL (downloaded with a short timeout; a non-2xx answer fails) or a
    ``data:image/...;base64,`` URI; with ``plain_base64`` (Black Forest Labs) bare base64 is accepted too.
    Anything else, including the string "null" that one relay's example sends, raises SourceError.
    """
    if ref.startswith(("http://", "https://")):
        data = await _download(session, ref)
    elif match := _DATA_URI.fullmatch(ref):
        data = _b64decode(match["data"])
    elif plain_base64:
        data = _b64decode(ref)
    else:
        raise SourceError(f"not an image URL or data URI: {ref[:40]!r}")
    check_image(data)
    return data


async def _download(session: aiohttp.ClientSession, url: str) -> bytes:
    try:
        async with session.get(url, timeout=FETCH_TIMEOUT) as response:
            if not 200 <= response.status < 300:
                raise SourceError(f"GET {url} answered {response.status}")
            return await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SourceError(f"GET {url} failed: {exc!r}") from exc


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SourceError("invalid base64") from exc
