"""The `outcomes` and `airflow` console scripts in real processes that skip the interpreter's start-up: one
long-lived process per test worker imports the heavy libraries (Great Expectations, dbt, lifelines, polars, ...)
once, then forks a child per command. The child runs the console script's own entry point with the command's
arguments, environment and working directory, its stdout and stderr in files, and exits with the command's exit
code -- what the test sees is what `subprocess.run` of the console script would give it, without paying the
libraries' imports again for every command (the saving is in the commit message and README). (Airflow itself is imported in the child: it reads AIRFLOW_HOME on import.)

Run as a script, this module is that long-lived process: it reads one JSON request per line on stdin and
answers one JSON line on stdout when the child has exited.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# What a night imports lazily, costliest first; importing them creates no threads, so forking stays safe.
HEAVY_MODULES = (
    "great_expectations",
    "dbt.cli.main",
    "dbt.adapters.duckdb",
    "lifelines.statistics",
    "polars",
    "pandas",
    "pyarrow",
    "plotly.graph_objects",
    "duckdb",
    "httpx",
    "jwt",
    "markdown_it",
)


# console script -> (module, function, whether the function takes argv)
PROGRAMS = {
    "outcomes": ("pipeline.cli", "main", True),
    "airflow": ("airflow.__main__", "main", False),
    "dbt": ("dbt.cli.main", "cli", False),
}


class Launcher:
    """One pre-imported interpreter; `run` has `subprocess.run(capture_output=True, text=True)`'s contract."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=root,
            text=True,
        )
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the pre-imported interpreter did not start: {ready!r}")

    def run(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        timeout: float,
        program: str = "outcomes",
        output: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """`program args` in a forked child; its stdout and stderr are returned, or both written to `output`."""
        with tempfile.TemporaryDirectory(prefix="outcomes-cli-") as tmp:
            out, err = (output, output) if output else (Path(tmp) / "stdout", Path(tmp) / "stderr")
            request = {
                "program": program,
                "args": args,
                "env": env,
                "cwd": str(cwd),
                "timeout": timeout,
                "stdout": str(out),
                "stderr": str(err),
            }
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the pre-imported interpreter exited")
            answer = json.loads(line)
            stdout, stderr = ("", "") if output else (out.read_text(errors="replace"), err.read_text(errors="replace"))
        cmd = [program, *args]
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(cmd, timeout, stdout, stderr)
        return subprocess.CompletedProcess(cmd, answer["returncode"], stdout, stderr)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _child(request: dict) -> None:
    """In the forked child: become `outcomes <args>` and exit with its code. Never returns."""
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND), 1)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND), 2)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), write_through=True)  # noqa: SIM115
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        module, function, takes_argv = PROGRAMS[request["program"]]
        sys.argv = [str(Path(sys.executable).parent / request["program"]), *request["args"]]
        main = getattr(importlib.import_module(module), function)
        code = (main(request["args"]) if takes_argv else main()) or 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            code = 1
        else:
            code = e.code or 0
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - exiting either way
                pass
        os._exit(code)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9, True
        time.sleep(0.02)


def _warm_dbt() -> None:
    """One `dbt parse` of the project on a scratch warehouse: a process's first dbt command also builds dbt's
    per-class schemas and Jinja machinery, which every forked child would otherwise build again (each test's new
    warehouse is parsed in full anyway: the warehouse path is part of what dbt's partial parse checks). It opens
    no database and leaves no thread running. dbt's static parser (a Rust extension) stays unused here: a child
    forked after it had run hung in its first parse."""
    from pipeline.transform import dbt_invoke

    with tempfile.TemporaryDirectory(prefix="outcomes-dbt-warm-") as scratch:
        result = dbt_invoke(Path(scratch) / "warehouse.duckdb", ["parse", "--no-static-parser"], quiet=True)
        if not result.success:
            raise RuntimeError(f"dbt parse failed in the pre-imported interpreter: {result.exception}")
    # dbt's adapter holds multiprocessing locks, which started a resource tracker here; children must each
    # start their own (as without this warm-up), or the shared one reports their locks as leaked at the end
    from multiprocessing import resource_tracker

    from dbt.adapters.factory import reset_adapters

    reset_adapters()
    gc.collect()
    resource_tracker._resource_tracker._stop()


def serve() -> None:
    sys.path[0] = str(Path(sys.executable).parent)  # as the console script has it, not this file's folder
    from expectations.gate import import_gx

    import_gx()  # as the gate imports it
    for name in HEAVY_MODULES:
        importlib.import_module(name)
    _warm_dbt()
    answers = sys.stdout
    print("ready", file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        returncode, timed_out = _wait(pid, request["timeout"])
        print(json.dumps({"returncode": returncode, "timed_out": timed_out}), file=answers, flush=True)


if __name__ == "__main__":
    serve()
