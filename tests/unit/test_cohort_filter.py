"""The pages' cohort filter on hand-made by-cohort marts: which cohorts are offered, in what order, and what
each one's section is drawn from."""

from __future__ import annotations

import re

import polars as pl

from dashboards.cohorts import EVERY_COURSE, Cohort, cohorts_of, filtered_sections, sliced
from dashboards.relapse import relapse_page
from dashboards.response import response_page

COHORTS = [
    ("all", "all", "All courses", 120, 60),
    ("start_quarter", "2026-Q1", "Started 2026 Q1", 50, 24),
    ("start_quarter", "2025-Q4", "Started 2025 Q4", 62, 31),
    ("start_quarter", "2026-Q2", "Started 2026 Q2", 8, 5),  # too few: 5 responders of 8
    ("diagnosis", "substance_use", "Substance use", 40, 19),
    ("diagnosis", "ptsd", "PTSD", 30, 14),
]


def _keys(dimension: str, cohort: str, label: str) -> dict:
    return {
        "cohort_dimension": dimension,
        "cohort": cohort,
        "cohort_label": label,
        "protocol": "ketamine_only",
        "instrument": "madrs",
    }


def _summary() -> pl.DataFrame:
    rows = []
    for dimension, cohort, label, evaluable, responders in COHORTS:
        rows.append(
            {
                **_keys(dimension, cohort, label),
                "rater": "clinician",
                "n_courses": evaluable,
                "n_evaluable": evaluable,
                "n_responders": responders,
                "n_remitters": responders // 2,
                "n_worse": 0,
                "n_provisional": 0,
                "response_rate": responders / evaluable,
                "remission_rate": responders // 2 / evaluable,
                "worsening_rate": 0.0,
                "n_relapsed": responders // 2,
                "median_relapse_free_days": 20.0,
                "median_ci_lower_days": 14.0,
                "median_ci_upper_days": 28.0,
                "reference_protocol": "ketamine_only",
                "logrank_p_vs_reference": None,
            }
        )
    return pl.DataFrame(rows)


def _survival() -> pl.DataFrame:
    """Each cohort's curve: every responder at risk on day 0, half of them relapsed on day 20."""
    rows = []
    for dimension, cohort, label, _, responders in COHORTS:
        for day, at_risk, relapsed, survival in ((0, responders, 0, 1.0), (20, responders, responders // 2, 0.5)):
            rows.append(
                {
                    **_keys(dimension, cohort, label),
                    "day": day,
                    "n_at_risk": at_risk,
                    "n_relapsed": relapsed,
                    "n_censored": 0,
                    "survival": survival,
                    "ci_lower": survival - 0.1 if day else 1.0,
                    "ci_upper": min(1.0, survival + 0.1),
                }
            )
    return pl.DataFrame(rows)


def _marts() -> dict:
    summary, survival = _summary(), _survival()
    every = (pl.col("cohort_dimension") == "all") & (pl.col("cohort") == "all")
    cohort_columns = ("cohort_dimension", "cohort", "cohort_label")
    return {
        "rpt_protocol_summary_by_cohort": summary,
        "rpt_relapse_free_survival_by_cohort": survival,
        "rpt_protocol_summary": summary.filter(every).drop(cohort_columns),
        "rpt_relapse_free_survival": survival.filter(every).drop(cohort_columns),
        "rpt_outcome_rates_by_week": None,
        "rpt_score_trajectories": None,
        "rpt_rater_concordance": None,
        "dim_protocols": None,
        "dim_instruments": None,
    }


def test_cohorts_come_every_course_first_then_quarters_in_time_order_then_diagnoses_by_name():
    cohorts = cohorts_of(_marts(), "rpt_protocol_summary_by_cohort")
    assert [c.value for c in cohorts] == [
        "all:all",
        "start_quarter:2025-Q4",
        "start_quarter:2026-Q1",
        "start_quarter:2026-Q2",
        "diagnosis:ptsd",
        "diagnosis:substance_use",
    ]
    assert cohorts_of({}, "rpt_protocol_summary_by_cohort") == [EVERY_COURSE]  # a warehouse without the marts


def test_a_cohorts_marts_are_its_own_rows_without_the_cohort_columns():
    marts = sliced(
        _marts(), Cohort("diagnosis", "ptsd", "PTSD"), {"rpt_protocol_summary": "rpt_protocol_summary_by_cohort"}
    )
    assert marts["rpt_protocol_summary"].to_dicts() == [
        {k: v for k, v in r.items() if not k.startswith("cohort")}
        for r in _summary().to_dicts()
        if r["cohort"] == "ptsd"
    ]
    assert marts["rpt_relapse_free_survival"]["n_at_risk"].to_list() == [60, 60]  # not replaced: the whole clinic


def test_a_cohort_with_nothing_to_show_is_not_offered_and_one_cohort_needs_no_select():
    cohorts = [EVERY_COURSE, Cohort("start_quarter", "2026-Q2", "Started 2026 Q2"), Cohort("diagnosis", "ptsd", "PTSD")]
    html = filtered_sections(cohorts, lambda c: (f"<p>{c.label}</p>", c.key != "2026-Q2"), "f", "Rates")
    assert re.findall(r'<option value="([^"]+)"', html) == ["all:all", "diagnosis:ptsd"]
    assert "1 more cohort is not offered" in html
    assert re.findall(r'class="cohort-section( off-screen)?" data-cohort="([^"]+)"', html) == [
        ("", "all:all"),
        (" off-screen", "diagnosis:ptsd"),
    ]
    alone = filtered_sections(cohorts, lambda c: ("<p>only</p>", c.is_all), "f", "Rates")
    assert alone == "<p>only</p>"


def test_the_pages_draw_each_offered_cohort_from_its_own_rows():
    marts = _marts()
    relapse = relapse_page(marts, "today")
    offered = re.findall(r'<option value="([^"]+)"', relapse)
    # 2026-Q2 has 5 responders: no curve, no rate, so not offered; PTSD's 14 responders draw a curve
    assert offered == [
        "all:all",
        "start_quarter:2025-Q4",
        "start_quarter:2026-Q1",
        "diagnosis:ptsd",
        "diagnosis:substance_use",
    ]
    assert 'id="relapse-km-diagnosis-ptsd"' in relapse and 'id="median-madrs-diagnosis-ptsd"' in relapse
    ptsd_table = re.search(r'id="median-madrs-diagnosis-ptsd">(.*?)</table>', relapse).group(1)
    whole_table = re.search(r'id="median-madrs">(.*?)</table>', relapse).group(1)
    assert "<td>~10</td>" not in ptsd_table and "<td>11–14</td>" in ptsd_table  # 14 responders
    assert "<td>~60</td>" in whole_table
    response = response_page(marts, "today")
    assert re.findall(r'<option value="([^"]+)"', response) == offered
    rates = re.search(r'id="rates-table-start_quarter-2025-Q4">(.*?)</table>', response).group(1)
    # 31 of 62: the rate, and the denominator rounded as every count is (an exact 62 beside 50% gives 31, and
    # the quarters' exact denominators would add up to the withheld quarter's 8)
    assert "50% (" in rates and "<td>~60</td>" in rates and "<td>62</td>" not in rates
