"""Quality gates: each expectation family catches a seeded defect with the right severity and outcome."""

from __future__ import annotations

import copy
import hashlib

import duckdb
import orjson
import pytest
from browser import NO_NETWORK, dom
from conftest import DATA_DOCS_ON, outcomes

from dashboards.status import read_status
from ehr_simulator.generate import generate
from ehr_simulator.params import GeneratorConfig, MessRates
from expectations.offline_docs import remote_loads
from pipeline import steps
from pipeline.settings import Settings
from pipeline.steps import QualityGateError


def _obs_lines(clinic):
    return [orjson.loads(x) for x in (clinic / "Observation.ndjson").read_bytes().splitlines()]


def _first(lines, code):
    return next(o for o in lines if o["code"]["coding"][0]["code"] == code)


def _variant(template: dict, new_id: str, **changes) -> dict:
    o = copy.deepcopy(template)
    o["id"] = new_id
    o.update(changes)
    return o


@pytest.fixture(scope="module")
def defective_refresh(tmp_path_factory):
    """A clean clinic plus one record per defect family, refreshed end to end."""
    root = tmp_path_factory.mktemp("quality")
    clinic = root / "ehr"
    generate(GeneratorConfig(patients=80, seed=17, mess=MessRates.off()), clinic)
    obs = _obs_lines(clinic)
    phq = _first(obs, "44261-6")
    defects = [
        _variant(phq, "defect-out-of-range", valueInteger=85),
        _variant(phq, "defect-no-patient", subject={"reference": "Patient/does-not-exist"}),
        _variant(phq, "defect-future", effectiveDateTime="2031-01-01T09:00:00-08:00"),
        _variant(phq, "defect-bad-time", effectiveDateTime="31/12/2025"),
        _variant(phq, "defect-unknown-code", code={"coding": [{"system": "urn:local", "code": "phq-9-new"}]}),
    ]
    with open(clinic / "Observation.ndjson", "ab") as f:
        for d in defects:
            f.write(orjson.dumps(d) + b"\n")
    ma_lines = (clinic / "MedicationAdministration.ndjson").read_bytes().splitlines()
    ma = orjson.loads(ma_lines[0])
    ma["id"] = "defect-dose"
    ma["dosage"]["dose"]["value"] = 900.0
    with open(clinic / "MedicationAdministration.ndjson", "ab") as f:
        f.write(orjson.dumps(ma) + b"\n")
    wh = root / "warehouse.duckdb"
    proc = outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh), env=DATA_DOCS_ON)
    return clinic, wh, proc


def test_row_level_defects_are_quarantined_with_the_expectation_name(defective_refresh):
    _, wh, proc = defective_refresh
    con = duckdb.connect(str(wh), read_only=True)
    quarantined = dict(
        con.execute(
            "SELECT resource_id, expectation FROM quality.quarantined_records WHERE resource_id LIKE 'defect-%'"
        ).fetchall()
    )
    assert quarantined == {
        "defect-out-of-range": "score_within_phq9_range",
        "defect-no-patient": "observation_patient_resolves",
        "defect-future": "observation_not_in_future",
        "defect-bad-time": "observation_time_parses",
    }
    # the night went on, and the marts do not contain them
    in_marts = con.execute("SELECT count(*) FROM marts.fct_assessments WHERE assessment_id LIKE 'defect-%'").fetchall()[
        0
    ][0]
    assert in_marts == 0
    assert "records quarantined" in proc.stdout and "quarantined 1 by score_within_phq9_range" in proc.stdout
    con.close()


def test_warnings_are_recorded_and_shown(defective_refresh):
    _, wh, proc = defective_refresh
    con = duckdb.connect(str(wh), read_only=True)
    warned = dict(
        con.execute("""SELECT expectation, unexpected_count FROM quality.expectation_results
                                 WHERE outcome = 'warned'""").fetchall()
    )
    assert warned.get("observation_code_in_value_sets") == 1
    assert warned.get("infusion_dose_plausible") == 1
    assert "warning  infusion_dose_plausible" in proc.stdout
    # the unknown code is not an instrument: it never reaches the marts, and the dose still counts
    assert (
        con.execute(
            "SELECT count(*) FROM marts.fct_assessments WHERE assessment_id = 'defect-unknown-code'"
        ).fetchall()[0][0]
        == 0
    )
    assert (
        con.execute("SELECT count(*) FROM marts.fct_infusions WHERE infusion_id = 'defect-dose'").fetchall()[0][0] == 1
    )
    con.close()


def test_results_are_queryable_and_data_docs_build(defective_refresh):
    _, wh, _ = defective_refresh
    con = duckdb.connect(str(wh), read_only=True)
    runs = con.execute("SELECT suite, success FROM quality.validation_runs ORDER BY started_at").fetchall()
    assert [r[0] for r in runs] == ["raw", "marts"] and all(r[1] for r in runs)
    cols = {r[0] for r in con.execute("DESCRIBE quality.expectation_results").fetchall()}
    assert {"run_id", "suite", "expectation", "success", "observed_value", "unexpected_count", "severity"} <= cols
    con.close()
    index = wh.parent / "quality_docs" / "index.html"
    assert 'href="raw/index.html"' in index.read_text() and 'href="marts/index.html"' in index.read_text()
    raw_pages = list((wh.parent / "quality_docs" / "raw" / "validations").rglob("*.html"))
    assert any("observations" in p.name for p in raw_pages)


def test_data_docs_work_offline(defective_refresh):
    """GX's pages load jQuery, Bootstrap, bootstrap-table, Vega and Font Awesome from CDNs; ours from copies
    beside them: no page fetches anything from another host, and with every host name unresolvable a
    validation page still runs its scripts (bootstrap-table lays out its tables)."""
    _, wh, _ = defective_refresh
    docs = wh.parent / "quality_docs"
    pages = [p for p in docs.rglob("*.html") if "assets" not in p.relative_to(docs).parts]
    assert len(pages) > 5
    assert {p.name: remote_loads(p.read_text()) for p in pages if remote_loads(p.read_text())} == {}
    page = next(p for p in (docs / "raw" / "validations").rglob("*.html") if "observations" in p.name)
    assert 'class="bootstrap-table' in dom(page, NO_NETWORK)


def _marts_fingerprint(wh) -> dict[str, str]:
    con = duckdb.connect(str(wh), read_only=True)
    tables = [
        r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'marts'").fetchall()
    ]
    out = {}
    for t in sorted(tables):
        rows = con.execute(f"SELECT * FROM marts.{t}").fetchall()
        out[t] = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
    con.close()
    return out


def test_critical_raw_failure_stops_the_refresh_and_keeps_published_marts(defective_refresh):
    clinic, wh, _ = defective_refresh
    before = _marts_fingerprint(wh)
    con = duckdb.connect(str(wh))
    # a stored version duplicated (as a faulty manual fix would): critical
    con.execute("""INSERT INTO raw.patient_versions_landed SELECT * FROM raw.patient_versions LIMIT 1""")
    con.close()
    proc = outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh), check=False)
    assert proc.returncode != 0
    assert "resource_versions_unique" in proc.stderr and "quality gate failed" in proc.stderr
    assert _marts_fingerprint(wh) == before
    # the pages, which a failed night cannot rebuild, learn that it failed and where
    status = read_status(wh.parent / "dashboards")
    assert status["last_attempt_ok"] is False and status["failed_step"] == "validate raw"
    assert status["published_at"] is not None
    con = duckdb.connect(str(wh))
    con.execute("""DELETE FROM raw.patient_versions_landed WHERE rowid IN (
                   SELECT max(rowid) FROM raw.patient_versions_landed GROUP BY resource_id, version_key HAVING count(*) > 1)""")
    con.close()
    # the warehouse is shared by this module's tests: its last raw run passes again (an incremental night
    # after a failed run would revalidate everything)
    outcomes("check", "--suite", "raw", "--warehouse", str(wh))


TAMPERS = [
    (
        "rpt_protocol_summary",
        "UPDATE marts_build.rpt_protocol_summary SET response_rate = 1.4 WHERE rowid = 0",
        "summary_response_rate_in_unit_interval",
    ),
    (
        "rpt_relapse_free_survival",
        "UPDATE marts_build.rpt_relapse_free_survival SET survival = 0.99, ci_upper = 1.0 WHERE day > 30",
        "survival_non_increasing",
    ),
    (
        "rpt_relapse_free_survival",
        "UPDATE marts_build.rpt_relapse_free_survival SET ci_lower = survival + 0.01 WHERE survival BETWEEN 0.2 AND 0.9",
        "ci_lower_below_survival",
    ),
    (
        "fct_course_outcomes",
        "DELETE FROM marts_build.fct_course_outcomes WHERE course_id = (SELECT min(course_id) FROM marts_build.fct_course_outcomes)",
        "courses_reconcile",
    ),
    ("dim_patients", "ALTER TABLE marts_build.dim_patients ADD COLUMN email VARCHAR", "no_identifying_columns"),
]


def test_critical_mart_failures_are_caught_before_publishing(defective_refresh):
    """Each defect is planted in the marts the refresh built (marts_build, kept after publishing), caught,
    and the table restored."""
    _, wh, _ = defective_refresh
    settings = Settings.from_env(warehouse=wh)
    before = _marts_fingerprint(wh)
    for table, tamper, expectation in TAMPERS:
        con = duckdb.connect(str(wh))
        con.execute(f"CREATE OR REPLACE TABLE main.backup_{table} AS SELECT * FROM marts_build.{table}")
        con.execute(tamper)
        con.close()
        with pytest.raises(QualityGateError, match=expectation):
            steps.validate_marts(settings, log=lambda _: None)
        assert _marts_fingerprint(wh) == before  # nothing was published
        con = duckdb.connect(str(wh))
        failed = con.execute(
            """SELECT severity, outcome FROM quality.expectation_results
                                WHERE expectation = ? ORDER BY run_id DESC LIMIT 1""",
            [expectation],
        ).fetchall()
        con.execute(f"CREATE OR REPLACE TABLE marts_build.{table} AS SELECT * FROM main.backup_{table}")
        con.execute(f"DROP TABLE main.backup_{table}")
        con.close()
        assert failed == [("critical", "run stopped")], expectation
    steps.validate_marts(settings, log=lambda _: None)  # restored: passes again


def test_check_command_exits_non_zero_on_critical_failure(defective_refresh):
    _, wh, _ = defective_refresh
    ok = outcomes("check", "--suite", "raw", "--warehouse", str(wh))
    assert "raw: PASSED" in ok.stdout
    con = duckdb.connect(str(wh))
    con.execute("ALTER TABLE marts_build.fct_infusions ADD COLUMN patient_name VARCHAR")
    con.close()
    bad = outcomes("check", "--suite", "marts", "--warehouse", str(wh), check=False)
    assert bad.returncode == 2 and "no_identifying_columns" in bad.stdout
    con = duckdb.connect(str(wh))
    con.execute("ALTER TABLE marts_build.fct_infusions DROP COLUMN patient_name")
    con.close()


def test_incremental_night_equals_a_full_revalidation_and_rebuild(defective_refresh, tmp_path):
    """A second night revalidates and re-scores only what changed, yet its quarantine equals a full
    revalidation's and its marts a full rebuild's: a corrected version replaces the old score, a retraction
    removes one, a late patient releases an orphan, a deleted patient orphans their records."""
    import shutil

    clinic, wh, _ = defective_refresh
    night2 = tmp_path / "warehouse.duckdb"
    shutil.copy(wh, night2)
    obs = _obs_lines(clinic)
    phq = _first(obs, "44261-6")
    fixed = next(o for o in obs if o["id"] == "defect-out-of-range")
    fixed = _variant(fixed, "defect-out-of-range", valueInteger=12)
    fixed["meta"] = {"versionId": "2", "lastUpdated": "2026-09-30T12:00:00Z"}
    retracted = copy.deepcopy(next(o for o in obs if o["code"]["coding"][0]["code"] == "44261-6" and o is not phq))
    con = duckdb.connect(str(wh), read_only=True)
    present = con.execute(
        "SELECT count(*) FROM intermediate.int_assessments_scored WHERE assessment_id = ?", [retracted["id"]]
    ).fetchall()[0][0]
    con.close()
    assert present == 1
    retracted["status"] = "entered-in-error"
    retracted["meta"] = {"versionId": "9", "lastUpdated": "2026-09-30T12:00:00Z"}
    patient = orjson.loads((clinic / "Patient.ndjson").read_bytes().splitlines()[0])
    patient["id"] = "does-not-exist"  # the patient the orphan observation names arrives late
    batch = tmp_path / "night2"
    batch.mkdir()
    (batch / "Observation.ndjson").write_bytes(
        b"\n".join(
            orjson.dumps(o) for o in (fixed, _variant(phq, "defect-new-out-of-range", valueInteger=99), retracted)
        )
        + b"\n"
    )
    (batch / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    # and the EHR deletes a patient (merged into another record, say): their records become orphans
    gone = orjson.loads((clinic / "Patient.ndjson").read_bytes().splitlines()[-1])["id"]
    orphans = {o["id"] for o in obs if o["subject"]["reference"] == f"Patient/{gone}"}
    assert orphans and phq["subject"]["reference"] != f"Patient/{gone}"
    deletion = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Patient/{gone}"}}],
    }
    (batch / "deleted.ndjson").write_bytes(orjson.dumps(deletion) + b"\n")
    (batch / "manifest.json").write_bytes(
        orjson.dumps(
            {
                "transactionTime": "2026-10-01T00:00:00Z",
                "output": [
                    {"type": "Observation", "url": "Observation.ndjson"},
                    {"type": "Patient", "url": "Patient.ndjson"},
                ],
                "deleted": [{"type": "Bundle", "url": "deleted.ndjson"}],
            }
        )
    )

    proc = outcomes("refresh", "--from-dir", str(batch), "--warehouse", str(night2))
    assert "raw validation: incremental" in proc.stdout

    def verdicts() -> set[tuple[str, str]]:
        con = duckdb.connect(str(night2), read_only=True)
        rows = con.execute("SELECT resource_id, expectation FROM quality.quarantined_records").fetchall()
        con.close()
        return set(rows)

    incremental = verdicts()
    assert {(o, "observation_patient_resolves") for o in orphans} <= incremental
    defects = {r for r in incremental if r[0].startswith("defect-")}
    assert defects == {
        ("defect-new-out-of-range", "score_within_phq9_range"),
        ("defect-future", "observation_not_in_future"),
        ("defect-bad-time", "observation_time_parses"),
    }
    con = duckdb.connect(str(night2), read_only=True)
    released = con.execute(
        "SELECT assessment_id, score FROM marts.fct_assessments WHERE assessment_id LIKE 'defect-%' ORDER BY 1"
    ).fetchall()
    scopes = con.execute(
        "SELECT scope, rows_validated FROM quality.validation_runs WHERE suite = 'raw' ORDER BY started_at"
    ).fetchall()
    con.close()
    assert ("defect-out-of-range", 12.0) in released  # the corrected version is released into the marts
    (first_scope, full_rows), (last_scope, incremental_rows) = scopes[0], scopes[-1]
    assert (first_scope, last_scope) == ("full", "incremental")
    assert incremental_rows < full_rows / 10

    outcomes("check", "--suite", "raw", "--full", "--warehouse", str(night2))
    assert verdicts() == incremental

    def scored() -> dict[str, list[tuple]]:
        con = duckdb.connect(str(night2), read_only=True)
        rows = {
            t: con.execute(f"SELECT * FROM intermediate.{t} ORDER BY ALL").fetchall()
            for t in ("int_assessments_scored", "int_body_weights_measured", "int_psychotherapy_sessions_identified")
        }
        con.close()
        return rows

    incremental_scores = scored()
    ids = {r[0] for r in incremental_scores["int_assessments_scored"]}
    assert retracted["id"] not in ids and "defect-out-of-range" in ids
    outcomes("transform", "--full-refresh", "--warehouse", str(night2))
    assert scored() == incremental_scores
