"""Raw-layer load throughput and peak memory (1k vs 10k patients), against a naive per-record path.

The naive path is what one would write first: json-parse each line, validate it with a fhir.resources
model, insert row by row into DuckDB. Both run in this script, on the same files. A third line, `storage`,
is the floor under the product path: the same lines read and stored the same way with no checks at all.

Usage: python bench/load.py [--sizes 1000,10000] [--naive-lines 60000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402


def make_clinic(patients: int, out: str) -> None:
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig

    generate(GeneratorConfig(patients=patients, seed=1, file_mess=True), Path(out))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def product_load(clinic: str, warehouse: str) -> tuple[int, list[float]]:
    """Lines read, and the process's resident memory after each batch (does it grow with the export?)."""
    from ingestion.raw_load import Loader, plan_from_directory
    from ingestion.warehouse import connect

    rss: list[float] = []
    con = connect(Path(warehouse))
    loader = Loader(con, log=lambda _: None, progress=lambda _file, _lines: rss.append(_rss_mib()))
    result = loader.load(plan_from_directory(Path(clinic)))
    con.close()
    return result.totals()["read"], rss


def storage_floor(clinic: str, warehouse: str) -> int:
    """What the load cannot go below on this machine: the same lines read the same way and stored the same
    way (the versions table, batch by batch, committed), with no classification, dedupe or quarantine.
    Batches of one row group, so that, like the product's inserts, they never leave a partial group."""
    from ingestion.line_reader import as_arrow, ndjson_batches
    from ingestion.raw_load import LOAD_MEMORY_LIMIT, ROW_GROUP_ROWS
    from ingestion.warehouse import connect, ensure_raw_schema

    con = connect(Path(warehouse))
    ensure_raw_schema(con)
    con.execute(f"SET memory_limit = '{LOAD_MEMORY_LIMIT}'")
    n = 0
    for f in sorted(Path(clinic).glob("*.ndjson")):
        for batch in ndjson_batches(f, ROW_GROUP_ROWS):
            con.register("batch", as_arrow(batch))  # as the product does
            con.execute("BEGIN TRANSACTION")
            con.execute("""
                INSERT INTO raw.observation_versions_landed (resource_id, version_key, is_deleted, resource,
                    load_id, line_number)
                SELECT '', '', false, line, '', line_number FROM batch""")
            con.execute("COMMIT")
            n += batch.height
    con.close()
    return n


def naive_load(clinic: str, warehouse: str, max_lines: int) -> int:
    import duckdb
    import orjson
    from fhir.resources.R4B import get_fhir_model_class

    con = duckdb.connect(warehouse)
    con.execute("CREATE TABLE resources (resource_type VARCHAR, id VARCHAR, version_id VARCHAR, resource JSON)")
    n = 0
    for f in sorted(Path(clinic).glob("*.ndjson")):
        rows = []
        for line in f.read_bytes().splitlines():
            if n >= max_lines:
                break
            n += 1
            try:
                res = orjson.loads(line)
                get_fhir_model_class(res["resourceType"]).model_validate(res)
            except Exception:  # noqa: BLE001 - the naive path just skips what it cannot read
                continue
            rows.append((res["resourceType"], res["id"], res.get("meta", {}).get("versionId"), line.decode()))
        if rows:
            con.executemany("INSERT INTO resources VALUES (?, ?, ?, ?)", rows)
    con.close()
    return n


def _fresh(path: str) -> str:
    for p in (Path(path), Path(path + ".wal")):
        p.unlink(missing_ok=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--naive-lines", type=int, default=60_000, help="lines for the naive path (it is slow)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of the product and storage paths, alternating (median kept)"
    )
    args = ap.parse_args()
    # This VM's speed drifts by 20-25% within minutes: the product and storage paths run alternately, each
    # run printed, and the median of each kept; the product/storage ratio of adjacent runs drifts far less.
    print(f"{'patients':>9} {'path':<8} {'lines':>9} {'seconds':>8} {'lines/s':>10} {'peak MiB':>9}")
    rates = {}
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            clinic = f"{d}/clinic"
            make_clinic(n, clinic)
            runs: dict[str, list[tuple[float, float]]] = {"product": [], "storage": []}
            for i in range(args.repeat):
                secs, peak, (lines, rss) = measure(product_load, clinic, _fresh(f"{d}/product.duckdb"))
                runs["product"].append((lines / secs, peak))
                print(f"{n:>9,} {'product':<8} {lines:>9,} {secs:>8.2f} {lines / secs:>10,.0f} {peak:>9.0f}")
                if i == 0:
                    half = len(rss) // 2
                    print(
                        f"{'':>9} resident after each of {len(rss)} batches: max {max(rss[:half] or rss):,.0f} MiB "
                        f"in the first half, {max(rss[half:]):,.0f} MiB in the second"
                    )
                secs, peak, lines = measure(storage_floor, clinic, _fresh(f"{d}/floor.duckdb"))
                runs["storage"].append((lines / secs, peak))
                print(f"{n:>9,} {'storage':<8} {lines:>9,} {secs:>8.2f} {lines / secs:>10,.0f} {peak:>9.0f}")
            ratios = [p / s for (p, _), (s, _) in zip(runs["product"], runs["storage"], strict=True)]
            for path, rs in runs.items():
                rates[(path, n)] = statistics.median(r for r, _ in rs)
                print(
                    f"{n:>9,} {path:<8} median of {len(rs)}: {rates[(path, n)]:,.0f} lines/s "
                    f"(range {min(r for r, _ in rs):,.0f}-{max(r for r, _ in rs):,.0f}); "
                    f"peak {max(p for _, p in rs):,.0f} MiB"
                )
            print(f"{n:>9,} product/storage in adjacent runs: {', '.join(f'{r:.2f}' for r in ratios)}")
            if n == min(int(x) for x in args.sizes.split(",")):
                secs, peak, lines = measure(naive_load, clinic, f"{d}/naive.duckdb", args.naive_lines)
                rates[("naive", n)] = lines / secs
                print(f"{n:>9,} {'naive':<8} {lines:>9,} {secs:>8.2f} {lines / secs:>10,.0f} {peak:>9.0f}")
    naive = next(v for (p, _), v in rates.items() if p == "naive")
    largest = max(n for _, n in rates)
    print(
        f"speed-up of the product's median over the naive path: {rates[('product', largest)] / naive:.1f}x "
        f"(largest size), {rates[('product', min(n for _, n in rates))] / naive:.1f}x (same size)"
    )


if __name__ == "__main__":
    main()
