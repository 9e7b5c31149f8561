"""Dashboards in headless Chromium from file: no script errors, expected traces and tables, suppression."""

from __future__ import annotations

import re
import shutil

import pytest
from browser import dom, js_errors, render, small_counts

EXPECTED = {  # per page: plotly traces drawn at least, and the tables it holds
    "relapse.html": (6, ["median-madrs", "median-phq9"]),
    "response.html": (4, ["rates-table", "concordance-table", "concordance-chart", "published-rates"]),
    "cohort.html": (1, ["cohort-table", "health-table", "quarantine-table"]),
}


def assert_loaded(html: str, page: str) -> None:
    """No script error, plotly rendered its traces, the page's tables and the data-as-of line are there."""
    traces, tables = EXPECTED[page]
    assert js_errors(html) == ""
    assert html.count('class="main-svg"') >= 1  # plotly rendered
    drawn = len(re.findall(r'class="trace scatter|class="trace bars|class="bars"', html))
    assert drawn >= traces, f"{page}: {drawn} traces drawn"
    for table_id in tables:
        assert f'id="{table_id}"' in html
    assert 'id="data-as-of"' in html and "definitions.html" in html


def test_the_cohort_page_loads_without_errors_and_shows_traces(clinic_warehouse):
    _, wh = clinic_warehouse
    assert_loaded(dom(wh.parent / "dashboards" / "cohort.html"), "cohort.html")


def test_a_failed_night_shows_a_banner_on_every_page(clinic_warehouse, tmp_path):
    from dashboards.status import record_failed

    _, wh = clinic_warehouse
    pages = tmp_path / "dashboards"
    shutil.copytree(wh.parent / "dashboards", pages)
    assert 'id="night-status"' in (pages / "cohort.html").read_text()
    assert 'style="display:none"' in re.search(r'<div id="night-status"[^>]*>', dom(pages / "cohort.html")).group(0)
    record_failed(pages, "validate_raw")
    for p in ("relapse.html", "response.html", "cohort.html"):
        banner = re.search(r'<div id="night-status"[^>]*>([^<]*)</div>', dom(pages / p))
        assert "display: block" in banner.group(0) and 'FAILED at step "validate_raw"' in banner.group(1), p


def test_relapse_page_png_snapshot(clinic_warehouse):
    _, wh = clinic_warehouse
    png = wh.parent / "dashboards" / "relapse.png"
    proc = render(wh.parent / "dashboards" / "relapse.html", f"--screenshot={png}", "--window-size=1400,1800")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000


def test_pages_work_offline(clinic_warehouse):
    _, wh = clinic_warehouse
    pages = wh.parent / "dashboards"
    for p in ("relapse.html", "response.html", "cohort.html"):
        text = (pages / p).read_text()
        assert "cdn." not in text and "https://" not in text.split("<body>")[0]
    assert (pages / "plotly.min.js").stat().st_size > 1_000_000


def test_no_page_prints_a_small_count_in_any_cohort(clinic_warehouse):
    _, wh = clinic_warehouse
    for p in ("relapse.html", "response.html", "cohort.html"):
        text = (wh.parent / "dashboards" / p).read_text()
        assert re.search(r"~\d", text), p  # the patterns do find this page's counts
        assert not small_counts(text), p


def test_labels_order_colours_and_reference_come_from_the_dim_marts(clinic_warehouse, tmp_path):
    """What the seeds say (through dim_protocols/dim_instruments) is what every page shows."""
    import polars as pl

    from dashboards.data import read_marts
    from dashboards.pages import build_pages

    _, wh = clinic_warehouse
    marts = read_marts(wh)
    protocols = marts["dim_protocols"]
    assert set(protocols["protocol"]) == {"ketamine_only", "ketamine_cbt", "ketamine_mbrp", "ketamine_kap"}
    marts["dim_protocols"] = protocols.with_columns(
        protocol_label=pl.when(pl.col("protocol") == "ketamine_cbt")
        .then(pl.lit("Group CBT after ketamine"))
        .otherwise(pl.col("protocol_label")),
        colour=pl.when(pl.col("protocol") == "ketamine_cbt").then(pl.lit("#123456")).otherwise(pl.col("colour")),
    )
    marts["dim_instruments"] = marts["dim_instruments"].with_columns(
        display_label=pl.when(pl.col("instrument") == "madrs")
        .then(pl.lit("Montgomery-Asberg"))
        .otherwise(pl.col("display_label"))
    )
    pages = {p.name: p.read_text() for p in build_pages(marts, tmp_path / "pages") if p.suffix == ".html"}
    for name in ("relapse.html", "response.html", "cohort.html"):
        assert "Group CBT after ketamine" in pages[name] and "Ketamine + CBT" not in pages[name], name
    assert "#123456" in pages["relapse.html"] and "#123456" in pages["response.html"]
    assert "Montgomery-Asberg" in pages["relapse.html"] and "Montgomery-Asberg" in pages["response.html"]
    assert "Log-rank p vs Ketamine alone" in pages["relapse.html"]


CHOOSE_COHORT = """<script>window.addEventListener('load', function () {
  var s = document.getElementById('%(select)s');
  s.value = '%(cohort)s';
  s.dispatchEvent(new Event('change'));
  setTimeout(measure, 1000);  // Plotly.Plots.resize settles asynchronously
});
function measure() {
  var shown = [], width = {};
  document.querySelectorAll('.cohort-section').forEach(function (d) {
    if (d.getBoundingClientRect().left >= 0 && getComputedStyle(d).visibility === 'visible') {
      shown.push(d.dataset.cohort);
    }
  });
  ['%(figure)s', '%(figure)s-%(suffix)s'].forEach(function (id) {
    var g = document.getElementById(id);
    width[id] = {width: g._fullLayout.width, y: g.data.map(function (t) { return t.y; })};
  });
  var out = document.createElement('pre');
  out.id = 'filter-result';
  var box = document.getElementById('%(select)s-sections').clientWidth;
  out.textContent = JSON.stringify({shown: shown, figures: width, box: box});
  document.body.appendChild(out);
}</script></body>"""


@pytest.mark.parametrize(
    "page,select,figure",
    [("relapse.html", "relapse-cohort", "relapse-km"), ("response.html", "response-cohort", "response-rates")],
)
def test_the_cohort_filter_shows_the_chosen_courses_figures(clinic_warehouse, tmp_path, page, select, figure):
    import json

    _, wh = clinic_warehouse
    pages = tmp_path / "dashboards"
    shutil.copytree(wh.parent / "dashboards", pages)
    text = (pages / page).read_text()
    offered = re.findall(r'<option value="([^"]+)"', text)
    assert offered[0] == "all:all" and "diagnosis:ptsd" in offered
    assert sum(o.startswith("start_quarter:") for o in offered) >= 3
    chosen = pages / f"chosen-{page}"
    chosen.write_text(
        text.replace(
            "</body>",
            CHOOSE_COHORT
            % {"select": select, "cohort": "diagnosis:ptsd", "figure": figure, "suffix": "diagnosis-ptsd"},
        )
    )
    html = dom(chosen, "--window-size=1400,1800")
    assert_loaded(html, page)  # the page itself: no script error, its traces and tables
    result = json.loads(re.search(r'<pre id="filter-result">(.*?)</pre>', html, re.S).group(1).replace("&quot;", '"'))
    assert result["shown"] == ["diagnosis:ptsd"]
    whole, ptsd = result["figures"][figure], result["figures"][f"{figure}-diagnosis-ptsd"]
    assert ptsd["y"] != whole["y"]  # another cohort, other curves or bars
    assert ptsd["width"] == result["box"] > 1000  # as wide as the page, though laid out while not chosen
