"""Reading the published marts for the dashboards (read-only; marts only)."""

from __future__ import annotations

from pathlib import Path

MARTS = (
    "rpt_relapse_free_survival",
    "rpt_protocol_summary",
    "rpt_relapse_free_survival_by_cohort",
    "rpt_protocol_summary_by_cohort",
    "rpt_outcome_rates_by_week",
    "rpt_rater_concordance",
    "rpt_score_trajectories",
    "rpt_cohort_summary",
    "rpt_data_health",
    "rpt_quarantine_summary",
    "dim_protocols",
    "dim_instruments",
    "dim_published_figures",
)


def read_marts(warehouse: Path) -> dict:
    """Each report mart as a polars DataFrame."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        present = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'marts'").fetchall()
        }
        return {name: con.sql(f"SELECT * FROM marts.{name}").pl() if name in present else None for name in MARTS}
    finally:
        con.close()
