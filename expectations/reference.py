"""Reference value sets for the raw checks, read from the dbt seeds (one place to change them)."""

from __future__ import annotations

import csv
from pathlib import Path

DEFAULT_SEEDS = Path(__file__).resolve().parents[1] / "dbt_project" / "seeds"


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
