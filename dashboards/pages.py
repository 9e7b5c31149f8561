"""The medical director's pages: relapse, response and remission, cohort and data health.

Self-contained HTML that works offline: plotly.js is written once beside the pages. Every count shown
passes small-cell suppression; curves with fewer than 11 patients are withheld with a note, and a curve
stops where fewer than 11 remain at risk.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path

from dashboards.display import display_from
from dashboards.status import record_published
from dashboards.suppression import MIN_CELL, count_label, curve_visible, rate_visible, rounded_label

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


def _page(title: str, data_as_of: str, body: str, definitions: str) -> str:
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


def _fig_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def _table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="t" id="{table_id}"><tr>{head}</tr>{body}</table>'


def _p_text(p: float | None, protocol: str, reference: str | None) -> str:
    if p is None:
        return "reference" if protocol == reference else "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _summary_row(summary, protocol: str, instrument: str) -> dict | None:
    import polars as pl

    if summary is None:
        return None
    s = summary.filter((pl.col("instrument") == instrument) & (pl.col("protocol") == protocol))
    return s.row(0, named=True) if s.height else None


def relapse_page(marts: dict, data_as_of: str) -> str:
    import polars as pl

    from dashboards.km import Panel, Series, km_figure, median_cells

    d = display_from(marts)
    km, summary = marts["rpt_relapse_free_survival"], marts["rpt_protocol_summary"]
    present = set(km["instrument"].to_list()) if km is not None else set()
    instruments = [i for i in d.instruments if i in present]

    def series(protocol: str, inst: str, label: str, dash: str = "solid") -> Series | None:
        curve = km.filter((pl.col("instrument") == inst) & (pl.col("protocol") == protocol)).sort("day")
        if curve.height == 0:
            return None
        return Series(protocol, label, d.colour(protocol), curve, _summary_row(summary, protocol, inst), dash)

    by_instrument = [
        Panel(
            inst,
            d.label(inst),
            f"Relapse-free survival among responders — {d.label(inst)}",
            [s for p in d.protocols if (s := series(p, inst, d.label(p))) is not None],
        )
        for inst in instruments
    ]
    fig, _ = km_figure(by_instrument)

    # one protocol, a clinician-rated scale and its self-rated partner on one figure (they often disagree)
    pairs = [(c, s) for c, s in d.pairs if c in present and s in present]
    by_protocol = []
    for protocol in d.protocols:
        for clinician, self_rated in pairs:
            drawn = []
            for inst in (clinician, self_rated):
                one = series(protocol, inst, d.label(inst), d.dash(inst))
                if one is not None:
                    one.key = inst
                    drawn.append(one)
            if drawn:
                by_protocol.append(
                    Panel(
                        f"{protocol}:{clinician}",
                        f"{d.label(protocol)}: {d.label(clinician)} vs {d.label(self_rated)}",
                        f"{d.label(protocol)} — clinician-rated (solid) and self-rated (dashed)",
                        drawn,
                    )
                )
    raters_fig, _ = km_figure(by_protocol)

    sections = []
    for inst in instruments:
        rows = []
        for protocol in d.protocols:
            r = _summary_row(summary, protocol, inst)
            one = series(protocol, inst, d.label(protocol))
            if r is None or one is None:
                continue
            visible = curve_visible(r["n_responders"])
            median, interval = median_cells(one)
            rows.append(
                [
                    d.label(protocol),
                    rounded_label(r["n_responders"]),
                    rounded_label(r["n_relapsed"]) if visible else "withheld",
                    median,
                    interval,
                    _p_text(r["logrank_p_vs_reference"], protocol, d.reference) if visible else "withheld",
                ]
            )
        display = "block" if inst == instruments[0] else "none"
        notes = [
            f"{d.label(p)}: curve withheld (fewer than {MIN_CELL} responders)."
            for p in d.protocols
            if (r := _summary_row(summary, p, inst)) is not None and not curve_visible(r["n_responders"])
        ]
        sections.append(
            f'<div class="instrument-block" data-instrument="{html.escape(d.label(inst))}" style="display:{display}">'
            f"<h3>{html.escape(d.label(inst))}</h3>"
            + _table(
                [
                    "Protocol",
                    "Responders",
                    "Relapsed",
                    "Median relapse-free days",
                    "95% CI",
                    f"Log-rank p vs {d.label(d.reference)}",
                ],
                rows,
                f"median-{inst}",
            )
            + "".join(f'<p class="note withheld">{html.escape(n)}</p>' for n in notes)
            + "</div>"
        )
    rounding = (
        '<p class="meta">Numbers at risk, responders and relapses are rounded to the nearest 10, so that no count '
        "from 1 to 10 can be derived by subtracting one from another; a curve stops where fewer than 11 remain at "
        "risk, and a median or interval bound beyond that point is not printed (&gt; the last day shown). "
        "Ticks on a curve mark censored courses; NR: not reached.</p>"
    )
    switcher = """<script>(function(){var f=document.getElementById('relapse-km');if(!f||!f.on)return;
f.on('plotly_buttonclicked',function(e){var i=e.button.label;document.querySelectorAll('.instrument-block')
.forEach(function(b){b.style.display=(b.dataset.instrument===i)?'block':'none';});});})();</script>"""
    body = (
        _fig_html(fig, "relapse-km")
        + "<h2>Median relapse-free days and log-rank test</h2>"
        + rounding
        + "".join(sections)
        + switcher
        + "<h2>Clinician-rated and self-rated, one protocol</h2>"
        + _fig_html(raters_fig, "relapse-raters")
    )
    return _page(
        "Relapse",
        data_as_of,
        body,
        "Relapse among responders: a single-visit threshold, two consecutive losses of response, a booster "
        "after the endpoint or a new course, counted from the last induction infusion; 95% bands on the "
        "log(−log) scale, the median's interval where those bands cross 50%.",
    )


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate_cell(k: int | None, n: int | None) -> str:
    if not rate_visible(k, n):
        return "withheld"
    lo, hi = _wilson(k, n)
    return f"{k / n:.0%} ({lo:.0%}–{hi:.0%})"


def _selector(fig, owner: list[str], options: list[tuple[str, str, dict]]) -> None:
    """A menu that shows one option's traces at a time (owner[i] is trace i's option key)."""
    if not options:
        return
    first = options[0][0]
    for trace, key in zip(fig.data, owner, strict=True):
        trace.visible = key == first
    if len(options) > 1:
        fig.update_layout(
            updatemenus=[
                {
                    "buttons": [
                        {"label": label, "method": "update", "args": [{"visible": [k == key for k in owner]}, layout]}
                        for key, label, layout in options
                    ],
                    "x": 1.0,
                    "y": 1.15,
                    "xanchor": "right",
                }
            ]
        )
    fig.update_layout(**{k.replace(".", "_"): v for k, v in options[0][2].items()})


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
    dims = marts.get("dim_instruments")
    thresholds = {r["instrument"]: r for r in dims.iter_rows(named=True)} if dims is not None else {}
    in_summary = set(summary["instrument"].to_list()) if summary is not None else set()
    instruments = [i for i in d.instruments if i in in_summary]

    # --- response and remission per scale, one colour per protocol; self-rated bars hatched -----------------
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Response", "Remission"), horizontal_spacing=0.08)
    rows = []
    for protocol in d.protocols:
        xs, resp, remit, resp_err, remit_err, resp_text, remit_text, patterns = [], [], [], [], [], [], [], []
        for inst in instruments:
            r = _summary_row(summary, protocol, inst)
            if r is None:
                continue
            n = r["n_evaluable"]
            xs.append(d.label(inst))
            patterns.append("/" if d.raters.get(inst) == "self" else "")
            for k_col, values, errors, texts in (
                ("n_responders", resp, resp_err, resp_text),
                ("n_remitters", remit, remit_err, remit_text),
            ):
                count = r[k_col]
                known = k_col == "n_responders" or r["remission_rate"] is not None
                if known and rate_visible(count, n):
                    lo, hi = _wilson(count, n)
                    values.append(count / n)
                    errors.append((count / n - lo, hi - count / n))
                    texts.append(f"{count / n:.0%} (95% CI {lo:.0%}–{hi:.0%}), {count_label(n)} evaluable")
                else:
                    values.append(None)
                    errors.append((0, 0))
                    texts.append("withheld" if known else "no remission threshold")
            rows.append(
                [
                    d.label(protocol),
                    d.label(inst),
                    count_label(n),
                    _rate_cell(r["n_responders"], n),
                    _rate_cell(r["n_remitters"], n) if r["remission_rate"] is not None else "n/a",
                    _rate_cell(r["n_worse"], n),
                    count_label(r["n_provisional"]),
                ]
            )
        for col, values, errors, texts in ((1, resp, resp_err, resp_text), (2, remit, remit_err, remit_text)):
            fig.add_trace(
                go.Bar(
                    x=xs,
                    y=values,
                    name=d.label(protocol),
                    legendgroup=protocol,
                    showlegend=col == 1,
                    marker={"color": d.colour(protocol), "pattern": {"shape": patterns, "fgcolor": "white"}},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [e[1] for e in errors],
                        "arrayminus": [e[0] for e in errors],
                        "color": "#444",
                        "thickness": 1,
                    },
                    customdata=texts,
                    hovertemplate="%{x}<br>%{customdata}<extra>" + d.label(protocol) + "</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_layout(
        barmode="group",
        height=470,
        title="Response and remission at the endpoint, per scale (hatched: self-rated); bars show 95% intervals",
        legend={"orientation": "h", "y": -0.25},
        plot_bgcolor="white",
    )
    fig.update_yaxes(tickformat=".0%", range=[0, 1], gridcolor="#e5e5e5", title_text="Courses (evaluable)", col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1], gridcolor="#e5e5e5", col=2)

    # --- response by week: one scale at a time; a line stops at its first week too small to show -------------
    weekly_fig = go.Figure()
    owner: list[str] = []
    weekly_options = []
    weekly_instruments = set(weekly["instrument"].to_list()) if weekly is not None else set()
    for inst in [i for i in d.instruments if i in weekly_instruments]:
        drawn = False
        for protocol in d.protocols:
            w = weekly.filter(
                (pl.col("instrument") == inst) & (pl.col("protocol") == protocol) & (pl.col("week") >= 1)
            ).sort("week")
            xs, ys, texts = [], [], []
            for r in w.iter_rows(named=True):
                if not rate_visible(r["n_responders"], r["n_assessed"]):
                    break
                lo, hi = _wilson(r["n_responders"], r["n_assessed"])
                xs.append(r["week"])
                ys.append(r["response_rate"])
                texts.append(
                    f"{r['response_rate']:.0%} (95% CI {lo:.0%}–{hi:.0%}), {count_label(r['n_assessed'])} assessed"
                )
            if not xs:
                continue
            drawn = True
            weekly_fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=d.label(protocol),
                    line={"color": d.colour(protocol), "dash": d.dash(inst)},
                    customdata=texts,
                    hovertemplate="Week %{x}: %{customdata}<extra>" + d.label(protocol) + "</extra>",
                )
            )
            owner.append(inst)
        if drawn:
            weekly_options.append(
                (inst, d.label(inst), {"title.text": f"Responding by week since the first infusion — {d.label(inst)}"})
            )
    _selector(weekly_fig, owner, weekly_options)
    weekly_fig.update_layout(
        xaxis_title="Week since the first infusion",
        yaxis_title="Responding (% of courses assessed that week)",
        yaxis_tickformat=".0%",
        yaxis_range=[0, 1],
        height=450,
        plot_bgcolor="white",
    )
    weekly_fig.update_yaxes(gridcolor="#e5e5e5")

    # --- mean score by week with the scale's remission and single-visit relapse lines -------------------------
    traj_fig = go.Figure()
    owner = []
    traj_options = []
    traj_instruments = set(traj["instrument"].to_list()) if traj is not None else set()
    for inst in [i for i in d.instruments if i in traj_instruments]:
        drawn = False
        for protocol in d.protocols:
            t = traj.filter(
                (pl.col("instrument") == inst) & (pl.col("protocol") == protocol) & (pl.col("n_courses") >= MIN_CELL)
            ).sort("week")
            if t.height == 0:
                continue
            drawn = True
            weeks = t["week"].to_list()
            traj_fig.add_trace(
                go.Scatter(
                    x=weeks + weeks[::-1],
                    y=t["ci_upper"].to_list() + t["ci_lower"].to_list()[::-1],
                    fill="toself",
                    fillcolor=d.colour(protocol),
                    opacity=0.12,
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                    legendgroup=protocol,
                )
            )
            traj_fig.add_trace(
                go.Scatter(
                    x=weeks,
                    y=t["mean_score"].to_list(),
                    mode="lines",
                    line={"color": d.colour(protocol), "dash": d.dash(inst)},
                    name=d.label(protocol),
                    legendgroup=protocol,
                    hovertemplate="Week %{x}: mean %{y:.1f}<extra>" + d.label(protocol) + "</extra>",
                )
            )
            owner += [inst, inst]
        if not drawn:
            continue
        shapes, notes = [], []
        limits = thresholds.get(inst, {})
        for value, label in (
            (limits.get("remission_max"), "remission"),
            (limits.get("single_visit_relapse_min"), "relapse on one visit"),
        ):
            if value is None:
                continue
            shapes.append(
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": value,
                    "y1": value,
                    "line": {"color": "#777", "dash": "dot", "width": 1},
                }
            )
            bound = "≤" if label == "remission" else "≥"
            notes.append(
                {
                    "xref": "paper",
                    "x": 1,
                    "y": value,
                    "xanchor": "right",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "text": f"{label} ({bound}{value:g})",
                    "font": {"size": 11, "color": "#555"},
                }
            )
        traj_options.append(
            (
                inst,
                d.label(inst),
                {
                    "title.text": f"Mean {d.label(inst)} by week (95% interval; weeks with <11 courses withheld)",
                    "yaxis.title.text": d.label(inst),
                    "shapes": shapes,
                    "annotations": notes,
                },
            )
        )
    _selector(traj_fig, owner, traj_options)
    traj_fig.update_layout(xaxis_title="Week since the first infusion", height=450, plot_bgcolor="white")
    traj_fig.update_yaxes(gridcolor="#e5e5e5")

    # --- clinician-rated vs self-rated response on the same courses --------------------------------------
    concordance = marts.get("rpt_rater_concordance")
    c_rows = []
    for r in concordance.iter_rows(named=True) if concordance is not None else []:
        if (r["clinician_instrument"], r["self_instrument"]) not in d.pairs:
            continue  # the pairs the instrument catalogue declares (concordance_partner)
        n = r["n_courses"]
        both = r["n_both_respond"] or 0
        agree = both + (r["n_neither"] or 0)
        cells_ok = all(
            rate_visible(x, n)
            for x in (r["n_both_respond"], r["n_clinician_only"], r["n_self_only"], r["n_neither"])
            if x is not None
        )
        c_rows.append(
            (
                d.protocols.index(r["protocol"]) if r["protocol"] in d.protocols else len(d.protocols),
                [
                    d.label(r["protocol"]),
                    f"{d.label(r['clinician_instrument'])} vs {d.label(r['self_instrument'])}",
                    count_label(n),
                    _rate_cell(both + (r["n_clinician_only"] or 0), n),
                    _rate_cell(both + (r["n_self_only"] or 0), n),
                    _rate_cell(agree, n) if cells_ok else "withheld",
                    f"{r['cohens_kappa']:.2f}" if cells_ok and r["cohens_kappa"] is not None else "withheld",
                ],
            )
        )
    c_rows.sort(key=lambda x: x[0])

    body = (
        _fig_html(fig, "response-rates")
        + _table(
            ["Protocol", "Scale", "Evaluable", "Response (95% CI)", "Remission (95% CI)", "Worse", "Still open"],
            rows,
            "rates-table",
        )
        + '<p class="meta">Evaluable courses have a baseline and an endpoint and were final at the data cut-off; '
        "courses still open (in induction or awaiting their endpoint) are counted apart and not in any rate.</p>"
        + "<h2>Do the clinician and the patient agree?</h2>"
        + _table(
            [
                "Protocol",
                "Scales",
                "Courses rated on both",
                "Clinician-rated response",
                "Self-rated response",
                "Agreement",
                "Cohen's kappa",
            ],
            [r for _, r in c_rows],
            "concordance-table",
        )
        + '<p class="meta">Kappa: agreement beyond chance on who responded (1 = perfect, 0 = chance). '
        "Self-rated scales often improve where clinician-rated ones do not, and the reverse.</p>"
        + _fig_html(weekly_fig, "response-by-week")
        + '<p class="meta">Week 0 is the baseline and has no response. A line stops at the first week with too '
        "few courses to show a rate without revealing a count from 1 to 10.</p>"
        + _fig_html(traj_fig, "score-trajectories")
    )
    return _page(
        "Response and remission",
        data_as_of,
        body,
        "Response: ≥50% drop from baseline (PCL-5 ≥10 points; CAPS-5 ≥30%) at the endpoint; remission: "
        "at or below the instrument's threshold.",
    )


def cohort_page(marts: dict, data_as_of: str, clinic_tz: str = "UTC") -> str:
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
    bar_text, colours = [], []
    for r in cohort_rows:
        n = r["n_courses"]
        courses_text, patients_text = _pair_labels(n, r["n_patients"])
        labels.append(d.label(r["protocol"]))
        courses.append(n if n >= MIN_CELL or n == 0 else None)
        bar_text.append(courses_text)
        colours.append(d.colour(r["protocol"]))
        rows.append(
            [
                d.label(r["protocol"]),
                courses_text,
                patients_text,
                f"{r['mean_induction_infusions']:.1f}" if n >= MIN_CELL else "withheld",
                f"{r['n_completed_induction'] / n:.0%}" if rate_visible(r["n_completed_induction"], n) else "withheld",
                f"{r['n_adherent'] / n:.0%}" if rate_visible(r["n_adherent"], n) else "withheld",
                f"{r['mean_psychotherapy_sessions']:.1f}" if n >= MIN_CELL else "withheld",
            ]
        )
    fig = go.Figure(go.Bar(x=labels, y=courses, text=bar_text, marker_color=colours))
    fig.update_layout(title="Treatment courses per protocol", height=380)
    h = health.row(0, named=True) if health is not None and health.height else {}
    status = [
        ["Last successful refresh (published)", clinic_time(h.get("published_at"), clinic_tz)],
        ["Data as of", clinic_time(h.get("data_as_of"), clinic_tz)],
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
        + '<p class="meta">A gate fails only on a critical check. Row-level checks quarantine the records they '
        "catch (below, by reason) and the night goes on, so the Great Expectations Data Docs list such a check as "
        '"Failed" with its count of records even on a night whose gate passed.</p>'
        + "<h3>Quarantine by reason</h3>"
        + _table(["Stage", "Reason", "Records"], q_rows, "quarantine-table")
    )
    return _page(
        "Cohort and data health",
        data_as_of,
        body,
        "Adherent: six induction infusions within 42 days and no psychotherapy on an infusion day.",
    )


def _pair_labels(larger: int | None, smaller: int | None) -> tuple[str, str]:
    """Two counts shown side by side (courses and patients): if their difference is 1-10, both are rounded,
    so the difference cannot be read off."""
    if larger is not None and smaller is not None and 1 <= larger - smaller < MIN_CELL:
        return rounded_label(larger), rounded_label(smaller)
    return count_label(larger), count_label(smaller)


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
