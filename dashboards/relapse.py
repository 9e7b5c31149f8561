"""The relapse page: Kaplan-Meier curves per protocol and scale, one protocol's clinician- and self-rated
curves, medians with their intervals and the log-rank test."""

from __future__ import annotations

import html

from dashboards.cohorts import Cohort, cohorts_of, filtered_sections, sliced
from dashboards.display import Display, display_from
from dashboards.page import figure_html, p_value_text, page, summary_row, table_html
from dashboards.suppression import MIN_CELL, curve_visible, rounded_label

BY_COHORT = {
    "rpt_relapse_free_survival": "rpt_relapse_free_survival_by_cohort",
    "rpt_protocol_summary": "rpt_protocol_summary_by_cohort",
}


def relapse_page(marts: dict, data_as_of: str) -> str:
    d = display_from(marts)

    def render(cohort: Cohort) -> tuple[str, bool]:
        return _cohort_section(sliced(marts, cohort, BY_COHORT), d, cohort.suffix)

    body = filtered_sections(
        cohorts_of(marts, "rpt_protocol_summary_by_cohort"), render, "relapse-cohort", "Curves, medians and tests"
    )
    return page(
        "Relapse",
        data_as_of,
        body,
        "Relapse among responders: a single-visit threshold, two consecutive losses of response, a booster "
        "after the endpoint or a new course, counted from the last induction infusion; 95% bands on the "
        "log(−log) scale, the median's interval where those bands cross 50%.",
    )


def _cohort_section(marts: dict, d: Display, suffix: str) -> tuple[str, bool]:
    """One cohort's curves, medians and log-rank tests, and whether any curve of it can be shown."""
    import polars as pl

    from dashboards.km import Panel, Reference, Series, km_figure, median_cells

    km, summary = marts["rpt_relapse_free_survival"], marts["rpt_protocol_summary"]
    present = set(km["instrument"].to_list()) if km is not None else set()
    instruments = [i for i in d.instruments if i in present]

    curve_of = km.sort("day").partition_by(["instrument", "protocol"], as_dict=True) if km is not None else {}

    def series(protocol: str, inst: str, label: str, dash: str = "solid") -> Series | None:
        curve = curve_of.get((inst, protocol))
        if curve is None or curve.height == 0:
            return None
        return Series(protocol, label, d.colour(protocol), curve, summary_row(summary, protocol, inst), dash)

    published = marts.get("dim_published_figures")
    on_curves = (
        published.filter(pl.col("measure").is_in(["median_relapse_free_days", "relapse_free_at_day"]))
        if published is not None
        else None
    )

    def references(inst: str) -> list[Reference]:
        if on_curves is None:
            return []
        return [
            Reference(r["day"], r["value"], r["label"], r["citation"], r["population"], d.colour(r["protocol"]))
            for r in on_curves.filter(pl.col("instrument") == inst).sort("day").iter_rows(named=True)
            if r["protocol"] in d.protocols
        ]

    by_instrument = [
        Panel(
            inst,
            d.label(inst),
            f"Relapse-free survival among responders — {d.label(inst)}",
            [s for p in d.protocols if (s := series(p, inst, d.label(p))) is not None],
            references(inst),
        )
        for inst in instruments
    ]
    fig, _ = km_figure(by_instrument)
    curves = {(panel.key, one.key): one for panel in by_instrument for one in panel.series}

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
            one = curves.get((inst, protocol))
            if one is None or one.summary is None:
                continue
            r = one.summary
            visible = curve_visible(r["n_responders"])
            median, interval = median_cells(one)
            rows.append(
                [
                    d.label(protocol),
                    rounded_label(r["n_responders"]),
                    rounded_label(r["n_relapsed"]) if visible else "withheld",
                    median,
                    interval,
                    p_value_text(r["logrank_p_vs_reference"], protocol, d.reference) if visible else "withheld",
                ]
            )
        display = "block" if inst == instruments[0] else "none"
        notes = [
            f"{d.label(p)}: curve withheld (fewer than {MIN_CELL} responders)."
            for p in d.protocols
            if (r := summary_row(summary, p, inst)) is not None and not curve_visible(r["n_responders"])
        ]
        sections.append(
            f'<div class="instrument-block" data-instrument="{html.escape(d.label(inst))}" style="display:{display}">'
            f"<h3>{html.escape(d.label(inst))}</h3>"
            + table_html(
                [
                    "Protocol",
                    "Responders",
                    "Relapsed",
                    "Median relapse-free days",
                    "95% CI",
                    f"Log-rank p vs {d.label(d.reference)}",
                ],
                rows,
                f"median-{inst}{suffix}",
            )
            + "".join(f'<p class="note withheld">{html.escape(n)}</p>' for n in notes)
            + "</div>"
        )
    rounding = (
        '<p class="meta">Numbers at risk, responders and relapses are rounded to the nearest 10, so that no count '
        "from 1 to 10 can be derived by subtracting one from another; a curve stops where fewer than 11 remain at "
        "risk, and a median or interval bound beyond that point is not printed (&gt; the last day shown). "
        "A curve steps down only once 11 or more relapses have accumulated since its last step (to the exact "
        "estimate of that day), so no drop reveals fewer than 11; between steps it may sit a little above the "
        "exact estimate, and it can cross 50% a few days after the median printed, which is exact. "
        "Ticks on a curve mark censored courses; NR: not reached. Diamonds (◇) are published figures in the "
        "protocol's colour -- a study's median on the 50% line, or its share still responding on a day; hover "
        "for the study and its population (trials rarely give boosters, which count as relapses here).</p>"
    )
    # the instrument menu of the figure also switches the table below it (this cohort's only)
    switcher = f"""<script>(function(){{var f=document.getElementById('relapse-km{suffix}');if(!f||!f.on)return;
f.on('plotly_buttonclicked',function(e){{var i=e.button.label;
document.querySelectorAll('#relapse-tables{suffix} .instrument-block')
.forEach(function(b){{b.style.display=(b.dataset.instrument===i)?'block':'none';}});}});}})();</script>"""
    body = (
        figure_html(fig, f"relapse-km{suffix}")
        + "<h2>Median relapse-free days and log-rank test</h2>"
        + rounding
        + f'<div id="relapse-tables{suffix}">'
        + "".join(sections)
        + "</div>"
        + switcher
        + "<h2>Clinician-rated and self-rated, one protocol</h2>"
        + figure_html(raters_fig, f"relapse-raters{suffix}")
    )
    showable = summary is not None and any(curve_visible(n) for n in summary["n_responders"].to_list())
    return body, showable
