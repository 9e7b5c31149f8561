"""What a load reads: the files of a landing (its descriptor) or of any folder of FHIR files, as a plan."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ingestion.landing import DESCRIPTOR, read_json
from ingestion.warehouse import DEFAULT_SITE

CLOCK_SKEW = timedelta(minutes=5)


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
    server_time: str | None = None  # the EHR's clock when the extract finished (a search crawl's last Date)
    site_id: str = DEFAULT_SITE  # the network site (EHR connection) whose load this is

    def newest_allowed(self, started: datetime) -> datetime:
        """No version can be newer than the export that delivered it: its transactionTime (a bulk export),
        the server's clock at the end of the crawl (a search), else this machine's clock, each plus a small
        skew. A later meta.lastUpdated is quarantined, so it can neither win over real newer versions nor
        carry the watermark forward."""
        for text in (self.transaction_time, self.server_time):
            if text:
                try:
                    return datetime.fromisoformat(text.replace("Z", "+00:00")) + CLOCK_SKEW
                except ValueError:
                    pass
        return started + CLOCK_SKEW


def for_site(plan: LoadPlan, site_id: str) -> LoadPlan:
    """The plan as one site's load: the same files sent by two sites of a network are two loads. A single
    clinic's (the default site's) load ids stay as they were."""
    if site_id == DEFAULT_SITE:
        return dataclasses.replace(plan, site_id=site_id)
    return dataclasses.replace(plan, load_id=f"{site_id}/{plan.load_id}", site_id=site_id)


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
        d.get("serverTime"),
    )


def plan_from_directory(folder: Path, source: str | None = None) -> LoadPlan:
    """NDJSON files (plain or .gz; bulk-export output with or without its manifest, whose deleted[] and
    error[] are applied and recorded as in an extract's landing) or Bundle JSON files."""
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
                path = (folder / url).resolve()
                if not path.is_relative_to(folder):  # `../../etc/passwd`, `/etc/os-release`, a link out
                    raise ValueError(
                        f"{manifest} lists {url!r} in {key}[], outside {folder}: refusing to read it "
                        "(a downloaded export keeps its files beside its manifest)"
                    )
                files.append(InputFile(path, kind, o.get("type") if kind == "ndjson" else None, url))
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
    # the load is named by what the files hold, not their size and mtime: a file edited in place (same size,
    # mtime restored) is a new load, and the same files copied elsewhere are the same load
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0".encode())
        with open(f.path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return LoadPlan(
        f"dir-{digest.hexdigest()[:16]}", source or f"dir:{folder}", "files", folder, None, transaction_time, files
    )


def _type_from_name(name: str) -> str | None:
    """Observation.ndjson, Observation-0001.ndjson.gz, Observation.000.ndjson -> Observation."""
    m = re.match(r"([A-Z][A-Za-z]+)(?:[-_.]|$)", name)
    return m.group(1) if m else None
