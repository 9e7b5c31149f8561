"""Load a landing folder (or any folder of NDJSON / Bundle files) into the raw layer.

Every line read ends up loaded, counted as a duplicate of a stored version, or in raw.quarantine with a
reason; per type, read = loaded + duplicate + quarantined. Batches commit one by one into the raw *_landed
tables (so memory stays flat whatever the export's size), invisible to readers until the load's log row —
which is also the new watermark — turns `committed` in a final transaction: a crash leaves the previous
state intact, the next load discards the crashed load's rows, and a rerun is idempotent.

polars splits the files into batches of lines (Python only the odd block polars cannot split exactly);
DuckDB does the flattening with JSON paths, the checks and the dedupe as set operations. Three things
overlap on the two cores: reading the next batch (a thread), checking this one (one DuckDB cursor) and
writing the previous one (a writer thread on a second cursor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingestion.classify import (
    CLASSIFY_SQL,
    CONFLICT_REASON,
    CONFLICTS_IN_LOAD_SQL,
    conflicts_with_stored_sql,
    fresh_versions_sql,
    insert_versions_sql,
    known_versions_sql,
)
from ingestion.line_reader import as_arrow, bundle_batches, ndjson_batches, read_ahead
from ingestion.load_log import record_failure, start_load, transaction, write_log
from ingestion.load_plan import InputFile, LoadPlan, plan_from_directory, plan_from_landing
from ingestion.manifest_extras import load_deletions, read_export_errors
from ingestion.warehouse import (
    KNOWN_TYPES,
    RESOURCE_TYPE_PATTERN,
    duckdb_settings,
    ensure_raw_schema,
    ensure_type_tables,
    is_resource_type,
    memory_limit,
    size_in_bytes,
    table_stem,
)

# A batch is cut after its last whole row group of new versions (see Loader._cutoff; a whole group is written
# straight to the database file, a partial one is rewritten by later checkpoints), so it is sized to hold one
# group plus the duplicates and quarantined lines around it.
BATCH_LINES = 125_000
ROW_GROUP_ROWS = 122_880  # DuckDB's
EVERY_LINE = 2**62  # a cutoff past any line number: the batch is taken whole
# The load streams: each batch is classified, inserted and committed, and nothing is read back but the
# narrow dedupe columns. A buffer pool larger than this would only cache written blocks (RSS growing with
# the export up to the connection's limit), so the load runs with the smaller of the two.
LOAD_MEMORY_LIMIT = "256MB"


@dataclass
class LoadResult:
    load_id: str
    skipped: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    tombstones: int = 0
    export_errors: int = 0

    def totals(self) -> dict[str, int]:
        keys = ("read", "loaded", "duplicate", "quarantined")
        return {k: sum(c[k] for c in self.counts.values()) for k in keys}


def _load_threads(threads: int) -> int:
    """DuckDB threads for a load: one fewer than the connection has. Two statements run at once (checking
    one batch, writing the previous) and a reader thread splits the next, each on a core of its own; with a
    pool as large as the machine they oversubscribed it (figures in docs/operations.md)."""
    return max(1, int(threads) - 1)


def _with_last(items: Iterator) -> Iterator[tuple[object, bool]]:
    """(item, is_last) pairs."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True


class Loader:
    def __init__(
        self,
        con,
        log: Callable[[str], None] = print,
        progress: Callable[[str, int], None] | None = None,
        batch_lines: int = BATCH_LINES,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        self.con = con
        self.log = log
        self.progress = progress
        self.batch_lines = batch_lines
        self.row_group_rows = row_group_rows
        self._known_tables: set[str] = set()
        self._newest_allowed: datetime | None = None

    def already_committed(self, load_id: str) -> bool:
        return bool(
            self.con.execute(
                "SELECT 1 FROM raw.load_log WHERE load_id = ? AND status = 'committed'", [load_id]
            ).fetchall()
        )

    def load(self, plan: LoadPlan) -> LoadResult:
        con = self.con
        ensure_raw_schema(con)
        self._known_tables.update(KNOWN_TYPES)  # no DDL while batches are being written
        if self.already_committed(plan.load_id):
            self.log(f"load {plan.load_id} was already committed; nothing to do")
            return LoadResult(plan.load_id, skipped=True)
        started = datetime.now(UTC)
        result = LoadResult(plan.load_id, skipped=False)
        load_seq = None
        smaller = LOAD_MEMORY_LIMIT if size_in_bytes(LOAD_MEMORY_LIMIT) < size_in_bytes(memory_limit()) else None
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        with duckdb_settings(con, memory_limit=smaller, threads=_load_threads(threads)):
            try:
                load_seq = start_load(con, plan, started)
                self._newest_allowed = plan.newest_allowed(started)
                params = {
                    "site_id": plan.site_id,  # every row of the load carries its site
                    "source": plan.source,
                    "load_id": plan.load_id,
                    "load_seq": load_seq,
                    "landed_at": started,
                }
                export_errors = self._load_everything(plan, params, result)
                with transaction(con):  # the data becomes visible with its watermark, all at once
                    self._record_counts(plan, result, export_errors)
                    write_log(con, plan, load_seq, "committed", started, result.export_errors, None)
            except BaseException as e:
                record_failure(con, plan, load_seq, started, e)
                raise
        return result

    def _load_everything(self, plan: LoadPlan, params: dict, result: LoadResult) -> list[tuple]:
        """Records, then deletions (a manifest lists output[] first); counts checked. Returns the export's
        errors, which are written when the load commits."""
        self._load_records([f for f in plan.files if f.kind in ("ndjson", "bundle")], params, result)
        export_errors: list[tuple] = []
        for f in plan.files:
            if f.kind == "deleted":
                with transaction(self.con):
                    for rtype, tombstones in load_deletions(self.con, f, plan, params, self._table).items():
                        self._counts(result, rtype)["tombstones"] += tombstones
                        result.tombstones += tombstones
            elif f.kind == "errors":
                export_errors += read_export_errors(f, plan)
        result.export_errors = len(export_errors)
        for rtype, c in result.counts.items():
            if c["read"] != c["loaded"] + c["duplicate"] + c["quarantined"]:
                raise AssertionError(f"counts do not reconcile for {rtype}: {c}")
        return export_errors

    def _record_counts(self, plan: LoadPlan, result: LoadResult, export_errors: list[tuple]) -> None:
        for rtype, c in sorted(result.counts.items()):
            self.con.execute(
                """INSERT INTO raw.load_counts (load_id, resource_type, read, loaded, duplicate, quarantined,
                       conflicts, tombstones) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    plan.load_id,
                    rtype,
                    c["read"],
                    c["loaded"],
                    c["duplicate"],
                    c["quarantined"],
                    c["conflicts"],
                    c["tombstones"],
                ],
            )
        if export_errors:
            self.con.executemany(
                "INSERT INTO raw.export_errors (load_id, file, line_number, outcome) VALUES (?, ?, ?, ?)",
                export_errors,
            )

    def _counts(self, result: LoadResult, rtype: str) -> dict[str, int]:
        return result.counts.setdefault(
            rtype, {"read": 0, "loaded": 0, "duplicate": 0, "quarantined": 0, "conflicts": 0, "tombstones": 0}
        )

    def _table(self, rtype: str) -> str:
        if rtype not in self._known_tables:
            ensure_type_tables(self.con, rtype)
            self._known_tables.add(rtype)
        return table_stem(rtype)

    @staticmethod
    def _types_in(cur, f: InputFile) -> list[str]:
        """The resource types a batch can write: its file's declared type (lines of another type are
        quarantined), else the well-formed types its lines name (Bundles, files named for no type)."""
        if f.declared_type is not None:
            return [f.declared_type] if is_resource_type(f.declared_type) else []
        rows = cur.execute(
            """SELECT DISTINCT t FROM (SELECT json_extract_string(line, '$.resourceType') AS t FROM batch
                                       WHERE line IS NOT NULL AND json_valid(line))
               WHERE regexp_full_match(t, $pattern)""",
            {"pattern": RESOURCE_TYPE_PATTERN},
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _batches(self, files: list[InputFile]) -> Iterator[tuple[InputFile, object, bool]]:
        """(file, frame, is the file's last batch), across all the files."""
        for f in files:
            batches = ndjson_batches(f.path, self.batch_lines) if f.kind == "ndjson" else bundle_batches(f.path)
            for frame, last in _with_last(batches):
                yield f, frame, last

    def _load_records(self, files: list[InputFile], params: dict, result: LoadResult) -> None:
        """One pipeline over all the files: the next batch is read on a thread; a batch is checked on one
        DuckDB cursor while the previous batch's versions are written and committed on another (a single
        writer thread): the insert compresses a row group on one core, so the other classifies the next batch
        meanwhile. A batch's dedupe sees the versions the batch before it is still writing through
        `in_flight`; every earlier batch is committed before it begins."""

        import polars as pl

        cursors = [self.con.cursor(), self.con.cursor()]
        writing: list[Future | None] = [None, None]  # each cursor's batch being written
        in_flight = pl.DataFrame(
            schema={
                "resource_type": pl.String,
                "resource_id": pl.String,
                "version_key": pl.String,
                "line_hash": pl.UInt64,
            }
        )
        carried = None  # lines of the previous batch past its cutoff, read again with the next
        done = 0
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-load-writer")
        reading = read_ahead(self._batches(files))
        try:
            current = None
            for i, (f, frame, last) in enumerate(reading):
                if f is not current:
                    current, done = f, 0
                    self.log(f"  reading {f.name}")  # progress in non-interactive logs (Airflow), a line per file
                slot = i % 2
                cur = cursors[slot]
                if writing[slot] is not None:
                    writing[slot].result()  # the cursor's previous batch is committed
                    writing[slot] = None
                if carried is not None:
                    frame = pl.concat([carried, frame], rechunk=False)
                batch = frame.with_columns(  # shares the frame's buffers
                    file=pl.lit(f.name, dtype=pl.String), declared_type=pl.lit(f.declared_type, dtype=pl.String)
                )
                cur.register("batch", as_arrow(batch))
                cur.register("in_flight", in_flight)
                for rtype in self._types_in(cur, f):  # DDL before the batch's transaction, which must see it
                    self._table(rtype)
                cur.execute("BEGIN TRANSACTION")
                cutoff, loaded = self._check_batch(cur, params, result, last)
                in_flight = cur.sql(
                    "SELECT f.resource_type, c.resource_id, c.version_key, c.line_hash "
                    f"FROM fresh f JOIN classified c USING (line_number) WHERE line_number <= {cutoff}"
                ).pl()
                writing[slot] = writer.submit(self._write_batch, cur, loaded, params, cutoff)
                carried = frame.filter(pl.col("line_number") > cutoff)
                done += frame.height - carried.height
                if carried.is_empty():
                    carried = None
                if self.progress:
                    self.progress(f.name, done)
            for w in writing:
                if w is not None:
                    w.result()
        except BaseException:
            for w in writing:
                if w is not None:
                    w.exception()  # wait for it: the cursor is rolled back below
            for cur in cursors:
                try:
                    cur.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - no transaction open on it
                    pass
            raise
        finally:
            reading.close()  # stops the reader thread now, not when the traceback is dropped
            writer.shutdown(wait=True)
            for cur in cursors:
                cur.close()

    def _check_batch(self, cur, params: dict, result: LoadResult, last: bool) -> tuple[int, dict[str, int]]:
        """Classify the batch, find its new versions, cut it, count it and quarantine what failed; returns the
        cutoff and the number of new versions per type to write."""
        cur.execute(CLASSIFY_SQL, {"newest_allowed": self._newest_allowed})
        cur.execute("CREATE OR REPLACE TEMP TABLE fresh (line_number BIGINT, resource_type VARCHAR)")
        cur.execute("CREATE OR REPLACE TEMP TABLE conflicts (line_number BIGINT)")
        valid_types = cur.execute(
            "SELECT DISTINCT resource_type FROM classified WHERE reason IS NULL ORDER BY 1"
        ).fetchall()
        for (rtype,) in valid_types:
            stem = self._table(rtype)
            for statement, needs_site in zip(known_versions_sql(stem), (False, True), strict=True):
                cur.execute(statement, {"rtype": rtype, **({"site_id": params["site_id"]} if needs_site else {})})
            # the conflict checks read texts again: only for the versions the batch repeats
            stored, in_flight, repeated = cur.execute(
                """SELECT count(stored_row), count(flight_hash),
                          (SELECT count(*) FROM batch_versions WHERE lines > 1) FROM known"""
            ).fetchall()[0]
            if stored:
                cur.execute(conflicts_with_stored_sql(stem))
            if in_flight or repeated:
                cur.execute(CONFLICTS_IN_LOAD_SQL, {"rtype": rtype})
            cur.execute(fresh_versions_sql(), {"rtype": rtype})
        if cur.execute("SELECT count(*) FROM conflicts").fetchall()[0][0]:
            cur.execute(
                """UPDATE classified SET reason = $reason, quarantined_text = b.line FROM batch b
                   WHERE classified.line_number = b.line_number
                     AND classified.line_number IN (SELECT line_number FROM conflicts)""",
                {"reason": CONFLICT_REASON},
            )
        cutoff = self._cutoff(cur, last or len(valid_types) != 1)
        # a bad line already quarantined by an earlier load (a landing sent again) is a duplicate of it
        cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE requarantined AS
            SELECT c.line_number FROM classified c
            WHERE c.reason IS NOT NULL AND c.line_number <= $cutoff
              AND EXISTS (SELECT 1 FROM raw.quarantine q
                          WHERE q.site_id = $site_id AND q.resource_type = c.counted_type AND q.reason = c.reason
                            AND md5(q.raw_text) = md5(c.quarantined_text))""",
            {"cutoff": cutoff, "site_id": params["site_id"]},
        )
        per_type = cur.execute(
            """
            SELECT counted_type, count(*) AS read,
                   count(*) FILTER (WHERE reason IS NOT NULL AND NOT requarantined) AS quarantined,
                   count(*) FILTER (WHERE reason IS NULL OR requarantined) AS valid,
                   count(*) FILTER (WHERE reason = $conflict AND NOT requarantined) AS conflicts
            FROM (SELECT *, line_number IN (SELECT line_number FROM requarantined) AS requarantined FROM classified)
            WHERE line_number <= $cutoff GROUP BY ALL""",
            {"cutoff": cutoff, "conflict": CONFLICT_REASON},
        ).fetchall()
        loaded = dict(
            cur.execute(
                "SELECT resource_type, count(*) FROM fresh WHERE line_number <= $cutoff GROUP BY ALL",
                {"cutoff": cutoff},
            ).fetchall()
        )
        cur.execute(
            """
            INSERT INTO raw.quarantine_landed (load_id, resource_type, file, line_number, raw_text, reason,
                quarantined_at, site_id)
            SELECT $load_id, counted_type, file, line_number, quarantined_text, reason, $landed_at, $site_id
            FROM classified WHERE reason IS NOT NULL AND line_number <= $cutoff
              AND line_number NOT IN (SELECT line_number FROM requarantined)""",
            {
                "load_id": params["load_id"],
                "landed_at": params["landed_at"],
                "site_id": params["site_id"],
                "cutoff": cutoff,
            },
        )
        for rtype, read, quarantined, valid, conflicts in per_type:
            c = self._counts(result, rtype)
            c["read"] += read
            c["quarantined"] += quarantined
            c["conflicts"] += conflicts
            c["loaded"] += loaded.get(rtype, 0)
            c["duplicate"] += valid - loaded.get(rtype, 0)
        return cutoff, loaded

    def _write_batch(self, cur, loaded: dict[str, int], params: dict, cutoff: int) -> None:
        """Insert the batch's new versions (on the writer thread) and commit the batch."""
        for rtype, expected in sorted(loaded.items()):
            inserted = cur.execute(
                insert_versions_sql(rtype, table_stem(rtype)), {**params, "rtype": rtype, "cutoff": cutoff}
            ).fetchall()[0][0]
            if inserted != expected:
                raise AssertionError(f"{rtype}: {inserted} versions written, {expected} counted")
        cur.execute("COMMIT")
        cur.unregister("batch")
        cur.unregister("in_flight")

    def _cutoff(self, cur, take_all: bool) -> int:
        """The last line number this batch consumes. Its new versions are inserted in whole row groups and
        the lines after the cutoff are read again with the next batch: an insert that ends in a partial row
        group makes every later checkpoint merge and rewrite the neighbouring groups. A file's last batch, a
        batch of several types (Bundles) or one with less than a row group of new versions is consumed whole."""
        fresh = cur.execute("SELECT count(*) FROM fresh").fetchall()[0][0]
        if take_all or fresh < self.row_group_rows:
            return EVERY_LINE
        rows = fresh - fresh % self.row_group_rows
        last_row = cur.execute(f"SELECT line_number FROM fresh ORDER BY line_number LIMIT 1 OFFSET {rows - 1}")
        return last_row.fetchall()[0][0]


__all__ = ["Loader", "LoadResult", "LoadPlan", "InputFile", "plan_from_directory", "plan_from_landing"]
