"""The nightly outcomes refresh. Scheduling only: every task calls one step in `pipeline.steps`."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pendulum
from airflow.sdk import DAG, Variable, task, task_group

# The schedule's timezone is needed when the file is parsed: the same Airflow Variable the tasks read (then
# the environment), so the DAG and its tasks agree on the clinic's clock.
CLINIC_TZ = pendulum.timezone(
    Variable.get("outcomes_clinic_tz", default=os.environ.get("OUTCOMES_CLINIC_TZ") or "America/Los_Angeles")
)
WAREHOUSE_POOL = "duckdb_warehouse"  # one slot: DuckDB allows a single writer per file


def _on_failure(context):
    from pipeline.airflow_support import record_failure

    record_failure(context)


DOC = """
### Nightly outcomes refresh

EHR (FHIR Bulk Data, SMART Backend Services) → landing folder → DuckDB raw layer → raw quality gate
(row-level quarantine) → `dbt build` (into `marts_build`) → mart quality gate → publish to `marts` →
dashboards. Incremental: the extract asks for `_since` the last committed load.

* Runs at 02:30 clinic time (`OUTCOMES_CLINIC_TZ`, default America/Los_Angeles); no catch-up; one run at a
  time, and every task that writes the DuckDB file takes the one-slot `duckdb_warehouse` pool.
* Extract retries with exponential backoff (the EHR is flaky); a retried extract resumes the same export.
* A critical quality failure fails the run before publishing: yesterday's marts stay. Every failure is
  recorded in `quality.alerts` and `alerts.ndjson` beside the warehouse (and mailed when
  `OUTCOMES_ALERT_EMAIL` and an SMTP connection are configured).
* dbt runs as **one** `dbt build` task rather than a per-model task group (astronomer-cosmos): the
  warehouse is a single DuckDB file with one writer, so per-model tasks would run one at a time anyway
  while paying a scheduler round-trip and a dbt parse per model; dbt's own DAG already orders the models
  and runs the data tests beside them, and its log names the failing model. (The unit tests of the
  outcome definitions run in CI with `make test`: their fixtures are fixed, so a nightly run adds nothing.)
* A network of clinics: variable `outcomes_sites` lists the sites; each gets its own extract and load (the
  `site` task group, mapped over the sites; connection `outcomes_ehr_<site>`), one after another (DuckDB
  has one writer), then one stage, gate, transform (variable `outcomes_engine`: duckdb or spark) and publish
  for the whole network. Without the variable, one site.
* Settings: Airflow connection `outcomes_ehr`, variables `outcomes_warehouse` / `outcomes_analytics_db` /
  `outcomes_clinic_tz` / `outcomes_sites` / `outcomes_engine`, or `OUTCOMES_*` environment variables -- read
  when a task (or its failure callback) runs; only the clinic timezone is read when this file is parsed.
* The DAG starts paused: `airflow dags unpause nightly_outcomes_refresh` (or the toggle in the UI).
"""

with DAG(
    dag_id="nightly_outcomes_refresh",
    description="Nightly FHIR -> DuckDB -> dbt -> quality gates -> dashboards refresh",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=CLINIC_TZ),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["outcomes", "fhir", "duckdb", "dbt"],
    default_args={
        "owner": "outcomes-data",
        "retries": 0,
        "on_failure_callback": _on_failure,
        "pool": WAREHOUSE_POOL,
    },
) as dag:

    @task(pool="default_pool", doc_md="The night's sites (variable `outcomes_sites`; one site without it).")
    def sites() -> list[str]:
        from pipeline.airflow_support import configured_sites

        return configured_sites()

    @task(
        retries=3,
        retry_delay=timedelta(minutes=2),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(minutes=30),
        pool="default_pool",
        # each extract holds the warehouse's writer lock while it reads its watermark and lands its export
        max_active_tis_per_dagrun=1,
        doc_md="Pull from the site's EHR into its landing folder (resumes an unfinished export).",
    )
    def extract(site: str) -> dict:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        s = steps.extract(settings_from_airflow(site))
        return {"site": site, "landing": s.landing, "transaction_time": s.transaction_time, "counts": s.counts}

    @task(retries=1, doc_md="Load the site's completed landings into the raw layer (one transaction per load).")
    def load(site: str) -> dict:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        return {"site": site, "totals": steps.load(settings_from_airflow(site), progress=False).totals}

    @task_group(group_id="site")
    def site_night(site: str) -> None:
        extract(site) >> load(site)

    @task(doc_md="dbt seeds and staging views (the one FHIR parser), rebuilt only when their SQL or seeds changed.")
    def stage() -> None:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        steps.stage(settings_from_airflow())

    @task(doc_md="Raw quality gate on the staging views: quarantine bad records; stop on a critical failure.")
    def validate_raw() -> dict:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        r = steps.validate_raw(settings_from_airflow())
        return {"quarantined": sum(r.quarantined.values()), "warnings": len(r.warnings)}

    @task(doc_md="`dbt build`: staging, intermediate, marts (into marts_build) and their data tests.")
    def transform() -> dict:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        return steps.transform(settings_from_airflow())

    @task(doc_md="Mart quality gate on marts_build; a critical failure keeps yesterday's marts.")
    def validate_marts() -> dict:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        r = steps.validate_marts(settings_from_airflow())
        return {"warnings": len(r.warnings)}

    @task(doc_md="Publish the accepted marts to the `marts` schema in one transaction.")
    def publish() -> list:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        return steps.publish(settings_from_airflow())

    @task(doc_md="Rebuild the dashboards from the published marts.")
    def dashboards() -> list:
        from pipeline import steps
        from pipeline.airflow_support import settings_from_airflow

        return [str(p) for p in steps.dashboards(settings_from_airflow())]

    (
        site_night.expand(site=sites())
        >> stage()
        >> validate_raw()
        >> transform()
        >> validate_marts()
        >> publish()
        >> dashboards()
    )
