"""The lake: each committed load also as Parquet, one folder per site and load, appearing whole or not at all,
append-only, and read back equal to the warehouse's raw layer."""

from __future__ import annotations

import shutil
import stat

import duckdb
from conftest import outcomes

LAKE_TABLES = ("observation_versions", "patient_versions", "medication_administration_versions", "load_log")


def _warehouse_rows(wh, table: str) -> set[tuple]:
    con = duckdb.connect(str(wh), read_only=True)
    name = f"raw.{table}_landed" if table.endswith("_versions") else f"raw.{table}"
    key = "load_id, resource_id, version_key" if table.endswith("_versions") else "load_id, status"
    rows = set(con.execute(f"SELECT {key} FROM {name}").fetchall())
    con.close()
    return rows


def _lake_rows(lake, table: str) -> set[tuple]:
    key = "load_id, resource_id, version_key" if table.endswith("_versions") else "load_id, status"
    glob = str(lake / "site=*" / "load=*" / f"{table}.parquet")
    return set(duckdb.sql(f"SELECT {key} FROM read_parquet('{glob}', hive_partitioning = true)").fetchall())


def test_each_committed_load_lands_in_the_lake_once_whole_and_private(small_clinic, tmp_path):
    clinic = tmp_path / "ehr"
    shutil.copytree(small_clinic, clinic)
    wh = tmp_path / "warehouse.duckdb"
    lake = tmp_path / "lake"
    env = {"OUTCOMES_SITE_ID": "north"}
    outcomes("load", "--from-dir", str(clinic), "--warehouse", str(wh), env=env)
    first = lake / "site=north" / "load=1"
    assert first.is_dir() and (first / "observation_versions.parquet").is_file()
    for table in LAKE_TABLES:
        assert _lake_rows(lake, table) == _warehouse_rows(wh, table) != set(), table

    # Hive-style partitions: the site and the load are columns to any reader
    glob = str(lake / "site=*" / "load=*" / "load_log.parquet")
    assert duckdb.sql(f"SELECT site, load FROM read_parquet('{glob}', hive_partitioning = true)").fetchall() == [
        ("north", 1)
    ]
    # the raw resources are PHI: the lake is the owner's alone
    assert stat.S_IMODE(first.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((first / "observation_versions.parquet").stat().st_mode) & 0o077 == 0

    # the next night's load is a folder of its own; the first is never rewritten
    written = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    outcomes("ehr", "generate", "--continue-days", "20", "--out", str(clinic))
    outcomes("load", "--from-dir", str(clinic), "--warehouse", str(wh), env=env)
    second = lake / "site=north" / "load=2"
    assert second.is_dir() and {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == written
    for table in LAKE_TABLES:
        assert _lake_rows(lake, table) == _warehouse_rows(wh, table), table

    # a crash mid-write leaves a hidden folder no reader globs; a committed load missing from the lake (the
    # export failed after the commit) is written by the next load step, which has nothing new to load
    shutil.rmtree(second)
    (lake / "site=north" / ".load=2.tmp").mkdir()
    (lake / "site=north" / ".load=2.tmp" / "observation_versions.parquet").write_text("half")
    assert _lake_rows(lake, "load_log") == {r for r in _warehouse_rows(wh, "load_log") if r[0] in _loads(first)}
    outcomes("load", "--from-dir", str(clinic), "--warehouse", str(wh), env=env)  # already committed: skipped
    assert not list((lake / "site=north").glob(".load=*"))
    assert sorted(p.name for p in (lake / "site=north").iterdir()) == ["load=1", "load=2"]
    for table in LAKE_TABLES:
        assert _lake_rows(lake, table) == _warehouse_rows(wh, table), table


def _loads(folder) -> set[str]:
    return {r[0] for r in duckdb.sql(f"SELECT load_id FROM '{folder / 'load_log.parquet'}'").fetchall()}


def test_the_lake_can_be_switched_off(small_clinic, tmp_path):
    wh = tmp_path / "warehouse.duckdb"
    outcomes("load", "--from-dir", str(small_clinic), "--warehouse", str(wh), env={"OUTCOMES_LAKE": "off"})
    assert not (tmp_path / "lake").exists()
