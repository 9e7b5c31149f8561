"""Expectation suites as code: the frames they read (SQL on the warehouse) and the checks on them.

Severity:
- critical: the refresh stops before marts are published (the previous marts stay);
- quarantine: row-level; the failing records move to quality.quarantined_records with the expectation's
  name, dbt leaves them out, the night goes on and the count is reported;
- warning: recorded and shown, nothing stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from expectations import scope
from expectations.reference import instrument_ranges, plausible_range, seed_path, staging_files

CRITICAL, QUARANTINE, WARNING = "critical", "quarantine", "warning"
FHIR_DATE = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
IDENTIFYING_COLUMN = (
    r"(?i).*(?:name|family|given|mrn|identifier|address|phone|email|telecom|birth_?date|postal|zip|ssn).*"
)


@dataclass(frozen=True)
class Frame:
    sql: str
    resource_type: str | None = None  # set for frames whose rows can be quarantined
    # Frames with an id column are validated in chunks split on it, so memory stays bounded as history
    # grows: every check on such a frame must hold per row (or per group of equal ids).
    id_column: str | None = None


@dataclass
class Check:
    frame: str
    name: str
    severity: str
    expectation: Any  # a great_expectations expectation instance
    description: str = ""
    meta: dict = field(default_factory=dict)


def raw_suite_files(seeds=None) -> list[str]:
    """The suite's code and the seeds it reads: a change to any makes the next raw run revalidate everything
    (the staging views and seed tables the frames read are rebuilt from the same files)."""
    seed_files = [
        seed_path(name, *([seeds] if seeds else []))
        for name in ("instrument_catalogue", "body_weight_codes", "plausible_ranges")
    ]
    return [__file__, *seed_files, *staging_files()]


def raw_frames(scoped: bool = False) -> dict[str, Frame]:
    """The raw layer's frames, read through the dbt staging views (the one FHIR parser) and the seed tables;
    `scoped` keeps only the records in the incremental scope (expectations.scope)."""

    def only(resource_type: str, id_column: str) -> str:
        return f"WHERE {scope.filter_sql(resource_type, id_column)}" if scoped else ""

    return {
        "observations": Frame(
            f"""
            WITH obs AS (
                SELECT observation_id, version_id, patient_id, effective_raw, effective_at, value_score, codings,
                       category_code, is_final, data_absent_reason
                FROM staging.stg_fhir__observations {only("Observation", "observation_id")}),
            mapped AS (
                SELECT coded.observation_id, min(catalogue.instrument) AS instrument,
                       bool_or(weights.code IS NOT NULL) AS is_weight
                FROM (SELECT observation_id, unnest(codings) AS coding FROM obs) AS coded
                LEFT JOIN reference.instrument_catalogue AS catalogue
                    ON coded.coding.system = catalogue.code_system AND coded.coding.code = catalogue.code
                LEFT JOIN reference.body_weight_codes AS weights
                    ON coded.coding.system = weights.code_system AND coded.coding.code = weights.code
                GROUP BY coded.observation_id)
            SELECT obs.observation_id, obs.version_id, obs.patient_id,
                   patients.patient_id IS NOT NULL AS patient_exists,
                   obs.effective_raw, obs.effective_at, epoch(obs.effective_at) AS effective_epoch,
                   obs.value_score AS score, mapped.instrument,
                   -- a final score Observation must have its score, or say why it has none
                   NOT (mapped.instrument IS NOT NULL AND obs.is_final AND obs.value_score IS NULL
                        AND obs.data_absent_reason IS NULL) AS score_present_or_explained,
                   mapped.instrument IS NOT NULL OR coalesce(mapped.is_weight, false) OR obs.category_code <> 'survey'
                       AS code_in_value_sets
            FROM obs
            LEFT JOIN mapped ON obs.observation_id = mapped.observation_id
            LEFT JOIN staging.stg_fhir__patients AS patients ON obs.patient_id = patients.patient_id""",
            "Observation",
            "observation_id",
        ),
        "infusions": Frame(
            f"""
            SELECT ma.medication_administration_id AS infusion_id, ma.version_id, ma.patient_id,
                   patients.patient_id IS NOT NULL AS patient_exists, ma.started_raw, ma.started_at,
                   epoch(ma.started_at) AS started_epoch
            FROM (SELECT * FROM staging.stg_fhir__medication_administrations
                  {only("MedicationAdministration", "medication_administration_id")}) AS ma
            LEFT JOIN staging.stg_fhir__patients AS patients ON ma.patient_id = patients.patient_id""",
            "MedicationAdministration",
            "infusion_id",
        ),
        "procedures": Frame(
            f"""
            SELECT p.procedure_id, p.version_id, p.patient_id, patients.patient_id IS NOT NULL AS patient_exists,
                   p.performed_raw, p.performed_at, epoch(p.performed_at) AS performed_epoch
            FROM (SELECT * FROM staging.stg_fhir__procedures {only("Procedure", "procedure_id")}) AS p
            LEFT JOIN staging.stg_fhir__patients AS patients ON p.patient_id = patients.patient_id""",
            "Procedure",
            "procedure_id",
        ),
        "patients": Frame(
            f"""
            SELECT patient_id, version_id, birth_date_raw AS birth_date, gender,
                   -- a FHIR date: YYYY, YYYY-MM or a real YYYY-MM-DD
                   birth_date_raw IS NULL OR (regexp_full_match(birth_date_raw, '{FHIR_DATE}')
                                              AND (length(birth_date_raw) < 10 OR birth_date IS NOT NULL))
                       AS birth_date_valid,
                   epoch(try_cast(rpad(birth_date_raw, 10, '-01') AS DATE)) AS birth_epoch
            FROM staging.stg_fhir__patients {only("Patient", "patient_id")}""",
            "Patient",
            "patient_id",
        ),
        # Uniqueness over every stored version is set work: DuckDB counts the keys stored more than once (on
        # every run, incremental or not, so a manual insert is caught too) and the expectation asserts none.
        "versions": Frame("""
            SELECT count(*) AS duplicated_versions FROM (
                SELECT resource_id, version_key FROM raw.observation_versions
                GROUP BY ALL HAVING count(*) > 1
                UNION ALL SELECT resource_id, version_key FROM raw.medication_administration_versions
                GROUP BY ALL HAVING count(*) > 1
                UNION ALL SELECT resource_id, version_key FROM raw.procedure_versions
                GROUP BY ALL HAVING count(*) > 1
                UNION ALL SELECT resource_id, version_key FROM raw.patient_versions
                GROUP BY ALL HAVING count(*) > 1
                UNION ALL SELECT resource_id, version_key FROM raw.care_plan_versions
                GROUP BY ALL HAVING count(*) > 1)"""),
    }


def _year_start_epoch(year: float | None) -> float | None:
    return None if year is None else datetime(int(year), 1, 1, tzinfo=UTC).timestamp()


def raw_checks(gx, now_epoch: float, seeds=None) -> list[Check]:
    E = gx.expectations
    seed_dir = [seeds] if seeds else []
    earliest_birth = _year_start_epoch(plausible_range("birth_year", *seed_dir)[0])
    earliest_record = _year_start_epoch(plausible_range("record_year", *seed_dir)[0])
    checks = [
        Check(
            "versions",
            "resource_versions_unique",
            CRITICAL,
            E.ExpectColumnValuesToBeBetween(column="duplicated_versions", min_value=0, max_value=0),
            "each resource version is stored once",
        ),
        Check(
            "observations",
            "observation_has_subject",
            QUARANTINE,
            E.ExpectColumnValuesToNotBeNull(column="patient_id"),
            "every Observation names its patient",
        ),
        Check(
            "observations",
            "observation_patient_resolves",
            QUARANTINE,
            E.ExpectColumnValuesToBeInSet(column="patient_exists", value_set=[True]),
            "the Observation's patient exists in the raw layer",
        ),
        Check(
            "observations",
            "observation_time_present",
            QUARANTINE,
            E.ExpectColumnValuesToNotBeNull(column="effective_raw"),
            "effectiveDateTime is present",
        ),
        Check(
            "observations",
            "observation_time_parses",
            QUARANTINE,
            E.ExpectColumnValuesToNotBeNull(
                column="effective_at", row_condition="effective_raw.notna()", condition_parser="pandas"
            ),
            "effectiveDateTime is a valid FHIR dateTime",
        ),
        Check(
            "observations",
            "observation_not_in_future",
            QUARANTINE,
            E.ExpectColumnValuesToBeBetween(column="effective_epoch", max_value=now_epoch),
            "no assessment is dated after the refresh",
        ),
        Check(
            "observations",
            "observation_not_implausibly_early",
            QUARANTINE,
            E.ExpectColumnValuesToBeBetween(column="effective_epoch", min_value=earliest_record),
            "no assessment is dated before the earliest plausible year (plausible_ranges seed)",
        ),
        Check(
            "observations",
            "observation_score_present",
            QUARANTINE,
            E.ExpectColumnValuesToBeInSet(column="score_present_or_explained", value_set=[True]),
            "a final score has its value, or a dataAbsentReason",
        ),
        Check(
            "observations",
            "observation_code_in_value_sets",
            WARNING,
            E.ExpectColumnValuesToBeInSet(column="code_in_value_sets", value_set=[True]),
            "survey codes are in the instrument catalogue (a new local code needs a seed row)",
        ),
        Check(
            "infusions",
            "infusion_patient_resolves",
            QUARANTINE,
            E.ExpectColumnValuesToBeInSet(column="patient_exists", value_set=[True]),
            "the infusion's patient exists",
        ),
        Check(
            "infusions",
            "infusion_time_parses",
            QUARANTINE,
            E.ExpectColumnValuesToNotBeNull(column="started_at"),
            "the infusion has a valid start",
        ),
        Check(
            "infusions",
            "infusion_date_plausible",
            QUARANTINE,
            E.ExpectColumnValuesToBeBetween(column="started_epoch", min_value=earliest_record, max_value=now_epoch),
            "the infusion is dated between the earliest plausible year and the refresh",
        ),
        Check(
            "procedures",
            "procedure_patient_resolves",
            QUARANTINE,
            E.ExpectColumnValuesToBeInSet(column="patient_exists", value_set=[True]),
            "the session's patient exists",
        ),
        Check(
            "procedures",
            "procedure_time_parses",
            QUARANTINE,
            E.ExpectColumnValuesToNotBeNull(column="performed_at"),
            "the session has a valid start",
        ),
        Check(
            "procedures",
            "procedure_date_plausible",
            QUARANTINE,
            E.ExpectColumnValuesToBeBetween(column="performed_epoch", min_value=earliest_record, max_value=now_epoch),
            "the session is dated between the earliest plausible year and the refresh",
        ),
        Check(
            "patients",
            "patient_id_unique",
            CRITICAL,
            E.ExpectColumnValuesToBeUnique(column="patient_id"),
            "one current version per patient",
        ),
        Check(
            "patients",
            "patient_gender_valid",
            QUARANTINE,
            E.ExpectColumnValuesToBeInSet(column="gender", value_set=["female", "male", "other", "unknown"]),
            "administrative gender is a FHIR code",
        ),
        Check(
            "patients",
            "patient_birth_date_valid",
            QUARANTINE,
            E.ExpectColumnValuesToBeInSet(column="birth_date_valid", value_set=[True]),
            "birthDate is a FHIR date (YYYY, YYYY-MM or a real YYYY-MM-DD)",
        ),
        Check(
            "patients",
            "patient_birth_date_plausible",
            QUARANTINE,
            E.ExpectColumnValuesToBeBetween(column="birth_epoch", min_value=earliest_birth, max_value=now_epoch),
            "born between the earliest plausible year (plausible_ranges seed) and the refresh",
        ),
    ]
    for inst in instrument_ranges(*([seeds] if seeds else [])):
        checks.append(
            Check(
                "observations",
                f"score_within_{inst['instrument']}_range",
                QUARANTINE,
                E.ExpectColumnValuesToBeBetween(
                    column="score",
                    min_value=inst["min_score"],
                    max_value=inst["max_score"],
                    row_condition=f'instrument=="{inst["instrument"]}"',
                    condition_parser="pandas",
                ),
                f"{inst['instrument']} scores within {inst['min_score']:g}-{inst['max_score']:g}",
            )
        )
    return checks


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
