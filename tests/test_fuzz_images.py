"""Fuzzing the parsers of outside images and image URLs: only the typed errors ever come out.

- ``sniff_format`` / ``inspect_source`` on arbitrary bytes and on real PNG, JPEG, GIF and WebP files with
  mutated headers: a format name or None / a :class:`SourceImage` or :class:`ImageRejected`; an accepted
  image can always be re-encoded for the provider.
- An inline ``data:`` result (a relay's answer): a :class:`DownloadedImage` or :class:`DownloadError`.
- The media host check on arbitrary and on URL-shaped text: a bool / :class:`HostNotAllowed`, and an allowed
  URL is one whose host (as another URL parser reads it too) is on the list.
- ``DISCORD_MEDIA_HOSTS`` on arbitrary text: a :class:`MediaHosts` or ValueError.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import urllib.parse
import zlib
from typing import cast

import aiohttp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from yarl import URL

from bot.images import (
    DEFAULT_MEDIA_HOSTS,
    DownloadedImage,
    DownloadError,
    HostNotAllowed,
    ImageRejected,
    MediaHosts,
    SourceImage,
    download_image,
    inspect_source,
    sniff_format,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DISCORD = MediaHosts.parse(DEFAULT_MEDIA_HOSTS)
LISTED = {entry.host for entry in DISCORD.entries}


def _encoded(fmt: str) -> bytes:
    image = Image.new("RGB", (64, 64), (10, 200, 90))
    image.putpixel((3, 5), (255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


REAL_IMAGES = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP")}


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with some of its first 64 bytes (the headers) changed, maybe cut short or extended."""
    data = bytearray(REAL_IMAGES[draw(st.sampled_from(sorted(REAL_IMAGES)))])
    header = min(64, len(data))
    for position, value in draw(st.lists(st.tuples(st.integers(0, header - 1), st.integers(0, 255)), max_size=6)):
        data[position] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    tail = draw(st.binary(max_size=64))
    return bytes(data[:cut]) + tail if cut is not None else bytes(data)


@st.composite
def pngs_claiming_any_size(draw: st.DrawFn) -> bytes:
    """A real PNG whose header (with a valid CRC) claims any dimensions, bit depth and colour type."""
    data = bytearray(REAL_IMAGES["PNG"])
    width, height = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    depth, colour = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3])), draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    data[12:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


def _inspect(data: bytes) -> None:
    try:
        source = inspect_source(data, max_bytes=64 * 1024)
    except ImageRejected as refused:
        assert str(refused) and str(refused.user_message)
        return
    assert isinstance(source, SourceImage)
    assert source.format == sniff_format(data)
    assert source.as_png().startswith(b"\x89PNG\r\n\x1a\n")  # what the provider is sent always encodes


@FUZZ
@given(st.binary(max_size=512))
@example(b"\x89PNG\r\n\x1a\n")
@example(b"RIFF\x00\x00\x00\x00WEBP")
@example(b"\xff\xd8\xff")
@example(b"GIF89a")
def test_arbitrary_bytes_are_an_image_or_a_refusal(data: bytes) -> None:
    assert sniff_format(data) in {None, "PNG", "JPEG", "GIF", "WEBP"}
    _inspect(data)


@FUZZ
@given(mutated_images())
def test_real_images_with_mutated_headers_are_an_image_or_a_refusal(data: bytes) -> None:
    _inspect(data)


@FUZZ
@given(pngs_claiming_any_size())
def test_a_png_header_claiming_any_size_is_an_image_or_a_refusal(data: bytes) -> None:
    _inspect(data)


@FUZZ
@given(st.one_of(mutated_images(), st.binary(max_size=256)), st.sampled_from(["", "image/png", "x"]))
def test_an_inline_result_is_an_image_or_a_download_error(data: bytes, media_type: str) -> None:
    uri = f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")
    session = cast(aiohttp.ClientSession, None)  # an inline image is never fetched
    try:
        image = asyncio.run(download_image(session, uri, max_bytes=4096))
    except DownloadError as error:
        assert str(error.user_message)
        return
    assert isinstance(image, DownloadedImage) and len(image.data) <= 4096


# -- URLs -------------------------------------------------------------------------------------------------

_HOST_PARTS = st.sampled_from(
    [
        *sorted(LISTED),
        "CDN.DISCORDAPP.COM",
        "cdn.discordapp.com.",
        "cdn.discordapp.com.evil.com",
        "evil.com",
        "127.0.0.1",
        "169.254.169.254",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "xn--bcher-kva.example",
        "bücher.example",
        "cdn\u2024discordapp.com",
        "",
    ]
)


@st.composite
def url_like(draw: st.DrawFn, port: int = 443) -> str:
    """URL-shaped text: a scheme, maybe credentials, a host near or far from the list, maybe a port; half
    of them well-formed http(s) URLs, so that allowed ones are common too."""
    well_formed = draw(st.booleans())
    scheme = draw(st.sampled_from(["https", "http"] if well_formed else ["https", "HTTPS", "ftp", "file", "data", ""]))
    separator = "://" if well_formed else draw(st.sampled_from(["://", ":/", ":", "//", ":\\\\"]))
    userinfo = draw(st.sampled_from(["", "user@", "user:pw@", "cdn.discordapp.com@", "@"]))
    host = draw(_HOST_PARTS)
    if well_formed and draw(st.booleans()):  # often a plain host that may well be listed
        userinfo, host = "", draw(st.sampled_from([*sorted(LISTED), "CDN.DiscordApp.com.", "127.0.0.1", "[::1]"]))
    ports = ["", ":443", f":{port}"] if well_formed else [":80", ":8443", ":0", ":99999", ":x", ":"]
    path = draw(st.sampled_from(["", "/", "/a.png", "/@evil.com/", "\\@evil.com/", "?q=1#f", "/%2e%2e/"]))
    junk = "" if well_formed else draw(st.text(max_size=4))
    return f"{scheme}{separator}{userinfo}{host}{draw(st.sampled_from(ports))}{path}{junk}"


def _checked(hosts: MediaHosts, url: str) -> bool:
    allowed = hosts.allows(url)
    assert isinstance(allowed, bool)
    try:
        parsed = hosts.check(url)
    except HostNotAllowed as refused:
        assert not allowed and str(refused.user_message)
        return False
    assert allowed and isinstance(parsed, URL)
    return True


@FUZZ
@given(st.one_of(url_like(), st.text(max_size=80)))
def test_the_host_check_answers_a_bool_and_allows_only_listed_hosts(url: str) -> None:
    if not _checked(DISCORD, url):
        return
    parsed = URL(url)
    assert parsed.scheme == "https" and parsed.port == 443 and parsed.raw_user is None
    assert (parsed.raw_host or "").lower().removesuffix(".") in LISTED
    if url.isascii():  # another parser agrees on the host the request goes to
        split = urllib.parse.urlsplit(url)
        assert (split.hostname or "").removesuffix(".") in LISTED and not split.username  # "@host": no user


@FUZZ
@given(st.integers(1, 65535).flatmap(lambda port: st.tuples(url_like(port), st.just(port))))
def test_an_entry_with_a_port_allows_that_port_only(drawn: tuple[str, int]) -> None:
    url, port = drawn
    hosts = MediaHosts.parse(f"127.0.0.1:{port} [::1]:{port}")
    if _checked(hosts, url):
        parsed = URL(url)
        assert parsed.port == port and parsed.scheme in ("http", "https") and parsed.raw_user is None


@FUZZ
@given(st.text(max_size=80))
@example("cdn.discordapp.com, 127.0.0.1:8080 [::1]:1")
@example("[" * 10)
@example("a:" * 5)
def test_the_setting_is_parsed_or_refused_with_a_value_error(text: str) -> None:
    try:
        hosts = MediaHosts.parse(text)
    except ValueError as error:
        assert str(error)
        return
    assert hosts.entries and MediaHosts.parse(str(hosts)) == hosts  # what it prints, it reads back
