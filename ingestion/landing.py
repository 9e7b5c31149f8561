"""The landing folder: what an extract writes and a load reads.

<landing>/<export_id>/job.json       written before polling, so a retried task resumes the same job
<landing>/<export_id>/files/*.ndjson downloads (written as .part, renamed when complete and verified)
<landing>/<export_id>/landing.json   written last: its presence means the landing is complete
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from ingestion.private_files import tighten

# the resource types an extract asks for unless told otherwise (OUTCOMES_EXPORT_TYPES)
DEFAULT_EXPORT_TYPES = ("Patient", "Condition", "CarePlan", "MedicationAdministration", "Observation", "Procedure")
JOB = "job.json"
DESCRIPTOR = "landing.json"
ABANDONED = "abandoned.json"


def new_export_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tighten(root)  # landed exports hold PHI
    d = root / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    (d / "files").mkdir(parents=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def unfinished_exports(root: Path) -> list[Path]:
    """Exports kicked off (job.json) but not completed nor abandoned, oldest first."""
    if not root.exists():
        return []
    return sorted(
        d
        for d in root.iterdir()
        if (d / JOB).exists() and not (d / DESCRIPTOR).exists() and not (d / ABANDONED).exists()
    )


def complete_landings(root: Path) -> list[Path]:
    """Completed landings, oldest first."""
    if not root.exists():
        return []
    return sorted(d for d in root.iterdir() if (d / DESCRIPTOR).exists())
