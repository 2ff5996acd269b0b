"""One bot per database: an OS file lock next to the SQLite file, held for the life of the process.

The lock is ``fcntl.flock`` on ``<database>.lock``: the operating system releases it when the process ends,
however it ends (SIGKILL and power loss included), so a stale lock file never keeps a restarted bot out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["InstanceLocked", "lock_path_for", "single_instance"]


class InstanceLocked(Exception):
    """Another process holds the database's lock; ``str()`` is one line for an operator."""


def lock_path_for(database: Path) -> Path:
    """``data/fluxbot.db`` → ``data/fluxbot.db.lock``."""
    return database.with_name(database.name + ".lock")


@contextlib.contextmanager
def single_instance(database: Path) -> Iterator[Path]:
    """Hold the lock of ``database`` for the block, or raise :class:`InstanceLocked` at once (never waits).

    Creates the database's folder if needed (the store would create it next anyway).
    """
    try:
        import fcntl  # noqa: PLC0415 (not on Windows)
    except ImportError:  # Windows has no flock; one instance per database is then up to the operator
        yield lock_path_for(database)
        return
    path = lock_path_for(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise InstanceLocked(
                f"another fluxbot instance{who} is using the database {database} (it holds {path}); "
                "stop it first, or give this one its own DATABASE_URL"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
