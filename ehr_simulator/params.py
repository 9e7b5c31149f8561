"""Parameters of the synthetic clinic: the 'true' world the warehouse must recover.

The simulator is the outside world. It keeps its own catalogue of instruments and codes on purpose:
it must not share the warehouse's seeds, or tests would prove nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, timedelta

PROTOCOLS = ("ketamine_only", "ketamine_cbt", "ketamine_mbrp", "ketamine_kap")
INSTRUMENT_SYSTEM = "https://ketamine-outcomes.org/fhir/CodeSystem/instrument"
LOINC = "http://loinc.org"


@dataclass(frozen=True)
class Instrument:
    name: str
    rater: str  # clinician | self
    system: str
    code: str
    display: str
    max_score: int
    baseline: tuple[int, int]
    response_kind: str  # pct | points | none
    response_cut: float
    remission_max: int | None = None
    remission_needs_response: bool = False
    single_visit_relapse: int | None = None

    def responding_max(self, baseline: int) -> int:
        """Highest score that still meets the response criterion against this baseline."""
        if self.response_kind == "points":
            return int(baseline - self.response_cut)
        # (b - s) / b >= cut  <=>  s <= b * (1 - cut); computed in integers to avoid float edges
        return (baseline * round((1 - self.response_cut) * 100)) // 100


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        Instrument(
            "madrs",
            "clinician",
            INSTRUMENT_SYSTEM,
            "madrs-total",
            "MADRS total score",
            60,
            (24, 43),
            "pct",
            0.5,
            10,
            False,
            22,
        ),
        Instrument("phq9", "self", LOINC, "44261-6", "PHQ-9 total score", 27, (14, 26), "pct", 0.5, 4),
        Instrument(
            "qids_sr16",
            "self",
            INSTRUMENT_SYSTEM,
            "qids-sr16-total",
            "QIDS-SR16 total score",
            27,
            (13, 24),
            "pct",
            0.5,
            5,
        ),
        Instrument("gad7", "self", LOINC, "70274-6", "GAD-7 total score", 21, (11, 20), "pct", 0.5, 4),
        Instrument("pcl5", "self", LOINC, "101698-9", "PCL-5 total score", 80, (45, 72), "points", 10, 32, True),
        Instrument(
            "caps5",
            "clinician",
            INSTRUMENT_SYSTEM,
            "caps5-total",
            "CAPS-5 total severity",
            80,
            (30, 60),
            "pct",
            0.3,
        ),
    )
}
CADSS = Instrument("cadss", "clinician", INSTRUMENT_SYSTEM, "cadss-total", "CADSS total score", 92, (0, 0), "none", 0)
DAYS_ABSTINENT = Instrument(
    "days_abstinent",
    "self",
    INSTRUMENT_SYSTEM,
    "days-abstinent-30",
    "Days abstinent in the last 30 days",
    30,
    (0, 15),
    "none",
    0,
)


@dataclass(frozen=True)
class MessRates:
    """Real-world EHR mess. Each rate is per eligible resource; 0 switches it off."""

    value_quantity: float = 0.10
    value_string: float = 0.05
    amended: float = 0.02
    entered_in_error: float = 0.01
    preliminary: float = 0.01
    duplicate_line: float = 0.005
    malformed_line: float = 0.0005
    out_of_range: float = 0.002
    unreadable_value: float = 0.001
    utc_timestamp: float = 0.25
    date_only: float = 0.03
    absolute_reference: float = 0.02
    both_versions_in_export: float = 0.3
    missing_careplan: float = 0.05
    text_only_medication: float = 0.03
    deleted_resource: float = 0.02  # per course: a session charted on the wrong chart, then deleted
    therapy_on_infusion_day: float = 0.01

    @classmethod
    def off(cls) -> MessRates:
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class ClinicParams:
    """The true parameters. Rates are per course among courses with an evaluable endpoint."""

    clinician_response: float = 0.65
    self_response_given_clinician_response: float = 0.68
    self_response_given_clinician_nonresponse: float = 0.15
    clinician_remission_given_response: float = 0.65  # with clinician_response: near KetECT's MADRS remission
    self_remission_given_response: float = 0.50
    worse_at_endpoint: float = 0.08
    # median days from the last induction infusion to relapse, among responders (log-normal spread)
    relapse_median_days: dict[str, float] = field(
        default_factory=lambda: {
            "ketamine_only": 19.0,
            "ketamine_cbt": 45.0,
            "ketamine_mbrp": 50.0,
            "ketamine_kap": 55.0,
        }
    )
    relapse_sigma: float = 0.6
    # substance use (days abstinent of the last 30, among patients with a use disorder), per protocol: response
    # is half the days of use or fewer, remission none at all (Dakwar 2019, cocaine: abstinent in the last two
    # weeks 48% with ketamine + MBRP vs 11% without; KARE 2022: ~162 of 180 days abstinent with MBRP)
    sud_response: dict[str, float] = field(
        default_factory=lambda: {
            "ketamine_only": 0.35,
            "ketamine_cbt": 0.35,
            "ketamine_mbrp": 0.65,
            "ketamine_kap": 0.40,
        }
    )
    sud_remission_given_response: dict[str, float] = field(
        default_factory=lambda: {
            "ketamine_only": 0.30,
            "ketamine_cbt": 0.30,
            "ketamine_mbrp": 0.75,
            "ketamine_kap": 0.30,
        }
    )
    sud_relapse_median_days: dict[str, float] = field(
        default_factory=lambda: {
            "ketamine_only": 30.0,
            "ketamine_cbt": 45.0,
            "ketamine_mbrp": 120.0,
            "ketamine_kap": 45.0,
        }
    )
    # the medians above are clinician-rated depression (MADRS; Murrough 2013, Wilkinson 2017). Self-rated scales
    # hold response longer (ORKA-1: PHQ-9 ~80% / 60% still responding at 4 / 8 weeks) and PTSD relapses later
    # than depression (Albott 2018: 41 vs 20 days; Feder 2021: CAPS-5 27.5 days)
    self_rated_relapse_factor: float = 1.5
    ptsd_relapse_factor: float = 1.45
    protocol_mix: dict[str, float] = field(
        default_factory=lambda: {
            "ketamine_only": 0.30,
            "ketamine_cbt": 0.25,
            "ketamine_mbrp": 0.20,
            "ketamine_kap": 0.25,
        }
    )
    dropout_after_first: float = 0.20
    miss_some_infusions: float = 0.35  # among those who do not drop out
    # infusions postponed (illness, travel, transport) so that six take longer than the 42 days adherence allows
    slow_induction: float = 0.12
    booster_on_relapse: float = 0.5
    booster_nonresponder: float = 0.10
    second_course: float = 0.10
    followup_days: int = 180
    lost_per_followup_visit: float = 0.04
    blip_per_followup_visit: float = 0.05

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GeneratorConfig:
    patients: int
    seed: int
    start: date = date(2025, 10, 1)
    history_days: int = 365
    continue_days: int = 0
    clinic_tz: str = "America/Los_Angeles"
    params: ClinicParams = field(default_factory=ClinicParams)
    mess: MessRates = field(default_factory=MessRates)
    # malformed, duplicate and superseded lines in the files (for `--from-dir` loads; a server never sends them)
    file_mess: bool = False

    @property
    def as_of_day(self) -> date:
        return self.start + timedelta(days=self.history_days + self.continue_days)

    def to_json(self) -> dict:
        return {
            "patients": self.patients,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "history_days": self.history_days,
            "continue_days": self.continue_days,
            "clinic_tz": self.clinic_tz,
            "params": self.params.to_json(),
            "mess": dataclasses.asdict(self.mess),
            "file_mess": self.file_mess,
        }

    @classmethod
    def from_json(cls, d: dict) -> GeneratorConfig:
        return cls(
            patients=d["patients"],
            seed=d["seed"],
            start=date.fromisoformat(d["start"]),
            history_days=d["history_days"],
            continue_days=d["continue_days"],
            clinic_tz=d["clinic_tz"],
            params=ClinicParams(**d["params"]),
            mess=MessRates(**d["mess"]),
            file_mess=d.get("file_mess", False),
        )
