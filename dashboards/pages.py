"""The medical director's pages: relapse, response and remission, cohort and data health.

Self-contained HTML that works offline: plotly.js is written once beside the pages. Every count shown
passes small-cell suppression; curves with fewer than 11 patients are withheld with a note, and a curve
stops where fewer than 11 remain at risk.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

from dashboards.display import display_from
from dashboards.suppression import MIN_CELL, count_label, curve_visible, rate_visible, rounded_label

AT_RISK_DAYS = (0, 14, 28, 56, 84, 112, 140, 168)
PAGES = {"relapse.html": "Relapse", "response.html": "Response and remission", "cohort.html": "Cohort and data health"}

# Any script error on a page is written into the page itself, so a headless browser test can see it.
ERROR_TRAP = """<script>window.__errors=[];
window.addEventListener('error',function(e){window.__errors.push(String(e.message));
var d=document.getElementById('js-errors');if(d){d.textContent=window.__errors.join('\\n');}});</script>"""


def _page(title: str, data_as_of: str, body: str, definitions: str) -> str:
    nav = " · ".join(f'<a href="{f}">{html.escape(t)}</a>' for f, t in PAGES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} — ketamine outcomes</title>
{ERROR_TRAP}
<script src="plotly.min.js"></script>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
.note{{background:#fff6dd;padding:.5rem 1rem;border-left:4px solid #e0a800;margin:.5rem 0}}
table.t{{border-collapse:collapse}} table.t td,table.t th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}
table.t th{{background:#f3f3f3}} .meta{{color:#555;font-size:.9rem}}
#js-errors{{display:none}}</style></head>
<body><nav>{nav}</nav>
<h1>{html.escape(title)}</h1>
<p class="meta">Data as of <b id="data-as-of">{html.escape(data_as_of)}</b> (EHR time of the last committed load).
Definitions: <a href="definitions.html">outcome definitions</a>. {html.escape(definitions)}
Counts from 1 to 10 are shown as &lt;11; curves and rates that would reveal them are withheld.</p>
{body}
<div id="js-errors"></div>
</body></html>
"""


def _fig_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def _table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="t" id="{table_id}"><tr>{head}</tr>{body}</table>'


def _steps(days: list, values: list) -> tuple[list, list]:
    """Coordinates of a right-continuous step function, for bands drawn as polygons."""
    xs, ys = [], []
    for k, (d, v) in enumerate(zip(days, values, strict=True)):
        if k:
            xs.append(d)
            ys.append(values[k - 1])
        xs.append(d)
        ys.append(v)
    return xs, ys


def _p_text(p: float | None, protocol: str, reference: str | None) -> str:
    if p is None:
        return "reference" if protocol == reference else "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def at_risk_at(curve, day: int) -> int:
    """Responders still at risk at `day`: the at-risk count of the first step on or after it, else 0."""
    later = curve.filter(curve["day"] >= day)
    return int(later["n_at_risk"][0]) if later.height else 0


def relapse_page(marts: dict, data_as_of: str) -> str:
    import plotly.graph_objects as go
    import polars as pl

    d = display_from(marts)
    km, summary = marts["rpt_relapse_free_survival"], marts["rpt_protocol_summary"]
    instruments = [i for i in d.instruments if km is not None and i in set(km["instrument"].to_list())]
    fig = go.Figure()
    trace_instrument: list[str] = []
    notes: dict[str, list[str]] = {}
    at_risk_rows: dict[str, list[list[str]]] = {}
    for inst in instruments:
        for protocol in d.protocols:
            curve = km.filter((pl.col("instrument") == inst) & (pl.col("protocol") == protocol)).sort("day")
            if curve.height == 0:
                continue
            patients = int(curve["n_at_risk"][0])
            at_risk_rows.setdefault(inst, []).append(
                [d.label(protocol)]
                + [rounded_label(at_risk_at(curve, d)) if curve_visible(patients) else "withheld" for d in AT_RISK_DAYS]
            )
            if not curve_visible(patients):
                notes.setdefault(inst, []).append(
                    f"{d.label(protocol)}: curve withheld (fewer than {MIN_CELL} responders)."
                )
                continue
            shown = curve.filter(pl.col("n_at_risk") >= MIN_CELL)  # stop where fewer than 11 remain at risk
            days, surv = shown["day"].to_list(), shown["survival"].to_list()
            lo = [x if x is not None else 0 for x in shown["ci_lower"].to_list()]
            hi = [x if x is not None else 0 for x in shown["ci_upper"].to_list()]
            color = d.colour(protocol)
            band_x, band_hi = _steps(days, hi)
            _, band_lo = _steps(days, lo)
            fig.add_trace(
                go.Scatter(
                    x=band_x + band_x[::-1],
                    y=band_hi + band_lo[::-1],
                    fill="toself",
                    line={"width": 0},
                    fillcolor=color,
                    opacity=0.15,
                    hoverinfo="skip",
                    showlegend=False,
                    name=f"{d.label(protocol)} 95% CI",
                    visible=inst == instruments[0],
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=days,
                    y=surv,
                    mode="lines",
                    line={"color": color, "width": 2},
                    line_shape="hv",
                    name=d.label(protocol),
                    visible=inst == instruments[0],
                    hovertemplate="day %{x}: %{y:.2f}<extra>" + d.label(protocol) + "</extra>",
                )
            )
            trace_instrument += [inst, inst]
    buttons = [
        {
            "label": d.label(i),
            "method": "update",
            "args": [
                {"visible": [t == i for t in trace_instrument]},
                {"title.text": f"Relapse-free survival among responders — {d.label(i)}"},
            ],
        }
        for i in instruments
    ]
    fig.update_layout(
        title=f"Relapse-free survival among responders — {d.label(instruments[0])}" if instruments else "",
        xaxis_title="Days since the last induction infusion",
        yaxis_title="Relapse-free (Kaplan–Meier)",
        yaxis_range=[0, 1.02],
        height=520,
        updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.18, "xanchor": "right"}],
        legend={"orientation": "h", "y": -0.2},
    )

    sections = []
    for inst in instruments:
        rows = []
        for protocol in d.protocols:
            s = (
                summary.filter((pl.col("instrument") == inst) & (pl.col("protocol") == protocol))
                if summary is not None
                else None
            )
            if s is None or s.height == 0:
                continue
            r = s.row(0, named=True)
            visible = curve_visible(r["n_responders"])
            median = r["median_relapse_free_days"]
            p = r["logrank_p_vs_reference"]
            rows.append(
                [
                    d.label(protocol),
                    rounded_label(r["n_responders"]),
                    (f"{median:.0f}" if median is not None else "not reached") if visible else "withheld",
                    _p_text(p, protocol, d.reference) if visible else "withheld",
                ]
            )
        display = "block" if inst == instruments[0] else "none"
        sections.append(
            f'<div class="instrument-block" data-instrument="{inst}" style="display:{display}">'
            f"<h3>{html.escape(d.label(inst))}</h3>"
            + _table(
                ["Protocol"] + [f"At risk day {d}" for d in AT_RISK_DAYS],
                at_risk_rows.get(inst, []),
                f"at-risk-{inst}",
            )
            + "<br>"
            + _table(
                ["Protocol", "Responders", "Median relapse-free days", f"Log-rank p vs {d.label(d.reference)}"],
                rows,
                f"median-{inst}",
            )
            + "".join(f'<p class="note withheld">{html.escape(n)}</p>' for n in notes.get(inst, []))
            + "</div>"
        )
    rounding = (
        '<p class="meta">Numbers at risk and responders are rounded to the nearest 10, so that no count '
        "from 1 to 10 can be derived by subtracting one from another.</p>"
    )
    switcher = """<script>document.getElementById('relapse-km').on && document.getElementById('relapse-km').on(
'plotly_buttonclicked', function(e){var i=e.button.label;document.querySelectorAll('.instrument-block').forEach(
function(b){b.style.display = (b.querySelector('h3').textContent===i)?'block':'none';});});</script>"""
    body = (
        _fig_html(fig, "relapse-km")
        + "<h2>Number at risk, median and log-rank test</h2>"
        + rounding
        + "".join(sections)
        + switcher
    )
    return _page(
        "Relapse",
        data_as_of,
        body,
        "Relapse among responders: a single-visit threshold, two consecutive losses of response, or a "
        "booster, counted from the last induction infusion; 95% bands on the log(−log) scale.",
    )


def response_page(marts: dict, data_as_of: str) -> str:
    import plotly.graph_objects as go
    import polars as pl
    from plotly.subplots import make_subplots

    d = display_from(marts)
    summary, weekly, traj = (
        marts["rpt_protocol_summary"],
        marts["rpt_outcome_rates_by_week"],
        marts["rpt_score_trajectories"],
    )
    pairs = d.pairs
    primary = pairs[0] if pairs else ()  # the first clinician/self pair: weekly rates and trajectories
    order = {p: k for k, p in enumerate(d.protocols)}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Response", "Remission"))
    rows = []
    for clinician, self_rated in pairs:
        for inst in (clinician, self_rated):
            s = summary.filter(pl.col("instrument") == inst) if summary is not None else None
            if s is None or s.height == 0:
                continue
            resp, remit, labels = [], [], []
            for r in sorted(s.iter_rows(named=True), key=lambda r: order.get(r["protocol"], len(order))):
                labels.append(d.label(r["protocol"]))
                ok_resp = rate_visible(r["n_responders"], r["n_evaluable"])
                ok_rem = r["remission_rate"] is not None and rate_visible(r["n_remitters"], r["n_evaluable"])
                resp.append(r["response_rate"] if ok_resp else None)
                remit.append(r["remission_rate"] if ok_rem else None)
                rows.append(
                    [
                        d.label(r["protocol"]),
                        d.label(inst),
                        count_label(r["n_evaluable"]),
                        f"{r['response_rate']:.0%}" if ok_resp else "withheld",
                        f"{r['remission_rate']:.0%}"
                        if ok_rem
                        else ("n/a" if r["remission_rate"] is None else "withheld"),
                    ]
                )
            name = d.label(inst)
            color = d.colour(inst)  # the same colour for a scale in both panels
            fig.add_trace(go.Bar(x=labels, y=resp, name=name, legendgroup=inst, marker_color=color), row=1, col=1)
            fig.add_trace(
                go.Bar(x=labels, y=remit, name=name, legendgroup=inst, showlegend=False, marker_color=color),
                row=1,
                col=2,
            )
    fig.update_layout(
        barmode="group",
        height=450,
        yaxis_tickformat=".0%",
        yaxis2_tickformat=".0%",
        title="Clinician-rated and self-rated side by side (their disagreement is a finding)",
    )

    weekly_fig = go.Figure()
    for inst in primary:
        for protocol in d.protocols:
            w = (
                weekly.filter((pl.col("instrument") == inst) & (pl.col("protocol") == protocol)).sort("week")
                if weekly is not None
                else None
            )
            if w is None or w.height == 0:
                continue
            ys = [
                r["response_rate"] if rate_visible(r["n_responders"], r["n_assessed"]) else None
                for r in w.iter_rows(named=True)
            ]
            weekly_fig.add_trace(
                go.Scatter(
                    x=w["week"].to_list(),
                    y=ys,
                    mode="lines+markers",
                    name=f"{d.label(protocol)} — {d.label(inst)}",
                    line={"color": d.colour(protocol), "dash": "solid" if inst == primary[0] else "dot"},
                )
            )
    weekly_fig.update_layout(
        title="Response rate by week since the first infusion", xaxis_title="Week", yaxis_tickformat=".0%", height=450
    )

    traj_fig = go.Figure()
    scale = primary[0] if primary else None
    for protocol in d.protocols:
        t = (
            traj.filter(
                (pl.col("instrument") == scale) & (pl.col("protocol") == protocol) & (pl.col("n_courses") >= MIN_CELL)
            ).sort("week")
            if traj is not None
            else None
        )
        if t is None or t.height == 0:
            continue
        weeks = t["week"].to_list()
        traj_fig.add_trace(
            go.Scatter(
                x=weeks + weeks[::-1],
                y=t["ci_upper"].to_list() + t["ci_lower"].to_list()[::-1],
                fill="toself",
                fillcolor=d.colour(protocol),
                opacity=0.15,
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        traj_fig.add_trace(
            go.Scatter(
                x=weeks,
                y=t["mean_score"].to_list(),
                mode="lines",
                line={"color": d.colour(protocol)},
                name=d.label(protocol),
            )
        )
    traj_fig.update_layout(
        title=f"Mean {d.label(scale)} by week (95% interval; weeks with fewer than 11 courses withheld)",
        xaxis_title="Week since the first infusion",
        yaxis_title=d.label(scale),
        height=450,
    )
    body = (
        _fig_html(fig, "response-rates")
        + _table(["Protocol", "Instrument", "Evaluable", "Response", "Remission"], rows, "rates-table")
        + _fig_html(weekly_fig, "response-by-week")
        + _fig_html(traj_fig, "score-trajectories")
    )
    return _page(
        "Response and remission",
        data_as_of,
        body,
        "Response: ≥50% drop from baseline (PCL-5 ≥10 points; CAPS-5 ≥30%) at the endpoint; remission: "
        "at or below the instrument's threshold.",
    )


def cohort_page(marts: dict, data_as_of: str) -> str:
    import plotly.graph_objects as go

    d = display_from(marts)
    cohort, health, quarantine = marts["rpt_cohort_summary"], marts["rpt_data_health"], marts["rpt_quarantine_summary"]
    rows, labels, courses = [], [], []
    order = {p: k for k, p in enumerate(d.protocols)}
    cohort_rows = (
        sorted(cohort.iter_rows(named=True), key=lambda r: order.get(r["protocol"], len(order)))
        if cohort is not None
        else []
    )
    for r in cohort_rows:
        n = r["n_courses"]
        labels.append(d.label(r["protocol"]))
        courses.append(n if n >= MIN_CELL or n == 0 else None)
        rows.append(
            [
                d.label(r["protocol"]),
                count_label(n),
                count_label(r["n_patients"]),
                f"{r['mean_induction_infusions']:.1f}" if n >= MIN_CELL else "withheld",
                f"{r['n_completed_induction'] / n:.0%}" if rate_visible(r["n_completed_induction"], n) else "withheld",
                f"{r['n_adherent'] / n:.0%}" if rate_visible(r["n_adherent"], n) else "withheld",
                f"{r['mean_psychotherapy_sessions']:.1f}" if n >= MIN_CELL else "withheld",
            ]
        )
    fig = go.Figure(go.Bar(x=labels, y=courses, text=[count_label(c) if c is not None else "<11" for c in courses]))
    fig.update_layout(title="Treatment courses per protocol", height=380)
    h = health.row(0, named=True) if health is not None and health.height else {}
    status = [
        ["Last successful refresh (published)", str(h.get("published_at", "–"))],
        ["Data as of", str(h.get("data_as_of", "–"))],
        ["Raw quality gate", "passed" if h.get("raw_gate_passed") else "FAILED or not run"],
        ["Mart quality gate", "passed" if h.get("marts_gate_passed") else "FAILED or not run"],
        ["Warnings", count_label(h.get("warnings"))],
        ["Records quarantined by the quality gate", count_label(h.get("quarantined_by_gate"))],
        ["Lines quarantined at load", count_label(h.get("quarantined_at_load"))],
    ]
    q_rows = [
        [r["stage"], r["reason"], count_label(r["records"])]
        for r in (quarantine.iter_rows(named=True) if quarantine is not None else [])
    ]
    body = (
        _fig_html(fig, "cohort-courses")
        + _table(
            [
                "Protocol",
                "Courses",
                "Patients",
                "Mean induction infusions",
                "Completed induction",
                "Adherent",
                "Mean psychotherapy sessions",
            ],
            rows,
            "cohort-table",
        )
        + "<h2>Data health</h2>"
        + _table(["", ""], status, "health-table")
        + "<h3>Quarantine by reason</h3>"
        + _table(["Stage", "Reason", "Records"], q_rows, "quarantine-table")
    )
    return _page(
        "Cohort and data health",
        data_as_of,
        body,
        "Adherent: six induction infusions within 42 days and no psychotherapy on an infusion day.",
    )


def build_pages(marts: dict, out_dir: Path, definitions_md: str | None = None) -> list[Path]:
    """Write every page, plotly.min.js and the definitions page into `out_dir`."""
    from plotly.offline import get_plotlyjs

    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "plotly.min.js"
    js.write_text(get_plotlyjs())
    health = marts.get("rpt_data_health")
    data_as_of = (
        str(health["data_as_of"][0])
        if health is not None and health.height
        else f"unknown (built {datetime.now():%Y-%m-%d %H:%M})"
    )
    written = []
    for name, builder in (
        ("relapse.html", relapse_page),
        ("response.html", response_page),
        ("cohort.html", cohort_page),
    ):
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(builder(marts, data_as_of))
        tmp.replace(path)
        written.append(path)
    defs = out_dir / "definitions.html"
    defs.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Outcome definitions</title></head>"
        f"<body><pre style='white-space:pre-wrap;font-family:system-ui'>{html.escape(definitions_md or '')}"
        "</pre></body></html>"
    )
    index = out_dir / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='refresh' "
        "content='0; url=relapse.html'></head><body><a href='relapse.html'>Relapse</a></body></html>"
    )
    return written + [defs, index]
