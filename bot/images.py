"""Images in and out of the bot: checking a member's source image, fetching results, fitting uploads.

Everything here treats image bytes as untrusted: the format is taken from the magic bytes and Pillow may
only use that one decoder, the size in bytes is checked before any decoding, the dimensions from the
header before any pixel is decoded, and a decode must complete (truncated files are refused, not padded).
Nothing here imports Discord: the cogs turn :class:`ImageError` into a message with ``user_message``.

A member's image is fetched only from Discord's own hosts (:class:`MediaHosts`, the ``DISCORD_MEDIA_HOSTS``
setting): :func:`fetch_source` checks the URL and every redirect against that list before any request is made.

Decoding and encoding are CPU work (tens of milliseconds for a Flux-sized image, more for re-encoding):
:func:`download_image` does it in a worker thread itself; callers should run :func:`inspect_source`,
:meth:`SourceImage.as_png` and :func:`fit_images` (unless the images :func:`fits_unchanged`) with
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import logging
import math
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from PIL import ExifTags, Image, ImageOps
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema
from yarl import URL

from bot.bodies import BodyTooLarge, read_capped
from bot.i18n import N_, Text, lazy

__all__ = [
    "DEFAULT_MEDIA_HOSTS",
    "MULTIPART_HEADROOM",
    "SUPPORTED_FORMATS",
    "DownloadError",
    "DownloadedImage",
    "FittedImage",
    "HostNotAllowed",
    "ImageError",
    "ImageRejected",
    "MediaHost",
    "MediaHosts",
    "SourceImage",
    "download_image",
    "fetch_source",
    "fit_images",
    "fits_unchanged",
    "inspect_source",
    "public_url",
    "size_text",
    "sniff_format",
]

log = logging.getLogger(__name__)

#: Pillow format names of the images the bot accepts and sends: what Discord shows inline.
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")

#: Bytes of an upload limit kept free for the multipart envelope (payload_json, part headers).
MULTIPART_HEADROOM = 64 * 1024

_TIMES = "\N{MULTIPLICATION SIGN}"  # for "9000 by 9000 pixels"; spelled out because ruff flags the literal

NOT_AN_IMAGE = N_("That file is not an image (PNG, JPEG, WebP or GIF).")
_NOT_DOWNLOADED = lazy("The bot could not download that image.")
_DAMAGED = lazy("That image is damaged or incomplete; please upload it again.")

_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}

# What Pillow's decoders raise on corrupt input. Image.open turns most header problems into
# UnidentifiedImageError (an OSError), but load() and some plugins surface the others.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

# A downloaded result larger than this is refused before decoding: ten times Flux's largest output (4 MP).
_MAX_DOWNLOAD_PIXELS = 40_000_000

# The re-encoding ladder of fit_images: JPEG qualities at full size, then downscaling at one quality.
_JPEG_QUALITIES = (90, 80, 70, 60)
_DOWNSCALE_FACTOR = 0.75
_DOWNSCALE_QUALITY = 75  # a smaller sharp image looks better than a large blocky one
_MIN_FITTED_SIDE = 64
_MAX_EXTRA_DOWNSCALES = 2  # at most 0.75**3 = 0.42 of the width in one step
_SKIP_QUALITIES_BELOW = 0.4  # quality 60 saves about half of quality 90's size; more needs downscaling

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Redirects followed for a member's image, each checked against the media hosts (Discord's CDN needs none).
MAX_MEDIA_REDIRECTS = 3
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90° one way or the other


# ----- errors -----------------------------------------------------------------------------------------


class ImageError(Exception):
    """Base class; ``user_message`` is a short sentence that is safe to show a member, shown in their
    language (``detail``, the log's, is English)."""

    user_message: Text

    def __init__(self, detail: str, *, user_message: Text | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.user_message = user_message or Text(detail)


class ImageRejected(ImageError):
    """An image the bot will not use; ``user_message`` is the reason, e.g. the size limit (``str(error)``
    is it in English)."""

    def __init__(self, reason: Text) -> None:
        super().__init__(str(reason), user_message=reason)


class DownloadError(ImageError):
    """A result image could not be fetched. ``str(error)`` is for the log (the URL without its query).

    ``retryable`` says whether fetching again later might work: connection errors, timeouts, 5xx and 429
    might; a 404/403 (the link expired), a body that is not an image or is too large will not.
    """

    def __init__(
        self, detail: str, *, retryable: bool, status: int | None = None, user_message: Text | None = None
    ) -> None:
        # No values in these: a job's failure is kept in English and still found in the catalogs when shown.
        default = (
            lazy("The finished image could not be fetched from the image service. Please try again later.")
            if retryable
            else lazy("The image service's finished image could not be used.")
        )
        super().__init__(detail, user_message=user_message or default)
        self.retryable = retryable
        self.status = status


class HostNotAllowed(DownloadError):
    """A member's image (or a redirect on the way to it) is not on one of Discord's media hosts: nothing
    is fetched from it, and the provider is never given it."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            detail,
            retryable=False,
            user_message=lazy(
                "The bot only uses images stored on Discord, and that image links somewhere else. "
                "Upload the image itself (or use /edit with the file) and try again."
            ),
        )


# ----- where member images may come from ------------------------------------------------------------------

#: Discord's CDN (attachments) and media proxy (embed images): where the bot fetches member images by default.
DEFAULT_MEDIA_HOSTS = "cdn.discordapp.com media.discordapp.net images-ext-1.discordapp.net images-ext-2.discordapp.net"

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class MediaHost:
    """One entry of ``DISCORD_MEDIA_HOSTS``. ``host`` is lowercase ASCII (an IDNA name, or an IP address in
    its canonical form). Without a ``port`` only ``https`` on 443 is allowed; an explicit port allows
    ``http`` or ``https`` on that port only (for a test server or a local mirror)."""

    host: str
    port: int | None = None

    def allows(self, scheme: str, host: str, port: int) -> bool:
        if host != self.host:
            return False
        if self.port is None:
            return scheme == "https" and port == 443
        return port == self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MediaHosts:
    """The hosts the bot downloads member images from (``DISCORD_MEDIA_HOSTS``).

    A URL is allowed when it is absolute ``http``/``https`` without credentials and its host (compared
    after IDNA encoding, lowercasing and dropping one trailing dot; IP addresses in canonical form) and
    port match an entry exactly: ``cdn.discordapp.com.evil.com`` or ``evil.com/cdn.discordapp.com`` match
    nothing. Anything unparseable is simply not allowed.
    """

    entries: frozenset[MediaHost]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Entries separated by spaces or commas: ``host`` or ``host:port`` (``[v6]:port`` for IPv6).
        Raises ValueError naming the first bad entry."""
        words = [word for word in re.split(r"[\s,]+", text) if word]
        if not words:
            raise ValueError("lists no host; the default is " + DEFAULT_MEDIA_HOSTS)
        return cls(frozenset(_parse_entry(word) for word in words))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """In settings: a string is parsed with :meth:`parse`; an instance is taken as it is."""

        def coerce(value: object) -> object:
            return cls.parse(value) if isinstance(value, str) else value

        return core_schema.no_info_before_validator_function(coerce, core_schema.is_instance_schema(cls))

    def allows(self, url: str | URL) -> bool:
        """Whether the bot may fetch ``url`` as a member's image. Never raises."""
        return self._parsed(url) is not None

    def check(self, url: str | URL) -> URL:
        """``url`` parsed, the same object that is then requested; :class:`HostNotAllowed` if it is not on
        a listed host."""
        parsed = self._parsed(url)
        if parsed is None:
            raise HostNotAllowed(f"{public_url(str(url))} is not on a Discord media host ({self})")
        return parsed

    def _parsed(self, url: str | URL) -> URL | None:
        try:
            parsed = url if isinstance(url, URL) else URL(url)
            if not parsed.absolute or parsed.scheme not in ("http", "https") or parsed.raw_user is not None:
                return None
            if parsed.raw_password is not None or not parsed.raw_host or parsed.port is None:
                return None
            host = _canonical_host(parsed.raw_host)
        except (ValueError, TypeError):  # UnicodeError (bad IDNA) is a ValueError
            return None
        if host is None:
            return None
        return parsed if any(entry.allows(parsed.scheme, host, parsed.port) for entry in self.entries) else None

    def __str__(self) -> str:
        return " ".join(sorted(str(entry) for entry in self.entries))


def _canonical_host(raw: str) -> str | None:
    """``raw`` (a URL's host as sent, IDNA-encoded) lowercased without one trailing dot, an IP address in
    canonical form; None for anything that is neither a DNS name nor an IP address."""
    host = raw.lower().removesuffix(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    labels = host.split(".")
    if not host.isascii() or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return None
    return host


def _parse_entry(entry: str) -> MediaHost:
    bad = f"{entry!r} is not a host or host:port (like cdn.discordapp.com or 127.0.0.1:8080)"
    text = entry.lower()
    if any(mark in text for mark in "/@?#"):
        raise ValueError(bad + "; give hosts, not URLs")
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?", text)
        host, port = (match[1], match[2]) if match else ("", None)
    elif text.count(":") > 1:
        raise ValueError(bad + "; write an IPv6 address in brackets, like [::1]:8080")
    else:
        host, colon, port_text = text.partition(":")
        if colon and not re.fullmatch(r"\d{1,5}", port_text):
            raise ValueError(bad)
        port = port_text or None
    canonical = _canonical_host(host) if host.isascii() else None
    if canonical is None or (port is not None and not 0 < int(port) < 65536):
        raise ValueError(bad + ("; write an international name in its xn-- form" if not host.isascii() else ""))
    return MediaHost(canonical, int(port) if port is not None else None)


# ----- formats ----------------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name of ``data`` from its magic bytes, if it is one of :data:`SUPPORTED_FORMATS`."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _unsupported_kind(data: bytes) -> str | None:
    """The name of a well-known image format we do not take (phones send HEIC), for a clearer refusal."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "HEIC"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def _not_an_image(data: bytes) -> Text:
    kind = _unsupported_kind(data)
    if kind:
        return lazy("{kind} images are not supported; please use PNG, JPEG, WebP or GIF.", kind=kind)
    return lazy(NOT_AN_IMAGE)


def _probe(data: bytes, fmt: str) -> Image.Image:
    """Open ``data`` with only ``fmt``'s decoder: the header is read, no pixel is decoded yet.

    Pillow warns about images above ``Image.MAX_IMAGE_PIXELS`` (and raises above twice that); callers check
    the dimensions themselves before decoding, so the warning is only noise. The global limit is left alone.
    """
    # catch_warnings() is process-wide: a concurrent thread's DecompressionBombWarning may be silenced too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[fmt])


def _decode(data: bytes, fmt: str) -> Image.Image:
    """Decode the first frame completely; raises one of ``_DECODE_ERRORS`` when the file is damaged.

    ``verify()`` checks the container (PNG chunk CRCs) but leaves the image unusable, so it is reopened;
    ``load()`` then decodes every pixel, and refuses truncated data (``LOAD_TRUNCATED_IMAGES`` stays off).
    """
    with _probe(data, fmt) as image:
        image.verify()
    image = _probe(data, fmt)
    image.load()
    return image


def size_text(size: int, *, round_up: bool = False) -> str:
    """A byte count for people: ``12.3 MiB``, ``512 KiB``. Rounded up for a size over a limit, so
    10 MiB + 1 byte never reads "10 MiB"."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            value = (math.ceil if round_up else math.floor)(size * 10 / scale) / 10
            return f"{value:g} {unit}"
    return f"{size} bytes"


# ----- a member's source image -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A checked image a member wants edited. ``width``/``height`` are as displayed (EXIF rotation applied)."""

    format: str
    width: int
    height: int
    data: bytes

    def aspect_ratio(self, choices: Sequence[str]) -> str:
        """The choice (``"16:9"``...) nearest to the image's ratio, compared in log space so that 2:1 and
        1:2 are equally far from 1:1; the first of equally near choices wins."""
        if not choices:
            raise ValueError("no aspect ratios to choose from")
        target = math.log(self.width / self.height)
        return min(choices, key=lambda choice: abs(math.log(_parse_ratio(choice)) - target))

    def as_png(self) -> bytes:
        """The first frame as an RGB or RGBA PNG, rotated as displayed.

        Always re-encoded, so metadata (EXIF with GPS position, text chunks) never leaves the bot.
        """
        with _probe(self.data, self.format) as image:
            image.load()
            upright = _upright(image)
            mode = "RGBA" if upright.has_transparency_data else "RGB"
            buffer = io.BytesIO()
            upright.convert(mode).save(buffer, format="PNG")
        return buffer.getvalue()

    def data_uri(self) -> str:
        """``data:image/png;base64,...`` of :meth:`as_png`, as the providers take a source image inline."""
        return "data:image/png;base64," + base64.b64encode(self.as_png()).decode("ascii")


def _parse_ratio(choice: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", choice)
    if match is None or float(match[1]) <= 0 or float(match[2]) <= 0:
        raise ValueError(f"not an aspect ratio like 16:9: {choice!r}")
    return float(match[1]) / float(match[2])


def _upright(image: Image.Image) -> Image.Image:
    """The image rotated as its EXIF orientation says (phone photos), or itself."""
    return ImageOps.exif_transpose(image) or image


def inspect_source(
    data: bytes, *, max_bytes: int = 10 * 1024 * 1024, max_side: int = 4096, min_side: int = 64
) -> SourceImage:
    """Check an uploaded image before it is sent for editing; raise :class:`ImageRejected` with the reason.

    Accepts PNG, JPEG, WebP and GIF (the first frame of an animation). The byte size is checked before
    anything is parsed and the dimensions from the header before any pixel is decoded, so a small file that
    claims to be huge (a decompression bomb) costs nothing. Then the first frame is decoded completely.
    """
    if len(data) > max_bytes:
        raise ImageRejected(
            lazy(
                "The image is {size}; the limit is {limit}.",
                size=size_text(len(data), round_up=True),
                limit=size_text(max_bytes),
            )
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(_not_an_image(data))
    try:
        image = _probe(data, fmt)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(
            lazy("The image's dimensions are far too large; each side must be at most {most} pixels.", most=max_side)
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected(_DAMAGED) from exc
    with image:
        width, height = image.size
    dimensions = f"{width}{_TIMES}{height}"
    if max(width, height) > max_side:
        raise ImageRejected(
            lazy(
                "The image is {dimensions} pixels; each side must be at most {most}.",
                dimensions=dimensions,
                most=max_side,
            )
        )
    if min(width, height) < min_side:
        raise ImageRejected(
            lazy(
                "The image is {dimensions} pixels; each side must be at least {least}.",
                dimensions=dimensions,
                least=min_side,
            )
        )
    try:
        with _decode(data, fmt) as decoded:
            # Only now: a PNG's EXIF may follow its pixels, and getexif() would decode them to find it.
            orientation = decoded.getexif().get(ExifTags.Base.Orientation)
    except _DECODE_ERRORS as exc:
        raise ImageRejected(_DAMAGED) from exc
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return SourceImage(format=fmt, width=width, height=height, data=data)


# ----- downloading a result ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownloadedImage:
    """A fetched and decoded result. ``content_type`` is the MIME type of the bytes' actual format (CDNs
    often send ``application/octet-stream``)."""

    data: bytes
    format: str
    width: int
    height: int
    content_type: str

    def filename(self, stem: str) -> str:
        """``stem`` with the extension of the image's format, e.g. ``flux-12.png``."""
        return f"{_safe_stem(stem)}.{_EXTENSIONS[self.format]}"


def _safe_stem(stem: str) -> str:
    """Only characters Discord keeps in attachment names (it mangles spaces and drops others)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def public_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no query, fragment or credentials (signed URLs carry
    secrets in the query), for messages and logs."""
    try:
        parsed = URL(url)
        if not parsed.absolute:
            return "(a relative URL)"
        return str(parsed.origin().with_path(parsed.path))
    except (ValueError, TypeError):
        return "(an invalid URL)"


def _media_type(header: str | None) -> str | None:
    """The media type of a Content-Type header, lowercased and without parameters; None if absent/blank."""
    if header is None:
        return None
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type or None


async def download_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int = 25 * 1024 * 1024,
    timeout: float = 30.0,  # noqa: ASYNC109 - becomes the request's aiohttp.ClientTimeout, like bot.flux.http
    allowed_hosts: MediaHosts | None = None,
) -> DownloadedImage:
    """Fetch a result image at once (provider URLs expire) and check that it is a usable image.

    The body is streamed and abandoned as soon as it passes ``max_bytes``, whatever Content-Length said;
    an inline ``data:`` image is measured before it is decoded. A content type other than ``image/*`` is
    refused, except ``application/octet-stream`` or none at all, which pass when the bytes decode as an
    image. With ``allowed_hosts`` (a member's image) the URL and every redirect must be on those hosts,
    see :func:`fetch_source`. Raises :class:`DownloadError`.
    """
    if url.startswith("data:"):
        data, shown, declared = _inline_bytes(url, max_bytes), "an inline image", None
    else:
        data, shown, declared = await _fetch(session, url, max_bytes, timeout, allowed_hosts)
    fmt, width, height = await asyncio.to_thread(_identify, data, shown, declared)
    log.debug("downloaded %s: %s %dx%d, %d bytes", shown, fmt, width, height, len(data))
    return DownloadedImage(data=data, format=fmt, width=width, height=height, content_type=_MIME_TYPES[fmt])


async def fetch_source(
    session: aiohttp.ClientSession,
    url: str,
    *,
    allowed_hosts: MediaHosts,
    max_bytes: int,
    timeout: float = 30.0,  # noqa: ASYNC109 - becomes the request's aiohttp.ClientTimeout
) -> SourceImage:
    """A member's image from Discord, checked by :func:`inspect_source` (whose :class:`ImageRejected` says
    what is wrong with it), or from inline ``data:`` (never fetched).

    The URL must be on ``allowed_hosts``, else :class:`HostNotAllowed` is raised before any request.
    Redirects are not followed by aiohttp: up to :data:`MAX_MEDIA_REDIRECTS` are followed here, each
    ``Location`` checked the same way first. Other failures are :class:`DownloadError`.
    """
    if url.startswith("data:"):
        data = _inline_bytes(url, max_bytes, member=True)
    else:
        data, _shown, _declared = await _fetch(session, url, max_bytes, timeout, allowed_hosts, member=True)
    return await asyncio.to_thread(inspect_source, data, max_bytes=max_bytes)


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    max_bytes: int,
    timeout_s: float,
    allowed_hosts: MediaHosts | None,
    *,
    member: bool = False,
) -> tuple[bytes, str, str | None]:
    """The body at ``url`` (capped), the URL as shown in logs, and the declared media type.

    ``member``: the errors speak of the member's image rather than the provider's finished image."""
    shown = public_url(url)
    message = _NOT_DOWNLOADED if member else None
    target: str | URL = url if allowed_hosts is None else allowed_hosts.check(url)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Accept": "image/*"}
    follow = allowed_hosts is None  # aiohttp follows a provider's redirects; a member image's are checked first
    try:
        async with asyncio.timeout(timeout_s):  # all the redirects and the body together
            for hop in range(MAX_MEDIA_REDIRECTS + 1):
                async with session.get(
                    target, timeout=client_timeout, headers=headers, allow_redirects=follow
                ) as response:
                    if allowed_hosts is not None and response.status in _REDIRECT_STATUSES:
                        target = _redirect_target(response, allowed_hosts, shown)
                        shown = public_url(str(target))
                        log.debug("following redirect %d to %s", hop + 1, shown)
                        continue
                    data, declared = await _image_body(response, shown, max_bytes, member, message)
                    return data, shown, declared
            raise DownloadError(
                f"GET {shown} redirected more than {MAX_MEDIA_REDIRECTS} times", retryable=False, user_message=message
            )
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise DownloadError(
            f"cannot download from {shown}: not an http(s) URL", retryable=False, user_message=message
        ) from exc
    except aiohttp.TooManyRedirects as exc:
        raise DownloadError(f"GET {shown} redirected too many times", retryable=False, user_message=message) from exc
    except TimeoutError as exc:
        raise DownloadError(
            f"GET {shown} did not complete within {timeout_s:g}s", retryable=True, user_message=message
        ) from exc
    except aiohttp.ClientError as exc:
        raise DownloadError(f"GET {shown} failed: {type(exc).__name__}", retryable=True, user_message=message) from exc


async def _image_body(
    response: aiohttp.ClientResponse, shown: str, max_bytes: int, member: bool, message: Text | None
) -> tuple[bytes, str | None]:
    """The body of a final answer and its declared media type, if the status, type and size are acceptable."""
    status = response.status
    if not 200 <= status < 300:
        raise DownloadError(
            f"GET {shown} answered HTTP {status}",
            retryable=status >= 500 or status in _RETRYABLE_STATUSES,
            status=status,
            user_message=message,
        )
    declared = _media_type(response.headers.get(aiohttp.hdrs.CONTENT_TYPE))
    if declared is not None and not declared.startswith("image/") and declared != "application/octet-stream":
        raise DownloadError(
            f"GET {shown} answered {declared}, not an image", retryable=False, status=status, user_message=message
        )
    try:
        return await read_capped(response, max_bytes), declared
    except BodyTooLarge as exc:
        raise _too_large(shown, exc.size, max_bytes, member=member) from None


def _redirect_target(response: aiohttp.ClientResponse, allowed_hosts: MediaHosts, shown: str) -> URL:
    """Where a redirect of a member's image points, if that is on ``allowed_hosts``; else HostNotAllowed."""
    location = response.headers.get(aiohttp.hdrs.LOCATION)
    if not location:
        raise DownloadError(f"GET {shown} answered HTTP {response.status} without a Location", retryable=False)
    try:
        target = response.url.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise HostNotAllowed(f"GET {shown} redirected to an invalid URL") from exc
    if not allowed_hosts.allows(target):
        raise HostNotAllowed(f"GET {shown} redirected to {public_url(str(target))}, not a Discord media host")
    return target


def _inline_bytes(uri: str, max_bytes: int, *, member: bool = False) -> bytes:
    """The bytes of a ``data:...;base64,`` URI (relays may answer with inline bytes instead of a URL).

    The length of the base64 text is checked against ``max_bytes`` before anything is decoded."""
    header, _, payload = uri.partition(",")
    if not header.endswith(";base64"):
        raise DownloadError("an inline image is not base64-encoded", retryable=False)
    if len(payload) > 4 * math.ceil(max_bytes / 3):
        raise _too_large("an inline image", f"{len(payload)} base64 characters", max_bytes, member=member)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DownloadError("an inline image is not valid base64", retryable=False) from exc
    if len(data) > max_bytes:
        raise _too_large("an inline image", f"{len(data)} bytes", max_bytes, member=member)
    return data


def _too_large(shown: str, size: str, max_bytes: int, *, member: bool = False) -> DownloadError:
    """``member``: the member's own image, else the provider's finished one (whole sentences, each)."""
    limit = size_text(max_bytes)
    message = (
        lazy("That image is larger than {limit}, so the bot cannot use it.", limit=limit)
        if member
        else lazy("The finished image is larger than {limit}, so the bot cannot use it.", limit=limit)
    )
    return DownloadError(f"GET {shown} sent {size}; the limit is {max_bytes}", retryable=False, user_message=message)


def _identify(data: bytes, shown: str, declared: str | None) -> tuple[str, int, int]:
    """Format and size of downloaded bytes, fully decoded once; DownloadError if they are no usable image."""
    fmt = sniff_format(data)
    if fmt is None:
        raise DownloadError(
            f"GET {shown} sent {len(data)} bytes ({declared or 'no content type'}) that are not a PNG, JPEG, "
            f"WebP or GIF image: {data[:16]!r}",
            retryable=False,
        )
    try:
        with _probe(data, fmt) as image:
            width, height = image.size
        if width * height > _MAX_DOWNLOAD_PIXELS:
            raise DownloadError(f"GET {shown} sent a {width}x{height} image, too large to decode", retryable=False)
        _decode(data, fmt).close()
    except _DECODE_ERRORS as exc:
        raise DownloadError(f"GET {shown} sent a damaged {fmt} image: {exc}", retryable=False) from exc
    return fmt, width, height


# ----- fitting under an upload limit ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FittedImage:
    """An image ready to attach; ``reencoded`` is True when it is not the original bytes."""

    data: bytes
    filename: str
    width: int
    height: int
    reencoded: bool


class _Shrinker:
    """The ladder of ever smaller JPEG versions of one image, each encoded from the original (no
    generational loss): step 0..3 are qualities 90..60 at full size, then each step downscales by 0.75."""

    def __init__(self, image: DownloadedImage, name: str) -> None:
        self._source = image
        self._name = name
        self._pixels: Image.Image | None = None
        self._icc_profile: bytes | None = None
        self._encoded: dict[int, FittedImage] = {}
        self._next_step = 0
        downscales = 0
        while min(image.width, image.height) * _DOWNSCALE_FACTOR ** (downscales + 1) >= _MIN_FITTED_SIDE:
            downscales += 1
        self._last_step = len(_JPEG_QUALITIES) - 1 + downscales

    @property
    def exhausted(self) -> bool:
        return self._next_step > self._last_step

    def smallest(self) -> FittedImage:
        """The last step of the ladder: the smallest version this image can have."""
        return self._encode(self._last_step)

    def shrink(self, current_size: int, target_size: float) -> FittedImage | None:
        """The next useful step towards ``target_size`` bytes, or None if it came out no smaller than
        ``current_size`` (e.g. re-encoding a JPEG source at quality 90).

        Far from the target, steps that cannot get there are skipped, to save encoding time: the quality
        steps when even quality 60 will not get there, and up to two downscales when the size (estimated
        to follow the area) is still far off. The estimate can overshoot (noise gets smoother, hence smaller,
        when downscaled), so a jump is capped to keep the overshoot small.
        """
        assert not self.exhausted, "shrink() called on an exhausted image"
        step = self._next_step
        first_downscale = len(_JPEG_QUALITIES)
        if 0 < step < first_downscale and target_size < _SKIP_QUALITIES_BELOW * len(self._encode(0).data):
            step = first_downscale
        if step >= first_downscale and (anchor := self._encoded.get(step - 1)) is not None:
            wanted_scale = self._scale(step - 1) * math.sqrt(max(target_size, 1.0) / len(anchor.data))
            furthest = min(self._last_step, step + _MAX_EXTRA_DOWNSCALES)
            while step < furthest and self._scale(step) > wanted_scale:
                step += 1
        self._next_step = step + 1
        fitted = self._encode(step)
        return fitted if len(fitted.data) < current_size else None

    @staticmethod
    def _scale(step: int) -> float:
        return _DOWNSCALE_FACTOR ** max(0, step - len(_JPEG_QUALITIES) + 1)

    def _encode(self, step: int) -> FittedImage:
        if (cached := self._encoded.get(step)) is not None:
            return cached
        pixels = self._flattened()
        if step < len(_JPEG_QUALITIES):
            quality = _JPEG_QUALITIES[step]
        else:
            quality = _DOWNSCALE_QUALITY
            scale = self._scale(step)
            size = (max(1, round(pixels.width * scale)), max(1, round(pixels.height * scale)))
            # reducing_gap: a cheap integer reduction first when shrinking a lot; same look, far faster.
            pixels = pixels.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        pixels.save(buffer, format="JPEG", quality=quality, optimize=True, icc_profile=self._icc_profile)
        fitted = FittedImage(
            data=buffer.getvalue(),
            filename=f"{self._name}.jpg",
            width=pixels.width,
            height=pixels.height,
            reencoded=True,
        )
        self._encoded[step] = fitted
        return fitted

    def _flattened(self) -> Image.Image:
        """The first frame, upright, in RGB; transparency is flattened onto white (JPEG has no alpha)."""
        if self._pixels is None:
            with _probe(self._source.data, self._source.format) as image:
                image.load()
                upright = _upright(image)
                if upright.has_transparency_data:
                    rgba = upright.convert("RGBA")
                    flat = Image.new("RGB", rgba.size, (255, 255, 255))
                    flat.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    flat = upright.convert("RGB")
                self._icc_profile = image.info.get("icc_profile")  # keeps the colours of wide-gamut images
                self._pixels = flat
        return self._pixels


def fits_unchanged(images: Sequence[DownloadedImage], limit_bytes: int) -> bool:
    """Whether ``images`` fit in one message as they are (see :func:`fit_images`): then fitting them costs
    nothing and needs no worker thread."""
    return sum(len(image.data) for image in images) <= limit_bytes - MULTIPART_HEADROOM


def fit_images(images: Sequence[DownloadedImage], limit_bytes: int, *, stem: str = "image") -> list[FittedImage]:
    """Make ``images`` fit in one message whose attachments may total ``limit_bytes`` (Discord's
    ``Interaction.filesize_limit``), keeping :data:`MULTIPART_HEADROOM` free for the rest of the body.

    Images are kept untouched when they all fit. Otherwise the largest one is re-encoded, one step at a
    time, until the sum fits: JPEG at quality 90, 80, 70 and 60, then downscaled by 0.75 per step (at
    quality 75) while each side stays at least 64 pixels. Every step starts from the original, so the
    result is deterministic. Names are ``{stem}.{ext}``, or ``{stem}-1.{ext}``... for several images.

    Raises :class:`ImageRejected` at once when even the smallest versions would not fit together.
    CPU-bound (about 0.1 s per step on a 4 MP image) unless :func:`fits_unchanged`: run it in a thread then.
    """
    if not images:
        return []
    names = [stem] if len(images) == 1 else [f"{stem}-{n}" for n in range(1, len(images) + 1)]
    fitted = [
        FittedImage(
            data=image.data, filename=image.filename(name), width=image.width, height=image.height, reencoded=False
        )
        for image, name in zip(images, names, strict=True)
    ]
    if fits_unchanged(images, limit_bytes):
        return fitted
    budget = limit_bytes - MULTIPART_HEADROOM
    total = sum(len(image.data) for image in fitted)
    shrinkers = [_Shrinker(image, _safe_stem(name)) for image, name in zip(images, names, strict=True)]
    # Each image ends the ladder no larger than its last step (or its original, if smaller), so this sum
    # decides whether the ladder can succeed; checking it first makes an impossible limit fail fast.
    floor = sum(
        min(len(image.data), len(shrinker.smallest().data)) for image, shrinker in zip(fitted, shrinkers, strict=True)
    )
    if floor > budget:
        limit = size_text(limit_bytes)
        raise ImageRejected(
            lazy("The image cannot be made small enough for this server's upload limit of {limit}.", limit=limit)
            if len(images) == 1
            else lazy(
                "These images cannot be made small enough for this server's upload limit of {limit}.", limit=limit
            )
        )
    while total > budget:
        candidates = [index for index, shrinker in enumerate(shrinkers) if not shrinker.exhausted]
        largest = max(candidates, key=lambda index: len(fitted[index].data))  # the first of equals: deterministic
        size = len(fitted[largest].data)
        # Aim for the bytes this image alone must lose, or for its share of the budget if it cannot.
        target = max(size - (total - budget), budget * size / total)
        smaller = shrinkers[largest].shrink(size, target)
        if smaller is not None:
            total += len(smaller.data) - len(fitted[largest].data)
            fitted[largest] = smaller
    log.debug("fitted %d images into %d bytes for a limit of %d", len(fitted), total, limit_bytes)
    return fitted
