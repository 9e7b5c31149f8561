"""The nightly DAG: integrity, real `airflow dags test` runs against the local EHR (incremental, failed)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import ROOT, EHRProcess, console_script_runner, outcomes

from dashboards.status import read_status
from ehr_simulator.generate import generate
from ehr_simulator.params import GeneratorConfig
from pipeline.demo import airflow_env, run_dag

INTEGRITY = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["nightly_outcomes_refresh"]
tasks = {t.task_id: {"retries": t.retries, "doc": bool(t.doc_md), "pool": t.pool, "owner": t.owner,
                     "backoff": bool(getattr(t, "retry_exponential_backoff", False)),
                     "callback": bool(t.on_failure_callback)} for t in dag.tasks}
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "schedule": str(dag.schedule) if hasattr(dag, "schedule") else None,
    "timetable": str(getattr(dag.timetable, "summary", dag.timetable)),
    "timezone": str(dag.timezone.name if hasattr(dag.timezone, "name") else dag.timezone),
    "catchup": dag.catchup, "max_active_runs": dag.max_active_runs, "tags": sorted(dag.tags),
    "doc": bool(dag.doc_md), "tasks": tasks,
    "order": [t.task_id for t in dag.topological_sort()] if hasattr(dag, "topological_sort") else [],
    "parse_seconds": max(getattr(s.duration, "total_seconds", lambda: s.duration)() for s in bag.dagbag_stats) if bag.dagbag_stats else None,
    "secrets_touched": sorted(m for m in sys.modules if m.startswith(("pipeline", "ingestion", "expectations"))),
}))
"""


# in order; the site.* tasks are mapped over the night's sites
NIGHT_TASKS = (
    "sites",
    "site.extract",
    "site.load",
    "stage",
    "validate_raw",
    "transform",
    "validate_marts",
    "publish",
    "dashboards",
)


def _integrity(tmp_path: Path, extra_env: dict | None = None) -> dict:
    env = airflow_env(
        tmp_path / "airflow", {"OUTCOMES_PRIVATE_KEY_PATH": str(tmp_path / "no-such-key.pem"), **(extra_env or {})}
    )
    proc = subprocess.run(
        [sys.executable, "-c", INTEGRITY, str(ROOT / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dag_integrity(tmp_path):
    info = _integrity(tmp_path)
    assert info["errors"] == {}
    assert "30 2 * * *" in info["timetable"] or "30 2 * * *" in str(info["schedule"])
    assert info["timezone"] == "America/Los_Angeles"
    assert info["catchup"] is False and info["max_active_runs"] == 1
    assert {"outcomes", "fhir"} <= set(info["tags"]) and info["doc"]
    tasks = info["tasks"]
    assert set(tasks) == set(NIGHT_TASKS)
    assert tasks["site.extract"]["retries"] >= 2 and tasks["site.extract"]["backoff"]
    assert all(t["doc"] and t["owner"] == "outcomes-data" and t["callback"] for t in tasks.values())
    writers = [k for k in tasks if k not in ("sites", "site.extract")]
    assert all(tasks[k]["pool"] == "duckdb_warehouse" for k in writers)
    # parsing reads no settings or secrets and imports none of the pipeline
    assert info["secrets_touched"] == []
    assert info["parse_seconds"] is not None and info["parse_seconds"] < 2.0


def test_dag_timezone_is_configurable(tmp_path):
    assert _integrity(tmp_path, {"OUTCOMES_CLINIC_TZ": "America/New_York"})["timezone"] == "America/New_York"
    # the Airflow Variable the tasks read wins over the environment
    both = {"OUTCOMES_CLINIC_TZ": "America/New_York", "AIRFLOW_VAR_OUTCOMES_CLINIC_TZ": "America/Chicago"}
    assert _integrity(tmp_path, both)["timezone"] == "America/Chicago"


def _rounded(row: tuple) -> tuple:
    # parallel aggregation may sum floats in another order: compare to 9 decimals
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def _fingerprint(wh: Path, tables: tuple[str, ...]) -> dict[str, str]:
    con = duckdb.connect(str(wh), read_only=True)
    out = {}
    for t in tables:
        rows = sorted(repr(_rounded(r)) for r in con.execute(f"SELECT * FROM marts.{t}").fetchall())
        out[t] = hashlib.sha256(repr(rows).encode()).hexdigest()
    con.close()
    return out


REPORTS = (
    "rpt_relapse_free_survival",
    "rpt_protocol_summary",
    "rpt_outcome_rates_by_week",
    "rpt_rater_concordance",
    "rpt_score_trajectories",
    "rpt_cohort_summary",
)


def _outcomes_by_patient(wh: Path) -> list[tuple]:
    """fct_course_outcomes keyed by EHR patient id (through the restricted lookup), for cross-warehouse checks."""
    con = duckdb.connect(str(wh), read_only=True)
    rows = con.execute("""
        SELECT k.patient_id, split_part(o.course_id, '-c', 2), o.instrument, o.baseline_score, o.endpoint_score,
               o.is_responder, o.is_remitter, o.relapsed, o.days_to_relapse_or_censor, o.relapse_reason,
               o.course_status, o.evaluability, o.relapse_status
        FROM marts.fct_course_outcomes o JOIN restricted.int_patients_keyed k USING (patient_key)""").fetchall()
    con.close()
    return sorted(map(repr, rows))


def _provisional_courses(wh: Path) -> set[str]:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT course_id FROM marts.fct_course_outcomes WHERE evaluability = 'provisional'"
            ).fetchall()
        }
    finally:
        con.close()


class _Clinic:
    """A generated clinic served over FHIR by the stand-in EHR, a registered client, and the environment a
    night needs (the warehouse only through an Airflow Variable: the tasks and the failure callback must both
    use it; `cli_env` gives the same warehouse to the CLI)."""

    def __init__(self, tmp_path: Path, patients: int, seed: int) -> None:
        self.dir = tmp_path / "ehr"
        generate(GeneratorConfig(patients=patients, seed=seed), self.dir)
        key = tmp_path / "client.pem"
        outcomes("ehr", "register-client", "--data", str(self.dir), "--key-out", str(key), "--client-id", "dag-test")
        self.warehouse = tmp_path / "wh" / "warehouse.duckdb"
        self.airflow_home = tmp_path / "airflow"
        self.server = EHRProcess(self.dir)
        self.env = {
            "OUTCOMES_EHR_URL": self.server.base,
            "OUTCOMES_CLIENT_ID": "dag-test",
            "OUTCOMES_PRIVATE_KEY_PATH": str(key),
            "AIRFLOW_VAR_OUTCOMES_WAREHOUSE": str(self.warehouse),
            "OUTCOMES_DATA_DOCS": "off",  # the quality tests read them
        }

    def cli_env(self, warehouse: Path | None = None) -> dict[str, str]:
        return {**self.env, "OUTCOMES_WAREHOUSE": str(warehouse or self.warehouse)}


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory):
    """A 100-patient clinic served by the stand-in EHR; its first night by hand (`outcomes refresh`, the same
    steps), twenty more days of clinic, the second night by the DAG. The server stays up for the module."""
    clinic = _Clinic(tmp_path_factory.mktemp("dag"), 100, 77)
    try:
        wh = clinic.warehouse
        outcomes("refresh", env=clinic.cli_env())
        con = duckdb.connect(str(wh), read_only=True)
        first = {
            "courses": con.execute("SELECT count(*) FROM marts.fct_treatment_courses").fetchall()[0][0],
            "read": con.execute("SELECT sum(read) FROM raw.load_counts").fetchall()[0][0],
            "pages": (wh.parent / "dashboards" / "relapse.html").exists(),
            "open_courses": _provisional_courses(wh),
        }
        con.close()
        outcomes("ehr", "generate", "--continue-days", "20", "--out", str(clinic.dir))
        reported: list[str] = []
        run_dag(clinic.airflow_home, clinic.env, log=reported.append, run=console_script_runner())
        yield clinic, first, reported
    finally:
        clinic.server.stop()


def test_the_dag_continues_a_night_incrementally_and_equals_a_full_refresh(two_nights):
    """Only the delta comes through the DAG's night, courses open on the first night are final on the second,
    and the marts equal a full refresh of the same data into a fresh warehouse."""
    clinic, first, reported = two_nights
    wh = clinic.warehouse
    assert first["courses"] > 60 and first["pages"] and first["open_courses"]
    assert [line.split() for line in reported if line.startswith("  ")] == [
        [f"{task}[0]" if task.startswith("site.") else task, "success"]
        for task in NIGHT_TASKS  # one site
    ]
    con = duckdb.connect(str(wh), read_only=True)
    loads = con.execute("""SELECT l.since, sum(c.read) FROM raw.load_log l JOIN raw.load_counts c USING (load_id)
                           GROUP BY l.load_id, l.since, l.load_seq ORDER BY l.load_seq""").fetchall()
    con.close()
    assert len(loads) == 2 and loads[0][0] is None and loads[1][0] is not None
    assert loads[1][1] < first["read"] / 5  # only the delta came through
    assert first["open_courses"] - _provisional_courses(wh), "a course open on the first night is final on the second"
    assert read_status(wh.parent / "dashboards")["last_attempt_ok"] is True

    full = wh.parent.parent / "full" / "warehouse.duckdb"
    outcomes("refresh", "--full", env=clinic.cli_env(full))
    assert _fingerprint(wh, REPORTS) == _fingerprint(full, REPORTS)
    assert _outcomes_by_patient(wh) == _outcomes_by_patient(full)


def test_a_failed_dag_run_alerts_and_keeps_yesterdays_marts(two_nights):
    """A critical quality failure in a DAG run (the module's third night, after the DAG's own): the run fails
    at the gate, later tasks do not run, the failure callback records the alert (file, quality.alerts, the
    pages' status) beside the Variable's warehouse, and yesterday's marts stay."""
    clinic, _, _ = two_nights
    wh = clinic.warehouse
    before = _fingerprint(wh, REPORTS + ("fct_course_outcomes", "dim_patients"))
    con = duckdb.connect(str(wh))
    con.execute("INSERT INTO raw.patient_versions_landed SELECT * FROM raw.patient_versions LIMIT 1")
    con.close()
    reported: list[str] = []
    with pytest.raises(RuntimeError, match="DAG run failed"):
        run_dag(clinic.airflow_home, clinic.env, log=reported.append, run=console_script_runner())
    states = dict(line.split() for line in reported if line.startswith("  "))
    assert states["site.extract[0]"] == states["site.load[0]"] == states["stage"] == "success", reported
    assert states["validate_raw"] == "failed", reported
    assert states["publish"] == "upstream_failed"
    status = read_status(wh.parent / "dashboards")
    assert status["last_attempt_ok"] is False and status["failed_step"] == "validate_raw"

    alerts = [json.loads(x) for x in (wh.parent / "alerts.ndjson").read_text().splitlines()]
    assert not (ROOT / "data" / "alerts.ndjson").exists() or all(
        a.get("run_id") not in {x["run_id"] for x in alerts}
        for a in map(json.loads, (ROOT / "data" / "alerts.ndjson").read_text().splitlines())
    ), "an alert went to the default warehouse's folder"
    assert alerts[-1]["task_id"] == "validate_raw" and "resource_versions_unique" in alerts[-1]["message"]
    con = duckdb.connect(str(wh), read_only=True)
    assert con.execute("SELECT count(*) FROM quality.alerts WHERE task_id = 'validate_raw'").fetchall()[0][0] >= 1
    con.close()
    assert _fingerprint(wh, REPORTS + ("fct_course_outcomes", "dim_patients")) == before


def test_no_secret_in_logs(tmp_path):
    from pipeline.settings import Settings

    s = Settings.from_env({"OUTCOMES_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----secret"})
    assert "secret" not in repr(s) and "BEGIN" not in repr(s)
    assert os.environ.get("OUTCOMES_PRIVATE_KEY") is None
