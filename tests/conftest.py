"""Shared fixtures: generated clinics and a real `outcomes ehr serve` process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prewarmed import Launcher

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Tests sharing an expensive module or session fixture run on one xdist worker (the fixture is built once), and
# the costliest work units start first so the two workers finish together (longest-first scheduling). The
# weights are rough seconds on this two-core machine; only their order matters. (xdist's own `loadgroup`
# cannot do this under pytest 9: it renames node ids through an attribute pytest 9 no longer reads.)
SHARED_FIXTURE_MODULES = {
    "test_quality.py": ("defective_refresh", 190),
    "test_warehouse.py": ("clinic_warehouse", 210),  # with test_dashboards: the 2,000-patient warehouse
    "test_dashboards.py": ("clinic_warehouse", 210),
    "test_analytics.py": ("nights", 145),
    "test_hostile_input.py": ("hostile_night", 75),
    "test_dag.py": ("two_nights", 120),  # with the DAG's integrity tests (seconds each)
}


def _shared(nodeid: str) -> tuple[str, int] | None:
    """(shared fixture, weight) of the test's module, if its tests share one."""
    return SHARED_FIXTURE_MODULES.get(nodeid.split("::", 1)[0].rsplit("/", 1)[-1])


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """One work unit per shared fixture (its tests together), every other test a unit of its own."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            shared = _shared(nodeid)
            return shared[0] if shared else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items) -> None:
    def weight(item) -> float:
        shared = _shared(item.nodeid)
        if shared:
            return shared[1]
        slow = item.get_closest_marker("slow")
        return float(slow.kwargs.get("seconds", 30)) if slow else 1.0

    items.sort(key=weight, reverse=True)  # stable: a group's tests keep their order


_launcher: Launcher | None = None


def _forked() -> Launcher | None:
    """The worker's pre-imported interpreter (tests/prewarmed.py); OUTCOMES_TESTS_FORK=0 execs instead."""
    global _launcher
    if os.environ.get("OUTCOMES_TESTS_FORK", "1") == "0":
        return None
    if _launcher is None:
        _launcher = Launcher(ROOT)
    return _launcher


def pytest_sessionfinish(session, exitstatus) -> None:
    if _launcher is not None:
        _launcher.close()


# GX's Data Docs take a while to render at every gate: the tests that read them (test_quality's and
# test_hostile_input's nights) switch them on, every other night runs without them
QUIET_DEFAULTS = {"OUTCOMES_DATA_DOCS": "off"}
DATA_DOCS_ON = {"OUTCOMES_DATA_DOCS": "on"}


def outcomes(
    *args: str, check: bool = True, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the `outcomes` CLI in its own process: forked from the worker's pre-imported interpreter, or the
    console script itself (OUTCOMES_TESTS_FORK=0); the same entry point, exit code and output either way."""
    full_env = {**os.environ, **QUIET_DEFAULTS, **(env or {})}
    launcher = _forked()
    if launcher is not None:
        proc = launcher.run(list(args), full_env, ROOT, timeout)
    else:
        proc = subprocess.run(
            [str(BIN / "outcomes"), *args], capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=timeout
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"outcomes {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dbt(warehouse: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """dbt's own console script on `warehouse`, with the command line and environment the pipeline runs dbt
    with (pipeline.transform.dbt_command); forked like `outcomes` unless OUTCOMES_TESTS_FORK=0."""
    from pipeline.transform import dbt_command

    cli, dbt_env = dbt_command(warehouse, list(args), quiet=True)
    full_env = {**os.environ, **dbt_env}
    launcher = _forked()
    if launcher is not None:
        return launcher.run(cli, full_env, ROOT, timeout, program="dbt")
    return subprocess.run(
        [str(BIN / "dbt"), *cli], capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=timeout
    )


def console_script_runner():
    """subprocess.run's signature for the product's own launches of a console script (the demo's `airflow`
    calls), served by the worker's pre-imported interpreter unless OUTCOMES_TESTS_FORK=0."""
    launcher = _forked()
    if launcher is None:
        return subprocess.run

    def run(cmd: list[str], env: dict, stdout=None, stderr=None, capture_output: bool = False, text: bool = False):
        output = Path(stdout.name) if stdout is not None and hasattr(stdout, "name") else None
        return launcher.run(cmd[1:], env, ROOT, 1800, program=Path(cmd[0]).name, output=output)

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EHRProcess:
    def __init__(self, data: Path, faults: str = "", max_lines_per_file: int = 100_000, admin: bool = False) -> None:
        self.data = data
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(BIN / "outcomes"),
                "ehr",
                "serve",
                "--data",
                str(data),
                "--port",
                str(self.port),
                "--fault",
                faults,
                "--max-lines-per-file",
                str(max_lines_per_file),
                *(["--admin"] if admin else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/.well-known/smart-configuration", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"EHR server exited: {self.proc.stdout.read()}")
        raise RuntimeError("EHR server did not start within 60 s")

    def set_faults(self, **faults: bool) -> None:
        token = (self.data / "_ehr" / "admin_token").read_text()
        httpx.post(f"{self.base}/_admin/faults", json=faults, headers={"X-Admin-Token": token}).raise_for_status()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def small_clinic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clinic") / "ehr"
    outcomes("ehr", "generate", "--patients", "60", "--seed", "7", "--out", str(out))
    return out


@pytest.fixture(scope="session")
def client_keys(small_clinic, tmp_path_factory) -> dict:
    keys = tmp_path_factory.mktemp("keys")
    out = {}
    for alg in ("RS384", "ES384"):
        path = keys / f"{alg}.pem"
        outcomes(
            "ehr",
            "register-client",
            "--data",
            str(small_clinic),
            "--key-out",
            str(path),
            "--alg",
            alg,
            "--client-id",
            f"test-{alg.lower()}",
        )
        out[alg] = (f"test-{alg.lower()}", path)
    return out


@pytest.fixture()
def ehr(small_clinic, client_keys):
    server = EHRProcess(small_clinic, admin=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clinic_warehouse(tmp_path_factory) -> tuple[Path, Path]:
    """A 2,000-patient clinic (with EHR mess, file mess included) refreshed from files: real load, gates, dbt build, dashboards."""
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig

    root = tmp_path_factory.mktemp("warehouse")
    ehr = root / "ehr"
    generate(GeneratorConfig(patients=2000, seed=314, file_mess=True), ehr)
    wh = root / "warehouse.duckdb"
    proc = outcomes("refresh", "--from-dir", str(ehr), "--warehouse", str(wh))
    assert "dbt build:" in proc.stdout and "quality: passed" in proc.stdout
    return ehr, wh
