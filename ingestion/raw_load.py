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

import gzip
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ingestion.landing import DESCRIPTOR, read_json
from ingestion.warehouse import (
    COMMITTED,
    FINAL_STATUSES,
    KNOWN_TYPES,
    OBSERVATION_STATUSES,
    ensure_raw_schema,
    ensure_type_tables,
    landed_tables,
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
# A frame handed to DuckDB in one Arrow chunk is scanned by one thread; in chunks this size both cores
# classify it (measured at 10k patients: classification 2.3 s -> 1.3 s).
SCAN_CHUNK_ROWS = 16_384


@dataclass
class InputFile:
    path: Path
    kind: str  # ndjson | bundle | deleted | errors
    declared_type: str | None
    name: str  # as recorded in quarantine (relative to the load's folder)


@dataclass
class LoadPlan:
    load_id: str
    source: str
    mode: str
    folder: Path
    since: str | None
    transaction_time: str | None
    files: list[InputFile]
    warnings: list[str] = field(default_factory=list)


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


def plan_from_landing(landing: Path) -> LoadPlan:
    d = read_json(landing / DESCRIPTOR)
    files = [InputFile(landing / f["path"], "ndjson", f["type"], f["path"]) for f in d["files"]]
    files += [InputFile(landing / p, "deleted", None, p) for p in d.get("deleted", [])]
    files += [InputFile(landing / p, "errors", None, p) for p in d.get("errors", [])]
    return LoadPlan(
        d["export_id"],
        d["source"],
        d["mode"],
        landing,
        d.get("since"),
        d.get("transactionTime"),
        files,
        list(d.get("warnings") or []),
    )


def plan_from_directory(folder: Path, source: str | None = None) -> LoadPlan:
    """NDJSON files (plain or .gz; bulk-export output with or without its manifest, whose deleted[] and
    error[] are applied and recorded as in an extract's landing) or Bundle JSON files."""
    import hashlib

    folder = folder.resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of FHIR files")
    files: list[InputFile] = []
    manifest = folder / "manifest.json"
    transaction_time = None
    if manifest.exists():
        m = read_json(manifest)
        transaction_time = m.get("transactionTime")
        # a downloaded export keeps the manifest's entries as files beside it (by name when the url is remote)
        for key, kind in (("output", "ndjson"), ("deleted", "deleted"), ("error", "errors")):
            for o in m.get(key) or []:
                url = o["url"].split("/")[-1] if "://" in o["url"] else o["url"]
                files.append(InputFile(folder / url, kind, o.get("type") if kind == "ndjson" else None, url))
        if any(f.kind == "deleted" for f in files) and not transaction_time:
            raise ValueError(f"{manifest} lists deleted[] but no transactionTime to date the deletions")
    else:
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            rel = str(p.relative_to(folder))
            if p.name.endswith((".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")):
                files.append(InputFile(p, "ndjson", _type_from_name(p.name), rel))
            elif p.name.endswith(".json"):
                files.append(InputFile(p, "bundle", None, rel))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .ndjson(.gz) or Bundle .json files")
    digest = hashlib.sha256()
    for f in files:
        st = f.path.stat()
        digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return LoadPlan(
        f"dir-{digest.hexdigest()[:16]}", source or f"dir:{folder}", "files", folder, None, transaction_time, files
    )


def _type_from_name(name: str) -> str | None:
    """Observation.ndjson, Observation-0001.ndjson.gz, Observation.000.ndjson -> Observation."""
    m = re.match(r"([A-Z][A-Za-z]+)(?:[-_.]|$)", name)
    return m.group(1) if m else None


# --- reading ------------------------------------------------------------------------------------------
# Batches are polars frames (line_number, line, fallback): `line` is the UTF-8 text, or null with the text
# decoded with replacement characters in `fallback` (kept for quarantine). A file is read in blocks of whole
# lines; polars' CSV reader (one column, no quoting, no header) splits a block into lines in Rust on all
# cores. A block it cannot split exactly as Python would -- invalid UTF-8, a stray carriage return, the
# column separator, a byte-order mark -- is split line by line in Python instead; both give the same frame.
# Under glibc's largest mmap threshold (32 MiB), so the block buffers come from the heap and are reused: with
# 32 MiB blocks every buffer was a fresh mmap (10k patients: 940k page faults in a load, 790k with 16 MiB;
# the load ~7% faster in alternating runs).
READ_BLOCK_BYTES = 16 * 2**20
_SEPARATOR = b"\x1f"  # never in valid JSON text (raw control characters must be escaped there)
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes: a line of only these is blank


def _frame(numbers: list[int], lines: list[str | None], fallback: list[str | None]):
    import polars as pl

    return pl.DataFrame(
        {
            "line_number": pl.Series(numbers, dtype=pl.Int64),
            "line": pl.Series(lines, dtype=pl.String),
            "fallback": pl.Series(fallback, dtype=pl.String),
        }
    )


def _scan_chunks(frame):
    """The frame in SCAN_CHUNK_ROWS-row chunks (zero-copy slices of one contiguous frame)."""
    import polars as pl

    frame = frame.rechunk()
    if frame.height <= SCAN_CHUNK_ROWS:
        return frame
    return pl.concat([frame.slice(i, SCAN_CHUNK_ROWS) for i in range(0, frame.height, SCAN_CHUNK_ROWS)], rechunk=False)


def as_arrow(frame):
    """The frame as Arrow string views, zero-copy, for DuckDB to scan: registered as a polars frame it is
    converted to Arrow's older large_string layout, a copy of every line (~0.06 s a batch)."""
    import polars as pl

    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


def _line_blocks(path: Path, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(block of whole lines, number of its first line); only the file's last block may lack a final newline."""
    opener = gzip.open if path.name.endswith(".gz") else open
    first = 1
    with opener(path, "rb") as f:
        while block := f.read(block_bytes):
            if not block.endswith(b"\n"):
                block += f.readline()  # the rest of the last line (of a line longer than a block, too)
            yield block, first
            first += block.count(b"\n")


def _lines_in_python(block: bytes, first: int):
    numbers: list[int] = []
    lines: list[str | None] = []
    fallback: list[str | None] = []
    for n, raw in enumerate(block.split(b"\n"), first):
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue  # blank lines are not records (nor is the empty text after a final newline)
        try:
            lines.append(raw.decode("utf-8"))
            fallback.append(None)
        except UnicodeDecodeError:
            lines.append(None)
            fallback.append(raw.decode("utf-8", "replace"))
        numbers.append(n)
    return _frame(numbers, lines, fallback)


def _lines_in_polars(block: bytes, first: int):
    """The block's lines, or None when polars would not split it exactly as _lines_in_python does."""
    import io

    import polars as pl

    if (
        _SEPARATOR in block
        or block.startswith(b"\xef\xbb\xbf")  # polars drops a leading BOM; Python keeps it in the line
        or (b"\r" in block and block.count(b"\r") != block.count(b"\r\n"))  # a CR not ending a line
    ):
        return None
    try:
        frame = pl.read_csv(
            io.BytesIO(block),
            has_header=False,
            separator=_SEPARATOR.decode(),
            quote_char=None,
            schema={"line": pl.String},
        )
    except pl.exceptions.PolarsError:  # invalid UTF-8 (or anything else polars cannot read as one column)
        return None
    frame = frame.with_row_index("line_number", offset=first).select(
        pl.col("line_number").cast(pl.Int64), "line", fallback=pl.lit(None, dtype=pl.String)
    )
    # blank lines come back null (empty) or as text; only a line not starting with '{' needs a closer look
    suspects = frame.filter(pl.col("line").is_null() | ~pl.col("line").str.starts_with("{"))
    blank = suspects.filter(pl.col("line").is_null() | (pl.col("line").str.strip_chars(_ASCII_WHITESPACE) == ""))
    if blank.height:
        frame = frame.filter(~pl.col("line_number").is_in(blank["line_number"].implode()))
    return frame


def _ndjson_batches(path: Path, batch_lines: int, block_bytes: int = READ_BLOCK_BYTES) -> Iterator:
    """Frames of `batch_lines` non-blank lines (the last one of a file shorter)."""
    import polars as pl

    pending: list = []
    held = 0
    for block, first in _line_blocks(path, block_bytes):
        frame = _lines_in_polars(block, first)
        if frame is None:
            frame = _lines_in_python(block, first)
        pending.append(frame)
        held += frame.height
        while held >= batch_lines:
            lines = pl.concat(pending, rechunk=False)
            yield _scan_chunks(lines.slice(0, batch_lines))
            pending, held = [lines.slice(batch_lines)], held - batch_lines
    if held:
        yield _scan_chunks(pl.concat(pending, rechunk=False))


def _read_ahead(batches: Iterator) -> Iterator:
    """Read the next batch on a thread while DuckDB works on this one (DuckDB releases the GIL, and its
    insert compresses a row group on one core). One batch ahead at most; a reading error is raised here,
    in the loading thread, and a consumer that stops early stops the reader."""
    import queue
    import threading

    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("done", done))
        except BaseException as e:  # noqa: BLE001 - handed to the loading thread
            put(("error", e))

    reader = threading.Thread(target=read, name="raw-load-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == "error":
                raise item
            if kind == "done":
                return
            yield item
    finally:
        stop.set()
        reader.join()


def _bundle_batches(path: Path) -> Iterator:
    raw = path.read_bytes()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        yield _frame([1], [raw.decode("utf-8", "replace")], [None])  # quarantined as malformed JSON
        return
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        entries = doc.get("entry") or []
        resources = [e.get("resource") if isinstance(e, dict) else None for e in entries]
        yield _scan_chunks(
            _frame(
                list(range(1, len(resources) + 1)),
                [orjson.dumps(r).decode() if r is not None else "null" for r in resources],
                [None] * len(resources),
            )
        )
    else:
        yield _frame([1], [raw.decode("utf-8", "replace")], [None])


# --- SQL ---------------------------------------------------------------------------------------------
_PATHS = [
    "$.resourceType",
    "$.id",
    "$.meta.versionId",
    "$.meta.lastUpdated",
    "$.status",
    "$.valueInteger",
    "$.valueQuantity.value",
    "$.valueString",
]
_OBS_STATUSES = ", ".join(f"'{s}'" for s in OBSERVATION_STATUSES)
_FINAL = ", ".join(f"'{s}'" for s in FINAL_STATUSES)

CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE classified AS
WITH parsed AS (
    -- json_valid guards the extraction (cheaper than try(), which goes through an exception per bad row)
    SELECT file, line_number, line, fallback, declared_type,
           CASE WHEN line IS NOT NULL AND json_valid(line) THEN json_extract_string(line, {_PATHS!r}) END AS f
    FROM batch
), fields AS (
    SELECT file, line_number, line, fallback, declared_type, f IS NOT NULL AS valid,
           regexp_full_match(f[1], '[A-Z][A-Za-z]{{1,63}}') AS type_well_formed,
           f[1] AS resource_type, f[2] AS resource_id, f[3] AS version_id, f[4] AS last_updated,
           f[5] AS status,
           CASE WHEN f[1] = 'Observation' THEN
               CASE WHEN f[6] IS NOT NULL THEN 'valueInteger' WHEN f[7] IS NOT NULL THEN 'valueQuantity'
                    WHEN f[8] IS NOT NULL THEN 'valueString' END END AS value_source,
           f[6] AS v_int, f[7] AS v_qty, f[8] AS v_str
    FROM parsed
), typed AS (
    SELECT *, try_cast(last_updated AS TIMESTAMPTZ) AS last_updated_at,
           CASE value_source WHEN 'valueInteger' THEN try_cast(v_int AS DOUBLE)
                             WHEN 'valueQuantity' THEN try_cast(v_qty AS DOUBLE)
                             WHEN 'valueString' THEN try_cast(trim(v_str) AS DOUBLE) END AS value_score
    FROM fields
), judged AS (
SELECT *,
    CASE
        WHEN line IS NULL THEN 'invalid UTF-8'
        WHEN NOT valid THEN 'malformed JSON'
        WHEN resource_type IS NULL AND json_type(line) <> 'OBJECT'
            THEN 'not a JSON object (a Bundle entry without a resource?)'
        WHEN resource_type IS NULL THEN 'missing resourceType'
        WHEN NOT type_well_formed THEN 'invalid resourceType'
        WHEN declared_type IS NOT NULL AND resource_type <> declared_type
            THEN 'resourceType ' || resource_type || ' in a ' || declared_type || ' file'
        WHEN coalesce(resource_id, '') = '' THEN 'missing id'
        WHEN last_updated IS NOT NULL AND last_updated_at IS NULL
            THEN 'unparseable meta.lastUpdated ''' || last_updated || ''''
        WHEN resource_type = 'Observation' AND status IS NULL THEN 'Observation without status'
        WHEN resource_type = 'Observation' AND status NOT IN ({_OBS_STATUSES})
            THEN 'unknown Observation status ''' || status || ''''
        WHEN resource_type = 'Observation' AND value_source IS NOT NULL AND value_score IS NULL
            THEN 'unreadable value in ' || value_source || ': ''' || coalesce(v_int, v_qty, v_str) || ''''
    END AS reason,
    -- the type a line is counted (and quarantined) under: its own if well formed, else its file's
    coalesce(CASE WHEN type_well_formed THEN resource_type END, declared_type, 'unknown') AS counted_type,
    coalesce(version_id, '') || '|' || coalesce(last_updated, '')
        || CASE WHEN version_id IS NULL AND last_updated IS NULL THEN '|' || md5(line) ELSE '' END AS version_key
FROM typed
)
-- the raw text stays in the batch (joined back on insert), except a quarantined line's: a join back to the
-- batch for a few bad lines would read every line of it again
SELECT * EXCLUDE (line, fallback, type_well_formed),
       CASE WHEN reason IS NOT NULL THEN coalesce(line, fallback) END AS quarantined_text
FROM judged
"""


def _fresh_versions_sql(stem: str) -> str:
    """Lines of the batch that bring a version of `$rtype` not stored yet (line numbers only)."""
    return f"""
        INSERT INTO fresh
        SELECT c.line_number, $rtype FROM classified c
        WHERE c.line_number IN (  -- the first line of each version in the batch (a hash aggregate, not a sort)
                SELECT min(line_number) FROM classified WHERE reason IS NULL AND resource_type = $rtype
                GROUP BY resource_id, version_key)
          -- the landed table holds committed loads and this load's earlier batches (others were discarded)
          AND NOT EXISTS (SELECT 1 FROM raw.{stem}_versions_landed v
                          WHERE v.resource_id = c.resource_id AND v.version_key = c.version_key)
          -- and the versions the previous batch is writing, committed or not
          AND NOT EXISTS (SELECT 1 FROM in_flight i
                          WHERE i.resource_type = $rtype AND i.resource_id = c.resource_id
                            AND i.version_key = c.version_key)"""


def _insert_versions_sql(rtype: str, stem: str) -> str:
    obs_cols = ", value_score, value_source, is_final" if rtype == "Observation" else ""
    obs_vals = f", c.value_score, c.value_source, c.status IN ({_FINAL})" if rtype == "Observation" else ""
    return f"""
        INSERT INTO raw.{stem}_versions_landed (resource_id, version_id, version_key, last_updated, last_updated_at,
            status, is_deleted, resource, source, load_id, load_seq, file, line_number, landed_at{obs_cols})
        SELECT c.resource_id, c.version_id, c.version_key, c.last_updated, c.last_updated_at, c.status, false,
               b.line, $source, $load_id, $load_seq, c.file, c.line_number, $landed_at{obs_vals}
        FROM classified c JOIN batch b USING (line_number)
        WHERE c.line_number IN (
                SELECT line_number FROM fresh WHERE resource_type = $rtype AND line_number <= $cutoff)"""


def _load_threads(threads: int) -> int:
    """DuckDB threads for a load: one fewer than the connection has. Two statements run at once (checking
    one batch, writing the previous) and a reader thread splits the next, each on a core of its own; with a
    pool as large as the machine they oversubscribed it (two cores: a 10k load 7.40 -> 6.13 s, 5 alternating
    pairs, and ~15% fewer page faults)."""
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
        if size_in_bytes(LOAD_MEMORY_LIMIT) < size_in_bytes(memory_limit()):
            con.execute(f"SET memory_limit = '{LOAD_MEMORY_LIMIT}'")
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        con.execute(f"SET threads = {_load_threads(threads)}")
        try:
            load_seq = self._start(plan, started)
            params = {"source": plan.source, "load_id": plan.load_id, "load_seq": load_seq, "landed_at": started}
            export_errors: list[tuple] = []
            self._load_records([f for f in plan.files if f.kind in ("ndjson", "bundle")], params, result)
            for f in plan.files:  # deletions after the records (a manifest lists output[] first)
                if f.kind == "deleted":
                    with self._transaction():
                        self._load_deletions(f, plan, params, result)
                elif f.kind == "errors":
                    export_errors += self._read_errors(f, plan)
            result.export_errors = len(export_errors)
            for rtype, c in result.counts.items():
                if c["read"] != c["loaded"] + c["duplicate"] + c["quarantined"]:
                    raise AssertionError(f"counts do not reconcile for {rtype}: {c}")
            with self._transaction():  # the data becomes visible with its watermark, all at once
                for rtype, c in sorted(result.counts.items()):
                    con.execute(
                        "INSERT INTO raw.load_counts VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            plan.load_id,
                            rtype,
                            c["read"],
                            c["loaded"],
                            c["duplicate"],
                            c["quarantined"],
                            c["tombstones"],
                        ],
                    )
                if export_errors:
                    con.executemany("INSERT INTO raw.export_errors VALUES (?, ?, ?, ?)", export_errors)
                self._write_log(plan, load_seq, "committed", started, result.export_errors, None)
        except BaseException as e:
            self._record_failure(plan, load_seq, started, e)
            raise
        finally:
            con.execute(f"SET threads = {threads}")
        con.execute(f"SET memory_limit = '{memory_limit()}'")
        return result

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _start(self, plan: LoadPlan, started: datetime) -> int:
        """Discard what earlier loads left uncommitted (a crash, a kill), then log this load as `loading`."""
        con = self.con
        with self._transaction():
            self._discard_uncommitted()
            con.execute(
                "UPDATE raw.load_log SET status = 'abandoned', message = 'the process stopped before committing' "
                "WHERE status = 'loading' AND load_id <> ?",
                [plan.load_id],
            )
            load_seq = con.execute("SELECT nextval('raw.load_seq')").fetchall()[0][0]
            self._write_log(plan, load_seq, "loading", started, 0, None)
        return load_seq

    def _discard_uncommitted(self) -> None:
        for table in landed_tables(self.con):
            self.con.execute(f"DELETE FROM {table} WHERE NOT ({COMMITTED})")

    def _write_log(
        self,
        plan: LoadPlan,
        load_seq: int | None,
        status: str,
        started: datetime,
        export_errors: int,
        message: str | None,
    ) -> None:
        """The load's row in raw.load_log (replacing an earlier failed attempt's)."""
        self.con.execute("DELETE FROM raw.load_log WHERE load_id = ?", [plan.load_id])
        self.con.execute(
            """INSERT INTO raw.load_log (load_id, load_seq, source, mode, landing, since, transaction_time,
                   transaction_at, started_at, finished_at, status, files, export_errors, message, warnings)
               VALUES (?, ?, ?, ?, ?, ?, ?, try_cast(? AS TIMESTAMPTZ), ?, ?, ?, ?, ?, ?, ?)""",
            [
                plan.load_id,
                load_seq,
                plan.source,
                plan.mode,
                str(plan.folder),
                plan.since,
                plan.transaction_time,
                plan.transaction_time,
                started,
                datetime.now(UTC),
                status,
                len(plan.files),
                export_errors,
                message,
                "; ".join(plan.warnings) or None,
            ],
        )

    def _record_failure(self, plan: LoadPlan, load_seq: int | None, started: datetime, error: BaseException) -> None:
        try:
            self.con.execute("ROLLBACK")  # if a batch's transaction is still open
        except Exception:  # noqa: BLE001 - none was
            pass
        try:
            with self._transaction():
                self._write_log(plan, load_seq, "failed", started, 0, f"{type(error).__name__}: {error}"[:2000])
                self._discard_uncommitted()
            self.con.execute(f"SET memory_limit = '{memory_limit()}'")
        except Exception:  # noqa: BLE001 - the original error matters more; the next load discards the rows
            pass

    def _counts(self, result: LoadResult, rtype: str) -> dict[str, int]:
        return result.counts.setdefault(
            rtype, {"read": 0, "loaded": 0, "duplicate": 0, "quarantined": 0, "tombstones": 0}
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
            return [f.declared_type] if re.fullmatch(r"[A-Z][A-Za-z]{1,63}", f.declared_type) else []
        rows = cur.execute(
            """SELECT DISTINCT t FROM (SELECT json_extract_string(line, '$.resourceType') AS t FROM batch
                                       WHERE line IS NOT NULL AND json_valid(line))
               WHERE regexp_full_match(t, '[A-Z][A-Za-z]{1,63}')"""
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _batches(self, files: list[InputFile]) -> Iterator[tuple[InputFile, object, bool]]:
        """(file, frame, is the file's last batch), across all the files."""
        for f in files:
            batches = _ndjson_batches(f.path, self.batch_lines) if f.kind == "ndjson" else _bundle_batches(f.path)
            for frame, last in _with_last(batches):
                yield f, frame, last

    def _load_records(self, files: list[InputFile], params: dict, result: LoadResult) -> None:
        """One pipeline over all the files: the next batch is read on a thread; a batch is checked on one
        DuckDB cursor while the previous batch's versions are written and committed on another (a single
        writer thread): the insert compresses a row group on one core, so the other classifies the next batch
        meanwhile. A batch's dedupe sees the versions the batch before it is still writing through
        `in_flight`; every earlier batch is committed before it begins."""
        from concurrent.futures import Future, ThreadPoolExecutor

        import polars as pl

        cursors = [self.con.cursor(), self.con.cursor()]
        writing: list[Future | None] = [None, None]  # each cursor's batch being written
        in_flight = pl.DataFrame(
            schema={"resource_type": pl.String, "resource_id": pl.String, "version_key": pl.String}
        )
        carried = None  # lines of the previous batch past its cutoff, read again with the next
        done = 0
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-load-writer")
        reading = _read_ahead(self._batches(files))
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
                    "SELECT f.resource_type, c.resource_id, c.version_key "
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
        cur.execute(CLASSIFY_SQL)
        cur.execute("CREATE OR REPLACE TEMP TABLE fresh (line_number BIGINT, resource_type VARCHAR)")
        valid_types = cur.execute(
            "SELECT DISTINCT resource_type FROM classified WHERE reason IS NULL ORDER BY 1"
        ).fetchall()
        for (rtype,) in valid_types:
            cur.execute(_fresh_versions_sql(self._table(rtype)), {"rtype": rtype})
        cutoff = self._cutoff(cur, last or len(valid_types) != 1)
        per_type = cur.execute(
            """
            SELECT counted_type, count(*) AS read, count(reason) AS quarantined,
                   count(*) FILTER (WHERE reason IS NULL) AS valid
            FROM classified WHERE line_number <= $cutoff GROUP BY ALL""",
            {"cutoff": cutoff},
        ).fetchall()
        loaded = dict(
            cur.execute(
                "SELECT resource_type, count(*) FROM fresh WHERE line_number <= $cutoff GROUP BY ALL",
                {"cutoff": cutoff},
            ).fetchall()
        )
        cur.execute(
            """
            INSERT INTO raw.quarantine_landed
            SELECT $load_id, counted_type, file, line_number, quarantined_text, reason, $landed_at
            FROM classified WHERE reason IS NOT NULL AND line_number <= $cutoff""",
            {"load_id": params["load_id"], "landed_at": params["landed_at"], "cutoff": cutoff},
        )
        for rtype, read, quarantined, valid in per_type:
            c = self._counts(result, rtype)
            c["read"] += read
            c["quarantined"] += quarantined
            c["loaded"] += loaded.get(rtype, 0)
            c["duplicate"] += valid - loaded.get(rtype, 0)
        return cutoff, loaded

    def _write_batch(self, cur, loaded: dict[str, int], params: dict, cutoff: int) -> None:
        """Insert the batch's new versions (on the writer thread) and commit the batch."""
        for rtype, expected in sorted(loaded.items()):
            inserted = cur.execute(
                _insert_versions_sql(rtype, table_stem(rtype)), {**params, "rtype": rtype, "cutoff": cutoff}
            ).fetchall()[0][0]
            if inserted != expected:
                raise AssertionError(f"{rtype}: {inserted} versions written, {expected} counted")
        cur.execute("COMMIT")
        cur.unregister("batch")
        cur.unregister("in_flight")

    def _cutoff(self, cur, take_all: bool) -> int:
        """The last line number this batch consumes. Its new versions are inserted in whole row groups and
        the lines after the cutoff are read again with the next batch: an insert that ends in a partial row
        group makes every later checkpoint merge and rewrite the neighbouring groups (measured at 10k
        patients: 1.2 s of an 8 s load). A file's last batch, a batch of several types (Bundles) or one
        with less than a row group of new versions is consumed whole."""
        fresh = cur.execute("SELECT count(*) FROM fresh").fetchall()[0][0]
        if take_all or fresh < self.row_group_rows:
            return EVERY_LINE
        rows = fresh - fresh % self.row_group_rows
        last_row = cur.execute(f"SELECT line_number FROM fresh ORDER BY line_number LIMIT 1 OFFSET {rows - 1}")
        return last_row.fetchall()[0][0]

    def _load_deletions(self, f: InputFile, plan: LoadPlan, params: dict, result: LoadResult) -> None:
        """deleted[] Bundles: each DELETE entry becomes a tombstone version dated at the transactionTime."""
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
                self.con.execute(
                    "INSERT INTO raw.quarantine_landed VALUES (?, 'Bundle', ?, ?, ?, ?, ?)",
                    [
                        plan.load_id,
                        f.name,
                        n,
                        raw.decode("utf-8", "replace"),
                        f"unreadable deleted[] entry: {e}",
                        params["landed_at"],
                    ],
                )
        for rtype, items in rows.items():
            stem = self._table(rtype)
            self.con.execute("CREATE OR REPLACE TEMP TABLE tomb (resource_id VARCHAR, line_number BIGINT)")
            self.con.executemany("INSERT INTO tomb VALUES (?, ?)", items)
            inserted = self.con.execute(
                f"""
                INSERT INTO raw.{stem}_versions_landed (resource_id, version_id, version_key, last_updated,
                    last_updated_at, status, is_deleted, resource, source, load_id, load_seq, file, line_number,
                    landed_at)
                SELECT DISTINCT ON (resource_id) resource_id, NULL, 'deleted|' || $tt, $tt,
                       try_cast($tt AS TIMESTAMPTZ), NULL, true, NULL, $source, $load_id, $load_seq, $file,
                       line_number, $landed_at
                FROM tomb t
                WHERE NOT EXISTS (SELECT 1 FROM raw.{stem}_versions_landed v
                                  WHERE v.resource_id = t.resource_id AND v.version_key = 'deleted|' || $tt)""",
                {**params, "tt": plan.transaction_time, "file": f.name},
            ).fetchall()
            n = inserted[0][0] if inserted else 0
            self._counts(result, rtype)["tombstones"] += n
            result.tombstones += n

    def _read_errors(self, f: InputFile, plan: LoadPlan) -> list[tuple]:
        """The export's error[] files (OperationOutcomes, a few lines): stored with the final commit."""
        lines = f.path.read_bytes().splitlines()
        return [
            (plan.load_id, f.name, n, raw.decode("utf-8", "replace")) for n, raw in enumerate(lines, 1) if raw.strip()
        ]
