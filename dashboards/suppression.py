"""Small-cell suppression (CMS policy): no displayed count from 1 to 10, none derivable from others."""

from __future__ import annotations

MIN_CELL = 11
SUPPRESSED = "<11"
NEAR_MIN = "11–14"


def count_label(n: int | None) -> str:
    """A count as shown: 0 and 11+ as numbers, 1-10 as '<11'."""
    if n is None:
        return "–"
    return SUPPRESSED if 1 <= n < MIN_CELL else f"{n:,}"


def rate_visible(numerator: int | None, denominator: int | None) -> bool:
    """A rate may be shown only if neither the count it reveals nor its complement is 1-10."""
    if numerator is None or denominator is None or denominator < MIN_CELL:
        return False
    rest = denominator - numerator
    return not (1 <= numerator < MIN_CELL) and not (1 <= rest < MIN_CELL)


def curve_visible(patients: int | None) -> bool:
    return patients is not None and patients >= MIN_CELL


def rounded_label(n: int | None) -> str:
    """Counts whose differences would be shown (numbers at risk): 1-10 as '<11', others to the nearest 10,
    so that subtracting two of them cannot reveal a count from 1 to 10 exactly -- except 11-14, which the
    nearest 10 would show as '~10', a number the rule forbids showing: they read '11–14'."""
    if n is None:
        return "–"
    if n == 0:
        return "0"
    if n < MIN_CELL:
        return SUPPRESSED
    if n < 15:
        return NEAR_MIN
    return f"~{int(round(n / 10.0)) * 10:,}"
