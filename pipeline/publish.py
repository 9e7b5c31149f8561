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
        for t in existing - set(tables):
            con.execute(f"DROP TABLE {published_schema}.{t}")
        con.execute("""CREATE TABLE IF NOT EXISTS quality.publications (published_at TIMESTAMPTZ, tables INTEGER)""")
        con.execute("INSERT INTO quality.publications VALUES (now(), ?)", [len(tables)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return tables
