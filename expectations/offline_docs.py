"""GX Data Docs without the network: the stylesheets, scripts and fonts its pages load from CDNs are copied
beside the docs (from the npm packages in expectations/data_docs_assets, installed by `make bootstrap`) and
the pages point at the copies. A clinic's quality pages then open on a machine with no internet, and no
third party learns when someone reads them."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

NODE_MODULES = Path(__file__).resolve().parent / "data_docs_assets" / "node_modules"

# What GX's page templates load -> the same file in its npm package (versions pinned in package.json).
CDN_FILES = {
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css"
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free/css/all.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/dist/umd/popper.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/dist/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table/dist/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table/dist/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css"
    ),
}
# Folders a copied stylesheet reaches by relative URL (Font Awesome's fonts).
COMPANION_DIRS = ("@fortawesome/fontawesome-free/webfonts",)
# GX's logo is served from S3 and has no package: the header says its name instead.
REMOTE_LOGO = re.compile(r"<img[^>]*great-expectations-web-assets[^>]*>")
# What a page loads by itself: a script, a stylesheet, an image (links a reader clicks are left alone).
LOADED_URL = re.compile(
    r"""<(?:script|img)\b[^>]*\bsrc=["'](https?://[^"']+)|<link\b[^>]*\bhref=["'](https?://[^"']+)"""
)


class AssetsMissing(RuntimeError):
    """The npm packages are not installed: the pages would still load their assets from CDNs."""


def assets_installed(node_modules: Path = NODE_MODULES) -> bool:
    return all((node_modules / path).is_file() for path in CDN_FILES.values())


def remote_loads(html: str) -> list[str]:
    """The URLs on other hosts a page would fetch as it opens."""
    return [a or b for a, b in LOADED_URL.findall(html)]


def make_offline(docs_root: Path, node_modules: Path = NODE_MODULES) -> int:
    """Copy the assets to `docs_root/assets` (once) and point every page under `docs_root` at them; returns
    the pages rewritten. Raises AssetsMissing (naming the fix) when the npm packages are not installed."""
    if not assets_installed(node_modules):
        raise AssetsMissing(
            f"the Data Docs assets are not installed in {node_modules}: run `make bootstrap` "
            "(npm ci in expectations/data_docs_assets); until then the quality pages load them from CDNs"
        )
    assets = docs_root / "assets"
    files = list(CDN_FILES.values())
    for folder in COMPANION_DIRS:
        files += [str(p.relative_to(node_modules)) for p in sorted((node_modules / folder).rglob("*")) if p.is_file()]
    for path in files:
        target = assets / path
        if not target.is_file():  # copied without the package's modes: the docs folder's (the umask's) apply
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(node_modules / path, target)
    rewritten = 0
    for page in docs_root.rglob("*.html"):
        if assets in page.parents:
            continue
        html = page.read_text(encoding="utf-8")
        local = html
        for url, path in CDN_FILES.items():
            if url in local:
                local = local.replace(f'"{url}"', f'"{os.path.relpath(assets / path, page.parent)}"')
        local = REMOTE_LOGO.sub('<span class="navbar-brand">Great Expectations</span>', local)
        if local != html:
            page.write_text(local, encoding="utf-8")
            rewritten += 1
    return rewritten
