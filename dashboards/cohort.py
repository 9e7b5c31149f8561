"""The cohort and data-health page: courses, patients and adherence per protocol; the gates and quarantine."""

from __future__ import annotations

from dashboards.display import display_from
from dashboards.page import clinic_time, figure_html, page, table_html
from dashboards.suppression import MIN_CELL, count_label, rate_visible, rounded_label


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
        courses_text, patients_text = paired_counts(n, r["n_patients"])
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
        for r in (
            # by stage, the largest reasons first (a table holds no order of its own)
            quarantine.sort(["stage", "records"], descending=[False, True]).iter_rows(named=True)
            if quarantine is not None
            else []
        )
    ]
    body = (
        figure_html(fig, "cohort-courses")
        + table_html(
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
        + table_html(["", ""], status, "health-table")
        + '<p class="meta">A gate fails only on a critical check. Row-level checks quarantine the records they '
        "catch (below, by reason) and the night goes on, so the Great Expectations Data Docs list such a check as "
        '"Failed" with its count of records even on a night whose gate passed.</p>'
        + "<h3>Quarantine by reason</h3>"
        + table_html(["Stage", "Reason", "Records"], q_rows, "quarantine-table")
    )
    return page(
        "Cohort and data health",
        data_as_of,
        body,
        "Adherent: six induction infusions within 42 days and no psychotherapy on an infusion day.",
    )


def paired_counts(larger: int | None, smaller: int | None) -> tuple[str, str]:
    """Two counts shown side by side (courses and patients): if their difference is 1-10, both are rounded,
    so the difference cannot be read off."""
    if larger is not None and smaller is not None and 1 <= larger - smaller < MIN_CELL:
        return rounded_label(larger), rounded_label(smaller)
    return count_label(larger), count_label(smaller)
