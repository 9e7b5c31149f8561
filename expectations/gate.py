"""Run expectation suites with Great Expectations on frames pulled from DuckDB; persist and quarantine.

GX 1.x cannot validate DuckDB through SQL here, so each frame is pulled with DuckDB and validated as a
pandas DataFrame. Results go to the `quality` schema and to GX Data Docs.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from expectations.offline_docs import AssetsMissing, make_offline
from expectations.scope import SCOPE_TABLE, RawScope
from expectations.store import QUARANTINE_TABLE, ensure_quality_schema
from expectations.suites import CRITICAL, QUARANTINE, Check, Frame


@dataclass
class GateResult:
    run_id: str
    suite: str
    critical_failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)
    results: list[dict] = field(default_factory=list)
    docs_index: str | None = None

    @property
    def passed(self) -> bool:
        return not self.critical_failures

    def summary_lines(self) -> list[str]:
        lines = [
            f"{self.suite}: {'PASSED' if self.passed else 'FAILED'} — {len(self.results)} expectations, "
            f"{len(self.critical_failures)} critical failures, {len(self.warnings)} warnings, "
            f"{sum(self.quarantined.values())} records quarantined"
        ]
        lines += [f"  CRITICAL {x}" for x in self.critical_failures]
        lines += [f"  warning  {x}" for x in self.warnings]
        lines += [f"  quarantined {n:,} by {name}" for name, n in sorted(self.quarantined.items()) if n]
        return lines


def _quiet_gx() -> None:
    for name in (
        "great_expectations",
        "great_expectations.core",
        "great_expectations._docs_decorators",
        "great_expectations.data_context.types.base",
        "great_expectations.data_context",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)


def hide_spark_connect_from_gx() -> None:
    """With pyspark installed (the Spark engine's extra), importing GX probes pyspark's Spark Connect client,
    whose import ends the interpreter (sys.exit(0)) when its gRPC dependencies are missing and `__main__` has
    no file -- a pytest-xdist worker, an embedded interpreter. The gates never validate Spark frames, and a
    classic Spark session never imports the Connect client: GX is told it is absent (an ImportError, which it
    expects) unless something imported it already."""
    sys.modules.setdefault("pyspark.sql.connect", None)


# GX's SQL and Spark integrations, which it loads at import whenever their packages are installed (SQLAlchemy
# comes with Airflow, pyspark with the Spark engine). The gates validate pandas frames only.
GX_UNUSED_INTEGRATIONS = ("sqlalchemy", "pyspark")


def import_gx() -> ModuleType:
    """Import Great Expectations as on an install without its SQL and Spark integrations (GX expects either
    to be missing and skips it); those packages stay importable for everything else once GX is in."""
    if "great_expectations" not in sys.modules:
        hidden = [name for name in GX_UNUSED_INTEGRATIONS if name not in sys.modules]
        if "pyspark" not in hidden:
            hide_spark_connect_from_gx()
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # ImportError on import, as if absent
        try:
            import great_expectations  # noqa: F401
        finally:
            for name in hidden:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]
        _quiet_gx()  # after the import, which sets some of these loggers' levels itself
    return sys.modules["great_expectations"]


def _context(docs_dir: Path | None):
    gx = import_gx()
    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(
            site_name="local",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return gx, context


# Rows of a frame validated at once. GX copies a chunk per metric it computes, so the Python heap scales
# with it (the peak at 50k patients per chunk size is in docs/operations.md); incremental nights validate
# far fewer rows than one chunk.
GATE_CHUNK_ROWS = 100_000


def _chunks(con, frame: Frame, chunk_rows: int) -> list[str]:
    """SQL per chunk of the frame. Large frames of records are staged once in a temp table (DuckDB spills it
    under its memory limit) and pulled into pandas a hash-partition of ids at a time."""
    if frame.id_column is None:
        return [frame.sql]
    con.execute(f"CREATE OR REPLACE TEMP TABLE gate_frame AS {frame.sql}")
    rows = con.execute("SELECT count(*) FROM gate_frame").fetchall()[0][0]
    parts = max(1, -(-rows // chunk_rows))
    if parts == 1:
        return ["SELECT * FROM gate_frame"]
    return [f"SELECT * FROM gate_frame WHERE hash({frame.id_column}) % {parts} = {i}" for i in range(parts)]


def run_suite(
    con,
    suite_name: str,
    frames: dict[str, Frame],
    build_checks: Callable,
    docs_dir: Path | None,
    log: Callable[[str], None] = print,
    scope: RawScope | None = None,
    fingerprint: str | None = None,
    chunk_rows: int = GATE_CHUNK_ROWS,
) -> GateResult:
    """Validate every frame against its checks; quarantine row-level failures; persist results.

    With an incremental `scope`, the quarantine verdicts of the records in scope are replaced and all
    others kept; otherwise the suite's quarantine is rewritten whole."""
    started = datetime.now(UTC)
    ensure_quality_schema(con)
    suite_docs = docs_dir / suite_name if docs_dir is not None else None
    gx, context = _context(suite_docs)
    checks: list[Check] = build_checks(gx)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    result = GateResult(run_id, suite_name)
    source = context.data_sources.add_pandas(f"{suite_name}_frames")
    quarantine_rows: list[tuple] = []
    rows_validated = 0
    for frame_name, frame in frames.items():
        frame_checks = [c for c in checks if c.frame == frame_name]
        if not frame_checks:
            continue
        t0 = time.perf_counter()
        asset = source.add_dataframe_asset(name=frame_name)
        batch_definition = asset.add_batch_definition_whole_dataframe(f"{frame_name}_all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_name}.{frame_name}"))
        for c in frame_checks:
            c.expectation.meta = {"severity": c.severity, "check": c.name, "description": c.description}
            suite.add_expectation(c.expectation)
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}.{frame_name}", data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}.{frame_name}",
                validation_definitions=[vd],
                actions=[],  # Data Docs are built once per suite below: per-checkpoint rebuilds cost ~1 s each
                result_format={"result_format": "COMPLETE"},
            )
        )
        by_name = {c.name: c for c in frame_checks}
        merged: dict[str, dict] = {}
        chunk_sqls = _chunks(con, frame, chunk_rows)
        frame_rows = 0
        for chunk_sql in chunk_sqls:
            df = con.sql(chunk_sql).df()
            frame_rows += len(df)
            run = checkpoint.run(batch_parameters={"dataframe": df})
            validation = next(iter(run.run_results.values()))
            for r in validation.results:
                check = by_name[r.expectation_config.meta["check"]]
                m = merged.setdefault(
                    check.name,
                    {"success": True, "unexpected": None, "elements": None, "observed": None, "config": None},
                )
                m["config"] = r.expectation_config
                m["success"] = m["success"] and bool(r.success)
                for key, gx_key in (("unexpected", "unexpected_count"), ("elements", "element_count")):
                    if r.result.get(gx_key) is not None:
                        m[key] = (m[key] or 0) + r.result[gx_key]
                if r.result.get("observed_value") is not None and (m["observed"] is None or not r.success):
                    m["observed"] = r.result["observed_value"]
                idx = r.result.get("unexpected_index_list")
                if not r.success and check.severity == QUARANTINE and frame.id_column and idx:
                    bad = df.loc[idx]
                    column = r.expectation_config.kwargs.get("column")
                    for _, row in bad.iterrows():
                        quarantine_rows.append(
                            (
                                frame.resource_type,
                                row[frame.id_column],
                                row.get("version_id"),
                                check.name,
                                suite_name,
                                str(row[column]) if column in row else None,
                                run_id,
                                started,
                            )
                        )
                    result.quarantined[check.name] = result.quarantined.get(check.name, 0) + len(bad)
            del df
        if frame.id_column is not None:
            con.execute("DROP TABLE IF EXISTS gate_frame")
        rows_validated += frame_rows
        for name, m in merged.items():
            check = by_name[name]
            unexpected, observed = m["unexpected"], m["observed"]
            outcome = "passed"
            if not m["success"]:
                detail = f"{check.name} ({check.description}): {unexpected if unexpected is not None else observed}"
                if check.severity == CRITICAL:
                    outcome = "run stopped"
                    result.critical_failures.append(detail)
                elif check.severity == QUARANTINE and result.quarantined.get(check.name):
                    outcome = "quarantined"
                else:
                    outcome = "warned"
                    result.warnings.append(detail)
            result.results.append(
                {
                    "frame": frame_name,
                    "expectation": check.name,
                    "type": m["config"].type,
                    "column": m["config"].kwargs.get("column"),
                    "success": m["success"],
                    "severity": check.severity,
                    "observed": None if observed is None else str(observed)[:500],
                    "unexpected": unexpected,
                    "elements": m["elements"],
                    "outcome": outcome,
                    "description": check.description,
                }
            )
        log(
            f"  validated {frame_name}: {frame_rows:,} rows in {len(chunk_sqls)} chunk(s), "
            f"{len(frame_checks)} expectations ({time.perf_counter() - t0:.1f}s)"
        )
    con.execute("BEGIN TRANSACTION")
    try:
        if any(f.id_column for f in frames.values()):
            # the quarantine is the current verdict on the current raw versions: replace the verdicts
            # of what this run validated (everything, unless the scope is incremental)
            if scope is None or scope.full:
                con.execute(f"DELETE FROM {QUARANTINE_TABLE} WHERE suite = ?", [suite_name])
            else:
                con.execute(
                    f"""DELETE FROM {QUARANTINE_TABLE} WHERE suite = ? AND (resource_type, resource_id) IN (
                            SELECT (resource_type, resource_id) FROM {SCOPE_TABLE})""",
                    [suite_name],
                )
        if quarantine_rows:
            con.executemany(
                f"""INSERT INTO {QUARANTINE_TABLE} (resource_type, resource_id, version_id, expectation, suite,
                        observed_value, run_id, quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                quarantine_rows,
            )
        con.executemany(
            """INSERT INTO quality.expectation_results (run_id, suite, frame, expectation, expectation_type,
                   column_name, success, severity, observed_value, unexpected_count, element_count, outcome,
                   description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    run_id,
                    suite_name,
                    r["frame"],
                    r["expectation"],
                    r["type"],
                    r["column"],
                    r["success"],
                    r["severity"],
                    r["observed"],
                    r["unexpected"],
                    r["elements"],
                    r["outcome"],
                    r["description"],
                )
                for r in result.results
            ],
        )
        con.execute(
            """INSERT INTO quality.validation_runs (run_id, suite, started_at, finished_at, success,
                   critical_failures, warnings, quarantined_records, rows_validated, scope, through_load_seq,
                   checks_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                run_id,
                suite_name,
                started,
                datetime.now(UTC),
                result.passed,
                len(result.critical_failures),
                len(result.warnings),
                sum(result.quarantined.values()),
                rows_validated,
                "full" if scope is None else scope.label,
                None if scope is None else scope.through_load_seq,
                fingerprint,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if docs_dir is not None:
        t0 = time.perf_counter()
        context.build_data_docs()
        try:
            make_offline(docs_dir)
        except AssetsMissing as e:
            log(f"  note: {e}")
        result.docs_index = str(_write_index(docs_dir))
        log(f"  Data Docs: {suite_docs}/index.html ({time.perf_counter() - t0:.1f}s)")
    return result


def _write_index(docs_dir: Path) -> Path:
    """One page linking each suite's GX Data Docs site (each gate run rebuilds its own site)."""
    suites = sorted(p.parent.name for p in docs_dir.glob("*/index.html"))
    links = "\n".join(f'<li><a href="{s}/index.html">{s}</a></li>' for s in suites)
    index = docs_dir / "index.html"
    index.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Quality gates</title></head>
<body><h1>Quality gates — Great Expectations Data Docs</h1><ul>{links}</ul>
<p>Every result is also queryable in DuckDB: quality.validation_runs, quality.expectation_results,
quality.quarantined_records.</p></body></html>
""")
    return index
