"""Bulk Data v2 Group export into the landing folder: kick-off, poll, stream downloads, clean up."""

from __future__ import annotations

import os
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ingestion.fhir_client import ExtractError, FhirClient, is_transient, outcome_text, retry_after_seconds
from ingestion.landing import (
    ABANDONED,
    DEFAULT_EXPORT_TYPES,
    DESCRIPTOR,
    JOB,
    new_export_dir,
    read_json,
    unfinished_exports,
    write_json_atomic,
)

REJECTION_STATUSES = (400, 403, 404, 422)


@dataclass
class ExportResult:
    landing: Path
    transaction_time: str
    counts: dict[str, int]
    resumed: bool
    retries: int
    reauths: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class BulkExporter:
    def __init__(
        self,
        client: FhirClient,
        landing_root: Path,
        group_id: str,
        source: str,
        types: tuple[str, ...] = DEFAULT_EXPORT_TYPES,
        log: Callable[[str], None] = print,
        poll_timeout_s: float = 3600,
        download_attempts: int = 5,
        type_filters: tuple[str, ...] = (),
    ) -> None:
        self.client = client
        self.root = landing_root
        self.group_id = group_id
        self.source = source
        self.types = types
        self.type_filters = type_filters
        self.log = log
        self.poll_timeout_s = poll_timeout_s
        self.download_attempts = download_attempts

    def run(self, since: str | None) -> ExportResult:
        resumed = False
        job_dir = None
        for d in unfinished_exports(self.root):
            job = read_json(d / JOB)
            if job.get("mode") == "bulk" and job.get("source") == self.source:
                job_dir, resumed = d, True
                self.log(f"resuming export {d.name} (status {job['status_url']})")
                break
        if job_dir is None:
            job_dir = self._kick_off(since)
        job = read_json(job_dir / JOB)
        manifest = self._poll(job_dir, job)
        if manifest is None:  # the EHR forgot the job (expired): start over, keep the old folder for audit
            write_json_atomic(job_dir / ABANDONED, {"at": _now(), "reason": "status URL returned 404"})
            self.log("the EHR no longer knows the resumed job; starting a new export")
            job_dir = self._kick_off(since)
            job = read_json(job_dir / JOB)
            manifest = self._poll(job_dir, job)
            if manifest is None:
                raise ExtractError("the EHR lost a fresh export job; retry later")
        write_json_atomic(job_dir / "manifest.json", manifest)
        # the IG: files are fetched with the token only when the manifest says so
        with_token = manifest.get("requiresAccessToken") is not False
        files, counts = [], {}
        for k, out in enumerate(manifest.get("output", [])):
            rel = f"files/{_safe_name(out['type'])}-{k + 1:04d}.ndjson"
            n = self._download(out["url"], job_dir / rel, out.get("count"), with_token)
            files.append({"type": out["type"], "path": rel, "count": n})
            counts[out["type"]] = counts.get(out["type"], 0) + n
        deleted = [
            self._download_aux(o["url"], job_dir / f"files/deleted-{k + 1:04d}.ndjson", with_token)
            for k, o in enumerate(manifest.get("deleted", []) or [])
        ]
        errors = [
            self._download_aux(o["url"], job_dir / f"files/error-{k + 1:04d}.ndjson", with_token)
            for k, o in enumerate(manifest.get("error", []) or [])
        ]
        write_json_atomic(
            job_dir / DESCRIPTOR,
            {
                "export_id": job_dir.name,
                "mode": "bulk",
                "source": self.source,
                "since": job.get("since"),
                "request": manifest.get("request"),
                "transactionTime": manifest["transactionTime"],
                "files": files,
                "deleted": [str(p) for p in deleted],
                "errors": [str(p) for p in errors],
                "warnings": job.get("warnings", []),
                "completed_at": _now(),
            },
        )
        try:  # the job is no longer needed; failing to clean up must not fail the night
            self.client.request("DELETE", job["status_url"], ok=(200, 202, 204, 404))
        except ExtractError as e:
            self.log(f"  could not DELETE the finished job ({e}); the EHR will expire it")
        return ExportResult(
            job_dir, manifest["transactionTime"], counts, resumed, self.client.retries, self.client.reauths
        )

    def _kick_off(self, since: str | None) -> Path:
        types, filters, warnings = list(self.types), list(self.type_filters), []
        while True:
            params: list[tuple[str, str]] = [("_type", ",".join(types))]
            params += [("_typeFilter", f) for f in filters]
            if since:
                params.append(("_since", since))  # verbatim: the EHR's own transactionTime string
            try:
                resp = self.client.request(
                    "GET",
                    f"Group/{self.group_id}/$export",
                    params=params,
                    headers={"Prefer": "respond-async"},
                    ok=(202,),
                )
                break
            except ExtractError as e:
                if e.status not in REJECTION_STATUSES:
                    raise
                # Bulk Data lets a server refuse types (and _typeFilter) it does not support: go on without them
                rejected = [t for t in types if re.search(rf"\b{t}\b", e.detail)]
                if filters and "_typeFilter" in e.detail:
                    warnings.append(f"the EHR does not support _typeFilter ({e.detail}); exported unfiltered")
                    filters = []
                elif rejected and len(rejected) < len(types):
                    warnings.append(f"the EHR refused {', '.join(rejected)} ({e.detail}); exported without it")
                    types = [t for t in types if t not in rejected]
                    filters = [f for f in filters if f.split("?")[0] in types]
                else:
                    raise ExtractError(
                        f"{e}. Set OUTCOMES_EXPORT_TYPES to the types the EHR serves (see its CapabilityStatement "
                        "at [base]/metadata) and check OUTCOMES_GROUP_ID",
                        e.status,
                        e.detail,
                    ) from None
                self.log(f"  warning: {warnings[-1]}; kicking off again")
        status_url = resp.headers.get("Content-Location")
        if not status_url:
            raise ExtractError("export kick-off returned 202 without Content-Location")
        job_dir = new_export_dir(self.root)
        # persisted before polling: a task retried after a crash resumes this job instead of starting another
        write_json_atomic(
            job_dir / JOB,
            {
                "export_id": job_dir.name,
                "mode": "bulk",
                "source": self.source,
                "status_url": status_url,
                "since": since,
                "kicked_off_at": _now(),
                "request": str(resp.request.url),
                "types": types,
                "warnings": warnings,
            },
        )
        self.log(f"export {job_dir.name} kicked off" + (f" (_since={since})" if since else " (full)"))
        return job_dir

    def _poll(self, job_dir: Path, job: dict) -> dict | None:
        deadline = time.monotonic() + self.poll_timeout_s
        attempt = 0
        last_progress = None
        while time.monotonic() < deadline:
            resp = self.client.request("GET", job["status_url"], ok=(200, 202, 404))
            if resp.status_code == 404:
                return None
            if resp.status_code == 200:
                return resp.json()
            progress = resp.headers.get("X-Progress")
            if progress and progress != last_progress:
                self.log(f"  export in progress: {progress}")
                last_progress = progress
            delay = self.client.backoff.delay(attempt, retry_after_seconds(resp.headers.get("Retry-After")))
            attempt = min(attempt + 1, 10)
            self.client.sleep(delay)
        raise ExtractError(
            f"export {job_dir.name} not ready after {self.poll_timeout_s:.0f}s; rerun to keep waiting for the same job"
        )

    def _download(self, url: str, dest: Path, expected: int | None, with_token: bool = True) -> int:
        """Stream one file to disk, decoding gzip as it arrives; verify it is whole (Content-Length of the
        bytes received, a complete gzip stream, the line count of the decoded text), else retry."""
        if dest.exists():  # finished before a crash
            return _count_lines(dest)
        part = dest.with_suffix(dest.suffix + ".part")
        for attempt in range(self.download_attempts):
            problem = None
            try:
                with self.client.stream(url, with_token=with_token) as r:
                    if r.status_code == 401 and with_token and self.client.auth is not None:
                        self.client.auth.invalidate()
                        self.client.reauths += 1
                        problem = "401 (token expired)"
                    elif r.status_code != 200:
                        r.read()
                        if not is_transient(r):
                            raise ExtractError(f"download {url} failed: {r.status_code} {outcome_text(r)}")
                        problem = f"{r.status_code} {outcome_text(r)}"
                    else:
                        problem, received = _write_decoded(r, part)
                        encoding = r.headers.get("Content-Encoding", "identity")
            except httpx.TransportError as e:
                problem = f"{type(e).__name__}: {e}"
            if problem is None:
                n = _count_lines(part)
                if expected is not None and n != expected:
                    problem = f"{n} lines where the manifest says {expected}"
                else:
                    size = part.stat().st_size
                    os.replace(part, dest)
                    sent = f"{encoding}, {received:,} received"
                    self.log(f"  downloaded {dest.name}: {n:,} lines, {size:,} bytes ({sent})")
                    return n
            self.client.retries += 1
            self.log(f"  download {dest.name} incomplete ({problem}); retry {attempt + 1}")
            self.client.sleep(self.client.backoff.delay(attempt))
        raise ExtractError(
            f"download {url} kept failing ({problem}); rerun the extract to resume this export "
            "(files already downloaded are kept)"
        )

    def _download_aux(self, url: str, dest: Path, with_token: bool = True) -> Path:
        self._download(url, dest, None, with_token)
        return dest.relative_to(dest.parent.parent)


def _safe_name(rtype: str) -> str:
    """A manifest's type as part of a file name (the type itself is checked when the file is loaded)."""
    return re.sub(r"[^A-Za-z0-9]", "_", rtype)[:64] or "unknown"


def _write_decoded(r: httpx.Response, part: Path) -> tuple[str | None, int]:
    """Write the body to `part`, decoded per Content-Encoding: the problem that makes it incomplete (or None)
    and the bytes received."""
    encoding = r.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding in ("identity", ""):
        decoder = None
    else:
        return f"Content-Encoding {encoding!r} not supported (asked for gzip or deflate)", 0
    received = 0
    with open(part, "wb") as f:
        try:
            for chunk in r.iter_raw(1 << 20):
                received += len(chunk)
                if decoder is None:
                    f.write(chunk)
                    continue
                f.write(decoder.decompress(chunk))
                while decoder.eof and decoder.unused_data:  # a gzip file may hold several members
                    rest = decoder.unused_data
                    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    f.write(decoder.decompress(rest))
            if decoder:
                f.write(decoder.flush())
        except zlib.error as e:
            return f"the {encoding} body does not decode ({e})", received
        f.flush()
        os.fsync(f.fileno())
    declared = r.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) != received:
        return f"truncated: {received} of {declared} bytes", received
    if decoder is not None and not decoder.eof:
        return f"the {encoding} stream ended early ({received} bytes received)", received
    return None, received


def _count_lines(path: Path) -> int:
    """NDJSON lines, the last one counted whether or not it ends with a newline."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")
