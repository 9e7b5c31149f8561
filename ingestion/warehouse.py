"""Opening the DuckDB warehouse, and the raw layer's tables and views."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ingestion.private_files import tighten

KNOWN_TYPES = (
    "Patient",
    "Practitioner",
    "Condition",
    "CarePlan",
    "MedicationAdministration",
    "Observation",
    "Procedure",
)
OBSERVATION_STATUSES = ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error")
FINAL_STATUSES = ("final", "amended", "corrected")
# a FHIR resource type name, as the loader accepts it (it becomes part of a table name)
RESOURCE_TYPE_PATTERN = "[A-Z][A-Za-z]{1,63}"
FHIR_ID_PATTERN = r"[A-Za-z0-9\-.]{1,64}"


def is_resource_type(name: str) -> bool:
    return re.fullmatch(RESOURCE_TYPE_PATTERN, name) is not None


class WarehouseBusy(RuntimeError):
    pass


DEFAULT_MEMORY_LIMIT = "1GB"


def memory_limit() -> str:
    """DuckDB's buffer limit for every pipeline connection (and dbt's profile): beyond it DuckDB spills to
    disk, so a step's memory stays bounded as history grows. OUTCOMES_DUCKDB_MEMORY_LIMIT overrides it."""
    value = os.environ.get("OUTCOMES_DUCKDB_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT).strip()
    try:
        size_in_bytes(value)
    except ValueError:
        raise ValueError(f"OUTCOMES_DUCKDB_MEMORY_LIMIT must look like 1GB or 768MiB, got {value!r}") from None
    return value


_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_in_bytes(value: str) -> int:
    """'1GB' -> 1_000_000_000, '768MiB' -> 805_306_368 (DuckDB's reading of the same text)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)", value.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a memory size: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _lock_holder(error: Exception) -> str:
    """DuckDB's lock error names the process holding the file ("... (PID 123) ..."): pass it on."""
    m = re.search(r"PID (\d+)", str(error))
    return f"PID {m.group(1)}" if m else "see `lsof` on the file"


def connect(path: Path, read_only: bool = False):
    """Open the warehouse; one writer at a time (DuckDB locks the file per process)."""
    import duckdb

    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: run `outcomes refresh` (or `outcomes load`) first")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise WarehouseBusy(
                f"the warehouse {path} is open in another process ({_lock_holder(e)}); DuckDB allows one writer and "
                "no reader beside it. Analysts read analytics.duckdb, not this file: close the other connection, "
                "then run again"
            ) from None
        raise
    if not read_only:  # the warehouse holds PHI: the owner's alone, however it was created
        tighten(path)
        tighten(Path(f"{path}.wal"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit()}'")
    return con


@contextmanager
def duckdb_settings(con, **settings: object) -> Iterator[None]:
    """Set DuckDB settings on `con` for a block and put the previous values back after it, failed or not
    (settings given as None are left alone)."""
    changed = {k: v for k, v in settings.items() if v is not None}
    previous = {k: con.execute("SELECT current_setting(?)", [k]).fetchall()[0][0] for k in changed}
    if "memory_limit" in previous:  # DuckDB reads it back rounded to a display unit: restore the configured text
        previous["memory_limit"] = memory_limit()
    for k, v in changed.items():
        con.execute(f"SET {k} = '{v}'")
    try:
        yield
    finally:
        for k, v in previous.items():
            con.execute(f"SET {k} = '{v}'")


def table_stem(resource_type: str) -> str:
    """MedicationAdministration -> medication_administration (validated: it becomes an identifier)."""
    if not is_resource_type(resource_type):
        raise ValueError(f"not a FHIR resource type name: {resource_type!r}")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", resource_type).lower()


# A load commits its rows batch by batch (so its memory stays flat however large the export) into the
# *_landed tables; readers see them through views that keep only rows of committed loads. The load's log row
# turns `committed` in one final transaction, so its data and its watermark still become visible together,
# and rows of a load that crashed stay invisible until the next load discards them.
DEFAULT_SITE = "main"  # a single clinic's site id, and that of rows stored before sites were recorded

COMMITTED = "load_id IN (SELECT load_id FROM raw.load_log WHERE status = 'committed')"


def landed_tables(con) -> list[str]:
    """Every raw table a load writes row by row (qualified names)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name LIKE '%\\_landed' ESCAPE '\\'"
    ).fetchall()
    return [f"raw.{r[0]}" for r in rows]


def ensure_raw_schema(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SEQUENCE IF NOT EXISTS raw.load_seq")
    con.execute("""
        CREATE TABLE IF NOT EXISTS raw.load_log (
            load_id VARCHAR PRIMARY KEY, load_seq BIGINT, source VARCHAR, mode VARCHAR, landing VARCHAR,
            since VARCHAR, transaction_time VARCHAR, transaction_at TIMESTAMPTZ, started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ, status VARCHAR, files INTEGER, export_errors INTEGER, message VARCHAR,
            warnings VARCHAR)""")
    # warnings: what the extract had to work around (a type the EHR refused, an unsupported _typeFilter); a
    # warehouse from before the column gets it here
    con.execute("ALTER TABLE raw.load_log ADD COLUMN IF NOT EXISTS warnings VARCHAR")
    con.execute(f"ALTER TABLE raw.load_log ADD COLUMN IF NOT EXISTS site_id VARCHAR DEFAULT '{DEFAULT_SITE}'")
    con.execute("""
        CREATE TABLE IF NOT EXISTS raw.load_counts (
            load_id VARCHAR, resource_type VARCHAR, read BIGINT, loaded BIGINT, duplicate BIGINT,
            quarantined BIGINT, tombstones BIGINT, conflicts BIGINT)""")
    # conflicts (of the quarantined: a stored version received again with other content); added to a
    # warehouse from before the column
    con.execute("ALTER TABLE raw.load_counts ADD COLUMN IF NOT EXISTS conflicts BIGINT")
    con.execute("""
        CREATE TABLE IF NOT EXISTS raw.quarantine_landed (
            load_id VARCHAR, resource_type VARCHAR, file VARCHAR, line_number BIGINT, raw_text VARCHAR,
            reason VARCHAR, quarantined_at TIMESTAMPTZ, site_id VARCHAR)""")
    # the site (the EHR connection) a row came from; rows from before sites were recorded are the default's
    con.execute(f"ALTER TABLE raw.quarantine_landed ADD COLUMN IF NOT EXISTS site_id VARCHAR DEFAULT '{DEFAULT_SITE}'")
    con.execute(f"CREATE OR REPLACE VIEW raw.quarantine AS SELECT * FROM raw.quarantine_landed WHERE {COMMITTED}")
    con.execute("""
        CREATE TABLE IF NOT EXISTS raw.export_errors (
            load_id VARCHAR, file VARCHAR, line_number BIGINT, outcome VARCHAR)""")
    for rtype in KNOWN_TYPES:
        ensure_type_tables(con, rtype)


def ensure_type_tables(con, resource_type: str) -> str:
    stem = table_stem(resource_type)
    # zstd for the raw JSON: faster to write and smaller than DuckDB's default (FSST) on FHIR NDJSON
    extra = ", value_score DOUBLE, value_source VARCHAR, is_final BOOLEAN" if resource_type == "Observation" else ""
    con.execute(f"""
        CREATE TABLE IF NOT EXISTS raw.{stem}_versions_landed (
            resource_id VARCHAR NOT NULL, version_id VARCHAR, version_key VARCHAR NOT NULL,
            last_updated VARCHAR, last_updated_at TIMESTAMPTZ, status VARCHAR, is_deleted BOOLEAN NOT NULL,
            resource VARCHAR USING COMPRESSION zstd, source VARCHAR, load_id VARCHAR NOT NULL, load_seq BIGINT,
            file VARCHAR, line_number BIGINT, landed_at TIMESTAMPTZ{extra}, site_id VARCHAR)""")
    con.execute(
        f"ALTER TABLE raw.{stem}_versions_landed ADD COLUMN IF NOT EXISTS site_id VARCHAR DEFAULT '{DEFAULT_SITE}'"
    )
    con.execute(
        f"CREATE OR REPLACE VIEW raw.{stem}_versions AS SELECT * FROM raw.{stem}_versions_landed WHERE {COMMITTED}"
    )
    con.execute(f"CREATE OR REPLACE VIEW raw.{stem}_current AS {current_versions_sql(stem)}")
    return stem


def current_versions_sql(stem: str, engine: str = "duckdb") -> str:
    """The current version of each resource of a type, from its stored versions: the query behind
    raw.<stem>_current in the warehouse, and behind the same view in Spark's catalogue over the lake.

    Analytics see the newest version of each resource; deletions and retractions (entered-in-error, kept in
    the versions table for audit) remove it, and a cancelled Observation never happened. The newest version is
    the highest versionId where the server numbers its versions, then the latest lastUpdated (one dated after
    its export never got here: the load quarantines it); a deletion from an export's deleted[] (a tombstone,
    dated at that export's transactionTime) removes what was updated before it. In DuckDB the ranking runs on
    narrow columns and the winners are fetched by rowid (a window carrying the raw JSON would sort, and past
    the memory limit spill, every stored version's text); Spark has no rowid and ranks whole rows."""
    excluded = "'entered-in-error', 'cancelled'" if stem == "observation" else "'entered-in-error'"
    newest_first = """row_number() OVER (
                PARTITION BY site_id, resource_id, is_deleted
                ORDER BY try_cast(version_id AS BIGINT) DESC NULLS LAST, last_updated_at DESC NULLS LAST,
                         load_seq DESC, line_number DESC) = 1"""
    not_deleted = """NOT v.is_deleted
                  AND NOT EXISTS (SELECT 1 FROM newest d WHERE d.is_deleted AND d.site_id = v.site_id
                                  AND d.resource_id = v.resource_id
                                  AND d.last_updated_at >= coalesce(v.last_updated_at, TIMESTAMP '0001-01-01'))"""
    if engine == "spark":
        return f"""
        WITH newest AS (SELECT * FROM raw.{stem}_versions QUALIFY {newest_first})
        SELECT v.* FROM newest v
        WHERE {not_deleted}
            AND coalesce(v.status, '') NOT IN ({excluded})"""
    return f"""
        WITH newest AS (
            SELECT rowid AS row_id, site_id, resource_id, is_deleted, last_updated_at
            FROM raw.{stem}_versions_landed WHERE {COMMITTED}
            QUALIFY {newest_first})
        SELECT * FROM raw.{stem}_versions_landed
        WHERE rowid IN (
                SELECT v.row_id FROM newest v
                WHERE {not_deleted})
            AND coalesce(status, '') NOT IN ({excluded})"""


def committed_watermark(con, source: str, site_id: str = DEFAULT_SITE) -> str | None:
    """The transactionTime (verbatim) of the newest committed load from `source` of `site_id` (in a network
    each site's EHR has its own clock and its own watermark)."""
    row = con.execute(
        """
        SELECT transaction_time FROM raw.load_log
        WHERE source = ? AND site_id = ? AND status = 'committed' AND transaction_time IS NOT NULL
        ORDER BY transaction_at DESC, load_seq DESC LIMIT 1""",
        [source, site_id],
    ).fetchall()
    return row[0][0] if row else None
