"""A network of clinics in one warehouse: each site's loads carry its site id, per-site results stand beside the
network-wide ones, and two sites sending the same resource id stop the night instead of merging patients."""

from __future__ import annotations

import duckdb
import pytest
from conftest import outcomes

from ehr_simulator.generate import generate
from ehr_simulator.params import GeneratorConfig


@pytest.mark.slow(seconds=60)
def test_two_sites_in_one_warehouse_give_per_site_and_network_results(small_clinic, tmp_path):
    south = tmp_path / "south"
    generate(GeneratorConfig(patients=40, seed=8), south)
    wh = tmp_path / "warehouse.duckdb"
    outcomes("load", "--from-dir", str(small_clinic), "--warehouse", str(wh), env={"OUTCOMES_SITE_ID": "north"})
    outcomes("refresh", "--from-dir", str(south), "--warehouse", str(wh), env={"OUTCOMES_SITE_ID": "south"})

    con = duckdb.connect(str(wh), read_only=True)
    sites = dict(con.execute("SELECT site_id, count(*) FROM raw.patient_current GROUP BY ALL").fetchall())
    assert sites == {"north": 60, "south": 40}
    # every course is in the network's cohort and in exactly one site's
    by_cohort = con.execute("""
        SELECT cohort, protocol, instrument, n_courses, n_evaluable, n_responders
        FROM marts.rpt_protocol_summary_by_cohort WHERE cohort_dimension IN ('all', 'site')""").fetchall()
    courses = con.execute("SELECT count(*) FROM marts.fct_treatment_courses").fetchall()[0][0]
    con.close()
    cells = {(c, p, i): rest for c, p, i, *rest in by_cohort}
    assert {c for c, _, _ in cells} == {"all", "north", "south"}
    for (cohort, protocol, instrument), network in cells.items():
        if cohort != "all":
            continue
        north = cells.get(("north", protocol, instrument), (0, 0, 0))
        south_ = cells.get(("south", protocol, instrument), (0, 0, 0))
        assert tuple(network) == tuple(a + b for a, b in zip(north, south_, strict=True)), (protocol, instrument)
    assert sum(v[0] for (c, _, i), v in cells.items() if c == "all" and i == "madrs") == courses
    # each site's loads in its own part of the lake, and only its own
    lake = tmp_path / "lake"
    assert [p.name for p in (lake / "site=north").iterdir()] == ["load=1"]
    assert [p.name for p in (lake / "site=south").iterdir()] == ["load=2"]

    # the same clinic sent again as a third site: its versions are not taken for duplicates of north's (they
    # are another site's), and the night stops before two patients merge into one
    proc = outcomes(
        "refresh",
        "--from-dir",
        str(small_clinic),
        "--warehouse",
        str(wh),
        env={"OUTCOMES_SITE_ID": "east"},
        check=False,
    )
    assert proc.returncode != 0 and "patient_id_unique" in proc.stderr
    con = duckdb.connect(str(wh), read_only=True)
    east = con.execute("SELECT count(*) FROM raw.patient_versions WHERE site_id = 'east'").fetchall()[0][0]
    published = con.execute("SELECT count(*) FROM marts.fct_treatment_courses").fetchall()[0][0]
    con.close()
    assert east == 60 and published == courses  # loaded, and yesterday's marts still published
