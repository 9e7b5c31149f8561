"""Run the stand-in EHR for the demo: generate the clinic if absent, register a client, serve on 127.0.0.1.

Only the CLI's demo and `ehr` commands use this; pipeline steps never do (they talk HTTP to any EHR).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def ensure_clinic(ehr_dir: Path, patients: int, seed: int, log=print) -> None:
    if (ehr_dir / "manifest.json").exists():
        log(
            f"synthetic clinic: {ehr_dir} (exists; `outcomes ehr generate --continue-days 1 --out {ehr_dir}` "
            "adds a day)"
        )
        return
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig

    log(f"synthetic clinic: generating {patients} patients (seed {seed}) into {ehr_dir}")
    generate(GeneratorConfig(patients=patients, seed=seed), ehr_dir)


def register_new_client(ehr_dir: Path, key_out: Path, alg: str = "RS384", client_id: str | None = None) -> str:
    """A new client key (as `outcomes keys new` makes one), registered with the stand-in by its public JWKS."""
    from ehr_simulator.auth import register_jwks
    from ingestion.client_keys import jwks, new_private_key, write_private_key

    pem = new_private_key(alg)
    write_private_key(key_out, pem, overwrite=True)
    return register_jwks(ehr_dir, jwks(pem), client_id)


def ensure_client(ehr_dir: Path, secrets_dir: Path, log=print) -> tuple[str, Path]:
    """A registered client key for the local EHR (kept beside the warehouse, git-ignored, mode 0600)."""
    from ehr_simulator.auth import load_clients

    key = secrets_dir / "ehr_client.pem"
    meta = secrets_dir / "ehr_client.json"
    if key.exists() and meta.exists():
        client_id = json.loads(meta.read_text())["client_id"]
        if client_id in load_clients(ehr_dir):
            return client_id, key
    client_id = register_new_client(ehr_dir, key, "RS384")
    meta.write_text(json.dumps({"client_id": client_id}) + "\n")
    log(f"registered demo client {client_id} with the local EHR (key {key})")
    return client_id, key


def _free_port(preferred: int) -> int:
    """`preferred` if it is free, else any free port (0 means any)."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_ehr(ehr_dir: Path, port: int = 8765, faults: str = "", log=print):
    """Serve `ehr_dir` on 127.0.0.1 in a child process for the duration of the block; yields the base URL."""
    import httpx

    port = _free_port(port)
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "ehr",
            "serve",
            "--data",
            str(ehr_dir),
            "--port",
            str(port),
            "--fault",
            faults,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/.well-known/smart-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"the local EHR exited: {proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError("the local EHR did not start within 120 s")
            time.sleep(0.2)
        log(f"local EHR serving {ehr_dir} at {base}")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log("local EHR stopped")
