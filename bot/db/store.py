"""The store every repository function takes: one interface over SQLite and PostgreSQL.

:class:`Store` is what ``bot.db.jobs``, ``usage``, ``guilds`` and ``retention`` are written against, so the
bot runs unchanged on a SQLite file (one process: :class:`~bot.db.sqlite.SqliteStore`) or on a PostgreSQL
server shared by several processes (:class:`~bot.db.postgres.PostgresStore`). Repository SQL uses ``?`` or
``:name`` parameters on both; where the dialects differ it asks :meth:`Store.pick` for its own text.

Rows are ``sqlite3.Row`` or ``asyncpg.Record``: both answer ``row[0]`` and ``row["column"]``, which is all
the repository code uses (:class:`Row`).
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self

from bot.db.days import utc_day

__all__ = [
    "Dialect",
    "Params",
    "Reader",
    "Row",
    "Store",
    "StoreBusyError",
    "StoreConnectError",
    "StoreUnavailableError",
    "Transaction",
    "lock_key",
]

#: The SQL dialects a store speaks.
Dialect = Literal["sqlite", "postgresql"]

#: Positional (``?``) or named (``:name``) SQL parameters.
Params = Sequence[object] | Mapping[str, object]


class Row(Protocol):
    """One result row: by position (``row[0]``) or by column name (``row["status"]``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class StoreBusyError(Exception):
    """The database could not take the write now (locked, connection lost, serialisation failure...).

    Nothing was written; the same write can be tried again later — the job runner does, on its next tick.
    """


class StoreUnavailableError(StoreBusyError):
    """The database server cannot serve the statement now: unreachable or restarting, out of connections, the
    connection lost, a serialisation failure or deadlock, a statement past its timeout.

    Like any :class:`StoreBusyError` it means "try again later". One case differs in what it promises: when the
    connection was lost while a statement of its own ran, the statement may have committed.
    """


class StoreConnectError(Exception):
    """The database refused the connection for a reason that waiting will not fix: a wrong password, an
    unknown database or user, a malformed URL. The message never holds the password."""


class Reader(Protocol):
    """Anything that runs queries: the :class:`Store` itself, or a :class:`Transaction` inside it."""

    async def fetch_one(self, sql: str, params: Params = ...) -> Row | None: ...

    async def fetch_all(self, sql: str, params: Params = ...) -> list[Row]: ...


class Transaction(abc.ABC):
    """The statements of one write transaction; only valid inside ``async with store.transaction()``."""

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run one statement (a SELECT or a ``... RETURNING``) and return its first row."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement (a SELECT or a ``... RETURNING``) and return all its rows."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""

    @abc.abstractmethod
    async def lock(self, name: str) -> None:
        """Serialise this transaction, until it ends, with every other one that locks the same ``name``.

        For read-then-write decisions that must hold across processes (a quota): on PostgreSQL an advisory
        transaction lock; on SQLite nothing, since its write transactions already exclude each other.
        """


class Store(abc.ABC):
    """The bot's database. Open one with :func:`bot.db.open_store` (or a subclass's ``open``); close it."""

    #: Which SQL dialect this store speaks (for :meth:`pick`).
    dialect: ClassVar[Dialect]

    def __init__(self, clock: Callable[[], float], schema_version: int) -> None:
        self._clock = clock
        self._schema_version = schema_version

    @property
    def schema_version(self) -> int:
        """The schema version the database is at (each dialect numbers its own migrations)."""
        return self._schema_version

    def now(self) -> float:
        """The current time in unix seconds, from the store's clock."""
        return self._clock()

    def today(self) -> str:
        """Today's UTC date (``YYYY-MM-DD``), from the store's clock: the key of daily usage."""
        return utc_day(self._clock())

    def pick(self, *, sqlite: str, postgresql: str) -> str:
        """The SQL text written for this store's dialect, where the two cannot share one text."""
        return sqlite if self.dialect == "sqlite" else postgresql

    @abc.abstractmethod
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run one read-only statement outside a transaction and return its first row."""

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read-only statement and return all its rows (only committed data is visible)."""

    @abc.abstractmethod
    async def write_alone(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one writing statement as a transaction of its own and return its rows (``... RETURNING``)."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with store.transaction() as tx:`` — commit at the end, roll back on any exception."""

    @abc.abstractmethod
    async def notify(self, channel: str, payload: str = "") -> None:
        """Tell every listener of ``channel`` (in every process sharing the database, where it can)."""

    @abc.abstractmethod
    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for each :meth:`notify` on ``channel`` from now until :meth:`close`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Wait for running work, then release the connection(s)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def lock_key(name: str) -> int:
    """A stable signed 64-bit number for ``name``: the same in every process and Python version (unlike
    ``hash()``), as PostgreSQL's advisory locks need."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
