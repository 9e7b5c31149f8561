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
from conftest import outcomes
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


def run_export(ehr, client_keys, params: dict | None = None, group: bool = True) -> dict:
    headers = bearer(ehr, client_keys)
    url = f"{ehr.base}/Group/ketamine-clinic/$export" if group else f"{ehr.base}/$export"
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
