"""A real PostgreSQL server for tests and benchmarks: its own cluster in a temp folder, on a free loopback port.

The PostgreSQL backend is only believed when it runs against the real server, so the tests start one instead of
faking it. The cluster lives in a fresh temp folder (data and Unix socket both), listens on 127.0.0.1 only with
trust authentication, and trades durability for speed (no fsync): it holds nothing worth keeping and is removed
by :meth:`PostgresServer.stop`. PostgreSQL refuses to run as root, so when the tests run as root the cluster
belongs to the system user ``postgres`` and every server command runs as that user.

Plain class and context manager, no pytest: the fixtures (``tests/pgfixtures.py``), the multi-process test and the
benchmarks all start it the same way::

    with PostgresServer() as server:
        url = server.create_database()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from tests.conftest import free_port

#: The superuser of the test cluster; with trust authentication it needs no password.
SUPERUSER = "postgres"
#: The system user that owns the cluster when the tests run as root.
SYSTEM_USER = "postgres"
#: Where Debian's ``postgresql-NN`` packages put the server binaries when they are not on PATH.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The programs the server needs.
PROGRAMS = ("initdb", "pg_ctl", "postgres")
#: Seconds ``pg_ctl -w`` waits for the server to accept connections.
START_TIMEOUT = 60
#: Server settings for a throwaway cluster: loopback only, and no waiting for the disk (tests only, never production).
SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1",
    "-c fsync=off",
    "-c synchronous_commit=off",
    "-c full_page_writes=off",
    "-c max_connections=200",
)
#: Starting attempts: another process can take the free port between choosing it and the server binding it.
START_ATTEMPTS = 3

T = TypeVar("T")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here: the binaries, the driver or a user to run it as is missing,
    or the server did not start (the message says which, with the end of the server's log)."""


def find_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres: the one on PATH first, else Debian's newest version.

    A program found on PATH is followed through its symlinks (Debian links ``/usr/local/bin/initdb`` and friends
    to ``/usr/lib/postgresql/NN/bin``), and all three must come from the same folder so that pg_ctl starts the
    postgres of the same version as the initdb that made the cluster.
    """
    on_path = shutil.which("initdb")
    candidates: list[Path] = []
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versioned = sorted(Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")), key=_version_of_bin_dir, reverse=True)
    candidates.extend(versioned)
    for folder in candidates:
        if all(os.access(folder / program, os.X_OK) for program in PROGRAMS):
            return folder
    raise PostgresUnavailable(
        f"the PostgreSQL server programs ({', '.join(PROGRAMS)}) are neither on PATH nor in {DEBIAN_BIN_GLOB} "
        "(Debian: apt-get install postgresql)"
    )


def _version_of_bin_dir(folder: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,), so that 15 sorts after 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even when the caller is inside an event loop.

    The fixtures and the benchmarks call the server's helpers both from plain functions and from coroutines; a
    loop of its own on a worker thread serves both without touching the caller's loop.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(lambda: asyncio.run(factory())).result()


class PostgresServer:
    """One PostgreSQL cluster for the life of this object: ``start()``, databases, ``stop()``.

    ``url(name)`` is ``postgresql://postgres@127.0.0.1:PORT/name``: TCP on loopback with trust authentication,
    which is what the bot itself would be given (it never needs the Unix socket, which is there because the
    server insists on one and must not use the system's ``/var/run/postgresql``).
    """

    def __init__(self, *, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.folder: Path | None = None
        self._run_as: list[str] = []
        self._owner: tuple[int, int] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # --- life -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Make a fresh cluster and start it; returns once it accepts connections (checked with asyncpg).

        Raises :class:`PostgresUnavailable` when it cannot; whatever was made is removed again.
        """
        try:
            import asyncpg  # noqa: F401  (the fixtures' users connect with it; a missing driver is a missing server)
        except ImportError as error:
            raise PostgresUnavailable("the asyncpg driver is not installed (pip install -e '.[test]')") from error
        if self.bin_dir is None:
            self.bin_dir = find_bin_dir()
        self._run_as, self._owner = self._unprivileged()
        self.folder = Path(tempfile.mkdtemp(prefix="fluxbot-pg-"))
        try:
            if self._owner is not None:
                os.chown(self.folder, *self._owner)
            self._start_watchdog()
            self._initdb()
            self._start_on_a_free_port()
            _run_coroutine(self._check_connection)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: nothing in it is worth a clean shutdown) and remove its folder.

        Safe to call twice, and after a failed start.
        """
        folder, self.folder = self.folder, None
        if folder is None:
            return
        if self.bin_dir is not None and (folder / "data" / "postmaster.pid").exists():
            self._command(["pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"], folder, check=False)
        shutil.rmtree(folder, ignore_errors=True)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- databases ------------------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """The connection URL of one database of this server (no password: trust authentication on loopback)."""
        if not self.port:
            raise RuntimeError("the PostgreSQL server is not started")
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name unless given) and return its URL.

        Copied from ``template0``, which nothing ever connects to, so creating one never waits for another test's
        connection to the template and never inherits something a test left in ``template1``.
        """
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        _check_identifier(name)
        _run_coroutine(lambda: self._admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it (a test's pool may not have closed them)."""
        _check_identifier(name)
        _run_coroutine(lambda: self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def version(self) -> str:
        """The server's version line, e.g. ``PostgreSQL 15.14 (Debian 15.14-0+deb12u1) on x86_64...``."""

        async def ask() -> str:
            import asyncpg

            connection = await asyncpg.connect(self.url())
            try:
                return str(await connection.fetchval("SELECT version()"))
            finally:
                await connection.close()

        return _run_coroutine(ask)

    # --- inside ---------------------------------------------------------------------------------------------

    @staticmethod
    def _unprivileged() -> tuple[list[str], tuple[int, int] | None]:
        """The command prefix that runs a program as the cluster's owner, and that owner's (uid, gid) when root."""
        if os.geteuid() != 0:
            return [], None
        try:
            user = pwd.getpwnam(SYSTEM_USER)
        except KeyError as error:
            raise PostgresUnavailable(
                f"PostgreSQL refuses to run as root and there is no system user {SYSTEM_USER!r} to run it as"
            ) from error
        owner = (user.pw_uid, user.pw_gid)
        if shutil.which("runuser"):
            return ["runuser", "-u", SYSTEM_USER, "--"], owner
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"], owner
        raise PostgresUnavailable("PostgreSQL refuses to run as root and neither runuser nor setpriv is installed")

    def _command(self, argv: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the server programs as the cluster's owner, with no PG* variables of the caller in its way."""
        assert self.bin_dir is not None
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        environment["LC_ALL"] = "C"
        command = [*self._run_as, str(self.bin_dir / argv[0]), *argv[1:]]
        result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{argv[0]} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def _start_watchdog(self) -> None:
        """A shell that stops the server and removes its folder if this process dies without calling :meth:`stop`.

        ``pg_ctl`` detaches the server, so a test run killed from outside (a CI timeout, Ctrl-C twice, SIGKILL)
        would otherwise leave it running with its folder for good. The watchdog is a session of its own so that
        the signal that ends the run does not end it too; it checks once a second and ends with the folder.
        """
        assert self.folder is not None and self.bin_dir is not None
        folder = shlex.quote(str(self.folder))
        stop = shlex.join([*self._run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
                           "immediate", "-w", "stop"])  # fmt: skip
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null && [ -d {folder} ]; do sleep 1; done; "
            f"if [ -d {folder} ]; then {stop} >/dev/null 2>&1; rm -rf {folder}; fi"
        )
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _initdb(self) -> None:
        assert self.folder is not None
        self._command(
            [
                "initdb",
                "-D",
                str(self.folder / "data"),
                "--auth=trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            self.folder,
        )

    def _start_on_a_free_port(self) -> None:
        """``pg_ctl start -w`` on a free port; a port taken meanwhile by someone else means another try."""
        assert self.folder is not None
        log = self.folder / "server.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            options = " ".join((*SERVER_OPTIONS, f"-p {port}", f"-k {self.folder}"))
            started = self._command(
                ["pg_ctl", "-D", str(self.folder / "data"), "-l", str(log), "-w", "-t", str(START_TIMEOUT),
                 "-o", options, "start"],
                self.folder,
                check=False,
            )  # fmt: skip
            if started.returncode == 0:
                self.port = port
                return
            tail = _tail(log)
            if "could not bind" not in tail or attempt == START_ATTEMPTS:
                raise PostgresUnavailable(f"the PostgreSQL server did not start: {started.stdout.strip()}\n{tail}")

    async def _check_connection(self) -> None:
        """pg_ctl says the server is ready; one real connection over TCP says the URL the tests get works."""
        import asyncpg

        connection = await asyncpg.connect(self.url(), timeout=START_TIMEOUT)
        await connection.close()

    async def _admin(self, sql: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.url())
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


def _check_identifier(name: str) -> None:
    """Database names go into SQL as quoted identifiers, so only plain ones are accepted."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain database name: {name!r}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"
