"""Fast unit tests: the load's classification rules, key thumbprints, the stand-in's parsing of scopes,
_typeFilter and _elements, and small-cell suppression."""

from __future__ import annotations

import base64
import hashlib
import json

import duckdb
import pytest

from dashboards.suppression import count_label, rate_visible, rounded_label
from ehr_simulator.auth import granted_scopes
from ehr_simulator.server import _elements, _type_filters
from ingestion.classify import CLASSIFY_SQL
from ingestion.client_keys import jwk_thumbprint, jwks, new_private_key


def _obs(**over) -> str:
    res = {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"versionId": "1", "lastUpdated": "2026-11-30T10:00:00Z"},
        "status": "final",
        "valueInteger": 12,
    }
    res.update(over)
    return json.dumps({k: v for k, v in res.items() if v is not None})


NOW = "2026-12-01T00:00:00Z"  # the newest meta.lastUpdated the batch's export allows

CASES = [
    # (line, declared type, reason, score: read whatever the verdict; a quarantined line is never loaded)
    (_obs(), "Observation", None, 12.0),
    (_obs(valueInteger=None, valueString=" 7 "), "Observation", None, 7.0),
    (_obs(valueInteger=None, valueQuantity={"value": 21.5}), "Observation", None, 21.5),
    (_obs(valueInteger=None, valueQuantity={"value": -2e1}), "Observation", None, -20.0),
    (_obs(valueInteger=None, valueString="seven"), "Observation", "valueString is not a number", None),
    (_obs(valueInteger=None, valueString=""), "Observation", "valueString is not a number", None),
    (_obs(valueInteger="7"), "Observation", "valueInteger is not a JSON integer", None),
    (_obs(valueInteger=12.5), "Observation", "valueInteger is not a JSON integer", None),
    (_obs(valueInteger=True), "Observation", "valueInteger is not a JSON integer", None),
    (
        _obs().replace('"valueInteger": 12', '"valueInteger": null'),
        "Observation",
        "valueInteger is not a JSON integer",
        None,
    ),
    (
        _obs(valueInteger=None, valueQuantity={"value": "11"}),
        "Observation",
        "valueQuantity.value is not a JSON number",
        None,
    ),
    (
        _obs().replace('"valueInteger": 12', '"valueQuantity": {"value": NaN}'),
        "Observation",
        "valueQuantity.value is not a JSON number",
        None,
    ),
    (
        _obs().replace('"valueInteger": 12', '"valueQuantity": {"value": -Infinity}'),
        "Observation",
        "valueQuantity.value is not a JSON number",
        None,
    ),
    (
        _obs().replace('"valueInteger": 12', '"valueQuantity": {"value": 1e999}'),
        "Observation",
        "value is not finite",
        None,
    ),
    (_obs(valueInteger=None, valueString="Infinity"), "Observation", "value is not finite", None),
    (_obs(status=None), "Observation", "Observation without status", 12.0),
    (_obs(status="done"), "Observation", "unknown Observation status", 12.0),
    (_obs(status=["final"]), "Observation", "unknown Observation status", 12.0),
    (_obs(id=None), "Observation", "missing id", 12.0),
    (_obs(id=7), "Observation", "id is not a FHIR id (a string of 1-64 letters, digits, - or .)", 12.0),
    (_obs(id="a" * 65), "Observation", "id is not a FHIR id (a string of 1-64 letters, digits, - or .)", 12.0),
    (_obs(id="a/b"), "Observation", "id is not a FHIR id (a string of 1-64 letters, digits, - or .)", 12.0),
    (_obs(id="A-z.0" + "9" * 59), "Observation", None, 12.0),  # 64 characters, all allowed
    (_obs(meta={"versionId": 1}), "Observation", "meta.versionId is not a string", 12.0),
    (_obs(meta={"lastUpdated": "yesterday"}), "Observation", "unparseable meta.lastUpdated", 12.0),
    (
        _obs(meta={"lastUpdated": "2026-12-01T00:00:01Z"}),
        "Observation",
        "meta.lastUpdated after the export's transactionTime (the EHR's clock)",
        12.0,
    ),
    (_obs(meta={"lastUpdated": "2026-12-01T00:00:00Z"}), "Observation", None, 12.0),  # the limit itself
    ('{"resourceType": "Observation", "id": "o1"', "Observation", "malformed JSON", None),
    ("[1, 2]", "Observation", "not a JSON object (a Bundle entry without a resource?)", None),
    ('{"id": "x"}', "Observation", "missing resourceType", None),
    ('{"resourceType": "obs!", "id": "x"}', "Observation", "invalid resourceType", None),
    ('{"resourceType": 7, "id": "x"}', "Observation", "invalid resourceType", None),
    ('{"resourceType": "Patient", "id": "p1"}', "Observation", "resourceType does not match the file's type", None),
    ('{"resourceType": "Claim", "id": "c1"}', None, None, None),  # any well-formed type is a record
]


@pytest.fixture(scope="module")
def classified():
    import pyarrow as pa

    con = duckdb.connect()
    batch = pa.table(
        {
            "file": ["f.ndjson"] * len(CASES),
            "line_number": list(range(1, len(CASES) + 1)),
            "line": [c[0] for c in CASES],
            "fallback": [None] * len(CASES),
            "oversize_bytes": pa.array([None] * len(CASES), pa.int64()),
            "declared_type": [c[1] for c in CASES],
        }
    )
    con.register("batch", batch)
    con.execute(CLASSIFY_SQL, {"newest_allowed": NOW})
    rows = con.execute("SELECT line_number, reason, value_score FROM classified ORDER BY line_number").fetchall()
    con.close()
    return rows


@pytest.mark.parametrize("n", range(len(CASES)))
def test_each_line_is_judged_by_the_rules(classified, n):
    _, reason, score = classified[n]
    assert (reason, score) == (CASES[n][2], CASES[n][3]), CASES[n][0]


def test_thumbprint_of_our_jwks_is_recomputable_from_the_key_alone():
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pem = new_private_key("RS384")
    (jwk,) = jwks(pem)["keys"]
    numbers = load_pem_private_key(pem, None).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    canonical = f'{{"e":"{b64(numbers.e)}","kty":"RSA","n":"{b64(numbers.n)}"}}'
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == expected == jwk_thumbprint(jwk)
    assert jwk["alg"] == "RS384" and jwk["use"] == "sig" and "d" not in jwk
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": "oct", "k": "x"})


def test_stand_in_grants_read_scopes_only():
    assert granted_scopes("system/*.read") == [("*", "system/*.read")]
    assert granted_scopes("system/Observation.rs system/Patient.r system/Group.s") == [
        ("Observation", "system/Observation.rs"),
        ("Patient", "system/Patient.r"),
        ("Group", "system/Group.s"),
    ]
    for refused in ("system/*.write", "system/Observation.cruds", "patient/*.read", "user/Observation.rs", "openid"):
        assert granted_scopes(refused) == [], refused


def test_stand_in_parses_type_filters_and_elements():
    codes, problem = _type_filters(["Observation?code=a|1,b", "Observation?code=c"], ["Observation", "Patient"])
    assert codes == {"Observation": {"a|1", "b", "c"}} and problem is None
    for bad in ("Patient?gender=female", "Observation?code=a&status=final", "Observation"):
        assert _type_filters([bad], ["Observation", "Patient"])[1], bad
    kept, problem = _elements("status,Observation.code", ["Observation"])
    assert problem is None and kept["Observation"] == {"resourceType", "id", "meta", "status", "code"}
    assert _elements("Patient.name", ["Observation"])[1] and _elements("$bad", ["Observation"])[1]
    assert _elements(None, ["Observation"]) == (None, None)


def test_suppression_rules():
    assert [count_label(n) for n in (0, 1, 10, 11, 250)] == ["0", "<11", "<11", "11", "250"]
    assert rate_visible(30, 60) and not rate_visible(5, 60) and not rate_visible(55, 60) and not rate_visible(5, 9)
    assert rounded_label(24) == "~20" and rounded_label(7) == "<11" and rounded_label(0) == "0"
    # the nearest 10 of 11-14 would read "~10": a number from 1 to 10 on the page
    assert [rounded_label(n) for n in (10, 11, 14, 15)] == ["<11", "11–14", "11–14", "~20"]
