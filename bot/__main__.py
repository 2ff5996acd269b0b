"""The composition root: ``fluxbot`` and ``python -m bot`` start here.

``main()`` loads the settings, opens the HTTP session, the database and the Flux client, builds the bot
with them, and closes everything on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator

import discord

from bot.app import open_bot
from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings
from bot.startup import connect_with_retries, hold_database, log_in_with_retries, quiet_reconnects
from bot.tasks import TaskSet

log = logging.getLogger("bot")

#: Exit status for a configuration the bot cannot start with (like a missing required variable).
EXIT_CONFIG = 2
#: What a gateway close code means for the operator (discord.py keeps no reason for the codes it gives up on).
GATEWAY_CLOSE_REASONS = {
    4010: "Invalid shard (another process runs this shard already, or SHARD_IDS is not below SHARD_COUNT)",
    4011: "Sharding required (the bot is in too many servers for SHARD_COUNT; raise it, or unset it)",
}


async def main(settings: Settings) -> None:
    """Run the bot until it is stopped: by Ctrl-C, or by SIGTERM (what Docker and service managers send).

    Only one process runs on a SQLite database (a second one exits 2); several may share a PostgreSQL one (see
    bot.db.work). Logging in and connecting ride out network
    failures (see bot.startup); a refused token or intent raises discord.LoginFailure or
    discord.PrivilegedIntentsRequired.

    A signal while logging in cancels main(); once logged in it closes the bot instead, discord.py's own
    way to stop: on Python 3.11 a cancellation that arrives just as the gateway connects is lost, and
    closing while still logging in would break the login's requests. open_bot() closes the rest.
    """
    main_task = asyncio.current_task()
    assert main_task is not None
    shutdown = TaskSet("shutdown")
    stopping = asyncio.Event()  # ends the waits between retries at once
    with hold_database(settings):  # before the database is opened
        async with open_bot(settings) as bot:
            logged_in = False

            def stop() -> None:
                stopping.set()
                if logged_in:
                    shutdown.spawn(bot.close(), name="close")
                else:
                    main_task.cancel()

            with _on_stop_signals(stop), quiet_reconnects(bot):
                if not await log_in_with_retries(bot, settings.discord_token.get_secret_value(), stopping):
                    return
                logged_in = True
                await connect_with_retries(bot, stopping)


@contextlib.contextmanager
def _on_stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on the first SIGINT or SIGTERM; a second one gets the default behaviour (stop now)."""
    loop = asyncio.get_running_loop()
    signums = (signal.SIGINT, signal.SIGTERM)

    def first(signum: signal.Signals) -> None:
        log.info("%s received; shutting down", signum.name)
        for handled in signums:
            loop.remove_signal_handler(handled)
        stop()

    try:
        for signum in signums:
            loop.add_signal_handler(signum, first, signum)
    except NotImplementedError:  # Windows: Ctrl-C still stops the bot through asyncio.run()
        pass
    try:
        yield
    finally:
        for signum in signums:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)


def run() -> None:
    """Entry point of the ``fluxbot`` console script and ``python -m bot``: ``fluxbot [run|check|invite|backup]``.

    ``run`` (or no command) starts the bot; the other commands are :mod:`bot.cli`'s and exit here.
    """
    from bot.cli import parse_command  # noqa: PLC0415 - the command line needs nothing of the running bot

    command = parse_command()
    if command.name != "run":
        raise SystemExit(command.execute())
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fluxbot: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(settings.log_level, [settings.discord_token, settings.flux_api_key], settings.log_format)
    try:
        asyncio.run(main(settings))
    except (KeyboardInterrupt, asyncio.CancelledError):  # a signal while starting cancels main()
        log.info("stopped")
    except discord.LoginFailure:
        print(
            "fluxbot: Discord refused DISCORD_TOKEN; copy the bot token again from the developer portal",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG) from None
    except discord.PrivilegedIntentsRequired:
        print(
            "fluxbot: Discord refused the Message Content intent; switch on Bot > Privileged Gateway Intents > "
            "Message Content Intent in the developer portal, or set MESSAGE_CONTENT_INTENT=false",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG) from None
    except discord.ConnectionClosed as exc:  # a gateway close that retrying cannot fix (4004, 4013, ...)
        reason = exc.reason or GATEWAY_CLOSE_REASONS.get(exc.code or 0, "no reason given")
        print(f"fluxbot: Discord closed the gateway connection with code {exc.code}: {reason}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except discord.HTTPException as exc:  # a refusal that retrying cannot fix (403, 404, ...)
        print(
            f"fluxbot: Discord refused to start the bot: HTTP {exc.status} {exc.text or ''}".rstrip(), file=sys.stderr
        )
        raise SystemExit(EXIT_CONFIG) from None
    except OSError as exc:  # e.g. the METRICS_LISTEN port is taken; the message names the setting
        print(f"fluxbot: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


if __name__ == "__main__":
    run()
