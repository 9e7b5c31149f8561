"""The analysts' database: never in the night's way, never changed by a failed night, no PHI in it."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import orjson
import pytest
from browser import dom, js_errors, small_counts
from conftest import BIN, outcomes

from ehr_simulator.generate import generate
from ehr_simulator.params import GeneratorConfig
from pipeline.writer_lock import EXIT_WAREHOUSE_IN_USE, writer

# docs/analysts.md names this client; the analysts' file must open in it
DUCKDB_CLI_VERSION = "1.5.6"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counts(con) -> dict[str, int]:
    tables = [
        r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'marts'").fetchall()
    ]
    return {t: con.execute(f"SELECT count(*) FROM marts.{t}").fetchall()[0][0] for t in sorted(tables)}


def _comparable(rows: list[tuple]) -> list[tuple]:
    """NaN equal to NaN (a rate over nothing is NaN in both)."""
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row) for row in rows]


def _counts_in_another_process(database: Path) -> dict[str, int]:
    """What a new connection sees. Another process: within one, DuckDB hands a new connection to a file the
    instance an open connection already holds (the old snapshot)."""
    code = (
        "import duckdb, json, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "ts = [r[0] for r in con.execute(\"SELECT table_name FROM duckdb_tables() WHERE schema_name = 'marts'\")"
        ".fetchall()]; "
        "print(json.dumps({t: con.execute(f'SELECT count(*) FROM marts.{t}').fetchall()[0][0] for t in sorted(ts)}))"
    )
    out = subprocess.run([str(BIN / "python"), "-c", code, str(database)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Three nights (a refresh, two more days of clinic, a refresh each) with an analyst's read-only
    connection open on the analysts' database throughout; then a failed fourth night."""
    root = tmp_path_factory.mktemp("analytics")
    clinic = root / "ehr"
    generate(GeneratorConfig(patients=40, seed=11, file_mess=True), clinic)
    wh = root / "data" / "warehouse.duckdb"
    analytics = wh.parent / "analytics.duckdb"
    outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh))
    analyst = duckdb.connect(str(analytics), read_only=True)
    first = _counts(analyst)
    seen = []
    for _ in range(2):
        outcomes("ehr", "generate", "--continue-days", "30", "--out", str(clinic))
        outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh))
        # the open connection still answers, from the snapshot it opened
        assert _counts(analyst) == first
        seen.append(_counts_in_another_process(analytics))
    analyst.close()
    return root, clinic, wh, analytics, first, seen


def test_an_open_analyst_connection_never_blocks_a_night_and_keeps_its_snapshot(nights):
    _, _, _, _, first, seen = nights
    assert seen[0]["fct_assessments"] > first["fct_assessments"]
    assert seen[1]["fct_assessments"] > seen[0]["fct_assessments"]


def test_a_failed_night_leaves_the_analysts_files_untouched(nights):
    _, clinic, wh, analytics, _, _ = nights
    before = _sha(analytics)
    parquet = {p.name: _sha(p) for p in (wh.parent / "analytics_parquet").iterdir()}
    con = duckdb.connect(str(wh))
    con.execute("INSERT INTO raw.patient_versions_landed SELECT * FROM raw.patient_versions LIMIT 1")
    con.close()
    proc = outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh), check=False)
    assert proc.returncode != 0 and "resource_versions_unique" in proc.stderr
    assert _sha(analytics) == before
    assert {p.name: _sha(p) for p in (wh.parent / "analytics_parquet").iterdir()} == parquet
    con = duckdb.connect(str(wh))
    con.execute("""DELETE FROM raw.patient_versions_landed WHERE rowid IN (
                   SELECT max(rowid) FROM raw.patient_versions_landed
                   GROUP BY resource_id, version_key HAVING count(*) > 1)""")
    con.close()


def test_a_second_writer_exits_at_once_naming_the_first(nights, tmp_path):
    _, clinic, wh, _, _, _ = nights
    with writer(wh, "refresh"):
        proc = outcomes("refresh", "--from-dir", str(clinic), "--warehouse", str(wh), check=False)
    assert proc.returncode == EXIT_WAREHOUSE_IN_USE
    assert "is being written by process" in proc.stderr and "running `refresh`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_analysts_database_holds_marts_only_and_nothing_identifying(nights):
    _, clinic, _, analytics, _, _ = nights
    con = duckdb.connect(str(analytics), read_only=True)
    try:
        schemas = {r[0] for r in con.execute("SELECT DISTINCT schema_name FROM duckdb_tables()").fetchall()}
        assert schemas == {"marts"}
        values: set[str] = set()
        for table, column in con.execute(
            """SELECT table_name, column_name FROM duckdb_columns()
               WHERE schema_name = 'marts' AND data_type = 'VARCHAR'"""
        ).fetchall():
            values |= {r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM marts.{table}").fetchall() if r[0]}
    finally:
        con.close()
    # no FHIR id of any resource the EHR holds, and none of the patients' names, MRNs, phones, emails, addresses
    ehr_ids: set[str] = set()
    identifying: set[str] = set()
    for f in clinic.glob("*.ndjson"):
        for line in f.read_bytes().splitlines():
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(res, dict):
                continue
            if isinstance(res.get("id"), str):
                ehr_ids.add(res["id"])
            if res.get("resourceType") == "Patient":
                for name in res.get("name", []):
                    identifying |= {name.get("family", ""), *name.get("given", [])}
                identifying |= {i.get("value", "") for i in res.get("identifier", [])}
                identifying |= {t.get("value", "") for t in res.get("telecom", [])}
                for a in res.get("address", []):
                    identifying |= {*a.get("line", []), a.get("postalCode", "")}
    identifying = {v for v in identifying if len(v) >= 4}
    assert len(ehr_ids) > 1000 and len(identifying) > 100
    assert not values & ehr_ids
    text = "\n".join(values)
    leaked = [v for v in identifying if re.search(rf"\b{re.escape(v)}\b", text)]
    assert not leaked, leaked[:5]


def test_file_modes_are_as_documented(nights):
    _, _, wh, analytics, _, _ = nights
    assert wh.stat().st_mode & 0o777 == 0o600
    assert analytics.stat().st_mode & 0o777 == 0o640
    parquet = wh.parent / "analytics_parquet"
    assert parquet.is_symlink() and parquet.resolve().stat().st_mode & 0o777 == 0o750
    assert all(p.stat().st_mode & 0o777 == 0o640 for p in parquet.iterdir())
    assert wh.parent.stat().st_mode & 0o050 == 0o050  # the analysts' group reaches their files
    previous = wh.parent / "analytics.previous.duckdb"
    assert previous.exists() and previous.stat().st_mode & 0o777 == 0o640


def test_the_parquet_files_equal_the_published_tables(nights):
    _, _, wh, analytics, _, _ = nights
    folder = wh.parent / "analytics_parquet"
    manifest = json.loads((folder / "manifest.json").read_text())
    con = duckdb.connect(str(analytics), read_only=True)
    try:
        tables = sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
        assert sorted(manifest["tables"]) == tables and manifest["published_at"] and manifest["data_as_of"]
        for t in tables:
            path = folder / manifest["tables"][t]["file"]
            published = con.execute(f"SELECT * FROM marts.{t} ORDER BY ALL").fetchall()
            from_parquet = con.execute(f"SELECT * FROM read_parquet('{path}') ORDER BY ALL").fetchall()
            assert _comparable(from_parquet) == _comparable(published), t
            assert manifest["tables"][t]["rows"] == len(published)
    finally:
        con.close()


def test_the_client_the_guide_names_opens_the_analysts_database(nights):
    _, _, _, analytics, _, _ = nights
    guide = (Path(__file__).resolve().parents[1] / "docs" / "analysts.md").read_text()
    assert f"duckdb-cli=={DUCKDB_CLI_VERSION}" in guide
    cli = shutil.which("duckdb", path=str(BIN))
    assert cli, "the DuckDB CLI (duckdb-cli, a dev dependency) is not installed"
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"v{DUCKDB_CLI_VERSION}"), version
    out = subprocess.run(
        [cli, "-readonly", "-csv", str(analytics), "-c", "SELECT count(*) FROM marts.rpt_protocol_summary"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and int(out.stdout.split()[-1]) > 0, out.stderr


def test_a_small_clinics_pages_show_no_small_counts(nights):
    """40 patients: most cells are small, so most figures are withheld -- and nothing on any page (tables,
    figure data, hover text, legends) is a count from 1 to 10."""
    _, _, wh, _, _, _ = nights
    pages = wh.parent / "dashboards"
    withheld_note = False
    for p in ("relapse.html", "response.html", "cohort.html"):
        html = dom(pages / p)
        assert js_errors(html) == ""
        cells = re.findall(r"<td>([^<]*)</td>", html)
        small = [c for c in cells if re.fullmatch(r"~?\d+", c.strip()) and 1 <= int(c.strip("~ ")) <= 10]
        assert not small, f"{p} shows small counts: {small}"
        assert not small_counts(html), p
        for m in re.finditer(r'"text":\[([^\]]*)\]', html):  # bar labels inside plotly figures
            assert not re.search(r'"~?(?:[1-9]|10)"', m.group(1)), f"{p}: small count in a figure's text"
        withheld_note |= "curve withheld" in html
    assert withheld_note
