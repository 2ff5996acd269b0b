"""pytest plugin: a real PostgreSQL server for the session, and an empty database of its own for each test.

Outside CI a machine without PostgreSQL still runs every other test: the tests that need the server are skipped,
with the reason. CI sets ``FLUXBOT_REQUIRE_POSTGRES=1`` (``.ci/run``), and then a server that cannot be started
fails those tests instead, so the PostgreSQL backend can never pass CI by not being tested.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pgserver import PostgresServer, PostgresUnavailable

#: Set to 1 where a missing PostgreSQL is a failure, not a reason to skip (CI).
REQUIRE_VARIABLE = "FLUXBOT_REQUIRE_POSTGRES"


def postgres_required() -> bool:
    """Whether this run must test PostgreSQL (CI) rather than skip what needs it."""
    return os.environ.get(REQUIRE_VARIABLE, "").strip() == "1"


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (starting one takes about a second), stopped and removed after."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as error:
        if postgres_required():
            pytest.fail(f"PostgreSQL is required here ({REQUIRE_VARIABLE}=1) but cannot be started: {error}")
        pytest.skip(f"no PostgreSQL server ({error}); set {REQUIRE_VARIABLE}=1 to make this a failure")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgresql_url(postgresql_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database no other test sees, dropped after the test
    (``postgresql://postgres@127.0.0.1:PORT/NAME``; no password, trust authentication on loopback)."""
    url = postgresql_server.create_database()
    try:
        yield url
    finally:
        postgresql_server.drop_database(url.rpartition("/")[2])
