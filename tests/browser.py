"""Headless Chromium (Debian's) opening pages from file, as a reader's browser would."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is required for the browser tests (make test installs Debian's chromium)"
    return path


def render(page: Path, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=8000",
                *extra,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def dom(page: Path, *extra: str) -> str:
    """The page's DOM once its scripts have run."""
    proc = render(page, "--dump-dom", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


# Every host name fails to resolve: a page that needs the network shows it.
NO_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND"
