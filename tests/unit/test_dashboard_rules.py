"""Fast unit tests of what the pages show, on hand-made marts: the relapse figure's risk table, medians and
censor marks, the weekly response lines, paired counts, clinic time and the night's status banner."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import polars as pl
import pytest

from dashboards.cohort import paired_counts
from dashboards.km import Panel, Series, km_figure, legend_text, median_cells, pooled_steps
from dashboards.page import clinic_time
from dashboards.response import response_page, wilson_interval
from dashboards.status import read_status, record_failed, record_published


def _curve(rows: list[tuple[int, int, int, int, float]]) -> pl.DataFrame:
    """(day, at risk, relapsed, censored, survival); bands of +-0.05 clipped to [0, 1]."""
    return pl.DataFrame(
        {
            "day": [r[0] for r in rows],
            "n_at_risk": [r[1] for r in rows],
            "n_relapsed": [r[2] for r in rows],
            "n_censored": [r[3] for r in rows],
            "survival": [r[4] for r in rows],
            "ci_lower": [max(0.0, r[4] - 0.05) for r in rows],
            "ci_upper": [min(1.0, r[4] + 0.05) for r in rows],
        }
    )


# 40 responders: 10 relapse on day 10, 2 censored on day 20, 10 relapse on day 30 (at risk 28 -> survival
# 0.75 * 18/28), then 12 more relapses on day 50 with only 18 at risk, and the last 6 at risk past day 60.
CURVE = _curve(
    [
        (0, 40, 0, 0, 1.0),
        (10, 40, 10, 0, 0.75),
        (20, 30, 0, 2, 0.75),
        (30, 28, 10, 0, 0.75 * 18 / 28),
        (50, 18, 12, 0, 0.75 * 18 / 28 * 6 / 18),
        (70, 6, 0, 6, 0.75 * 18 / 28 * 6 / 18),
    ]
)
SUMMARY = {
    "n_responders": 40,
    "n_relapsed": 32,
    "median_relapse_free_days": 50.0,
    "median_ci_lower_days": 30.0,
    "median_ci_upper_days": None,
}


def _figure_json(fig) -> dict:
    return json.loads(fig.to_json())


def test_the_risk_table_sits_under_the_same_ticks_and_the_curve_stops_below_eleven_at_risk():
    fig, empty = km_figure([Panel("madrs", "MADRS", "t", [Series("k", "Ketamine alone", "#000000", CURVE, SUMMARY)])])
    data = _figure_json(fig)
    line, censor, table = data["data"][1], data["data"][2], data["data"][3]
    # shown while 11 or more are at risk: days 0-50 (18 at risk on day 50), not day 70 (6); a step only where
    # 11 or more relapses have accumulated: not day 10 (10 relapses), day 30 (20), day 50 (12)
    assert line["x"] == [0, 30, 50]
    assert line["y"] == [1.0, pytest.approx(0.75 * 18 / 28), pytest.approx(0.75 * 18 / 28 * 6 / 18)]
    # censor marks where courses were censored, at the drawn curve's height (no step drawn before day 30)
    assert censor["x"] == [20] and censor["y"] == [1.0]
    ticks = data["layout"]["xaxis"]["tickvals"]
    assert ticks == [0, 14, 28, 42, 56] and table["x"] == ticks and data["layout"]["xaxis2"]["tickvals"] == ticks
    # at risk at the start of each tick day, rounded to 10; below 11 as <11
    assert table["text"] == ["~40", "~30", "~30", "~20", "<11"]
    assert data["layout"]["xaxis"]["range"] == data["layout"]["xaxis2"]["range"]
    assert empty == {}


def test_a_curve_steps_only_once_eleven_relapses_have_accumulated_and_runs_flat_to_the_last_day_shown():
    # 60 responders; single relapses on days 5, 9 and 12 (a step of 1/60 would reveal one), then 9 on day 20
    # (12 accumulated: the first step, at day 20's exact value), 3 on day 30 and nothing after: the curve
    # holds day 20's value to day 40, the last day shown (3 relapses never drawn as a step of their own)
    survival, rows = 1.0, []
    for day, at_risk, relapsed in (
        (0, 60, 0),
        (5, 60, 1),
        (9, 59, 1),
        (12, 58, 1),
        (20, 57, 9),
        (30, 48, 3),
        (40, 45, 0),
    ):
        survival *= 1 - relapsed / at_risk
        rows.append((day, at_risk, relapsed, 0 if day < 40 else 45, survival))
    pooled = pooled_steps(_curve(rows))
    assert pooled["day"].to_list() == [0, 20, 40]
    day_20 = (59 / 60) * (58 / 59) * (57 / 58) * (48 / 57)
    assert pooled["survival"].to_list() == [1.0, pytest.approx(day_20), pytest.approx(day_20)]
    assert pooled["n_at_risk"].to_list() == [60, 57, 45]
    fig, _ = km_figure([Panel("madrs", "MADRS", "t", [Series("k", "K", "#000", _curve(rows), SUMMARY)])])
    censor = _figure_json(fig)["data"][2]
    assert censor["x"] == [40] and censor["y"] == [pytest.approx(day_20)]


def test_the_median_and_its_interval_are_printed_only_within_the_curve_shown():
    s = Series("k", "Ketamine alone", "#000", CURVE, SUMMARY)
    assert legend_text(s, 50) == "Ketamine alone — median 50 d (95% CI 30 to NR); ~30/~40 relapsed"
    assert median_cells(s) == ("50", "30 to NR")
    both_inside = Series("k", "K", "#000", CURVE, {**SUMMARY, "median_ci_upper_days": 50.0})
    assert median_cells(both_inside) == ("50", "30–50")
    beyond = Series("k", "Ketamine alone", "#000", CURVE, {**SUMMARY, "median_relapse_free_days": 70.0})
    assert median_cells(beyond) == ("beyond the curve shown", "–")
    assert "median beyond the curve shown" in legend_text(beyond, 50)
    upper_beyond = Series("k", "K", "#000", CURVE, {**SUMMARY, "median_ci_upper_days": 70.0})
    assert median_cells(upper_beyond) == ("50", "30 to >50")
    not_reached = Series("k", "K", "#000", CURVE, {**SUMMARY, "median_relapse_free_days": None})
    assert median_cells(not_reached)[0] == "not reached"
    few = Series("k", "K", "#000", CURVE, {**SUMMARY, "n_responders": 9})
    assert median_cells(few) == ("withheld", "withheld")


def test_an_empty_selection_says_why_inside_the_plot():
    few = Series("k", "Ketamine alone", "#000", CURVE, {**SUMMARY, "n_responders": 9})
    fig, empty = km_figure([Panel("pcl5", "PCL-5", "t", [few])])
    assert "fewer than 11 responders" in empty["pcl5"]
    texts = [a["text"] for a in _figure_json(fig)["layout"]["annotations"]]
    assert any("No curve to show for PCL-5" in t for t in texts)


def _weekly_marts() -> dict:
    weekly = pl.DataFrame(
        {
            "protocol": ["ketamine_only"] * 5,
            "instrument": ["madrs"] * 5,
            "week": [0, 1, 2, 3, 4],
            "n_assessed": [40, 40, 30, 20, 40],
            "n_responders": [0, 12, 5, 0, 20],  # week 2: 5 responders (withheld); week 3: 0 of 20
            "n_remitters": [0, 0, 0, 0, 0],
            "response_rate": [0.0, 0.3, 5 / 30, 0.0, 0.5],
            "remission_rate": [0.0] * 5,
        }
    )
    dims = pl.DataFrame(
        {
            "protocol": ["ketamine_only"],
            "protocol_label": ["Ketamine alone"],
            "display_order": [1],
            "colour": ["#000000"],
            "is_reference": [True],
        }
    )
    instruments = pl.DataFrame(
        {
            "instrument": ["madrs"],
            "display_label": ["MADRS (clinician)"],
            "rater": ["clinician"],
            "display_order": [1],
            "concordance_partner": [None],
            "remission_max": [10.0],
            "single_visit_relapse_min": [22.0],
        }
    )
    return {
        "rpt_protocol_summary": None,
        "rpt_outcome_rates_by_week": weekly,
        "rpt_score_trajectories": None,
        "rpt_rater_concordance": None,
        "dim_protocols": dims,
        "dim_instruments": instruments,
    }


def test_weekly_lines_skip_the_baseline_week_and_stop_at_the_first_week_withheld_after_they_start():
    page = response_page(_weekly_marts(), "1 Oct 2026")
    figure = re.search(r'Plotly\.newPlot\(\s*"response-by-week",\s*(\[.*?\]),\s*\{', page, re.S)
    assert figure, "the weekly figure is missing"
    traces = json.loads(figure.group(1))
    # week 0 is the baseline; week 2 is withheld (5 responders) and the line stops there, so the 0% of week 3
    # and the 50% of week 4 are not drawn as isolated points after the gap
    assert [t["x"] for t in traces] == [[1]]
    # denominators beside rates are rounded like every other count (an exact 40 with 30% gives 12 responders)
    assert traces[0]["customdata"] == ["30% (95% CI 18%–45%), ~40 assessed"]


def test_a_weekly_line_starts_at_its_first_week_that_can_be_shown():
    """Few respond in the first weeks: a week 1 with 4 responders is withheld, and the line starts at week 2
    (it used to stop before it began, so the protocol vanished from the figure)."""
    marts = _weekly_marts()
    marts["rpt_outcome_rates_by_week"] = marts["rpt_outcome_rates_by_week"].with_columns(
        n_responders=pl.Series([0, 4, 12, 15, 5]), response_rate=pl.Series([0.0, 0.1, 0.4, 0.75, 0.125])
    )
    page = response_page(marts, "1 Oct 2026")
    traces = json.loads(re.search(r'Plotly\.newPlot\(\s*"response-by-week",\s*(\[.*?\]),\s*\{', page, re.S).group(1))
    # week 1: 4 of 40 (withheld, skipped); weeks 2-3: 12 of 30, 15 of 20 (complement 5: withheld -> stop)
    assert [t["x"] for t in traces] == [[2]]


def test_wilson_interval_matches_a_hand_computed_value():
    # 12/40, z = 1.96: denominator 1 + z^2/n = 1.096037; centre (0.3 + z^2/80) / 1.096037 = 0.317525;
    # half-width z * sqrt(0.21/40 + z^2/6400) / 1.096037 = 0.136778 (hand-computed)
    lo, hi = wilson_interval(12, 40)
    assert lo == pytest.approx(0.180747, abs=1e-5) and hi == pytest.approx(0.454303, abs=1e-5)


def test_courses_and_patients_whose_difference_is_small_are_both_rounded():
    assert paired_counts(99, 98) == ("~100", "~100")
    assert paired_counts(130, 100) == ("130", "100")
    assert paired_counts(99, 99) == ("99", "99")


def test_times_are_shown_in_clinic_time():
    assert clinic_time(datetime(2026, 10, 2, 6, 59, 59, tzinfo=UTC), "America/Los_Angeles") == "1 Oct 2026, 23:59 PDT"
    assert clinic_time("2026-12-02T05:12:50+00:00", "America/Los_Angeles") == "1 Dec 2026, 21:12 PST"


def test_a_failed_night_keeps_the_published_time_and_names_its_step(tmp_path):
    record_published(tmp_path, "2026-12-01T10:00:00+00:00")
    assert read_status(tmp_path)["last_attempt_ok"] is True
    record_failed(tmp_path, "validate_raw")
    status = read_status(tmp_path)
    assert status["last_attempt_ok"] is False and status["failed_step"] == "validate_raw"
    assert status["published_at"] == "2026-12-01T10:00:00+00:00"
    assert (tmp_path / "status.js").read_text().startswith("window.OUTCOMES_STATUS = ")


def test_published_figures_are_drawn_on_their_scales_panel_and_kept_in_view():
    from dashboards.km import Reference

    murrough = Reference(18, 0.5, "Murrough 2013: median 18 d", "Murrough et al. 2013", "TRD", "#000000")
    wilkinson = Reference(84, 0.5, "Wilkinson 2017: median ~12 weeks", "Wilkinson et al. 2017", "TRD", "#0072B2")
    series = Series("k", "Ketamine alone", "#000000", CURVE, SUMMARY)
    fig, _ = km_figure(
        [
            Panel("madrs", "MADRS", "t", [series], [murrough, wilkinson]),
            Panel("phq9", "PHQ-9", "t", [Series("k", "Ketamine alone", "#000000", CURVE, SUMMARY)]),
        ]
    )
    data = _figure_json(fig)
    published = [t for t in data["data"] if t.get("name", "").startswith("◇")]
    assert len(published) == 1 and published[0]["visible"] is True  # on the first panel, shown with it
    assert published[0]["x"] == [18, 84] and published[0]["y"] == [0.5, 0.5]
    assert published[0]["customdata"][0] == ["Murrough 2013: median 18 d", "Murrough et al. 2013", "TRD"]
    # the axis reaches day 84 though the curve stops at day 50, and the risk table's ticks follow it
    assert data["layout"]["xaxis"]["range"][1] >= 84 and data["layout"]["xaxis"]["tickvals"][-1] >= 84
    # the PHQ-9 panel's button hides the published figures of MADRS
    phq9 = data["layout"]["updatemenus"][0]["buttons"][1]["args"][0]["visible"]
    assert phq9[data["data"].index(published[0])] is False
