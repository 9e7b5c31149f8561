"""The Spark engine: the same dbt project built on Apache Spark through dbt-spark, for a network that outgrows
one machine.

Spark reads the raw history from the lake (the Parquet every committed load also writes, ingestion/lake.py),
and from the warehouse only what the night's gate decided (quality.*) and the surrogate-key lookup. It builds
seeds, staging, intermediate and marts in its own catalogue; the marts and the key lookup (with any keys
issued tonight) then come back into the warehouse's `marts_build` and `restricted` schemas, where the mart
gate and publishing read them exactly as after a DuckDB build. The warehouse therefore stays the one record
of issued keys: switching engines, either way, never re-keys a patient.

The catalogue is rebuilt from the lake on each run (Spark's tables are derived, never the record), so a local
session needs no metastore; on a cluster the same holds with the cluster's own catalogue.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ingestion.lake import PARQUET
from ingestion.warehouse import connect, current_versions_sql, landed_tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pipeline.settings import SparkOptions

Log = Callable[[str], None]

KEY_LOOKUP = "restricted.int_patients_keyed"
# what a DuckDB build leaves for the gate and publishing, and therefore what the Spark build hands back
RETURNED_SCHEMAS = ("marts_build",)


def spark_dir(warehouse: Path) -> Path:
    return Path(warehouse).resolve().parent / "spark"


def start_session(warehouse: Path, options: SparkOptions) -> SparkSession:
    """A Spark session for the build (dbt-spark's `session` method takes the process's active session), on
    the settings' master, with their `spark.*` settings applied over the defaults."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:  # the default install has no Spark
        raise RuntimeError(
            "the Spark engine needs pyspark and dbt-spark: run `make spark` (the `spark` extra and a Java runtime)"
        ) from e
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise RuntimeError("the Spark engine needs a Java runtime: run `make spark` (installs Debian's openjdk-17)")
    root = spark_dir(warehouse)
    catalogue = root / "catalogue"
    shutil.rmtree(catalogue, ignore_errors=True)  # derived tables, rebuilt each run from the lake
    catalogue.mkdir(parents=True)
    if options.is_local:  # the JVM would otherwise look up this host's address, and say so on stderr
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName("ketamine-outcomes")
        .master(options.master)
        .config("spark.sql.warehouse.dir", str(catalogue))
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.shuffle.partitions", str(options.shuffle_partitions))
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", options.driver_memory)
        # Spark sizes memory pages from the heap (64 MB here) and every sorter and hash map of a task holds at
        # least one: fct_course_outcomes' stages hold so many that a task could not get its next page
        .config("spark.buffer.pageSize", "8m")
        .config("spark.local.dir", str(root / "tmp"))
    )
    for key, value in options.conf:
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _quoted(path: Path | str) -> str:
    return str(path).replace("`", "``")


def _parquet_view(spark: SparkSession, name: str, path: Path | str) -> None:
    spark.sql(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM parquet.`{_quoted(path)}`")


def register_sources(spark: SparkSession, con, lake: Path, scratch: Path, log: Log = print) -> None:
    """The dbt sources in Spark's catalogue: raw.* over the lake (every site, every committed load), the
    current-version views by the warehouse's rule, quality.* and the key lookup from the warehouse."""
    scratch.mkdir(parents=True, exist_ok=True)
    for schema in ("raw", "quality", "restricted"):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
    lake_tables = {}
    for table in [*landed_tables(con), "raw.export_errors", "raw.load_counts", "raw.load_log"]:
        name = table.split(".", 1)[1].removesuffix("_landed")
        if any(Path(lake).glob(f"site=*/load=*/{name}.parquet")):
            lake_tables[name] = Path(lake) / "site=*" / "load=*" / f"{name}.parquet"
        else:  # a type no load brought yet: an empty relation with the warehouse's columns
            empty = scratch / f"empty_{name}.parquet"
            con.execute(f"COPY (SELECT * FROM {table} LIMIT 0) TO '{empty}' {PARQUET}")
            lake_tables[name] = empty
    for name, path in lake_tables.items():
        _parquet_view(spark, f"raw.{name}", path)
    for name in lake_tables:
        if name.endswith("_versions"):
            stem = name.removesuffix("_versions")
            spark.sql(f"CREATE OR REPLACE VIEW raw.{stem}_current AS {current_versions_sql(stem, engine='spark')}")
    for table in ("quality.quarantined_records", "quality.validation_runs"):
        path = scratch / f"{table}.parquet"
        con.execute(f"COPY (SELECT * FROM {table}) TO '{path}' {PARQUET}")
        _parquet_view(spark, table, path)
    keys = scratch / "key_lookup.parquet"
    con.execute("CREATE SCHEMA IF NOT EXISTS restricted")
    has_keys = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'restricted' AND table_name = 'int_patients_keyed'"
    ).fetchall()[0][0]
    if has_keys:
        con.execute(f"COPY (SELECT * FROM {KEY_LOOKUP}) TO '{keys}' {PARQUET}")
        spark.sql(f"CREATE TABLE {KEY_LOOKUP} USING parquet AS SELECT * FROM parquet.`{_quoted(keys)}`")
    log(f"spark: sources registered ({len(lake_tables)} lake tables from {lake})")


def return_results(spark: SparkSession, con, scratch: Path, log: Log = print) -> list[str]:
    """The marts Spark built, into the warehouse's build schema (replacing tonight's), and the keys it issued
    into the warehouse's lookup -- each table through Parquet, all in one warehouse transaction."""
    out = scratch / "results"
    shutil.rmtree(out, ignore_errors=True)
    tables = []
    for schema in RETURNED_SCHEMAS:
        for row in spark.sql(f"SHOW TABLES IN {schema}").collect():
            if not row.isTemporary:
                tables.append(f"{schema}.{row.tableName}")
    for table in [*tables, KEY_LOOKUP]:
        spark.table(table).write.parquet(str(out / table))
    con.execute("BEGIN")
    try:
        for schema in RETURNED_SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in tables:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_parquet('{out / table}/*.parquet')")
        keys = f"read_parquet('{out / KEY_LOOKUP}/*.parquet')"
        con.execute(f"CREATE TABLE IF NOT EXISTS {KEY_LOOKUP} AS SELECT * FROM {keys} LIMIT 0")
        con.execute(
            f"INSERT INTO {KEY_LOOKUP} BY NAME SELECT * FROM {keys} "
            f"WHERE patient_id NOT IN (SELECT patient_id FROM {KEY_LOOKUP})"
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    log(f"spark: {len(tables)} marts returned to the warehouse (marts_build)")
    return tables


def build_on_spark(
    warehouse: Path,
    lake: Path,
    invoke: Callable[[], object],
    options: SparkOptions,
    log: Log = print,
) -> None:
    """Register the sources, run `invoke` (dbt with the spark target) in the session, hand the results back."""
    started = time.monotonic()
    spark = start_session(warehouse, options)
    log(f"spark: session up on {spark.sparkContext.master} in {time.monotonic() - started:.0f} s")
    scratch = spark_dir(warehouse) / "exchange"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        con = connect(warehouse)
        try:
            register_sources(spark, con, lake, scratch, log)
        finally:
            con.close()
        invoke()
        con = connect(warehouse)
        try:
            return_results(spark, con, scratch, log)
        finally:
            con.close()
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
