"""Reference value sets for the raw checks, read from the dbt seeds (one place to change them)."""

from __future__ import annotations

import csv
from pathlib import Path

DEFAULT_SEEDS = Path(__file__).resolve().parents[1] / "dbt_project" / "seeds"
DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"


def instrument_ranges(seeds: Path = DEFAULT_SEEDS) -> list[dict]:
    with open(seeds / "instrument_catalogue.csv", newline="") as f:
        return [
            {
                "instrument": r["instrument"],
                "code_system": r["code_system"],
                "code": r["code"],
                "min_score": float(r["min_score"]),
                "max_score": float(r["max_score"]),
            }
            for r in csv.DictReader(f)
        ]


def seed_path(name: str, seeds: Path = DEFAULT_SEEDS) -> str:
    return str(seeds / f"{name}.csv")


def plausible_range(measure: str, seeds: Path = DEFAULT_SEEDS) -> tuple[float | None, float | None]:
    """(min, max) of a measure in the plausible_ranges seed; None where the seed leaves a bound empty."""
    with open(seeds / "plausible_ranges.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["measure"] == measure:
                return (
                    float(r["min_value"]) if r["min_value"] else None,
                    float(r["max_value"]) if r["max_value"] else None,
                )
    raise KeyError(f"no row for {measure!r} in {seeds / 'plausible_ranges.csv'}")


def staging_files() -> list[str]:
    """What the staging views are made of: their SQL and the macros it calls."""
    return [str(p) for p in sorted((DBT_PROJECT / "models" / "staging").rglob("*.sql"))] + [
        str(DBT_PROJECT / "macros" / "fhir.sql")
    ]
