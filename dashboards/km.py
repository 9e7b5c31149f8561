"""Kaplan-Meier figures drawn as a clinical paper draws them: step curves with censor marks and light 95% bands,
the number at risk aligned under the x-axis ticks of the same figure, the median with its 95% interval and
relapses/responders in the legend, a % axis, one selector that switches curves, risk table and range together.

Small cells: a curve is drawn only while 11 or more remain at risk, and it steps down only once 11 or more
relapses have accumulated since its last step, so no drop can be read back into fewer than 11 relapses; a
median or interval bound beyond the drawn curve is not printed (it would come from the withheld tail); numbers
at risk and relapses/responders are rounded to the nearest 10 so that no count from 1 to 10 can be derived
from two of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dashboards.suppression import MIN_CELL, curve_visible, rounded_label

RISK_TABLE_SHARE = 0.24  # of the figure's height, below the curves


@dataclass
class Series:
    """One curve: `curve` has day, n_at_risk, n_relapsed, n_censored, survival, ci_lower, ci_upper (sorted)."""

    key: str
    label: str
    colour: str | None
    curve: object  # polars DataFrame
    summary: dict | None  # the rpt_protocol_summary row
    dash: str = "solid"


@dataclass
class Reference:
    """A published figure drawn on the curves: a median (value 0.5) or a share relapse-free on a day."""

    day: float
    value: float
    label: str
    citation: str
    population: str
    colour: str | None


@dataclass
class Panel:
    """What one choice of the selector shows."""

    key: str
    label: str
    title: str
    series: list[Series]
    references: list[Reference] = field(default_factory=list)


def tick_step(last_day: float) -> int:
    return 14 if last_day <= 126 else 28


def shown_part(curve):
    """The curve while 11 or more remain at risk."""
    import polars as pl

    return curve.filter(pl.col("n_at_risk") >= MIN_CELL)


def pooled_steps(part):
    """The shown curve as it is drawn: a step only where MIN_CELL or more relapses have accumulated since the
    previous step (the exact Kaplan-Meier value of that day), the last value held in between and carried flat
    to the last day shown. A single step of the exact curve (1 of 23 at risk) reveals one relapse; a drop
    pooled over 11 or more cannot reveal fewer."""
    import polars as pl

    rows = part.to_dicts()
    if not rows:
        return part
    first = rows[0]
    pending = first["n_relapsed"]
    kept = [first if pending >= MIN_CELL else {**first, "survival": 1.0, "ci_lower": 1.0, "ci_upper": 1.0}]
    if pending >= MIN_CELL:
        pending = 0
    for row in rows[1:]:
        pending += row["n_relapsed"]
        if pending >= MIN_CELL:
            kept.append(row)
            pending = 0
    last = rows[-1]
    if kept[-1]["day"] != last["day"]:
        kept.append({**kept[-1], "day": last["day"], "n_at_risk": last["n_at_risk"]})
    return pl.DataFrame(kept, schema=part.schema)


def drawn_value_on(pooled, day: float) -> float:
    """The drawn (pooled) curve's value on `day`: the last step at or before it."""
    before = pooled.filter(pooled["day"] <= day)
    return float(before["survival"][-1]) if before.height else 1.0


def at_risk_on(curve, day: int) -> int:
    """Responders still at risk at the start of `day`: the at-risk count of the first row on or after it."""
    later = curve.filter(curve["day"] >= day)
    return int(later["n_at_risk"][0]) if later.height else 0


def _day(value: float | None, last_shown: float) -> str:
    if value is None:
        return "NR"  # not reached within follow-up
    return f"{value:.0f}" if value <= last_shown else f">{last_shown:.0f}"


def _interval(lower: str, upper: str) -> str:
    """'15–28', or '33 to >50' where a bound is not a plain number."""
    plain = lower.isdigit() and upper.isdigit()
    return f"{lower}–{upper}" if plain else f"{lower} to {upper}"


def legend_text(s: Series, last_shown: float) -> str:
    """'Ketamine alone — median 19 d (95% CI 15–24), ~60/~110 relapsed', with what the curve withholds left out."""
    r = s.summary or {}
    median = r.get("median_relapse_free_days")
    if median is None:
        median_text = "median not reached"
    elif median <= last_shown:
        interval = _interval(
            _day(r.get("median_ci_lower_days"), last_shown), _day(r.get("median_ci_upper_days"), last_shown)
        )
        median_text = f"median {median:.0f} d (95% CI {interval})"
    else:
        median_text = "median beyond the curve shown"
    counts = f"{rounded_label(r.get('n_relapsed'))}/{rounded_label(r.get('n_responders'))} relapsed"
    return f"{s.label} — {median_text}; {counts}"


def median_cells(s: Series) -> tuple[str, str]:
    """The summary table's median and interval, withheld the same way as in the legend."""
    r = s.summary or {}
    shown = shown_part(s.curve)
    if not curve_visible(r.get("n_responders")) or shown.height == 0:
        return "withheld", "withheld"
    last = float(shown["day"].max())
    median = r.get("median_relapse_free_days")
    lower = _day(r.get("median_ci_lower_days"), last)
    if median is None:
        return "not reached", _interval(lower, "NR")
    if median > last:
        return "beyond the curve shown", "–"
    return f"{median:.0f}", _interval(lower, _day(r.get("median_ci_upper_days"), last))


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


def km_figure(panels: list[Panel]) -> tuple[object, dict[str, str]]:
    """The figure (curves over the risk table) and, per panel, why nothing is drawn when nothing is."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[1 - RISK_TABLE_SHARE, RISK_TABLE_SHARE],
        vertical_spacing=0.13,
        subplot_titles=("", "Number at risk"),
    )
    owner: list[str] = []  # the panel of each trace, for the selector
    layouts: dict[str, dict] = {}
    empty: dict[str, str] = {}
    for panel in panels:
        drawn = [(s, shown_part(s.curve)) for s in panel.series if curve_visible((s.summary or {}).get("n_responders"))]
        drawn = [(s, part) for s, part in drawn if part.height]
        last_day = max((float(part["day"].max()) for _, part in drawn), default=0.0)
        if drawn:  # the published figures stay in view beside the clinic's curves
            last_day = max([last_day, *(r.day for r in panel.references)])
        step = tick_step(last_day)
        ticks = list(range(0, int(last_day) + step, step))
        x_max = max(ticks[-1], step)  # an empty panel still gets a readable axis
        row_labels = [s.label for s, _ in drawn]
        for s, part in drawn:
            pooled = pooled_steps(part)
            days, surv = pooled["day"].to_list(), pooled["survival"].to_list()
            lo = [x if x is not None else 0.0 for x in pooled["ci_lower"].to_list()]
            hi = [x if x is not None else 0.0 for x in pooled["ci_upper"].to_list()]
            last_shown = float(days[-1])
            band_x, band_hi = _steps(days, hi)
            _, band_lo = _steps(days, lo)
            group = f"{panel.key}:{s.key}"
            fig.add_trace(
                go.Scatter(
                    x=band_x + band_x[::-1],
                    y=band_hi + band_lo[::-1],
                    fill="toself",
                    line={"width": 0},
                    fillcolor=s.colour,
                    opacity=0.12,
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=group,
                    name=f"{s.label} 95% CI",
                ),
                row=1,
                col=1,
            )
            at_risk = [rounded_label(n) for n in pooled["n_at_risk"].to_list()]
            fig.add_trace(
                go.Scatter(
                    x=days,
                    y=surv,
                    mode="lines",
                    line={"color": s.colour, "width": 2.2, "dash": s.dash, "shape": "hv"},
                    name=legend_text(s, last_shown),
                    legendgroup=group,
                    customdata=list(zip(lo, hi, at_risk, strict=True)),
                    hovertemplate=(
                        "Day %{x}<br>Relapse-free %{y:.0%} (95% CI %{customdata[0]:.0%}–%{customdata[1]:.0%})"
                        "<br>At risk %{customdata[2]}<extra>" + s.label + "</extra>"
                    ),
                ),
                row=1,
                col=1,
            )
            censored = part.filter(part["n_censored"] > 0)["day"].to_list()
            fig.add_trace(
                go.Scatter(
                    x=censored,
                    y=[drawn_value_on(pooled, d) for d in censored],
                    mode="markers",
                    marker={"symbol": "line-ns-open", "size": 9, "color": s.colour, "line": {"width": 1.5}},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=group,
                    name=f"{s.label} censored",
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=ticks,
                    y=[s.label] * len(ticks),
                    mode="text",
                    text=[rounded_label(at_risk_on(s.curve, t)) for t in ticks],
                    textfont={"color": s.colour, "size": 12},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=group,
                    name=f"{s.label} at risk",
                ),
                row=2,
                col=1,
            )
            owner += [panel.key] * 4
        if drawn and panel.references:
            refs = panel.references
            fig.add_trace(
                go.Scatter(
                    x=[r.day for r in refs],
                    y=[r.value for r in refs],
                    mode="markers",
                    marker={
                        "symbol": "diamond-open",
                        "size": 12,
                        "color": [r.colour or "#444" for r in refs],
                        "line": {"width": 2},
                    },
                    name="◇ published figures (hover for the study)",
                    customdata=[[r.label, r.citation, r.population] for r in refs],
                    hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>%{customdata[2]}<extra></extra>",
                ),
                row=1,
                col=1,
            )
            owner.append(panel.key)
        if not drawn:
            reasons = [
                f"{s.label}: fewer than {MIN_CELL} responders"
                for s in panel.series
                if not curve_visible((s.summary or {}).get("n_responders"))
            ]
            empty[panel.key] = (
                f"No curve to show for {panel.label}: "
                + ("; ".join(reasons) if reasons else "no responders with follow-up")
                + ". Curves are drawn only for 11 or more responders."
            )
        layouts[panel.key] = {
            "title.text": panel.title,
            # a little room left of day 0, so the risk table's first column is not cut by the row labels
            "xaxis.range": [-0.04 * x_max, x_max * 1.03],
            "xaxis2.range": [-0.04 * x_max, x_max * 1.03],
            "xaxis.tickvals": ticks,
            "xaxis2.tickvals": ticks,
            "yaxis2.categoryarray": row_labels[::-1],
            "annotations": _annotations(fig, empty.get(panel.key)),
        }
    first = panels[0].key if panels else None
    for trace, key in zip(fig.data, owner, strict=True):
        trace.visible = key == first
    buttons = [
        {"label": p.label, "method": "update", "args": [{"visible": [k == p.key for k in owner]}, layouts[p.key]]}
        for p in panels
    ]
    fig.update_layout(
        height=700,
        margin={"l": 190, "r": 30, "t": 90, "b": 40},
        legend={"orientation": "h", "y": -0.06, "x": 0, "yanchor": "top", "font": {"size": 12}},
        updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.12, "xanchor": "right", "showactive": True}]
        if len(panels) > 1
        else [],
        hovermode="closest",
        plot_bgcolor="white",
    )
    fig.update_yaxes(title_text="Relapse-free", tickformat=".0%", range=[0, 1.03], gridcolor="#e5e5e5", row=1, col=1)
    fig.update_yaxes(type="category", showgrid=False, ticks="", row=2, col=1)
    fig.update_xaxes(
        showticklabels=True, gridcolor="#eeeeee", title_text="Days since the last induction infusion", row=1, col=1
    )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=2, col=1)
    if first is not None:
        fig.update_layout(
            **{
                k.replace(".", "_"): v
                for k, v in layouts[first].items()
                if k not in ("annotations", "title.text", "yaxis2.categoryarray")
            }
        )
        fig.update_layout(title_text=layouts[first]["title.text"], annotations=layouts[first]["annotations"])
        fig.update_yaxes(categoryorder="array", categoryarray=layouts[first]["yaxis2.categoryarray"], row=2, col=1)
    return fig, empty


def _annotations(fig, empty_message: str | None) -> list[dict]:
    """The subplot title over the risk table, plus the empty-panel message inside the plot area."""
    kept = [a.to_plotly_json() for a in fig.layout.annotations if a.text == "Number at risk"]
    if empty_message:
        kept.append(
            {
                "text": empty_message,
                "xref": "x domain",
                "yref": "y domain",
                "x": 0.5,
                "y": 0.55,
                "showarrow": False,
                "font": {"size": 14, "color": "#444"},
                "bgcolor": "#fff6dd",
            }
        )
    return kept
