"""The dbt warehouse on generated clinics: build, Kaplan-Meier against lifelines, recovery of the truth."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import dbt

IDENTIFYING = (
    "name",
    "family",
    "given",
    "mrn",
    "identifier",
    "address",
    "phone",
    "email",
    "telecom",
    "birth_date",
    "birthdate",
    "patient_id",
    "postal",
    "city",
)


def _con(wh: Path):
    return duckdb.connect(str(wh), read_only=True)


def test_marts_carry_no_identifying_data(clinic_warehouse):
    ehr, wh = clinic_warehouse
    con = _con(wh)
    columns = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'marts'"
    ).fetchall()
    assert {t for t, _ in columns} >= {
        "dim_patients",
        "fct_assessments",
        "fct_infusions",
        "fct_psychotherapy_sessions",
        "fct_treatment_courses",
        "fct_course_outcomes",
        "rpt_relapse_free_survival",
        "rpt_outcome_rates_by_week",
        "rpt_protocol_summary",
        "rpt_rater_concordance",
    }
    leaked = [(t, c) for t, c in columns if any(word in c.lower() for word in IDENTIFYING)]
    assert not leaked
    patient_ids = {
        json.loads(line)["id"]
        for line in (ehr / "Patient.ndjson").read_text().splitlines()
        if line.startswith('{"resourceType":"Patient","id"') and line.endswith("}")
    }
    keys = {r[0] for r in con.execute("SELECT patient_key FROM marts.dim_patients").fetchall()}
    assert keys and not keys & patient_ids
    assert all(len(k) == 32 for k in keys)
    ages = [r[0] for r in con.execute("SELECT age_at_first_course FROM marts.dim_patients").fetchall() if r[0]]
    assert max(ages) == 90  # 90+ capped (the generator has a few patients over 90)
    assert (
        con.execute(
            "SELECT count(*) FROM marts.dim_patients WHERE age_at_first_course = 90 AND birth_year IS NOT NULL"
        ).fetchall()[0][0]
        == 0
    )
    con.close()


def test_mart_columns_have_the_types_an_analyst_expects(clinic_warehouse):
    """Counts and days as integers (not HUGEINT or DECIMAL, which pandas reads as floats or objects), times as
    TIMESTAMPTZ, never text."""
    _, wh = clinic_warehouse
    con = _con(wh)
    columns = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'marts'"
    ).fetchall()
    con.close()
    assert len(columns) > 100
    wide = [(t, c, d) for t, c, d in columns if d == "HUGEINT" or d.startswith("DECIMAL")]
    assert not wide
    times = [(t, c, d) for t, c, d in columns if c.endswith(("_at", "_as_of")) or c == "data_as_of"]
    assert times and all(d == "TIMESTAMP WITH TIME ZONE" for _, _, d in times), times
    counts = [(t, c, d) for t, c, d in columns if c.startswith("n_") or c in ("records", "course_number")]
    assert counts and all(d in ("INTEGER", "BIGINT") for _, _, d in counts), counts


def test_relapse_free_survival_and_logrank_match_lifelines_in_every_cohort(clinic_warehouse):
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    from pipeline.settings import Settings

    _, wh = clinic_warehouse
    con = _con(wh)
    # the cohorts of the pages' filter, derived here from the marts themselves: every course, the quarter of
    # the first infusion in clinic time, each diagnosis group of the patient
    tz = Settings.from_env(warehouse=wh).clinic_tz
    diagnoses = ("depression", "ptsd", "anxiety", "substance_use")
    durations = con.sql(f"""
        WITH responders AS (
            SELECT o.protocol, o.instrument, o.days_to_relapse_or_censor, o.relapsed,
                   timezone('{tz}', c.first_infusion_at) AS started, p.*
            FROM marts.fct_course_outcomes AS o
            JOIN marts.fct_treatment_courses AS c USING (course_id)
            JOIN marts.dim_patients AS p ON p.patient_key = o.patient_key
            WHERE o.is_responder AND o.is_evaluable
        )
        SELECT 'all' AS cohort_dimension, 'all' AS cohort, * FROM responders
        UNION ALL BY NAME
        SELECT 'start_quarter' AS cohort_dimension, year(started) || '-Q' || quarter(started) AS cohort, *
            FROM responders
        {" ".join(f"UNION ALL BY NAME SELECT 'diagnosis' AS cohort_dimension, '{g}' AS cohort, * FROM responders WHERE has_{g}" for g in diagnoses)}
    """).pl()
    km = con.sql("SELECT * FROM marts.rpt_relapse_free_survival_by_cohort ORDER BY ALL").pl()
    summary = con.sql("SELECT * FROM marts.rpt_protocol_summary_by_cohort").pl()
    # the whole clinic's marts are the "all" cohort of the by-cohort ones
    for plain, by_cohort in (
        ("rpt_relapse_free_survival", "rpt_relapse_free_survival_by_cohort"),
        ("rpt_protocol_summary", "rpt_protocol_summary_by_cohort"),
    ):
        differ = con.sql(f"""
            (SELECT * FROM marts.{plain} EXCEPT
             SELECT * EXCLUDE (cohort_dimension, cohort, cohort_label) FROM marts.{by_cohort}
             WHERE cohort_dimension = 'all')
            UNION ALL
            (SELECT * EXCLUDE (cohort_dimension, cohort, cohort_label) FROM marts.{by_cohort}
             WHERE cohort_dimension = 'all' EXCEPT SELECT * FROM marts.{plain})""").fetchall()
        assert not differ, plain
    con.close()
    cohorts = set(durations.select("cohort_dimension", "cohort").unique().iter_rows())
    assert cohorts == set(km.select("cohort_dimension", "cohort").unique().iter_rows())
    assert {("diagnosis", "ptsd"), ("all", "all")} < cohorts and sum(d == "start_quarter" for d, _ in cohorts) >= 4
    checked = medians_checked = 0
    for (dimension, cohort, protocol, instrument), group in durations.group_by(
        ["cohort_dimension", "cohort", "protocol", "instrument"]
    ):
        in_cohort = (pl.col("cohort_dimension") == dimension) & (pl.col("cohort") == cohort)
        mine = km.filter(in_cohort & (pl.col("protocol") == protocol) & (pl.col("instrument") == instrument))
        assert mine["day"][0] == 0 and mine["survival"][0] == 1.0
        fitter = KaplanMeierFitter(alpha=0.05).fit(
            group["days_to_relapse_or_censor"].to_numpy(), group["relapsed"].to_numpy()
        )
        sf = fitter.survival_function_.iloc[:, 0]
        ci = fitter.confidence_interval_
        table = fitter.event_table
        assert list(mine["day"]) == [int(t) for t in sf.index]

        # the median and its 95% interval: the first day lifelines' curve and its bounds are at or below one half
        # (within 1e-9: a product or an exp of a log sum may land a hair either side of exactly 0.5)
        def first_at_or_below_half(curve) -> float | None:
            reached = curve[curve <= 0.5 + 1e-9]
            return float(reached.index[0]) if len(reached) else None

        want = [first_at_or_below_half(sf), *(first_at_or_below_half(ci.iloc[:, k].fillna(0.0)) for k in (0, 1))]
        got = summary.filter(in_cohort & (pl.col("protocol") == protocol) & (pl.col("instrument") == instrument)).row(
            0, named=True
        )
        columns = ("median_relapse_free_days", "median_ci_lower_days", "median_ci_upper_days")
        for value, column in zip(want, columns, strict=True):
            assert got[column] == value, (cohort, protocol, instrument, column)
        assert got["n_responders"] == group.height
        lifelines_median = fitter.median_survival_time_  # the same day, where no step lands on exactly 0.5
        assert want[0] is None or lifelines_median >= want[0]
        medians_checked += got["median_ci_upper_days"] is not None
        for row in mine.iter_rows(named=True):
            t = row["day"]
            assert row["survival"] == pytest.approx(sf.loc[t], abs=1e-6)
            assert row["n_at_risk"] == table.loc[t, "at_risk"]
            assert row["n_relapsed"] == table.loc[t, "observed"]
            assert row["n_censored"] == table.loc[t, "censored"]
            lower, upper = ci.loc[t].iloc[0], ci.loc[t].iloc[1]
            if row["ci_lower"] is None:
                assert row["survival"] == 0
                continue
            assert row["ci_lower"] == pytest.approx(lower, abs=1e-6)
            assert row["ci_upper"] == pytest.approx(upper, abs=1e-6)
            assert row["ci_lower"] <= row["survival"] <= row["ci_upper"]
            checked += 1
    assert checked > 2000 and medians_checked >= 40

    # the log-rank p-values (SQL) against lifelines' logrank_test, each protocol's responders against the
    # reference protocol's in the same cohort and on the same scale
    reference = summary["reference_protocol"][0]
    tests_checked = 0
    for (dimension, cohort, protocol, instrument), group in durations.group_by(
        ["cohort_dimension", "cohort", "protocol", "instrument"]
    ):
        got = summary.filter(
            (pl.col("cohort_dimension") == dimension)
            & (pl.col("cohort") == cohort)
            & (pl.col("protocol") == protocol)
            & (pl.col("instrument") == instrument)
        )["logrank_p_vs_reference"][0]
        theirs = durations.filter(
            (pl.col("cohort_dimension") == dimension)
            & (pl.col("cohort") == cohort)
            & (pl.col("protocol") == reference)
            & (pl.col("instrument") == instrument)
        )
        if protocol == reference or theirs.is_empty() or not (group["relapsed"].any() or theirs["relapsed"].any()):
            assert got is None, (cohort, protocol, instrument)
            continue
        want = logrank_test(
            group["days_to_relapse_or_censor"].to_numpy().astype(float),
            theirs["days_to_relapse_or_censor"].to_numpy().astype(float),
            event_observed_A=group["relapsed"].to_numpy(),
            event_observed_B=theirs["relapsed"].to_numpy(),
        ).p_value
        assert got == pytest.approx(want, abs=1e-12, rel=1e-9), (cohort, protocol, instrument)
        tests_checked += 1
    assert tests_checked >= 40


def test_recovered_rates_and_relapse_medians_match_the_truth(clinic_warehouse):
    ehr, wh = clinic_warehouse
    truth = pl.read_ndjson(ehr / "truth" / "courses.ndjson")
    params = json.loads((ehr / "truth" / "parameters.json").read_text())["params"]
    con = _con(wh)
    summary = con.sql("SELECT * FROM marts.rpt_protocol_summary").pl()
    pooled = con.sql("""SELECT instrument, avg(is_responder::int) AS response, avg(is_remitter::int) AS remission,
                                   avg(is_worse::int) AS worsening
                            FROM marts.fct_course_outcomes WHERE is_evaluable GROUP BY instrument""").pl()
    con.close()
    latent = (
        truth.filter(pl.col("evaluable"))
        .group_by("instrument")
        .agg(
            pl.col("latent_responder").mean().alias("response"),
            pl.col("latent_remitter").mean().alias("remission"),
            pl.col("latent_worse").mean().alias("worsening"),
        )
    )
    for instrument in ("madrs", "phq9"):
        got = pooled.filter(pl.col("instrument") == instrument).row(0, named=True)
        want = latent.filter(pl.col("instrument") == instrument).row(0, named=True)
        assert got["response"] == pytest.approx(want["response"], abs=0.04), instrument
        assert got["remission"] == pytest.approx(want["remission"], abs=0.04), instrument
        assert got["worsening"] == pytest.approx(want["worsening"], abs=0.02), instrument
    clin = params["clinician_response"]
    madrs = pooled.filter(pl.col("instrument") == "madrs").row(0, named=True)
    assert madrs["response"] == pytest.approx(clin, abs=0.05)
    for protocol, median in params["relapse_median_days"].items():
        row = summary.filter((pl.col("protocol") == protocol) & (pl.col("instrument") == "madrs")).row(0, named=True)
        # the configured medians are clinician-rated depression's (MADRS)
        assert row["median_relapse_free_days"] == pytest.approx(median, rel=0.2), protocol
        assert row["reference_protocol"] == "ketamine_only"  # the protocols seed's comparator
        if protocol != "ketamine_only":
            assert row["logrank_p_vs_reference"] < 0.05  # psychotherapy protocols relapse later
        else:
            assert row["logrank_p_vs_reference"] is None
    assert not math.isnan(statistics.mean(summary["response_rate"].drop_nulls()))

    # every scale, PTSD and self-rated included: the marts' median relapse-free time is the generator's, within
    # 20% -- the Kaplan-Meier median of the truth's own relapse days (latent relapse, or the booster given at a
    # course's first relapse on any scale, which v2 counts as a relapse on every responding scale)
    from lifelines import KaplanMeierFitter

    compared = set()
    for row in summary.filter(pl.col("n_responders") >= 30).iter_rows(named=True):
        t = truth.filter(
            (pl.col("protocol") == row["protocol"])
            & (pl.col("instrument") == row["instrument"])
            & pl.col("evaluable")
            & pl.col("latent_responder")
        )
        if t.height == 0:
            continue  # a scale the generator keeps no latent truth for (days abstinent)
        want = (
            KaplanMeierFitter()
            .fit(t["days_to_relapse_or_censor"].to_numpy(), t["relapsed"].cast(pl.Boolean).to_numpy())
            .median_survival_time_
        )
        if math.isinf(want):
            assert row["median_relapse_free_days"] is None, row
            continue
        assert row["median_relapse_free_days"] == pytest.approx(want, rel=0.2), row
        compared.add(row["instrument"])
    assert {"madrs", "phq9", "pcl5", "caps5"} <= compared
    # PTSD relapses later than depression, as published (Albott 2018, Feder 2021); self-rated scales hold longer
    alone = {
        r["instrument"]: r["median_relapse_free_days"]
        for r in summary.filter(pl.col("protocol") == "ketamine_only").iter_rows(named=True)
    }
    assert (
        alone["caps5"] > alone["madrs"] * 1.2 and alone["pcl5"] > alone["phq9"] * 1.2 and alone["phq9"] > alone["madrs"]
    )


def test_substance_use_outcomes_recover_the_generators_and_the_published_contrast(clinic_warehouse):
    """Days abstinent (judged as days of use): response, remission and the abstinence by week per protocol."""
    ehr, wh = clinic_warehouse
    truth = pl.read_ndjson(ehr / "truth" / "courses.ndjson").filter(
        (pl.col("instrument") == "days_abstinent") & pl.col("evaluable")
    )
    con = _con(wh)
    summary = con.sql("SELECT * FROM marts.rpt_protocol_summary WHERE instrument = 'days_abstinent'").pl()
    weekly = con.sql("""SELECT protocol, sum(share_days_abstinent * n_courses) / sum(n_courses) AS share
                        FROM marts.rpt_abstinence_by_week WHERE week BETWEEN 6 AND 26 GROUP BY 1""").pl()
    con.close()
    remission = {}
    for row in summary.iter_rows(named=True):
        t = truth.filter(pl.col("protocol") == row["protocol"])
        if row["n_evaluable"] < 60:
            continue  # too few courses for a rate within a few points
        assert row["response_rate"] == pytest.approx(t["latent_responder"].mean(), abs=0.06), row
        assert row["remission_rate"] == pytest.approx(t["latent_remitter"].mean(), abs=0.06), row
        remission[row["protocol"]] = row["remission_rate"]
    # Dakwar 2019: abstinent at the end 48% with ketamine + MBRP vs 11% without
    assert 0.36 <= remission["ketamine_mbrp"] <= 0.60 and remission["ketamine_only"] <= 0.2
    share = dict(weekly.iter_rows())
    assert share["ketamine_mbrp"] > share["ketamine_only"] + 0.15


def test_counts_add_up_across_marts(clinic_warehouse):
    _, wh = clinic_warehouse
    con = _con(wh)
    courses = con.execute("SELECT count(*) FROM marts.fct_treatment_courses").fetchall()[0][0]
    outcome_courses = con.execute("SELECT count(DISTINCT course_id) FROM marts.fct_course_outcomes").fetchall()[0][0]
    infusions = con.execute(
        "SELECT sum(induction_infusions + booster_infusions) FROM marts.fct_treatment_courses"
    ).fetchall()[0][0]
    assert infusions == con.execute("SELECT count(*) FROM marts.fct_infusions").fetchall()[0][0]
    assert outcome_courses <= courses and outcome_courses > 0.95 * courses
    protocols = dict(con.execute("SELECT protocol, count(*) FROM marts.fct_treatment_courses GROUP BY 1").fetchall())
    assert set(protocols) == {"ketamine_only", "ketamine_cbt", "ketamine_mbrp", "ketamine_kap"}
    con.close()


def test_dbt_unit_tests_pass_on_their_hand_computed_fixtures(clinic_warehouse, tmp_path):
    """The outcome definitions' unit tests (fixtures with hand-computed expected rows) run here, in CI; the
    nightly build skips them. Every one defined in the project must run, and pass."""
    import shutil

    import yaml

    from pipeline.transform import DBT_PROJECT, dbt_target_dir

    _, wh = clinic_warehouse
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(wh, copy)
    defined = {
        unit_test["name"]
        for f in (DBT_PROJECT / "models").rglob("*.yml")
        for unit_test in (yaml.safe_load(f.read_text()) or {}).get("unit_tests", [])
    }
    proc = dbt(copy, "test", "--select", "test_type:unit")
    run_results = dbt_target_dir(copy) / "run_results.json"
    assert run_results.exists(), proc.stdout + proc.stderr
    results = json.loads(run_results.read_text())["results"]
    ran = {r["unique_id"].rsplit(".", 1)[-1]: r["status"] for r in results}
    assert len(defined) >= 7 and set(ran) == defined, proc.stdout + proc.stderr
    assert set(ran.values()) == {"pass"}, ran
    assert proc.returncode == 0, proc.stdout + proc.stderr
