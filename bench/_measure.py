"""Shared helpers for benchmarks: wall time and peak memory of a function run in a child process."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable


def _child(fn, args, queue) -> None:
    t0 = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((elapsed, peak_mib, result))


def measure(fn: Callable, *args):
    """Run fn(*args) in a fresh process; return (seconds, peak RSS MiB, result)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    while True:  # a child that dies (OOM, crash) must not leave us waiting forever
        try:
            out = queue.get(timeout=1)
            break
        except Exception:  # noqa: BLE001 - queue.Empty
            if not proc.is_alive():
                raise RuntimeError(f"benchmark child died with exit code {proc.exitcode}") from None
    proc.join()
    return out
