"""Write the synthetic clinic in FHIR Bulk Data layout: one NDJSON file per resource type + manifest.

Streaming: one patient is simulated, written and forgotten at a time, so memory does not grow with N.
Deterministic: the same configuration produces the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from ehr_simulator.clinic import Record, enrollment_day, practitioner_records, simulate_patient
from ehr_simulator.params import GeneratorConfig

RESOURCE_TYPES = (
    "Patient",
    "Practitioner",
    "Condition",
    "CarePlan",
    "MedicationAdministration",
    "Observation",
    "Procedure",
)
CONFIG_FILE = "clinic.json"
DELETED_FILE = "_ehr/deleted.ndjson"


def as_of_instant(cfg: GeneratorConfig) -> datetime:
    """The clinic's 'now': the end of the last simulated day, in the clinic's timezone."""
    return datetime.combine(cfg.as_of_day, time(23, 59, 59), ZoneInfo(cfg.clinic_tz)).astimezone(UTC)


def _render_instant(rec_id: str, dt: datetime, tz: ZoneInfo) -> str:
    # Format chosen per resource id (not by a running RNG) so a later as-of re-renders earlier
    # resources identically.
    if int(hashlib.blake2s(rec_id.encode(), digest_size=2).hexdigest(), 16) % 100 < 15:
        return dt.astimezone(tz).isoformat(timespec="milliseconds")
    utc = dt.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _line(rec: Record, k: int, tz: ZoneInfo) -> bytes:
    lu, body = rec.versions[k]
    out = {
        "resourceType": body["resourceType"],
        "id": body["id"],
        "meta": {"versionId": str(k + 1), "lastUpdated": _render_instant(rec.id, lu, tz)},
    }
    out.update((key, v) for key, v in body.items() if key not in ("resourceType", "id"))
    return orjson.dumps(out) + b"\n"


def emit(
    rec: Record, as_of: datetime, tz: ZoneInfo, files: dict, deleted, counts: dict, file_mess: bool = False
) -> None:
    """Write what the EHR holds for this resource at `as_of`; with `file_mess`, the format mess of a badly
    made export file too (the previous version beside the current one, a truncated copy, a repeated line)."""
    visible = [k for k, (lu, _) in enumerate(rec.versions) if lu <= as_of]
    if not visible:
        return
    if rec.deleted_at is not None and rec.deleted_at <= as_of:
        deleted.write(
            orjson.dumps(
                {
                    "resourceType": rec.rtype,
                    "id": rec.id,
                    "deletedAt": rec.deleted_at.astimezone(UTC).isoformat(),
                }
            )
            + b"\n"
        )
        return
    f = files[rec.rtype]
    latest = visible[-1]
    if file_mess and rec.both_versions and latest > 0:
        f.write(_line(rec, latest - 1, tz))
        counts[rec.rtype] += 1
    line = _line(rec, latest, tz)
    if file_mess and rec.malformed_copy:
        f.write(line[: max(20, len(line) * 3 // 5)].rstrip(b"\n") + b"\n")
        counts[rec.rtype] += 1
    f.write(line)
    counts[rec.rtype] += 1
    if file_mess and rec.duplicate_line:
        f.write(line)
        counts[rec.rtype] += 1


def generate(cfg: GeneratorConfig, out: Path, progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate the clinic into `out` (replacing earlier files); returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".generating"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "_ehr").mkdir(parents=True)
    (tmp / "truth").mkdir()
    tz = ZoneInfo(cfg.clinic_tz)
    as_of = as_of_instant(cfg)
    counts = dict.fromkeys(RESOURCE_TYPES, 0)
    files = {t: open(tmp / f"{t}.ndjson", "wb", buffering=1 << 20) for t in RESOURCE_TYPES}
    n_patients = 0
    try:
        with open(tmp / DELETED_FILE, "wb") as deleted, open(tmp / "truth" / "courses.ndjson", "wb") as truth:
            for rec in practitioner_records():
                emit(rec, as_of, tz, files, deleted, counts, cfg.file_mess)
            total = 0
            while enrollment_day(total, cfg) <= cfg.as_of_day:
                total += 1
            for i in range(total):
                sim = simulate_patient(i, cfg)
                if sim.enrolled_at > as_of:
                    continue
                n_patients += 1
                for rec in sim.records:
                    emit(rec, as_of, tz, files, deleted, counts, cfg.file_mess)
                for row in sim.truth:
                    if row["first_infusion_day"] <= cfg.as_of_day.isoformat():
                        truth.write(orjson.dumps(row) + b"\n")
                if progress and (i + 1) % 500 == 0:
                    progress(i + 1, total)
    finally:
        for f in files.values():
            f.close()
    manifest = {
        "transactionTime": as_of.isoformat().replace("+00:00", "Z"),
        "request": f"ehr generate --patients {cfg.patients} --seed {cfg.seed}"
        + (f" (continued {cfg.continue_days} days)" if cfg.continue_days else ""),
        "requiresAccessToken": False,
        "output": [{"type": t, "url": f"{t}.ndjson", "count": counts[t]} for t in RESOURCE_TYPES],
        "error": [],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_json(), indent=2, sort_keys=True) + "\n")
    (tmp / "truth" / "parameters.json").write_text(
        json.dumps(
            {"as_of": manifest["transactionTime"], "patients_enrolled": n_patients, **cfg.to_json()},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    # Swap the new files in; keys and other files the user put in `out` stay.
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            dest = out / p.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
    shutil.rmtree(tmp)
    return manifest


def load_config(out: Path) -> GeneratorConfig:
    path = out / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{out} holds no generated clinic ({CONFIG_FILE} missing): run `outcomes ehr generate` first"
        )
    return GeneratorConfig.from_json(json.loads(path.read_text()))


def continue_clinic(out: Path, days: int, progress=None) -> dict:
    """Extend an existing clinic by `days` more days: same seed, later as-of, new and amended resources."""
    cfg = load_config(out)
    return generate(dataclasses.replace(cfg, continue_days=cfg.continue_days + days), out, progress)
