"""Bulk Data v2 Group export into the landing folder: kick-off, poll, stream downloads, clean up."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ingestion.fhir_client import ExtractError, FhirClient, is_transient, outcome_text, retry_after_seconds
from ingestion.landing import (
    ABANDONED,
    DESCRIPTOR,
    JOB,
    new_export_dir,
    read_json,
    unfinished_exports,
    write_json_atomic,
)

DEFAULT_TYPES = ("Patient", "Condition", "CarePlan", "MedicationAdministration", "Observation", "Procedure")


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
        types: tuple[str, ...] = DEFAULT_TYPES,
        log: Callable[[str], None] = print,
        poll_timeout_s: float = 3600,
        download_attempts: int = 5,
    ) -> None:
        self.client = client
        self.root = landing_root
        self.group_id = group_id
        self.source = source
        self.types = types
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
        files, counts = [], {}
        for k, out in enumerate(manifest.get("output", [])):
            rel = f"files/{out['type']}-{k + 1:04d}.ndjson"
            n = self._download(out["url"], job_dir / rel, out.get("count"))
            files.append({"type": out["type"], "path": rel, "count": n})
            counts[out["type"]] = counts.get(out["type"], 0) + n
        deleted = [
            self._download_aux(o["url"], job_dir / f"files/deleted-{k + 1:04d}.ndjson")
            for k, o in enumerate(manifest.get("deleted", []) or [])
        ]
        errors = [
            self._download_aux(o["url"], job_dir / f"files/error-{k + 1:04d}.ndjson")
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
        params = {"_type": ",".join(self.types)}
        if since:
            params["_since"] = since  # verbatim: the EHR's own transactionTime string
        resp = self.client.request(
            "GET", f"Group/{self.group_id}/$export", params=params, headers={"Prefer": "respond-async"}, ok=(202,)
        )
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

    def _download(self, url: str, dest: Path, expected: int | None) -> int:
        """Stream one file to disk; verify it is whole (Content-Length and line count), else retry."""
        if dest.exists():  # finished before a crash
            return _count_lines(dest)
        part = dest.with_suffix(dest.suffix + ".part")
        for attempt in range(self.download_attempts):
            problem = None
            try:
                with self.client.stream(url) as r:
                    if r.status_code == 401 and self.client.auth is not None:
                        self.client.auth.invalidate()
                        self.client.reauths += 1
                        problem = "401 (token expired)"
                    elif r.status_code != 200:
                        r.read()
                        if not is_transient(r):
                            raise ExtractError(f"download {url} failed: {r.status_code} {outcome_text(r)}")
                        problem = f"{r.status_code} {outcome_text(r)}"
                    else:
                        size = 0
                        with open(part, "wb") as f:
                            for chunk in r.iter_raw(1 << 20):
                                f.write(chunk)
                                size += len(chunk)
                            f.flush()
                            os.fsync(f.fileno())
                        declared = r.headers.get("Content-Length")
                        if declared is not None and int(declared) != size:
                            problem = f"truncated: {size} of {declared} bytes"
            except httpx.TransportError as e:
                problem = f"{type(e).__name__}: {e}"
            if problem is None:
                n = _count_lines(part)
                if expected is not None and n != expected:
                    problem = f"{n} lines where the manifest says {expected}"
                else:
                    os.replace(part, dest)
                    self.log(f"  downloaded {dest.name}: {n:,} lines")
                    return n
            self.client.retries += 1
            self.log(f"  download {dest.name} incomplete ({problem}); retry {attempt + 1}")
            self.client.sleep(self.client.backoff.delay(attempt))
        raise ExtractError(f"download {url} kept failing; rerun the extract to resume this export")

    def _download_aux(self, url: str, dest: Path) -> Path:
        self._download(url, dest, None)
        return dest.relative_to(dest.parent.parent)


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n
