"""One function per pipeline step. The CLI (`outcomes ...`) and the Airflow DAG both call these."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingestion.private_files import private_umask
from pipeline.settings import Settings
from pipeline.writer_lock import writer

Log = Callable[[str], None]


def _writes_warehouse(step: Callable) -> Callable:
    """The step writes the warehouse (or lands exports for it): it holds the writer lock (another writer gets
    WarehouseInUse at once, naming this one), and what it writes holds PHI: 0600 files, 0700 folders."""

    @functools.wraps(step)
    def run(settings: Settings, *args, **kwargs):
        with writer(settings.warehouse, step.__name__), private_umask():
            return step(settings, *args, **kwargs)

    return run


def _stderr_progress(label: str) -> Callable[[str, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def report(name: str, done: int) -> None:
        print(f"\r  {label} {name}: {done:,} lines", end="", file=sys.stderr, flush=True)

    return report


@dataclass
class ExtractSummary:
    landing: str
    mode: str
    since: str | None
    transaction_time: str
    counts: dict[str, int]
    resumed: bool
    retries: int
    reauths: int


@_writes_warehouse
def extract(settings: Settings, full: bool = False, log: Log = print) -> ExtractSummary:
    """EHR -> landing folder (Bulk Data export, or the patient search crawl), incremental by default."""
    import httpx

    from ingestion.bulk_export import BulkExporter
    from ingestion.fhir_client import FhirClient, SmartAuth
    from ingestion.search_crawl import SearchCrawler
    from ingestion.warehouse import committed_watermark, connect

    if not settings.ehr_url:
        raise ValueError("no EHR URL: set OUTCOMES_EHR_URL or pass --ehr-url (or load files with --from-dir)")
    since = None
    if not full and Path(settings.warehouse).exists():
        con = connect(settings.warehouse, read_only=True)
        try:
            tables = con.execute(
                "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = 'load_log'"
            ).fetchall()
            since = committed_watermark(con, settings.source_name, settings.site_id) if tables else None
        finally:
            con.close()
    http = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0))
    try:
        auth = None
        if settings.client_id:
            auth = SmartAuth(
                settings.ehr_url,
                settings.client_id,
                settings.private_key(),
                http,
                scope=settings.scopes,
                key_id=settings.client_kid,
            )
        client = FhirClient(settings.ehr_url, auth, http, log=log)
        common = {"types": settings.export_types, "log": log}
        landing, group, source = Path(settings.landing), settings.group_id, settings.source_name
        if settings.extract_mode == "bulk":
            runner = BulkExporter(client, landing, group, source, type_filters=settings.type_filters, **common)
        else:
            runner = SearchCrawler(client, landing, group, source, **common)
        r = runner.run(since)
    finally:
        http.close()
    summary = ExtractSummary(
        str(r.landing), settings.extract_mode, since, r.transaction_time, r.counts, r.resumed, r.retries, r.reauths
    )
    log(
        f"extract: {sum(r.counts.values()):,} resources landed in {r.landing} "
        f"({'incremental since ' + since if since else 'full'}; transactionTime {r.transaction_time}; "
        f"{r.retries} retries, {r.reauths} re-authentications)"
    )
    for t, n in sorted(r.counts.items()):
        log(f"  {t:<26} {n:>10,}")
    return summary


@dataclass
class LoadSummary:
    loads: list[dict]

    @property
    def totals(self) -> dict[str, int]:
        keys = ("read", "loaded", "duplicate", "quarantined")
        return {k: sum(ld["totals"][k] for ld in self.loads) for k in keys}


@_writes_warehouse
def load(settings: Settings, from_dir: Path | None = None, log: Log = print, progress: bool = True) -> LoadSummary:
    """Landing folder(s) not yet loaded, or any folder of FHIR files -> the DuckDB raw layer."""
    from ingestion.lake import export_committed_loads
    from ingestion.landing import complete_landings
    from ingestion.load_plan import for_site
    from ingestion.raw_load import Loader, plan_from_directory, plan_from_landing
    from ingestion.warehouse import connect, ensure_raw_schema

    con = connect(settings.warehouse)
    try:
        ensure_raw_schema(con)
        loader = Loader(con, log=log, progress=_stderr_progress("loading") if progress else None)
        if from_dir is not None:
            plans = [for_site(plan_from_directory(Path(from_dir)), settings.site_id)]
        else:
            plans = [
                for_site(plan_from_landing(d), settings.site_id) for d in complete_landings(Path(settings.landing))
            ]
            plans = [p for p in plans if not loader.already_committed(p.load_id)]
            if not plans:
                log(f"load: nothing new in {settings.landing}")
        loads = []
        for plan in plans:
            result = loader.load(plan)
            if loader.progress:
                print(file=sys.stderr)
            loads.append(
                {
                    "load_id": result.load_id,
                    "skipped": result.skipped,
                    "counts": result.counts,
                    "totals": result.totals()
                    if result.counts
                    else dict.fromkeys(("read", "loaded", "duplicate", "quarantined"), 0),
                    "tombstones": result.tombstones,
                    "export_errors": result.export_errors,
                }
            )
            if not result.skipped:
                log(
                    f"load {result.load_id}: {_fmt(result.totals())}; {result.tombstones} tombstones, "
                    f"{result.export_errors} export errors"
                )
                log(f"  {'type':<26} {'read':>9} {'loaded':>9} {'duplicate':>9} {'quarantined':>11}")
                for t, c in sorted(result.counts.items()):
                    log(f"  {t:<26} {c['read']:>9,} {c['loaded']:>9,} {c['duplicate']:>9,} {c['quarantined']:>11,}")
        if settings.lake is not None:
            # tonight's loads, and any an earlier night committed but did not get into the lake
            export_committed_loads(con, settings.lake, settings.site_id, log)
        return LoadSummary(loads)
    finally:
        con.close()


def _fmt(t: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in t.items())


@_writes_warehouse
def transform(
    settings: Settings,
    log: Log = print,
    dbt_vars: dict | None = None,
    full_refresh: bool = False,
    unit_tests: bool = False,
) -> dict:
    """dbt build: staging -> intermediate -> marts (into marts_build), with the data tests (and the unit
    tests of the outcome definitions if `unit_tests`; CI runs them, the nightly build need not).
    Incremental models read only what changed since their last run unless `full_refresh`. On the Spark engine
    the same project builds on Spark from the lake, and the marts come back into marts_build."""
    from expectations.store import ensure_quality_schema
    from ingestion.warehouse import connect, ensure_raw_schema
    from pipeline.transform import build

    con = connect(settings.warehouse)
    try:  # the sources dbt reads must exist even before the first load or gate
        ensure_raw_schema(con)
        ensure_quality_schema(con)
    finally:
        con.close()
    _ensure_staging(settings, log)  # usually a no-op: the stage step built them tonight if anything changed

    if settings.engine == "spark":
        from pipeline.spark_engine import build_on_spark

        statuses: dict = {}
        build_on_spark(
            Path(settings.warehouse),
            settings.lake,
            lambda: statuses.update(
                build(
                    Path(settings.warehouse),
                    dbt_vars={**_staging_vars(settings), **(dbt_vars or {})},
                    log=log,
                    unit_tests=unit_tests,
                    target="spark",
                )
            ),
            settings.spark,
            log,
        )
        return statuses
    return build(
        Path(settings.warehouse),
        dbt_vars={**_staging_vars(settings), **(dbt_vars or {})},
        log=log,
        full_refresh=full_refresh,
        unit_tests=unit_tests,
        staging_current=not full_refresh,
    )


@_writes_warehouse
def stage(settings: Settings, log: Log = print) -> None:
    """The seeds and the staging views (the one FHIR parser the raw gate and dbt both read), rebuilt by dbt only
    when missing or when their SQL, macros, seeds or vars changed; otherwise a check of their fingerprint."""
    from expectations.store import ensure_quality_schema
    from ingestion.warehouse import connect, ensure_raw_schema

    con = connect(settings.warehouse)
    try:  # the sources the views read must exist even before the first load
        ensure_raw_schema(con)
        ensure_quality_schema(con)
    finally:
        con.close()
    _ensure_staging(settings, log)


def _staging_vars(settings: Settings) -> dict:
    return {"clinic_timezone": settings.clinic_tz}


def _ensure_staging(settings: Settings, log: Log) -> None:
    """The seeds and staging views, built by dbt if missing or out of date (the one FHIR parser)."""
    from expectations.reference import staging_files
    from pipeline.transform import ensure_staging

    ensure_staging(Path(settings.warehouse), _staging_vars(settings), staging_files(), log=log)


class QualityGateError(RuntimeError):
    """A critical expectation failed: the refresh stops and the published marts stay as they were."""


def quality_docs_dir(settings: Settings) -> Path:
    return Path(settings.warehouse).resolve().parent / "quality_docs"  # GX needs an absolute path


def _gate(settings: Settings, suite: str, log: Log, raise_on_critical: bool, full: bool = False):
    from expectations import scope as raw_scope
    from expectations.gate import run_suite
    from expectations.mart_suite import mart_checks, mart_frames
    from expectations.raw_suite import raw_checks, raw_frames, raw_suite_files
    from expectations.store import ensure_quality_schema
    from ingestion.warehouse import connect, ensure_raw_schema
    from pipeline.publish import BUILD_SCHEMA

    con = connect(settings.warehouse)
    try:
        if suite == "raw":
            ensure_raw_schema(con)
            ensure_quality_schema(con)
            con.close()  # dbt needs the file to itself
            _ensure_staging(settings, log)  # a no-op after the night's stage step; needed by `outcomes check`
            con = connect(settings.warehouse)
            fingerprint = raw_scope.checks_fingerprint(raw_suite_files())
            scope = raw_scope.plan(con, fingerprint, force_full=full)
            in_scope = raw_scope.materialize(con, scope)
            log(
                f"raw validation: {scope.label} ({scope.reason})"
                + ("" if scope.full else f"; records in scope: {_fmt(in_scope) or 'none'}")
            )
            now = time.time() + 86400  # a day of clock skew between the EHR and this machine is tolerated
            result = run_suite(
                con,
                "raw",
                raw_frames(scoped=not scope.full),
                lambda gx: raw_checks(gx, now),
                quality_docs_dir(settings) if settings.data_docs else None,
                log,
                scope=scope,
                fingerprint=fingerprint,
            )
        else:
            docs = quality_docs_dir(settings) if settings.data_docs else None
            result = run_suite(con, "marts", mart_frames(BUILD_SCHEMA), mart_checks, docs, log)
    finally:
        con.close()
    for line in result.summary_lines():
        log(line)
    if raise_on_critical and not result.passed:
        raise QualityGateError(
            f"{suite} quality gate failed: "
            + "; ".join(result.critical_failures)
            + f" (details: quality.expectation_results run {result.run_id}"
            + (f"; {result.docs_index})" if result.docs_index else ")")
        )
    return result


@_writes_warehouse
def validate_raw(settings: Settings, log: Log = print, raise_on_critical: bool = True, full: bool = False):
    """Raw gate: row-level failures are quarantined; critical failures stop the refresh. Incremental (the
    records loaded since the last passed run, plus the current quarantine) unless `full`."""
    return _gate(settings, "raw", log, raise_on_critical, full)


@_writes_warehouse
def validate_marts(settings: Settings, log: Log = print, raise_on_critical: bool = True):
    """Mart gate on the freshly built marts (marts_build), before they are published."""
    return _gate(settings, "marts", log, raise_on_critical)


@_writes_warehouse
def publish(settings: Settings, log: Log = print) -> list[str]:
    """Copy the accepted marts to the `marts` schema in one transaction, then write the analysts' database
    (and its Parquet copies) from them and move it into place."""
    from ingestion.warehouse import connect
    from pipeline.analytics import publish_analytics
    from pipeline.publish import publish as publish_marts
    from pipeline.transform import PUBLISHED_NODES, build

    # the night's health (both gates' verdicts, the quarantine) as marts beside the ones being published
    build(Path(settings.warehouse), _staging_vars(settings), select=PUBLISHED_NODES, log=log, quiet=True)
    con = connect(settings.warehouse)
    try:
        tables = publish_marts(con)
        courses, missing = _coverage(con)
        analytics = publish_analytics(con, settings.analytics_db)
    finally:
        con.close()
    log(f"published {len(tables)} marts to schema marts: {courses:,} treatment courses")
    log(f"  analysts' database: {analytics.database} (Parquet: {analytics.parquet}/)")
    if courses == 0:
        log("  no ketamine treatment courses in the data: the marts are empty but valid (check the code seeds)")
    if missing:
        log(f"  no assessments for: {', '.join(missing)}")
    return tables


def _coverage(con) -> tuple[int, list[str]]:
    """Courses in the published marts, and the outcome instruments without a single assessment."""
    courses = con.execute("SELECT count(*) FROM marts.fct_treatment_courses").fetchall()[0][0]
    missing = con.execute("""
        SELECT DISTINCT c.instrument_label FROM reference.instrument_catalogue c
        WHERE c.is_outcome AND c.instrument NOT IN (SELECT DISTINCT instrument FROM marts.fct_assessments)
        ORDER BY 1""").fetchall()
    return courses, [r[0] for r in missing]


def dashboards(settings: Settings, log: Log = print) -> list[Path]:
    """Rebuild the dashboards from the report marts in the analysts' database (read-only)."""
    from dashboards.data import read_marts
    from dashboards.pages import build_pages

    definitions = Path(__file__).resolve().parents[1] / "docs" / "definitions.md"
    pages = build_pages(
        read_marts(settings.analytics_db),
        settings.dashboards,
        definitions.read_text() if definitions.exists() else None,
        clinic_tz=settings.clinic_tz,
    )
    log(f"dashboards: {settings.dashboards.resolve()}/relapse.html (+ {len(pages) - 1} more files)")
    return pages
