"""bot.images: checking a member's source image, downloading results, fitting them under an upload limit."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import ExifTags, Image

from bot.images import (
    MULTIPART_HEADROOM,
    DownloadedImage,
    DownloadError,
    ImageRejected,
    SourceImage,
    download_image,
    fit_images,
    inspect_source,
    public_url,
    sniff_format,
)
from tests.conftest import png_bytes
from tests.fluxemu import FluxEmulator

MiB = 1024 * 1024
NOT_AN_IMAGE = "That file is not an image (PNG, JPEG, WebP or GIF)."
DAMAGED = "That image is damaged or incomplete; please upload it again."
TIMES = "\N{MULTIPLICATION SIGN}"  # between width and height in the messages (ruff flags the literal)
RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9"]


# ----- image makers ------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, *, seed: int, mode: str = "RGB") -> Image.Image:
    """Random pixels (incompressible, so the worst case for file size), the same for the same seed."""
    channels = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(seed).randbytes(width * height * channels))


def noisy_png(width: int, height: int, *, seed: int) -> DownloadedImage:
    data = encode(noise(width, height, seed=seed), "PNG", compress_level=1)
    return DownloadedImage(data=data, format="PNG", width=width, height=height, content_type="image/png")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def first_pixel(data: bytes) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as image:
        pixel = image.convert("RGBA").getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return pixel


# ----- inspect_source: what is accepted ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_still_images_are_accepted_with_their_format_and_size(fmt: str) -> None:
    data = encode(noise(300, 200, seed=1), fmt)

    source = inspect_source(data)

    assert (source.format, source.width, source.height) == (fmt, 300, 200)
    assert source.data is data
    assert sniff_format(data) == fmt


def test_an_animated_gif_is_accepted_and_its_first_frame_used() -> None:
    red, blue = Image.new("RGB", (96, 80), (255, 0, 0)), Image.new("RGB", (96, 80), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)

    source = inspect_source(data)

    assert (source.format, source.width, source.height) == ("GIF", 96, 80)
    assert first_pixel(source.as_png()) == (255, 0, 0, 255)


def test_a_rotated_phone_photo_reports_its_displayed_size() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored landscape, shown rotated 90° clockwise
    data = encode(noise(400, 200, seed=2), "JPEG", exif=exif)

    source = inspect_source(data)

    assert (source.width, source.height) == (200, 400)
    assert source.aspect_ratio(RATIOS) == "9:16"
    with Image.open(io.BytesIO(source.as_png())) as upright:
        assert upright.size == (200, 400)
        assert ExifTags.Base.Orientation not in upright.getexif()


# ----- inspect_source: what is refused, and why -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"a shopping list\nmilk\neggs\n", id="text"),
        pytest.param(
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
            b'<rect width="64" height="64" fill="red"/></svg>',
            id="svg",
        ),
        pytest.param(b"", id="empty"),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", id="pdf"),
    ],
)
def test_files_that_are_not_images_are_refused(data: bytes) -> None:
    with pytest.raises(ImageRejected) as caught:
        inspect_source(data)
    assert str(caught.value) == NOT_AN_IMAGE
    assert str(caught.value.user_message) == NOT_AN_IMAGE


def test_an_unsupported_image_format_is_named() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    bmp = encode(Image.new("RGB", (80, 80)), "BMP")

    with pytest.raises(ImageRejected, match=r"^HEIC images are not supported; please use PNG, JPEG, WebP or GIF\.$"):
        inspect_source(heic)
    with pytest.raises(ImageRejected, match=r"^BMP images are not supported"):
        inspect_source(bmp)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_a_truncated_image_is_refused(fmt: str) -> None:
    data = encode(noise(256, 256, seed=3), fmt)

    with pytest.raises(ImageRejected) as caught:
        inspect_source(data[: len(data) * 2 // 3])
    assert str(caught.value) == DAMAGED


def test_a_png_with_a_corrupted_chunk_is_refused() -> None:
    data = bytearray(encode(noise(128, 128, seed=4), "PNG"))
    data[len(data) // 2] ^= 0xFF  # inside IDAT: its CRC no longer matches

    with pytest.raises(ImageRejected, match="damaged"):
        inspect_source(bytes(data))


def test_the_byte_size_is_checked_before_anything_is_decoded() -> None:
    # Not an image at all, but too large: the size is what the member hears about.
    with pytest.raises(ImageRejected) as caught:
        inspect_source(b"\x00" * int(12.3 * MiB))
    assert str(caught.value) == "The image is 12.3 MiB; the limit is 10 MiB."


def test_a_size_just_over_the_limit_never_reads_as_the_limit() -> None:
    with pytest.raises(ImageRejected) as caught:
        inspect_source(b"\x00" * (2 * MiB + 1), max_bytes=2 * MiB)
    assert str(caught.value) == "The image is 2.1 MiB; the limit is 2 MiB."


def test_a_real_image_with_a_side_over_the_limit_is_refused() -> None:
    data = encode(Image.new("1", (5000, 300)), "PNG")
    assert len(data) < 10 * MiB

    with pytest.raises(ImageRejected) as caught:
        inspect_source(data)
    assert str(caught.value) == f"The image is 5000{TIMES}300 pixels; each side must be at most 4096."


def test_huge_dimensions_are_refused_from_the_header_without_decoding() -> None:
    data = png_header_only(9000, 9000)  # 81 Mpx claimed in a file of ~100 bytes

    started = time.perf_counter()
    with pytest.raises(ImageRejected) as caught:
        inspect_source(data)
    assert str(caught.value) == f"The image is 9000{TIMES}9000 pixels; each side must be at most 4096."
    assert time.perf_counter() - started < 0.5


def test_a_decompression_bomb_is_refused_without_pillow_warnings(recwarn: pytest.WarningsRecorder) -> None:
    with pytest.raises(ImageRejected, match=r"^The image's dimensions are far too large; each side must be at most"):
        inspect_source(png_header_only(100_000, 100_000))  # 10 Gpx: Pillow itself refuses to open it
    with pytest.raises(ImageRejected, match=f"^The image is 12000{TIMES}8000 pixels"):
        inspect_source(png_header_only(12_000, 8_000))  # 96 Mpx: Pillow would only warn
    assert [str(warning.message) for warning in recwarn] == []


def test_an_image_below_the_minimum_side_is_refused() -> None:
    with pytest.raises(ImageRejected) as caught:
        inspect_source(png_bytes(200, 32))
    assert str(caught.value) == f"The image is 200{TIMES}32 pixels; each side must be at least 64."


def test_limits_can_be_chosen_by_the_caller() -> None:
    data = png_bytes(120, 100)

    assert inspect_source(data, max_side=120, min_side=100).width == 120
    with pytest.raises(ImageRejected, match="at most 119"):
        inspect_source(data, max_side=119)
    with pytest.raises(ImageRejected, match="at least 101"):
        inspect_source(data, min_side=101)


# ----- SourceImage ------------------------------------------------------------------------------------


def source_of(width: int, height: int) -> SourceImage:
    return SourceImage(format="PNG", width=width, height=height, data=b"")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1920, 1080), "16:9"),
        ((1080, 1920), "9:16"),
        ((1000, 1000), "1:1"),
        ((1024, 768), "4:3"),
        ((2560, 1080), "21:9"),
    ],
)
def test_aspect_ratio_picks_the_nearest_choice(size: tuple[int, int], expected: str) -> None:
    assert source_of(*size).aspect_ratio(RATIOS) == expected


def test_aspect_ratios_are_compared_in_log_space() -> None:
    # 1.6 is 0.6 from 1:1 and 0.9 from 5:2 on a linear scale, but nearer to 5:2 as a proportion.
    assert source_of(1600, 1000).aspect_ratio(["1:1", "5:2"]) == "5:2"
    # 2:1 and 1:2 are equally far from 1:1; the first of equal choices wins, deterministically.
    assert source_of(1000, 1000).aspect_ratio(["2:1", "1:2"]) == "2:1"


def test_aspect_ratio_refuses_choices_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="no aspect ratios"):
        source_of(10, 10).aspect_ratio([])
    with pytest.raises(ValueError, match="16x9"):
        source_of(10, 10).aspect_ratio(["1:1", "16x9"])
    with pytest.raises(ValueError, match="0:1"):
        source_of(10, 10).aspect_ratio(["0:1"])


def test_the_data_uri_round_trips_to_the_same_pixels_as_png() -> None:
    original = noise(120, 90, seed=5)
    source = inspect_source(encode(original, "WEBP", lossless=True))

    prefix, encoded = source.data_uri().split(",", 1)

    assert prefix == "data:image/png;base64"
    png = base64.b64decode(encoded, validate=True)
    assert png == source.as_png()
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.format == "PNG"
        assert decoded.mode == "RGB"
        assert decoded.tobytes() == original.tobytes()


def test_as_png_keeps_transparency_and_drops_metadata() -> None:
    image = Image.new("RGBA", (80, 80), (10, 20, 30, 0))
    info = {"parameters": "private notes"}
    data = encode(image, "PNG", pnginfo=_png_text(info))

    with Image.open(io.BytesIO(inspect_source(data).as_png())) as converted:
        assert converted.mode == "RGBA"
        assert converted.getpixel((0, 0)) == (10, 20, 30, 0)
        assert "parameters" not in converted.info


def _png_text(values: dict[str, str]) -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in values.items():
        info.add_text(key, value)
    return info


# ----- download_image ---------------------------------------------------------------------------------


@pytest.fixture
def emu(flux_emulator: FluxEmulator) -> FluxEmulator:
    return flux_emulator


async def test_a_hosted_png_is_downloaded_and_described(emu: FluxEmulator, http_session: aiohttp.ClientSession) -> None:
    data = png_bytes(64, 48)
    url = emu.add_file("result.png", data, "image/png")

    image = await download_image(http_session, url)

    assert (image.data, image.format, image.width, image.height) == (data, "PNG", 64, 48)
    assert image.content_type == "image/png"
    assert image.filename("flux-7") == "flux-7.png"


async def test_a_jpeg_gets_a_jpg_name(emu: FluxEmulator, http_session: aiohttp.ClientSession) -> None:
    url = emu.add_file("result.jpeg", encode(noise(64, 64, seed=6), "JPEG"), "image/jpeg")

    image = await download_image(http_session, url)

    assert (image.format, image.content_type) == ("JPEG", "image/jpeg")
    assert image.filename("flux 7/a") == "flux_7_a.jpg"


async def test_an_octet_stream_that_is_a_png_is_accepted(
    emu: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    url = emu.add_file("blob", png_bytes(80, 80), "application/octet-stream")

    image = await download_image(http_session, url)

    assert (image.format, image.content_type) == ("PNG", "image/png")


async def test_a_text_html_answer_is_refused_for_good(emu: FluxEmulator, http_session: aiohttp.ClientSession) -> None:
    url = emu.add_file("page", b"<html><body>Sign in to continue</body></html>", "text/html; charset=utf-8")

    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, url)

    assert caught.value.retryable is False
    assert "text/html, not an image" in str(caught.value)


async def test_an_octet_stream_that_is_not_an_image_is_refused(
    emu: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    url = emu.add_file("blob", b"not really an image", "application/octet-stream")

    with pytest.raises(DownloadError, match="not a PNG, JPEG, WebP or GIF image") as caught:
        await download_image(http_session, url)
    assert caught.value.retryable is False


async def test_a_damaged_png_is_refused(emu: FluxEmulator, http_session: aiohttp.ClientSession) -> None:
    data = encode(noise(128, 128, seed=7), "PNG")
    url = emu.add_file("cut.png", data[: len(data) // 2], "image/png")

    with pytest.raises(DownloadError, match="damaged PNG") as caught:
        await download_image(http_session, url)
    assert caught.value.retryable is False


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (500, True), (503, True), (429, True)])
async def test_an_error_status_says_whether_to_try_again(
    emu: FluxEmulator, http_session: aiohttp.ClientSession, status: int, retryable: bool
) -> None:
    url = emu.add_file("result.png", png_bytes(), "image/png")
    emu.add_fault("GET", "/files/result.png", status=status)

    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, url)

    assert (caught.value.status, caught.value.retryable) == (status, retryable)
    assert str(caught.value).endswith(f"answered HTTP {status}")


async def test_a_missing_file_is_a_404_that_is_not_retried(
    emu: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, f"{emu.base_url}/files/expired.png")
    assert (caught.value.status, caught.value.retryable) == (404, False)


async def test_the_query_string_of_a_signed_url_never_appears_in_errors(
    emu: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    url = f"{emu.base_url}/files/gone.png?X-Amz-Signature=s3cr3t&Expires=1"

    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, url)

    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in str(caught.value.user_message)
    assert f"{emu.base_url}/files/gone.png" in str(caught.value)


def test_public_url_keeps_only_scheme_host_and_path() -> None:
    shown = public_url("https://user:pw@cdn.example.com:8443/a/b.png?sig=abc#frag")
    assert shown == "https://cdn.example.com:8443/a/b.png"
    assert public_url("/relative/path?x=1") == "(a relative URL)"


async def test_a_slow_server_times_out_and_may_be_retried(
    emu: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    url = emu.add_file("slow.png", png_bytes(), "image/png")
    emu.add_fault("GET", "/files/slow.png", delay=5)

    started = time.perf_counter()
    with pytest.raises(DownloadError, match=r"did not complete within 0\.2s") as caught:
        await download_image(http_session, url, timeout=0.2)

    assert caught.value.retryable is True
    assert time.perf_counter() - started < 2


async def test_a_dropped_connection_may_be_retried(emu: FluxEmulator, http_session: aiohttp.ClientSession) -> None:
    url = emu.add_file("drop.png", png_bytes(), "image/png")
    emu.add_fault("GET", "/files/drop.png", drop=True, times=2)  # aiohttp itself retries a GET once

    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, url)
    assert caught.value.retryable is True

    # ...and trying again does work.
    assert (await download_image(http_session, url)).format == "PNG"


async def test_a_refused_connection_may_be_retried(http_session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there

    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, f"http://127.0.0.1:{port}/result.png")
    assert caught.value.retryable is True


async def test_a_body_announced_larger_than_the_limit_is_refused(
    emu: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    data = encode(noise(200, 200, seed=8), "PNG")
    url = emu.add_file("big.png", data, "image/png")

    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, url, max_bytes=50_000)

    assert caught.value.retryable is False
    assert f"sent {len(data)} bytes; the limit is 50000" in str(caught.value)
    assert str(caught.value.user_message) == "The finished image is larger than 48.8 KiB, so the bot cannot use it."


async def test_an_inline_image_over_the_limit_is_refused(http_session: aiohttp.ClientSession) -> None:
    data = encode(noise(200, 200, seed=8), "PNG")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")

    assert (await download_image(http_session, uri, max_bytes=len(data))).data == data
    with pytest.raises(DownloadError) as caught:
        await download_image(http_session, uri, max_bytes=len(data) - 1)

    assert caught.value.retryable is False
    assert f"the limit is {len(data) - 1}" in str(caught.value)
    assert str(caught.value.user_message).startswith("The finished image is larger than")


async def test_an_inline_image_is_measured_before_it_is_decoded(http_session: aiohttp.ClientSession) -> None:
    # 64 MiB of text that is not even base64: decoding it first would say "not valid base64" (and cost
    # the memory); measuring first refuses it for its size.
    uri = "data:image/png;base64," + "!" * (64 * MiB)

    with pytest.raises(DownloadError, match=f"sent {64 * MiB} base64 characters; the limit is 50000"):
        await download_image(http_session, uri, max_bytes=50_000)


# ----- download_image against hand-made servers -------------------------------------------------------


@dataclass
class TinyServer:
    """A loopback server with misbehaviours the emulator has no fault for; ``sent`` counts streamed bytes."""

    base_url: str = ""
    sent: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)


STREAM_CAP = 256 * MiB  # the endless stream stops here; a client reading everything would take seconds


@pytest_asyncio.fixture
async def tiny_server() -> AsyncIterator[TinyServer]:
    """``/endless.png`` streams a PNG without Content-Length (chunked) and never stops on its own;
    ``/loop`` redirects to itself."""
    seen = TinyServer()
    head = png_bytes()
    filler = b"\x00" * (64 * 1024)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(head)
            while seen.sent < STREAM_CAP:
                await response.write(filler)
                seen.sent += len(filler)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, as it should
        finally:
            seen.finished.set()
        return response

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/endless.png", endless)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app, shutdown_timeout=0.25)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    seen.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield seen
    await runner.cleanup()


async def test_a_streamed_body_is_abandoned_once_it_passes_the_limit(
    tiny_server: TinyServer, http_session: aiohttp.ClientSession
) -> None:
    with pytest.raises(DownloadError, match="sent more than 1048576 bytes") as caught:
        await download_image(http_session, f"{tiny_server.base_url}/endless.png", max_bytes=MiB)
    assert caught.value.retryable is False

    await asyncio.wait_for(tiny_server.finished.wait(), timeout=5)
    assert tiny_server.sent < 32 * MiB  # closed early: what was sent is what socket buffers held


async def test_a_redirect_loop_is_not_retried(tiny_server: TinyServer, http_session: aiohttp.ClientSession) -> None:
    with pytest.raises(DownloadError, match="redirected too many times") as caught:
        await download_image(http_session, f"{tiny_server.base_url}/loop")
    assert caught.value.retryable is False


@pytest.mark.parametrize("url", ["not a url", "ftp://files.example.com/result.png"])
async def test_a_url_that_cannot_be_fetched_is_not_retried(url: str, http_session: aiohttp.ClientSession) -> None:
    with pytest.raises(DownloadError, match="not an http") as caught:
        await download_image(http_session, url)
    assert caught.value.retryable is False


@dataclass
class RawServer:
    url: str
    answer: bytes


@pytest_asyncio.fixture
async def raw_png_server() -> AsyncIterator[RawServer]:
    """Answers any request with a PNG and no Content-Type header at all (aiohttp's server would add one)."""
    body = png_bytes(70, 70)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield RawServer(url=f"http://127.0.0.1:{port}/result", answer=body)


async def test_an_answer_without_content_type_is_accepted_when_it_is_an_image(
    raw_png_server: RawServer, http_session: aiohttp.ClientSession
) -> None:
    image = await download_image(http_session, raw_png_server.url)

    assert (image.data, image.format, image.width, image.content_type) == (
        raw_png_server.answer,
        "PNG",
        70,
        "image/png",
    )


# ----- fit_images -------------------------------------------------------------------------------------


def test_images_that_fit_are_left_untouched() -> None:
    small = [
        DownloadedImage(data=png_bytes(64, 64), format="PNG", width=64, height=64, content_type="image/png"),
        DownloadedImage(
            data=encode(noise(64, 64, seed=9), "JPEG"), format="JPEG", width=64, height=64, content_type="image/jpeg"
        ),
    ]

    fitted = fit_images(small, 10 * MiB, stem="flux-3")

    assert [image.data for image in fitted] == [image.data for image in small]
    assert [image.filename for image in fitted] == ["flux-3-1.png", "flux-3-2.jpg"]
    assert not any(image.reencoded for image in fitted)
    assert fit_images([small[0]], 10 * MiB)[0].filename == "image.png"
    assert fit_images([], 10 * MiB) == []


def test_a_huge_noisy_png_is_reencoded_under_8_mib_quickly_and_deterministically() -> None:
    huge = noisy_png(2048, 2048, seed=10)
    assert len(huge.data) > 12 * MiB  # noise does not compress

    started = time.perf_counter()
    (fitted,) = fit_images([huge], 8 * MiB)
    elapsed = time.perf_counter() - started

    assert len(fitted.data) <= 8 * MiB - MULTIPART_HEADROOM
    assert elapsed < 2.0
    assert fitted.reencoded
    assert (fitted.filename, fitted.width, fitted.height) == ("image.jpg", 2048, 2048)
    assert sniff_format(fitted.data) == "JPEG"
    assert fit_images([huge], 8 * MiB)[0].data == fitted.data


def test_several_images_fit_together_shrinking_the_largest_first() -> None:
    sizes = [(1024, 1024), (1280, 1024), (1024, 1024), (256, 256)]
    images = [noisy_png(width, height, seed=seed) for seed, (width, height) in enumerate(sizes, start=11)]
    assert sum(len(image.data) for image in images) > 9.9 * MiB

    fitted = fit_images(images, 8 * MiB, stem="job")

    assert sum(len(image.data) for image in fitted) <= 8 * MiB - MULTIPART_HEADROOM
    assert [image.reencoded for image in fitted] == [False, True, False, False]  # only the largest needed it
    assert [image.filename for image in fitted] == ["job-1.png", "job-2.jpg", "job-3.png", "job-4.png"]
    assert [fitted[index].data for index in (0, 2, 3)] == [images[index].data for index in (0, 2, 3)]

    fitted = fit_images(images, 6 * MiB, stem="job")

    assert sum(len(image.data) for image in fitted) <= 6 * MiB - MULTIPART_HEADROOM
    assert [image.reencoded for image in fitted] == [True, True, False, False]


def test_a_tight_limit_downscales() -> None:
    images = [noisy_png(1024, 1024, seed=seed) for seed in (15, 16)]

    fitted = fit_images(images, MULTIPART_HEADROOM + 200_000)

    assert sum(len(image.data) for image in fitted) <= 200_000
    for image in fitted:
        assert 64 <= image.width < 1024
        with Image.open(io.BytesIO(image.data)) as decoded:
            assert decoded.size == (image.width, image.height)


def test_transparency_is_flattened_onto_white_for_jpeg() -> None:
    picture = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    picture.paste(noise(256, 512, seed=17, mode="RGBA").convert("RGB"), (256, 0))  # right half opaque noise
    data = encode(picture, "PNG")
    image = DownloadedImage(data=data, format="PNG", width=512, height=512, content_type="image/png")

    (fitted,) = fit_images([image], MULTIPART_HEADROOM + len(data) // 2)

    assert fitted.reencoded
    red, green, blue, _alpha = first_pixel(fitted.data)
    assert min(red, green, blue) >= 250  # white where it was transparent, not black


def test_an_impossible_limit_is_refused_quickly() -> None:
    images = [noisy_png(1024, 1024, seed=seed) for seed in (18, 19)]

    started = time.perf_counter()
    with pytest.raises(ImageRejected) as caught:
        fit_images(images, MULTIPART_HEADROOM + 1000)
    assert str(caught.value) == "These images cannot be made small enough for this server's upload limit of 64.9 KiB."
    assert time.perf_counter() - started < 1.0

    with pytest.raises(ImageRejected, match=r"^The image cannot be made small enough"):
        fit_images(images[:1], 10_000)  # less than the headroom itself
