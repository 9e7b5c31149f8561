"""A general EHR's patient bundles, shaped as Synthea R4 writes them (our own generator, not Synthea's data).

What matters for the pipeline: one transaction Bundle per patient; `urn:uuid:` fullUrls and references; no
`meta.versionId` / `meta.lastUpdated`; many resource types the clinic never uses (Claim,
ExplanationOfBenefit, Encounter, Immunization, ...); shared Organizations and Practitioners repeated in
every bundle that mentions them; vital signs and questionnaire scores coded in LOINC; no ketamine at all.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

OTHER_TYPES = (
    "Encounter",
    "Immunization",
    "Claim",
    "ExplanationOfBenefit",
    "DiagnosticReport",
    "MedicationRequest",
    "Goal",
    "AllergyIntolerance",
    "ImagingStudy",
    "Provenance",
)


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _entry(resource: dict) -> dict:
    return {
        "fullUrl": f"urn:uuid:{resource['id']}",
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def patient_bundle(rng: random.Random, shared: list[dict]) -> dict:
    pid = _uid(rng)
    subject = {"reference": f"urn:uuid:{pid}"}
    entries = [
        {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"family": f"Family{rng.randint(1, 999)}", "given": ["Given"]}],
            "gender": rng.choice(["male", "female"]),
            "birthDate": f"{rng.randint(1940, 2005)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        }
    ]
    entries += shared[: rng.randint(1, len(shared))]
    for _ in range(rng.randint(2, 6)):
        when = f"20{rng.randint(10, 19)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00+00:00"
        enc = _uid(rng)
        entries.append({"resourceType": "Encounter", "id": enc, "status": "finished", "subject": subject})
        entries.append(
            {
                "resourceType": "Observation",
                "id": _uid(rng),
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}]},
                "subject": subject,
                "encounter": {"reference": f"urn:uuid:{enc}"},
                "effectiveDateTime": when,
                "valueQuantity": {"value": round(rng.uniform(50, 110), 1), "unit": "kg"},
            }
        )
        entries.append(
            {
                "resourceType": "Observation",
                "id": _uid(rng),
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6", "display": "PHQ-9 total"}]},
                "subject": subject,
                "effectiveDateTime": when,
                "valueQuantity": {"value": rng.randint(0, 27), "unit": "{score}"},
            }
        )
        entries.append(
            {
                "resourceType": "Condition",
                "id": _uid(rng),
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                "subject": subject,
                "onsetDateTime": when,
            }
        )
        entries.append(
            {
                "resourceType": "Procedure",
                "id": _uid(rng),
                "status": "completed",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "430193006"}]},
                "subject": subject,
                "performedPeriod": {"start": when, "end": when},
            }
        )
        for rtype in OTHER_TYPES[1:]:
            if rng.random() < 0.7:
                entries.append({"resourceType": rtype, "id": _uid(rng), "status": "active", "patient": subject})
    entries.append(
        {
            "resourceType": "CarePlan",
            "id": _uid(rng),
            "status": "active",
            "intent": "plan",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736378000"}]}],
            "subject": subject,
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(r) for r in entries]}


def write_bundles(folder: Path, patients: int, seed: int = 1) -> Path:
    """One Bundle file per patient, as Synthea's `fhir/` output folder holds them."""
    rng = random.Random(seed)
    shared = [{"resourceType": "Organization", "id": _uid(rng), "name": f"Hospital {k}"} for k in range(3)]
    shared += [{"resourceType": "Practitioner", "id": _uid(rng), "name": [{"family": f"Dr{k}"}]} for k in range(3)]
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(patients):
        (folder / f"Patient_{k:03d}.json").write_text(json.dumps(patient_bundle(rng, shared)))
    return folder
