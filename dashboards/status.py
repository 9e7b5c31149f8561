"""The night's outcome as the pages see it: `status.js` beside them, rewritten by every night that ends --
published, or failed at some step. The pages are static files opened from disk, so a failed night cannot
rebuild them; it rewrites this small script instead, and every page shows a banner when the last attempt
failed after the data it shows was published."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

STATUS_FILE = "status.js"


def _write(dashboards_dir: Path, status: dict) -> Path:
    dashboards_dir.mkdir(parents=True, exist_ok=True)
    path = dashboards_dir / STATUS_FILE
    tmp = path.with_suffix(".js.tmp")
    tmp.write_text(f"window.OUTCOMES_STATUS = {json.dumps(status, sort_keys=True)};\n")
    os.replace(tmp, path)
    return path


def read_status(dashboards_dir: Path) -> dict:
    path = dashboards_dir / STATUS_FILE
    if not path.exists():
        return {}
    text = path.read_text().strip()
    return json.loads(text.removeprefix("window.OUTCOMES_STATUS = ").removesuffix(";"))


def record_published(dashboards_dir: Path, published_at: str | None) -> Path:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return _write(dashboards_dir, {"last_attempt_at": now, "last_attempt_ok": True, "published_at": published_at})


def record_failed(dashboards_dir: Path, step: str | None) -> Path:
    """Only the step's name goes here (never the error text: it may quote a record); the alert holds the rest."""
    previous = read_status(dashboards_dir)
    return _write(
        dashboards_dir,
        {
            "last_attempt_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "last_attempt_ok": False,
            "failed_step": step or "unknown",
            "published_at": previous.get("published_at"),
        },
    )
