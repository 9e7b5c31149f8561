"""Which raw records a raw-gate run validates: everything, or only what changed since the last passed run.

An incremental run re-validates (per resource type) the resources with a version loaded after the last
passed run, every record currently in quarantine (a late-arriving patient can release them), and records
whose patient was deleted since (their patient no longer resolves). Every row-level check depends only on
the row itself, its patient and the seeds, so these are exactly the verdicts that can have changed. A new
suite or seed (checks fingerprint), a failed last run, or `--full` makes the run full.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from expectations.store import QUARANTINE_TABLE

SCOPE_TABLE = "gate_scope"  # a temp table: (resource_type, resource_id)
PATIENT_LINKED = {  # resource type -> (versions table, staging view and its id column), for rows naming a patient
    "Observation": ("observation", "stg_fhir__observations", "observation_id"),
    "MedicationAdministration": (
        "medication_administration",
        "stg_fhir__medication_administrations",
        "medication_administration_id",
    ),
    "Procedure": ("procedure", "stg_fhir__procedures", "procedure_id"),
}
SCOPED_TYPES = {**{t: v[0] for t, v in PATIENT_LINKED.items()}, "Patient": "patient"}


@dataclass(frozen=True)
class RawScope:
    full: bool
    through_load_seq: int | None  # the newest committed load this run covers
    since_load_seq: int | None  # incremental: loads after this one are new
    reason: str

    @property
    def label(self) -> str:
        return "full" if self.full else "incremental"


def checks_fingerprint(files: list[str]) -> str:
    """Changes whenever one of the files changes: the suite's code and the seeds its checks read."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def plan(con, fingerprint: str, force_full: bool = False) -> RawScope:
    through = con.execute("SELECT max(load_seq) FROM raw.load_log WHERE status = 'committed'").fetchall()[0][0]
    rows = con.execute(
        """SELECT success, through_load_seq, checks_fingerprint FROM quality.validation_runs
           WHERE suite = 'raw' ORDER BY started_at DESC LIMIT 1"""
    ).fetchall()
    last = rows[0] if rows else None
    if force_full:
        return RawScope(True, through, None, "full revalidation requested")
    if last is None or last[1] is None:
        return RawScope(True, through, None, "no earlier incremental-capable run")
    success, since, fingerprint_then = last
    if not success:
        return RawScope(True, through, None, "the last raw validation failed")
    if fingerprint_then != fingerprint:
        return RawScope(True, through, None, "the checks or their seeds changed")
    return RawScope(False, through, since, f"raw loads after #{since}")


def materialize(con, scope: RawScope) -> dict[str, int]:
    """Create the temp table of records to validate (incremental runs); returns counts per type."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE_TABLE} (resource_type VARCHAR, resource_id VARCHAR)")
    if scope.full:
        return {}
    since = scope.since_load_seq
    for rtype, stem in SCOPED_TYPES.items():
        con.execute(
            f"""INSERT INTO {SCOPE_TABLE}
                SELECT DISTINCT ?, resource_id FROM raw.{stem}_versions WHERE load_seq > ?
                UNION SELECT resource_type, resource_id FROM {QUARANTINE_TABLE}
                      WHERE suite = 'raw' AND resource_type = ?""",
            [rtype, since, rtype],
        )
    gone = con.execute(
        """SELECT count(*) FROM (SELECT resource_id FROM raw.patient_versions WHERE load_seq > ?
                                  EXCEPT SELECT resource_id FROM raw.patient_current)""",
        [since],
    ).fetchall()[0][0]
    if gone:  # rare: only then is it worth reading every record's subject
        for rtype, (_, view, id_column) in PATIENT_LINKED.items():
            con.execute(
                f"""INSERT INTO {SCOPE_TABLE}
                    SELECT ?, {id_column} FROM staging.{view}
                    WHERE patient_id IN (
                        SELECT resource_id FROM raw.patient_versions WHERE load_seq > ?
                        EXCEPT SELECT resource_id FROM raw.patient_current)""",
                [rtype, since],
            )
    rows = con.execute(f"SELECT resource_type, count(DISTINCT resource_id) FROM {SCOPE_TABLE} GROUP BY ALL").fetchall()
    return dict(rows)


def filter_sql(resource_type: str, id_expr: str) -> str:
    """A WHERE condition keeping the records in scope (the temp table is empty-checked by the caller)."""
    return f"{id_expr} IN (SELECT resource_id FROM {SCOPE_TABLE} WHERE resource_type = '{resource_type}')"
