"""The PostgreSQL store: one database shared by several fluxbot processes, through an asyncpg pool.

:class:`PostgresStore` speaks the same :class:`~bot.db.store.Store` interface as the SQLite store, so the
repository modules run on either. What differs, and why:

- **Parameters.** Repository SQL names parameters ``:name`` (with a dict) or ``?`` (positional), as SQLite
  does; PostgreSQL wants ``$1..$n``. :func:`rewrite_parameters` translates a statement once (cached by its text),
  leaving ``::type`` casts, string literals, quoted names, comments and ``$$`` bodies alone.
- **Transactions.** :meth:`PostgresStore.transaction` holds one pooled connection from ``BEGIN`` to ``COMMIT``
  (READ COMMITTED); other coroutines use other connections meanwhile. A read-then-write decision that must hold
  across processes takes :meth:`PostgresTransaction.lock` first (an advisory lock held until commit).
  :meth:`PostgresStore.write_alone` runs one statement on its own (autocommit).
- **Transient failures** — the server unreachable or restarting, too many connections, a lost connection, a
  serialisation failure or deadlock, a statement past its timeout — raise :class:`~bot.db.store.StoreUnavailableError`,
  a :class:`~bot.db.store.StoreBusyError`, which callers already treat as "try again later". Failures that are
  sure to have written nothing (connecting, a serialisation failure, a deadlock) are first tried again for up to
  ``busy_window`` seconds.
- **Every statement has a timeout**: the server ends one running past ``query_timeout`` (``statement_timeout``;
  migrations get ``migration_timeout``), and this side stops waiting a little later; so does taking a
  connection from the pool.
- **Secrets.** The URL's password never appears in a log line, an exception or a ``repr``: errors from the
  driver are re-raised with it replaced by ``***`` and without the original chained.
- **Migrations** are the files of ``bot/db/migrations/postgresql`` (numbered on their own), applied in one
  transaction under an advisory lock, their versions recorded in ``schema_migrations``, so processes that start
  together migrate once and the others wait, then find nothing to do.
- **Notifications** (:meth:`PostgresStore.notify`, :meth:`PostgresStore.listen`) are PostgreSQL's NOTIFY and LISTEN,
  so one process can wake another; listening has a connection of its own, opened again when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import quote, unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.db.schema import Migration, MigrationError, load_migrations, pending
from bot.db.store import (
    Dialect,
    Params,
    Row,
    Store,
    StoreBusyError,
    StoreConnectError,
    StoreUnavailableError,
    Transaction,
    lock_key,
)

__all__ = [
    "BUSY_WINDOW",
    "MIGRATION_TIMEOUT",
    "QUERY_TIMEOUT",
    "PostgresStore",
    "PostgresTransaction",
    "load_postgresql_migrations",
    "rewrite_parameters",
]

log = logging.getLogger(__name__)
#: What the server says besides results: notices at DEBUG, warnings at WARNING.
server_log = logging.getLogger(f"{__name__}.server")

#: Seconds one statement may run (or wait for a lock) before it is cancelled and StoreUnavailableError raised.
QUERY_TIMEOUT = 30.0
#: Seconds applying all pending migrations may take.
MIGRATION_TIMEOUT = 600.0
#: Seconds this side waits for a statement beyond the server's statement_timeout before giving up on it.
_CLIENT_MARGIN = 2.0
#: Seconds to open one connection.
CONNECT_TIMEOUT = 10.0
#: Seconds, in all, a statement sure to have written nothing is tried again before StoreUnavailableError.
BUSY_WINDOW = 30.0
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)
#: How long the listening connection waits before opening again after it was lost, at most.
_LISTEN_RETRY_MAX = 5.0

#: The advisory lock every process takes to migrate, so processes starting together migrate once.
MIGRATION_LOCK = "fluxbot:migrations"

#: SQLSTATEs of failures that guarantee the statement wrote nothing and may simply be tried again.
_RETRY_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "53300",  # too_many_connections
        "57P03",  # cannot_connect_now (the server is starting or shutting down)
    }
)
#: SQLSTATE classes and codes of failures that are the database's state, not the statement's fault.
_TRANSIENT_PREFIXES = ("08", "53", "57P")  # connection exceptions, insufficient resources, shutdown/crash
_TRANSIENT_STATES = _RETRY_STATES | {"57014"}  # query_canceled (statement_timeout)

_T = TypeVar("_T")


def load_postgresql_migrations() -> list[Migration]:
    """The PostgreSQL migration files shipped in ``bot/db/migrations/postgresql``, in version order."""
    return load_migrations(files("bot.db") / "migrations" / "postgresql")


# ---------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class Rewritten:
    """One statement in PostgreSQL's ``$n`` form, and how to order the caller's parameters for it."""

    sql: str
    #: The parameter names in ``$n`` order, for ``:name`` statements; ``None`` for ``?`` statements.
    names: tuple[str, ...] | None
    #: How many ``?`` the statement has (``?`` statements), or how many distinct names.
    count: int

    def arguments(self, params: Params) -> list[object]:
        """``params`` as the positional list asyncpg takes; ValueError if they do not fit the statement."""
        if self.names is not None:
            if not isinstance(params, Mapping):
                if not params and not self.names:
                    return []
                raise ValueError("this statement names its parameters (:name); pass a mapping")
            missing = [name for name in self.names if name not in params]
            if missing:
                raise ValueError(f"no value for the SQL parameter(s) {', '.join(':' + n for n in missing)}")
            return [params[name] for name in self.names]
        if isinstance(params, Mapping):
            if not params and not self.count:
                return []
            raise ValueError("this statement has positional parameters (?); pass a sequence")
        values = list(params)
        if len(values) != self.count:
            raise ValueError(f"the statement has {self.count} ? parameter(s) but {len(values)} value(s) were given")
        return values


_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@functools.lru_cache(maxsize=1024)
def rewrite_parameters(sql: str) -> Rewritten:
    """Translate ``:name`` or ``?`` parameters to PostgreSQL's ``$1..$n`` (cached per SQL text).

    A name used twice is one parameter. ``::type`` casts, ``'strings'``, ``"names"``, ``-- comments``,
    ``/* comments */`` and ``$tag$ bodies $tag$`` are left as they are. One statement may not mix the two
    styles (ValueError).
    """
    out: list[str] = []
    names: dict[str, int] = {}
    positional = 0
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in {"'", '"'}:
            end = _quoted_end(sql, i, char)
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = _block_comment_end(sql, i)
            out.append(sql[i:end])
            i = end
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, i)) is not None and not _follows_identifier(sql, i):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
            out.append(sql[i:end])
            i = end
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif char == ":" and i + 1 < n and _IDENT_START.match(sql[i + 1]):
            name = _IDENT.match(sql, i + 1)
            assert name is not None
            number = names.setdefault(name.group(0), len(names) + 1)
            out.append(f"${number}")
            i = name.end()
        elif char == "?":
            positional += 1
            out.append(f"${positional}")
            i += 1
        else:
            out.append(char)
            i += 1
    if names and positional:
        raise ValueError("an SQL statement uses both ? and :name parameters; use one style")
    if names:
        return Rewritten("".join(out), tuple(names), len(names))
    return Rewritten("".join(out), None if positional else (), positional)


def _quoted_end(sql: str, start: int, quote_char: str) -> int:
    """The index just past the string or quoted name opening at ``start`` (a doubled quote stays inside)."""
    escapes = quote_char == "'" and start > 0 and sql[start - 1] in "eE"
    i = start + 1
    while i < len(sql):
        if escapes and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote_char:
            if i + 1 < len(sql) and sql[i + 1] == quote_char:
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)


def _block_comment_end(sql: str, start: int) -> int:
    """The index just past the ``/* ... */`` comment opening at ``start`` (PostgreSQL nests them)."""
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def _follows_identifier(sql: str, position: int) -> bool:
    """Whether the ``$`` at ``position`` continues a word (``a$b$``), which is no dollar quote."""
    return position > 0 and (sql[position - 1].isalnum() or sql[position - 1] == "_")


# ------------------------------------------------------------------------------------------------- errors


class _Secret:
    """Hides one password in text meant for logs and exceptions."""

    def __init__(self, url: str) -> None:
        password = urlsplit(url).password
        self._texts = (
            sorted({password, unquote(password), quote(password, safe="")} - {""}, key=len, reverse=True)
            if password
            else []
        )

    def hide(self, text: str) -> str:
        for secret in self._texts:
            text = text.replace(secret, "***")
        return text


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", "") or "")


def _refused_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection that could not be opened for now (nothing was sent on it)."""
    if isinstance(exc, OSError | asyncpg.exceptions.CannotConnectNowError | asyncpg.exceptions.TooManyConnectionsError):
        return True
    return _sqlstate(exc) in _RETRY_STATES


def _rolled_back(exc: BaseException) -> bool:
    """Whether the server refused ``exc``'s statement whole (a serialisation failure, a deadlock, a lock not
    available), so trying it again cannot do anything twice. A connection lost mid-statement is not one: the
    statement may have committed."""
    return isinstance(exc, asyncpg.PostgresError) and _sqlstate(exc) in _RETRY_STATES


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being unavailable for now, not a mistake in the statement."""
    if isinstance(
        exc,
        OSError | TimeoutError | asyncpg.exceptions.ConnectionDoesNotExistError | asyncpg.PostgresConnectionError,
    ):
        return True
    state = _sqlstate(exc)
    return state in _TRANSIENT_STATES or state.startswith(_TRANSIENT_PREFIXES)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# -------------------------------------------------------------------------------------------- transaction


class PostgresTransaction(Transaction):
    """The statements of one transaction, on the pooled connection the transaction holds."""

    def __init__(self, store: PostgresStore, conn: PoolConnectionProxy[Any]) -> None:
        self._store = store
        self._conn = conn

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement (a SELECT or a ``... RETURNING``) and return all its rows."""
        statement = rewrite_parameters(sql)
        args = statement.arguments(params)
        return list(await self._guard(self._conn.fetch(statement.sql, *args, timeout=self._store.wait_timeout)))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""
        statement = rewrite_parameters(sql)
        args = statement.arguments(params)
        status = await self._guard(self._conn.execute(statement.sql, *args, timeout=self._store.wait_timeout))
        return _changed(status)

    async def lock(self, name: str) -> None:
        """Wait for, then hold until this transaction ends, the advisory lock of ``name`` (see :func:`lock_key`)."""
        await self._guard(
            self._conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(name), timeout=self._store.wait_timeout)
        )

    async def _guard(self, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``; a failure on a connection that is gone is :class:`StoreUnavailableError`, whatever
        state the driver was in when it noticed (its errors then vary with the moment)."""
        try:
            return await awaitable
        except Exception as exc:
            if not isinstance(exc, asyncpg.PostgresError) and _closed(self._conn):
                raise StoreUnavailableError(
                    f"the PostgreSQL database is unavailable: the connection was lost ({type(exc).__name__})"
                ) from None
            raise self._store._translated(exc) from None


def _closed(conn: PoolConnectionProxy[Any]) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # already handed back to the pool, which does so with lost connections
        return True


def _changed(status: str) -> int:
    """The row count of a command status (``UPDATE 3``, ``INSERT 0 1``, ``DELETE 0``); 0 if it has none."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


# -------------------------------------------------------------------------------------------------- store


class PostgresStore(Store):
    """The bot's database on a PostgreSQL server. Open it with ``await PostgresStore.open(url)``; :meth:`close` it."""

    dialect: ClassVar[Dialect] = "postgresql"

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        url: str,
        clock: Callable[[], float],
        schema_version: int,
        query_timeout: float,
        busy_window: float,
    ) -> None:
        """Wrap an open pool on a migrated database; use :meth:`open` rather than calling this directly."""
        super().__init__(clock, schema_version)
        self._pool = pool
        self._url = url
        self._secret = _Secret(url)
        #: Seconds the server lets one statement run (its ``statement_timeout``).
        self.query_timeout = query_timeout
        #: Seconds this side waits for one statement (or a connection): a little longer than the server's own
        #: timeout, which ends the statement cleanly, to also give up on a server that stopped answering.
        self.wait_timeout = query_timeout + _CLIENT_MARGIN
        self._busy_window = busy_window
        self._transactions: dict[asyncio.Task[Any], PostgresTransaction] = {}
        self._listeners: dict[str, list[Callable[[str], None]]] = {}
        self._listen_conn: asyncpg.Connection[Any] | None = None
        self._listen_lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresStore {self._secret.hide(self._url)} schema_version={self.schema_version}>"

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        query_timeout: float = QUERY_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        migration_timeout: float = MIGRATION_TIMEOUT,
        busy_window: float = BUSY_WINDOW,
    ) -> Self:
        """Connect a pool of ``min_size`` to ``max_size`` connections to ``url`` and apply pending migrations.

        ``clock`` returns unix seconds and is the only source of time for timestamps and usage days.
        ``migrations`` defaults to the files shipped in ``bot/db/migrations/postgresql``. Raises
        :class:`~bot.db.store.StoreUnavailableError` when the server cannot be reached (after trying for
        ``busy_window`` seconds), :class:`~bot.db.schema.SchemaTooNewError` if the database is newer than this
        code, :class:`~bot.db.schema.MigrationError` if a migration fails. No error repeats the password.
        """
        secret = _Secret(url)
        known = list(migrations) if migrations is not None else load_postgresql_migrations()
        deadline = time.monotonic() + busy_window
        for attempt in itertools.count():
            try:
                pool = await asyncpg.create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    timeout=connect_timeout,
                    command_timeout=query_timeout + _CLIENT_MARGIN,
                    server_settings={
                        "application_name": "fluxbot",
                        "statement_timeout": str(max(1, round(query_timeout * 1000))),
                    },
                    setup=_hear_the_server,
                    reset=_keep_the_session,
                )
                break
            except Exception as exc:
                if not (_refused_connection(exc) or isinstance(exc, TimeoutError)) or time.monotonic() >= deadline:
                    raise _opening_error(exc, secret) from None
                log.warning("cannot reach the PostgreSQL server (%s); trying again", secret.hide(_describe(exc)))
            await asyncio.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
        try:
            version = await _migrate(pool, known, clock, migration_timeout, secret)
        except BaseException:
            pool.terminate()
            raise
        return cls(
            pool, url=url, clock=clock, schema_version=version, query_timeout=query_timeout, busy_window=busy_window
        )

    async def close(self) -> None:
        """Stop listening, wait for connections in use to come back, and close them all."""
        self._closed = True
        self._listeners.clear()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close(timeout=self.wait_timeout)
            self._listen_conn = None
        try:
            await asyncio.wait_for(self._pool.close(), timeout=self.wait_timeout)
        except TimeoutError:
            log.warning("PostgreSQL connections still in use after %g s; closing them anyway", self.wait_timeout)
            self._pool.terminate()

    # --------------------------------------------------------------------------------------- statements

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run one read-only statement and return its first row."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read-only statement and return all its rows (committed data, or this task's transaction's)."""
        own = self._own_transaction()
        if own is not None:
            return await own.fetch_all(sql, params)
        statement = rewrite_parameters(sql)
        args = statement.arguments(params)
        return list(await self._alone(lambda conn: conn.fetch(statement.sql, *args, timeout=self.wait_timeout)))

    async def write_alone(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one writing statement as a transaction of its own (autocommit) and return its rows.

        Tried again, while within ``busy_window``, only after failures sure to have written nothing (a lost
        connection mid-statement is not one of them: the statement may have committed).
        """
        if self._own_transaction() is not None:
            raise RuntimeError("write_alone is a transaction of its own; inside one, use the Transaction")
        statement = rewrite_parameters(sql)
        args = statement.arguments(params)
        return list(await self._alone(lambda conn: conn.fetch(statement.sql, *args, timeout=self.wait_timeout)))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``async with store.transaction() as tx:`` - one pooled connection, ``BEGIN`` ... ``COMMIT``.

        READ COMMITTED: take :meth:`PostgresTransaction.lock` before a decision that must hold across
        processes. Any exception (or cancellation) inside the block rolls back. Transactions do not nest.
        """
        if self._own_transaction() is not None:
            raise RuntimeError("store transactions do not nest; use the Transaction you already have")
        task = asyncio.current_task()
        assert task is not None
        conn = await self._acquire()
        try:
            tx = PostgresTransaction(self, conn)
            await tx._guard(conn.execute("BEGIN", timeout=self.wait_timeout))
            self._transactions[task] = tx
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK", timeout=self.wait_timeout)
                raise
            finally:
                self._transactions.pop(task, None)
            await tx._guard(conn.execute("COMMIT", timeout=self.wait_timeout))
        finally:
            await self._release(conn)

    # ------------------------------------------------------------------------------------ notifications

    async def notify(self, channel: str, payload: str = "") -> None:
        """Send ``payload`` to every process listening on ``channel`` (this one included), at commit."""
        await self._alone(
            lambda conn: conn.execute("SELECT pg_notify($1, $2)", channel, payload, timeout=self.wait_timeout)
        )

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for each notification on ``channel`` until :meth:`close`.

        Listening has a connection of its own; when it is lost it is opened again (with the same channels), and
        notifications sent in between are missed: listeners keep a slower way to find work as well.
        """
        if self._closed:
            raise RuntimeError("the store is closed")
        async with self._listen_lock:
            callbacks = self._listeners.setdefault(channel, [])
            callbacks.append(callback)
            try:
                if self._listen_conn is None:
                    self._listen_conn = await self._listening_connection()
                elif len(callbacks) == 1:
                    await self._guard(self._listen_conn.add_listener(channel, self._dispatch))
            except BaseException:  # not listening after all: the caller hears why and may try again
                callbacks.remove(callback)
                if not callbacks:
                    del self._listeners[channel]
                raise

    async def _listening_connection(self) -> asyncpg.Connection[Any]:
        try:
            conn = await asyncpg.connect(
                self._url, timeout=CONNECT_TIMEOUT, server_settings={"application_name": "fluxbot-listen"}
            )
        except Exception as exc:
            raise _opening_error(exc, self._secret) from None
        try:
            for name in self._listeners:
                await conn.add_listener(name, self._dispatch)
        except Exception as exc:
            conn.terminate()
            raise self._translated(exc) from None
        conn.add_termination_listener(self._listening_lost)
        return conn

    def _dispatch(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for callback in list(self._listeners.get(channel, ())):
            try:
                callback(str(payload))
            except Exception:
                log.exception("a listener of %r failed", channel)

    def _listening_lost(self, conn: object) -> None:
        if self._closed or conn is not self._listen_conn:
            return
        log.warning("lost the PostgreSQL connection that listens for notifications; opening it again")
        self._listen_conn = None
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._listen_again())
            self._reconnect_task.add_done_callback(_log_failure)

    async def _listen_again(self) -> None:
        delay = _RETRY_DELAYS[0]
        while not self._closed:
            try:
                async with self._listen_lock:
                    if self._listen_conn is None and not self._closed:
                        self._listen_conn = await self._listening_connection()
                log.info("listening for notifications again")
                return
            except StoreBusyError as exc:
                log.warning("cannot listen for notifications yet (%s); trying again in %g s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LISTEN_RETRY_MAX)

    # -------------------------------------------------------------------------------------- internals

    def _own_transaction(self) -> PostgresTransaction | None:
        task = asyncio.current_task()
        return None if task is None else self._transactions.get(task)

    async def _acquire(self) -> PoolConnectionProxy[Any]:
        """A connection from the pool, tried again while the server refuses connections for now."""

        async def attempt() -> PoolConnectionProxy[Any]:
            return await self._pool.acquire(timeout=self.wait_timeout)

        return await self._retrying(attempt, _refused_connection)

    async def _release(self, conn: PoolConnectionProxy[Any]) -> None:
        try:
            conn.remove_log_listener(_server_said)  # added by _hear_the_server; the pool wants none left
        except asyncpg.InterfaceError:
            return  # the connection was lost, and the pool has taken it back already
        try:
            await self._pool.release(conn, timeout=self.wait_timeout)
        except Exception as exc:  # a broken connection: the pool drops it and opens another when needed
            log.warning("could not return a PostgreSQL connection to the pool: %s", self._secret.hide(_describe(exc)))
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()

    async def _alone(self, run: Callable[[PoolConnectionProxy[Any]], Awaitable[_T]]) -> _T:
        """``run`` on a pooled connection, outside any transaction; tried again after failures that wrote nothing."""

        async def attempt() -> _T:
            conn = await self._acquire()
            try:
                return await run(conn)
            finally:
                await self._release(conn)

        return await self._retrying(attempt, _rolled_back)

    async def _retrying(self, start: Callable[[], Awaitable[_T]], again: Callable[[BaseException], bool]) -> _T:
        """``start()``, tried again after each failure ``again`` accepts, within ``busy_window``; other failures
        (and the last one) raised, transient ones as :class:`StoreUnavailableError`."""
        deadline = time.monotonic() + self._busy_window
        for attempt in itertools.count():
            try:
                return await start()
            except Exception as exc:
                if not again(exc) or time.monotonic() >= deadline:
                    raise self._translated(exc) from None
                log.warning(
                    "the database refused a statement for now (%s); trying again (attempt %d)",
                    self._secret.hide(_describe(exc)),
                    attempt + 1,
                )
            await asyncio.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
        raise AssertionError("itertools.count() never ends")

    async def _guard(self, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``, with transient failures raised as :class:`StoreUnavailableError`."""
        try:
            return await awaitable
        except Exception as exc:
            raise self._translated(exc) from None

    def _translated(self, exc: Exception) -> Exception:
        """The exception to raise for ``exc``: StoreUnavailableError for transient failures; the driver's own
        error otherwise (its text cannot hold the URL: only opening a connection sees it)."""
        if isinstance(exc, StoreBusyError):
            return exc
        if _transient(exc):
            return StoreUnavailableError(f"the PostgreSQL database is unavailable: {self._secret.hide(_describe(exc))}")
        return exc


async def _keep_the_session(conn: asyncpg.Connection[Any]) -> None:
    """What a connection needs when it comes back to the pool: nothing beyond what asyncpg always does (roll back
    a transaction left open). The store leaves no other session state behind — its advisory locks end with their
    transactions, it listens on a connection of its own, and it sets nothing outside a transaction — so asyncpg's
    default reset (``RESET ALL``, ``UNLISTEN *``, ... sent to the server) would be a round trip per statement
    for nothing: it halved the reservations per second."""


async def _hear_the_server(conn: PoolConnectionProxy[Any]) -> None:
    """Log what the server says besides results (a ``RAISE NOTICE``, a warning, ``auto_explain``'s plans) on
    every connection taken from the pool: the pool forgets listeners when a connection comes back."""
    conn.add_log_listener(_server_said)


def _server_said(conn: object, message: asyncpg.PostgresLogMessage) -> None:
    severity = str(getattr(message, "severity", "") or "NOTICE")
    level = logging.WARNING if severity == "WARNING" else logging.DEBUG
    server_log.log(level, "PostgreSQL %s: %s", severity, message.message)


def _opening_error(exc: BaseException, secret: _Secret) -> Exception:
    """An error for a failed connection attempt that names what went wrong but never the password."""
    text = secret.hide(_describe(exc))
    if _transient(exc) or isinstance(exc, TimeoutError):
        return StoreUnavailableError(f"cannot connect to the PostgreSQL server: {text}")
    return StoreConnectError(f"cannot connect to the PostgreSQL database: {text}")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("listening for notifications stopped", exc_info=task.exception())


async def _migrate(
    pool: asyncpg.Pool[Any],
    migrations: Sequence[Migration],
    clock: Callable[[], float],
    seconds: float,
    secret: _Secret,
) -> int:
    """Apply the pending migrations in one transaction under the migration lock; return the schema version.

    The lock is taken before the version is read, so of several processes starting together one migrates and
    the others then find the schema current. Each file runs as one script (its ``$$`` bodies whole).
    """
    try:
        conn = await pool.acquire(timeout=seconds)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, round(seconds * 1000)):d}")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(MIGRATION_LOCK), timeout=seconds)
                await conn.execute(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version    integer PRIMARY KEY,
                        name       text NOT NULL,
                        applied_at double precision NOT NULL
                    )
                    """,
                    timeout=seconds,
                )
                current = int(
                    await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations", timeout=seconds)
                )
                todo = pending(migrations, current)
                for migration in todo:
                    log.info("applying PostgreSQL migration %04d_%s", migration.version, migration.name)
                    try:
                        await conn.execute(migration.sql, timeout=seconds)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(
                            f"migration postgresql/{migration.version:04d}_{migration.name}.sql failed: {exc}"
                        ) from None
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        clock(),
                        timeout=seconds,
                    )
        finally:
            with contextlib.suppress(asyncpg.InterfaceError):  # unless the pool took a lost connection back
                conn.remove_log_listener(_server_said)
                await pool.release(conn, timeout=seconds)
    except (MigrationError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if _transient(exc):
            raise StoreUnavailableError(
                f"the PostgreSQL database is unavailable: {secret.hide(_describe(exc))}"
            ) from None
        raise
    return todo[-1].version if todo else current
