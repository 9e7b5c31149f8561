"""The stand-in EHR over real HTTP on 127.0.0.1: auth, export round trip, _since, paging, faults."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta, timezone

import httpx
import jwt
import orjson
import pytest
from conftest import EHRProcess, outcomes
from cryptography.hazmat.primitives.asymmetric import rsa

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def token_url(ehr) -> str:
    return httpx.get(f"{ehr.base}/.well-known/smart-configuration").json()["token_endpoint"]


def assertion(
    client_id: str, key, alg: str, aud: str, exp_in: int = 240, jti: str | None = None, kid: str | None = None
) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "jti": jti or str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def registered_kid(clinic, client_id: str) -> str:
    """The kid the stand-in holds for the client (read from its registry, not computed by our client code)."""
    return json.loads((clinic / "_ehr" / "clients.json").read_text())[client_id]["jwks"]["keys"][0]["kid"]


def request_token(ehr, client_keys, alg="RS384", scope="system/*.read", **kw) -> httpx.Response:
    client_id, path = client_keys[alg]
    url = token_url(ehr)
    kw.setdefault("kid", registered_kid(ehr.data, client_id))
    a = assertion(client_id, path.read_bytes(), alg, kw.pop("aud", url), **kw)
    return httpx.post(
        url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION,
            "client_assertion": a,
        },
    )


def bearer(ehr, client_keys, alg="RS384", scope="system/*.read") -> dict:
    r = request_token(ehr, client_keys, alg, scope=scope)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def run_export(ehr, client_keys, params: dict | None = None, group: bool = True, path: str | None = None) -> dict:
    headers = bearer(ehr, client_keys)
    url = f"{ehr.base}/{path or ('Group/ketamine-clinic/$export' if group else '$export')}"
    r = httpx.get(
        url, params=params or {}, headers={**headers, "Prefer": "respond-async", "Accept": "application/fhir+json"}
    )
    assert r.status_code == 202, r.text
    status = r.headers["Content-Location"]
    for _ in range(100):
        r = httpx.get(status, headers=headers)
        if r.status_code == 200:
            break
        assert r.status_code == 202, r.text
        time.sleep(0.2)
    manifest = r.json()
    files: dict[str, list[bytes]] = {}
    for o in manifest["output"]:
        body = httpx.get(o["url"], headers=headers).content
        files.setdefault(o["type"], []).extend(body.splitlines())
    manifest["_files"] = files
    manifest["_status"] = status
    manifest["_headers"] = headers
    return manifest


def test_auth_accepts_rs384_and_es384(ehr, client_keys):
    for alg in ("RS384", "ES384"):
        r = request_token(ehr, client_keys, alg)
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "bearer" and r.json()["expires_in"] <= 300


def test_auth_rejects_bad_signature_wrong_aud_expired_and_replay(ehr, client_keys):
    client_id, _ = client_keys["RS384"]
    url = token_url(ehr)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = assertion(client_id, other, "RS384", url)
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION}
    r = httpx.post(url, data={**form, "client_assertion": bad})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert request_token(ehr, client_keys, aud="https://elsewhere.example/token").status_code == 401
    assert request_token(ehr, client_keys, exp_in=-120).status_code == 401
    assert request_token(ehr, client_keys, exp_in=3600).status_code == 401  # more than 5 minutes ahead
    jti = str(uuid.uuid4())
    assert request_token(ehr, client_keys, jti=jti).status_code == 200
    assert request_token(ehr, client_keys, jti=jti).status_code == 401
    r = httpx.post(url, data={**form, "grant_type": "password", "client_assertion": bad})
    assert r.status_code == 400
    assert httpx.get(f"{ehr.base}/Group/ketamine-clinic").status_code == 401


def test_export_round_trip_returns_exactly_the_generated_resources(ehr, client_keys, small_clinic):
    manifest = run_export(ehr, client_keys)
    expected_tt = json.loads((small_clinic / "manifest.json").read_text())["transactionTime"]
    assert manifest["transactionTime"] == expected_tt and manifest["requiresAccessToken"] is True
    for rtype, lines in manifest["_files"].items():
        assert lines == (small_clinic / f"{rtype}.ndjson").read_bytes().splitlines(), rtype
    assert sum(o["count"] for o in manifest["output"]) == sum(len(v) for v in manifest["_files"].values())
    # downloads need the token; so does DELETE, which ends the job
    first = manifest["output"][0]["url"]
    assert httpx.get(first).status_code == 401
    assert httpx.delete(manifest["_status"]).status_code == 401
    assert httpx.get(manifest["_status"], headers=manifest["_headers"]).status_code == 200
    assert httpx.delete(manifest["_status"], headers=manifest["_headers"]).status_code == 202
    assert httpx.get(manifest["_status"], headers=manifest["_headers"]).status_code == 404


def test_type_filter_and_since_with_offsets(ehr, client_keys, small_clinic):
    obs = []
    for line in (small_clinic / "Observation.ndjson").read_bytes().splitlines():
        try:
            o = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        obs.append((datetime.fromisoformat(o["meta"]["lastUpdated"].replace("Z", "+00:00")), line))
    cut = sorted(t for t, _ in obs)[len(obs) * 2 // 3]
    expected = sorted(line for t, line in obs if t > cut)
    as_utc = cut.astimezone(UTC).isoformat().replace("+00:00", "Z")
    as_pacific = cut.astimezone(timezone(timedelta(hours=-7))).isoformat()
    as_far_east = cut.astimezone(timezone(timedelta(hours=9, minutes=30))).isoformat()
    results = []
    for since in (as_utc, as_pacific, as_far_east):
        m = run_export(ehr, client_keys, {"_type": "Observation", "_since": since})
        assert {o["type"] for o in m["output"]} == {"Observation"}
        got = [x for x in m["_files"]["Observation"] if x.startswith(b'{"resourceType":"Observation","id"')]
        results.append(sorted(got))
    assert results[0] == results[1] == results[2]
    assert set(expected) <= set(results[0]) and len(results[0]) - len(expected) <= 5  # duplicate lines only
    headers = bearer(ehr, client_keys)
    for bad in ("yesterday", "2026-01-01T00:00:00"):
        r = httpx.get(f"{ehr.base}/$export", params={"_since": bad}, headers={**headers, "Prefer": "respond-async"})
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_patient_search_pages_through_opaque_next_links(ehr, client_keys, small_clinic):
    headers = bearer(ehr, client_keys)
    group = httpx.get(f"{ehr.base}/Group/ketamine-clinic", headers=headers).json()
    pid = group["member"][3]["entity"]["reference"].split("/")[1]
    url = f"{ehr.base}/Observation?patient={pid}&_count=7"
    seen, pages = [], 0
    while url:
        b = httpx.get(url, headers=headers).json()
        pages += 1
        seen += [e["resource"]["id"] for e in b["entry"]]
        url = next((link["url"] for link in b["link"] if link["relation"] == "next"), None)
    direct = []
    for line in (small_clinic / "Observation.ndjson").read_bytes().splitlines():
        try:
            o = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if o["subject"]["reference"].endswith(f"Patient/{pid}"):
            direct.append(o["id"])
    assert sorted(seen) == sorted(direct) and pages > 2
    # code and _lastUpdated filters
    b = httpx.get(
        f"{ehr.base}/Observation",
        params={
            "patient": pid,
            "code": "http://loinc.org|44261-6",
            "_lastUpdated": "gt2000-01-01T00:00:00Z",
            "_count": 1000,
        },
        headers=headers,
    ).json()
    assert b["entry"] and all(e["resource"]["code"]["coding"][0]["code"] == "44261-6" for e in b["entry"])
    r = httpx.get(f"{ehr.base}/Observation", params={"patient": pid, "_sort": "date"}, headers=headers)
    assert r.status_code == 400


def test_fault_rate_limit_and_unavailable(ehr, client_keys):
    ehr.set_faults(rate_limit=True, unavailable=True)
    headers = bearer(ehr, client_keys)
    kick = {**headers, "Prefer": "respond-async"}
    r = httpx.get(f"{ehr.base}/$export", headers=kick)
    assert r.status_code == 503 and r.json()["issue"][0]["code"] == "transient"
    r = httpx.get(f"{ehr.base}/$export", headers=kick)
    assert r.status_code == 202
    status = r.headers["Content-Location"]
    codes, retry_after = [], []
    for _ in range(8):
        r = httpx.get(status, headers=headers)
        codes.append(r.status_code)
        if r.status_code == 429:
            retry_after.append(r.headers["Retry-After"])
        if r.status_code == 200:
            break
        time.sleep(0.4)
    assert codes[0] == 503 and 429 in codes and codes[-1] == 200
    assert any(v.isdigit() for v in retry_after) and any("GMT" in v for v in retry_after)


def test_fault_expiring_tokens_and_slow_jobs(ehr, client_keys):
    ehr.set_faults(expire_tokens=True, slow=True)
    headers = bearer(ehr, client_keys)
    r = httpx.get(f"{ehr.base}/$export", headers={**headers, "Prefer": "respond-async"})
    assert r.status_code == 202
    r = httpx.get(r.headers["Content-Location"], headers=headers)
    assert r.status_code == 202 and "X-Progress" in r.headers
    statuses = [httpx.get(f"{ehr.base}/Group/ketamine-clinic", headers=headers).status_code for _ in range(3)]
    assert statuses[-1] == 401  # the token died mid-job: the client must re-authenticate


def test_fault_truncated_download_then_complete_retry(ehr, client_keys, small_clinic):
    ehr.set_faults(truncate=True)
    headers = bearer(ehr, client_keys)
    whole = (small_clinic / "Patient.ndjson").read_bytes()

    def file_url() -> str:
        r = httpx.get(f"{ehr.base}/$export?_type=Patient", headers={**headers, "Prefer": "respond-async"})
        time.sleep(0.5)
        return httpx.get(r.headers["Content-Location"], headers=headers).json()["output"][0]["url"]

    def gzip_download(url: str) -> tuple[bytes, bool]:
        """The decoded body and whether its gzip stream was complete (raw bytes, decoded here)."""
        with httpx.stream("GET", url, headers={**headers, "Accept-Encoding": "gzip"}) as r:
            assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
            assert "Content-Length" not in r.headers
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = b"".join(decoder.decompress(c) for c in r.iter_raw()) + decoder.flush()
            return body, decoder.eof

    url = file_url()
    identity = {**headers, "Accept-Encoding": "identity"}
    with pytest.raises(httpx.HTTPError):  # the connection ends before Content-Length
        httpx.get(url, headers=identity).raise_for_status()
    assert httpx.get(url, headers=identity).content == whole
    url = file_url()  # a new job: its first download is cut short again, this time gzip-encoded
    body, complete = gzip_download(url)
    assert not complete and len(body) < len(whole) and whole.startswith(body)
    assert gzip_download(url) == (whole, True)


def test_bad_requests_get_operation_outcomes_and_never_crash(ehr, client_keys):
    headers = bearer(ehr, client_keys)
    cases = [
        httpx.get(f"{ehr.base}/no/such/route"),
        httpx.get(f"{ehr.base}/Group/other/$export", headers={**headers, "Prefer": "respond-async"}),
        httpx.get(f"{ehr.base}/$export", headers=headers),  # no Prefer: respond-async
        httpx.get(f"{ehr.base}/$export?_type=Nonsense", headers={**headers, "Prefer": "respond-async"}),
        httpx.post(f"{ehr.base}/$export", content=b"{not json", headers={**headers, "Prefer": "respond-async"}),
        httpx.get(f"{ehr.base}/_jobs/doesnotexist", headers=headers),
        httpx.get(f"{ehr.base}/Observation?_count=abc&patient=x", headers=headers),
        httpx.get(f"{ehr.base}/Observation?_getpages=bogus", headers=headers),
        httpx.post(f"{ehr.base}/auth/token", content=b"\xff\xfe", headers={"Content-Type": "text/plain"}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        body = r.json()
        assert body.get("resourceType") == "OperationOutcome" or "error" in body
    assert ehr.alive()


def test_malformed_claims_are_401_and_oversized_bodies_413(ehr, client_keys):
    client_id, path = client_keys["RS384"]
    url = token_url(ehr)
    kid = registered_kid(ehr.data, client_id)
    now = int(time.time())
    good = {"iss": client_id, "sub": client_id, "aud": url, "exp": now + 240}
    for claims in (
        {**good, "exp": str(now + 240), "jti": str(uuid.uuid4())},  # a string exp
        {**good, "jti": {"not": "a string"}},
        {**good, "sub": [client_id], "jti": str(uuid.uuid4())},
    ):
        a = jwt.encode(claims, path.read_bytes(), algorithm="RS384", headers={"kid": kid})
        r = httpx.post(
            url,
            data={
                "grant_type": "client_credentials",
                "scope": "system/*.read",
                "client_assertion_type": ASSERTION,
                "client_assertion": a,
            },
        )
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", (claims, r.status_code, r.text)
    big = b"grant_type=client_credentials&pad=" + b"x" * (1024 * 1024)
    r = httpx.post(url, content=big, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(64):
            yield b"x" * 4096

    r = httpx.post(
        f"{ehr.base}/$export", content=chunks(), headers={**bearer(ehr, client_keys), "Prefer": "respond-async"}
    )
    assert r.status_code == 413
    assert request_token(ehr, client_keys).status_code == 200  # and the server serves on
    assert ehr.alive()


def test_cli_rejects_bad_arguments(tmp_path):
    for args in (
        ["ehr", "generate", "--patients", "0", "--out", str(tmp_path)],
        ["ehr", "generate", "--patients", "ten", "--out", str(tmp_path)],
        ["ehr", "generate", "--continue-days", "3", "--out", str(tmp_path / "empty")],
        ["ehr", "serve", "--data", str(tmp_path / "missing")],
        ["ehr", "serve", "--data", str(tmp_path), "--port", "70000"],
    ):
        proc = outcomes(*args, check=False)
        assert proc.returncode != 0 and "error" in proc.stderr.lower(), args
        assert "Traceback" not in proc.stderr


def test_the_assertion_must_name_a_registered_key_by_kid(ehr, client_keys):
    r = request_token(ehr, client_keys, kid="")  # no kid header at all
    assert r.status_code == 401 and "kid" in r.json()["error_description"]
    r = request_token(ehr, client_keys, kid="not-a-registered-kid")
    assert r.status_code == 401 and "not-a-registered-kid" in r.json()["error_description"]
    # the ES384 client's kid with the RS384 client's id and key: no such key for this client
    r = request_token(ehr, client_keys, kid=registered_kid(ehr.data, client_keys["ES384"][0]))
    assert r.status_code == 401
    assert request_token(ehr, client_keys).status_code == 200


def test_read_scopes_only_and_enforced(ehr, client_keys):
    r = request_token(ehr, client_keys, scope="system/*.write system/Observation.cud")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = request_token(ehr, client_keys, scope="system/Observation.rs system/Patient.write patient/*.read")
    assert r.status_code == 200 and r.json()["scope"] == "system/Observation.rs"
    headers = {"Authorization": f"Bearer {r.json()['access_token']}", "Prefer": "respond-async"}
    assert httpx.get(f"{ehr.base}/$export?_type=Observation", headers=headers).status_code == 202
    r = httpx.get(f"{ehr.base}/$export?_type=Observation,Patient", headers=headers)
    assert r.status_code == 403 and "Patient" in r.json()["issue"][0]["diagnostics"]
    assert httpx.get(f"{ehr.base}/Group/ketamine-clinic", headers=headers).status_code == 403


def test_a_job_belongs_to_the_client_that_started_it(ehr, client_keys):
    manifest = run_export(ehr, client_keys, {"_type": "Patient"})
    other = bearer(ehr, client_keys, "ES384")
    status, first = manifest["_status"], manifest["output"][0]["url"]
    for method, url in (("GET", status), ("GET", first), ("DELETE", status)):
        r = httpx.request(method, url, headers=other)
        assert r.status_code == 404, (method, url)  # as if it did not exist: nothing about it leaks
    assert httpx.get(first, headers=manifest["_headers"]).status_code == 200
    assert httpx.delete(status, headers=manifest["_headers"]).status_code == 202


def test_bulk_output_is_the_current_valid_version_of_each_resource(tmp_path):
    """From a store with superseded versions, broken and repeated lines, the export sends one valid line per id."""
    from ehr_simulator.generate import generate
    from ehr_simulator.params import GeneratorConfig, MessRates

    store = tmp_path / "ehr"
    # broken lines at ten times the default rate, so a 40-patient store surely holds some
    generate(GeneratorConfig(patients=40, seed=11, file_mess=True, mess=MessRates(malformed_line=0.005)), store)
    key = tmp_path / "k.pem"
    outcomes("ehr", "register-client", "--data", str(store), "--key-out", str(key), "--client-id", "c1")
    raw = (store / "Observation.ndjson").read_bytes().splitlines()
    newest: dict[str, tuple] = {}
    broken = 0
    for line in raw:
        try:
            o = orjson.loads(line)
        except orjson.JSONDecodeError:
            broken += 1
            continue
        rank = (datetime.fromisoformat(o["meta"]["lastUpdated"].replace("Z", "+00:00")), int(o["meta"]["versionId"]))
        if o["id"] not in newest or rank > newest[o["id"]][0]:
            newest[o["id"]] = (rank, line)
    assert broken and len(raw) > len(newest) + broken  # the store does hold the mess

    server = EHRProcess(store)
    try:
        m = run_export(server, {"RS384": ("c1", key)}, {"_type": "Observation"})
    finally:
        server.stop()
    lines = m["_files"]["Observation"]
    assert sorted(lines) == sorted(line for _, line in newest.values())


def test_type_filter_elements_and_patient_export(ehr, client_keys, small_clinic):
    code = "https://ketamine-outcomes.org/fhir/CodeSystem/instrument|madrs-total"
    m = run_export(ehr, client_keys, {"_type": "Observation", "_typeFilter": f"Observation?code={code}"})
    got = [orjson.loads(x) for x in m["_files"]["Observation"]]
    expected = [
        o
        for o in (orjson.loads(x) for x in (small_clinic / "Observation.ndjson").read_bytes().splitlines())
        if o["code"]["coding"][0]["code"] == "madrs-total"
    ]
    assert got and sorted(o["id"] for o in got) == sorted(o["id"] for o in expected)
    m = run_export(ehr, client_keys, {"_type": "Observation", "_elements": "status,Observation.code"})
    sample = orjson.loads(m["_files"]["Observation"][0])
    assert set(sample) == {"resourceType", "id", "meta", "status", "code"}
    assert any(t["code"] == "SUBSETTED" for t in sample["meta"]["tag"])
    headers = {**bearer(ehr, client_keys), "Prefer": "respond-async"}
    r = httpx.get(f"{ehr.base}/$export", params={"_typeFilter": "Patient?gender=female"}, headers=headers)
    assert r.status_code == 400 and "_typeFilter" in r.json()["issue"][0]["diagnostics"]
    lenient = {**headers, "Prefer": "respond-async, handling=lenient"}
    r = httpx.get(f"{ehr.base}/$export", params={"_typeFilter": "Patient?gender=female"}, headers=lenient)
    assert r.status_code == 202
    # Patient-level export: the patients' compartments, so no Practitioner; the system-level one has them
    patient_level = run_export(ehr, client_keys, path="Patient/$export")
    assert "Patient" in patient_level["_files"] and "Practitioner" not in patient_level["_files"]
    assert "Practitioner" in run_export(ehr, client_keys, group=False)["_files"]


def test_extract_drops_a_type_the_stand_in_does_not_hold_and_logs_why(ehr, client_keys, tmp_path):
    client_id, key = client_keys["RS384"]
    env = {
        "OUTCOMES_EHR_URL": ehr.base,
        "OUTCOMES_CLIENT_ID": client_id,
        "OUTCOMES_PRIVATE_KEY_PATH": str(key),
        "OUTCOMES_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "OUTCOMES_EXPORT_TYPES": "Patient,Encounter,Observation",
    }
    out = outcomes("extract", env=env).stdout
    assert "refused Encounter" in out
    outcomes("load", env=env)
    import duckdb

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        (warnings,) = con.execute("SELECT warnings FROM raw.load_log WHERE status = 'committed'").fetchall()[0]
        types = {r[0] for r in con.execute("SELECT resource_type FROM raw.load_counts").fetchall()}
    finally:
        con.close()
    assert "Encounter" in warnings and types == {"Patient", "Observation"}
    # a kid the EHR does not know: the extract stops and says what to register
    proc = outcomes("extract", check=False, env={**env, "OUTCOMES_CLIENT_KID": "rotated-away"})
    assert proc.returncode != 0 and "outcomes keys jwks" in proc.stderr and "rotated-away" in proc.stderr


def test_keys_cli_prints_a_jwks_the_ehr_registers(tmp_path, small_clinic):
    key = tmp_path / "clinic.pem"
    proc = outcomes("keys", "new", "--out", str(key), "--alg", "ES384")
    jwks = json.loads(proc.stdout)
    (k,) = jwks["keys"]
    assert k["kty"] == "EC" and k["alg"] == "ES384" and k["use"] == "sig" and k["kid"] and "d" not in k
    assert key.stat().st_mode & 0o777 == 0o600
    again = outcomes("keys", "new", "--out", str(key), check=False)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    printed = outcomes("keys", "jwks", "--key", str(key)).stdout
    assert json.loads(printed) == jwks
    (tmp_path / "jwks.json").write_text(printed)
    outcomes(
        "ehr",
        "register-client",
        "--data",
        str(small_clinic),
        "--jwks",
        str(tmp_path / "jwks.json"),
        "--client-id",
        "from-jwks",
    )
    assert registered_kid(small_clinic, "from-jwks") == k["kid"]
    private = json.loads(printed)
    private["keys"][0]["d"] = "secret"
    (tmp_path / "bad.json").write_text(json.dumps(private))
    bad = outcomes(
        "ehr", "register-client", "--data", str(small_clinic), "--jwks", str(tmp_path / "bad.json"), check=False
    )
    assert bad.returncode != 0 and "private key material" in bad.stderr


def test_the_fault_switch_is_closed_unless_the_server_was_started_with_it(small_clinic, client_keys):
    server = EHRProcess(small_clinic)
    try:
        token = {"X-Admin-Token": "any"}
        assert httpx.post(f"{server.base}/_admin/faults", json={"slow": True}, headers=token).status_code == 404
        assert httpx.get(f"{server.base}/_admin/faults", headers=token).status_code == 404
    finally:
        server.stop()


def test_faults_can_be_switched_only_with_the_admin_token(ehr):
    assert httpx.post(f"{ehr.base}/_admin/faults", json={"slow": True}).status_code == 403
    wrong = {"X-Admin-Token": "guess"}
    assert httpx.post(f"{ehr.base}/_admin/faults", json={"slow": True}, headers=wrong).status_code == 403
    assert (ehr.data / "_ehr" / "admin_token").stat().st_mode & 0o777 == 0o600
    ehr.set_faults(slow=True)  # reads the token from the clinic folder, as its owner can
    token = {"X-Admin-Token": (ehr.data / "_ehr" / "admin_token").read_text()}
    assert httpx.get(f"{ehr.base}/_admin/faults", headers=token).json()["slow"] is True
