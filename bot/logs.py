"""Logging for the bot: configured once, with secrets scrubbed from every record."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from pydantic import SecretStr

__all__ = ["RedactingFormatter", "configure_logging"]

REDACTED = "[redacted]"

#: Interaction and webhook tokens (valid for 15 minutes, enough to answer as the bot) as they appear in the
#: text of library logs: in REST paths, and as a ``token`` or ``…_token`` field of a logged payload (discord.py
#: logs gateway events, aiosqlite the parameters of every statement).
_TOKEN_PATTERNS = (
    re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+"),
    re.compile(r"""(['"]\w*token['"]\s*:\s*['"])[^'"]+"""),
)


class RedactingFormatter(logging.Formatter):
    """Replaces every secret value in the formatted line (message, arguments and traceback alike), and
    every interaction or webhook token (discord.py logs gateway payloads and request URLs at DEBUG).

    The bot never logs a secret on purpose; this is the belt to those braces, for text from libraries.
    """

    def __init__(self, fmt: str, secrets: Iterable[SecretStr]) -> None:
        super().__init__(fmt)
        self._secrets = [value for secret in secrets if len(value := secret.get_secret_value()) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            line = pattern.sub(rf"\g<1>{REDACTED}", line)
        return line


def configure_logging(level: str, secrets: Iterable[SecretStr]) -> None:
    """Log to standard error at ``level``, scrubbing ``secrets``."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("discord.http").setLevel(max(root.level, logging.INFO))
