"""Logging for the bot: configured once, with secrets scrubbed from every record."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import SecretStr

__all__ = ["RedactingFormatter", "configure_logging"]

REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    """Replaces every secret value in the formatted line (message, arguments and traceback alike).

    The bot never logs a secret on purpose; this is the belt to those braces, for text from libraries.
    """

    def __init__(self, fmt: str, secrets: Iterable[SecretStr]) -> None:
        super().__init__(fmt)
        self._secrets = [value for secret in secrets if len(value := secret.get_secret_value()) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


def configure_logging(level: str, secrets: Iterable[SecretStr]) -> None:
    """Log to standard error at ``level``, scrubbing ``secrets``."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("discord.http").setLevel(max(root.level, logging.INFO))
