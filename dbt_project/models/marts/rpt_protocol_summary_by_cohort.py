"""Per cohort x protocol x instrument: courses, evaluable, response and remission rates, median relapse-free days
(from the Kaplan-Meier table) and the log-rank p-value against the reference protocol (the protocols seed's
`is_reference`, ketamine alone by default; lifelines), within the cohort."""

COLUMNS = [
    "cohort_dimension",
    "cohort",
    "cohort_label",
    "protocol",
    "instrument",
    "rater",
    "n_courses",
    "n_evaluable",
    "n_responders",
    "n_remitters",
    "n_worse",
    "n_provisional",
    "response_rate",
    "remission_rate",
    "worsening_rate",
    "n_relapsed",
    "median_relapse_free_days",
    "median_ci_lower_days",
    "median_ci_upper_days",
    "reference_protocol",
    "logrank_p_vs_reference",
]


def _true(series):
    """Nullable booleans from DuckDB: NULL is not true."""
    return series.fillna(False).astype(bool)


# The curve is exp(sum of logs): a survival of exactly one half arrives as 0.5000000000000001.
HALF = 0.5 + 1e-9


def _first_day_at_or_below_half(curve, column):
    """The first day a curve reaches 0.5 or below (a bound that is NULL once survival is 0 counts as 0)."""
    reached = curve[curve[column].fillna(0.0) <= HALF]
    return float(reached["day"].min()) if len(reached) else None


def _logrank_p(mine, reference):
    from lifelines.statistics import logrank_test

    if not len(mine) or not len(reference) or not (_true(mine["relapsed"]).any() or _true(reference["relapsed"]).any()):
        return None
    result = logrank_test(
        mine["days_to_relapse_or_censor"].astype(float),
        reference["days_to_relapse_or_censor"].astype(float),
        event_observed_A=_true(mine["relapsed"]),
        event_observed_B=_true(reference["relapsed"]),
    )
    return float(result.p_value)


def model(dbt, session):
    dbt.config(materialized="table")
    import pandas as pd

    include_provisional = str(dbt.config.get("include_provisional_outcomes", False)).lower() == "true"
    cohorts = dbt.ref("int_course_cohorts_assigned").df()
    outcomes = dbt.ref("fct_course_outcomes").df().merge(cohorts, on="course_id", how="inner")
    # what rates and curves count: final evaluable outcomes (and, when switched on, provisional ones)
    outcomes["counted"] = (outcomes["evaluability"] == "evaluable") | (
        include_provisional & (outcomes["evaluability"] == "provisional") & outcomes["is_responder"].notna()
    )
    survival = dbt.ref("rpt_relapse_free_survival_by_cohort").df()
    responders = outcomes[_true(outcomes["is_responder"]) & outcomes["counted"]]
    protocols = dbt.ref("protocols").df()
    reference = next(iter(protocols.loc[_true(protocols["is_reference"]), "protocol"]), None)

    rows = []
    keys = ["cohort_dimension", "cohort", "cohort_label", "protocol", "instrument"]
    for (dimension, cohort, label, protocol, instrument), group in outcomes.groupby(keys, sort=True):
        evaluable = group[group["counted"]]
        remission_known = evaluable[evaluable["is_remitter"].notna()]
        curve = survival[
            (survival["cohort_dimension"] == dimension)
            & (survival["cohort"] == cohort)
            & (survival["protocol"] == protocol)
            & (survival["instrument"] == instrument)
        ]
        p_value = None
        if reference is not None and protocol != reference:
            same_scale = responders[
                (responders["cohort_dimension"] == dimension)
                & (responders["cohort"] == cohort)
                & (responders["instrument"] == instrument)
            ]
            p_value = _logrank_p(
                same_scale[same_scale["protocol"] == protocol], same_scale[same_scale["protocol"] == reference]
            )
        rows.append(
            {
                "cohort_dimension": dimension,
                "cohort": cohort,
                "cohort_label": label,
                "protocol": protocol,
                "instrument": instrument,
                "rater": group["rater"].iloc[0],
                "n_courses": int(group["course_id"].nunique()),
                "n_evaluable": len(evaluable),
                "n_responders": int(_true(evaluable["is_responder"]).sum()),
                "n_remitters": int(_true(remission_known["is_remitter"]).sum()),
                "n_worse": int(_true(evaluable["is_worse"]).sum()),
                "n_provisional": int((group["evaluability"] == "provisional").sum()),
                "response_rate": _true(evaluable["is_responder"]).mean() if len(evaluable) else None,
                "remission_rate": _true(remission_known["is_remitter"]).mean() if len(remission_known) else None,
                "worsening_rate": _true(evaluable["is_worse"]).mean() if len(evaluable) else None,
                "n_relapsed": int(_true(evaluable["relapsed"]).sum()),
                "median_relapse_free_days": _first_day_at_or_below_half(curve, "survival"),
                # the median's 95% interval: where the interval's bounds cross 0.5 (Brookmeyer-Crowley, as
                # lifelines' median_survival_times of the confidence interval and R's survfit)
                "median_ci_lower_days": _first_day_at_or_below_half(curve, "ci_lower"),
                "median_ci_upper_days": _first_day_at_or_below_half(curve, "ci_upper"),
                "reference_protocol": reference,
                "logrank_p_vs_reference": p_value,
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype(
        {
            c: "float64"
            for c in (
                "response_rate",
                "remission_rate",
                "worsening_rate",
                "median_relapse_free_days",
                "median_ci_lower_days",
                "median_ci_upper_days",
                "logrank_p_vs_reference",
            )
        }
    )
