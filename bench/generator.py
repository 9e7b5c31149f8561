"""Generator throughput (resources/s) and peak memory at 1k and 10k patients.

Usage: python bench/generator.py [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402


def run(patients: int, out: str) -> int:
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig

    manifest = generate(GeneratorConfig(patients=patients, seed=1), Path(out))
    return sum(o["count"] for o in manifest["output"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,10000")
    args = ap.parse_args()
    print(f"{'patients':>9} {'resources':>11} {'seconds':>8} {'resources/s':>12} {'peak MiB':>9}")
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            secs, peak, count = measure(run, n, d)
            size = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file()) / 2**20
        print(f"{n:>9,} {count:>11,} {secs:>8.1f} {count / secs:>12,.0f} {peak:>9.0f}   ({size:,.0f} MiB on disk)")


if __name__ == "__main__":
    main()
