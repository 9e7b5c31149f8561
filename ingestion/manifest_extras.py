"""A bulk export's files other than resources: its deleted[] Bundles (a tombstone version per DELETE entry)
and its error[] OperationOutcomes (kept with the load)."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ingestion.load_plan import InputFile, LoadPlan
from ingestion.warehouse import table_stem


def load_deletions(con, f: InputFile, plan: LoadPlan, params: dict, table_for: Callable[[str], str]) -> dict[str, int]:
    """Each DELETE entry becomes a tombstone version dated at the export's transactionTime (once per resource
    and transactionTime); an unreadable line is quarantined. Returns the tombstones written per type.
    `table_for` gives a type's table stem, creating its tables if needed."""
    rows: dict[str, list[tuple]] = {}
    for n, raw in enumerate(f.path.read_bytes().splitlines(), 1):
        try:
            bundle = orjson.loads(raw)
            for e in bundle.get("entry", []):
                req = e.get("request", {})
                if req.get("method") == "DELETE":
                    rtype, rid = req["url"].strip("/").split("/")[-2:]
                    table_stem(rtype)
                    rows.setdefault(rtype, []).append((rid, n))
        except (orjson.JSONDecodeError, ValueError, KeyError, AttributeError) as e:
            con.execute(
                """INSERT INTO raw.quarantine_landed (load_id, resource_type, file, line_number, raw_text, reason,
                       quarantined_at, site_id) VALUES (?, 'Bundle', ?, ?, ?, ?, ?, ?)""",
                [
                    plan.load_id,
                    f.name,
                    n,
                    raw.decode("utf-8", "replace"),
                    f"unreadable deleted[] entry: {e}",
                    params["landed_at"],
                    params["site_id"],
                ],
            )
    written: dict[str, int] = {}
    for rtype, items in rows.items():
        stem = table_for(rtype)
        con.execute("CREATE OR REPLACE TEMP TABLE tomb (resource_id VARCHAR, line_number BIGINT)")
        con.executemany("INSERT INTO tomb VALUES (?, ?)", items)
        inserted = con.execute(
            f"""
            INSERT INTO raw.{stem}_versions_landed (resource_id, version_id, version_key, last_updated,
                last_updated_at, status, is_deleted, resource, source, load_id, load_seq, file, line_number,
                landed_at, site_id)
            SELECT DISTINCT ON (resource_id) resource_id, NULL, 'deleted|' || $tt, $tt,
                   try_cast($tt AS TIMESTAMPTZ), NULL, true, NULL, $source, $load_id, $load_seq, $file,
                   line_number, $landed_at, $site_id
            FROM tomb t
            WHERE NOT EXISTS (SELECT 1 FROM raw.{stem}_versions_landed v
                              WHERE v.site_id = $site_id AND v.resource_id = t.resource_id
                                AND v.version_key = 'deleted|' || $tt)""",
            {**params, "tt": plan.transaction_time, "file": f.name},
        ).fetchall()
        written[rtype] = inserted[0][0] if inserted else 0
    return written


def read_export_errors(f: InputFile, plan: LoadPlan) -> list[tuple]:
    """The export's error[] file (OperationOutcomes, a few lines): rows for raw.export_errors, stored with the
    load's final commit."""
    lines = f.path.read_bytes().splitlines()
    return [(plan.load_id, f.name, n, raw.decode("utf-8", "replace")) for n, raw in enumerate(lines, 1) if raw.strip()]
