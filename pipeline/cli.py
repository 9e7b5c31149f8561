"""The `outcomes` command line: every pipeline step, the stand-in EHR and the demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from pipeline import commands
from pipeline.cli_support import CliError, _port, _positive, _progress

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"


# --- ehr ---------------------------------------------------------------------------------------------
def _generator_config(args: argparse.Namespace, without_patients: str):
    """The clinic (or network) the generate options describe; seed 42 by default."""
    from ehr_simulator.params import GeneratorConfig, MessRates

    if args.patients is None:
        raise CliError(without_patients)
    cfg = GeneratorConfig(
        patients=args.patients, seed=args.seed if args.seed is not None else 42, file_mess=args.file_mess
    )
    return dataclasses.replace(cfg, mess=MessRates.off()) if args.no_mess else cfg


def cmd_ehr_generate(args: argparse.Namespace) -> int:
    from ehr_simulator.generate import continue_clinic, generate, load_config
    from ehr_simulator.network import continue_network, generate_network, is_network

    out = Path(args.out)
    if args.continue_days and is_network(out):
        for site_id, manifest in continue_network(out, args.continue_days, _progress("patients")).items():
            print(
                f"extended {site_id} in {out / site_id} by {args.continue_days} day(s): as-of "
                f"{manifest['transactionTime']}"
            )
        return 0
    if args.sites > 1 and not args.continue_days:
        base = _generator_config(args, "--patients is required: the network's patients, split between its sites")
        manifests = generate_network(base, args.sites, out, _progress("patients"))
        for site_id, manifest in manifests.items():
            lines = sum(o["count"] for o in manifest["output"])
            print(f"generated {site_id} in {out / site_id}: {lines:,} lines, as-of {manifest['transactionTime']}")
        print(f"  sites, volumes and effect sizes: {out / 'network.json'}; load each with OUTCOMES_SITE_ID=<site>")
        return 0
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
        cfg = _generator_config(args, "--patients is required (or --continue-days D to extend an existing clinic)")
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
    serve(
        data,
        host=args.host,
        port=args.port,
        faults=faults,
        max_lines_per_file=args.max_lines_per_file,
        admin=args.admin,
    )
    return 0


def cmd_ehr_register(args: argparse.Namespace) -> int:
    """Register a client with the stand-in EHR by its public JWKS, as a clinic registers its app with an EHR."""

    from ehr_simulator.auth import register_jwks
    from pipeline.local_ehr import register_new_client

    data = Path(args.data)
    if not data.is_dir():
        raise CliError(f"{data} is not a folder: generate the clinic first")
    if bool(args.jwks) == bool(args.key_out):
        raise CliError("give either --key-out KEY (a new key pair) or --jwks FILE (from `outcomes keys jwks`)")
    if args.jwks:
        try:
            client_id = register_jwks(data, json.loads(Path(args.jwks).read_text()), args.client_id)
        except (OSError, ValueError) as e:
            raise CliError(f"cannot register the JWKS {args.jwks}: {e}") from None
        print(f"registered client {client_id} with the stand-in EHR (JWKS {args.jwks})")
        return 0
    client_id = register_new_client(data, Path(args.key_out), args.alg, args.client_id)
    print(f"registered client {client_id} ({args.alg}) with the stand-in EHR; private key written to {args.key_out}")
    print(f"  export OUTCOMES_CLIENT_ID={client_id} OUTCOMES_PRIVATE_KEY_PATH={args.key_out}")
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from ingestion.client_keys import jwks, new_private_key, write_private_key

    pem = new_private_key(args.alg)
    try:
        write_private_key(Path(args.out), pem)
    except FileExistsError:
        raise CliError(f"{args.out} exists: keys are never overwritten (move it away, or pick another path)") from None
    print(json.dumps(jwks(pem, args.kid), indent=2))
    print(
        f"private key ({args.alg}) written to {args.out} (mode 0600); register the JWKS above with the EHR and "
        f"set OUTCOMES_PRIVATE_KEY_PATH={args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_keys_jwks(args: argparse.Namespace) -> int:
    from ingestion.client_keys import jwks

    path = args.key or os.environ.get("OUTCOMES_PRIVATE_KEY_PATH")
    pem = Path(path).read_bytes() if path else os.environ.get("OUTCOMES_PRIVATE_KEY", "").encode()
    if not pem:
        raise CliError("no key: pass --key PATH or set OUTCOMES_PRIVATE_KEY_PATH / OUTCOMES_PRIVATE_KEY")
    try:
        print(json.dumps(jwks(pem, args.kid or os.environ.get("OUTCOMES_CLIENT_KID") or None), indent=2))
    except ValueError as e:
        raise CliError(str(e)) from None
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
    g.add_argument(
        "--sites",
        type=_positive,
        default=1,
        help="a network of N clinics (site-1 ... site-N under --out), each with its own patients, volume and "
        "effect sizes; --patients is the network's total",
    )
    g.add_argument("--no-mess", action="store_true", help="switch off all real-world EHR mess")
    g.add_argument(
        "--file-mess",
        action="store_true",
        help="also write the format mess of a bad export file (malformed, duplicate and superseded lines), "
        "for `outcomes load --from-dir` tests; the server never serves it",
    )
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
    s.add_argument(
        "--admin",
        action="store_true",
        help="open POST /_admin/faults to switch faults while running (with the token the server writes to "
        "<data>/_ehr/admin_token); off by default",
    )
    s.set_defaults(func=cmd_ehr_serve)

    r = ehr_sub.add_parser(
        "register-client",
        help="create a client key pair and register it with the EHR",
        description="Create a SMART Backend Services client key (RS384 or ES384), write the "
        "private key (mode 0600) and register the public key with the stand-in EHR.",
    )
    r.add_argument("--data", required=True, help="the EHR's clinic folder")
    r.add_argument("--key-out", help="create a key pair: where to write the private key (PEM, mode 0600)")
    r.add_argument("--jwks", help="register an existing public JWKS instead (from `outcomes keys jwks`)")
    r.add_argument("--alg", choices=("RS384", "ES384"), default="RS384")
    r.add_argument("--client-id", help="client id (default: generated)")
    r.set_defaults(func=cmd_ehr_register)

    keys = sub.add_parser(
        "keys",
        help="the client's signing key and the public JWKS to register with the EHR",
        description="SMART Backend Services keys. EHRs register a backend app by its public JWKS and pick "
        "the key by `kid` (here the key's RFC 7638 thumbprint unless OUTCOMES_CLIENT_KID says otherwise).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    kn = keys_sub.add_parser("new", help="create a private key and print its public JWKS")
    kn.add_argument("--out", required=True, help="where to write the private key (PEM, mode 0600; never overwritten)")
    kn.add_argument("--alg", choices=("RS384", "ES384"), default="RS384")
    kn.add_argument("--kid", help="key id (default: the RFC 7638 thumbprint)")
    kn.set_defaults(func=cmd_keys_new)
    kj = keys_sub.add_parser("jwks", help="print the public JWKS of a private key")
    kj.add_argument("--key", help="private key PEM (default: OUTCOMES_PRIVATE_KEY_PATH or OUTCOMES_PRIVATE_KEY)")
    kj.add_argument("--kid", help="key id (default: OUTCOMES_CLIENT_KID, else the RFC 7638 thumbprint)")
    kj.set_defaults(func=cmd_keys_jwks)

    commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"outcomes: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("outcomes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
