"""One writer at a time: a refresh (or a step of it) holds `<warehouse>.lock`; another one that finds it held
says who holds it and exits at once, instead of failing on DuckDB's file lock after minutes of retries."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

EXIT_WAREHOUSE_IN_USE = 75  # EX_TEMPFAIL: try again later

_held: dict[str, tuple[int, int]] = {}  # lock path -> (file descriptor, depth) held by this process
_guard = threading.Lock()


class WarehouseInUse(RuntimeError):
    exit_code = EXIT_WAREHOUSE_IN_USE


def lock_path(warehouse: Path) -> Path:
    return Path(f"{warehouse}.lock")


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"process {info.get('pid')} on {info.get('host')}, running `{info.get('step')}` since {info.get('started_at')}"
    )


def _describe(fd: int, step: str, started_at: str) -> None:
    text = json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "step": step, "started_at": started_at}
    ).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)


@contextmanager
def writer(warehouse: Path, step: str) -> Iterator[None]:
    """Hold the warehouse's writer lock for the block (re-entrant within a process: a refresh holds it across
    its steps, and each step names itself in it). Raises WarehouseInUse when another process holds it."""
    path = lock_path(Path(warehouse))
    key = str(path.resolve())
    with _guard:
        held = _held.get(key)
        if held is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise WarehouseInUse(
                    f"the warehouse {warehouse} is being written by {_holder_text(path)}; "
                    "wait for it to finish (a night usually takes minutes), then run again"
                ) from None
            _held[key] = (fd, 1)
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
        else:
            fd, depth = held
            _held[key] = (fd, depth + 1)
            started_at = json.loads(os.pread(fd, 4096, 0) or b"{}").get("started_at", "")
        _describe(fd, step, started_at)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth == 1:
                del _held[key]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            else:
                _held[key] = (fd, depth - 1)
