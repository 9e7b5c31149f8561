"""Headless Chromium (Debian's) opening pages from file, as a reader's browser would."""

from __future__ import annotations

import re
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


def js_errors(html: str) -> str:
    m = re.search(r'<div id="js-errors"[^>]*>(.*?)</div>', html, re.S)
    assert m, "the error trap is missing from the page"
    return m.group(1).strip()


# counts as the pages print them: rounded (~40), in hover text and legends (40 assessed, 30/40 relapsed)
COUNT_PATTERNS = (
    r"~(\d[\d,]*)",
    r"(\d[\d,]*) (?:assessed|evaluable|relapsed|responders|courses|patients|at risk)",
    r"[Aa]t risk (\d[\d,]*)",
    r"(\d[\d,]*)/~?\d",
)


def small_counts(html: str) -> list[str]:
    """Every count from 1 to 10 printed anywhere in a page's source: tables, figure data, hover text, legends."""
    found = []
    for pattern in COUNT_PATTERNS:
        for m in re.finditer(pattern, html):
            if 1 <= int(m.group(1).replace(",", "")) <= 10:
                found.append(m.group(0))
    return found
