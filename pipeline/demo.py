"""`make demo`: the nightly refresh end to end against the synthetic clinic on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from pipeline import local_ehr, refresh
from pipeline.settings import Settings


def run(data_dir: Path, patients: int = 300, seed: int = 42, port: int = 8765, log=print) -> dict:
    ehr_dir = data_dir / "ehr"
    local_ehr.ensure_clinic(ehr_dir, patients, seed, log)
    client_id, key = local_ehr.ensure_client(ehr_dir, data_dir / "secrets", log)
    with local_ehr.running_ehr(ehr_dir, port, log=log) as base:
        settings = Settings.from_env(
            ehr_url=base, client_id=client_id, private_key_path=key, warehouse=data_dir / "warehouse.duckdb"
        )
        summary = refresh.run(settings, log=log)
    log("")
    log(f"warehouse:  {settings.warehouse.resolve()}")
    log(f"landing:    {settings.landing.resolve()}")
    log(f"clinic:     {ehr_dir.resolve()} (latent truth in truth/)")
    return summary
