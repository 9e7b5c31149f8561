"""`dbt build` wall time on a generated clinic (default 10k patients), after a real raw load.

Usage: python bench/dbt_build.py [--patients 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402


def prepare(patients: int, root: str) -> int:
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig
    from ingestion.raw_load import Loader, plan_from_directory
    from ingestion.warehouse import connect

    generate(GeneratorConfig(patients=patients, seed=1), Path(root) / "ehr")
    con = connect(Path(root) / "warehouse.duckdb")
    result = Loader(con, log=lambda _: None).load(plan_from_directory(Path(root) / "ehr"))
    con.close()
    return result.totals()["loaded"]


def dbt_build(root: str) -> dict:
    from pipeline.transform import build

    return build(Path(root) / "warehouse.duckdb", quiet=True, log=lambda _: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        loaded = prepare(args.patients, root)
        print(f"prepared {args.patients:,} patients ({loaded:,} raw resources) in {time.perf_counter() - t0:.1f}s")
        for label in ("first build", "rebuild (no new data)"):
            secs, peak, statuses = measure(dbt_build, root)
            print(f"dbt build, {label}: {secs:.1f}s, peak {peak:.0f} MiB, {statuses}")


if __name__ == "__main__":
    main()
