"""The extract against servers that behave as real EHRs may and our stand-in does not: manifests without counts and
with several files per type, files on another host, redirects, URLs on another origin. Real HTTP on 127.0.0.1;
the servers record every request, so the tests see exactly where the bearer token went."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from urllib.parse import parse_qs

import jwt
import pytest
from conftest import outcomes
from scripted_server import Reply, ScriptedServer

from ingestion.client_keys import new_private_key, write_private_key

TOKEN = "the-bearer-token"


def _line(rtype: str, rid: str, extra: dict | None = None) -> bytes:
    res = {"resourceType": rtype, "id": rid, "meta": {"versionId": "1", "lastUpdated": "2026-11-30T10:00:00Z"}}
    if rtype == "Observation":
        res.update(status="final", subject={"reference": "Patient/p1"}, valueInteger=12)
    return json.dumps({**res, **(extra or {})}).encode() + b"\n"


@pytest.fixture()
def servers():
    ehr, elsewhere = ScriptedServer(), ScriptedServer()
    ehr.route(
        "GET",
        "/fhir/.well-known/smart-configuration",
        Reply(body={"token_endpoint": f"{ehr.base}/auth/token", "capabilities": ["permission-v2"]}),
    )
    ehr.route("POST", "/auth/token", Reply(body={"access_token": TOKEN, "token_type": "bearer", "expires_in": 300}))
    ehr.route("DELETE", "/fhir/status/1", Reply(202))
    yield ehr, elsewhere
    ehr.stop()
    elsewhere.stop()


@pytest.fixture()
def key(tmp_path):
    path = tmp_path / "client.pem"
    write_private_key(path, new_private_key("ES384"))
    return path


def kick_off_to(ehr: ScriptedServer, status_url: str) -> None:
    ehr.route("GET", "/fhir/Group/clinic/$export", Reply(202, headers={"Content-Location": status_url}))


def export_ready(ehr: ScriptedServer, output: list[dict]) -> None:
    """An export whose manifest lists `output` and requires the token for its files."""
    kick_off_to(ehr, f"{ehr.base}/fhir/status/1")
    manifest = {"transactionTime": "2026-11-30T23:00:00Z", "requiresAccessToken": True, "output": output}
    ehr.route("GET", "/fhir/status/1", Reply(body=manifest))


def extract(ehr: ScriptedServer, key, tmp_path, mode: str = "bulk", **env):
    return outcomes(
        "extract",
        check=False,
        env={
            "OUTCOMES_EHR_URL": f"{ehr.base}/fhir",
            "OUTCOMES_CLIENT_ID": "clinic-app",
            "OUTCOMES_PRIVATE_KEY_PATH": str(key),
            "OUTCOMES_GROUP_ID": "clinic",
            "OUTCOMES_EXTRACT_MODE": mode,
            "OUTCOMES_WAREHOUSE": str(tmp_path / "wh" / "warehouse.duckdb"),
            **env,
        },
        timeout=120,
    )


def expected_kid(key_path) -> str:
    """RFC 7638 thumbprint of the EC public key, built here from the key's numbers (not from our client code)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    numbers = load_pem_private_key(key_path.read_bytes(), None).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(48, "big")).rstrip(b"=").decode()

    canonical = f'{{"crv":"P-384","kty":"EC","x":"{b64(numbers.x)}","y":"{b64(numbers.y)}"}}'
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def test_manifest_as_the_ig_allows_files_elsewhere_without_the_token(servers, key, tmp_path):
    """Several files per type, no `count`, an `extension`, gzip, requiresAccessToken false, files on another host."""
    ehr, files = servers
    kick_off_to(ehr, f"{ehr.base}/fhir/status/1")
    obs_a = b"".join(_line("Observation", f"o{i}") for i in range(3))
    obs_b = b"".join(_line("Observation", f"o{i}") for i in range(3, 8))[:-1]  # no final newline
    pat = _line("Patient", "p1")
    files.route("GET", "/bucket/obs-a.ndjson", Reply(body=gzip.compress(obs_a), headers={"Content-Encoding": "gzip"}))
    files.route("GET", "/bucket/obs-b.ndjson", Reply(body=obs_b))
    files.route("GET", "/bucket/pat.ndjson", Reply(body=pat))
    ehr.route(
        "GET",
        "/fhir/status/1",
        Reply(
            body={
                "transactionTime": "2026-11-30T23:00:00.123+00:00",
                "request": f"{ehr.base}/fhir/Group/clinic/$export",
                "requiresAccessToken": False,
                "output": [
                    {"type": "Observation", "url": f"{files.base}/bucket/obs-a.ndjson"},
                    {"type": "Observation", "url": f"{files.base}/bucket/obs-b.ndjson", "extension": {"x": 1}},
                    {"type": "Patient", "url": f"{files.base}/bucket/pat.ndjson"},
                ],
                "error": [],
                "extension": {"https://example.org/vendor": True},
            }
        ),
    )
    proc = extract(ehr, key, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Observation" in proc.stdout and "(gzip," in proc.stdout
    # the token went to the EHR's own origin and nowhere else
    assert files.seen and not files.authorized()
    assert {s.path for s in files.seen} == {"/bucket/obs-a.ndjson", "/bucket/obs-b.ndjson", "/bucket/pat.ndjson"}
    api = [s for s in ehr.seen if s.path.startswith("/fhir/") and ".well-known" not in s.path]
    assert api and all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in api)
    # the client assertion names its key, and the scopes are SMART v2 reads (the server advertises permission-v2)
    token_request = next(s for s in ehr.seen if s.path == "/auth/token")
    form = {k: v[0] for k, v in parse_qs(token_request.body.decode()).items()}
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["kid"] == expected_kid(key) and header["alg"] == "ES384"
    assert form["scope"] == "system/*.rs"
    # every line landed and loads: read = 3 + 5 Observations (the last without a newline) + 1 Patient
    wh = tmp_path / "wh" / "warehouse.duckdb"
    load = outcomes("load", env={"OUTCOMES_WAREHOUSE": str(wh)})
    assert "read 9, loaded 9" in load.stdout, load.stdout


def test_status_url_on_another_origin_never_gets_the_token(servers, key, tmp_path):
    ehr, elsewhere = servers
    kick_off_to(ehr, f"{elsewhere.base}/status/1")
    proc = extract(ehr, key, tmp_path)
    assert proc.returncode != 0 and "another origin" in proc.stderr
    assert not elsewhere.authorized()


def test_files_that_need_the_token_on_another_origin_are_refused(servers, key, tmp_path):
    ehr, elsewhere = servers
    elsewhere.route("GET", "/f.ndjson", Reply(body=_line("Patient", "p1")))
    export_ready(ehr, [{"type": "Patient", "url": f"{elsewhere.base}/f.ndjson"}])
    proc = extract(ehr, key, tmp_path)
    assert proc.returncode != 0 and "never sent outside the EHR's origin" in proc.stderr
    assert not elsewhere.authorized()


def test_a_redirect_to_storage_elsewhere_drops_the_token(servers, key, tmp_path):
    ehr, storage = servers
    storage.route("GET", "/signed/f.ndjson", Reply(body=_line("Patient", "p1") + _line("Patient", "p2")))
    ehr.route("GET", "/fhir/files/f.ndjson", Reply(307, headers={"Location": f"{storage.base}/signed/f.ndjson"}))
    export_ready(ehr, [{"type": "Patient", "url": f"{ehr.base}/fhir/files/f.ndjson", "count": 2}])
    proc = extract(ehr, key, tmp_path)
    assert proc.returncode == 0, proc.stderr
    first_hop = next(s for s in ehr.seen if s.path == "/fhir/files/f.ndjson")
    assert first_hop.headers.get("authorization") == f"Bearer {TOKEN}"
    assert [s.path for s in storage.seen] == ["/signed/f.ndjson"] and not storage.authorized()


def test_a_type_the_server_refuses_is_dropped_with_a_warning(servers, key, tmp_path):
    ehr, _ = servers

    def kick_off(seen):
        if "MedicationAdministration" in seen.query["_type"][0]:
            text = 'The requested resource type "MedicationAdministration" is not available on this server'
            return Reply(400, {"resourceType": "OperationOutcome", "issue": [{"code": "invalid", "diagnostics": text}]})
        return Reply(202, headers={"Content-Location": f"{ehr.base}/fhir/status/1"})

    ehr.route("GET", "/fhir/Group/clinic/$export", kick_off)
    ehr.route("GET", "/fhir/status/1", Reply(body={"transactionTime": "2026-11-30T23:00:00Z", "output": []}))
    proc = extract(ehr, key, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "refused MedicationAdministration" in proc.stdout
    kickoffs = [s.query["_type"][0].split(",") for s in ehr.seen if s.path.endswith("$export")]
    assert len(kickoffs) == 2 and "MedicationAdministration" not in kickoffs[1]
    assert set(kickoffs[0]) - set(kickoffs[1]) == {"MedicationAdministration"}
    # a refusal that names none of the types asked for is an error that says what to set
    ehr.route(
        "GET",
        "/fhir/Group/clinic/$export",
        Reply(403, {"resourceType": "OperationOutcome", "issue": [{"code": "forbidden", "diagnostics": "no"}]}),
    )
    proc = extract(ehr, key, tmp_path)
    assert proc.returncode != 0 and "OUTCOMES_EXPORT_TYPES" in proc.stderr


def test_search_follows_members_in_every_reference_form_and_never_a_link_elsewhere(servers, key, tmp_path):
    ehr, elsewhere = servers
    members = ["urn:uuid:9f1c2d3e-0000-4000-8000-000000000001", "Patient/p2", f"{ehr.base}/fhir/Patient/p3/_history/4"]
    ehr.route(
        "GET",
        "/fhir/Group/clinic",
        Reply(body={"resourceType": "Group", "member": [{"entity": {"reference": m}} for m in members]}),
    )
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for rtype in ("Patient", "Condition", "CarePlan", "MedicationAdministration", "Procedure"):
        ehr.route("GET", f"/fhir/{rtype}", Reply(body=empty))
    searched = []

    def observations(seen):
        searched.append(seen.query["patient"][0])
        link = [{"relation": "next", "url": f"{elsewhere.base}/fhir/Observation?page=2"}] if len(searched) == 3 else []
        return Reply(body={**empty, "link": link})

    ehr.route("GET", "/fhir/Observation", observations)
    proc = extract(ehr, key, tmp_path, mode="search")
    assert searched == ["9f1c2d3e-0000-4000-8000-000000000001", "p2", "p3"]
    patients = [s.query for s in ehr.seen if s.path == "/fhir/Patient"]
    assert patients and all("_id" in q and "patient" not in q for q in patients)  # Patient has no `patient` param
    assert proc.returncode != 0 and "another origin" in proc.stderr
    assert not elsewhere.seen
