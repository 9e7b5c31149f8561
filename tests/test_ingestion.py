"""Ingestion against `outcomes ehr serve` on 127.0.0.1 and from files: nothing lost, nothing doubled."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import BIN, ROOT, EHRProcess, outcomes

from ehr_simulator.generate import RESOURCE_TYPES, generate
from ehr_simulator.params import GeneratorConfig
from ingestion.warehouse import table_stem

TYPES = [t for t in RESOURCE_TYPES if t != "Practitioner"]


def expected_current(clinic: Path) -> dict[str, dict[str, str]]:
    """What the EHR holds now: newest version per id, minus deletions and retractions."""
    deleted = {json.loads(x)["id"] for x in (clinic / "_ehr" / "deleted.ndjson").read_text().splitlines()}
    out: dict[str, dict[str, str]] = {}
    for t in TYPES:
        newest: dict[str, dict] = {}
        for line in (clinic / f"{t}.ndjson").read_bytes().splitlines():
            try:
                r = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if r["id"] not in newest or int(r["meta"]["versionId"]) > int(newest[r["id"]]["meta"]["versionId"]):
                newest[r["id"]] = r
        dropped = {"entered-in-error", "cancelled"} if t == "Observation" else {"entered-in-error"}
        out[t] = {
            rid: r["meta"]["versionId"]
            for rid, r in newest.items()
            if rid not in deleted
            and r.get("status") not in dropped
            and not (t == "Observation" and _unloadable_observation(r))
        }
    return out


def _unloadable_observation(r: dict) -> bool:
    v = r.get("valueString")
    if v is None:
        return False
    try:
        float(v.strip())
        return False
    except ValueError:
        return True


def warehouse_current(path: Path) -> dict[str, dict[str, str]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            t: dict(con.execute(f"SELECT resource_id, version_id FROM raw.{table_stem(t)}_current").fetchall())
            for t in TYPES
        }
    finally:
        con.close()


def load_counts(path: Path) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("""SELECT l.load_id, sum(read), sum(loaded), sum(duplicate), sum(quarantined)
                              FROM raw.load_log l JOIN raw.load_counts c USING (load_id)
                              WHERE l.status = 'committed'
                              GROUP BY l.load_id, l.load_seq ORDER BY l.load_seq""").fetchall()
    finally:
        con.close()


def extract_and_load(env: dict) -> str:
    """The ingestion half of the refresh (extract, then load), as the CLI runs it; returns its output."""
    out = outcomes("extract", env=env).stdout
    return out + outcomes("load", env=env).stdout


def env_for(server: EHRProcess, keys: dict, warehouse: Path, alg: str = "RS384", **extra) -> dict:
    client_id, key = keys[alg]
    return {
        "OUTCOMES_EHR_URL": server.base,
        "OUTCOMES_CLIENT_ID": client_id,
        "OUTCOMES_PRIVATE_KEY_PATH": str(key),
        "OUTCOMES_WAREHOUSE": str(warehouse),
        **extra,
    }


@pytest.fixture()
def clinic(tmp_path) -> Path:
    d = tmp_path / "ehr"
    generate(GeneratorConfig(patients=50, seed=21, file_mess=True), d)
    return d


@pytest.fixture()
def keys(clinic, tmp_path) -> dict:
    out = {}
    for alg in ("RS384", "ES384"):
        path = tmp_path / f"{alg}.pem"
        outcomes(
            "ehr",
            "register-client",
            "--data",
            str(clinic),
            "--key-out",
            str(path),
            "--alg",
            alg,
            "--client-id",
            f"c-{alg}",
        )
        out[alg] = (f"c-{alg}", path)
    return out


@pytest.mark.parametrize("mode,alg", [("bulk", "RS384"), ("search", "ES384")])
def test_full_then_incremental_matches_the_ehr(clinic, keys, tmp_path, mode, alg):
    wh = tmp_path / "wh" / "warehouse.duckdb"
    server = EHRProcess(clinic)
    try:
        env = env_for(server, keys, wh, alg, OUTCOMES_EXTRACT_MODE=mode)
        first = extract_and_load(env)
        assert "full" in first
        assert warehouse_current(wh) == expected_current(clinic)
        outcomes("ehr", "generate", "--continue-days", "20", "--out", str(clinic))
        second = extract_and_load(env)
        assert "incremental since" in second
        if mode == "bulk":  # both nights' files came gzip-encoded and were decoded as they streamed
            assert "(gzip," in first and "(gzip," in second and "(identity," not in first + second
        assert warehouse_current(wh) == expected_current(clinic)
    finally:
        server.stop()
    counts = load_counts(wh)
    assert len(counts) == 2
    for _, read, loaded, dup, quarantined in counts:
        assert read == loaded + dup + quarantined
    assert counts[1][1] < counts[0][1] / 3  # the second night carried only the delta
    # rerunning the night finds nothing new and changes nothing
    before = warehouse_current(wh)
    outcomes("load", "--warehouse", str(wh))
    assert warehouse_current(wh) == before and len(load_counts(wh)) == 2


def test_same_landing_twice_changes_nothing(clinic, tmp_path):
    wh = tmp_path / "warehouse.duckdb"
    outcomes("load", "--from-dir", str(clinic), "--warehouse", str(wh))
    snapshot = warehouse_current(wh)
    again = outcomes("load", "--from-dir", str(clinic), "--warehouse", str(wh))
    assert "already committed" in again.stdout
    # a load is known by its files' content: the same files copied elsewhere and touched are the same load
    copy = tmp_path / "copy"
    shutil.copytree(clinic, copy)
    (copy / "Patient.ndjson").touch()
    assert "already committed" in outcomes("load", "--from-dir", str(copy), "--warehouse", str(wh)).stdout
    # and a file edited in place, same size and mtime, is a new load; here made only of duplicates, and its bad
    # lines, quarantined by the first load, are not quarantined again
    patients = copy / "Patient.ndjson"
    st = patients.stat()
    lines = patients.read_bytes().splitlines(keepends=True)
    patients.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    os.utime(patients, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert patients.stat().st_size == st.st_size
    outcomes("load", "--from-dir", str(copy), "--warehouse", str(wh))
    assert warehouse_current(wh) == snapshot
    counts = load_counts(wh)
    assert counts[1][2] == 0 and counts[1][3] == counts[1][1] and counts[1][4] == 0
    con = duckdb.connect(str(wh), read_only=True)
    try:
        per_load = con.execute("SELECT count(DISTINCT load_id), count(*) FROM raw.quarantine").fetchall()[0]
    finally:
        con.close()
    assert per_load[0] == 1 and per_load[1] > 0, "the second load added no quarantine rows"


@pytest.mark.parametrize("fault", ["rate-limit", "unavailable", "expire-tokens", "truncate", "slow"])
def test_each_fault_ends_with_correct_data(clinic, keys, tmp_path, fault):
    wh = tmp_path / "warehouse.duckdb"
    server = EHRProcess(clinic, faults=fault, max_lines_per_file=700)
    try:
        proc = extract_and_load(env_for(server, keys, wh))
    finally:
        server.stop()
    assert warehouse_current(wh) == expected_current(clinic)
    if fault in ("rate-limit", "unavailable", "truncate"):
        assert "retrying" in proc or "retry 1" in proc
    if fault == "expire-tokens":
        assert "re-authentications" in proc and " 0 re-authentications" not in proc


def test_killed_extract_resumes_the_same_job(clinic, keys, tmp_path):
    wh = tmp_path / "warehouse.duckdb"
    server = EHRProcess(clinic, faults="slow")
    try:
        env = {**os.environ, **env_for(server, keys, wh)}
        proc = subprocess.Popen(
            [str(BIN / "outcomes"), "extract"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        landing = wh.parent / "landing"
        deadline = time.time() + 30
        while not list(landing.glob("*/job.json")) and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        jobs = list(landing.glob("*/job.json"))
        assert len(jobs) == 1 and not list(landing.glob("*/landing.json"))
        resumed = extract_and_load(env_for(server, keys, wh))
        assert "resuming export" in resumed
        assert len(list(landing.glob("*/job.json"))) == 1
    finally:
        server.stop()
    assert warehouse_current(wh) == expected_current(clinic)


@pytest.mark.slow(seconds=22)
def test_process_killed_mid_load_leaves_previous_state_then_rerun_is_correct(tmp_path):
    big = tmp_path / "big"
    generate(GeneratorConfig(patients=1500, seed=8), big)
    wh = tmp_path / "warehouse.duckdb"
    small = tmp_path / "small"
    generate(GeneratorConfig(patients=20, seed=8), small)
    outcomes("load", "--from-dir", str(small), "--warehouse", str(wh))
    before = warehouse_current(wh)
    proc = subprocess.Popen(
        [str(BIN / "outcomes"), "load", "--from-dir", str(big), "--warehouse", str(wh)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    # killed once earlier files' batches are committed (invisibly) and the largest file is being read
    for line in proc.stdout:
        if "reading Observation" in line:
            break
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the load finished before it could be killed"
    assert warehouse_current(wh) == before
    assert _landed_rows_of_uncommitted_loads(wh) > 0, "the killed load had committed no batch: nothing was tested"
    outcomes("load", "--from-dir", str(big), "--warehouse", str(wh))
    after = warehouse_current(wh)
    expected = expected_current(big)
    for t in TYPES:
        assert set(expected[t]) <= set(after[t])
    for _, read, loaded, dup, quarantined in load_counts(wh):
        assert read == loaded + dup + quarantined
    assert _landed_rows_of_uncommitted_loads(wh) == 0
    con = duckdb.connect(str(wh), read_only=True)
    stored = sum(_count(con, f"raw.{table_stem(t)}_versions_landed") for t in RESOURCE_TYPES)
    loaded = con.execute("SELECT sum(loaded + tombstones) FROM raw.load_counts").fetchall()[0][0]
    con.close()
    assert stored == loaded  # every stored version was counted by a committed load, once


def _count(con, relation: str, where: str = "true") -> int:
    return con.execute(f"SELECT count(*) FROM {relation} WHERE {where}").fetchall()[0][0]


def _landed_rows_of_uncommitted_loads(wh: Path) -> int:
    con = duckdb.connect(str(wh), read_only=True)
    uncommitted = "load_id NOT IN (SELECT load_id FROM raw.load_log WHERE status = 'committed')"
    tables = [f"raw.{table_stem(t)}_versions_landed" for t in RESOURCE_TYPES] + ["raw.quarantine_landed"]
    n = sum(_count(con, table, uncommitted) for table in tables)
    con.close()
    return n


def test_failed_load_is_logged_and_leaves_nothing_behind(clinic, tmp_path):
    """A file vanishing mid-load (after earlier files' batches committed): the load is logged as failed,
    its rows are discarded, readers never saw them, and a rerun loads everything."""
    from ingestion.raw_load import Loader, plan_from_directory
    from ingestion.warehouse import connect

    folder = tmp_path / "files"
    shutil.copytree(clinic, folder, ignore=shutil.ignore_patterns("truth"))
    wh = tmp_path / "warehouse.duckdb"
    plan = plan_from_directory(folder)
    last = plan.files[-1].path
    saved = last.read_bytes()
    last.unlink()
    con = connect(wh)
    con.execute("SET threads = 3")  # the load runs with fewer and gives the connection its own back
    with pytest.raises(FileNotFoundError):
        Loader(con, log=lambda _: None).load(plan)
    status, message = con.execute("SELECT status, message FROM raw.load_log").fetchall()[0]
    assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 3
    con.close()
    assert status == "failed" and "FileNotFoundError" in message
    assert _landed_rows_of_uncommitted_loads(wh) == 0
    assert all(not rows for rows in warehouse_current(wh).values())
    last.write_bytes(saved)
    con = connect(wh)
    con.execute("SET threads = 3")
    Loader(con, log=lambda _: None).load(plan_from_directory(folder))
    assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 3
    con.close()
    assert warehouse_current(wh) == expected_current(folder)


def test_a_write_failing_on_the_writer_thread_fails_the_load_cleanly(clinic, tmp_path, monkeypatch):
    """Batches are written on a writer thread while the next is checked: its error ends the load (no hang),
    logged as failed with nothing left behind, and a rerun loads everything."""
    from ingestion.raw_load import Loader, plan_from_directory
    from ingestion.warehouse import connect

    write_batch = Loader._write_batch
    calls = []

    def fail_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device (simulated)")
        return write_batch(self, *args)

    monkeypatch.setattr(Loader, "_write_batch", fail_third)
    wh = tmp_path / "warehouse.duckdb"
    con = connect(wh)
    with pytest.raises(OSError, match="No space left"):
        Loader(con, log=lambda _: None, batch_lines=500).load(plan_from_directory(clinic))
    status, message = con.execute("SELECT status, message FROM raw.load_log").fetchall()[0]
    con.close()
    assert len(calls) >= 3 and status == "failed" and "No space left" in message
    assert _landed_rows_of_uncommitted_loads(wh) == 0
    monkeypatch.setattr(Loader, "_write_batch", write_batch)
    con = connect(wh)
    Loader(con, log=lambda _: None, batch_lines=500).load(plan_from_directory(clinic))
    con.close()
    assert warehouse_current(wh) == expected_current(clinic)


def test_batch_boundaries_change_nothing(clinic, tmp_path):
    """Batches commit one by one: a version repeated in a later batch (or file) is still a duplicate."""
    from ingestion.raw_load import Loader, plan_from_directory
    from ingestion.warehouse import connect

    # the clinic twice over: every line of the second copy duplicates a stored version
    twice = tmp_path / "twice"
    twice.mkdir()
    for f in clinic.glob("*.ndjson"):
        (twice / f.name).write_bytes(f.read_bytes() * 2)

    def load(batch_lines: int, row_group_rows: int = 122_880) -> tuple[list, list, dict]:
        wh = tmp_path / f"batches-{batch_lines}-{row_group_rows}.duckdb"
        con = connect(wh)
        loader = Loader(con, log=lambda _: None, batch_lines=batch_lines, row_group_rows=row_group_rows)
        counts = loader.load(plan_from_directory(twice)).counts
        versions = con.execute(
            """SELECT resource_id, version_key, file, line_number, md5(resource) FROM raw.observation_versions
               ORDER BY ALL"""
        ).fetchall()
        quarantined = con.execute("SELECT file, line_number, reason FROM raw.quarantine ORDER BY ALL").fetchall()
        con.close()
        return versions, quarantined, counts

    one_batch = load(10_000_000)
    many = load(500)
    # batches cut at whole 'row groups' of new versions, the lines past the cut read again with the next batch
    cut = load(500, row_group_rows=128)
    assert many == one_batch and cut == one_batch
    versions, quarantined, counts = one_batch
    assert counts["Observation"]["duplicate"] >= counts["Observation"]["loaded"] > 0 and quarantined


def _lines_as_python_reads_them(data: bytes, max_line: int, head_chars: int) -> list[tuple]:
    """The reading rule: lines split on newlines and numbered from 1; trailing CR/LF stripped; a line of
    ASCII whitespace is blank and skipped; text that is not UTF-8 kept with replacement characters; a line
    over `max_line` bytes kept as its length and first characters only."""
    out = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        if len(raw) > max_line:
            out.append((n, None, raw.decode("utf-8", "replace")[:head_chars] + " [...]", len(raw)))
            continue
        try:
            out.append((n, raw.decode("utf-8"), None, None))
        except UnicodeDecodeError:
            out.append((n, None, raw.decode("utf-8", "replace"), None))
    return out


def test_lines_are_read_exactly_whichever_way_a_block_is_split(tmp_path, monkeypatch):
    """polars splits clean blocks, Python the awkward ones; across block and batch boundaries the frames must
    hold exactly the file's lines, numbered as in the file, and a line over the limit only as its length and
    head, whether it fits in a block or runs past it."""
    import random

    import polars as pl

    from ingestion import line_reader
    from ingestion.line_reader import lines_in_polars, ndjson_batches

    monkeypatch.setattr(line_reader, "OVERSIZE_HEAD_CHARS", 40)
    max_line = 250

    pool = [
        b'{"resourceType":"Observation","id":"a"}',
        b'{"x":"\xc3\xa9t\xc3\xa9"}',  # UTF-8 beyond ASCII
        b"",
        b"   ",
        b"\t\x0b\x0c",
        b"\xc2\xa0",  # a no-break space is not ASCII whitespace: a record (malformed JSON)
        b'{"a":1}\r',  # CRLF line ending
        b"\r",
        b'{"a":"x\ry"}',  # a stray carriage return
        b"a\x1fb",  # the separator polars is given
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'"unterminated',
        b"#not a comment",
        b'{"long":"' + b"x" * 300 + b'"}',  # over the limit
        b'{"long":"' + "\u00e9".encode() * 2000 + b'"}',  # over the limit, and past the smaller blocks
        b'{"edge":"' + b"y" * (250 - 12) + b'"}',  # exactly at the limit
        b"\xff" * 400,  # over the limit and not UTF-8
    ]
    rng = random.Random(7)
    for case in range(150):
        lines = [rng.choice(pool if case % 3 else pool[:8]) for _ in range(rng.randint(0, 60))]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.7 else b"")
        path = tmp_path / (f"{case}.ndjson.gz" if case % 10 == 0 else f"{case}.ndjson")
        if case % 10 == 0:
            with gzip.open(path, "wb") as f:
                f.write(data)
        else:
            path.write_bytes(data)
        batch_lines = rng.randint(1, 20)
        block_bytes = rng.choice([16, 100, 1000, 2**20])
        batches = list(ndjson_batches(path, batch_lines, block_bytes=block_bytes, max_line=max_line))
        assert all(b.height == batch_lines for b in batches[:-1]) and all(b.height for b in batches)
        got = pl.concat(batches).rows() if batches else []
        assert got == _lines_as_python_reads_them(data, max_line, 40), f"case {case}"

    # the fast path itself copes with blank lines, whitespace and CRLF endings (no fallback needed)
    clean = b'{"a":1}\r\n\n  \n\r\n{"b":"\xc3\xa9"}\n\t\n{"c":3}'
    frame = lines_in_polars(clean, 1)
    assert frame is not None and frame.rows() == _lines_as_python_reads_them(clean, 2**20, 40)
    for awkward in (b"\xff\n", b"a\rb\n", b"a\x1fb\n", b"\xef\xbb\xbf{}\n", b"a\r\r\n"):
        assert lines_in_polars(awkward, 1) is None


def _obs(rid: str, version: str, status: str, value: dict, lu: str = "2026-03-01T10:00:00Z") -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"versionId": version, "lastUpdated": lu},
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-01",
        **value,
    }


def test_bad_lines_are_quarantined_with_reasons_and_counts_reconcile(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    good = _obs("o1", "1", "final", {"valueInteger": 14})
    lines = [
        orjson.dumps(good),
        orjson.dumps(good),  # duplicate line
        b'{"resourceType":"Observation","id":"o2"',  # malformed
        orjson.dumps(_obs("o3", "1", "draft", {"valueInteger": 3})),  # unknown status
        orjson.dumps(_obs("o4", "1", "final", {"valueString": "twelve"})),  # unreadable value
        orjson.dumps(_obs("o5", "1", "final", {"valueString": " 9 "})),  # readable string value
        orjson.dumps(_obs("o6", "1", "final", {"valueQuantity": {"value": 11, "unit": "{score}"}})),
        orjson.dumps({"resourceType": "Observation", "meta": {"versionId": "1"}, "status": "final"}),  # no id
        orjson.dumps(_obs("o7", "1", "final", {"valueInteger": 5}, lu="last tuesday")),
        b"",  # blank lines are not records
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
        orjson.dumps({**good, "id": 7}),  # 13: an id that is a number
        orjson.dumps({**good, "id": {"a": 1}}),  # an object
        orjson.dumps({**good, "id": "x" * 65}),  # too long
        orjson.dumps({**good, "id": "o 1"}),  # a character FHIR ids do not have
        orjson.dumps(_obs("o9", "1", "final", {"valueInteger": "7"})),  # 17: a string in valueInteger
        orjson.dumps(_obs("o10", "1", "final", {"valueInteger": 12.5})),  # a decimal in valueInteger
        b'{"resourceType":"Observation","id":"o11","meta":{"versionId":"1"},"status":"final",'
        b'"valueQuantity":{"value":NaN}}',  # NaN, which DuckDB's JSON reader accepts
        orjson.dumps(_obs("o12", "1", "final", {"valueQuantity": {"value": "11"}})),  # 20
        orjson.dumps(_obs("o13", "1", "final", {"valueString": ""})),  # empty
        orjson.dumps(_obs("o14", "1", "final", {"valueInteger": None})),  # JSON null
        orjson.dumps(_obs("o15", "1", "Jane Roe 555-0100", {"valueInteger": 4})),  # free text in status
        orjson.dumps(_obs("o16", "1", "final", {"valueInteger": 5}, lu="2031-01-01T00:00:00Z")),  # 24: future
        orjson.dumps(_obs("o17", "1", "final", {"valueQuantity": {"value": 1e308 * 10}})),  # orjson: null
    ]
    (d / "Observation.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(d / "Patient.ndjson.gz", "wb") as f:
        f.write(orjson.dumps({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"}}) + b"\n")
        f.write(orjson.dumps({"resourceType": "Condition", "id": "c1"}) + b"\n")  # not what the file name says
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p2"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": _obs("o8", "1", "final", {"valueInteger": 7}), "request": {"method": "POST"}},
            {"request": {"method": "POST", "url": "Patient"}},  # entry without a resource
        ],
    }
    (d / "synthea_bundle.json").write_bytes(orjson.dumps(bundle))
    wh = tmp_path / "warehouse.duckdb"
    proc = outcomes("load", "--from-dir", str(d), "--warehouse", str(wh))
    assert "quarantined" in proc.stdout
    con = duckdb.connect(str(wh), read_only=True)
    q = dict(con.execute("SELECT file || ':' || line_number, reason FROM raw.quarantine").fetchall())
    assert q["Observation.ndjson:3"] == "malformed JSON"
    assert q["Observation.ndjson:4"] == "unknown Observation status"
    assert q["Observation.ndjson:5"] == "valueString is not a number"
    assert q["Observation.ndjson:8"] == "missing id"
    assert q["Observation.ndjson:9"] == "unparseable meta.lastUpdated"
    assert q["Observation.ndjson:11"] == "invalid UTF-8"
    assert q["Observation.ndjson:12"].startswith("not a JSON object")
    for n in (13, 14, 15, 16):
        assert q[f"Observation.ndjson:{n}"].startswith("id is not a FHIR id"), n
    assert q["Observation.ndjson:17"] == "valueInteger is not a JSON integer"
    assert q["Observation.ndjson:18"] == "valueInteger is not a JSON integer"
    assert q["Observation.ndjson:19"] == "valueQuantity.value is not a JSON number"
    assert q["Observation.ndjson:20"] == "valueQuantity.value is not a JSON number"
    assert q["Observation.ndjson:21"] == "valueString is not a number"
    assert q["Observation.ndjson:22"] == "valueInteger is not a JSON integer"
    assert q["Observation.ndjson:23"] == "unknown Observation status"
    assert q["Observation.ndjson:24"].startswith("meta.lastUpdated after the export's transactionTime")
    assert q["Observation.ndjson:25"] == "valueQuantity.value is not a JSON number"
    assert q["synthea_bundle.json:3"].startswith("not a JSON object")
    assert q["Patient.ndjson.gz:2"] == "resourceType does not match the file's type"
    assert len(q) == 22
    # reasons are fixed texts: nothing of a record's content travels with them
    assert not any("Jane" in r or "555" in r or "twelve" in r for r in q.values())
    raw_text = con.execute(
        "SELECT raw_text FROM raw.quarantine WHERE line_number = 3 AND file = 'Observation.ndjson'"
    ).fetchall()[0][0]
    assert raw_text == '{"resourceType":"Observation","id":"o2"'
    texts = dict(con.execute("SELECT file || ':' || line_number, raw_text FROM raw.quarantine").fetchall())
    assert texts["Observation.ndjson:11"] == "\ufffd\ufffd not utf-8"  # undecodable bytes replaced, kept
    assert texts["Patient.ndjson.gz:2"] == '{"resourceType":"Condition","id":"c1"}'
    assert texts["synthea_bundle.json:3"] == '{"request":{"method":"POST","url":"Patient"}}'  # the entry's text
    assert "Jane Roe 555-0100" in texts["Observation.ndjson:23"]  # the value stays in the raw layer only
    assert all(texts.values()), "every quarantined line keeps its text"
    scores = dict(
        con.execute("SELECT resource_id, (value_score, value_source) FROM raw.observation_current").fetchall()
    )
    assert scores == {
        "o1": (14.0, "valueInteger"),
        "o5": (9.0, "valueString"),
        "o6": (11.0, "valueQuantity"),
        "o8": (7.0, "valueInteger"),
    }
    assert {r[0] for r in con.execute("SELECT resource_id FROM raw.patient_current").fetchall()} == {"p1", "p2"}
    assert con.execute("SELECT count(*) FROM raw.condition_current").fetchall()[0][0] == 0
    counts = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT resource_type, read, loaded, duplicate, quarantined FROM raw.load_counts"
        ).fetchall()
    }
    assert counts["Observation"] == (25, 4, 1, 20)
    for read, loaded, dup, quarantined in counts.values():
        assert read == loaded + dup + quarantined
    con.close()


def test_amended_entered_in_error_preliminary_cancelled_and_deleted(tmp_path):
    landing = tmp_path / "landing" / "20260301T000000Z-abc123"
    (landing / "files").mkdir(parents=True)
    lines = [
        _obs("amend", "2", "amended", {"valueInteger": 12}, "2026-03-03T10:00:00-08:00"),  # newer version first
        _obs("amend", "1", "final", {"valueInteger": 20}, "2026-03-01T10:00:00Z"),
        _obs("eie", "1", "final", {"valueInteger": 27}, "2026-03-01T10:00:00Z"),
        _obs("eie", "2", "entered-in-error", {"valueInteger": 27}, "2026-03-02T10:00:00Z"),
        _obs("prelim", "1", "preliminary", {"valueInteger": 8}),
        _obs("cancel", "1", "cancelled", {"valueInteger": 8}),
        _obs("gone", "1", "final", {"valueInteger": 8}),
    ]
    (landing / "files" / "Observation-0001.ndjson").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    deletion = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [_delete("Observation/gone")],
    }
    (landing / "files" / "deleted-0001.ndjson").write_bytes(orjson.dumps(deletion) + b"\n")
    (landing / "landing.json").write_text(
        json.dumps(
            {
                "export_id": landing.name,
                "mode": "bulk",
                "source": "ehr",
                "since": None,
                "transactionTime": "2026-03-05T00:00:00Z",
                "deleted": ["files/deleted-0001.ndjson"],
                "errors": [],
                "files": [{"type": "Observation", "path": "files/Observation-0001.ndjson", "count": len(lines)}],
            }
        )
    )
    wh = tmp_path / "warehouse.duckdb"
    outcomes("load", "--warehouse", str(wh), "--landing", str(tmp_path / "landing"))
    con = duckdb.connect(str(wh), read_only=True)
    current = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT resource_id, version_id, status, value_score, is_final FROM raw.observation_current"
        ).fetchall()
    }
    assert current == {"amend": ("2", "amended", 12.0, True), "prelim": ("1", "preliminary", 8.0, False)}
    audit = con.execute(
        "SELECT count(*) FROM raw.observation_versions WHERE resource_id IN ('eie', 'gone')"
    ).fetchall()[0][0]
    assert audit == 4  # retracted and deleted resources stay in the versions table for audit
    assert (
        con.execute("SELECT tombstones FROM raw.load_counts WHERE resource_type = 'Observation'").fetchall()[0][0] == 1
    )
    assert con.execute("SELECT transaction_time FROM raw.load_log").fetchall()[0][0] == "2026-03-05T00:00:00Z"
    con.close()


def test_from_dir_applies_the_manifests_deleted_and_records_its_errors(tmp_path):
    """A downloaded bulk export (files beside their manifest): deleted[] tombstones, error[] is recorded."""
    d = tmp_path / "export"
    d.mkdir()
    lines = [_obs("kept", "1", "final", {"valueInteger": 9}), _obs("gone", "1", "final", {"valueInteger": 8})]
    (d / "Observation.ndjson").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    deletion = {"resourceType": "Bundle", "type": "transaction", "entry": [_delete("Observation/gone")]}
    (d / "del-1.ndjson").write_bytes(orjson.dumps(deletion) + b"\n")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
    (d / "err.ndjson").write_bytes(orjson.dumps(outcome) + b"\n")
    manifest = {
        "transactionTime": "2026-03-05T00:00:00Z",
        "request": "https://ehr.example/fhir/Group/g/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Observation", "url": "https://ehr.example/files/Observation.ndjson"}],
        "deleted": [{"type": "Bundle", "url": "https://ehr.example/files/del-1.ndjson"}],
        "error": [{"type": "OperationOutcome", "url": "err.ndjson"}],
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    wh = tmp_path / "warehouse.duckdb"
    out = outcomes("load", "--from-dir", str(d), "--warehouse", str(wh)).stdout
    assert "tombstone" in out
    con = duckdb.connect(str(wh), read_only=True)
    assert con.execute("SELECT resource_id FROM raw.observation_current").fetchall() == [("kept",)]
    assert con.execute("SELECT tombstones FROM raw.load_counts WHERE resource_type = 'Observation'").fetchall() == [
        (1,)
    ]
    errors = con.execute("SELECT file, outcome FROM raw.export_errors").fetchall()
    assert [(f, json.loads(o)["resourceType"]) for f, o in errors] == [("err.ndjson", "OperationOutcome")]
    assert con.execute("SELECT transaction_time FROM raw.load_log").fetchall() == [("2026-03-05T00:00:00Z",)]
    con.close()


def _delete(url: str) -> dict:
    return {"request": {"method": "DELETE", "url": url}}


def test_a_manifest_cannot_point_outside_its_folder(tmp_path):
    secret = tmp_path / "secret.ndjson"
    secret.write_text('{"resourceType": "Patient", "id": "leak"}\n')
    for url in ("../secret.ndjson", str(secret), "/etc/os-release"):
        export = tmp_path / f"export-{abs(hash(url))}"
        export.mkdir()
        (export / "manifest.json").write_text(
            json.dumps(
                {
                    "transactionTime": "2026-11-30T00:00:00Z",
                    "output": [],
                    "error": [{"type": "OperationOutcome", "url": url}],
                }
            )
        )
        wh = tmp_path / "wh.duckdb"
        proc = outcomes("load", "--from-dir", str(export), "--warehouse", str(wh), check=False)
        assert proc.returncode != 0 and "outside" in proc.stderr and "Traceback" not in proc.stderr, url
    if wh.exists():
        con = duckdb.connect(str(wh), read_only=True)
        try:
            assert con.execute("SELECT count(*) FROM raw.export_errors").fetchall()[0][0] == 0
        finally:
            con.close()


def test_a_truncated_gzip_file_fails_the_load_naming_the_file(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    lines = b"".join(
        orjson.dumps(
            {
                "resourceType": "Patient",
                "id": f"p{i}",
                "meta": {"versionId": "1", "lastUpdated": "2026-11-30T00:00:00Z"},
            }
        )
        + b"\n"
        for i in range(2000)
    )
    packed = gzip.compress(lines)
    (folder / "Patient.ndjson.gz").write_bytes(packed[: len(packed) // 2])
    wh = tmp_path / "wh.duckdb"
    proc = outcomes("load", "--from-dir", str(folder), "--warehouse", str(wh), check=False)
    assert proc.returncode != 0 and "Patient.ndjson.gz is damaged" in proc.stderr and "Traceback" not in proc.stderr
    con = duckdb.connect(str(wh), read_only=True)
    try:
        assert con.execute("SELECT status FROM raw.load_log").fetchall() == [("failed",)]
        assert con.execute("SELECT count(*) FROM raw.patient_versions").fetchall()[0][0] == 0
    finally:
        con.close()


def test_a_version_dated_in_the_future_neither_wins_nor_stalls_the_search_watermark(clinic, keys, tmp_path):
    """The EHR serves a version of a real Observation dated 2099: the crawl lands it and the load quarantines
    it; the watermark stays on the server's clock, so the next night's real change still arrives."""
    obs_file = clinic / "Observation.ndjson"
    valid = []
    for line in obs_file.read_bytes().splitlines():
        try:
            o = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(o, dict) and o.get("resourceType") == "Observation" and "valueInteger" in o:
            valid.append(o)
    manifest = json.loads((clinic / "manifest.json").read_text())
    tt = datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00"))
    wh = tmp_path / "wh" / "warehouse.duckdb"
    server = EHRProcess(clinic)
    try:
        env = env_for(server, keys, wh, "RS384", OUTCOMES_EXTRACT_MODE="search")
        extract_and_load(env)
        first = warehouse_current(wh)["Observation"]
        moved, changed = [o for o in valid if first.get(o["id"]) == o["meta"]["versionId"]][:2]
        # the EHR starts serving a version of `moved` dated 2099 (its store ranks it newest)
        future = {**moved, "meta": {"versionId": "50", "lastUpdated": "2099-01-01T00:00:00Z"}, "valueInteger": 27}
        with open(obs_file, "ab") as f:
            f.write(orjson.dumps(future) + b"\n")
        (clinic / "manifest.json").write_text(json.dumps(manifest))  # the store changed: the EHR rereads it
        extract_and_load(env)
        assert warehouse_current(wh)["Observation"][moved["id"]] == moved["meta"]["versionId"]
        # the next night: a real newer version of another Observation, and the EHR's clock moves on
        newer = {
            **changed,
            "meta": {"versionId": "7", "lastUpdated": (tt + timedelta(hours=1)).isoformat().replace("+00:00", "Z")},
        }
        with open(obs_file, "ab") as f:
            f.write(orjson.dumps(newer) + b"\n")
        manifest["transactionTime"] = (tt + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        (clinic / "manifest.json").write_text(json.dumps(manifest))
        extract_and_load(env)
    finally:
        server.stop()
    current = warehouse_current(wh)["Observation"]
    assert current[changed["id"]] == "7" and current[moved["id"]] == moved["meta"]["versionId"]
    con = duckdb.connect(str(wh), read_only=True)
    try:
        watermarks = [r[0] for r in con.execute("SELECT transaction_at FROM raw.load_log").fetchall()]
        future_rows = con.execute(
            "SELECT reason FROM raw.quarantine WHERE raw_text LIKE '%2099-01-01T00:00:00Z%'"
        ).fetchall()
    finally:
        con.close()
    assert len(watermarks) == 3 and all(w <= tt + timedelta(hours=2) for w in watermarks)
    # quarantined once, on the second night; served again on the third, it counts as a duplicate of that
    assert [r[0][:40] for r in future_rows] == ["meta.lastUpdated after the export's tran"]
