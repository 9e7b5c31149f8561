"""What each outcome-definition switch does to the headline numbers, measured on a synthetic clinic.

Builds the marts of one refreshed clinic once per setting -- the defaults, then each switch flipped alone --
from copies of the same warehouse, and prints per protocol and scale: courses counted, response and remission
rates, responders who relapse, and the median relapse-free days, with the change from the defaults. The
figures feed docs/definitions.md ("What the v2 switches do to the headline numbers").

Usage: python bench/definition_switches.py [--patients 2000] [--seed 42] [--scales madrs,phq9,pcl5]
       python bench/definition_switches.py --warehouse PATH   (an already refreshed warehouse)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

SWITCHES = {
    "defaults": {},
    "booster not a relapse": {"relapse_on_booster": False},
    "re-treatment not a relapse": {"relapse_on_retreatment": False},
    "provisional outcomes counted": {"include_provisional_outcomes": True},
}

HEADLINE = """
    SELECT protocol, instrument, n_evaluable, response_rate, remission_rate,
           n_relapsed::DOUBLE / nullif(n_responders, 0) AS relapsed_share, median_relapse_free_days
    FROM marts_build.rpt_protocol_summary WHERE instrument IN ({scales}) ORDER BY protocol, instrument"""


def refreshed_warehouse(patients: int, seed: int, root: Path) -> Path:
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig
    from pipeline import refresh
    from pipeline.settings import Settings

    print(f"generating a {patients:,}-patient clinic (seed {seed}) and refreshing it ...", flush=True)
    generate(GeneratorConfig(patients=patients, seed=seed), root / "ehr")
    warehouse = root / "base" / "warehouse.duckdb"
    refresh.run(Settings.from_env(warehouse=warehouse), from_dir=root / "ehr", log=lambda _: None)
    return warehouse


def headline(warehouse: Path, switch: dict, scales: list[str], root: Path) -> dict[tuple[str, str], tuple]:
    import duckdb

    from pipeline.settings import Settings
    from pipeline.transform import build

    copy = root / f"variant-{len(list(root.glob('variant-*')))}" / "warehouse.duckdb"
    copy.parent.mkdir(parents=True)
    shutil.copy(warehouse, copy)
    dbt_vars = {"clinic_timezone": Settings.from_env(warehouse=copy).clinic_tz, **switch}
    build(copy, dbt_vars, select="fct_course_outcomes+", log=lambda _: None, quiet=True)
    con = duckdb.connect(str(copy), read_only=True)
    try:
        rows = con.execute(HEADLINE.format(scales=", ".join(f"'{s}'" for s in scales))).fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2:] for r in rows}


def _pct(x: float | None) -> str:
    return "  –  " if x is None else f"{x:5.1%}"


def _delta(x: float | None, base: float | None, scale: float = 100.0, unit: str = " pt") -> str:
    if x is None or base is None or abs(x - base) < 1e-12:
        return ""
    digits = 0 if unit in ("", " d") else 1
    return f" ({(x - base) * scale:+.{digits}f}{unit})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--warehouse", type=Path, help="measure this refreshed warehouse instead")
    parser.add_argument("--scales", default="madrs,phq9,pcl5")
    args = parser.parse_args()
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="switches-") as tmp:
        root = Path(tmp)
        warehouse = args.warehouse or refreshed_warehouse(args.patients, args.seed, root)
        results = {}
        for name, switch in SWITCHES.items():
            t0 = time.perf_counter()
            results[name] = headline(warehouse, switch, scales, root)
            print(f"built the marts with {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = results["defaults"]
    print()
    print(
        f"{'setting':<30} {'protocol':<15} {'scale':<6} {'counted':>8} {'response':>16} {'remission':>16} "
        f"{'responders relapsing':>22} {'median days':>16}"
    )
    for name, rows in results.items():
        for key, (n, resp, rem, relapsed, median) in rows.items():
            b = base.get(key, (None,) * 5)
            print(
                f"{name:<30} {key[0]:<15} {key[1]:<6} {n:>8}{_delta(n, b[0], 1, ''):<0} "
                f"{_pct(resp):>7}{_delta(resp, b[1]):<9} {_pct(rem):>7}{_delta(rem, b[2]):<9} "
                f"{_pct(relapsed):>11}{_delta(relapsed, b[3]):<11} "
                f"{'NR' if median is None else f'{median:.0f}':>7}{_delta(median, b[4], 1, ' d'):<9}"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
