"""The lake: every committed load's raw rows, load-time quarantine, counts and log, also written as Parquet
under a lake root, so that another engine (Spark, or DuckDB on another machine) reads the history the
warehouse holds without opening the warehouse.

Layout: <root>/site=<site id>/load=<load_seq>/<table>.parquet -- one folder per load, Hive-style,
so `read_parquet('<root>/site=*/load=*/observation_versions.parquet', hive_partitioning = true)` or Spark's
`spark.read.parquet` gives `site` and `load` columns. A load's folder is written under a hidden temporary name
and renamed into place: its files appear together or not at all (a rename within one filesystem is atomic).
Append-only: a load already in the lake is never rewritten; one a crash left half-written is written again.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ingestion.private_files import private_umask
from ingestion.warehouse import landed_tables

# besides the *_landed tables: the rows of a load that are not resource versions
LOAD_TABLES = ("raw.export_errors", "raw.load_counts", "raw.load_log")
PARQUET = "(FORMAT parquet, COMPRESSION zstd)"


def load_folder(root: Path, site_id: str, load_seq: int) -> Path:
    return Path(root) / f"site={site_id}" / f"load={load_seq}"


def _file_name(table: str) -> str:
    """raw.observation_versions_landed -> observation_versions (the name readers use for the view)."""
    name = table.split(".", 1)[1]
    return name.removesuffix("_landed")


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def export_committed_loads(con, root: Path, site_id: str, log: Callable[[str], None] = print) -> list[int]:
    """Write every committed load of `site_id` the lake does not hold yet; returns their load_seq.
    Half-written folders a crash left behind are removed first."""
    committed = con.execute(
        "SELECT load_id, load_seq FROM raw.load_log WHERE status = 'committed' AND site_id = ? ORDER BY load_seq",
        [site_id],
    ).fetchall()
    site = Path(root) / f"site={site_id}"
    written: list[int] = []
    with private_umask():  # raw resources are PHI: the lake is the owner's alone, like the warehouse
        site.mkdir(parents=True, exist_ok=True)
        for stale in site.glob(".load=*.tmp"):
            shutil.rmtree(stale)
        tables = [*landed_tables(con), *LOAD_TABLES]
        for load_id, load_seq in committed:
            final = load_folder(root, site_id, load_seq)
            if final.exists():
                continue
            tmp = site / f".{final.name}.tmp"
            tmp.mkdir()
            for table in tables:
                target = tmp / f"{_file_name(table)}.parquet"
                rows = con.execute(
                    f"COPY (SELECT * FROM {table} WHERE load_id = '{_sql_text(load_id)}') "
                    f"TO '{_sql_text(str(target))}' {PARQUET}"
                ).fetchall()[0][0]
                if not rows:
                    target.unlink()  # a type this load did not bring
            tmp.rename(final)
            written.append(load_seq)
    if written:
        log(f"lake: {len(written)} load(s) written to {site} (load_seq {', '.join(map(str, written))})")
    return written
