"""One settings object for every pipeline step, read from the environment (or Airflow, see dags/).

Secrets (the client's private key) are referenced by path or passed through the environment; they are
never printed: the repr shows only whether a key is present.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingestion.landing import DEFAULT_EXPORT_TYPES
from ingestion.private_files import tighten
from ingestion.warehouse import DEFAULT_SITE, RESOURCE_TYPE_PATTERN, is_resource_type

ENV_PREFIX = "OUTCOMES_"


ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class SparkOptions:
    """The Spark engine's session (pipeline/spark_engine.py): OUTCOMES_SPARK_MASTER, _DRIVER_MEMORY,
    _SHUFFLE_PARTITIONS, and OUTCOMES_SPARK_CONF's `spark.*` settings over them and the engine's defaults."""

    master: str = "local[2]"
    driver_memory: str = "4g"
    # enough that one task's sort fits its share of memory at network size; adaptive execution coalesces
    # them where the data is small
    shuffle_partitions: int = 64
    conf: tuple[tuple[str, str], ...] = ()

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")


@dataclass(frozen=True)
class Settings:
    ehr_url: str | None = None
    client_id: str | None = None
    private_key_path: Path | None = None
    private_key_pem: str | None = field(default=None, repr=False)
    client_kid: str | None = None  # default: the key's RFC 7638 thumbprint, as `outcomes keys jwks` prints it
    scopes: str | None = None  # default: system/*.read, or system/*.rs where the EHR advertises permission-v2
    group_id: str = "ketamine-clinic"
    export_types: tuple[str, ...] = DEFAULT_EXPORT_TYPES
    type_filters: tuple[str, ...] = ()
    extract_mode: str = "bulk"  # bulk | search
    source_name: str = "ehr"
    warehouse: Path = Path("data/warehouse.duckdb")
    landing: Path = Path("data/landing")
    clinic_tz: str = "America/Los_Angeles"
    dashboards_dir: Path | None = None
    analytics_path: Path | None = None  # the analysts' database; default analytics.duckdb beside the warehouse
    site_id: str = DEFAULT_SITE  # this EHR connection's site in a network: on every raw row, and the lake's site=
    lake_dir: Path | None = None  # default: lake/ beside the warehouse; OUTCOMES_LAKE=off writes none
    lake_enabled: bool = True
    # GX Data Docs (HTML pages of every validation, with sample failing values): on unless OUTCOMES_DATA_DOCS=off
    data_docs: bool = True
    # where dbt builds the marts: duckdb (in the warehouse) or spark (on Spark over the lake; pipeline/spark_engine.py)
    engine: str = "duckdb"
    spark: SparkOptions = SparkOptions()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            v = env.get(ENV_PREFIX + name)
            return v if v not in (None, "") else None

        values: dict = {
            "ehr_url": get("EHR_URL"),
            "client_id": get("CLIENT_ID"),
            "private_key_path": Path(p) if (p := get("PRIVATE_KEY_PATH")) else None,
            "private_key_pem": get("PRIVATE_KEY"),
            "client_kid": get("CLIENT_KID"),
            "scopes": get("SCOPES"),
            "group_id": get("GROUP_ID") or cls.group_id,
            "export_types": _names(get("EXPORT_TYPES")) or DEFAULT_EXPORT_TYPES,
            # several filters are separated by `;` (a filter's own code list uses commas)
            "type_filters": tuple(f.strip() for f in (get("TYPE_FILTERS") or "").split(";") if f.strip()),
            "extract_mode": get("EXTRACT_MODE") or cls.extract_mode,
            "source_name": get("SOURCE_NAME") or cls.source_name,
            "warehouse": Path(get("WAREHOUSE") or cls.warehouse),
            "landing": Path(p) if (p := get("LANDING")) else None,
            "clinic_tz": get("CLINIC_TZ") or cls.clinic_tz,
            "dashboards_dir": Path(p) if (p := get("DASHBOARDS_DIR")) else None,
            "analytics_path": Path(p) if (p := get("ANALYTICS_DB")) else None,
            "site_id": get("SITE_ID") or cls.site_id,
            "lake_dir": Path(p) if (p := get("LAKE")) and p.lower() != "off" else None,
            "lake_enabled": (get("LAKE") or "").lower() != "off",
            "data_docs": (get("DATA_DOCS") or "on").lower() != "off",
            "engine": (get("ENGINE") or cls.engine).lower(),
            "spark": SparkOptions(
                master=get("SPARK_MASTER") or SparkOptions.master,
                driver_memory=get("SPARK_DRIVER_MEMORY") or SparkOptions.driver_memory,
                shuffle_partitions=_positive_int("SPARK_SHUFFLE_PARTITIONS", get("SPARK_SHUFFLE_PARTITIONS"))
                or SparkOptions.shuffle_partitions,
                conf=spark_settings(get("SPARK_CONF") or ""),
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["landing"] is None:  # each site of a network lands its exports apart
            site = values["site_id"]
            values["landing"] = Path(values["warehouse"]).parent / (
                "landing" if site == DEFAULT_SITE else f"landing-{site}"
            )
        return cls(**values).validated()

    def validated(self) -> Settings:
        if self.extract_mode not in ("bulk", "search"):
            raise ValueError(f"extract mode must be 'bulk' or 'search', not {self.extract_mode!r}")
        bad = [t for t in self.export_types if not is_resource_type(t)]
        if bad or not self.export_types:
            raise ValueError(
                f"OUTCOMES_EXPORT_TYPES must be FHIR resource type names separated by commas, got {bad or 'none'}"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"OUTCOMES_ENGINE must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.engine == "spark" and not self.lake_enabled:
            raise ValueError("the Spark engine reads the raw history from the lake: unset OUTCOMES_LAKE=off")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", self.site_id):
            raise ValueError(
                f"OUTCOMES_SITE_ID must be letters, digits, '-' or '_' (it names the lake's site= folder), "
                f"not {self.site_id!r}"
            )
        if not re.fullmatch(r"[1-9][0-9]*[kmgtKMGT]?", self.spark.driver_memory):
            raise ValueError(
                f"OUTCOMES_SPARK_DRIVER_MEMORY must be a JVM memory size such as 4g or 512m, "
                f"not {self.spark.driver_memory!r}"
            )
        if not re.fullmatch(r"\S+", self.spark.master):
            raise ValueError(
                f"OUTCOMES_SPARK_MASTER must be a Spark master URL such as local[2], spark://host:7077 or yarn, "
                f"not {self.spark.master!r}"
            )
        bad = [f for f in self.type_filters if not re.fullmatch(rf"{RESOURCE_TYPE_PATTERN}\?.+", f)]
        if bad:
            raise ValueError(f"OUTCOMES_TYPE_FILTERS entries look like Observation?code=..., got {bad}")

        try:
            ZoneInfo(self.clinic_tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown clinic timezone {self.clinic_tz!r} (use an IANA name such as America/Los_Angeles)"
            ) from None
        return self

    @property
    def dashboards(self) -> Path:
        return self.dashboards_dir or Path(self.warehouse).parent / "dashboards"

    @property
    def lake(self) -> Path | None:
        """Where each committed load is also written as Parquet (ingestion/lake.py); None when switched off."""
        if not self.lake_enabled:
            return None
        return self.lake_dir or Path(self.warehouse).parent / "lake"

    @property
    def analytics_db(self) -> Path:
        """The analysts' database: the published marts, no PHI (docs/analysts.md)."""
        return self.analytics_path or Path(self.warehouse).parent / "analytics.duckdb"

    def private_key(self) -> bytes:
        if self.private_key_pem:
            return self.private_key_pem.encode()
        if self.private_key_path:
            try:
                if tighten(Path(self.private_key_path)):
                    print(f"warning: {self.private_key_path} was readable by others; now 0600", file=sys.stderr)
                return Path(self.private_key_path).read_bytes()
            except OSError as e:
                raise ValueError(
                    f"cannot read the client private key at {self.private_key_path}: {e.strerror}"
                ) from None
        raise ValueError("no client private key: set OUTCOMES_PRIVATE_KEY_PATH (a PEM file) or OUTCOMES_PRIVATE_KEY")


def spark_settings(spec: str) -> tuple[tuple[str, str], ...]:
    """`spark.<key>=<value>` settings separated by semicolons or newlines; values may hold spaces and commas."""
    pairs = []
    for item in (part.strip() for part in spec.replace("\n", ";").split(";")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().startswith("spark.") or not value.strip():
            raise ValueError(f"OUTCOMES_SPARK_CONF: {item!r} is not spark.<key>=<value>; separate settings by ';'")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _positive_int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{ENV_PREFIX}{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.strip() for t in (value or "").split(",") if t.strip()))
