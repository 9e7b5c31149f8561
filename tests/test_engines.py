"""The same dbt project on both engines: a two-site network built in DuckDB and on Spark (dbt-spark's session
method on a local[2] pyspark, reading the lake) gives the same marts, keeps every patient's surrogate key, and
passes the same mart gate."""

from __future__ import annotations

import math

import duckdb
import pytest
from conftest import outcomes

# A JVM that lives a minute or two spends much of its CPU optimising code it will not run for long; the client
# compiler alone is cheaper (measured in docs/operations.md, "Trying the Spark engine on one machine"). JIT
# settings do not change what Spark computes.
SHORT_LIVED_JVM = {"OUTCOMES_SPARK_CONF": "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1"}
PUBLISHED_AFTER_THE_GATES = {"rpt_data_health", "rpt_quarantine_summary"}  # built by the publish step, in DuckDB


def _tables(con, schema: str) -> set[str]:
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [schema]).fetchall()
    return {r[0] for r in rows}


def _columns(con, schema: str, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [schema, table],
    ).fetchall()


def _differences(duck: list[tuple], spark: list[tuple], columns: list[str]) -> list[str]:
    """Cells that differ: exactly, or by more than 1e-9 for floats (rates, survival, log-rank p)."""
    found = []
    for row, (a, b) in enumerate(zip(duck, spark, strict=True)):
        for column, x, y in zip(columns, a, b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                same = abs(x - y) <= 1e-9 or (math.isnan(x) and math.isnan(y))
            else:
                same = x == y
            if not same:
                found.append(f"row {row} {column}: duckdb {x!r} spark {y!r}")
    return found


@pytest.mark.slow(seconds=260)
def test_a_two_site_network_builds_the_same_marts_on_duckdb_and_spark(tmp_path):
    ehr = tmp_path / "ehr"
    outcomes("ehr", "generate", "--patients", "300", "--sites", "2", "--seed", "11", "--out", str(ehr))
    wh = tmp_path / "warehouse.duckdb"
    # the first site loaded, the second refreshed: one night's gates, build and publish over both
    outcomes("load", "--from-dir", str(ehr / "site-1"), "--warehouse", str(wh), env={"OUTCOMES_SITE_ID": "site-1"})
    outcomes("refresh", "--from-dir", str(ehr / "site-2"), "--warehouse", str(wh), env={"OUTCOMES_SITE_ID": "site-2"})

    con = duckdb.connect(str(wh))
    keys_before = con.execute("SELECT patient_id, patient_key FROM restricted.int_patients_keyed ORDER BY 1").fetchall()
    sites = con.execute(
        "SELECT DISTINCT cohort FROM marts.rpt_protocol_summary_by_cohort WHERE cohort_dimension = 'site' ORDER BY 1"
    ).fetchall()
    # what Spark builds must arrive by itself: the DuckDB build's copies go
    con.execute("DROP SCHEMA marts_build CASCADE")
    con.close()
    assert len(keys_before) >= 300 and sites == [("site-1",), ("site-2",)]

    proc = outcomes("transform", "--engine", "spark", "--warehouse", str(wh), env=SHORT_LIVED_JVM, timeout=900)
    assert "spark: session up on local[2]" in proc.stdout and "marts returned to the warehouse" in proc.stdout

    con = duckdb.connect(str(wh), read_only=True)
    keys_after = con.execute("SELECT patient_id, patient_key FROM restricted.int_patients_keyed ORDER BY 1").fetchall()
    assert keys_after == keys_before  # no patient re-keyed by the engine switch
    built = _tables(con, "marts_build")
    assert built == _tables(con, "marts") - PUBLISHED_AFTER_THE_GATES and len(built) >= 16
    compared_floats = 0
    for table in sorted(built):
        columns = _columns(con, "marts", table)
        assert _columns(con, "marts_build", table) == columns, table
        names = ", ".join(f'"{c}"' for c, _ in columns)
        duck = con.execute(f"SELECT {names} FROM marts.{table} ORDER BY ALL").fetchall()
        spark = con.execute(f"SELECT {names} FROM marts_build.{table} ORDER BY ALL").fetchall()
        assert len(spark) == len(duck) > 0, table
        assert not _differences(duck, spark, [c for c, _ in columns])[:5], table
        compared_floats += sum(isinstance(v, float) for row in duck for v in row)
    p_values = con.execute(
        "SELECT count(logrank_p_vs_reference) FROM marts_build.rpt_protocol_summary_by_cohort"
    ).fetchall()[0][0]
    con.close()
    assert compared_floats > 10_000 and p_values >= 20

    # the mart gate reads what Spark built as it reads a DuckDB build
    outcomes("check", "--suite", "marts", "--warehouse", str(wh))  # exits non-zero on a critical failure
