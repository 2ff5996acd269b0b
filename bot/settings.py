"""Runtime configuration, read from the environment and an optional ``.env`` file.

The variable names are part of the bot's public interface: operators and deployment tools rely on them,
so they are spelled out here exactly as the README documents them.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.images import DEFAULT_MEDIA_HOSTS, MediaHosts

__all__ = ["Provider", "Settings", "SettingsError", "listen_address", "load_settings", "parse_shard_ids", "redact_url"]


class Provider(StrEnum):
    ACEDATA = "acedata"
    OPENAI = "openai"
    BFL = "bfl"


DEFAULT_API_BASES: dict[Provider, str] = {
    Provider.ACEDATA: "https://api.acedata.cloud",
    Provider.BFL: "https://api.bfl.ai",
}


class Settings(BaseSettings):
    """Everything the bot can be configured with. Secrets are :class:`SecretStr` and never printed."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
    )

    discord_token: SecretStr = Field(alias="DISCORD_TOKEN")
    flux_api_key: SecretStr = Field(alias="FLUX_API_KEY")
    flux_provider: Provider = Field(Provider.ACEDATA, alias="FLUX_PROVIDER")
    flux_api_base: str | None = Field(None, alias="FLUX_API_BASE")
    # sqlite:///path (one process) or postgresql://user:password@host:port/db (several); holds a password.
    database_url: SecretStr = Field(SecretStr("sqlite:///data/fluxbot.db"), alias="DATABASE_URL")
    discord_api_base: str = Field("https://discord.com/api/v10", alias="DISCORD_API_BASE")
    discord_gateway_url: str = Field("wss://gateway.discord.gg/", alias="DISCORD_GATEWAY_URL")
    flux_poll_interval: float = Field(5.0, gt=0, alias="FLUX_POLL_INTERVAL")
    flux_job_timeout: float = Field(600.0, gt=0, alias="FLUX_JOB_TIMEOUT")
    flux_max_concurrency: int = Field(8, ge=1, alias="FLUX_MAX_CONCURRENCY")
    delivery_retry_window: float = Field(900.0, ge=0, alias="DELIVERY_RETRY_WINDOW")
    # Days a finished job is kept before it is pruned (daily usage totals are kept regardless); 0 keeps all.
    job_retention_days: float = Field(90.0, ge=0, alias="JOB_RETENTION_DAYS")
    callback_public_url: str | None = Field(None, alias="CALLBACK_PUBLIC_URL")
    callback_listen: str = Field("0.0.0.0:8080", alias="CALLBACK_LISTEN")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_format: str = Field("text", alias="LOG_FORMAT")
    # host:port for GET /healthz and GET /metrics; unset: not served.
    metrics_listen: str | None = Field(None, alias="METRICS_LISTEN")
    message_content_intent: bool = Field(True, alias="MESSAGE_CONTENT_INTENT")
    edit_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, alias="EDIT_MAX_BYTES")
    # Where member images may be downloaded from: host or host:port, separated by spaces or commas.
    discord_media_hosts: Annotated[MediaHosts, NoDecode] = Field(
        MediaHosts.parse(DEFAULT_MEDIA_HOSTS), alias="DISCORD_MEDIA_HOSTS"
    )
    # Limits every server starts with (admins change them with /limits); 0 means no limit.
    default_user_daily: int = Field(25, ge=0, alias="DEFAULT_USER_DAILY")
    default_guild_daily: int = Field(250, ge=0, alias="DEFAULT_GUILD_DAILY")
    default_user_monthly: int = Field(0, ge=0, alias="DEFAULT_USER_MONTHLY")
    default_guild_monthly: int = Field(0, ge=0, alias="DEFAULT_GUILD_MONTHLY")
    default_max_count: int = Field(4, ge=1, le=4, alias="DEFAULT_MAX_COUNT")
    default_max_concurrent: int = Field(3, ge=0, alias="DEFAULT_MAX_CONCURRENT")
    default_cooldown: float = Field(0.0, ge=0, alias="DEFAULT_COOLDOWN")
    allow_dms: bool = Field(False, alias="ALLOW_DMS")
    # Discord shards: how many in all, and which of them this process runs ("0,1", "0-3"); unset: all of them.
    shard_count: int | None = Field(None, ge=1, alias="SHARD_COUNT")
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = Field(None, alias="SHARD_IDS")
    # Seconds a process's claims on jobs last unless renewed: how soon live processes take over a dead one's work.
    work_lease: float = Field(15.0, ge=1, le=600, alias="WORK_LEASE_SECONDS")
    dm_user_daily: int = Field(10, ge=0, alias="DM_USER_DAILY")

    @field_validator("flux_provider", mode="before")
    @classmethod
    def _provider_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be a logging level name ({', '.join(_LOG_LEVELS)}), not {value!r}")
        return level

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if not _is_postgresql(url):
            _sqlite_path(url)
        return SecretStr(url)

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_list(cls, value: Any) -> Any:
        return parse_shard_ids(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _shards_within_the_count(self) -> Self:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS is set but SHARD_COUNT is not; set how many shards the bot has in all")
        beyond = [shard for shard in self.shard_ids if shard >= self.shard_count]
        if beyond:
            raise ValueError(
                f"SHARD_IDS names shard {beyond[0]}, but SHARD_COUNT={self.shard_count} numbers them "
                f"0 to {self.shard_count - 1}"
            )
        return self

    @field_validator("callback_listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        listen_address(value)
        return value

    @field_validator("flux_api_base", "discord_api_base", "callback_public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_url(value, ("http", "https"))

    @field_validator("discord_gateway_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        return _absolute_url(value, ("ws", "wss"))

    @model_validator(mode="after")
    def _callbacks_need_a_provider_that_sends_them(self) -> Self:
        if self.callback_public_url and self.flux_provider is not Provider.ACEDATA:
            raise ValueError(
                f"CALLBACK_PUBLIC_URL is set but FLUX_PROVIDER={self.flux_provider.value} sends no callbacks "
                "(only acedata does); unset CALLBACK_PUBLIC_URL"
            )
        return self

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        log_format = value.strip().lower()
        if log_format not in ("text", "json"):
            raise ValueError(f"must be text or json, not {value!r}")
        return log_format

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_host_and_port(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        listen_address(value.strip())
        return value.strip()

    @model_validator(mode="after")
    def _resolve_api_base(self) -> Self:
        if self.flux_api_base is None:
            if self.flux_provider is Provider.OPENAI:
                raise ValueError(
                    "FLUX_API_BASE is required when FLUX_PROVIDER=openai "
                    "(the part of the relay's URL before /v1/images/generations)"
                )
            self.flux_api_base = DEFAULT_API_BASES[self.flux_provider]
        self.flux_api_base = self.flux_api_base.rstrip("/")
        return self

    @property
    def api_base(self) -> str:
        """The provider's base URL, resolved from ``FLUX_API_BASE`` or the provider's default."""
        assert self.flux_api_base is not None  # set by the validator
        return self.flux_api_base

    @property
    def job_retention(self) -> float | None:
        """Seconds a finished job is kept (``JOB_RETENTION_DAYS``), or ``None`` to keep every job."""
        return self.job_retention_days * 86400 if self.job_retention_days > 0 else None

    @property
    def uses_postgresql(self) -> bool:
        """Whether ``DATABASE_URL`` names a PostgreSQL server rather than a SQLite file."""
        return _is_postgresql(self.database_url.get_secret_value())

    @property
    def database_path(self) -> Path:
        """The SQLite file named by ``DATABASE_URL`` (``sqlite:///relative`` or ``sqlite:////absolute``).

        ValueError when ``DATABASE_URL`` names a PostgreSQL server (see :attr:`uses_postgresql`).
        """
        return _sqlite_path(self.database_url.get_secret_value())

    @property
    def database_shown(self) -> str:
        """``DATABASE_URL`` fit for a log line: the SQLite file, or the server's URL with its password hidden."""
        url = self.database_url.get_secret_value()
        return redact_url(url) if _is_postgresql(url) else str(self.database_path)


def listen_address(value: str) -> tuple[str, int]:
    """The host and port of a ``host:port`` to listen on (``CALLBACK_LISTEN``, ``METRICS_LISTEN``); ValueError
    if it is not one."""
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port from 0 to 65535 (like 127.0.0.1:9100), not {value!r}")
    return host, int(port)


def parse_shard_ids(value: str) -> tuple[int, ...] | None:
    """``"0,1"``, ``"0-3"`` or ``"0-1, 4"`` as sorted, distinct shard ids; ``None`` for an empty value."""
    shards: set[int] = set()
    for part in value.replace(" ", "").split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"must be shard numbers and ranges like 0,1 or 0-3, not {value!r}")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"the range {part!r} runs backwards")
        shards.update(range(low, high + 1))
    return tuple(sorted(shards)) or None


def redact_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``: for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


_POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def _is_postgresql(url: str) -> bool:
    return url.lower().startswith(_POSTGRESQL_SCHEMES)


#: The level names LOG_LEVEL accepts, in any case.
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

_SQLITE_PREFIX = "sqlite:///"


def _sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:///`` URL, if the bot can create or open it there (nothing is created)."""
    if not url.startswith(_SQLITE_PREFIX):
        scheme = url.partition("://")[0] if "://" in url else url
        raise ValueError(
            "must be sqlite:///path (sqlite:///relative, sqlite:////absolute) or "
            f"postgresql://user:password@host:port/database, not {scheme!r}"
        )
    path = Path(url.removeprefix(_SQLITE_PREFIX))
    if not path.name:
        raise ValueError("names no file (expected sqlite:///path/to/fluxbot.db)")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a database file")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{str(ancestor)!r} is not a directory, so {str(path)!r} cannot be created")
    if not path.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{str(ancestor)!r} is not writable, so {str(path)!r} cannot be created")
    return path


def _absolute_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise ValueError(f"must be an absolute {' or '.join(s + '://' for s in schemes)} URL")
    return value.strip()


class SettingsError(Exception):
    """The configuration cannot be used; ``str()`` is one line fit for an operator's terminal."""


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line that names every bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        missing: list[str] = []
        invalid: list[str] = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            cause = error.get("ctx", {}).get("error")
            reason = str(cause) if isinstance(cause, ValueError) else error["msg"]
            if error["type"] == "missing":
                missing.append(name)
            else:
                invalid.append(f"{name}: {reason}" if name else reason)
        parts = []
        if missing:
            parts.append("missing required environment variables: " + ", ".join(missing))
        if invalid:
            parts.append("invalid settings: " + "; ".join(invalid))
        raise SettingsError("; ".join(parts)) from None
