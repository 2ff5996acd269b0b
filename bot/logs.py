"""Logging for the bot: configured once, as text or one JSON object per line, with secrets scrubbed from
every record in both formats."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "JOB_FIELDS",
    "JobContextFilter",
    "JsonLogFormatter",
    "RedactingFormatter",
    "bind_job",
    "configure_logging",
    "job_context",
    "unbind_job",
]

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: The fields a line about a job carries in the JSON format (taken from the job being handled).
JOB_FIELDS = ("job_id", "guild_id", "user_id")

#: Interaction and webhook tokens (valid for 15 minutes, enough to answer as the bot) as they appear in the
#: text of library logs: in REST paths, and as a ``token`` or ``…_token`` field of a logged payload (discord.py
#: logs gateway events, aiosqlite the parameters of every statement).
_TOKEN_PATTERNS = (
    re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+"),
    re.compile(r"""(['"]\w*token['"]\s*:\s*['"])[^'"]+"""),
)


class _Scrubber:
    """Removes secret values and interaction or webhook tokens from text."""

    def __init__(self, secrets: Iterable[SecretStr]) -> None:
        self._secrets = [value for secret in secrets if len(value := secret.get_secret_value()) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(rf"\g<1>{REDACTED}", text)
        return text


class RedactingFormatter(logging.Formatter):
    """Replaces every secret value in the formatted line (message, arguments and traceback alike), and
    every interaction or webhook token (discord.py logs gateway payloads and request URLs at DEBUG).

    The bot never logs a secret on purpose; this is the belt to those braces, for text from libraries.
    """

    def __init__(self, fmt: str, secrets: Iterable[SecretStr]) -> None:
        super().__init__(fmt)
        self._scrub = _Scrubber(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))


class JsonLogFormatter(JsonFormatter):
    """One JSON object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, any ``extra``
    fields (``job_id``, ``guild_id``, ``user_id`` for a line about a job), and ``exc_info`` for a traceback.

    Every string in the object is scrubbed like the text format's lines, before it is serialized.
    """

    def __init__(self, secrets: Iterable[SecretStr]) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
        self._scrub = _Scrubber(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: self._scrubbed(value) for key, value in log_data.items()}

    def _scrubbed(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list | tuple):
            return [self._scrubbed(item) for item in value]
        if isinstance(value, dict):
            return {key: self._scrubbed(item) for key, item in value.items()}
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._scrub(str(value))  # anything else is written as its text, so scrub that


# -- which job a line is about --------------------------------------------------------------------------


class _JobLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def guild_id(self) -> int: ...
    @property
    def user_id(self) -> int: ...


_current_job: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("fluxbot_job", default=None)


def bind_job(job: _JobLike) -> contextvars.Token[dict[str, int] | None]:
    """Mark the lines logged from here on (in this task, and tasks it starts) as about ``job``.

    Undo with :func:`unbind_job`; a task that handles one job only may leave it bound until it ends.
    """
    return _current_job.set({"job_id": job.id, "guild_id": job.guild_id, "user_id": job.user_id})


def unbind_job(token: contextvars.Token[dict[str, int] | None]) -> None:
    _current_job.reset(token)


@contextlib.contextmanager
def job_context(job: _JobLike) -> Iterator[None]:
    """``with job_context(job):`` — the lines logged inside are about ``job``."""
    token = bind_job(job)
    try:
        yield
    finally:
        unbind_job(token)


class JobContextFilter(logging.Filter):
    """Adds ``job_id``, ``guild_id`` and ``user_id`` to records logged while a job is bound (unless the
    call passed its own in ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current_job.get()
        if fields is not None:
            for name, value in fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def configure_logging(level: str, secrets: Iterable[SecretStr], log_format: str = "text") -> None:
    """Log to standard error at ``level``, as ``text`` lines or ``json`` objects, scrubbing ``secrets``."""
    secrets = list(secrets)
    handler = logging.StreamHandler()
    formatter: logging.Formatter = (
        JsonLogFormatter(secrets) if log_format.lower() == "json" else RedactingFormatter(TEXT_FORMAT, secrets)
    )
    handler.setFormatter(formatter)
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("discord.http").setLevel(max(root.level, logging.INFO))
