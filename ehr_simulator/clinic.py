"""Simulate one patient of the ketamine clinic: latent outcome, visits, and the FHIR resources they leave.

Each patient draws from its own seeded RNG (clinical stream) and a second one for EHR mess, so the whole
clinic is deterministic, patients are independent (streaming, constant memory) and switching mess off
does not change the clinical story.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ehr_simulator import names
from ehr_simulator.params import CADSS, DAYS_ABSTINENT, INSTRUMENTS, PROTOCOLS, GeneratorConfig, Instrument

UTC = UTC
ABS_BASE = "https://ehr.ketamine-clinic.example/fhir/"
CPT = "http://www.ama-assn.org/go/cpt"
MODALITY_SYSTEM = "https://ketamine-outcomes.org/fhir/CodeSystem/psychotherapy-modality"
PLAN_BASE = "https://ketamine-outcomes.org/fhir/PlanDefinition/"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PROTOCOL_MODALITY = {"ketamine_cbt": "cbt", "ketamine_mbrp": "mbrp", "ketamine_kap": "kap"}
PROTOCOL_TITLE = {
    "ketamine_only": "IV ketamine induction",
    "ketamine_cbt": "IV ketamine + cognitive behavioural therapy",
    "ketamine_mbrp": "IV ketamine + mindfulness-based relapse prevention",
    "ketamine_kap": "IV ketamine + ketamine-assisted psychotherapy",
}
CONDITIONS = {
    "trd": (
        "F33.2",
        "Major depressive disorder, recurrent severe without psychotic features",
        "Treatment-resistant depression",
    ),
    "ptsd": ("F43.12", "Post-traumatic stress disorder, chronic", "Post-traumatic stress disorder"),
    "gad": ("F41.1", "Generalized anxiety disorder", "Generalized anxiety disorder"),
    "aud": ("F10.20", "Alcohol dependence, uncomplicated", "Alcohol use disorder"),
    "oud": ("F11.20", "Opioid dependence, uncomplicated", "Opioid use disorder"),
    "cud": ("F14.20", "Cocaine dependence, uncomplicated", "Cocaine use disorder"),
}
SUD = ("aud", "oud", "cud")


@dataclass
class Record:
    """One FHIR resource over its life: versions (lastUpdated, body) and an optional deletion."""

    rtype: str
    id: str
    versions: list[tuple[datetime, dict]]
    deleted_at: datetime | None = None
    duplicate_line: bool = False
    malformed_copy: bool = False
    both_versions: bool = False


@dataclass
class PatientSim:
    index: int
    patient_id: str
    enrolled_at: datetime
    records: list[Record] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Clock:
    """Clinic-local times, and their rendering with the assorted offsets real EHRs emit."""

    def __init__(self, tz: str, mess_rng: random.Random, mess) -> None:
        self.tz = ZoneInfo(tz)
        self.mrng = mess_rng
        self.mess = mess

    def at(self, day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), self.tz)

    def render(self, dt: datetime, allow_date_only: bool = False) -> str:
        r = self.mrng.random()
        if allow_date_only and r < self.mess.date_only:
            return dt.date().isoformat()
        r = self.mrng.random()
        if r < self.mess.utc_timestamp:
            return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if r < self.mess.utc_timestamp + 0.05:
            return dt.isoformat(timespec="milliseconds")
        return dt.isoformat(timespec="seconds")


PTSD_SCALES = ("pcl5", "caps5")


def _lag(rng: random.Random) -> timedelta:
    """Charting delay between an event and the record reaching the EHR."""
    return timedelta(minutes=rng.randint(2, 240)) if rng.random() < 0.9 else timedelta(hours=rng.randint(4, 40))


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    r = rng.random() * sum(weights.values())
    for k, w in sorted(weights.items()):  # sorted: a config read back from JSON picks the same
        r -= w
        if r < 0:
            return k
    return k


def _score(rng: random.Random, inst: Instrument, baseline: int, state: str) -> int:
    """A score consistent with a latent state against the baseline.

    states: remit, respond (responding, not remitting), fail (non-response), worse, relapse_single
    (at/above the single-visit relapse threshold), blip (fails response, below the single-visit threshold).
    """
    hi = inst.responding_max(baseline)
    rem = inst.remission_max
    if state == "remit":
        top = min(hi, rem) if rem is not None else hi
        return rng.randint(max(0, top - 6), top)
    if state == "respond":
        lo = (rem + 1) if rem is not None else max(0, hi - 12)
        if inst.remission_needs_response:
            lo = rem + 1
        return rng.randint(min(lo, hi), hi)
    if state == "worse":
        return rng.randint(min(baseline + 1, inst.max_score), min(inst.max_score, baseline + 6))
    if state == "relapse_single":
        return rng.randint(max(inst.single_visit_relapse, hi + 1), max(inst.single_visit_relapse, baseline))
    if state == "blip":
        top = min(baseline, (inst.single_visit_relapse or 10**6) - 1)
        return rng.randint(hi + 1, max(hi + 1, top))
    # fail: does not meet response, no worse than baseline (fail_below: also under the single-visit
    # threshold when the baseline leaves room for it)
    top = min(baseline, (inst.single_visit_relapse or 10**6) - 1) if state == "fail_below" else baseline
    return rng.randint(hi + 1, max(hi + 1, top))


def _lognormal_days(rng: random.Random, median: float, sigma: float) -> int:
    return max(1, round(median * math.exp(rng.gauss(0, sigma))))


def enrollment_day(index: int, cfg: GeneratorConfig) -> date:
    """Earliest possible enrollment day of patient `index` (patients enroll at a steady rate)."""
    return cfg.start + timedelta(days=int(index * cfg.history_days / cfg.patients))


def simulate_patient(index: int, cfg: GeneratorConfig) -> PatientSim:
    """Simulate patient `index` over their whole life at the clinic, independent of the as-of date.

    The writer later keeps what the EHR would hold at as-of, so extending the clinic by more days
    reproduces every earlier resource exactly and adds only what happened since.
    """
    rng = random.Random(f"{cfg.seed}:{index}")
    mrng = random.Random(f"{cfg.seed}:{index}:mess")
    mess, prm = cfg.mess, cfg.params
    clock = _Clock(cfg.clinic_tz, mrng, mess)

    pid = new_id(rng)
    slot = cfg.history_days / cfg.patients
    enroll_day = cfg.start + timedelta(days=int((index + rng.random()) * slot))
    enrolled_at = clock.at(enroll_day, rng.randint(8, 16), rng.choice((0, 15, 30, 45)))
    sim = PatientSim(index, pid, enrolled_at)

    def ref(rtype: str, rid: str) -> dict:
        if mrng.random() < mess.absolute_reference:
            return {"reference": f"{ABS_BASE}{rtype}/{rid}"}
        return {"reference": f"{rtype}/{rid}"}

    def add(
        rtype: str,
        rid: str,
        event_at: datetime,
        body: dict,
        amend: tuple[datetime, dict] | None = None,
        deleted_at: datetime | None = None,
    ) -> Record:
        first = event_at + _lag(rng)
        versions = [(first, body)]
        if amend is not None:
            versions.append((max(amend[0], first + timedelta(minutes=5)), amend[1]))
        rec = Record(rtype, rid, versions, deleted_at)
        rec.duplicate_line = mrng.random() < mess.duplicate_line
        rec.malformed_copy = mrng.random() < mess.malformed_line
        rec.both_versions = mrng.random() < mess.both_versions_in_export
        sim.records.append(rec)
        return rec

    # --- Patient -------------------------------------------------------------------------------
    sex = rng.choice(("female", "male"))
    age = rng.randint(19, 78) if rng.random() > 0.01 else rng.randint(90, 96)
    birth = enroll_day - timedelta(days=age * 365 + rng.randint(0, 364))
    given = rng.choice(names.FEMALE if sex == "female" else names.MALE)
    family = rng.choice(names.FAMILY)
    city, state, zip_prefix = rng.choice(names.CITIES)
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [
            {
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "https://ehr.ketamine-clinic.example/mrn",
                "value": f"MRN{rng.randint(1000000, 9999999)}",
            }
        ],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [
            {
                "system": "phone",
                "value": f"({rng.randint(201, 989)}) 555-{rng.randint(1000, 9999)}",
                "use": "mobile",
            },
            {"system": "email", "value": f"{given.lower()}.{family.lower()}{rng.randint(1, 99)}@example.com"},
        ],
        "gender": sex,
        "birthDate": birth.isoformat(),
        "address": [
            {
                "line": [f"{rng.randint(10, 9999)} {rng.choice(names.STREETS)}"],
                "city": city,
                "state": state,
                "postalCode": f"{zip_prefix}{rng.randint(10, 99)}",
                "country": "US",
            }
        ],
    }
    add("Patient", pid, enrolled_at, patient)
    weight_kg = round(rng.uniform(48, 125), 1)

    # --- Conditions ----------------------------------------------------------------------------
    primary = _pick(rng, {"trd": 0.62, "ptsd": 0.18, "gad": 0.08, "aud": 0.05, "oud": 0.03, "cud": 0.04})
    conds = {primary}
    if primary != "trd" and rng.random() < 0.6:
        conds.add("trd")
    if rng.random() < 0.3:
        conds.add("gad")
    if primary not in SUD and rng.random() < 0.1:
        conds.add(rng.choice(SUD))
    for c in sorted(conds):
        code, display, text = CONDITIONS[c]
        cid = new_id(rng)
        onset = enroll_day - timedelta(days=rng.randint(200, 4000))
        add(
            "Condition",
            cid,
            enrolled_at,
            {
                "resourceType": "Condition",
                "id": cid,
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                        }
                    ]
                },
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                "code": "problem-list-item",
                            }
                        ]
                    }
                ],
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code, "display": display}],
                    "text": text,
                },
                "subject": ref("Patient", pid),
                "onsetDateTime": onset.isoformat(),
                "recordedDate": clock.render(enrolled_at),
            },
        )

    instruments = ["madrs", "phq9"]
    if "trd" in conds:
        instruments.append("qids_sr16")
    if "gad" in conds:
        instruments.append("gad7")
    if "ptsd" in conds:
        instruments += ["caps5", "pcl5"]
    has_sud = bool(conds & set(SUD))
    practitioners = [f"prac-{k}" for k in range(1, 7)]

    def observation(
        inst: Instrument,
        at: datetime,
        value: int | float,
        performer_self: bool,
        date_only_ok: bool = False,
        status: str = "final",
    ) -> dict:
        oid = new_id(rng)
        body = {
            "resourceType": "Observation",
            "id": oid,
            "status": status,
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "survey",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": inst.system, "code": inst.code, "display": inst.display}],
                "text": inst.display,
            },
            "subject": ref("Patient", pid),
            "effectiveDateTime": clock.render(at, allow_date_only=date_only_ok),
            "performer": [ref("Patient", pid) if performer_self else ref("Practitioner", rng.choice(practitioners))],
        }
        r = mrng.random()
        if isinstance(value, float):
            body["valueQuantity"] = {
                "value": value,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            }
        elif r < mess.value_quantity:
            body["valueQuantity"] = {
                "value": value,
                "unit": "{score}",
                "system": "http://unitsofmeasure.org",
                "code": "{score}",
            }
        elif r < mess.value_quantity + mess.value_string:
            body["valueString"] = str(value)
        else:
            body["valueInteger"] = value
        return body

    def record_score(inst: Instrument, at: datetime, value: int, date_only_ok: bool = False) -> None:
        """A real assessment, possibly first charted wrong and amended later (the amended value is true)."""
        body = observation(inst, at, value, inst.rater == "self", date_only_ok)
        amend = None
        if mrng.random() < mess.amended:
            wrong = dict(body)
            wrong_value = min(inst.max_score, value + rng.randint(3, 9))
            for k in ("valueInteger", "valueQuantity", "valueString"):
                wrong.pop(k, None)
            wrong["valueInteger"] = wrong_value
            fixed = dict(body)
            fixed["status"] = "amended"
            amend = (at + timedelta(days=rng.randint(1, 6)), fixed)
            add("Observation", body["id"], at, wrong, amend)
        else:
            add("Observation", body["id"], at, body)
        # Noise records that must not count: retracted, not-final, impossible or unreadable values.
        if mrng.random() < mess.entered_in_error:
            bad = observation(inst, at + timedelta(minutes=5), rng.randint(0, inst.max_score), inst.rater == "self")
            retracted = dict(bad, status="entered-in-error")
            add("Observation", bad["id"], at, bad, (at + timedelta(hours=rng.randint(2, 72)), retracted))
        if mrng.random() < mess.preliminary:
            prelim = observation(
                inst,
                at + timedelta(minutes=2),
                rng.randint(0, inst.max_score),
                inst.rater == "self",
                status=rng.choice(("preliminary", "registered")),
            )
            add("Observation", prelim["id"], at, prelim)
        if mrng.random() < mess.out_of_range:
            oor = observation(
                inst, at + timedelta(minutes=3), inst.max_score + rng.randint(5, 60), inst.rater == "self"
            )
            add("Observation", oor["id"], at, oor)
        if mrng.random() < mess.unreadable_value:
            unr = observation(inst, at + timedelta(minutes=4), 0, inst.rater == "self")
            for k in ("valueInteger", "valueQuantity"):
                unr.pop(k, None)
            unr["valueString"] = rng.choice(("see note", "declined", "n/a", "12-14"))
            add("Observation", unr["id"], at, unr)

    def weight(at: datetime) -> None:
        body = observation(
            Instrument("weight", "clinician", "http://loinc.org", "29463-7", "Body weight", 400, (0, 0), "none", 0),
            at,
            round(weight_kg + rng.uniform(-1.5, 1.5), 1),
            False,
        )
        add("Observation", body["id"], at, body)

    # --- Courses -------------------------------------------------------------------------------
    course_start = enroll_day
    course_no = 0
    while course_no < 2:
        course_no += 1
        last_day = _simulate_course(
            rng,
            mrng,
            cfg,
            clock,
            sim,
            add,
            ref,
            record_score,
            weight,
            practitioners,
            pid,
            course_no,
            course_start,
            instruments,
            has_sud,
            weight_kg,
            conds,
        )
        if rng.random() >= prm.second_course:
            break
        course_start = last_day + timedelta(days=rng.randint(100, 160))
    return sim


class _SubstanceUse:
    """Days abstinent of the last 30 over one course, for a patient with a use disorder. The outcome rules judge
    the days of use (30 - abstinent): response is half the baseline's or fewer, remission none, relapse back at
    the baseline's days of use, seen at the first visit on or after the latent relapse day."""

    def __init__(self, rng: random.Random, prm, protocol: str, baseline: int, visits: list[int], dropout: bool):
        self.rng = rng
        self.baseline_use = 30 - baseline
        self.responder = rng.random() < prm.sud_response[protocol]
        self.remitter = self.responder and rng.random() < prm.sud_remission_given_response[protocol]
        self.latent_relapse_days = _lognormal_days(rng, prm.sud_relapse_median_days[protocol], prm.relapse_sigma)
        later = [v for v in visits if v >= max(self.latent_relapse_days, 8)]
        self.relapse_visit = later[0] if (self.responder and not dropout and later) else None

    def days_abstinent(self, day_off: int, is_endpoint: bool) -> int:
        b, rng = self.baseline_use, self.rng
        half = b // 2  # (b - use) / b >= 0.5  <=>  use <= b // 2
        if self.relapse_visit is not None and day_off >= self.relapse_visit:
            use = rng.randint(b, 30)
        elif self.remitter and (is_endpoint or rng.random() < 0.9):
            use = 0
        elif self.responder:
            use = rng.randint(1, half)
        else:
            use = rng.randint(half + 1, b)
        return 30 - use


def _simulate_course(
    rng,
    mrng,
    cfg,
    clock,
    sim,
    add,
    ref,
    record_score,
    weight,
    practitioners,
    pid,
    course_no,
    screening_day,
    instruments,
    has_sud,
    weight_kg,
    conds,
) -> date:
    prm, mess = cfg.params, cfg.mess
    protocol = _pick(rng, prm.protocol_mix)
    if has_sud and protocol == "ketamine_cbt" and rng.random() < 0.5:
        protocol = "ketamine_mbrp"

    # Infusion schedule: six over 3-6 weeks; dropouts after the first; some miss one or two.
    first_day = screening_day + timedelta(days=rng.randint(3, 10))
    # six over 3-6 weeks; some series are postponed past 42 days (gaps stay <= 12 days: still one induction)
    span = rng.randint(43, 60) if rng.random() < prm.slow_induction else rng.randint(14, 38)
    planned = [first_day + timedelta(days=round(k * span / 5)) for k in range(6)]
    r = rng.random()
    if r < prm.dropout_after_first:
        given = planned[:1]
    elif rng.random() < prm.miss_some_infusions:
        missed = set(rng.sample(range(1, 6), rng.choice((1, 1, 2))))
        given = [d for k, d in enumerate(planned) if k not in missed]
    else:
        given = planned
    # keep the series contiguous (gaps <= 14 days) so it is one induction by definition
    infusion_days = [given[0]]
    for d in given[1:]:
        infusion_days.append(min(d, infusion_days[-1] + timedelta(days=13)))
    dose_per_kg = rng.choice((0.5, 0.5, 0.5, 0.6, 0.75, 0.8, 1.0))
    last_inf = infusion_days[-1]
    dropout = len(infusion_days) == 1

    # Latent outcome (per rater), drawn for every course so the stream stays aligned.
    clin_resp = rng.random() < prm.clinician_response
    self_resp = rng.random() < (
        prm.self_response_given_clinician_response if clin_resp else prm.self_response_given_clinician_nonresponse
    )
    clin_remit = clin_resp and rng.random() < prm.clinician_remission_given_response
    self_remit = self_resp and rng.random() < prm.self_remission_given_response
    clin_worse = (not clin_resp) and rng.random() < prm.worse_at_endpoint
    self_worse = (not self_resp) and rng.random() < prm.worse_at_endpoint
    median = prm.relapse_median_days[protocol]
    t_clin = _lognormal_days(rng, median, prm.relapse_sigma)
    t_self = (
        max(1, round(t_clin * prm.self_rated_relapse_factor * math.exp(rng.gauss(0, 0.3))))
        if clin_resp
        else _lognormal_days(rng, median * prm.self_rated_relapse_factor, prm.relapse_sigma)
    )

    def latent_relapse(inst: Instrument) -> int:
        t = t_clin if inst.rater == "clinician" else t_self
        return max(1, round(t * prm.ptsd_relapse_factor)) if inst.name in PTSD_SCALES else t

    endpoint_offset = rng.randint(1, 5)

    # Follow-up schedule (days after the last induction infusion).
    visits: list[int] = []
    if not dropout:
        visits.append(endpoint_offset)
        d = endpoint_offset
        while True:
            d += rng.randint(7, 28)
            if d > prm.followup_days or rng.random() < prm.lost_per_followup_visit:
                break
            visits.append(d)
    followup_end = visits[-1] if visits else 0

    def responder(inst: Instrument) -> bool:
        return clin_resp if inst.rater == "clinician" else self_resp

    # Relapse times: never inside the endpoint window; beyond follow-up means not observed.
    relapse_day: dict[str, int | None] = {}
    for name in instruments:
        inst = INSTRUMENTS[name]
        t = max(latent_relapse(inst), 8)
        relapse_day[name] = t if (responder(inst) and not dropout and t <= followup_end) else None
    observed = [t for t in relapse_day.values() if t is not None]
    first_relapse = min(observed) if observed else None
    booster_day = None
    # a booster within 14 days of the last infusion would, by definition, extend the induction: clinics
    # give relapse boosters later than that
    # (and one after a 90-day gap would start a new course)
    if first_relapse is not None and 14 < first_relapse <= 90 and rng.random() < prm.booster_on_relapse:
        booster_day = first_relapse
    elif (
        not dropout and not clin_resp and not self_resp and len(visits) > 2 and rng.random() < prm.booster_nonresponder
    ):
        booster_day = visits[2] + 1
    extra = set()
    for t in relapse_day.values():
        if t is not None:
            extra.add(t)
            if booster_day is None:
                extra.add(t + rng.randint(5, 9))  # the confirming visit
    all_visits = sorted(set(visits) | extra)

    baselines = {name: rng.randint(*INSTRUMENTS[name].baseline) for name in instruments}
    states = {}
    for name in instruments:
        inst = INSTRUMENTS[name]
        is_clin = inst.rater == "clinician"
        resp, remit, worse = (clin_resp, clin_remit, clin_worse) if is_clin else (self_resp, self_remit, self_worse)
        states[name] = (
            "remit"
            if remit and inst.remission_max is not None
            else ("respond" if resp else ("worse" if worse else "fail"))
        )

    # --- CarePlan (v1 when the course is planned, v2 completed at the end of follow-up) ---------
    plan_id = new_id(rng)
    plan_start = clock.at(screening_day, 17, 0)
    end_day = last_inf + timedelta(days=(all_visits[-1] if all_visits else 0) + 1)
    careplan = {
        "resourceType": "CarePlan",
        "id": plan_id,
        "instantiatesCanonical": [PLAN_BASE + protocol],
        "status": "active",
        "intent": "plan",
        "title": PROTOCOL_TITLE[protocol],
        "subject": ref("Patient", pid),
        "period": {"start": clock.render(plan_start)},
    }
    done = dict(
        careplan,
        status="completed",
        period={"start": careplan["period"]["start"], "end": end_day.isoformat()},
    )
    has_careplan = mrng.random() >= mess.missing_careplan
    if has_careplan:
        add("CarePlan", plan_id, plan_start, careplan, (clock.at(end_day, 18, 0), done))

    # --- Screening (weight + a first assessment) ------------------------------------------------
    screen_at = clock.at(screening_day, rng.randint(9, 15), rng.choice((0, 20, 40)))
    weight(screen_at)
    for name in instruments:
        record_score(
            INSTRUMENTS[name],
            screen_at,
            min(INSTRUMENTS[name].max_score, max(0, baselines[name] + rng.randint(-2, 2))),
            date_only_ok=True,
        )
    sud = None
    if has_sud:
        sud_baseline = rng.randint(0, 15)
        record_score(DAYS_ABSTINENT, screen_at, sud_baseline)
        # its own stream, so the other scales' draws stay as they were
        sud = _SubstanceUse(
            random.Random(f"{cfg.seed}:{pid}:{course_no}:sud"), prm, protocol, sud_baseline, all_visits, dropout
        )

    # --- Infusions with pre-infusion scores and post-infusion CADSS -----------------------------
    endpoint_scores = {name: _score(rng, INSTRUMENTS[name], baselines[name], states[name]) for name in instruments}
    n_inf = len(infusion_days)
    infusion_starts = []
    for k, day in enumerate(infusion_days):
        start = clock.at(day, rng.randint(8, 14), rng.choice((0, 15, 30, 45)))
        infusion_starts.append(start)
        pre = start - timedelta(minutes=rng.randint(20, 45))
        for name in instruments:
            inst = INSTRUMENTS[name]
            frac = k / max(1, n_inf)
            v = round(baselines[name] + (endpoint_scores[name] - baselines[name]) * frac) + rng.randint(-1, 1)
            v = baselines[name] if k == 0 else min(inst.max_score, max(0, v))
            # a self-report dated only by day, on the first infusion's day, is still the baseline
            record_score(inst, pre, v, date_only_ok=(k == 0 and inst.rater == "self"))
        _infusion(rng, mrng, mess, clock, add, ref, practitioners, pid, start, weight_kg, dose_per_kg)
        record_score(CADSS, start + timedelta(minutes=45), max(0, min(92, round(rng.gauss(8, 9)))))

    # --- Endpoint and follow-up ------------------------------------------------------------------
    blip_prev = False
    next_visit = dict(zip(all_visits, all_visits[1:], strict=False))
    for day_off in all_visits:
        vday = last_inf + timedelta(days=day_off)
        at = clock.at(vday, rng.randint(8, 16), rng.choice((0, 10, 30, 50)))
        is_endpoint = day_off == endpoint_offset
        # a single loss of response, never right before a relapse visit (two in a row would be a relapse)
        following = next_visit.get(day_off)
        blip = (
            (not is_endpoint)
            and (not blip_prev)
            and rng.random() < prm.blip_per_followup_visit
            and not any(t is not None and following is not None and following >= t for t in relapse_day.values())
        )
        blip_prev = blip
        for name in instruments:
            inst = INSTRUMENTS[name]
            b = baselines[name]
            t = relapse_day[name]
            if is_endpoint:
                v = endpoint_scores[name]
            elif booster_day is not None and day_off > booster_day and responder(inst):
                v = _score(rng, inst, b, "respond")
            elif t is not None and day_off >= t:
                single = inst.single_visit_relapse is not None and day_off == t and rng.random() < 0.6
                v = _score(rng, inst, b, "relapse_single" if single else "fail_below")
            elif responder(inst):
                # a single unconfirmed loss of response, kept below any single-visit relapse threshold
                blip_fits = inst.single_visit_relapse is None or inst.responding_max(b) + 1 < inst.single_visit_relapse
                if blip and blip_fits:
                    v = _score(rng, inst, b, "blip")
                else:
                    v = _score(rng, inst, b, "remit" if states[name] == "remit" and rng.random() < 0.7 else "respond")
            else:
                v = _score(rng, inst, b, states[name] if states[name] == "worse" else "fail")
            record_score(inst, at, v, date_only_ok=not is_endpoint and day_off > 8)
        if has_sud:
            record_score(DAYS_ABSTINENT, at, sud.days_abstinent(day_off, is_endpoint))
        if booster_day == day_off:
            start = at + timedelta(minutes=rng.randint(30, 90))
            _infusion(rng, mrng, mess, clock, add, ref, practitioners, pid, start, weight_kg, dose_per_kg)

    # --- Psychotherapy on days without an infusion ------------------------------------------------
    modality = PROTOCOL_MODALITY.get(protocol)
    inf_set = set(infusion_days) | ({last_inf + timedelta(days=booster_day)} if booster_day is not None else set())
    if modality:
        if modality == "kap":
            days = [d + timedelta(days=1) for d in infusion_days] + [
                last_inf + timedelta(days=7 * k) for k in range(1, 5)
            ]
        elif modality == "cbt":
            days = [first_day + timedelta(days=2 + 7 * k) for k in range(12)]
        else:
            days = [first_day + timedelta(days=3 + 7 * k) for k in range(8)]
        for d in days:
            if d in inf_set and mrng.random() >= mess.therapy_on_infusion_day:
                d = d + timedelta(days=1)
                if d in inf_set:
                    d = d + timedelta(days=1)
            _therapy(rng, clock, add, ref, practitioners, pid, d, modality)
        if has_sud and rng.random() < 0.3:
            _therapy(rng, clock, add, ref, practitioners, pid, first_day + timedelta(days=1), "met")

    # Deleted resources (e.g. a session booked on the wrong chart, then removed).
    if mrng.random() < mess.deleted_resource:
        d = first_day + timedelta(days=rng.randint(1, 20))
        rec = _therapy(rng, clock, add, ref, practitioners, pid, d, modality or "cbt")
        rec.deleted_at = rec.versions[-1][0] + timedelta(days=rng.randint(1, 10))

    # --- Truth, per course x instrument ------------------------------------------------------------
    for name in instruments:
        inst = INSTRUMENTS[name]
        resp = responder(inst)
        rday = relapse_day[name]
        # the booster is only given for a relapse when some scale responded, so it is an event for every
        # responding scale; otherwise the scale's own relapse, else censored at its last assessment
        if not resp or dropout:
            relapsed, days = None, None
        elif booster_day is not None:
            relapsed, days = True, booster_day
        elif rday is not None:
            relapsed, days = True, rday
        else:
            relapsed, days = False, all_visits[-1]
        sim.truth.append(
            {
                "patient_id": pid,
                "course_no": course_no,
                "protocol": protocol,
                "has_careplan": has_careplan,
                "first_infusion_day": first_day.isoformat(),
                "last_induction_infusion_day": last_inf.isoformat(),
                "induction_infusions": n_inf,
                "instrument": name,
                "rater": inst.rater,
                "evaluable": not dropout,
                "endpoint_day": (last_inf + timedelta(days=endpoint_offset)).isoformat() if not dropout else None,
                "baseline_score": baselines[name],
                "endpoint_score": endpoint_scores[name] if not dropout else None,
                "latent_responder": resp,
                "latent_remitter": states[name] == "remit",
                "latent_worse": states[name] == "worse",
                "latent_relapse_days": latent_relapse(inst),
                "relapsed": relapsed,
                "days_to_relapse_or_censor": days,
                "booster_day": booster_day,
                "last_visit_day": (last_inf + timedelta(days=all_visits[-1])).isoformat() if all_visits else None,
            }
        )
    if sud is not None:
        if not sud.responder or dropout:
            relapsed, days = None, None
        elif booster_day is not None and (sud.relapse_visit is None or booster_day < sud.relapse_visit):
            relapsed, days = True, booster_day
        elif sud.relapse_visit is not None:
            relapsed, days = True, sud.relapse_visit
        else:
            relapsed, days = False, all_visits[-1]
        sim.truth.append(
            {
                **sim.truth[-1],
                "instrument": DAYS_ABSTINENT.name,
                "rater": DAYS_ABSTINENT.rater,
                "baseline_score": 30 - sud.baseline_use,
                "endpoint_score": None,
                "latent_responder": sud.responder,
                "latent_remitter": sud.remitter,
                "latent_worse": False,  # days of use above the baseline's are not modelled
                "latent_relapse_days": sud.latent_relapse_days,
                "relapsed": relapsed,
                "days_to_relapse_or_censor": days,
            }
        )
    return last_inf + timedelta(days=all_visits[-1] if all_visits else 0)


def _infusion(
    rng,
    mrng,
    mess,
    clock,
    add,
    ref,
    practitioners,
    pid,
    start: datetime,
    weight_kg: float,
    dose_per_kg: float,
) -> None:
    mid = new_id(rng)
    end = start + timedelta(minutes=rng.randint(38, 44))
    if mrng.random() < mess.text_only_medication:
        med = {
            "coding": [
                {
                    "system": "https://ehr.ketamine-clinic.example/medication",
                    "code": "KET-IV-50",
                    "display": "KETAMINE HCL 50 MG/ML IJ SOLN",
                }
            ],
            "text": "Ketamine HCl 50 mg/mL injection",
        }
    else:
        code, display = rng.choice(
            (
                ("6130", "ketamine"),
                ("6130", "ketamine"),
                ("238082", "ketamine 10 MG/ML Injectable Solution"),
                ("238083", "ketamine 50 MG/ML Injectable Solution"),
            )
        )
        med = {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display}
    body = {
        "resourceType": "MedicationAdministration",
        "id": mid,
        "status": "completed",
        "medicationCodeableConcept": med,
        "subject": ref("Patient", pid),
        "effectivePeriod": {"start": clock.render(start), "end": clock.render(end)},
        "performer": [{"actor": ref("Practitioner", rng.choice(practitioners))}],
        "dosage": {
            "text": f"{dose_per_kg} mg/kg IV over 40 minutes",
            "route": {
                "coding": [{"system": "http://snomed.info/sct", "code": "47625008", "display": "Intravenous route"}]
            },
            "dose": {
                "value": round(dose_per_kg * weight_kg, 1),
                "unit": "mg",
                "system": "http://unitsofmeasure.org",
                "code": "mg",
            },
        },
    }
    add("MedicationAdministration", mid, end, body)


def _therapy(rng, clock, add, ref, practitioners, pid, day: date, modality: str) -> Record:
    sid = new_id(rng)
    start = clock.at(day, rng.randint(9, 17), rng.choice((0, 30)))
    minutes, cpt = (53, "90837") if rng.random() < 0.6 else (45, "90834")
    body = {
        "resourceType": "Procedure",
        "id": sid,
        "status": "completed",
        "category": {"coding": [{"system": MODALITY_SYSTEM, "code": modality}], "text": modality.upper()},
        "code": {
            "coding": [{"system": CPT, "code": cpt, "display": "Psychotherapy"}],
            "text": "Psychotherapy",
        },
        "subject": ref("Patient", pid),
        "performedPeriod": {
            "start": clock.render(start),
            "end": clock.render(start + timedelta(minutes=minutes)),
        },
        "performer": [{"actor": ref("Practitioner", rng.choice(practitioners))}],
    }
    return add("Procedure", sid, start + timedelta(minutes=minutes), body)


def practitioner_records() -> list[Record]:
    out = []
    for k in range(1, 7):
        pid = f"prac-{k}"
        body = {
            "resourceType": "Practitioner",
            "id": pid,
            "active": True,
            "name": [
                {
                    "family": names.FAMILY[k * 7 % len(names.FAMILY)],
                    "given": [names.FEMALE[k]],
                    "prefix": ["Dr."],
                }
            ],
        }
        out.append(Record("Practitioner", pid, [(datetime(2025, 1, 1, tzinfo=UTC), body)]))
    return out


assert set(PROTOCOL_TITLE) == set(PROTOCOLS)
