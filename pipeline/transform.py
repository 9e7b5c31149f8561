"""The dbt step: `dbt build` (seeds, models, data tests; unit tests on request) in-process on the warehouse file."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"


class TransformError(RuntimeError):
    pass


@contextmanager
def _env(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def dbt_log_dir(warehouse: Path) -> Path:
    return Path(warehouse).resolve().parent / "logs"


def dbt_target_dir(warehouse: Path) -> Path:
    """dbt's compiled SQL, run results and partial-parse state, kept per warehouse folder: two warehouses built
    from one checkout (a test beside the demo, two sites) neither overwrite each other's state nor force each
    other's next parse to start over."""
    return Path(warehouse).resolve().parent / "dbt_target"


def dbt_command(
    warehouse: Path, args: list[str], dbt_vars: dict | None = None, quiet: bool = False, target: str = "default"
) -> tuple[list[str], dict[str, str]]:
    """The dbt command line (after `dbt`) and the environment the pipeline runs dbt with on `warehouse`."""
    project = Path(os.environ.get("OUTCOMES_DBT_PROJECT_DIR", DBT_PROJECT))
    cli = [*args, "--project-dir", str(project), "--profiles-dir", str(project)]
    target_path = dbt_target_dir(warehouse) if target == "default" else dbt_target_dir(warehouse) / target
    cli += ["--target", target, "--target-path", str(target_path)]
    if dbt_vars:
        cli += ["--vars", json.dumps(dbt_vars)]
    if quiet:
        cli.insert(0, "--quiet")
    env = {
        "OUTCOMES_WAREHOUSE": str(Path(warehouse).resolve()),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        # dbt's file log defaults to debug: every query of every node, each formatted and scrubbed of secrets
        # on the way. Node-level lines are kept; set DBT_LOG_LEVEL_FILE=debug to see the queries.
        "DBT_LOG_LEVEL_FILE": os.environ.get("DBT_LOG_LEVEL_FILE", "info"),
        # The console gets dbt's warnings and errors only (the step prints its own summary); every node's line
        # goes to the log file beside the warehouse.
        "DBT_LOG_LEVEL": os.environ.get("DBT_LOG_LEVEL", "warn"),
        "DBT_LOG_PATH": str(dbt_log_dir(warehouse)),
    }
    return cli, env


def dbt_invoke(
    warehouse: Path, args: list[str], dbt_vars: dict | None = None, quiet: bool = False, target: str = "default"
):
    """Run one dbt command against `warehouse` (target `spark`: in the process's Spark session); returns dbt's
    result object."""
    from dbt.cli.main import dbtRunner

    cli, env = dbt_command(warehouse, args, dbt_vars, quiet, target)
    with _env(**env):
        try:
            return dbtRunner().invoke(cli)
        finally:
            # a Spark build opened no DuckDB; importing dbt-duckdb after it kept objects alive at exit (a page
            # of nanobind leak reports on stderr)
            if target == "default":
                _release_duckdb()


def _release_duckdb() -> None:
    """dbt-duckdb keeps its database open for the life of the process; the next step (or an analyst in the
    same Python session) must be able to open the file afterwards."""

    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    env = DuckDBConnectionManager._ENV
    if env is not None:
        env.close()
    DuckDBConnectionManager.close_all_connections()
    gc.collect()


def build(
    warehouse: Path,
    dbt_vars: dict | None = None,
    select: str | None = None,
    log: Callable[[str], None] = print,
    quiet: bool = False,
    full_refresh: bool = False,
    unit_tests: bool = False,
    data_tests: bool = True,
    staging_current: bool = False,
    target: str = "default",
) -> dict:
    """`dbt build` (incremental models rebuilt whole if `full_refresh`); raises TransformError naming what
    failed. Unit tests run only if asked: their fixtures are fixed, so they test the code, not the night's
    data (dbt's advice: run them in development and CI, not in production builds). `staging_current`: the
    seeds and staging views are known to be current (`ensure_staging`), so they are not rebuilt -- their data
    tests still run (tests are then selected for themselves, not through the models they test)."""
    args = ["build"] + (["--select", *select.split()] if select else []) + (["--full-refresh"] if full_refresh else [])
    if not select:  # the published health marts are built by the publish step, after the gates
        args += ["--exclude", PUBLISHED_NODES, *(STAGING_NODES.split() if staging_current else [])]
        if staging_current:
            args += ["--indirect-selection", "empty"]
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if not data_tests:
        args += ["--exclude-resource-type", "test"]
    result = dbt_invoke(warehouse, args, dbt_vars, quiet, target)
    if result.exception is not None:
        raise TransformError(f"dbt could not run: {result.exception}")
    statuses: dict[str, int] = {}
    failed = []
    for r in result.result or []:
        status = str(r.status)
        statuses[status] = statuses.get(status, 0) + 1
        if status in ("error", "fail"):
            failed.append(f"{r.node.name}: {(r.message or '').strip()[:300]}")
    log_file = dbt_log_dir(warehouse) / "dbt.log"
    if not result.success:
        raise TransformError(
            "dbt build failed:\n  " + "\n  ".join(failed or ["see the dbt log"]) + f"\n  (dbt log: {log_file})"
        )
    log(f"dbt build: {', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))} (log: {log_file})")
    return statuses


STAGING_SELECTION = "resource_type:seed path:models/staging"
STAGING_NODES = "resource_type:seed path:models/staging,resource_type:model"  # the same, without their tests
PUBLISHED_NODES = "path:models/published"


def ensure_staging(warehouse: Path, dbt_vars: dict, files: list[str], log: Callable[[str], None] = print) -> bool:
    """The staging views and seed tables the raw gate reads (the one FHIR parser), built by dbt when missing or
    when what they are made of -- `files`, the seeds, the dbt vars -- changed since; True if it built them."""
    import hashlib

    from ingestion.warehouse import connect

    project = Path(os.environ.get("OUTCOMES_DBT_PROJECT_DIR", DBT_PROJECT))
    h = hashlib.sha256(json.dumps(dbt_vars, sort_keys=True).encode())
    for f in [*files, *sorted(str(p) for p in (project / "seeds").glob("*.csv")), str(project / "dbt_project.yml")]:
        h.update(Path(f).read_bytes())
    fingerprint = h.hexdigest()[:16]
    con = connect(warehouse)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS quality.staging_builds (fingerprint VARCHAR, built_at TIMESTAMPTZ)")
        last = con.execute("SELECT fingerprint FROM quality.staging_builds ORDER BY built_at DESC LIMIT 1").fetchall()
        views = con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'staging' AND view_name LIKE 'stg_fhir__%'"
        ).fetchall()[0][0]
    finally:
        con.close()
    if last and last[0][0] == fingerprint and views > 0:
        return False
    log("staging views and seeds: building them first (new, or their SQL, seeds or vars changed)")
    build(warehouse, dbt_vars, select=STAGING_SELECTION, log=log, quiet=True, data_tests=False)
    con = connect(warehouse)
    try:
        con.execute("INSERT INTO quality.staging_builds (fingerprint, built_at) VALUES (?, now())", [fingerprint])
    finally:
        con.close()
    return True
