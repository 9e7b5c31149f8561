"""Expectation suites as code: the frames they read (SQL on the warehouse) and the checks on them -- the raw
suite in expectations/raw_suite.py, the marts' in expectations/mart_suite.py.

Severity:
- critical: the refresh stops before marts are published (the previous marts stay);
- quarantine: row-level; the failing records move to quality.quarantined_records with the expectation's
  name, dbt leaves them out, the night goes on and the count is reported;
- warning: recorded and shown, nothing stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CRITICAL, QUARANTINE, WARNING = "critical", "quarantine", "warning"


@dataclass(frozen=True)
class Frame:
    sql: str
    resource_type: str | None = None  # set for frames whose rows can be quarantined
    # Frames with an id column are validated in chunks split on it, so memory stays bounded as history
    # grows: every check on such a frame must hold per row (or per group of equal ids).
    id_column: str | None = None


@dataclass
class Check:
    frame: str
    name: str
    severity: str
    expectation: Any  # a great_expectations expectation instance
    description: str = ""
    meta: dict = field(default_factory=dict)
