"""`outcomes refresh`: every step in order, in-process, with a closing summary."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from dashboards.status import record_failed
from pipeline import steps
from pipeline.settings import Settings
from pipeline.transform import dbt_log_dir
from pipeline.writer_lock import writer


def run(settings: Settings, from_dir: Path | None = None, full: bool = False, log=print) -> dict:
    with writer(settings.warehouse, "refresh"):  # one night at a time, from its first step to its last
        return _run(settings, from_dir, full, log)


def _run(settings: Settings, from_dir: Path | None, full: bool, log) -> dict:
    summary: dict = {"steps": {}, "peak_mib_after": {}}
    t0 = time.perf_counter()

    def timed(name: str, fn, *a, **kw):
        log(f"== {name}")
        start = time.perf_counter()
        try:
            out = fn(*a, **kw)
        except BaseException:
            try:
                record_failed(settings.dashboards, name)  # the pages say the night failed, and where
            except OSError:
                pass  # the step's own error is the one to report
            raise
        summary["steps"][name] = round(time.perf_counter() - start, 2)
        log(f"   {name}: done in {summary['steps'][name]:.1f} s")
        # the process's memory high-water mark so far: shows which step sets the peak
        summary["peak_mib_after"][name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return out

    if from_dir is None:
        timed("extract", steps.extract, settings, full=full, log=log)
    loaded = timed("load", steps.load, settings, from_dir=from_dir, log=log)
    summary["load"] = loaded.totals
    timed("stage", steps.stage, settings, log=log)
    raw_gate = timed("validate raw", steps.validate_raw, settings, log=log, full=full)
    summary["dbt"] = timed("transform", steps.transform, settings, log=log, full_refresh=full)
    mart_gate = timed("validate marts", steps.validate_marts, settings, log=log)
    timed("publish", steps.publish, settings, log=log)
    summary["dashboards"] = str(timed("dashboards", steps.dashboards, settings, log=log)[0])
    summary["quality"] = {
        "raw_quarantined": sum(raw_gate.quarantined.values()),
        "raw_warnings": len(raw_gate.warnings),
        "mart_warnings": len(mart_gate.warnings),
        "docs": raw_gate.docs_index,
    }
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    log("== summary")
    log(f"  steps (s): {', '.join(f'{k} {v}' for k, v in summary['steps'].items())}; total {summary['seconds']}s")
    log(f"  raw load: {', '.join(f'{k} {v:,}' for k, v in loaded.totals.items())}")
    log(
        f"  quality: passed; {summary['quality']['raw_quarantined']:,} records quarantined, "
        f"{summary['quality']['raw_warnings'] + summary['quality']['mart_warnings']} warnings "
        f"(Data Docs: {summary['quality']['docs'] or 'off'})"
    )
    log(f"  warehouse: {settings.warehouse} (marts published to schema marts)")
    log(f"  analysts' database: {settings.analytics_db}")
    log(f"  dashboards: {summary['dashboards']}")
    log(f"  logs: dbt {dbt_log_dir(settings.warehouse) / 'dbt.log'}")
    return summary
