"""Pipeline subcommands of `outcomes`: extract, load, refresh, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli_support import CliError, _port, _positive
from pipeline.settings import ENGINES, Settings


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return Settings.from_env(
            ehr_url=getattr(args, "ehr_url", None),
            warehouse=Path(args.warehouse) if getattr(args, "warehouse", None) else None,
            landing=Path(args.landing) if getattr(args, "landing", None) else None,
            extract_mode=getattr(args, "mode", None),
            engine=getattr(args, "engine", None),
        )
    except ValueError as e:
        raise CliError(str(e)) from None


def _run(fn, *a, **kw):
    """Run a step, turning expected failures into one clear line."""
    from ingestion.fhir_client import ExtractError
    from ingestion.warehouse import WarehouseBusy
    from pipeline.steps import QualityGateError
    from pipeline.transform import TransformError
    from pipeline.writer_lock import WarehouseInUse

    try:
        return fn(*a, **kw)
    except WarehouseInUse as e:
        raise CliError(str(e), exit_code=e.exit_code) from None
    except (ExtractError, WarehouseBusy, FileNotFoundError, ValueError, TransformError, QualityGateError) as e:
        raise CliError(str(e)) from None


def cmd_extract(args: argparse.Namespace) -> int:
    from pipeline import steps

    _run(steps.extract, _settings(args), full=args.full)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from pipeline import steps

    _run(steps.load, _settings(args), from_dir=Path(args.from_dir) if args.from_dir else None)
    return 0


def cmd_transform(args: argparse.Namespace) -> int:
    from pipeline import steps

    _run(steps.transform, _settings(args), full_refresh=args.full_refresh, unit_tests=args.unit_tests)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline import steps

    settings = _settings(args)
    suites = ["raw", "marts"] if args.suite == "all" else [args.suite]
    failed = []
    for suite in suites:
        if suite == "raw":
            result = _run(steps.validate_raw, settings, raise_on_critical=False, full=args.full)
        else:
            result = _run(steps.validate_marts, settings, raise_on_critical=False)
        if not result.passed:
            failed.append(suite)
    if failed:
        raise CliError(f"critical expectations failed in: {', '.join(failed)} (see quality.expectation_results)")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from pipeline import refresh

    settings = _settings(args)
    if not args.from_dir and not settings.ehr_url:
        raise CliError("say where the data comes from: --ehr-url URL (or OUTCOMES_EHR_URL), or --from-dir DIR")
    _run(refresh.run, settings, from_dir=Path(args.from_dir) if args.from_dir else None, full=args.full)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline import demo

    try:
        _run(
            demo.run,
            Path(args.data_dir),
            patients=args.patients,
            seed=args.seed,
            port=args.port,
            in_process=args.in_process,
        )
    except RuntimeError as e:
        raise CliError(str(e)) from None
    return 0


def _engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="where dbt builds the marts: duckdb (default, in the warehouse) or spark (on Spark over the lake; "
        "needs `make spark`); default OUTCOMES_ENGINE",
    )


def _common(p: argparse.ArgumentParser, ehr: bool = False) -> None:
    p.add_argument("--warehouse", help="DuckDB warehouse file (default data/warehouse.duckdb or OUTCOMES_WAREHOUSE)")
    p.add_argument("--landing", help="landing folder (default: landing/ beside the warehouse)")
    if ehr:
        p.add_argument("--ehr-url", help="FHIR base URL of the EHR (default OUTCOMES_EHR_URL)")
        p.add_argument(
            "--mode",
            choices=("bulk", "search"),
            help="bulk = Bulk Data Group export (default); search = patient-scoped search crawl",
        )


def register(sub) -> None:
    e = sub.add_parser(
        "extract",
        help="pull from the EHR into the landing folder (incremental by default)",
        description="Pull from the EHR (SMART Backend Services auth; Bulk Data export or patient "
        "search) into the landing folder. Incremental from the last committed load unless --full. "
        "Credentials: OUTCOMES_CLIENT_ID and OUTCOMES_PRIVATE_KEY_PATH (or OUTCOMES_PRIVATE_KEY).",
    )
    _common(e, ehr=True)
    e.add_argument("--full", action="store_true", help="ignore the watermark: export everything")
    e.set_defaults(func=cmd_extract)

    ld = sub.add_parser(
        "load",
        help="load landed exports (or --from-dir DIR) into the DuckDB raw layer",
        description="Load every completed, not yet loaded landing folder — or a folder of NDJSON "
        "(plain/.gz) or Bundle JSON files with --from-dir — into the raw layer. A load "
        "becomes visible all at once, with its watermark. Bad lines go to raw.quarantine with a reason.",
    )
    _common(ld)
    ld.add_argument("--from-dir", help="load this folder of FHIR files instead of the landing folder")
    ld.set_defaults(func=cmd_load)

    t = sub.add_parser(
        "transform",
        help="dbt build: staging, intermediate and marts, with data tests (and unit tests with --unit-tests)",
        description="Run `dbt build` on the warehouse (seeds, models, data tests; the unit tests of the "
        "outcome definitions with --unit-tests).",
    )
    _common(t)
    t.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the incremental models from all history (the surrogate-key lookup is never rebuilt)",
    )
    t.add_argument(
        "--unit-tests",
        action="store_true",
        help="also run the dbt unit tests (hand-computed fixtures; `make test` runs them, nightly builds skip them)",
    )
    _engine(t)
    t.set_defaults(func=cmd_transform)

    c = sub.add_parser(
        "check",
        help="run the quality suites on demand; exits non-zero on a critical failure",
        description="Run the Great Expectations suites (raw: quarantine + critical checks on the raw layer; "
        "marts: invariants of the freshly built marts) and print a summary. Results go to quality.* and Data Docs.",
    )
    _common(c)
    c.add_argument("--suite", choices=("raw", "marts", "all"), default="all")
    c.add_argument(
        "--full",
        action="store_true",
        help="revalidate every raw record (default: records loaded since the last passed run, plus the quarantine)",
    )
    c.set_defaults(func=cmd_check)

    r = sub.add_parser(
        "refresh",
        help="the nightly refresh: extract, load, and the later steps, in-process",
        description="Run the whole refresh in-process with progress and a closing summary. Incremental by default.",
    )
    _common(r, ehr=True)
    r.add_argument("--from-dir", help="refresh from a folder of FHIR files instead of the EHR")
    r.add_argument(
        "--full", action="store_true", help="full export, raw revalidation and dbt rebuild instead of incremental"
    )
    _engine(r)
    r.set_defaults(func=cmd_refresh)

    d = sub.add_parser(
        "demo",
        help="generate a synthetic clinic, serve it on 127.0.0.1 and run the refresh",
        description="The quick start: a synthetic clinic (generated if absent) served by the local "
        "EHR on 127.0.0.1, then the nightly refresh end to end. Rerun after `outcomes ehr generate "
        "--continue-days 1 --out data/ehr` for an incremental night.",
    )
    d.add_argument("--data-dir", default="data", help="where the clinic, warehouse and dashboards go (default data)")
    d.add_argument("--patients", type=_positive, default=300, help="patients when generating (default 300)")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--port", type=_port, default=8765, help="local EHR port (default 8765; a free one if taken)")
    d.add_argument(
        "--in-process", action="store_true", help="run the steps through `outcomes refresh` instead of the Airflow DAG"
    )
    d.set_defaults(func=cmd_demo)
