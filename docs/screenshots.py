"""The dashboards' pages as PNGs for the README and docs (docs/img/), 1400 px wide, in headless Chromium.

Usage: python docs/screenshots.py [DASHBOARDS_DIR] [OUT_DIR]   (defaults: data/dashboards docs/img)
Run it on a clinic large enough that few cells are withheld, e.g. after
`outcomes ehr generate --patients 2000 --out DIR` and `outcomes refresh --from-dir DIR`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PAGES = ("relapse", "response", "cohort", "definitions")
WIDTH = 1400
TALLEST = 9000  # px rendered before trimming the blank below the page's end


def screenshot(page: Path, out: Path) -> None:
    from PIL import Image, ImageChops

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is needed: `make chromium` installs Debian's")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "page.png"
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={tmp}/profile",
                "--virtual-time-budget=10000",
                f"--window-size={WIDTH},{TALLEST}",
                f"--screenshot={raw}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
        )
        image = Image.open(raw).convert("RGB")
        blank = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
        box = ImageChops.difference(image, blank).getbbox()
        bottom = min(image.height, (box[3] if box else image.height) + 24)
        image.crop((0, 0, WIDTH, bottom)).save(out, optimize=True)


def main() -> None:
    pages = Path(sys.argv[1] if len(sys.argv) > 1 else "data/dashboards")
    out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/img")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PAGES:
        out = out_dir / f"{name}.png"
        print(f"{name}.html -> {out}", flush=True)
        screenshot(pages / f"{name}.html", out)


if __name__ == "__main__":
    main()
