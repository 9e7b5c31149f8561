"""The marts' suite: the built marts' frames (before publishing) and the checks dbt's tests do not express --
reconciliation across tables, curve shapes, plausible doses, no identifying column."""

from __future__ import annotations

from expectations.reference import plausible_range
from expectations.suites import CRITICAL, WARNING, Check, Frame

IDENTIFYING_COLUMN = (
    r"(?i).*(?:name|family|given|mrn|identifier|address|phone|email|telecom|birth_?date|postal|zip|ssn).*"
)


def mart_frames(schema: str) -> dict[str, Frame]:
    return {
        "summary": Frame(f"SELECT * FROM {schema}.rpt_protocol_summary"),
        "weekly": Frame(f"SELECT * FROM {schema}.rpt_outcome_rates_by_week"),
        "survival": Frame(f"""
            SELECT *,
                   survival - lag(survival) OVER w AS survival_step,
                   n_at_risk - lag(n_at_risk) OVER w AS at_risk_step
            FROM {schema}.rpt_relapse_free_survival
            WINDOW w AS (PARTITION BY protocol, instrument ORDER BY day)"""),
        "outcomes": Frame(f"SELECT course_id, instrument FROM {schema}.fct_course_outcomes"),
        # the dose the marts hold: mg over the weight measured before the infusion, in kg whatever the unit
        "infusions": Frame(f"SELECT infusion_id, dose_mg_per_kg FROM {schema}.fct_infusions"),
        "reconciliation": Frame(f"""
            SELECT (SELECT count(DISTINCT course_id) FROM {schema}.fct_course_outcomes) AS courses_in_outcomes,
                   (SELECT count(DISTINCT a.course_id) FROM {schema}.fct_assessments a
                    JOIN reference.instrument_catalogue c ON a.instrument = c.instrument AND c.is_outcome
                    WHERE a.course_id IS NOT NULL) AS courses_with_outcome_assessments,
                   (SELECT count(*) FROM {schema}.fct_course_outcomes o
                    ANTI JOIN {schema}.fct_treatment_courses c USING (course_id)) AS outcome_courses_missing,
                   (SELECT coalesce(sum(induction_infusions + booster_infusions), 0)
                    FROM {schema}.fct_treatment_courses) AS infusions_in_courses,
                   (SELECT count(*) FROM {schema}.fct_infusions) AS infusions"""),
        "columns": Frame(f"""
            SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = '{schema}'"""),
    }


def mart_checks(gx, seeds=None) -> list[Check]:
    E = gx.expectations
    rate = {"min_value": 0, "max_value": 1}
    dose_min, dose_max = plausible_range("dose_mg_per_kg", *([seeds] if seeds else []))
    return [
        Check(
            "infusions",
            "infusion_dose_plausible",
            WARNING,
            E.ExpectColumnValuesToBeBetween(column="dose_mg_per_kg", min_value=dose_min, max_value=dose_max),
            f"dose within {dose_min:g}-{dose_max:g} mg/kg of the patient's weight (plausible_ranges seed)",
        ),
        Check(
            "summary",
            "summary_response_rate_in_unit_interval",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="response_rate", **rate),
            "rates in [0, 1]",
        ),
        Check(
            "summary",
            "summary_remission_rate_in_unit_interval",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="remission_rate", **rate),
            "rates in [0, 1]",
        ),
        Check(
            "weekly",
            "weekly_response_rate_in_unit_interval",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="response_rate", **rate),
            "rates in [0, 1]",
        ),
        Check(
            "weekly",
            "weekly_remission_rate_in_unit_interval",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="remission_rate", **rate),
            "rates in [0, 1]",
        ),
        Check(
            "survival",
            "survival_in_unit_interval",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="survival", **rate),
            "survival in [0, 1]",
        ),
        Check(
            "survival",
            "survival_non_increasing",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="survival_step", max_value=1e-12),
            "survival never rises from one day to the next",
        ),
        Check(
            "survival",
            "at_risk_non_increasing",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="at_risk_step", max_value=0),
            "n at risk never rises",
        ),
        Check(
            "survival",
            "ci_lower_below_survival",
            CRITICAL,
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="survival", column_B="ci_lower", or_equal=True, ignore_row_if="either_value_is_missing"
            ),
            "ci_lower <= survival",
        ),
        Check(
            "survival",
            "ci_upper_above_survival",
            CRITICAL,
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="ci_upper", column_B="survival", or_equal=True, ignore_row_if="either_value_is_missing"
            ),
            "survival <= ci_upper",
        ),
        Check(
            "outcomes",
            "one_baseline_per_course_instrument",
            CRITICAL,
            E.ExpectCompoundColumnsToBeUnique(column_list=["course_id", "instrument"]),
            "exactly one outcome row (one baseline) per course x instrument",
        ),
        Check(
            "reconciliation",
            "courses_reconcile",
            CRITICAL,
            E.ExpectColumnPairValuesToBeEqual(
                column_A="courses_in_outcomes", column_B="courses_with_outcome_assessments"
            ),
            "courses in outcomes = courses assessed on an outcome instrument",
        ),
        Check(
            "reconciliation",
            "outcome_courses_exist",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="outcome_courses_missing", min_value=0, max_value=0),
            "every outcome row's course is in fct_treatment_courses",
        ),
        Check(
            "reconciliation",
            "infusions_reconcile",
            CRITICAL,
            E.ExpectColumnPairValuesToBeEqual(column_A="infusions_in_courses", column_B="infusions"),
            "infusions counted in courses = infusions",
        ),
        Check(
            "columns",
            "no_identifying_columns",
            CRITICAL,
            E.ExpectColumnValuesToNotMatchRegex(column="column_name", regex=IDENTIFYING_COLUMN),
            "no identifying columns in the marts",
        ),
    ]
