"""What the `outcomes` command and its pipeline subcommands share: the user-facing error and argument types."""

from __future__ import annotations

import argparse
import sys


class CliError(Exception):
    """A user-facing error: printed without a traceback; exit code 2 unless it says otherwise (75: the
    warehouse is being written by another process, try again later)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
