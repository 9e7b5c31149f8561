"""Shared helpers for benchmarks: wall time and peak memory of a function run in a child process."""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from pathlib import Path


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


def _tree_rss_mib(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def measure_tree(fn: Callable, *args):
    """As measure, with the peak taken over the child and its own children together (Spark's JVM), sampled
    every 0.2 s: (seconds, peak MiB, result)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    peak = 0.0
    while True:
        peak = max(peak, _tree_rss_mib(proc.pid))
        try:
            elapsed, own_peak, result = queue.get(timeout=0.2)
            break
        except Exception:  # noqa: BLE001 - queue.Empty
            if not proc.is_alive():
                raise RuntimeError(f"benchmark child died with exit code {proc.exitcode}") from None
    proc.join()
    return elapsed, max(peak, own_peak), result


def write_results(results: list[dict], out: str | Path) -> None:
    """The benchmark's rows as JSON at `out` (its folder made if needed), and where they went."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {path}")
