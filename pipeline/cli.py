"""The `outcomes` command line: every pipeline step, the stand-in EHR and the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {v}")
        return v

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _port(text: str) -> int:
    v = _non_negative(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {v}")
    return v


def _progress(label: str):
    def report(done: int, total: int) -> None:
        print(
            f"\r  {label}: {done:,}/{total:,} ({100 * done // max(1, total)}%)",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if done >= total:
            print(file=sys.stderr)

    return report


# --- ehr ---------------------------------------------------------------------------------------------
def cmd_ehr_generate(args: argparse.Namespace) -> int:
    import dataclasses

    from ehr_simulator.generate import continue_clinic, generate, load_config
    from ehr_simulator.params import GeneratorConfig, MessRates

    out = Path(args.out)
    if args.continue_days:
        if args.patients is not None or args.seed is not None:
            raise CliError("--continue-days extends the clinic already in --out; drop --patients/--seed")
        try:
            before = load_config(out)
        except FileNotFoundError as e:
            raise CliError(str(e)) from None
        manifest = continue_clinic(out, args.continue_days, _progress("patients"))
        print(
            f"extended clinic in {out} by {args.continue_days} day(s): as-of {before.as_of_day} -> "
            f"{manifest['transactionTime']}"
        )
    else:
        if args.patients is None:
            raise CliError("--patients is required (or --continue-days D to extend an existing clinic)")
        cfg = GeneratorConfig(patients=args.patients, seed=args.seed if args.seed is not None else 42)
        if args.no_mess:
            cfg = dataclasses.replace(cfg, mess=MessRates.off())
        manifest = generate(cfg, out, _progress("patients"))
        print(
            f"generated clinic in {out}: {args.patients} patients, seed {cfg.seed}, as-of {manifest['transactionTime']}"
        )
    for o in manifest["output"]:
        print(f"  {o['type']:<26} {o['count']:>10,} lines")
    print(f"  truth (latent outcomes): {out / 'truth'}")
    return 0


def cmd_ehr_serve(args: argparse.Namespace) -> int:
    from ehr_simulator.server import Faults, serve

    data = Path(args.data)
    if not (data / "manifest.json").exists():
        raise CliError(f"{data} has no manifest.json: run `outcomes ehr generate --out {data}` first")
    try:
        faults = Faults.parse(args.fault)
    except ValueError as e:
        raise CliError(str(e)) from None
    serve(data, host=args.host, port=args.port, faults=faults, max_lines_per_file=args.max_lines_per_file)
    return 0


def cmd_ehr_register(args: argparse.Namespace) -> int:
    from ehr_simulator.auth import register_client

    data = Path(args.data)
    if not data.is_dir():
        raise CliError(f"{data} is not a folder: generate the clinic first")
    client_id = register_client(data, Path(args.key_out), args.alg, args.client_id)
    print(f"registered client {client_id} ({args.alg}); private key written to {args.key_out}")
    print(f"  export OUTCOMES_CLIENT_ID={client_id} OUTCOMES_PRIVATE_KEY_PATH={args.key_out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="outcomes",
        description="Ketamine clinic outcomes pipeline: FHIR R4 EHR -> DuckDB raw -> dbt marts -> quality "
        "gates -> dashboards.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ehr = sub.add_parser(
        "ehr",
        help="the local stand-in EHR: generate a synthetic clinic, serve it over FHIR",
        description="The local stand-in EHR (synthetic clinic + FHIR server on 127.0.0.1).",
    )
    ehr_sub = ehr.add_subparsers(dest="ehr_command", metavar="SUBCOMMAND", required=True)

    g = ehr_sub.add_parser(
        "generate",
        help="write a synthetic clinic in FHIR Bulk Data layout",
        description="Write a deterministic synthetic ketamine clinic: one NDJSON file per "
        "resource type, a manifest, and the latent truth under truth/.",
    )
    g.add_argument("--patients", type=_positive, help="patients enrolled over the first year")
    g.add_argument("--seed", type=int, help="random seed (default 42); same seed, same bytes")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument(
        "--continue-days",
        type=_positive,
        default=0,
        help="extend the clinic already in --out by D more days (new and amended resources)",
    )
    g.add_argument("--no-mess", action="store_true", help="switch off all real-world EHR mess")
    g.set_defaults(func=cmd_ehr_generate)

    s = ehr_sub.add_parser(
        "serve",
        help="serve a generated clinic: SMART auth, Bulk Data export, search",
        description="Serve a generated clinic over FHIR R4 on 127.0.0.1 (Ctrl-C to stop).",
    )
    s.add_argument("--data", required=True, help="folder written by `outcomes ehr generate`")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=_port, default=8765, help="port (default 8765)")
    s.add_argument(
        "--fault",
        default="",
        help="comma list of faults to inject: rate-limit, unavailable, expire-tokens, slow, truncate",
    )
    s.add_argument(
        "--max-lines-per-file",
        type=_positive,
        default=100_000,
        help="split export files after this many lines",
    )
    s.set_defaults(func=cmd_ehr_serve)

    r = ehr_sub.add_parser(
        "register-client",
        help="create a client key pair and register it with the EHR",
        description="Create a SMART Backend Services client key (RS384 or ES384), write the "
        "private key (mode 0600) and register the public key with the stand-in EHR.",
    )
    r.add_argument("--data", required=True, help="the EHR's clinic folder")
    r.add_argument("--key-out", required=True, help="where to write the private key (PEM)")
    r.add_argument("--alg", choices=("RS384", "ES384"), default="RS384")
    r.add_argument("--client-id", help="client id (default: generated)")
    r.set_defaults(func=cmd_ehr_register)

    from pipeline import commands

    commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"outcomes: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("outcomes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
