"""The analysts' database: the published marts in a DuckDB file of their own, and as Parquet beside it.

It holds the marts and the quality summaries only -- no raw JSON, no staging, no restricted lookup -- and the
EHR's record ids are replaced by keyed hashes (the key stays in the warehouse), so nothing in it leads back
to the EHR. Each night writes a complete new file and moves it into place with a rename: an analyst's open
connection keeps reading its snapshot (the old file lives on until it closes), a new connection sees
tonight's, and a failed night never touches it. The previous file is kept beside it for rollback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.publish import PUBLISHED_SCHEMA, tables_in

# Columns of the published marts that hold an EHR record id; the analysts' copy holds a keyed hash instead
EHR_ID_COLUMNS = {
    "fct_assessments": ("assessment_id",),
    "fct_infusions": ("infusion_id",),
    "fct_psychotherapy_sessions": ("session_id",),
}
# Old enough for the DuckDB clients analysts have (1.2 and later: the CLI, R, JDBC/BI tools), new enough for
# everything the marts use
STORAGE_VERSION = "v1.2.0"
# readable by the owner's group: put the analysts in it (docs/analysts.md)
ANALYTICS_MODE = 0o640
ANALYTICS_DIR_MODE = 0o750


@dataclass
class AnalyticsPublication:
    database: Path
    parquet: Path
    tables: dict[str, int]  # rows per table


def previous_path(database: Path) -> Path:
    return database.with_name(f"{database.stem}.previous{database.suffix}")


def parquet_link(database: Path) -> Path:
    return database.with_name(f"{database.stem}_parquet")


def _pseudonym_key(con) -> str:
    """The warehouse's secret key for the analysts' ids: made once, kept in the restricted schema."""
    con.execute("CREATE SCHEMA IF NOT EXISTS restricted")
    con.execute("""
        CREATE TABLE IF NOT EXISTS restricted.analytics_pseudonym_key AS
        SELECT md5(gen_random_uuid()::VARCHAR) || md5(gen_random_uuid()::VARCHAR) AS key, now() AS created_at""")
    return con.execute("SELECT key FROM restricted.analytics_pseudonym_key").fetchall()[0][0]


def _select(table: str, columns: list[str]) -> str:
    hashed = EHR_ID_COLUMNS.get(table, ())
    cols = [f"left(sha256($key || {c}::VARCHAR), 32) AS {c}" if c in hashed else c for c in columns]
    return f"SELECT {', '.join(cols)} FROM {PUBLISHED_SCHEMA}.{table}"


def publish_analytics(con, database: Path) -> AnalyticsPublication:
    """Write the published marts to a new analysts' database and Parquet folder and move both into place."""
    database = Path(database)
    database.parent.mkdir(parents=True, exist_ok=True)
    # the analysts (the owner's group) reach their file; everything else in the folder stays the owner's
    folder_mode = stat.S_IMODE(database.parent.stat().st_mode)
    if folder_mode & 0o050 != 0o050:
        os.chmod(database.parent, folder_mode | 0o050)
    key = _pseudonym_key(con)
    tables = tables_in(con, PUBLISHED_SCHEMA)
    if not tables:
        raise RuntimeError("nothing to publish for the analysts: the warehouse has no published marts")
    stamp = datetime.now(UTC)  # names the publication's Parquet folder and stamps its manifest
    tmp = database.with_name(f".{database.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    Path(f"{tmp}.wal").unlink(missing_ok=True)
    rows: dict[str, int] = {}
    con.execute(f"ATTACH '{tmp}' AS analytics_next (STORAGE_VERSION '{STORAGE_VERSION}')")
    try:
        con.execute(f"CREATE SCHEMA analytics_next.{PUBLISHED_SCHEMA}")
        for t in tables:
            columns = [r[0] for r in con.execute(f"DESCRIBE {PUBLISHED_SCHEMA}.{t}").fetchall()]
            con.execute(
                f"CREATE TABLE analytics_next.{PUBLISHED_SCHEMA}.{t} AS {_select(t, columns)}",
                {"key": key} if t in EHR_ID_COLUMNS else None,
            )
            rows[t] = con.execute(f"SELECT count(*) FROM analytics_next.{PUBLISHED_SCHEMA}.{t}").fetchall()[0][0]
        con.execute("CHECKPOINT analytics_next")
    except BaseException:
        con.execute("DETACH analytics_next")
        tmp.unlink(missing_ok=True)
        raise
    con.execute("DETACH analytics_next")
    parquet_dir = _write_parquet(con, tmp, database, tables, rows, stamp)
    os.chmod(tmp, ANALYTICS_MODE)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if database.exists():  # yesterday's file stays reachable as the previous one (a hard link: no gap)
        previous = previous_path(database)
        previous.unlink(missing_ok=True)
        os.link(database, previous)
    os.replace(tmp, database)
    _swap_link(parquet_link(database), parquet_dir)
    return AnalyticsPublication(database, parquet_link(database), rows)


def _write_parquet(con, tmp_db: Path, database: Path, tables: list[str], rows: dict, stamp: datetime) -> Path:
    """One Parquet file per mart, read back from the new analysts' file (the same bytes the analysts get),
    with a manifest; in a folder of its own, named for the publication."""
    folder = database.with_name(f"{database.stem}_parquet.{stamp:%Y%m%dT%H%M%S%fZ}")
    folder.mkdir(mode=ANALYTICS_DIR_MODE)
    os.chmod(folder, ANALYTICS_DIR_MODE)
    con.execute(f"ATTACH '{tmp_db}' AS analytics_written (READ_ONLY)")
    try:
        for t in tables:
            target = folder / f"{t}.parquet"
            con.execute(
                f"COPY analytics_written.{PUBLISHED_SCHEMA}.{t} TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
            )
            os.chmod(target, ANALYTICS_MODE)
        data_as_of = (
            con.execute(f"SELECT data_as_of FROM analytics_written.{PUBLISHED_SCHEMA}.rpt_data_health").fetchall()
            if "rpt_data_health" in tables
            else []
        )
    finally:
        con.execute("DETACH analytics_written")
    manifest = {
        "published_at": stamp.isoformat(),
        "data_as_of": str(data_as_of[0][0]) if data_as_of and data_as_of[0][0] is not None else None,
        "tables": {t: {"file": f"{t}.parquet", "rows": rows[t]} for t in tables},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    os.chmod(folder / "manifest.json", ANALYTICS_MODE)
    return folder


def _swap_link(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically; keep the folder it pointed at (the previous publication) and
    remove the ones before it."""
    previous = link.resolve() if link.is_symlink() else None
    tmp_link = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp_link.unlink(missing_ok=True)
    os.symlink(target.name, tmp_link)
    os.replace(tmp_link, link)
    keep = {target.resolve(), previous}
    for old in link.parent.glob(f"{link.name}.*"):
        if old.is_dir() and not old.is_symlink() and old.resolve() not in keep:
            shutil.rmtree(old, ignore_errors=True)
