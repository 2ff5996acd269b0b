"""The PostgreSQL the tests run against: a real server, a database of its own per test, and CI that cannot skip it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest

from tests.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


async def user_tables(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY table_name"
        )
    finally:
        await connection.close()
    return [row["table_name"] for row in rows]


async def test_the_url_connects_over_loopback_tcp_to_a_database_of_that_name(postgresql_url: str) -> None:
    assert postgresql_url.startswith("postgresql://postgres@127.0.0.1:")
    connection = await asyncpg.connect(postgresql_url)
    try:
        database = await connection.fetchval("SELECT current_database()")
        address = await connection.fetchval("SELECT host(inet_server_addr())")
        major = await connection.fetchval("SELECT current_setting('server_version_num')::int / 10000")
    finally:
        await connection.close()
    assert database == postgresql_url.rpartition("/")[2]
    assert address == "127.0.0.1"
    assert major >= 13, "DROP DATABASE ... WITH (FORCE) needs PostgreSQL 13"


async def test_each_database_starts_empty_and_sees_nothing_of_another(
    postgresql_server: PostgresServer, postgresql_url: str
) -> None:
    other = postgresql_server.create_database()
    try:
        assert await user_tables(postgresql_url) == []
        connection = await asyncpg.connect(postgresql_url)
        try:
            await connection.execute("CREATE TABLE jobs (id bigint PRIMARY KEY)")
            await connection.execute("INSERT INTO jobs VALUES (1)")
        finally:
            await connection.close()
        assert await user_tables(postgresql_url) == ["jobs"]
        assert await user_tables(other) == []
    finally:
        postgresql_server.drop_database(other.rpartition("/")[2])


async def test_dropping_a_database_ends_the_sessions_a_test_left_open(postgresql_server: PostgresServer) -> None:
    url = postgresql_server.create_database()
    name = url.rpartition("/")[2]
    left_open = await asyncpg.connect(url)
    try:
        postgresql_server.drop_database(name)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await left_open.fetchval("SELECT 1")
    finally:
        left_open.terminate()
    admin = await asyncpg.connect(postgresql_server.url())
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await admin.close()


def test_database_names_are_plain_identifiers(postgresql_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="plain database name"):
        postgresql_server.create_database('x"; DROP DATABASE postgres; --')


def test_the_server_runs_unprivileged_from_a_folder_of_its_own(postgresql_server: PostgresServer) -> None:
    assert postgresql_server.folder is not None
    pid = int((postgresql_server.folder / "data" / "postmaster.pid").read_text().splitlines()[0])
    owner = Path(f"/proc/{pid}").stat().st_uid
    assert owner != 0, "PostgreSQL refuses root: the cluster belongs to an unprivileged user"
    assert owner == postgresql_server.folder.stat().st_uid
    # The Unix socket is in the folder too, not in the system's /var/run/postgresql.
    assert (postgresql_server.folder / f".s.PGSQL.{postgresql_server.port}").is_socket()


async def test_stop_ends_the_server_and_removes_its_folder(postgresql_server: PostgresServer) -> None:
    # A second server beside the session's: each has its own port and folder, and stopping one leaves the other.
    with PostgresServer() as server:
        folder, url = server.folder, server.url()
        assert folder is not None
        assert server.port != postgresql_server.port
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
    assert not folder.exists()
    with pytest.raises(OSError):
        await asyncpg.connect(url, timeout=5)
    assert await user_tables(postgresql_server.url()) == []
    server.stop()  # a second stop is harmless


KILLED_OWNER = """
import time
from tests.pgserver import PostgresServer

server = PostgresServer()
server.start()
print(server.folder, server.port, flush=True)
time.sleep(600)
"""


def test_a_run_killed_from_outside_leaves_no_server_behind() -> None:
    # A CI timeout or a second Ctrl-C ends the test process without its teardown; the server must not outlive it.
    owner = subprocess.Popen(
        [sys.executable, "-c", KILLED_OWNER],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        folder_name, port = owner.stdout.readline().split()
        folder = Path(folder_name)
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()  # it is serving
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 30
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists(), "the folder is removed once its owner is gone"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()


# --- CI cannot pass by skipping ------------------------------------------------------------------------------

NEEDS_POSTGRES = """
    def test_needs_postgres(postgresql_url):
        assert postgresql_url
"""
#: Hides Debian's folder of versions as well, so that the server programs are nowhere to be found.
HIDE_DEBIAN_FOLDER = """
    import tests.pgserver

    tests.pgserver.DEBIAN_BIN_GLOB = "/nonexistent/postgresql/*/bin"
    pytest_plugins = ["tests.pgfixtures"]
"""


def run_pytest_without_postgres(folder: Path, *, require: bool) -> subprocess.CompletedProcess[str]:
    """A separate pytest run of one test that needs PostgreSQL, on a PATH without the server's programs."""
    (folder / "conftest.py").write_text(textwrap.dedent(HIDE_DEBIAN_FOLDER), encoding="utf-8")
    (folder / "test_needs_postgres.py").write_text(textwrap.dedent(NEEDS_POSTGRES), encoding="utf-8")
    path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if not (Path(entry) / "initdb").exists()
    )
    environment = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT)}
    environment.pop("FLUXBOT_REQUIRE_POSTGRES", None)
    if require:
        environment["FLUXBOT_REQUIRE_POSTGRES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def test_without_the_server_programs_tests_that_need_them_are_skipped_with_the_reason(tmp_path: Path) -> None:
    result = run_pytest_without_postgres(tmp_path, require=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "neither on PATH nor in /nonexistent/postgresql/*/bin" in result.stdout


def test_when_postgres_is_required_a_missing_server_fails_the_run(tmp_path: Path) -> None:
    result = run_pytest_without_postgres(tmp_path, require=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "PostgreSQL is required here (FLUXBOT_REQUIRE_POSTGRES=1)" in result.stdout
    assert "skipped" not in result.stdout
