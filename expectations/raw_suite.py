"""The raw suite: the raw layer's frames, read through the dbt staging views (the one FHIR parser) and the
seed tables, and the row-level and critical checks on them."""

from __future__ import annotations

from datetime import UTC, datetime

from expectations import scope, suites
from expectations.reference import instrument_ranges, plausible_range, seed_path, staging_files
from expectations.suites import CRITICAL, QUARANTINE, WARNING, Check, Frame

FHIR_DATE = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"


def raw_suite_files(seeds=None) -> list[str]:
    """The suite's code and the seeds it reads: a change to any makes the next raw run revalidate everything
    (the staging views and seed tables the frames read are rebuilt from the same files)."""
    seed_files = [
        seed_path(name, *([seeds] if seeds else []))
        for name in ("instrument_catalogue", "body_weight_codes", "plausible_ranges")
    ]
    return [__file__, suites.__file__, *seed_files, *staging_files()]


def _instruments(seeds=None) -> list[str]:
    """The catalogue's instruments, once each (an instrument may have several codes)."""
    return list(dict.fromkeys(r["instrument"] for r in instrument_ranges(*([seeds] if seeds else []))))


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _score_column(instrument: str) -> str:
    return f"{instrument}_score"


def raw_frames(scoped: bool = False, seeds=None) -> dict[str, Frame]:
    """The raw layer's frames, read through the dbt staging views (the one FHIR parser) and the seed tables;
    `scoped` keeps only the records in the incremental scope (expectations.scope).

    Conditions are columns computed here, in SQL, rather than GX `row_condition`s: a score column per
    instrument (NULL on other instruments' rows, which a range expectation skips) and the unparsed time
    (NULL when it parsed or is absent); GX's pandas engine would otherwise filter the frame once per check."""

    def only(resource_type: str, id_column: str) -> str:
        return f"WHERE {scope.filter_sql(resource_type, id_column)}" if scoped else ""

    per_instrument = "".join(
        f",\n CASE WHEN mapped.instrument = '{_sql_text(i)}' THEN obs.value_score END AS \"{_score_column(i)}\""
        for i in _instruments(seeds)
    )

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
                   CASE WHEN obs.effective_at IS NULL THEN obs.effective_raw END AS unparsed_effective,
                   obs.value_score AS score, mapped.instrument{per_instrument},
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
            E.ExpectColumnValuesToBeNull(column="unparsed_effective"),
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
            "one current version per patient (and no Patient id sent by two sites of a network)",
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
    ranges = {r["instrument"]: r for r in instrument_ranges(*([seeds] if seeds else []))}
    for inst in ranges.values():
        checks.append(
            Check(
                "observations",
                f"score_within_{inst['instrument']}_range",
                QUARANTINE,
                E.ExpectColumnValuesToBeBetween(
                    column=_score_column(inst["instrument"]), min_value=inst["min_score"], max_value=inst["max_score"]
                ),
                f"{inst['instrument']} scores within {inst['min_score']:g}-{inst['max_score']:g}",
            )
        )
    return checks
