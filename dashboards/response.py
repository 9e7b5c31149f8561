"""The response page: response, remission and worsening per scale and protocol with intervals, the clinician's
and the patient's agreement, response by week and mean score by week."""

from __future__ import annotations

import math

from dashboards.cohorts import Cohort, cohorts_of, filtered_sections, sliced
from dashboards.display import Display, display_from
from dashboards.page import figure_html, page, summary_row, table_html
from dashboards.suppression import MIN_CELL, rate_visible, rounded_label

BY_COHORT = {"rpt_protocol_summary": "rpt_protocol_summary_by_cohort"}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_cell(k: int | None, n: int | None) -> str:
    if not rate_visible(k, n):
        return "withheld"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.0%} ({lo:.0%}–{hi:.0%})"


def add_selector(fig, owner: list[str], options: list[tuple[str, str, dict]]) -> None:
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

    d = display_from(marts)
    weekly, traj = marts["rpt_outcome_rates_by_week"], marts["rpt_score_trajectories"]
    dims = marts.get("dim_instruments")
    thresholds = {r["instrument"]: r for r in dims.iter_rows(named=True)} if dims is not None else {}

    def render(cohort: Cohort) -> tuple[str, bool]:
        return _rates_section(sliced(marts, cohort, BY_COHORT)["rpt_protocol_summary"], d, cohort.suffix)

    rates = filtered_sections(
        cohorts_of(marts, "rpt_protocol_summary_by_cohort"), render, "response-cohort", "Rates at the endpoint"
    )

    # --- response by week: one scale at a time; a line runs from its first week that can be shown to the next
    # one that cannot
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
                    if xs:
                        break
                    continue  # the first weeks, when only a few have responded, must not hide the whole line
                lo, hi = wilson_interval(r["n_responders"], r["n_assessed"])
                xs.append(r["week"])
                ys.append(r["response_rate"])
                texts.append(
                    f"{r['response_rate']:.0%} (95% CI {lo:.0%}–{hi:.0%}), {rounded_label(r['n_assessed'])} assessed"
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
    add_selector(weekly_fig, owner, weekly_options)
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
    add_selector(traj_fig, owner, traj_options)
    traj_fig.update_layout(xaxis_title="Week since the first infusion", height=450, plot_bgcolor="white")
    traj_fig.update_yaxes(gridcolor="#e5e5e5")

    # --- clinician-rated vs self-rated response on the same courses --------------------------------------
    concordance = marts.get("rpt_rater_concordance")
    c_rows = []
    c_bars: list[tuple[int, str, list[float]]] = []  # (order, label, shares of the 2x2 table's four cells)
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
                    rounded_label(n),
                    rate_cell(both + (r["n_clinician_only"] or 0), n),
                    rate_cell(both + (r["n_self_only"] or 0), n),
                    rate_cell(agree, n) if cells_ok else "withheld",
                    f"{r['cohens_kappa']:.2f}" if cells_ok and r["cohens_kappa"] is not None else "withheld",
                ],
            )
        )
        if cells_ok and n:
            cells = [r["n_both_respond"], r["n_clinician_only"], r["n_self_only"], r["n_neither"]]
            c_bars.append(
                (
                    c_rows[-1][0],
                    f"{d.label(r['protocol'])}: {c_rows[-1][1][1]}",
                    [(x or 0) / n for x in cells],
                )
            )
    c_rows.sort(key=lambda x: x[0])
    c_bars.sort(key=lambda x: x[0], reverse=True)  # the first protocol on top
    # shades of grey: colour means protocol on every page; the two disagreeing cells are hatched
    agreement_fig = go.Figure()
    for k, (cell, shade, pattern) in enumerate(
        (
            ("Both respond", "#4d4d4d", ""),
            ("Clinician-rated only", "#8c8c8c", "/"),
            ("Self-rated only", "#b3b3b3", "x"),
            ("Neither", "#dedede", ""),
        )
    ):
        agreement_fig.add_trace(
            go.Bar(
                y=[label for _, label, _ in c_bars],
                x=[shares[k] for _, _, shares in c_bars],
                orientation="h",
                name=cell,
                marker={"color": shade, "pattern": {"shape": pattern, "fgcolor": "white"}},
                text=[f"{shares[k]:.0%}" for _, _, shares in c_bars],
                textposition="inside",
                hovertemplate="%{y}<br>" + cell + ": %{x:.0%} of courses rated on both<extra></extra>",
            )
        )
    agreement_fig.update_layout(
        barmode="stack",
        height=max(260, 60 + 40 * len(c_bars)),
        title="Who responded, by the clinician's and by the patient's scale (courses rated on both)",
        xaxis={"tickformat": ".0%", "range": [0, 1], "title": "Courses rated on both"},
        legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "traceorder": "normal"},
        margin={"l": 330, "t": 110},
        plot_bgcolor="white",
    )

    published = marts.get("dim_published_figures")
    published_rows = [
        [
            r["citation"],
            r["population"],
            d.label(r["protocol"]),
            d.label(r["instrument"]),
            f"{'Response' if r['measure'] == 'response_rate' else 'Remission'} {r['value']:.0%}",
        ]
        for r in (
            published.filter(pl.col("measure").is_in(["response_rate", "remission_rate"])).iter_rows(named=True)
            if published is not None
            else []
        )
    ]
    body = (
        rates
        + (
            "<h3>Published figures for comparison</h3>"
            + table_html(["Study", "Population", "Compare with", "Scale", "Figure"], published_rows, "published-rates")
            + '<p class="meta">From the published_figures seed (add a row to compare with another study). Trials '
            "select their patients and rarely give boosters: read each beside its population.</p>"
            if published_rows
            else ""
        )
        + "<h2>Do the clinician and the patient agree?</h2>"
        + table_html(
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
        "Self-rated scales often improve where clinician-rated ones do not, and the reverse. This table and the "
        "figures below are for all courses; a protocol is left out of the chart when a cell of its 2×2 table "
        "is 1–10.</p>"
        + (figure_html(agreement_fig, "concordance-chart") if c_bars else "")
        + figure_html(weekly_fig, "response-by-week")
        + '<p class="meta">Week 0 is the baseline and has no response. A line starts at the first week whose rate '
        "can be shown without revealing a count from 1 to 10 and stops at the next week whose rate cannot.</p>"
        + figure_html(traj_fig, "score-trajectories")
    )
    return page(
        "Response and remission",
        data_as_of,
        body,
        "Response: ≥50% drop from baseline (PCL-5 ≥10 points; CAPS-5 ≥30%) at the endpoint; remission: "
        "at or below the instrument's threshold.",
    )


def _rates_section(summary, d: Display, suffix: str) -> tuple[str, bool]:
    """Response and remission per scale and protocol with Wilson intervals (figure and table) for one cohort, and
    whether any rate of it can be shown."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    in_summary = set(summary["instrument"].to_list()) if summary is not None else set()
    instruments = [i for i in d.instruments if i in in_summary]
    # --- response and remission per scale, one colour per protocol; self-rated bars hatched -----------------
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Response", "Remission"), horizontal_spacing=0.08)
    rows = []
    for protocol in d.protocols:
        xs, resp, remit, resp_err, remit_err, resp_text, remit_text, patterns = [], [], [], [], [], [], [], []
        for inst in instruments:
            r = summary_row(summary, protocol, inst)
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
                    lo, hi = wilson_interval(count, n)
                    values.append(count / n)
                    errors.append((count / n - lo, hi - count / n))
                    texts.append(f"{count / n:.0%} (95% CI {lo:.0%}–{hi:.0%}), {rounded_label(n)} evaluable")
                else:
                    values.append(None)
                    errors.append((0, 0))
                    texts.append("withheld" if known else "no remission threshold")
            rows.append(
                [
                    d.label(protocol),
                    d.label(inst),
                    rounded_label(n),
                    rate_cell(r["n_responders"], n),
                    rate_cell(r["n_remitters"], n) if r["remission_rate"] is not None else "n/a",
                    rate_cell(r["n_worse"], n),
                    rounded_label(r["n_provisional"]),
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

    body = (
        figure_html(fig, f"response-rates{suffix}")
        + table_html(
            ["Protocol", "Scale", "Evaluable", "Response (95% CI)", "Remission (95% CI)", "Worse", "Still open"],
            rows,
            f"rates-table{suffix}",
        )
        + '<p class="meta">Evaluable courses have a baseline and an endpoint and were final at the data cut-off; '
        "courses still open (in induction or awaiting their endpoint) are counted apart and not in any rate.</p>"
    )
    pairs = summary.select("n_responders", "n_evaluable").rows() if summary is not None else []
    showable = any(rate_visible(k, n) for k, n in pairs)
    return body, showable
