"""`outcomes refresh`: every step in order, in-process, with a closing summary."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline import steps
from pipeline.settings import Settings


def run(settings: Settings, from_dir: Path | None = None, full: bool = False, log=print) -> dict:
    summary: dict = {"steps": {}}
    t0 = time.perf_counter()

    def timed(name: str, fn, *a, **kw):
        log(f"== {name}")
        start = time.perf_counter()
        out = fn(*a, **kw)
        summary["steps"][name] = round(time.perf_counter() - start, 2)
        return out

    if from_dir is None:
        timed("extract", steps.extract, settings, full=full, log=log)
    loaded = timed("load", steps.load, settings, from_dir=from_dir, log=log)
    summary["load"] = loaded.totals
    summary["dbt"] = timed("transform", steps.transform, settings, log=log)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    log("== summary")
    log(f"  steps (s): {', '.join(f'{k} {v}' for k, v in summary['steps'].items())}; total {summary['seconds']}s")
    log(f"  raw load: {', '.join(f'{k} {v:,}' for k, v in loaded.totals.items())}")
    log(f"  warehouse: {settings.warehouse}")
    return summary
