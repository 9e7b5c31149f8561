"""`make demo`: the nightly refresh end to end against the synthetic clinic on 127.0.0.1.

The refresh runs as the real Airflow DAG (`airflow dags test`), so the demo exercises exactly what the
nightly schedule runs; `--in-process` runs the same steps through `outcomes refresh` instead.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from pipeline import local_ehr, refresh
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "nightly_outcomes_refresh"


def airflow_env(airflow_home: Path, extra: dict[str, str]) -> dict[str, str]:
    """Environment for Airflow 3 on a two-core machine, bound to 127.0.0.1, no examples."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        **extra,
    }


def run_dag(airflow_home: Path, outcomes_env: dict[str, str], log=print, run=subprocess.run) -> None:
    """`airflow db migrate` (first time) then `airflow dags test` of the nightly DAG. `run` starts the
    `airflow` console script (subprocess.run's signature)."""
    env = airflow_env(airflow_home, outcomes_env)
    airflow = str(Path(sys.executable).parent / "airflow")
    if not (airflow_home / "airflow.db").exists():
        log(f"airflow: initialising {airflow_home} (first run only)")
        proc = run([airflow, "db", "migrate"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    log(f"airflow: dags test {DAG_ID} (task logs in {airflow_home / 'dags_test.log'})")
    with open(airflow_home / "dags_test.log", "w") as out:
        proc = run([airflow, "dags", "test", DAG_ID], env=env, stdout=out, stderr=subprocess.STDOUT)
    states = _task_states(airflow_home)
    for task, state in states.items():
        log(f"  {task:<16} {state}")
    if proc.returncode != 0 or any(s != "success" for s in states.values()):
        raise RuntimeError(
            f"the DAG run failed; see {airflow_home / 'dags_test.log'} and alerts.ndjson beside the warehouse"
        )


def _task_states(airflow_home: Path) -> dict[str, str]:
    """Each task's final state in the latest run, from Airflow's own metadata database (the demo's is SQLite):
    the log's interleaved lines cannot be trusted to say which task failed."""
    con = sqlite3.connect(f"file:{airflow_home / 'airflow.db'}?mode=ro", uri=True)
    try:
        rows = con.execute(
            """SELECT task_id || CASE WHEN map_index >= 0 THEN '[' || map_index || ']' ELSE '' END,
                      coalesce(state, 'none') FROM task_instance
               WHERE dag_id = ? AND run_id = (SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)
               ORDER BY start_date IS NULL, start_date, task_id""",
            [DAG_ID, DAG_ID],
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def run(
    data_dir: Path, patients: int = 300, seed: int = 42, port: int = 8765, in_process: bool = False, log=print
) -> None:
    ehr_dir = data_dir / "ehr"
    local_ehr.ensure_clinic(ehr_dir, patients, seed, log)
    client_id, key = local_ehr.ensure_client(ehr_dir, data_dir / "secrets", log)
    warehouse = (data_dir / "warehouse.duckdb").resolve()
    with local_ehr.running_ehr(ehr_dir, port, log=log) as base:
        if in_process:
            settings = Settings.from_env(ehr_url=base, client_id=client_id, private_key_path=key, warehouse=warehouse)
            refresh.run(settings, log=log)
        else:
            run_dag(
                data_dir / "airflow",
                {
                    "OUTCOMES_EHR_URL": base,
                    "OUTCOMES_CLIENT_ID": client_id,
                    "OUTCOMES_PRIVATE_KEY_PATH": str(key.resolve()),
                    "OUTCOMES_WAREHOUSE": str(warehouse),
                },
                log,
            )
    settings = Settings.from_env(warehouse=warehouse)
    log("")
    log(f"warehouse:   {warehouse}  (the pipeline's own, with PHI)")
    log(f"analysts:    {settings.analytics_db.resolve()}  (duckdb -readonly ...; schema marts; docs/analysts.md)")
    log(f"dashboards:  {settings.dashboards.resolve() / 'relapse.html'}")
    log(f"quality:     {warehouse.parent / 'quality_docs' / 'index.html'}")
    if settings.lake is not None:
        log(f"lake:        {settings.lake.resolve()}  (each load as Parquet; PHI, like the warehouse)")
    log(f"clinic:      {ehr_dir.resolve()} (latent truth in truth/); add a day with:")
    log(f"             .venv/bin/outcomes ehr generate --continue-days 1 --out {ehr_dir} && make demo")
