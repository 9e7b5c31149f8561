"""Patient-scoped search crawl into the landing folder (for EHRs whose bulk export is not for daily sync).

Per patient of the group and per resource type: `{type}?patient=X&_lastUpdated=gt{since}&_count=N`,
following `next` links verbatim and keeping one line per id (the newest version seen).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ingestion.bulk_export import ExportResult, _now
from ingestion.fhir_client import FhirClient, server_date
from ingestion.landing import DEFAULT_EXPORT_TYPES, DESCRIPTOR, JOB, new_export_dir, write_json_atomic
from ingestion.load_plan import CLOCK_SKEW
from ingestion.warehouse import FHIR_ID_PATTERN


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _instant_or_none(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = _instant(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _version_key(res: dict) -> tuple:
    """Newer sorts higher: the versionId where the server numbers its versions, then lastUpdated."""
    meta = res.get("meta") or {}
    v = meta.get("versionId")
    return (
        int(v) if isinstance(v, str) and v.isdigit() else -1,
        _instant_or_none(meta.get("lastUpdated")) or datetime.min.replace(tzinfo=UTC),
    )


def patient_id(reference: str) -> str | None:
    """The Patient id in a Group member reference: `Patient/1`, `https://ehr/fhir/Patient/1`,
    `Patient/1/_history/2` or `urn:uuid:...`; None for any other kind of member."""
    if reference.startswith("urn:uuid:"):
        return reference[len("urn:uuid:") :] or None
    m = re.search(rf"(?:^|/)Patient/({FHIR_ID_PATTERN})(?:/_history/[^/]+)?$", reference)
    return m.group(1) if m else None


class SearchCrawler:
    def __init__(
        self,
        client: FhirClient,
        landing_root: Path,
        group_id: str,
        source: str,
        types: tuple[str, ...] = DEFAULT_EXPORT_TYPES,
        page_size: int = 200,
        log: Callable[[str], None] = print,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.root = landing_root
        self.group_id = group_id
        self.source = source
        self.types = types
        self.page_size = page_size
        self.log = log
        self.progress = progress

    def run(self, since: str | None) -> ExportResult:
        job_dir = new_export_dir(self.root)
        write_json_atomic(
            job_dir / JOB,
            {
                "export_id": job_dir.name,
                "mode": "search",
                "source": self.source,
                "since": since,
                "kicked_off_at": _now(),
            },
        )
        group_resp = self.client.request("GET", f"Group/{self.group_id}")
        reference = server_date(group_resp) or datetime.now(UTC)
        server_now = reference
        group = group_resp.json()
        patients = [
            pid
            for m in group.get("member", [])
            if (pid := patient_id(((m.get("entity") or {}).get("reference")) or "")) is not None
        ]
        self.log(
            f"crawling {len(patients):,} patients x {len(self.types)} types"
            + (f" updated after {since}" if since else " (full)")
        )
        newest: tuple[datetime, str] | None = (_instant(since), since) if since else None
        counts = dict.fromkeys(self.types, 0)
        handles = {t: open(job_dir / "files" / f"{t}-0001.ndjson", "wb") for t in self.types}
        try:
            for n, pid in enumerate(patients, 1):
                for rtype in self.types:
                    # a Patient is found by its own id; everything else by the patient it belongs to
                    params = {"_id" if rtype == "Patient" else "patient": pid, "_count": str(self.page_size)}
                    if since:
                        params["_lastUpdated"] = f"gt{since}"
                    kept: dict[str, dict] = {}
                    url: str | None = rtype
                    first = True
                    while url:
                        page = self.client.request("GET", url, params=params if first else None)
                        server_now = server_date(page) or server_now
                        bundle = page.json()
                        first = False
                        for entry in bundle.get("entry", []):
                            res = entry.get("resource") or {}
                            rid = res.get("id")
                            if rid is None:
                                continue
                            if rid not in kept or _version_key(res) > _version_key(kept[rid]):
                                kept[rid] = res
                        url = next(
                            (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None
                        )  # verbatim, never rebuilt
                    for res in kept.values():
                        handles[rtype].write(orjson.dumps(res) + b"\n")
                        lu = (res.get("meta") or {}).get("lastUpdated")
                        at = _instant_or_none(lu)
                        # a version dated after the server's clock is quarantined by the load: it cannot
                        # carry the watermark
                        if at and at <= reference + CLOCK_SKEW and (newest is None or at > newest[0]):
                            newest = (at, lu)
                    counts[rtype] += len(kept)
                if self.progress:
                    self.progress(n, len(patients))
        finally:
            for h in handles.values():
                h.close()
        # The watermark is the EHR's own clock (the newest lastUpdated seen), never this machine's, and never
        # past the server's Date when the crawl began: what changed during the crawl is read again next time.
        if newest and newest[0] > reference:
            newest = (reference, reference.isoformat().replace("+00:00", "Z"))
        transaction_time = newest[1] if newest else None
        write_json_atomic(
            job_dir / DESCRIPTOR,
            {
                "export_id": job_dir.name,
                "mode": "search",
                "source": self.source,
                "since": since,
                "request": f"patient search x {len(patients)}",
                "transactionTime": transaction_time,
                "serverTime": server_now.isoformat().replace("+00:00", "Z"),
                "files": [{"type": t, "path": f"files/{t}-0001.ndjson", "count": counts[t]} for t in self.types],
                "deleted": [],
                "errors": [],
                "completed_at": _now(),
            },
        )
        return ExportResult(job_dir, transaction_time or "", counts, False, self.client.retries, self.client.reauths)
