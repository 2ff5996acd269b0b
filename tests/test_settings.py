"""Settings: the documented variable names, secrets that stay secret, and a clear start-up failure."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.logs import RedactingFormatter
from bot.settings import Provider, Settings, SettingsError, load_settings

FLUXBOT = Path(sys.executable).with_name("fluxbot")
REQUIRED = {"DISCORD_TOKEN": "discord-secret-value", "FLUX_API_KEY": "flux-secret-value"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with none of the bot's variables set, in a folder without a .env file."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("command", [[str(FLUXBOT)], [sys.executable, "-m", "bot"]])
def test_starting_without_configuration_names_every_missing_variable_and_exits_2(
    tmp_path: Path, command: list[str]
) -> None:
    result = subprocess.run(
        command, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DISCORD_TOKEN" in lines[0]
    assert "FLUX_API_KEY" in lines[0]
    assert "Traceback" not in result.stderr


def test_defaults_follow_the_documented_table(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.flux_provider is Provider.ACEDATA
    assert settings.api_base == "https://api.acedata.cloud"
    assert settings.database_path == Path("data/fluxbot.db")
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.discord_gateway_url == "wss://gateway.discord.gg/"
    assert (settings.flux_poll_interval, settings.flux_job_timeout, settings.flux_max_concurrency) == (5, 600, 8)
    assert (settings.callback_public_url, settings.callback_listen, settings.log_level) == (
        None,
        "0.0.0.0:8080",
        "INFO",
    )
    assert (settings.default_user_daily, settings.default_guild_daily) == (25, 250)
    assert (settings.default_user_monthly, settings.default_guild_monthly) == (0, 0)  # no monthly limit


def test_a_negative_monthly_default_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="DEFAULT_USER_MONTHLY"):
        load_settings(**REQUIRED, DEFAULT_USER_MONTHLY="-1")
    assert load_settings(**REQUIRED, DEFAULT_GUILD_MONTHLY="5000").default_guild_monthly == 5000


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-file\nFLUX_API_KEY=key-from-file\nFLUX_PROVIDER=bfl\n")

    settings = load_settings()

    assert settings.discord_token.get_secret_value() == "from-file"
    assert settings.api_base == "https://api.bfl.ai"


def test_an_openai_relay_needs_its_base_url() -> None:
    with pytest.raises(SettingsError, match="FLUX_API_BASE is required"):
        load_settings(**REQUIRED, FLUX_PROVIDER="openai")

    settings = load_settings(**REQUIRED, FLUX_PROVIDER="openai", FLUX_API_BASE="https://relay.example/")
    assert settings.api_base == "https://relay.example"


def test_bad_values_are_named_without_echoing_secrets() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**REQUIRED, FLUX_PROVIDER="midjourney", FLUX_MAX_CONCURRENCY="0")

    message = str(caught.value)
    assert "FLUX_PROVIDER" in message
    assert "FLUX_MAX_CONCURRENCY" in message
    assert all(secret not in message for secret in REQUIRED.values())


def test_secrets_never_appear_in_reprs_or_logs() -> None:
    settings = load_settings(**REQUIRED)
    assert all(secret not in repr(settings) and secret not in str(settings) for secret in REQUIRED.values())

    formatter = RedactingFormatter("%(message)s", [settings.discord_token, settings.flux_api_key])
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "sent %s to %s", ("flux-secret-value", "x"), None)
    assert formatter.format(record) == "sent [redacted] to x"


def test_postgresql_url_is_accepted_and_its_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://fluxbot:hunter2-secret@db.internal:5432/fluxbot")
    settings = load_settings(discord_token="t", flux_api_key="k")
    assert settings.uses_postgresql
    assert settings.database_shown == "postgresql://fluxbot:***@db.internal:5432/fluxbot"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    with pytest.raises(ValueError, match="sqlite"):
        _ = settings.database_path


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0,1", (0, 1)), ("0-3", (0, 1, 2, 3)), ("3, 0-1", (0, 1, 3)), ("2-2", (2,)), ("", None)],
)
def test_shard_ids_take_lists_and_ranges(monkeypatch: pytest.MonkeyPatch, value: str, expected: object) -> None:
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("SHARD_IDS", value)
    settings = load_settings(discord_token="t", flux_api_key="k")
    assert settings.shard_count == 4
    assert settings.shard_ids == expected


@pytest.mark.parametrize(("value", "why"), [("4", "numbers them 0 to 3"), ("3-1", "backwards"), ("a", "ranges")])
def test_bad_shard_ids_are_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, value: str, why: str) -> None:
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("SHARD_IDS", value)
    with pytest.raises(SettingsError, match=why):
        load_settings(discord_token="t", flux_api_key="k")
