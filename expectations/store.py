"""The `quality` schema: validation runs, expectation results and quarantined records, queryable in DuckDB."""

from __future__ import annotations

QUARANTINE_TABLE = "quality.quarantined_records"


def ensure_quality_schema(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS quality")
    con.execute("""
        CREATE TABLE IF NOT EXISTS quality.validation_runs (
            run_id VARCHAR, suite VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, success BOOLEAN,
            critical_failures INTEGER, warnings INTEGER, quarantined_records BIGINT, rows_validated BIGINT,
            scope VARCHAR, through_load_seq BIGINT, checks_fingerprint VARCHAR)""")
    # scope, through_load_seq, checks_fingerprint: which raw loads a run covered (load_seq watermark), whether
    # it re-read everything, and a fingerprint of the checks (a changed suite or seed forces a full revalidation).
    con.execute("""
        CREATE TABLE IF NOT EXISTS quality.expectation_results (
            run_id VARCHAR, suite VARCHAR, frame VARCHAR, expectation VARCHAR, expectation_type VARCHAR,
            column_name VARCHAR, success BOOLEAN, severity VARCHAR, observed_value VARCHAR, unexpected_count BIGINT,
            element_count BIGINT, outcome VARCHAR, description VARCHAR)""")
    # The current quarantine: records of the raw layer's current versions that a row-level expectation
    # rejected. dbt's intermediate models leave them out; each raw validation rewrites the verdicts of the
    # records it validated (all of them on a full run; new versions and earlier rejects on an incremental one).
    con.execute(f"""
        CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} (
            resource_type VARCHAR, resource_id VARCHAR, version_id VARCHAR, expectation VARCHAR, suite VARCHAR,
            observed_value VARCHAR, run_id VARCHAR, quarantined_at TIMESTAMPTZ)""")
    con.execute("""
        CREATE TABLE IF NOT EXISTS quality.alerts (
            alerted_at TIMESTAMPTZ, dag_id VARCHAR, run_id VARCHAR, task_id VARCHAR, message VARCHAR)""")
