"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order in one transaction.

Each database keeps its own series: SQLite's files in ``migrations/``, PostgreSQL's in
``migrations/postgresql/`` (numbered from 1 on their own; its 0001 is SQLite's schema after 0006). A SQLite
file records the version it is at in ``PRAGMA user_version``, a PostgreSQL database in its table
``schema_migrations``. Opening a database applies every newer migration and records the version in the same
transaction, so a failure leaves it exactly as it was.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["Migration", "MigrationError", "SchemaTooNewError", "load_migrations", "split_statements"]

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")


class MigrationError(Exception):
    """The migration files are inconsistent, or one of them failed to apply."""


class SchemaTooNewError(MigrationError):
    """The database was written by a newer fluxbot than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database is at schema version {found}, but this fluxbot only knows versions up to {known}; "
            "upgrade fluxbot (or restore a backup) instead of running an older version against it"
        )
        self.found = found
        self.known = known


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: the schema version it produces, its name and its SQL."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's SQL split into single statements."""
        return split_statements(self.sql)


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """Read the migration files (default: the ones shipped in ``bot/db/migrations``), in version order.

    Versions must run 1, 2, 3... without gaps or duplicates; other files are ignored.
    """
    folder = directory if directory is not None else files(__package__) / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is not None:
            found.append(Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    check_sequence(found)
    return found


def check_sequence(migrations: Iterable[Migration]) -> None:
    """Raise :class:`MigrationError` unless the versions are exactly 1, 2, 3... in order."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql is out of sequence: "
                f"expected version {expected}"
            )


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (``executescript`` would commit, so we can't use it).

    Uses :func:`sqlite3.complete_statement`, so semicolons inside strings, comments and trigger bodies are
    handled. Comment-only remainders are dropped; an unterminated statement is an error. SQLite only:
    PostgreSQL runs each of its files whole, ``$$`` function bodies and all.
    """
    statements: list[str] = []
    start = 0
    for position, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : position + 1]):
            statement = script[start : position + 1].strip()
            if _has_code(statement):
                statements.append(statement)
            start = position + 1
    rest = script[start:]
    if _has_code(rest):
        raise MigrationError(f"incomplete SQL statement at the end of a migration: {rest.strip()[:80]!r}")
    return statements


def _has_code(sql: str) -> bool:
    """True unless ``sql`` is only whitespace, ``;`` and ``--`` comments."""
    for line in sql.splitlines():
        code = line.strip()
        if code and not code.startswith("--") and code != ";":
            return True
    return False


def pending(migrations: Sequence[Migration], current: int) -> list[Migration]:
    """The migrations newer than ``current``; :class:`SchemaTooNewError` if the database is ahead."""
    check_sequence(migrations)
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise SchemaTooNewError(current, known)
    return [migration for migration in migrations if migration.version > current]
