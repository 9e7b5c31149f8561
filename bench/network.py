"""Network benchmark: a network of clinics (default 5 sites x 10,000 patients) into one warehouse, the full night
and the next night, with the marts built on each engine (DuckDB, and Spark local[2] through dbt-spark).

Each site's load runs as its own step (as each site's EHR connection would; from the site's files, so the next
night's load re-reads them whole and skips the versions it holds), then stage, the raw gate, the
transform on DuckDB, the transform on Spark (the same dbt project, from the lake), the mart gate and publish.
Every step runs in a fresh process; peak memory is that process's resident set together with its children's
(Spark's JVM), sampled every 0.2 s. The next night is `outcomes ehr generate --continue-days 1` on every site.

Prints a table and writes it as JSON (bench/results/network.json).

Usage: python bench/network.py [--sites 5] [--patients-per-site 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure_tree, write_results  # noqa: E402


def _step(name: str, warehouse: str, site: str | None = None, from_dir: str | None = None) -> dict:
    from pipeline import steps
    from pipeline.settings import Settings

    quiet = {"log": lambda _: None}
    overrides = {"warehouse": Path(warehouse), "site_id": site, "data_docs": False}
    if name == "transform spark":
        overrides["engine"] = "spark"
    settings = Settings.from_env(**overrides)
    if name == "load":
        return {"read": steps.load(settings, from_dir=Path(from_dir), progress=False, **quiet).totals["read"]}
    run = {
        "stage": steps.stage,
        "validate raw": steps.validate_raw,
        "transform duckdb": steps.transform,
        "transform spark": steps.transform,
        "validate marts": steps.validate_marts,
        "publish": steps.publish,
    }[name]
    run(settings, **quiet)
    return {}


LATER_STEPS = ("stage", "validate raw", "transform duckdb", "transform spark", "validate marts", "publish")


def night(network: Path, warehouse: Path, sites: list[str], kind: str):
    """Each step's row as soon as it is measured."""
    for site in sites:
        secs, peak, out = measure_tree(_step, "load", str(warehouse), site, str(network / site))
        yield {"night": kind, "step": f"load {site}", "seconds": round(secs, 1), "peak_mib": round(peak)} | out
    for step in LATER_STEPS:
        secs, peak, _ = measure_tree(_step, step, str(warehouse))
        yield {"night": kind, "step": step, "seconds": round(secs, 1), "peak_mib": round(peak)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--patients-per-site", type=int, default=10_000)
    ap.add_argument("--nights", default="full,next", help="full, or full,next (default)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "network.json"))
    args = ap.parse_args()
    from ehr_simulator.network import continue_network, generate_network
    from ehr_simulator.params import GeneratorConfig

    results = []
    with tempfile.TemporaryDirectory() as d:
        network = Path(d) / "ehr"
        total = args.sites * args.patients_per_site
        print(f"generating a network of {args.sites} sites, {total:,} patients ...", flush=True)
        generate_network(GeneratorConfig(patients=total, seed=1), args.sites, network)
        sites = sorted(p.name for p in network.iterdir() if p.is_dir())
        warehouse = Path(d) / "warehouse.duckdb"
        print(f"{'night':<6} {'step':<18} {'seconds':>8} {'peak MiB':>9} {'read':>10}", flush=True)
        nights = args.nights.split(",")
        for kind in nights:
            if kind == "next":
                continue_network(network, 1)
            for r in night(network, warehouse, sites, kind):
                results.append({"sites": args.sites, "patients": total, **r})
                read = f"{r['read']:>10,}" if "read" in r else ""
                print(f"{kind:<6} {r['step']:<18} {r['seconds']:>8.1f} {r['peak_mib']:>9} {read}", flush=True)
        lake_mib = sum(f.stat().st_size for f in (Path(d) / "lake").rglob("*.parquet")) / 2**20
        wh_mib = warehouse.stat().st_size / 2**20
    for kind in nights:
        by = {r["step"]: r["seconds"] for r in results if r["night"] == kind}
        loads = sum(v for k, v in by.items() if k.startswith("load"))
        common = loads + by["stage"] + by["validate raw"] + by["validate marts"] + by["publish"]
        for engine in ("duckdb", "spark"):
            t = by[f"transform {engine}"]
            print(f"{kind} night on {engine}: {common + t:.0f} s (transform {t:.0f} s, the other steps {common:.0f} s)")
        print(f"  spark / duckdb transform: {by['transform spark'] / by['transform duckdb']:.1f}x")
    print(f"warehouse {wh_mib:.0f} MiB, lake {lake_mib:.0f} MiB")
    write_results(results, args.out)


if __name__ == "__main__":
    main()
