"""The publish step: copy the marts the quality gates accepted from the build schema to `marts` in one transaction.

Analysts and dashboards read `marts`; a run that fails before this step leaves yesterday's marts exactly
as they were.
"""

from __future__ import annotations

BUILD_SCHEMA = "marts_build"
PUBLISHED_SCHEMA = "marts"


def tables_in(con, schema: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY table_name", [schema]
        ).fetchall()
    ]


def publish(con, build_schema: str = BUILD_SCHEMA, published_schema: str = PUBLISHED_SCHEMA) -> list[str]:
    tables = tables_in(con, build_schema)
    if not tables:
        raise RuntimeError(f"nothing to publish: schema {build_schema} has no tables (did dbt build run?)")
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {published_schema}")
        existing = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [published_schema]
            ).fetchall()
        }
        for t in tables:
            con.execute(f"CREATE OR REPLACE TABLE {published_schema}.{t} AS SELECT * FROM {build_schema}.{t}")
        health = {"rpt_data_health", "rpt_quarantine_summary"}
        for t in existing - set(tables) - health:
            con.execute(f"DROP TABLE {published_schema}.{t}")
        _publish_health(con, published_schema)
        con.execute("""CREATE TABLE IF NOT EXISTS quality.publications (published_at TIMESTAMPTZ, tables INTEGER)""")
        con.execute("INSERT INTO quality.publications VALUES (now(), ?)", [len(tables)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return tables


def _publish_health(con, schema: str) -> None:
    """Refresh and quality status as marts, so the dashboards read marts only."""
    con.execute(f"""
        CREATE OR REPLACE TABLE {schema}.rpt_data_health AS
        SELECT now() AS published_at,
               (SELECT max(transaction_at) FROM raw.load_log WHERE status = 'committed') AS data_as_of,
               (SELECT max(finished_at) FROM raw.load_log WHERE status = 'committed') AS last_load_at,
               (SELECT success FROM quality.validation_runs WHERE suite = 'raw' ORDER BY started_at DESC LIMIT 1)
                   AS raw_gate_passed,
               (SELECT success FROM quality.validation_runs WHERE suite = 'marts' ORDER BY started_at DESC LIMIT 1)
                   AS marts_gate_passed,
               (SELECT warnings FROM quality.validation_runs WHERE suite = 'raw' ORDER BY started_at DESC LIMIT 1)
                   + (SELECT warnings FROM quality.validation_runs WHERE suite = 'marts' ORDER BY started_at DESC
                      LIMIT 1) AS warnings,
               (SELECT count(*) FROM quality.quarantined_records) AS quarantined_by_gate,
               (SELECT count(*) FROM raw.quarantine) AS quarantined_at_load""")
    con.execute(f"""
        CREATE OR REPLACE TABLE {schema}.rpt_quarantine_summary AS
        SELECT 'quality gate' AS stage, expectation AS reason, count(*) AS records
        FROM quality.quarantined_records GROUP BY ALL
        UNION ALL
        SELECT 'load', regexp_replace(reason, ':.*$', ''), count(*) FROM raw.quarantine GROUP BY ALL
        ORDER BY 1, 3 DESC""")
