"""A network of clinics: one synthetic clinic per site, each with its own patients (its own seed, so no
resource id is shared), its own volume and its own effect sizes, drawn deterministically from the network's
seed. Each site is a folder `<out>/site-<k>/` that `outcomes ehr serve` or `outcomes load --from-dir`
takes as it is; `<out>/network.json` says which site got what."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path

from ehr_simulator.generate import continue_clinic, generate
from ehr_simulator.params import GeneratorConfig

NETWORK_FILE = "network.json"


def site_configs(base: GeneratorConfig, sites: int) -> list[tuple[str, GeneratorConfig, dict]]:
    """(site id, its config, what differs from the base) per site: patients split by drawn volumes (0.6-1.4
    of an equal share), clinician-rated response x 0.85-1.15 and relapse medians x 0.75-1.3 -- so sites
    differ as real ones do, and a per-site result has something to find."""
    rng = random.Random(f"{base.seed}:network")
    volumes = [rng.uniform(0.6, 1.4) for _ in range(sites)]
    out = []
    for k, volume in enumerate(volumes, 1):
        response = rng.uniform(0.85, 1.15)
        relapse = rng.uniform(0.75, 1.3)
        params = dataclasses.replace(
            base.params,
            clinician_response=min(0.9, base.params.clinician_response * response),
            relapse_median_days={p: d * relapse for p, d in base.params.relapse_median_days.items()},
        )
        patients = max(1, round(base.patients * volume / sum(volumes)))
        cfg = dataclasses.replace(base, patients=patients, seed=base.seed * 1000 + k, params=params)
        effects = {"patients": patients, "clinician_response_factor": response, "relapse_median_factor": relapse}
        out.append((f"site-{k}", cfg, effects))
    return out


def generate_network(
    base: GeneratorConfig, sites: int, out: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, dict]:
    """Write every site's clinic and network.json; returns each site's manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifests, described = {}, {}
    for site_id, cfg, effects in site_configs(base, sites):
        manifests[site_id] = generate(cfg, out / site_id, progress)
        described[site_id] = {**effects, "seed": cfg.seed, "folder": site_id}
    (out / NETWORK_FILE).write_text(
        json.dumps({"seed": base.seed, "patients": base.patients, "sites": described}, indent=2) + "\n"
    )
    return manifests


def is_network(out: Path) -> bool:
    return (out / NETWORK_FILE).exists()


def continue_network(out: Path, days: int, progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """Extend every site's clinic by `days` (new and amended resources), as `continue_clinic` does one."""
    sites = json.loads((out / NETWORK_FILE).read_text())["sites"]
    return {site_id: continue_clinic(out / d["folder"], days, progress) for site_id, d in sites.items()}
