"""End-to-end refresh benchmark: full refresh, then an incremental one after `--continue-days 1`, then one
with nothing new (what a night costs before any data: process start-ups, dbt parse, rebuilding the marts).

Per clinic size: wall time per step (extract, load, staging views, raw gate, dbt, mart gate, publish, dashboards),
resources/s, peak memory (and the high-water mark after each step, in the JSON) and warehouse size, against
the local EHR on 127.0.0.1. Prints a table and writes it as JSON (bench/results/refresh.json).

The smallest size (10 patients by default) measures the floor: what a night costs with almost no data.

Usage: python bench/refresh.py [--sizes 10,1000,10000,50000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, write_results  # noqa: E402

STEPS = ("extract", "load", "stage", "validate raw", "transform", "validate marts", "publish", "dashboards")


def _refresh(ehr_url: str, client_id: str, key: str, warehouse: str) -> dict:
    from pipeline import refresh
    from pipeline.settings import Settings

    settings = Settings.from_env(
        ehr_url=ehr_url, client_id=client_id, private_key_path=Path(key), warehouse=Path(warehouse)
    )
    return refresh.run(settings, log=lambda _: None)


def run_size(patients: int, root: Path) -> list[dict]:
    from ehr_simulator.generate import continue_clinic, generate
    from ehr_simulator.params import GeneratorConfig
    from pipeline.local_ehr import register_new_client, running_ehr

    ehr = root / "ehr"
    generate(GeneratorConfig(patients=patients, seed=1), ehr)
    key = root / "client.pem"
    client_id = register_new_client(ehr, key, "RS384", "bench")
    warehouse = root / "warehouse.duckdb"
    rows = []
    for kind in ("full", "incremental", "unchanged"):
        if kind == "incremental":
            continue_clinic(ehr, 1)
        with running_ehr(ehr, 0, log=lambda _: None) as base:
            secs, peak, summary = measure(_refresh, base, client_id, str(key), str(warehouse))
        read = summary["load"]["read"]
        rows.append(
            {
                "patients": patients,
                "refresh": kind,
                "seconds": round(secs, 1),
                "resources_read": read,
                "resources_per_s": round(read / secs),
                "peak_mib": round(peak),
                "warehouse_mib": round(warehouse.stat().st_size / 2**20, 1),
                "steps": summary["steps"],
                "peak_mib_after_step": summary["peak_mib_after"],
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10,1000,10000,50000")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "refresh.json"))
    args = ap.parse_args()
    results = []
    header = (
        f"{'patients':>9} {'refresh':<12} {'total s':>8} {'read':>9} {'res/s':>8} {'peak MiB':>9} {'wh MiB':>7}  "
        + " ".join(f"{s[:10]:>10}" for s in STEPS)
    )
    print(header)
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            for r in run_size(n, Path(d)):
                results.append(r)
                print(
                    f"{r['patients']:>9,} {r['refresh']:<12} {r['seconds']:>8.1f} {r['resources_read']:>9,} "
                    f"{r['resources_per_s']:>8,} {r['peak_mib']:>9} {r['warehouse_mib']:>7}  "
                    + " ".join(f"{r['steps'].get(s, 0):>10.1f}" for s in STEPS),
                    flush=True,
                )
    print("night (incremental) against the full refresh, and the part of it that no new data costs:")
    for n in sorted({r["patients"] for r in results}):
        by = {r["refresh"]: r["seconds"] for r in results if r["patients"] == n}
        print(
            f"{n:>9,}  night {by['incremental']:.1f} s = {by['incremental'] / by['full']:.0%} of full "
            f"{by['full']:.1f} s; a night with nothing new {by['unchanged']:.1f} s "
            f"({by['unchanged'] / by['full']:.0%}); the day's data adds {by['incremental'] - by['unchanged']:+.1f} s"
        )
    sizes = sorted({r["patients"] for r in results})
    if len(sizes) > 1:
        # a night cannot cost less than the same night on a clinic of almost no patients: what the tools'
        # start-up, dbt's parse and per-node overhead, GX's suites and Data Docs cost with no data to speak of
        smallest = sizes[0]
        floor = next(r["seconds"] for r in results if r["patients"] == smallest and r["refresh"] == "incremental")
        print(f"the floor under any night: the night of a {smallest:,}-patient clinic, {floor:.1f} s;")
        for n in sizes[1:]:
            full = next(r["seconds"] for r in results if r["patients"] == n and r["refresh"] == "full")
            print(f"{n:>9,}  that floor is {floor / full:.0%} of the full refresh ({full:.1f} s)")
    write_results(results, args.out)


if __name__ == "__main__":
    main()
