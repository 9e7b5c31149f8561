"""Per protocol x instrument: courses, evaluable, response and remission rates, median relapse-free days
(from the Kaplan-Meier table) and the log-rank p-value against ketamine alone (lifelines)."""


def model(dbt, session):
    dbt.config(materialized="table")
    import pandas as pd
    from lifelines.statistics import logrank_test

    outcomes = dbt.ref("fct_course_outcomes").df()
    survival = dbt.ref("rpt_relapse_free_survival").df()

    rows = []
    for (protocol, instrument), group in outcomes.groupby(["protocol", "instrument"], sort=True):
        evaluable = group[group["is_responder"].notna()]
        remission_known = evaluable[evaluable["is_remitter"].notna()]
        curve = survival[(survival["protocol"] == protocol) & (survival["instrument"] == instrument)]
        below_half = curve[curve["survival"] <= 0.5]
        median = float(below_half["day"].min()) if len(below_half) else None

        p_value = None
        if protocol != "ketamine_only":
            mine = group[group["is_responder"] == True]  # noqa: E712 - pandas nullable booleans
            reference = outcomes[
                (outcomes["protocol"] == "ketamine_only")
                & (outcomes["instrument"] == instrument)
                & (outcomes["is_responder"] == True)
            ]  # noqa: E712
            if len(mine) and len(reference) and (mine["relapsed"].sum() + reference["relapsed"].sum()) > 0:
                result = logrank_test(
                    mine["days_to_relapse_or_censor"].astype(float),
                    reference["days_to_relapse_or_censor"].astype(float),
                    event_observed_A=mine["relapsed"].astype(bool),
                    event_observed_B=reference["relapsed"].astype(bool),
                )
                p_value = float(result.p_value)

        rows.append(
            {
                "protocol": protocol,
                "instrument": instrument,
                "rater": group["rater"].iloc[0],
                "n_courses": int(group["course_id"].nunique()),
                "n_evaluable": int(len(evaluable)),
                "n_responders": int((evaluable["is_responder"] == True).sum()),  # noqa: E712
                "n_remitters": int((remission_known["is_remitter"] == True).sum()),  # noqa: E712
                "response_rate": float((evaluable["is_responder"] == True).mean()) if len(evaluable) else None,  # noqa: E712
                "remission_rate": float((remission_known["is_remitter"] == True).mean())  # noqa: E712
                if len(remission_known)
                else None,
                "n_relapsed": int((group["relapsed"] == True).sum()),  # noqa: E712
                "median_relapse_free_days": median,
                "logrank_p_vs_ketamine_only": p_value,
            }
        )
    columns = [
        "protocol",
        "instrument",
        "rater",
        "n_courses",
        "n_evaluable",
        "n_responders",
        "n_remitters",
        "response_rate",
        "remission_rate",
        "n_relapsed",
        "median_relapse_free_days",
        "logrank_p_vs_ketamine_only",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(
        {
            "response_rate": "float64",
            "remission_rate": "float64",
            "median_relapse_free_days": "float64",
            "logrank_p_vs_ketamine_only": "float64",
        }
    )
