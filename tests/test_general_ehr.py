"""A general EHR's data (Synthea-shaped bundles, no ketamine clinic in it): every type lands, nothing crashes,
and the refresh publishes empty-but-valid marts."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import outcomes
from general_ehr import OTHER_TYPES, write_bundles


@pytest.mark.slow(seconds=42)
def test_every_resource_type_lands_and_empty_marts_publish(tmp_path):
    bundles = write_bundles(tmp_path / "synthea", patients=12, seed=5)
    wh = tmp_path / "wh" / "warehouse.duckdb"
    proc = outcomes("refresh", "--from-dir", str(bundles), "--warehouse", str(wh))
    assert "no ketamine treatment courses in the data" in proc.stdout
    assert "no assessments for:" in proc.stdout and "MADRS" in proc.stdout
    con = duckdb.connect(str(wh), read_only=True)
    try:
        counts = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT resource_type, read, loaded, duplicate, quarantined FROM raw.load_counts"
            ).fetchall()
        }
        assert set(OTHER_TYPES) | {"Patient", "Organization", "Practitioner", "Observation"} <= set(counts)
        for rtype, (read, loaded, duplicate, quarantined) in counts.items():
            assert read == loaded + duplicate + quarantined, rtype
            assert loaded > 0, rtype
        # shared Organizations/Practitioners repeat in every bundle: stored once, the rest counted as duplicates
        assert counts["Organization"][1] == 3 and counts["Organization"][2] == counts["Organization"][0] - 3
        lines_read = sum(c[0] for c in counts.values())
        entries = sum(len(json.loads(p.read_text())["entry"]) for p in bundles.iterdir())
        assert lines_read == entries
        assert con.execute("SELECT count(*) FROM raw.claim_current").fetchall()[0][0] == counts["Claim"][1]
        assert con.execute("SELECT count(*) FROM marts.fct_treatment_courses").fetchall()[0][0] == 0
        assert con.execute("SELECT count(*) FROM marts.rpt_protocol_summary").fetchall()[0][0] == 0  # no courses
        passed = con.execute("SELECT suite, success FROM quality.validation_runs ORDER BY started_at").fetchall()
        assert ("marts", True) in passed
    finally:
        con.close()
