"""Hostile input: each defect fed into an otherwise clean clinic is quarantined with its reason (at load, or by
the raw gate), the night exits 0 and publishes, counts reconcile, nothing of a bad record's content reaches
the marts, and a defect about ordering does not keep the next night's real data out."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta

import duckdb
import orjson
import pytest
from conftest import DATA_DOCS_ON, outcomes

from ehr_simulator.generate import generate
from ehr_simulator.params import GeneratorConfig, MessRates

HUGE_LINE_BYTES = 25 * 2**20


def _lines(path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def _variant(template: dict, new_id, **changes) -> dict:
    o = copy.deepcopy(template)
    o["id"] = new_id
    o.update(changes)
    return o


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def hostile_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    clinic = root / "ehr"
    generate(GeneratorConfig(patients=60, seed=29, mess=MessRates.off()), clinic)
    obs = _lines(clinic / "Observation.ndjson")
    phq = [o for o in obs if o["code"]["coding"][0]["code"] == "44261-6" and "valueInteger" in o]
    template, moved, conflicted = phq[0], phq[1], phq[2]
    patients = _lines(clinic / "Patient.ndjson")
    infusion = _lines(clinic / "MedicationAdministration.ndjson")[0]

    def subject(pid: str) -> dict:
        return {"subject": {"reference": f"Patient/{pid}"}}

    at_load = [
        orjson.dumps(_variant(template, 7)),  # an id that is a number
        orjson.dumps(_variant(template, "x" * 100_000)),  # an id 100 KB long
        orjson.dumps(_variant(template, "hostile-int-string", valueInteger="7")),
        orjson.dumps(_variant(template, "hostile-int-decimal", valueInteger=12.5)),
        orjson.dumps(_variant(template, "hostile-nan", valueInteger=1)).replace(
            b'"valueInteger":1', b'"valueInteger":NaN'
        ),
        orjson.dumps(_variant(template, "hostile-inf", valueInteger=1)).replace(
            b'"valueInteger":1', b'"valueQuantity":{"value":1e999}'
        ),
        orjson.dumps(_variant(template, "hostile-status", status="Jane Roe 555-0100")),
        # a version of a real Observation dated far in the future, with another score
        orjson.dumps({**moved, "meta": {"versionId": "99", "lastUpdated": "2099-01-01T00:00:00Z"}, "valueInteger": 27}),
        # the same id and versionId as a real one, other content
        orjson.dumps({**conflicted, "valueInteger": (conflicted["valueInteger"] + 1) % 27}),
        b'{"resourceType":"Observation","id":"hostile-huge","note":[{"text":"' + b"x" * HUGE_LINE_BYTES + b'"}]}',
    ]
    no_score = _variant(template, "hostile-no-score")
    del no_score["valueInteger"]
    by_gate = [
        _variant(template, "hostile-year-only", effectiveDateTime="1850"),
        _variant(template, "hostile-year-0001", effectiveDateTime="0001-01-01T09:00:00Z"),
        no_score,
        _variant(template, "hostile-gender-obs", **subject("hostile-gender")),
    ]
    with open(clinic / "Observation.ndjson", "ab") as f:
        for line in at_load:
            f.write(line + b"\n")
        for o in by_gate:
            f.write(orjson.dumps(o) + b"\n")
    bad_patients = {
        "hostile-gender": {"gender": "xyz"},
        "hostile-born-future": {"birthDate": "2031-05-01"},
        "hostile-born-0001": {"birthDate": "0001-01-01"},
        "hostile-born-month-13": {"birthDate": "1974-13"},
        "hostile-born-feb-30": {"birthDate": "1974-02-30"},
    }
    with open(clinic / "Patient.ndjson", "ab") as f:
        for pid, change in bad_patients.items():
            f.write(orjson.dumps(_variant(patients[0], pid, **change)) + b"\n")
    early = _variant(infusion, "hostile-infusion-0001")
    early["effectivePeriod"] = {"start": "0001-01-01T09:00:00Z", "end": "0001-01-01T10:00:00Z"}
    with open(clinic / "MedicationAdministration.ndjson", "ab") as f:
        f.write(orjson.dumps(early) + b"\n")
    wh = root / "warehouse.duckdb"
    proc = outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh), env=DATA_DOCS_ON)
    return clinic, wh, proc, {"moved": moved, "conflicted": conflicted}


def _query(wh, sql: str) -> list[tuple]:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_defects_in_the_files_are_quarantined_at_load_with_fixed_reasons(hostile_night):
    _, wh, proc, real = hostile_night
    assert proc.returncode == 0
    rows = _query(wh, "SELECT raw_text, reason FROM raw.quarantine WHERE resource_type = 'Observation'")

    def reason_for(marker: str) -> str:
        found = [r for t, r in rows if marker in t]
        assert len(found) == 1, (marker, found)
        return found[0]

    assert reason_for('"id":7,').startswith("id is not a FHIR id")
    assert reason_for('"id":"' + "x" * 1000).startswith("id is not a FHIR id")
    assert reason_for("hostile-int-string") == "valueInteger is not a JSON integer"
    assert reason_for("hostile-int-decimal") == "valueInteger is not a JSON integer"
    assert reason_for("hostile-nan") == "valueInteger is not a JSON integer"
    assert reason_for("hostile-inf") == "value is not finite"
    assert reason_for("hostile-status") == "unknown Observation status"
    assert reason_for("2099-01-01T00:00:00Z").startswith("meta.lastUpdated after the export's transactionTime")
    assert reason_for(f'"id":"{real["conflicted"]["id"]}"').startswith("same id and meta.versionId")
    huge = [(t, r) for t, r in rows if r.startswith("line longer than the limit")]
    assert len(huge) == 1 and huge[0][0].startswith('{"resourceType":"Observation","id":"hostile-huge"')
    assert len(huge[0][0]) < 100_000, "the quarantine keeps the head of a line over the limit, not all of it"
    # counts reconcile, and the conflict is counted apart
    for rtype, read, loaded, dup, quarantined, conflicts in _query(
        wh, "SELECT resource_type, read, loaded, duplicate, quarantined, conflicts FROM raw.load_counts"
    ):
        assert read == loaded + dup + quarantined, rtype
        assert conflicts == (1 if rtype == "Observation" else 0), rtype


def test_row_level_defects_are_quarantined_by_the_gate_and_the_night_publishes(hostile_night):
    _, wh, proc, _ = hostile_night
    quarantined = dict(
        _query(
            wh,
            "SELECT resource_id, expectation FROM quality.quarantined_records WHERE resource_id LIKE 'hostile-%'",
        )
    )
    assert quarantined == {
        "hostile-year-only": "observation_time_parses",
        "hostile-year-0001": "observation_not_implausibly_early",
        "hostile-no-score": "observation_score_present",
        "hostile-gender": "patient_gender_valid",
        "hostile-born-future": "patient_birth_date_plausible",
        "hostile-born-0001": "patient_birth_date_plausible",
        "hostile-born-month-13": "patient_birth_date_valid",
        "hostile-born-feb-30": "patient_birth_date_valid",
        "hostile-infusion-0001": "infusion_date_plausible",
    }
    runs = _query(wh, "SELECT suite, success FROM quality.validation_runs ORDER BY started_at")
    assert [r[0] for r in runs] == ["raw", "marts"] and all(r[1] for r in runs)
    assert _query(wh, "SELECT count(*) FROM marts.fct_assessments WHERE assessment_id LIKE 'hostile-%'") == [(0,)]
    assert _query(wh, "SELECT count(*) FROM marts.fct_infusions WHERE infusion_id LIKE 'hostile-%'") == [(0,)]
    # the quarantined patients are not in the marts (nor the record of one of them, which was itself valid)
    staged, published = _query(
        wh,
        """SELECT (SELECT count(*) FROM staging.stg_fhir__patients),
                  (SELECT count(*) FROM marts.dim_patients)""",
    )[0]
    assert published == staged - 5
    assert (
        min(r[0] for r in _query(wh, "SELECT birth_year FROM marts.dim_patients WHERE birth_year IS NOT NULL")) >= 1900
    )


def test_no_record_content_reaches_the_marts(hostile_night):
    _, wh, _, real = hostile_night
    summary = _query(wh, "SELECT * FROM marts.rpt_quarantine_summary")
    text = json.dumps([[str(v) for v in row] for row in summary])
    assert summary and "Jane" not in text and "555" not in text and "xxxxxxxx" not in text
    # the versions that lost (dated in the future, conflicting) did not replace the stored ones
    scores = dict(
        _query(
            wh,
            f"""SELECT assessment_id, score FROM marts.fct_assessments
                WHERE assessment_id IN ('{real["moved"]["id"]}', '{real["conflicted"]["id"]}')""",
        )
    )
    assert scores == {
        real["moved"]["id"]: real["moved"]["valueInteger"],
        real["conflicted"]["id"]: real["conflicted"]["valueInteger"],
    }


def test_the_next_nights_real_version_wins_over_the_one_dated_in_the_future(hostile_night, tmp_path):
    clinic, wh, _, real = hostile_night
    tt = json.loads((clinic / "manifest.json").read_text())["transactionTime"]
    later = _instant(tt) + timedelta(days=1)
    night2 = tmp_path / "night2"
    night2.mkdir()
    newer = {
        **real["moved"],
        "meta": {"versionId": "2", "lastUpdated": (later - timedelta(hours=1)).isoformat().replace("+00:00", "Z")},
        "valueInteger": 3,
    }
    (night2 / "Observation.ndjson").write_bytes(orjson.dumps(newer) + b"\n")
    (night2 / "manifest.json").write_text(
        json.dumps(
            {
                "transactionTime": later.isoformat().replace("+00:00", "Z"),
                "output": [{"type": "Observation", "url": "Observation.ndjson"}],
                "error": [],
            }
        )
    )
    proc = outcomes("refresh", "--from-dir", str(night2), "--warehouse", str(wh))
    assert proc.returncode == 0
    assert _query(wh, f"SELECT score FROM marts.fct_assessments WHERE assessment_id = '{real['moved']['id']}'") == [
        (3,)
    ]


def test_files_holding_phi_are_the_owners_alone(hostile_night):
    _, wh, _, _ = hostile_night
    assert wh.stat().st_mode & 0o777 == 0o600
    docs = wh.parent / "quality_docs"
    assert docs.is_dir() and docs.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in docs.rglob("*"))
