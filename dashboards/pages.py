"""The medical director's pages: relapse, response and remission, cohort and data health.

Self-contained HTML that works offline: plotly.js is written once beside the pages. Every count shown
passes small-cell suppression; curves with fewer than 11 patients are withheld with a note, and a curve
stops where fewer than 11 remain at risk.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from dashboards.cohort import cohort_page
from dashboards.page import PAGES, STYLE, clinic_time
from dashboards.relapse import relapse_page
from dashboards.response import response_page
from dashboards.status import record_published


def definitions_page(definitions_md: str | None) -> str:
    """docs/definitions.md rendered (CommonMark with tables), with the pages' navigation."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(definitions_md or "")
    nav = " · ".join(f'<a href="{f}">{html.escape(t)}</a>' for f, t in PAGES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Outcome definitions — ketamine outcomes</title>
<style>{STYLE} .defs{{max-width:60rem;line-height:1.5}} .defs table{{border-collapse:collapse}}
.defs td,.defs th{{border:1px solid #ccc;padding:.2rem .5rem}} .defs code{{background:#f3f3f3}}</style></head>
<body><nav>{nav} · <a href="definitions.html">Definitions</a></nav>
<div class="defs">{rendered}</div></body></html>
"""


def build_pages(marts: dict, out_dir: Path, definitions_md: str | None = None, clinic_tz: str = "UTC") -> list[Path]:
    """Write every page, plotly.min.js, the definitions page and status.js into `out_dir`."""
    from functools import partial

    from plotly.offline import get_plotlyjs

    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "plotly.min.js"
    js.write_text(get_plotlyjs())
    health = marts.get("rpt_data_health")
    row = health.row(0, named=True) if health is not None and health.height else {}
    data_as_of = (
        clinic_time(row.get("data_as_of"), clinic_tz)
        if row.get("data_as_of") is not None
        else f"unknown (built {clinic_time(datetime.now(UTC), clinic_tz)})"
    )
    written = []
    for name, builder in (
        ("relapse.html", relapse_page),
        ("response.html", response_page),
        ("cohort.html", partial(cohort_page, clinic_tz=clinic_tz)),
    ):
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(builder(marts, data_as_of))
        tmp.replace(path)
        written.append(path)
    defs = out_dir / "definitions.html"
    defs.write_text(definitions_page(definitions_md))
    index = out_dir / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='refresh' "
        "content='0; url=relapse.html'></head><body><a href='relapse.html'>Relapse</a></body></html>"
    )
    published = row.get("published_at")
    status = record_published(out_dir, published.isoformat() if hasattr(published, "isoformat") else published)
    return written + [defs, index, status]
