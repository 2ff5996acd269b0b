"""Every setting is checked when the settings load, before anything is opened: a bad value is one line
naming the variable and exit status 2, never a traceback; good values in any spelling are accepted."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Provider, Settings, SettingsError, load_settings
from bot.startup import Backoff

FLUXBOT = Path(sys.executable).with_name("fluxbot")
REQUIRED = {"DISCORD_TOKEN": "discord-secret-value", "FLUX_API_KEY": "flux-secret-value"}


@pytest.fixture(autouse=True)
def in_an_empty_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No .env file is read, none of the bot's variables is set, and a relative DATABASE_URL lands in the
    test's folder."""
    monkeypatch.chdir(tmp_path)
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)


def start_fluxbot(cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    # Discord is a closed loopback port: a bot that got past the checks would only retry, never reach anyone.
    env = {
        "PATH": "/usr/bin:/bin",
        **REQUIRED,
        "DISCORD_API_BASE": "http://127.0.0.1:9/api/v10",
        "DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/gateway",
        **variables,
    }
    return subprocess.run([str(FLUXBOT)], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("LOG_LEVEL", "verbose", "logging level"),
        ("DATABASE_URL", "mysql://db.example/fluxbot", "postgresql://"),
        ("SHARD_IDS", "0-2", "SHARD_COUNT is not"),
        ("DATABASE_URL", "sqlite:///{tmp}", "is a directory"),
        ("DATABASE_URL", "sqlite:///{tmp}/a-file/fluxbot.db", "not a directory"),
        ("CALLBACK_LISTEN", "abc", "host:port"),
        ("CALLBACK_LISTEN", "0.0.0.0:65536", "host:port"),
        ("FLUX_POLL_INTERVAL", "0", "greater than 0"),
        ("FLUX_API_BASE", "api.acedata.cloud", "absolute http"),
        ("DISCORD_API_BASE", "ftp://discord.example/api", "absolute http"),
        ("DISCORD_GATEWAY_URL", "https://gateway.discord.gg", "absolute ws"),
        ("CALLBACK_PUBLIC_URL", "/callbacks", "absolute http"),
        ("FLUX_MAX_CONCURRENCY", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_stops_the_bot_with_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str, why: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = start_fluxbot(tmp_path, **{variable: value.format(tmp=tmp_path)})

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fluxbot: invalid settings: ") and variable in lines[0] and why in lines[0], lines
    assert "Traceback" not in result.stderr
    assert all(secret not in result.stderr for secret in REQUIRED.values())
    assert not (tmp_path / "data").exists()  # nothing was opened or created


def test_callbacks_with_a_provider_that_sends_none_are_refused(tmp_path: Path) -> None:
    result = start_fluxbot(
        tmp_path, FLUX_PROVIDER="bfl", CALLBACK_PUBLIC_URL="https://bot.example/callbacks", LOG_LEVEL="ERROR"
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "fluxbot: invalid settings: CALLBACK_PUBLIC_URL is set but FLUX_PROVIDER=bfl sends no callbacks "
        "(only acedata does); unset CALLBACK_PUBLIC_URL"
    ]


def test_good_values_are_accepted_in_any_case() -> None:
    settings = load_settings(
        **REQUIRED,
        FLUX_PROVIDER="BFL",
        LOG_LEVEL="debug",
        CALLBACK_LISTEN="[::]:0",
        DATABASE_URL="sqlite:///not/yet/there/fluxbot.db",
        FLUX_POLL_INTERVAL="0.05",
        DISCORD_GATEWAY_URL="WSS://gateway.discord.gg/",
    )

    assert settings.flux_provider is Provider.BFL
    assert settings.log_level == "DEBUG"
    assert settings.database_path == Path("not/yet/there/fluxbot.db")
    assert not Path("not").exists()  # checked, not created
    assert settings.flux_poll_interval == 0.05


def test_callbacks_are_kept_for_acedata() -> None:
    settings = load_settings(**REQUIRED, FLUX_PROVIDER="AceData", CALLBACK_PUBLIC_URL="https://bot.example/cb")

    assert settings.callback_public_url == "https://bot.example/cb"


def test_every_bad_variable_is_named_in_the_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**REQUIRED, LOG_LEVEL="loud", CALLBACK_LISTEN="8080", FLUX_POLL_INTERVAL="-1")

    message = str(caught.value)
    assert "\n" not in message
    assert all(name in message for name in ("LOG_LEVEL", "CALLBACK_LISTEN", "FLUX_POLL_INTERVAL")), message


def test_the_backoff_doubles_from_about_a_second_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial=1.0, cap=60.0, rng=random.Random(7))

    delays = [backoff.next() for _ in range(10)]

    ceilings = [min(60.0, 2.0**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert delays[-1] <= 60.0 and delays[-1] >= 30.0
    assert len(set(delays[-3:])) == 3  # jittered: bots restarted together do not retry in step
