"""Running the real fluxbot — built by the same ``open_bot`` that ``fluxbot`` uses — against both emulators."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bot.app import FluxBot, open_bot
from bot.settings import Settings, load_settings
from tests.conftest import KEY
from tests.fakediscord import Channel, DiscordEmulator, Interaction, Member, Message, run_bot
from tests.fakediscord.fixtures import World
from tests.fluxemu import FluxEmulator

#: discord.py waits this long after the last GUILD_CREATE before it is ready (2 s by default).
TEST_GUILD_READY_TIMEOUT = 0.1


def fluxbot_environment(
    discord: DiscordEmulator, flux: FluxEmulator, database: Path, **overrides: str
) -> dict[str, str]:
    """The environment variables that point a fluxbot at the two emulators."""
    return {
        **discord.env(),
        "FLUX_API_KEY": KEY,
        "FLUX_API_BASE": flux.base_url,
        "DATABASE_URL": f"sqlite:///{database}",
        # The fake Discord serves attachments and embed images (its media proxy) from its own host:port.
        "DISCORD_MEDIA_HOSTS": f"{discord.host}:{discord.port}",
        "FLUX_POLL_INTERVAL": "0.05",
        # No quota unless a test sets one: tests of other features fire many requests as one member.
        "DEFAULT_USER_DAILY": "0",
        "DEFAULT_GUILD_DAILY": "0",
        "DEFAULT_MAX_CONCURRENT": "0",
        **overrides,
    }


@dataclass
class FluxbotHarness:
    """Starts (and restarts) the real bot for one test; ``world`` is the Discord side, ``flux`` the vendor."""

    world: World
    flux: FluxEmulator
    database: Path

    @property
    def discord(self) -> DiscordEmulator:
        return self.world.emu

    def settings(self, **overrides: str) -> Settings:
        return load_settings(**fluxbot_environment(self.discord, self.flux, self.database, **overrides))

    def with_database(self, database: Path) -> FluxbotHarness:
        """The same Discord and Flux vendor with another database: a second bot process of its own."""
        return replace(self, database=database)

    def running(self, **overrides: str) -> AbstractAsyncContextManager[FluxBot]:
        """``async with harness.running() as bot:`` — the bot online, its commands synced."""
        settings = self.settings(**overrides)
        return run_bot(self.discord, lambda: open_bot(settings, guild_ready_timeout=TEST_GUILD_READY_TIMEOUT))


@pytest.fixture
def fluxbot(
    discord_world: World, flux_emulator: FluxEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FluxbotHarness:
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    return FluxbotHarness(discord_world, flux_emulator, tmp_path / "data" / "fluxbot.db")


def is_result(message: Message) -> bool:
    """A result the bot posted for everyone: a regular message with images."""
    return bool(message.attachments) and not message.ephemeral


def results_in(channel: Channel) -> list[Message]:
    """The results in ``channel`` that are still there."""
    return [m for m in channel.messages.values() if is_result(m) and not m.deleted]


def settled(inter: Interaction) -> bool:
    """Done, failed or refused: anything but a progress line."""
    text = status_line(inter)
    return bool(text) and not text.startswith(("⏳", "🎨"))


async def ask(who: Member, fluxbot: FluxbotHarness, command: str, **options: object) -> str:
    """``who`` runs ``command`` in the world's channel; its (ephemeral) answer, sent at once."""
    inter = await who.slash(fluxbot.world.channel, command, **options)
    return (await inter.wait_response()).content


def status_line(inter: Interaction) -> str:
    """What the member sees now in their deferred (ephemeral) response: the status line or a refusal."""
    return inter.original.content if inter.original is not None and not inter.original.loading else ""
