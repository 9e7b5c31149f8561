"""Fast unit tests: settings, sizes, Retry-After and backoff, origins, scopes, error texts, references."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from ingestion.fhir_client import Backoff, default_scope, origin, outcome_text, retry_after_seconds
from ingestion.search_crawl import patient_id
from ingestion.warehouse import size_in_bytes
from pipeline.settings import DEFAULT_EXPORT_TYPES, Settings


def test_settings_defaults_and_lists():
    s = Settings.from_env({})
    assert s.export_types == DEFAULT_EXPORT_TYPES and s.type_filters == () and s.scopes is None
    assert str(s.landing) == "data/landing" and s.extract_mode == "bulk"
    s = Settings.from_env(
        {
            "OUTCOMES_EXPORT_TYPES": " Patient,Observation ,Patient",
            "OUTCOMES_TYPE_FILTERS": "Observation?code=a,b ; Procedure?code=c",
            "OUTCOMES_WAREHOUSE": "/srv/w/wh.duckdb",
        }
    )
    assert s.export_types == ("Patient", "Observation")  # trimmed, first occurrence kept
    assert s.type_filters == ("Observation?code=a,b", "Procedure?code=c")
    assert str(s.landing) == "/srv/w/landing"
    assert "secret" not in repr(Settings.from_env({"OUTCOMES_PRIVATE_KEY": "secret"}))


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OUTCOMES_EXTRACT_MODE": "ftp"}, "extract mode"),
        ({"OUTCOMES_CLINIC_TZ": "Mars/Olympus"}, "timezone"),
        ({"OUTCOMES_EXPORT_TYPES": "Patient,observation"}, "OUTCOMES_EXPORT_TYPES"),
        ({"OUTCOMES_EXPORT_TYPES": "Patient/../x"}, "OUTCOMES_EXPORT_TYPES"),
        ({"OUTCOMES_TYPE_FILTERS": "code=madrs"}, "OUTCOMES_TYPE_FILTERS"),
    ],
)
def test_settings_refuse_what_cannot_work(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_memory_sizes_read_as_duckdb_reads_them():
    assert size_in_bytes("1GB") == 10**9 and size_in_bytes("768MiB") == 768 * 2**20
    assert size_in_bytes(" 1.5 gib ") == int(1.5 * 2**30)
    for bad in ("1G", "lots", "-1GB", ""):
        with pytest.raises(ValueError):
            size_in_bytes(bad)


def test_retry_after_seconds_and_http_dates():
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_backoff_is_capped_jittered_and_yields_to_retry_after():
    b = Backoff(base=0.5, cap=4.0, max_wait=60.0, rng=random.Random(1))
    delays = [b.delay(attempt) for attempt in range(12) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays) > 3.0
    assert all(b.delay(0) <= 0.5 for _ in range(50))
    assert b.delay(5, retry_after=12.0) == 12.0 and b.delay(5, retry_after=600.0) == 60.0


def test_origins_compare_scheme_host_and_default_port():
    assert origin("https://ehr.example/fhir/R4") == origin("https://ehr.example:443/other")
    assert origin("http://ehr.example/fhir") != origin("https://ehr.example/fhir")
    assert origin("https://ehr.example/fhir") != origin("https://files.ehr.example/fhir")
    assert origin("http://127.0.0.1:8765/a") != origin("http://127.0.0.1:8766/a")


def test_default_scope_follows_the_servers_capabilities():
    assert default_scope({}) == "system/*.read"
    assert default_scope({"capabilities": ["permission-v2"]}) == "system/*.rs"
    assert default_scope({"capabilities": ["permission-v1", "permission-v2"]}) == "system/*.read"


def test_outcome_text_of_fhir_oauth_and_html_errors():
    def resp(body, ctype="application/fhir+json"):
        content = body if isinstance(body, bytes) else httpx.Response(200, json=body).content
        return httpx.Response(400, content=content, headers={"Content-Type": ctype})

    oo = {"resourceType": "OperationOutcome", "issue": [{"code": "not-supported", "diagnostics": "no _typeFilter"}]}
    assert outcome_text(resp(oo)) == "no _typeFilter"
    assert outcome_text(resp({"error": "invalid_client", "error_description": "bad kid"})) == "invalid_client: bad kid"
    html = b"<!DOCTYPE html>\n<html><body>\n<pre>Cannot GET /fhir/Patient</pre>\n</body></html>"
    assert outcome_text(resp(html, "text/html")) == "Cannot GET /fhir/Patient"


def test_group_member_references():
    assert patient_id("Patient/123") == "123"
    assert patient_id("https://ehr.example/fhir/Patient/a-b.c") == "a-b.c"
    assert patient_id("Patient/7/_history/2") == "7"
    assert patient_id("urn:uuid:0c6b1f3d-edb2-422b-a0af-a262fb90ed07") == "0c6b1f3d-edb2-422b-a0af-a262fb90ed07"
    assert patient_id("Practitioner/1") is None and patient_id("") is None and patient_id("Group/x") is None


def test_a_key_file_readable_by_others_is_tightened_before_use(tmp_path, capsys):
    from pipeline.settings import Settings

    key = tmp_path / "client.pem"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    settings = Settings.from_env(private_key_path=key, warehouse=tmp_path / "wh.duckdb")
    assert settings.private_key().startswith(b"-----BEGIN")
    assert key.stat().st_mode & 0o777 == 0o600
    assert "was readable by others" in capsys.readouterr().err


def test_private_umask_makes_new_files_0600_and_folders_0700(tmp_path):
    from ingestion.private_files import private_umask

    with private_umask():
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "f").write_text("phi")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "d" / "f").stat().st_mode & 0o777 == 0o600


def test_a_network_site_lands_apart_and_names_its_lake_folder():
    single = Settings.from_env({"OUTCOMES_WAREHOUSE": "/srv/wh/warehouse.duckdb"})
    assert single.site_id == "main" and single.landing == Path("/srv/wh/landing")
    assert single.lake == Path("/srv/wh/lake")
    north = Settings.from_env({"OUTCOMES_WAREHOUSE": "/srv/wh/warehouse.duckdb", "OUTCOMES_SITE_ID": "north-2"})
    assert north.landing == Path("/srv/wh/landing-north-2") and north.lake == Path("/srv/wh/lake")
    assert Settings.from_env({"OUTCOMES_LAKE": "off"}).lake is None
    assert Settings.from_env({}).data_docs and not Settings.from_env({"OUTCOMES_DATA_DOCS": "off"}).data_docs
    assert Settings.from_env({"OUTCOMES_LAKE": "/data/lake"}).lake == Path("/data/lake")
    for bad in ("north/../x", "two words", "-lead"):
        with pytest.raises(ValueError, match="OUTCOMES_SITE_ID"):
            Settings.from_env({"OUTCOMES_SITE_ID": bad})


def test_extra_spark_settings_keep_spaces_and_commas_and_refuse_what_is_not_a_setting():
    spec = "spark.executor.memory=8g; spark.driver.extraJavaOptions=-Da=b -Dc=d\nspark.jars=x.jar,y.jar;"
    assert Settings.from_env({"OUTCOMES_SPARK_CONF": spec}).spark.conf == (
        ("spark.executor.memory", "8g"),
        ("spark.driver.extraJavaOptions", "-Da=b -Dc=d"),
        ("spark.jars", "x.jar,y.jar"),
    )
    assert Settings.from_env({}).spark.conf == ()
    # refused when the settings are read, before a night starts, not when Spark does
    for bad in ("executor.memory=8g", "spark.executor.memory", "spark.executor.memory="):
        with pytest.raises(ValueError, match="OUTCOMES_SPARK_CONF"):
            Settings.from_env({"OUTCOMES_SPARK_CONF": bad})


def test_the_spark_sessions_size_and_master_are_read_and_checked_with_the_settings():
    default = Settings.from_env({}).spark
    assert (default.master, default.driver_memory, default.shuffle_partitions) == ("local[2]", "4g", 64)
    assert default.is_local
    cluster = Settings.from_env(
        {
            "OUTCOMES_SPARK_MASTER": "spark://spark-master:7077",
            "OUTCOMES_SPARK_DRIVER_MEMORY": "16g",
            "OUTCOMES_SPARK_SHUFFLE_PARTITIONS": "200",
        }
    ).spark
    assert (cluster.master, cluster.driver_memory, cluster.shuffle_partitions) == (
        "spark://spark-master:7077",
        "16g",
        200,
    )
    assert not cluster.is_local
    for name, bad in (
        ("OUTCOMES_SPARK_DRIVER_MEMORY", "4 GB"),
        ("OUTCOMES_SPARK_DRIVER_MEMORY", "0g"),
        ("OUTCOMES_SPARK_SHUFFLE_PARTITIONS", "0"),
        ("OUTCOMES_SPARK_SHUFFLE_PARTITIONS", "many"),
        ("OUTCOMES_SPARK_MASTER", "local [2]"),
    ):
        with pytest.raises(ValueError, match=name):
            Settings.from_env({name: bad})
