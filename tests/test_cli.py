"""The ``fluxbot`` command line, run as operators run it (the installed script, as a child process): ``--help``,
``--version``, ``check``, ``invite`` and ``backup``, against the loopback emulators of Discord and the Flux vendors."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from bot.db import SqliteStore
from bot.db.state import set_state
from tests.conftest import free_port
from tests.fakediscord.faults import RestFault
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment
from tests.fluxbot_process import FLUXBOT, fluxbot_process

REPO = Path(__file__).resolve().parents[1]
PIPE = asyncio.subprocess.PIPE

#: The five permissions the bot needs: View Channel, Send Messages, Embed Links, Attach Files, Read Message History.
NEEDED_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16)
ADMINISTRATOR = 1 << 3
WRONG_KEY = "sk-wrong-0123456789"
WRONG_TOKEN = "MTIz.not-the.token"


@dataclass
class Ran:
    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def line(self, check: str) -> str:
        """The output line of one check (``discord``, ``database``, ``flux`` ...)."""
        found = [line for line in self.lines if line.startswith(f"{check}: ")]
        assert len(found) == 1, self.stdout + self.stderr
        return found[0]


async def run_fluxbot(*args: str, env: Mapping[str, str], cwd: Path, inherit: bool = True) -> Ran:
    """Run ``fluxbot ARGS`` to its end; ``inherit=False`` gives it ``env`` alone (nothing of the test's own)."""
    process = await asyncio.create_subprocess_exec(
        str(FLUXBOT),
        *args,
        env={**os.environ, **env} if inherit else dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"fluxbot {' '.join(args)} did not finish within 30 s") from None
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def env_for(harness: FluxbotHarness, **overrides: str) -> dict[str, str]:
    return fluxbot_environment(harness.discord, harness.flux, harness.database, **overrides)


def assert_started_nothing(harness: FluxbotHarness) -> None:
    """No gateway session, no generation: the command only looked."""
    discord, flux = harness.discord, harness.flux
    assert discord.identifies == [] and discord.sessions == {}
    assert not [c for c in discord.rest_log if c.path.startswith("/gateway")]
    assert flux.requests_to("POST", "/flux/images") == []
    assert not [r for r in flux.requests if r.method == "POST" and r.path.startswith("/v1/")]
    assert flux.tasks == {}


# -- --help, --version, a wrong argument --------------------------------------------------------------------


async def test_help_names_every_command_and_needs_no_environment(tmp_path: Path) -> None:
    ran = await run_fluxbot("--help", env={}, cwd=tmp_path, inherit=False)

    assert ran.status == 0, ran.stderr
    assert ran.stdout.startswith("usage: fluxbot")
    for command in ("run", "check", "invite", "backup"):
        assert re.search(rf"^\s+{command}\s", ran.stdout, re.MULTILINE), ran.stdout
    assert ran.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no database, nothing written


async def test_help_with_a_token_set_starts_nothing(fluxbot: FluxbotHarness, tmp_path: Path) -> None:
    ran = await run_fluxbot("--help", env=env_for(fluxbot), cwd=tmp_path)

    assert ran.status == 0, ran.stderr
    assert "check" in ran.stdout and "invite" in ran.stdout
    assert fluxbot.discord.rest_log == [] and fluxbot.flux.requests == []
    assert_started_nothing(fluxbot)
    assert not fluxbot.database.exists()


async def test_python_dash_m_bot_is_the_same_command_line(tmp_path: Path) -> None:
    script = await run_fluxbot("--help", env={}, cwd=tmp_path, inherit=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--help", env={"PYTHONPATH": str(REPO)}, cwd=tmp_path, stdout=PIPE, stderr=PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0, stderr.decode()
    assert stdout.decode() == script.stdout


async def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    ran = await run_fluxbot("--version", env={}, cwd=tmp_path, inherit=False)

    assert ran.status == 0, ran.stderr
    assert ran.stdout == f"fluxbot {version('fluxbot')}\n"
    assert re.fullmatch(r"fluxbot \d+\.\d+\.\d+\n", ran.stdout)


@pytest.mark.parametrize("args", [["--verbose"], ["start"], ["check", "--now"], ["backup"]])
async def test_an_argument_it_does_not_understand_prints_the_usage_and_exits_2(tmp_path: Path, args: list[str]) -> None:
    ran = await run_fluxbot(*args, env={}, cwd=tmp_path, inherit=False)

    assert ran.status == 2
    assert ran.stdout == ""
    assert ran.stderr.startswith("usage: fluxbot")
    assert "error:" in ran.stderr
    assert "Traceback" not in ran.stderr


# -- check ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["acedata", "bfl"])
async def test_check_with_everything_right_says_ok_per_check_and_exits_0(
    fluxbot: FluxbotHarness, tmp_path: Path, provider: str
) -> None:
    discord = fluxbot.discord
    discord.add_guild("Second Server")
    ran = await run_fluxbot("check", env=env_for(fluxbot, FLUX_PROVIDER=provider), cwd=tmp_path)

    assert ran.status == 0, ran.stdout + ran.stderr
    assert [line.split(":")[0] for line in ran.lines] == ["configuration", "discord", "database", "flux"]
    assert all(": ok — " in line for line in ran.lines), ran.stdout
    assert ran.line("discord") == (
        f"discord: ok — logged in as {discord.bot_user.name} (id {discord.bot_user.id}), in 2 servers"
    )
    assert str(fluxbot.database) in ran.line("database")
    assert provider in ran.line("flux") and "FLUX_API_KEY" in ran.line("flux")
    assert "Traceback" not in ran.stderr

    # it looked the bot up with the token, and that is all it did on Discord
    assert {(c.method, c.path) for c in discord.rest_log} == {("GET", "/users/@me"), ("GET", "/users/@me/guilds")}
    assert_started_nothing(fluxbot)
    # the key was checked by looking up a task that does not exist, once
    if provider == "acedata":
        (lookup,) = fluxbot.flux.requests
        assert (lookup.method, lookup.path) == ("POST", "/flux/tasks")
        assert lookup.json is not None and lookup.json["action"] == "retrieve"
    else:
        (lookup,) = fluxbot.flux.requests
        assert (lookup.method, lookup.path) == ("GET", "/v1/get_result")
    # the database was created, migrated, and its test write left nothing behind
    with sqlite3.connect(fluxbot.database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "jobs" in tables
        assert db.execute("SELECT count(*) FROM bot_state WHERE key LIKE '%check%'").fetchone() == (0,)


@pytest.mark.parametrize("provider", ["acedata", "bfl"])
async def test_check_with_a_wrong_flux_key_names_flux_api_key_and_exits_1(
    fluxbot: FluxbotHarness, tmp_path: Path, provider: str
) -> None:
    env = env_for(fluxbot, FLUX_PROVIDER=provider, FLUX_API_KEY=WRONG_KEY)
    ran = await run_fluxbot("check", env=env, cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    flux_line = ran.line("flux")
    assert flux_line.startswith("flux: FAILED — FLUX_API_KEY: ") and "refused" in flux_line
    assert ran.line("discord").startswith("discord: ok")
    assert ran.line("database").startswith("database: ok")
    assert WRONG_KEY not in ran.stdout + ran.stderr
    assert_started_nothing(fluxbot)


async def test_check_with_a_token_discord_refuses_names_discord_token_and_exits_1(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    ran = await run_fluxbot("check", env=env_for(fluxbot, DISCORD_TOKEN=WRONG_TOKEN), cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    assert ran.line("discord") == (
        "discord: FAILED — DISCORD_TOKEN: Discord refused this token; copy the bot token again from the developer "
        "portal"
    )
    assert ran.line("flux").startswith("flux: ok")  # the other checks still ran
    assert WRONG_TOKEN not in ran.stdout + ran.stderr
    assert_started_nothing(fluxbot)


async def test_check_when_discord_cannot_be_reached_names_discord_api_base(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{free_port()}/api/v10"
    ran = await run_fluxbot("check", env=env_for(fluxbot, DISCORD_API_BASE=base), cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    assert ran.line("discord").startswith(f"discord: FAILED — DISCORD_API_BASE: Discord could not be reached at {base}")
    assert "Traceback" not in ran.stderr


async def test_check_during_a_discord_outage_says_what_discord_answered(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    fluxbot.discord.rest_faults.add("GET", "/users/@me", lambda call: RestFault.server_error(503))
    ran = await run_fluxbot("check", env=env_for(fluxbot), cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    assert ran.line("discord").startswith(
        f"discord: FAILED — DISCORD_API_BASE: GET /users/@me at {fluxbot.discord.api_base} answered HTTP 503"
    )
    assert "Traceback" not in ran.stderr


async def test_check_when_the_flux_endpoint_cannot_be_reached_names_flux_api_base(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    ran = await run_fluxbot("check", env=env_for(fluxbot, FLUX_API_BASE=base), cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    assert ran.line("flux").startswith("flux: FAILED — FLUX_API_BASE: ")
    assert base in ran.line("flux")


async def test_check_with_a_relay_says_the_key_cannot_be_verified_for_free_and_sends_it_nothing(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    ran = await run_fluxbot("check", env=env_for(fluxbot, FLUX_PROVIDER="openai"), cwd=tmp_path)

    assert ran.status == 0, ran.stdout + ran.stderr
    assert ran.line("flux").startswith("flux: not verified — ") and "FLUX_API_KEY" in ran.line("flux")
    assert fluxbot.flux.requests == []


async def test_check_with_an_unusable_database_names_database_url(fluxbot: FluxbotHarness, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database's directory should be")
    env = env_for(fluxbot, DATABASE_URL=f"sqlite:///{blocker}/fluxbot.db")
    ran = await run_fluxbot("check", env=env, cwd=tmp_path)

    # refused when the settings load (2), or by the database check (1): either way one line naming the variable
    assert ran.status in (1, 2), ran.stdout + ran.stderr
    assert "DATABASE_URL" in ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr


async def test_check_with_a_file_that_is_not_a_database_names_database_url_and_exits_1(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    fluxbot.database.parent.mkdir(parents=True)
    fluxbot.database.write_bytes(b"these are somebody's notes, not an SQLite database" * 100)
    ran = await run_fluxbot("check", env=env_for(fluxbot), cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    assert ran.line("database").startswith(f"database: FAILED — DATABASE_URL: cannot open {fluxbot.database}: ")
    assert ran.line("discord").startswith("discord: ok") and ran.line("flux").startswith("flux: ok")
    assert "Traceback" not in ran.stderr


async def test_check_with_settings_that_do_not_load_exits_2(tmp_path: Path) -> None:
    ran = await run_fluxbot("check", env={}, cwd=tmp_path, inherit=False)

    assert ran.status == 2
    assert ran.lines == ["configuration: FAILED — missing required environment variables: DISCORD_TOKEN, FLUX_API_KEY"]


async def test_check_and_backup_work_while_the_bot_runs_on_the_same_database(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    env = env_for(fluxbot)
    async with fluxbot_process(env, tmp_path) as bot:
        await bot.wait_online(fluxbot.discord)
        checked = await run_fluxbot("check", env=env, cwd=tmp_path)
        copy = tmp_path / "copy.db"
        backed_up = await run_fluxbot("backup", str(copy), env=env, cwd=tmp_path)
        assert bot.returncode is None, bot.stderr()  # still running

    assert checked.status == 0, checked.stdout + checked.stderr
    assert checked.line("database").startswith(f"database: ok — {fluxbot.database} (schema version ")
    assert backed_up.status == 0, backed_up.stderr
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert "jobs" in {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_fake_discord_pages_the_bots_servers_like_discord(fluxbot: FluxbotHarness) -> None:
    discord = fluxbot.discord
    discord.add_guild("Second Server")
    discord.add_guild("Third Server")
    url = f"{discord.api_base}/users/@me/guilds"
    headers = {"Authorization": f"Bot {discord.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def page(**query: str) -> list[dict[str, object]]:
            async with session.get(url, params=query) as response:
                assert response.status == 200
                body: list[dict[str, object]] = await response.json()
                return body

        everything = await page()
        first = await page(limit="2")
        rest = await page(limit="2", after=str(first[-1]["id"]))
        async with session.get(url, params={"limit": "0"}) as response:
            assert response.status == 400
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as response:
            assert response.status == 401

    ids = [int(str(g["id"])) for g in everything]
    assert ids == sorted(ids) and len(ids) == 3
    assert [g["id"] for g in first + rest] == [g["id"] for g in everything]
    assert {g["name"] for g in everything} == {"Flux Test Server", "Second Server", "Third Server"}
    assert all(set(g) >= {"id", "name", "icon", "owner", "permissions", "features"} for g in everything)


# -- invite ---------------------------------------------------------------------------------------------------


async def test_invite_prints_the_link_with_exactly_the_permissions_the_bot_needs(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord = fluxbot.discord
    env = {k: v for k, v in discord.env().items() if k != "DISCORD_GATEWAY_URL"}  # a Discord token and nothing else
    ran = await run_fluxbot("invite", env=env, cwd=tmp_path, inherit=False)

    assert ran.status == 0, ran.stderr
    (url,) = ran.lines
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "discord.com", "/oauth2/authorize")
    assert "scope=bot+applications.commands" in parts.query
    query = parse_qs(parts.query)
    assert query["client_id"] == [str(discord.application_id)]
    assert query["scope"] == ["bot applications.commands"]
    (permissions,) = query["permissions"]
    assert int(permissions) == NEEDED_PERMISSIONS
    assert not int(permissions) & ADMINISTRATOR
    assert_started_nothing(fluxbot)


async def test_invite_with_a_token_discord_refuses_names_discord_token(fluxbot: FluxbotHarness, tmp_path: Path) -> None:
    env = {**fluxbot.discord.env(), "DISCORD_TOKEN": WRONG_TOKEN}
    ran = await run_fluxbot("invite", env=env, cwd=tmp_path, inherit=False)

    assert ran.status == 1
    assert ran.stdout == ""
    assert ran.stderr.startswith("fluxbot: DISCORD_TOKEN: Discord refused this token")
    assert WRONG_TOKEN not in ran.stderr


# -- backup ---------------------------------------------------------------------------------------------------


async def test_backup_copies_the_database_of_a_running_bot_with_what_it_just_wrote(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    # The bot's own store is open, in WAL mode, its last write not yet checkpointed into the main file.
    store = await SqliteStore.open(fluxbot.database)
    try:
        await set_state(store, "written-just-now", "by the running bot")
        assert Path(f"{fluxbot.database}-wal").stat().st_size > 0
        target = tmp_path / "backups" / "fluxbot-copy.db"
        target.parent.mkdir()
        env = {"DATABASE_URL": f"sqlite:///{fluxbot.database}"}  # no Discord token or Flux key needed
        ran = await run_fluxbot("backup", str(target), env=env, cwd=tmp_path, inherit=False)

        assert ran.status == 0, ran.stderr
        (line,) = ran.lines
        assert str(target) in line and str(fluxbot.database) in line
        # the bot's store still works after the copy
        await set_state(store, "written-after", "still fine")
    finally:
        await store.close()

    with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "jobs" in tables
        assert copy.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        assert copy.execute("SELECT value FROM bot_state WHERE key = 'written-just-now'").fetchone() == (
            "by the running bot",
        )
    assert not [p for p in target.parent.iterdir() if p.name != target.name]  # no partial file left behind


async def test_backup_without_a_database_says_so_and_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fluxbot.db"
    env = {"DATABASE_URL": f"sqlite:///{missing}"}
    ran = await run_fluxbot("backup", str(tmp_path / "copy.db"), env=env, cwd=tmp_path, inherit=False)

    assert ran.status == 1
    assert ran.stderr == f"fluxbot: DATABASE_URL: there is no database at {missing}\n"
    assert not (tmp_path / "copy.db").exists()


# -- PostgreSQL ---------------------------------------------------------------------------------------------

#: A made-up password: the test server trusts loopback, so it is accepted and must never be shown.
PG_PASSWORD = "pg-Secret-77"


def postgresql_with_password(url: str, *, port: int | None = None) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{PG_PASSWORD}@{parts.hostname}:{port or parts.port}").geturl()


async def test_check_on_postgresql_migrates_and_writes_and_hides_the_password(
    fluxbot: FluxbotHarness, tmp_path: Path, postgresql_url: str
) -> None:
    url = postgresql_with_password(postgresql_url)
    ran = await run_fluxbot("check", env=env_for(fluxbot, DATABASE_URL=url), cwd=tmp_path)

    assert ran.status == 0, ran.stdout + ran.stderr
    line = ran.line("database")
    assert line.startswith(f"database: ok — postgresql://postgres:***@{urlsplit(url).netloc.split('@')[1]}/"), line
    assert "PostgreSQL, schema version " in line and "writable" in line
    assert PG_PASSWORD not in ran.stdout + ran.stderr
    assert not fluxbot.database.exists()  # no SQLite file on the side
    conn = await asyncpg.connect(postgresql_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM bot_state") == 0  # the test write was undone
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await conn.close()


async def test_check_with_an_unreachable_postgresql_names_database_url_and_hides_the_password(
    fluxbot: FluxbotHarness, tmp_path: Path, postgresql_url: str
) -> None:
    url = postgresql_with_password(postgresql_url, port=free_port())
    ran = await run_fluxbot("check", env=env_for(fluxbot, DATABASE_URL=url), cwd=tmp_path)

    assert ran.status == 1, ran.stdout + ran.stderr
    line = ran.line("database")
    assert line.startswith("database: FAILED — DATABASE_URL: cannot open postgresql://postgres:***@"), line
    assert PG_PASSWORD not in ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr


async def test_backup_on_postgresql_points_at_pg_dump_and_exits_2(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"postgresql://fluxbot:{PG_PASSWORD}@db.example:5432/fluxbot"}
    ran = await run_fluxbot("backup", str(tmp_path / "copy.db"), env=env, cwd=tmp_path, inherit=False)

    assert ran.status == 2
    assert ran.stderr.count("\n") == 1 and "pg_dump" in ran.stderr
    assert "postgresql://fluxbot:***@db.example:5432/fluxbot" in ran.stderr
    assert PG_PASSWORD not in ran.stdout + ran.stderr
    assert list(tmp_path.iterdir()) == []
