"""The SQLite store: opening, migrating, and serialising write transactions on one file.

One :class:`SqliteStore` holds one aiosqlite connection shared by every coroutine of the bot. SQLite has one
transaction per connection, so two coroutines must never interleave statements of their transactions:
:meth:`SqliteStore.transaction` holds an :class:`asyncio.Lock` from ``BEGIN IMMEDIATE`` to ``COMMIT``, and the
read helpers take the same lock so they never see another coroutine's uncommitted work. Between
processes (or several stores on one file) ``BEGIN IMMEDIATE`` plus ``busy_timeout`` make
writers queue up inside SQLite instead of failing; a write that still meets the lock (another connection
held it for longer than ``busy_timeout``) is tried again for up to ``busy_window`` seconds, and only then
raises :class:`~bot.db.store.StoreBusyError` — a normal condition that callers retry later, not a crash.

Notifications (:meth:`SqliteStore.notify`) stay inside this process: a SQLite file serves one bot process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar, Self, TypeVar

import aiosqlite

from bot.db.schema import Migration, MigrationError, load_migrations, pending
from bot.db.store import Dialect, Params, Row, Store, StoreBusyError, Transaction

__all__ = ["BUSY_TIMEOUT_MS", "BUSY_WINDOW", "SqliteStore", "SqliteTransaction"]

log = logging.getLogger(__name__)

#: How long one attempt to start a write transaction waits inside SQLite for another connection's.
BUSY_TIMEOUT_MS = 5000
#: How long, in all, a write keeps trying to start before :class:`StoreBusyError`.
BUSY_WINDOW = 30.0
_BUSY_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_T = TypeVar("_T")


class SqliteTransaction(Transaction):
    """The statements of one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the store's connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement (a SELECT or a ``... RETURNING``) and return all its rows."""
        return list(await self._conn.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""
        cursor = await self._conn.execute(sql, params)
        try:
            return cursor.rowcount
        finally:
            await cursor.close()

    async def lock(self, name: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already made this the only write transaction on the file."""


class SqliteStore(Store):
    """The bot's database in a SQLite file. Create it with ``await SqliteStore.open(path)``; :meth:`close` it."""

    dialect: ClassVar[Dialect] = "sqlite"

    def __init__(
        self,
        conn: aiosqlite.Connection,
        clock: Callable[[], float],
        schema_version: int,
        busy_window: float = BUSY_WINDOW,
    ) -> None:
        """Wrap an open, migrated connection; use :meth:`open` rather than calling this directly."""
        super().__init__(clock, schema_version)
        self._conn = conn
        self._listeners: dict[str, list[Callable[[str], None]]] = {}
        self._busy_window = busy_window
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] | None = None,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        busy_window: float = BUSY_WINDOW,
    ) -> Self:
        """Open (creating if needed) the database at ``path`` and apply pending migrations.

        ``clock`` returns unix seconds and is the only source of time for timestamps and usage days.
        ``migrations`` defaults to the files shipped in ``bot/db/migrations``. ``busy_timeout_ms`` is how long one
        attempt waits inside SQLite for another connection's write transaction, ``busy_window`` how long a
        write keeps trying in all before :class:`StoreBusyError`.
        Raises :class:`~bot.db.schema.SchemaTooNewError` if the file is newer than this code.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        known = list(migrations) if migrations is not None else load_migrations()
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
            rows = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
            if str(rows[0][0]).lower() != "wal":
                raise MigrationError(f"could not switch {path} to WAL journal mode (got {rows[0][0]!r})")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
            version = await _migrate(conn, known, path, busy_window)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, clock, version, busy_window)

    async def close(self) -> None:
        """Wait for the running transaction, if any, then close the connection."""
        self._listeners.clear()
        async with self._lock:
            await self._conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``async with store.transaction() as tx:`` - one ``BEGIN IMMEDIATE`` ... ``COMMIT``.

        Any exception (or cancellation) inside the block rolls the transaction back. Transactions do not
        nest; inside one, use ``tx`` for every statement (the store's read helpers also work). Raises
        :class:`StoreBusyError`, before the block runs, when another connection keeps the write lock.
        """
        if self._owns_lock():
            raise RuntimeError("store transactions do not nest; use the Transaction you already have")
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                try:
                    await _begin_immediate(self._conn, self._busy_window)
                    yield SqliteTransaction(self._conn)
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
            finally:
                self._owner = None

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run one read-only statement outside a transaction and return its first row."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read-only statement and return all its rows (only committed data is visible)."""
        if self._owns_lock():
            return list(await self._conn.execute_fetchall(sql, params))
        async with self._lock:
            return list(await self._conn.execute_fetchall(sql, params))

    async def write_alone(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one writing statement as a transaction of its own and return its rows (``... RETURNING``).

        Outside ``BEGIN`` ... ``COMMIT`` SQLite makes each statement atomic, and a writing statement takes the
        write lock before it reads anything, so an ``INSERT ... SELECT ... WHERE`` decides and writes as one,
        like a :meth:`transaction` would, in one trip to the connection's thread instead of four, and holds the
        write lock only while it runs. Waits for another connection's lock like :meth:`transaction`, and raises
        :class:`StoreBusyError` (nothing written) if it stays locked; not for use inside a transaction.
        """
        if self._owns_lock():
            raise RuntimeError("write_alone is a transaction of its own; inside one, use the Transaction")
        async with self._lock:
            rows = await _while_locked(lambda: self._conn.execute_fetchall(sql, params), self._busy_window)
        return list(rows)

    async def notify(self, channel: str, payload: str = "") -> None:
        """Call this store's listeners of ``channel`` now (a SQLite file serves one process, so no one else
        listens). A listener that raises is logged and does not stop the others."""
        for callback in list(self._listeners.get(channel, ())):
            try:
                callback(payload)
            except Exception:
                log.exception("a listener of %r failed", channel)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for every :meth:`notify` on ``channel`` from this store."""
        self._listeners.setdefault(channel, []).append(callback)

    def _owns_lock(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()

    async def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (SQLITE_FULL, SQLITE_BUSY on BEGIN, ...).
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._conn.execute("ROLLBACK")


async def _begin_immediate(conn: aiosqlite.Connection, busy_window: float) -> None:
    """``BEGIN IMMEDIATE``, tried again while another connection holds the write lock, for up to
    ``busy_window`` seconds in all; then :class:`StoreBusyError`."""
    await _while_locked(lambda: conn.execute("BEGIN IMMEDIATE"), busy_window)


async def _while_locked(start: Callable[[], Awaitable[_T]], busy_window: float) -> _T:
    """``start()``, tried again while it meets another connection's write lock (each try already waits
    ``busy_timeout`` inside SQLite), for up to ``busy_window`` seconds in all; then :class:`StoreBusyError`.
    Only for statements that write nothing when they meet the lock: ``BEGIN``, or one statement alone."""
    deadline = time.monotonic() + busy_window
    for attempt in itertools.count():
        try:
            return await start()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _BUSY_CODES:
                raise
            if time.monotonic() >= deadline:
                raise StoreBusyError(f"the database stayed locked by another connection for {busy_window:g} s") from exc
            log.warning("the database is locked by another connection; trying again (attempt %d)", attempt + 1)
        await asyncio.sleep(_BUSY_RETRY_DELAYS[min(attempt, len(_BUSY_RETRY_DELAYS) - 1)])
    raise AssertionError("itertools.count() never ends")


async def _migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration], path: Path, busy_window: float) -> int:
    """Apply the pending migrations and set ``user_version`` in one transaction; return the version."""
    await _begin_immediate(conn, busy_window)  # taken before reading the version: two processes can't both migrate
    try:
        rows = list(await conn.execute_fetchall("PRAGMA user_version"))
        current = int(rows[0][0])
        todo = pending(migrations, current)
        for migration in todo:
            log.info("applying migration %04d_%s to %s", migration.version, migration.name, path)
            for statement in migration.statements():
                try:
                    await conn.execute(statement)
                except sqlite3.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
                    ) from exc
        if todo:
            await conn.execute(f"PRAGMA user_version = {todo[-1].version:d}")
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    return todo[-1].version if todo else current
