"""What the DAG needs from Airflow, kept out of the DAG file: settings at run time and the failure alert.

Settings come from the Airflow connection `outcomes_ehr` (host = FHIR base URL, login = client id,
extra = {"private_key_path", "group_id", "extract_mode", "client_kid", "scopes", "export_types" (a list or a
comma string), "type_filters" (a list), "site_id"}) when it exists, then from Airflow variables
`outcomes_warehouse` / `outcomes_analytics_db` / `outcomes_clinic_tz` / `outcomes_site_id` / `outcomes_lake`,
then from OUTCOMES_* environment variables -- for the tasks and for the failure callback alike. Nothing here
runs when the DAG file is parsed.

A network of sites: variable `outcomes_sites` lists the site ids (a JSON list or commas); each site's extract
and load read the connection `outcomes_ehr_<site id>` (`-` as `_`) when it exists, else `outcomes_ehr`, with
that site id. Without the variable the night has one site: the connection's, the variable's or `main`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from dashboards.status import record_failed
from pipeline.settings import Settings


def _names(value) -> tuple[str, ...] | None:
    if not value:
        return None
    items = value.split(",") if isinstance(value, str) else value
    return tuple(t.strip() for t in items if t.strip()) or None


CONNECTION_ID = "outcomes_ehr"


def site_connection_id(site_id: str) -> str:
    return f"{CONNECTION_ID}_{site_id.replace('-', '_').lower()}"


def configured_sites() -> list[str]:
    """The night's sites: variable `outcomes_sites`, else the one site the settings name."""
    from airflow.sdk import Variable

    value = Variable.get("outcomes_sites", default=None)
    if value:
        sites = json.loads(value) if value.strip().startswith("[") else value.split(",")
        sites = [str(s).strip() for s in sites if str(s).strip()]
        if sites:
            for site in sites:  # a bad id fails here, naming the variable, not in a mapped task later
                Settings.from_env(site_id=site)
            return sites
    return [settings_from_airflow().site_id]


def settings_from_airflow(site_id: str | None = None) -> Settings:
    """Settings for a task; `site_id`: a site's extract or load, from the site's own connection if it has one."""
    overrides: dict = {}
    try:
        from airflow.sdk import BaseHook, Variable

        connection_id = CONNECTION_ID
        if site_id:
            try:
                BaseHook.get_connection(site_connection_id(site_id))
                connection_id = site_connection_id(site_id)
            except Exception:  # noqa: BLE001 - no site connection: the clinic's own
                pass
        try:
            conn = BaseHook.get_connection(connection_id)
            extra = conn.extra_dejson or {}
            overrides.update(
                ehr_url=conn.host or None,
                client_id=conn.login or None,
                private_key_path=Path(extra["private_key_path"]) if extra.get("private_key_path") else None,
                private_key_pem=conn.password or None,
                group_id=extra.get("group_id"),
                extract_mode=extra.get("extract_mode"),
                client_kid=extra.get("client_kid"),
                scopes=extra.get("scopes"),
                export_types=_names(extra.get("export_types")),
                type_filters=tuple(extra["type_filters"]) if extra.get("type_filters") else None,
                site_id=extra.get("site_id"),
            )
        except Exception:  # noqa: BLE001 - no connection defined: the environment decides
            pass
        for key, field, kind in (
            ("outcomes_warehouse", "warehouse", Path),
            ("outcomes_analytics_db", "analytics_path", Path),
            ("outcomes_clinic_tz", "clinic_tz", str),
            ("outcomes_site_id", "site_id", str),
            ("outcomes_lake", "lake_dir", Path),
            ("outcomes_engine", "engine", str),
        ):
            value = Variable.get(key, default=None)
            if value:
                overrides[field] = kind(value)
    except ImportError:  # pragma: no cover - outside Airflow
        pass
    if site_id:
        overrides["site_id"] = site_id
    return Settings.from_env(**overrides)


def record_failure(context: dict) -> None:
    """on_failure_callback: write the alert where someone will see it, and notify when configured."""
    ti = context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or "nightly_outcomes_refresh"
    task_id = getattr(ti, "task_id", None)
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    error = context.get("exception")
    message = f"{type(error).__name__}: {error}" if error else "task failed"
    try:  # the settings the failed task ran with (Airflow's, then the environment's)
        settings = settings_from_airflow()
        warehouse, dashboards_dir = Path(settings.warehouse), settings.dashboards
    except Exception:  # noqa: BLE001 - settings that failed to validate may be why the task failed
        warehouse = Path(os.environ.get("OUTCOMES_WAREHOUSE") or Settings.warehouse)
        dashboards_dir = warehouse.parent / "dashboards"
    alert = {
        "alerted_at": datetime.now(UTC).isoformat(),
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "message": message[:4000],
    }
    alerts_file = warehouse.parent / "alerts.ndjson"
    alerts_file.parent.mkdir(parents=True, exist_ok=True)
    with open(alerts_file, "a") as f:  # always works, even when the warehouse cannot be opened
        f.write(json.dumps(alert) + "\n")
    try:
        record_failed(dashboards_dir, task_id)  # the pages say the night failed, and at which task
    except OSError:
        pass
    try:
        from expectations.store import ensure_quality_schema
        from ingestion.warehouse import connect

        con = connect(warehouse)
        try:
            ensure_quality_schema(con)
            con.execute(
                "INSERT INTO quality.alerts (alerted_at, dag_id, run_id, task_id, message) VALUES (?, ?, ?, ?, ?)",
                [datetime.now(UTC), dag_id, run_id, task_id, alert["message"]],
            )
        finally:
            con.close()
    except Exception:  # noqa: BLE001 - the file above already holds the alert
        pass
    email = os.environ.get("OUTCOMES_ALERT_EMAIL")
    if email:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(to=email, subject=f"[outcomes] {dag_id}.{task_id} failed", html_content=alert["message"]).notify(
            context
        )
