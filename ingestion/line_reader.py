"""Reading FHIR files into batches of lines: NDJSON (plain or gzip) in blocks split by polars, Bundles whole.

Batches are polars frames (line_number, line, fallback, oversize_bytes): `line` is the UTF-8 text, or null
with the text decoded with replacement characters in `fallback` (kept for quarantine). A line longer than
the limit is never held whole: it becomes a null line with its length in `oversize_bytes` and its first
bytes in `fallback`. A file is read in blocks of whole
lines; polars' CSV reader (one column, no quoting, no header) splits a block into lines in Rust on all
cores. A block it cannot split exactly as Python would -- invalid UTF-8, a stray carriage return, the
column separator, a byte-order mark -- is split line by line in Python instead; both give the same frame.
"""

from __future__ import annotations

import gzip
import io
import os
import queue
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

# A frame handed to DuckDB in one Arrow chunk is scanned by one thread; in chunks this size both cores
# classify it.
SCAN_CHUNK_ROWS = 16_384
# Below glibc's largest mmap threshold, so the block buffers come from the heap and are reused rather than
# mapped afresh for every block (figures in docs/operations.md).
READ_BLOCK_BYTES = 16 * 2**20
_SEPARATOR = b"\x1f"  # never in valid JSON text (raw control characters must be escaped there)
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes: a line of only these is blank
DEFAULT_MAX_LINE_BYTES = 8 * 2**20
OVERSIZE_HEAD_CHARS = 64 * 2**10  # what quarantine keeps of a line over the limit (the file keeps the rest)
_SKIP_BYTES = 2**20


def max_line_bytes() -> int:
    """The longest line read (OUTCOMES_MAX_LINE_BYTES); a longer one is quarantined unread."""
    value = os.environ.get("OUTCOMES_MAX_LINE_BYTES", "").strip()
    if not value:
        return DEFAULT_MAX_LINE_BYTES
    if not value.isdigit() or int(value) < 1024:
        raise ValueError(f"OUTCOMES_MAX_LINE_BYTES must be a number of bytes (at least 1024), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Oversize:
    line_number: int
    length: int
    head: bytes


def _frame(
    numbers: list[int],
    lines: list[str | None],
    fallback: list[str | None],
    oversize: list[int | None] | None = None,
):
    import polars as pl

    return pl.DataFrame(
        {
            "line_number": pl.Series(numbers, dtype=pl.Int64),
            "line": pl.Series(lines, dtype=pl.String),
            "fallback": pl.Series(fallback, dtype=pl.String),
            "oversize_bytes": pl.Series(oversize or [None] * len(numbers), dtype=pl.Int64),
        }
    )


def oversize_head(raw: bytes) -> str:
    """What quarantine keeps of a line over the limit: its first characters (the landing file keeps it all)."""
    return raw[: 4 * OVERSIZE_HEAD_CHARS].decode("utf-8", "replace")[:OVERSIZE_HEAD_CHARS] + " [...]"


def _oversize_frame(items: list[Oversize]):
    return _frame(
        [o.line_number for o in items],
        [None] * len(items),
        [oversize_head(o.head) for o in items],
        [o.length for o in items],
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
    converted to Arrow's older large_string layout, a copy of every line."""
    import polars as pl

    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


def _skip_line(f) -> int:
    """Read past the rest of a line without holding it; the bytes skipped, less its line ending."""
    skipped = 0
    while piece := f.readline(_SKIP_BYTES):
        skipped += len(piece.rstrip(b"\r\n"))
        if piece.endswith(b"\n"):
            break
    return skipped


def _line_blocks(path: Path, block_bytes: int, max_line: int) -> Iterator[tuple[bytes, int, list[Oversize]]]:
    """(block of whole lines, number of its first line, the lines over `max_line` bytes cut from its end);
    only the file's last block may lack a final newline. A line over the limit that fits in a block stays in
    it (the frame marks it); one running past the block is read past, never held whole."""
    opener = gzip.open if path.name.endswith(".gz") else open
    first = 1
    try:
        with opener(path, "rb") as f:
            while block := f.read(block_bytes):
                cut: list[Oversize] = []
                if not block.endswith(b"\n"):
                    start = block.rfind(b"\n") + 1  # where the unfinished last line starts
                    room = max_line + 1 - (len(block) - start)
                    if room > 0:
                        block += f.readline(room)
                    if not block.endswith(b"\n") and len(block) - start > max_line:
                        length = len(block) - start + _skip_line(f)
                        head = block[start : start + 4 * OVERSIZE_HEAD_CHARS]
                        block = block[:start]
                        cut.append(Oversize(first + block.count(b"\n"), length, head))
                yield block, first, cut
                first += block.count(b"\n") + len(cut)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # nothing of this load becomes visible: the file must be fetched again, not half-read
        raise ValueError(
            f"{path} is damaged after line {first - 1} ({e}); download or copy it again, then rerun the load"
        ) from None


def lines_in_python(block: bytes, first: int, max_line: int = DEFAULT_MAX_LINE_BYTES):
    numbers: list[int] = []
    lines: list[str | None] = []
    fallback: list[str | None] = []
    oversize: list[int | None] = []
    for n, raw in enumerate(block.split(b"\n"), first):
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue  # blank lines are not records (nor is the empty text after a final newline)
        numbers.append(n)
        if len(raw) > max_line:
            lines.append(None)
            fallback.append(oversize_head(raw))
            oversize.append(len(raw))
            continue
        oversize.append(None)
        try:
            lines.append(raw.decode("utf-8"))
            fallback.append(None)
        except UnicodeDecodeError:
            lines.append(None)
            fallback.append(raw.decode("utf-8", "replace"))
    return _frame(numbers, lines, fallback, oversize)


def lines_in_polars(block: bytes, first: int, max_line: int = DEFAULT_MAX_LINE_BYTES):
    """The block's lines, or None when polars would not split it exactly as lines_in_python does."""
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
        pl.col("line_number").cast(pl.Int64),
        "line",
        fallback=pl.lit(None, dtype=pl.String),
        oversize_bytes=pl.lit(None, dtype=pl.Int64),
    )
    # blank lines come back null (empty) or as text; only a line not starting with '{' needs a closer look
    suspects = frame.filter(pl.col("line").is_null() | ~pl.col("line").str.starts_with("{"))
    blank = suspects.filter(pl.col("line").is_null() | (pl.col("line").str.strip_chars(_ASCII_WHITESPACE) == ""))
    if blank.height:
        frame = frame.filter(~pl.col("line_number").is_in(blank["line_number"].implode()))
    # a block this size may hold a line over the limit; the columns are rewritten only when one does
    if len(block) > max_line and (frame["line"].str.len_bytes().max() or 0) > max_line:
        length = pl.col("line").str.len_bytes().cast(pl.Int64)
        too_long = pl.col("line").is_not_null() & (length > max_line)
        frame = frame.with_columns(
            line=pl.when(too_long).then(None).otherwise(pl.col("line")),
            fallback=pl.when(too_long)
            .then(pl.col("line").str.slice(0, OVERSIZE_HEAD_CHARS) + " [...]")
            .otherwise(pl.col("fallback")),
            oversize_bytes=pl.when(too_long).then(length).otherwise(pl.col("oversize_bytes")),
        )
    return frame


def ndjson_batches(
    path: Path, batch_lines: int, block_bytes: int = READ_BLOCK_BYTES, max_line: int | None = None
) -> Iterator:
    """Frames of `batch_lines` non-blank lines (the last one of a file shorter)."""
    import polars as pl

    max_line = max_line or max_line_bytes()
    pending: list = []
    held = 0
    for block, first, cut in _line_blocks(path, block_bytes, max_line):
        frame = lines_in_polars(block, first, max_line)
        if frame is None:
            frame = lines_in_python(block, first, max_line)
        if cut:
            frame = pl.concat([frame, _oversize_frame(cut)])
        pending.append(frame)
        held += frame.height
        while held >= batch_lines:
            lines = pl.concat(pending, rechunk=False)
            yield _scan_chunks(lines.slice(0, batch_lines))
            pending, held = [lines.slice(batch_lines)], held - batch_lines
    if held:
        yield _scan_chunks(pl.concat(pending, rechunk=False))


def read_ahead(batches: Iterator) -> Iterator:
    """Read the next batch on a thread while DuckDB works on this one (DuckDB releases the GIL, and its
    insert compresses a row group on one core). One batch ahead at most; a reading error is raised here,
    in the loading thread, and a consumer that stops early stops the reader."""
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


def bundle_batches(path: Path) -> Iterator:
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
                # an entry without a resource is quarantined with the entry's own text
                [orjson.dumps(e).decode() if r is None else None for e, r in zip(entries, resources, strict=True)],
            )
        )
    else:
        yield _frame([1], [raw.decode("utf-8", "replace")], [None])
