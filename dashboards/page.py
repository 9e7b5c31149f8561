"""What every page shares: navigation, style, the night's status banner, the data-as-of line in clinic time,
tables and figures as HTML fragments."""

from __future__ import annotations

import html
from datetime import UTC, datetime

PAGES = {"relapse.html": "Relapse", "response.html": "Response and remission", "cohort.html": "Cohort and data health"}

# Any script error on a page is written into the page itself, so a headless browser test can see it.
ERROR_TRAP = """<script>window.__errors=[];
window.addEventListener('error',function(e){window.__errors.push(String(e.message));
var d=document.getElementById('js-errors');if(d){d.textContent=window.__errors.join('\\n');}});</script>"""


NIGHT_STATUS = """<script src="status.js"></script>
<div id="night-status" class="alert" role="alert" style="display:none"></div>
<script>(function(){var s=window.OUTCOMES_STATUS;if(!s||s.last_attempt_ok)return;
function t(x){return x?new Date(x).toLocaleString():'an earlier night';}
var d=document.getElementById('night-status');d.style.display='block';
d.textContent='The last refresh ('+t(s.last_attempt_at)+') FAILED at step "'+s.failed_step+
'". These pages still show the data published '+t(s.published_at)+
'. Why: the alert in Airflow and in alerts.ndjson beside the warehouse.';})();</script>"""

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
.note{background:#fff6dd;padding:.5rem 1rem;border-left:4px solid #e0a800;margin:.5rem 0}
.alert{background:#fde8e8;padding:.75rem 1rem;border-left:6px solid #b00020;margin:.75rem 0;font-weight:600}
table.t{border-collapse:collapse} table.t td,table.t th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
table.t th{background:#f3f3f3} .meta{color:#555;font-size:.9rem} #js-errors{display:none}"""


def page(title: str, data_as_of: str, body: str, definitions: str) -> str:
    nav = " · ".join(f'<a href="{f}">{html.escape(t)}</a>' for f, t in PAGES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} — ketamine outcomes</title>
{ERROR_TRAP}
<script src="plotly.min.js"></script>
<style>{STYLE}</style></head>
<body><nav>{nav} · <a href="definitions.html">Definitions</a></nav>
{NIGHT_STATUS}
<h1>{html.escape(title)}</h1>
<p class="meta">Data as of <b id="data-as-of">{html.escape(data_as_of)}</b> (the EHR's time of the last committed
load, in clinic time). Definitions: <a href="definitions.html">outcome definitions</a>. {html.escape(definitions)}
Counts from 1 to 10 are shown as &lt;11; curves and rates that would reveal them are withheld.</p>
{body}
<div id="js-errors"></div>
</body></html>
"""


def clinic_time(value, clinic_tz: str) -> str:
    """A timestamp as the clinic reads it: '1 Oct 2026, 23:59 PDT'."""
    from zoneinfo import ZoneInfo

    if value is None:
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(ZoneInfo(clinic_tz))
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname()}"


def figure_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def table_html(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="t" id="{table_id}"><tr>{head}</tr>{body}</table>'


def p_value_text(p: float | None, protocol: str, reference: str | None) -> str:
    if p is None:
        return "reference" if protocol == reference else "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def summary_row(summary, protocol: str, instrument: str) -> dict | None:
    import polars as pl

    if summary is None:
        return None
    s = summary.filter((pl.col("instrument") == instrument) & (pl.col("protocol") == protocol))
    return s.row(0, named=True) if s.height else None
