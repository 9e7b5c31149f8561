"""SQL fragments over raw FHIR JSON shared by the raw suite and its incremental scope."""

from __future__ import annotations


def patient_ref(path: str) -> str:
    return f"regexp_extract(json_extract_string(resource, '{path}'), '(?:Patient/|urn:uuid:)([^/]+)$', 1)"


def fhir_instant(expr: str) -> str:
    # date-only and partial dates are valid FHIR dateTimes: they parse, at day (or coarser) precision
    return (
        f"coalesce(try_cast({expr} AS TIMESTAMPTZ), try_cast({expr} AS DATE)::TIMESTAMPTZ, "
        f"CASE WHEN regexp_full_match({expr}, '\\d{{4}}(-\\d{{2}})?') THEN TIMESTAMPTZ '1900-01-01' END)"
    )
