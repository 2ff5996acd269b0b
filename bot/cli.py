"""The command line: ``fluxbot [run | check | invite | backup PATH]``, ``--help`` and ``--version``.

``run`` (also what a bare ``fluxbot`` does) is started by :func:`bot.__main__.run`; the other commands run
here and end the process with their own exit status: 0 done, 1 a check failed, 2 settings that do not load
(as ``run``) or a command line argparse refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.check import (
    CheckFailed,
    Outcome,
    application_id,
    check_database,
    check_discord,
    check_flux,
    invite_url,
    package_version,
)
from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "Command", "parse_command"]

#: A check failed, or a command could not do its work.
EXIT_FAILED = 1
#: Settings that do not load (the same status ``fluxbot run`` uses).
EXIT_CONFIG = 2
#: Stands in for a secret a command does not use, so that it need not be set for that command.
_UNUSED = "unused-by-this-command"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxbot",
        description=(
            "A Discord bot that generates and edits images with hosted Flux models. "
            "Configured by environment variables (or a .env file in the working directory)."
        ),
        epilog="Without a command, fluxbot runs the bot.",
    )
    parser.add_argument("--version", action="version", version=f"fluxbot {package_version()}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="{run,check,invite,backup}")
    commands.add_parser("run", help="start the bot (the default)", description="Start the bot.")
    commands.add_parser(
        "check",
        help="verify the settings, the Discord token, the database and the Flux key, without starting the bot",
        description=(
            "Verify the settings, the Discord token, the database and the Flux key without starting the bot and "
            "without spending anything. One line per check; exit 0 when all pass, 1 otherwise, 2 when the "
            "settings do not load."
        ),
    )
    commands.add_parser(
        "invite",
        help="print the link that adds this bot to a server (needs DISCORD_TOKEN only)",
        description="Print the link that adds this bot to a server, with exactly the permissions it needs.",
    )
    backup = commands.add_parser(
        "backup",
        help="copy the database in DATABASE_URL to PATH, safely while the bot runs",
        description="Copy the database in DATABASE_URL to PATH with SQLite's online backup, safely while the bot runs.",
    )
    backup.add_argument("path", metavar="PATH", type=Path, help="where to write the copy (replaced if it exists)")
    return parser


@dataclass(frozen=True)
class Command:
    """What the command line asked for."""

    name: str
    path: Path | None = None

    def execute(self) -> int:
        """Run a command other than ``run``; its exit status."""
        if self.name == "check":
            return asyncio.run(_check())
        if self.name == "invite":
            return asyncio.run(_invite())
        if self.name == "backup":
            assert self.path is not None
            return _backup(self.path)
        raise ValueError(f"{self.name!r} is started by bot.__main__.run")


def parse_command(argv: Sequence[str] | None = None) -> Command:
    """The command in ``argv`` (default: the process's arguments). ``--help`` and ``--version`` print and exit 0;
    an argument that is not understood prints the usage to standard error and exits 2."""
    args = _parser().parse_args(argv)
    return Command(args.command or "run", getattr(args, "path", None))


def _settings(**placeholders: str) -> Settings | None:
    """The settings, or None after one line on standard error; ``placeholders`` fill secrets not needed here."""
    try:
        settings = load_settings(**placeholders)
    except SettingsError as exc:
        print(f"fluxbot: {exc}", file=sys.stderr)
        return None
    configure_logging("WARNING", [settings.discord_token, settings.flux_api_key])
    return settings


async def _check() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(Outcome("configuration", False, str(exc)).line(), flush=True)
        return EXIT_CONFIG
    configure_logging("WARNING", [settings.discord_token, settings.flux_api_key])
    print(Outcome("configuration", True, f"provider {settings.flux_provider.value}").line(), flush=True)
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession() as session:
        for check in (check_discord(session, settings), check_database(settings), check_flux(session, settings)):
            outcome = await check
            print(outcome.line(), flush=True)
            outcomes.append(outcome)
    return 0 if all(o.ok for o in outcomes) else EXIT_FAILED


async def _invite() -> int:
    settings = _settings(FLUX_API_KEY=_UNUSED)
    if settings is None:
        return EXIT_CONFIG
    try:
        async with aiohttp.ClientSession() as session:
            app_id = await application_id(session, settings)
    except CheckFailed as exc:
        print(f"fluxbot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(invite_url(app_id))
    return 0


def _backup_source(settings: Settings) -> Path | int:
    """The SQLite file to back up, or the exit status after saying why there is none."""
    if settings.uses_postgresql:  # the server has its own tool, which copies a live database consistently
        print(
            f"fluxbot: backup copies a SQLite file; {settings.database_shown} is a PostgreSQL database: "
            "back it up with pg_dump (e.g. pg_dump --format=custom --file=fluxbot.dump DATABASE_URL)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        source = settings.database_path
    except ValueError as exc:
        print(f"fluxbot: DATABASE_URL: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not source.is_file():
        print(f"fluxbot: DATABASE_URL: there is no database at {source}", file=sys.stderr)
        return EXIT_FAILED
    return source


def _backup(target: Path) -> int:
    settings = _settings(DISCORD_TOKEN=_UNUSED, FLUX_API_KEY=_UNUSED)
    if settings is None:
        return EXIT_CONFIG
    source = _backup_source(settings)
    if isinstance(source, int):
        return source
    if target.is_dir():
        target = target / source.name
    if target.exists() and target.resolve() == source.resolve():
        print(f"fluxbot: {target} is the database itself; name another file", file=sys.stderr)
        return EXIT_FAILED
    # Written next to the target, then renamed over it: a reader never sees half a copy.
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.unlink(missing_ok=True)
        with (
            contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
            contextlib.closing(sqlite3.connect(partial)) as dst,
        ):
            src.backup(dst)  # one step: a consistent snapshot, even while the bot writes (WAL)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        partial.replace(target)
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        print(f"fluxbot: could not back up {source} to {target}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"backup: wrote {target} ({target.stat().st_size} bytes), a copy of {source}")
    return 0
