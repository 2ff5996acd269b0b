"""Member images come only from Discord's media hosts (``DISCORD_MEDIA_HOSTS``).

The host check on its own (ports, case, look-alike names, credentials, IP literals, bad URLs), the setting,
and fetching over real loopback HTTP: a URL off the list or a redirect leaving it is refused before any
request reaches that host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from bot.images import (
    DEFAULT_MEDIA_HOSTS,
    MAX_MEDIA_REDIRECTS,
    DownloadError,
    HostNotAllowed,
    ImageRejected,
    MediaHost,
    MediaHosts,
    download_image,
    fetch_source,
)
from bot.settings import SettingsError, load_settings
from tests.conftest import png_bytes

DISCORD = MediaHosts.parse(DEFAULT_MEDIA_HOSTS)


class LoopbackSite:
    """An HTTP server on 127.0.0.1 that records every request it gets.

    It stands for a host the bot must never reach (its own network, ``169.254.169.254``), for a public
    site, or for an allowed host that redirects elsewhere.
    """

    def __init__(self) -> None:
        self.requests: list[str] = []  # the paths asked for, in order
        self._routes: dict[str, Callable[[], web.StreamResponse]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    def serve(self, path: str, body: bytes, content_type: str = "image/png") -> str:
        self._routes[path] = lambda: web.Response(body=body, content_type=content_type)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self._routes[path] = lambda: web.Response(status=status, headers={"Location": location})
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        route = self._routes.get(request.path)
        return route() if route is not None else web.Response(status=404)

    async def start(self) -> LoopbackSite:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def loopback_sites() -> AsyncIterator[Callable[[], Awaitable[LoopbackSite]]]:
    """``await loopback_sites()`` starts one more recording server; all are closed after the test."""
    started: list[LoopbackSite] = []

    async def start() -> LoopbackSite:
        site = await LoopbackSite().start()
        started.append(site)
        return site

    yield start
    for site in started:
        await site.close()


# -- the list and the check ------------------------------------------------------------------------------


def test_the_default_lists_discords_cdn_and_media_proxy_for_https_only() -> None:
    assert DISCORD.entries == {
        MediaHost("cdn.discordapp.com"),
        MediaHost("media.discordapp.net"),
        MediaHost("images-ext-1.discordapp.net"),
        MediaHost("images-ext-2.discordapp.net"),
    }
    assert DISCORD.allows("https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1&is=2&hm=3&")
    assert DISCORD.allows("https://images-ext-1.discordapp.net/external/abc/https/example.com/a.png")


@pytest.mark.parametrize(
    "url",
    [
        "https://CDN.DiscordApp.COM/attachments/1/2/a.png",  # hosts are case-insensitive
        "https://cdn.discordapp.com./attachments/1/2/a.png",  # the same name, fully qualified
        "https://cdn.discordapp.com:443/attachments/1/2/a.png",  # the default port, spelled out
        "https://media.discordapp.net/attachments/1/2/a.png?width=100#frag",
        # IDNA mapping turns a one-dot leader into a dot: the host connected to *is* cdn.discordapp.com.
        "https://cdn\u2024discordapp.com/a.png",
    ],
)
def test_the_same_hosts_in_other_spellings_are_allowed(url: str) -> None:
    assert DISCORD.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.discordapp.com/attachments/1/2/a.png",  # not https
        "https://cdn.discordapp.com:8443/a.png",  # another port
        "https://cdn.discordapp.com.evil.com/a.png",  # a look-alike suffix
        "https://evilcdn.discordapp.com/a.png",
        "https://discordapp.com/a.png",  # the parent domain is not listed
        "https://evil.com/cdn.discordapp.com/a.png",
        "https://evil.com/?u=https://cdn.discordapp.com/a.png",
        "https://cdn.discordapp.com@evil.com/a.png",  # credentials: the host is evil.com
        "https://user@cdn.discordapp.com/a.png",  # a listed host, but with credentials
        "https://user:pw@cdn.discordapp.com/a.png",
        "https://cdn.discordapp.com\\@evil.com/a.png",
        "https://cdn.dis\u0441ordapp.com/a.png",  # a Cyrillic es: IDNA-encodes to another name (xn--)
        "https://%63dn.discordapp.com/a.png",
        "http://127.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://2130706433/a.png",
        "ftp://cdn.discordapp.com/a.png",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "//cdn.discordapp.com/a.png",  # relative
        "/attachments/1/2/a.png",
        "cdn.discordapp.com/a.png",
        "https:///a.png",
        "https://[::1/a.png",  # unparseable
        "",
        "https://xn--/a.png",
    ],
)
def test_anything_else_is_refused_without_raising(url: str) -> None:
    assert DISCORD.allows(url) is False
    with pytest.raises(HostNotAllowed) as refused:
        DISCORD.check(url)
    assert "only uses images stored on Discord" in str(refused.value.user_message)


def test_an_entry_with_a_port_allows_http_and_https_on_that_port_only() -> None:
    hosts = MediaHosts.parse("127.0.0.1:8080, [::1]:9000")

    assert hosts.allows("http://127.0.0.1:8080/a.png") and hosts.allows("https://127.0.0.1:8080/a.png")
    assert hosts.allows("http://[::1]:9000/a.png") and hosts.allows("http://[0:0::1]:9000/a.png")
    assert not hosts.allows("http://127.0.0.1/a.png")
    assert not hosts.allows("http://127.0.0.1:8081/a.png")
    assert not hosts.allows("http://localhost:8080/a.png")  # names are not resolved: only what is listed
    assert not hosts.allows("https://cdn.discordapp.com/a.png")


def test_international_names_are_compared_in_their_idna_form() -> None:
    hosts = MediaHosts.parse("xn--bcher-kva.example")

    assert hosts.allows("https://bücher.example/a.png")
    assert hosts.allows("https://XN--BCHER-KVA.example/a.png")
    assert not hosts.allows("https://bucher.example/a.png")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("https://cdn.discordapp.com", "not URLs"),
        ("cdn.discordapp.com/attachments", "not URLs"),
        ("user@cdn.discordapp.com", "not URLs"),
        ("cdn.discordapp.com:https", "host or host:port"),
        ("cdn.discordapp.com:0", "host or host:port"),
        ("cdn.discordapp.com:70000", "host or host:port"),
        ("::1", "brackets"),
        ("[::1", "host or host:port"),
        ("bücher.example", "xn--"),
        ("-bad-.example", "host or host:port"),
        ("a..b", "host or host:port"),
        (" , ", "lists no host"),
    ],
)
def test_a_bad_entry_is_named_in_the_error(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        MediaHosts.parse(text)


# -- the setting -------------------------------------------------------------------------------------------


@pytest.fixture
def required_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.delenv("DISCORD_MEDIA_HOSTS", raising=False)
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret-value")
    monkeypatch.setenv("FLUX_API_KEY", "flux-secret-value")


@pytest.mark.usefixtures("required_settings")
def test_the_setting_defaults_to_discords_hosts_and_takes_spaces_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().discord_media_hosts == DISCORD

    monkeypatch.setenv("DISCORD_MEDIA_HOSTS", "cdn.discordapp.com,127.0.0.1:5000  media.discordapp.net")
    hosts = load_settings().discord_media_hosts

    assert hosts.entries == {
        MediaHost("cdn.discordapp.com"),
        MediaHost("127.0.0.1", 5000),
        MediaHost("media.discordapp.net"),
    }


@pytest.mark.usefixtures("required_settings")
def test_a_bad_setting_fails_at_start_with_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_MEDIA_HOSTS", "cdn.discordapp.com https://evil.example/")

    with pytest.raises(SettingsError) as failed:
        load_settings()

    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("invalid settings: DISCORD_MEDIA_HOSTS: ")
    assert "'https://evil.example/'" in message


# -- fetching over loopback ----------------------------------------------------------------------------------


async def test_a_url_off_the_list_is_refused_before_any_request(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    inner = await loopback_sites()
    url = inner.serve("/secret.png", png_bytes())

    with pytest.raises(HostNotAllowed):
        await fetch_source(http_session, url, allowed_hosts=DISCORD, max_bytes=2**20)
    with pytest.raises(HostNotAllowed):
        await download_image(http_session, url, allowed_hosts=DISCORD)

    assert inner.requests == []


async def test_a_listed_host_is_fetched_and_checked(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    cdn = await loopback_sites()
    hosts = MediaHosts.parse(cdn.host_port)

    source = await fetch_source(
        http_session, cdn.serve("/cat.png", png_bytes(96, 64)), allowed_hosts=hosts, max_bytes=2**20
    )

    assert (source.format, source.width, source.height) == ("PNG", 96, 64)
    assert cdn.requests == ["/cat.png"]
    with pytest.raises(ImageRejected, match="not an image"):
        await fetch_source(http_session, cdn.serve("/page", b"<html>", "image/png"), allowed_hosts=hosts, max_bytes=99)


async def test_a_redirect_off_the_list_is_refused_and_never_followed(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    cdn, inner = await loopback_sites(), await loopback_sites()
    hosts = MediaHosts.parse(cdn.host_port)
    inner.serve("/latest/meta-data", png_bytes())
    starts = [
        cdn.redirect("/absolute", inner.url("/latest/meta-data")),
        cdn.redirect("/protocol-relative", f"//{inner.host_port}/latest/meta-data", status=301),
        cdn.redirect("/temporary", inner.url("/latest/meta-data"), status=307),
        cdn.redirect("/credentials", f"http://{cdn.host_port}@{inner.host_port}/latest/meta-data", status=308),
    ]

    for url in starts:
        with pytest.raises(HostNotAllowed, match="redirected to"):
            await fetch_source(http_session, url, allowed_hosts=hosts, max_bytes=2**20)
        with pytest.raises(HostNotAllowed):
            await download_image(http_session, url, allowed_hosts=hosts)

    assert inner.requests == []
    assert len(cdn.requests) == 2 * len(starts)


async def test_redirects_within_the_list_are_followed_a_few_times_only(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    cdn, media = await loopback_sites(), await loopback_sites()
    hosts = MediaHosts.parse(f"{cdn.host_port} {media.host_port}")
    media.serve("/a.png", png_bytes(64, 64))
    cdn.redirect("/hop", "/relative")
    cdn.redirect("/relative", media.url("/a.png"))
    for hop in range(MAX_MEDIA_REDIRECTS + 1):
        cdn.redirect(f"/loop{hop}", f"/loop{hop + 1}")

    source = await fetch_source(http_session, cdn.url("/hop"), allowed_hosts=hosts, max_bytes=2**20)
    assert source.width == 64 and media.requests == ["/a.png"]

    with pytest.raises(DownloadError, match="redirected more than") as looped:
        await fetch_source(http_session, cdn.url("/loop0"), allowed_hosts=hosts, max_bytes=2**20)
    assert str(looped.value.user_message) == "The bot could not download that image."
    assert cdn.requests.count("/loop0") == 1 and f"/loop{MAX_MEDIA_REDIRECTS + 1}" not in cdn.requests


async def test_a_redirect_without_a_location_is_an_error_not_a_crash(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    cdn = await loopback_sites()
    hosts = MediaHosts.parse(cdn.host_port)
    cdn._routes["/nowhere"] = lambda: web.Response(status=302)
    bad = cdn.redirect("/bad", "http://[::1")

    with pytest.raises(DownloadError, match="without a Location"):
        await fetch_source(http_session, cdn.url("/nowhere"), allowed_hosts=hosts, max_bytes=2**20)
    with pytest.raises(HostNotAllowed):
        await fetch_source(http_session, bad, allowed_hosts=hosts, max_bytes=2**20)


async def test_a_member_image_over_the_limit_is_refused_in_the_members_words(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    cdn = await loopback_sites()
    url = cdn.serve("/big.png", png_bytes() + bytes(5000))

    with pytest.raises(DownloadError) as refused:
        await fetch_source(http_session, url, allowed_hosts=MediaHosts.parse(cdn.host_port), max_bytes=4096)

    assert str(refused.value.user_message) == "That image is larger than 4 KiB, so the bot cannot use it."


async def test_provider_results_still_follow_redirects_to_any_host(
    http_session: aiohttp.ClientSession, loopback_sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    provider, storage = await loopback_sites(), await loopback_sites()
    storage.serve("/result.png", png_bytes(80, 80))

    result = await download_image(http_session, provider.redirect("/r/1", storage.url("/result.png")))

    assert (result.width, storage.requests) == (80, ["/result.png"])
