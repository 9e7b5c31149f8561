"""The stand-in EHR: SMART Backend Services, Bulk Data v2 export and patient-scoped search (Starlette).

It serves a generated clinic folder. Its clock is the clinic's: an export's transactionTime is the
clinic's as-of instant, so `_since` from one export picks up exactly what `ehr generate --continue-days`
added afterwards. Faults can be switched per run (CLI flags) or at run time (POST /_admin/faults).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ehr_simulator.auth import AuthError, TokenIssuer, allows

GROUP_ID = "ketamine-clinic"
PATIENT_REF = re.compile(rb'"(?:subject|patient)":\{"reference":"(?:[^"]*/)?Patient/([^"]+)"')
FHIR_JSON = "application/fhir+json"


@dataclass
class Faults:
    rate_limit: bool = False  # 429 + Retry-After (seconds, then HTTP-date) on the first polls / pages
    unavailable: bool = False  # 503 transient OperationOutcome on the first kick-off and first poll
    expire_tokens: bool = False  # tokens stop working after a few requests (mid-export)
    slow: bool = False  # jobs take seconds, with X-Progress
    truncate: bool = False  # the first download of each file is cut short

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        f = cls()
        for name in filter(None, (spec or "").replace(" ", "").split(",")):
            key = name.replace("-", "_")
            if key not in asdict(f):
                raise ValueError(f"unknown fault {name!r}; choose from {', '.join(asdict(f))}")
            setattr(f, key, True)
        return f


def outcome(status: int, code: str, text: str, severity: str = "error", headers: dict | None = None) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def parse_instant(text: str) -> datetime:
    """A FHIR instant (offset required); raises ValueError otherwise."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"instant {text!r} has no timezone offset")
    return dt


@dataclass
class Entry:
    offset: int
    length: int
    last_updated: datetime | None
    patient: str | None
    code: str | None  # "system|code" for Observations


@dataclass
class Index:
    data_dir: Path
    transaction_time: str
    entries: dict[str, list[Entry]]
    by_patient: dict[str, dict[str, list[int]]]
    patients: list[str]
    deleted: list[dict]
    mtime: float

    @classmethod
    def build(cls, data_dir: Path) -> Index:
        manifest = orjson.loads((data_dir / "manifest.json").read_bytes())
        entries: dict[str, list[Entry]] = {}
        by_patient: dict[str, dict[str, list[int]]] = {}
        patients: list[str] = []
        for out in manifest["output"]:
            rtype = out["type"]
            # The folder is the EHR's store (it may hold superseded versions and, with --file-mess, broken
            # lines); what the server serves is the current version of each resource, valid JSON only.
            newest: dict[str, tuple[tuple, Entry]] = {}
            offset = 0
            with open(data_dir / out["url"], "rb") as f:
                for line in f:
                    start, offset = offset, offset + len(line)
                    try:
                        res = orjson.loads(line)
                        rid = res["id"]
                        lu = parse_instant(res["meta"]["lastUpdated"])
                        if res["resourceType"] != rtype or not isinstance(rid, str) or not line.endswith(b"\n"):
                            continue
                        version = res["meta"].get("versionId", "")
                        rank = (lu, int(version) if str(version).isdigit() else -1)
                        pat = rid if rtype == "Patient" else None
                        if pat is None and (m := PATIENT_REF.search(line)):
                            pat = m.group(1).decode()
                        code = None
                        if rtype == "Observation":
                            c = res["code"]["coding"][0]
                            code = f"{c.get('system', '')}|{c.get('code', '')}"
                    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError, AttributeError):
                        continue
                    if rid not in newest or rank > newest[rid][0]:
                        newest[rid] = (rank, Entry(start, len(line), lu, pat, code))
            lst = sorted((e for _, e in newest.values()), key=lambda e: e.offset)
            for i, e in enumerate(lst):
                if rtype == "Patient":
                    patients.append(e.patient)
                if e.patient is not None:
                    by_patient.setdefault(e.patient, {}).setdefault(rtype, []).append(i)
            entries[rtype] = lst
        deleted_path = data_dir / "_ehr" / "deleted.ndjson"
        deleted = [orjson.loads(x) for x in deleted_path.read_bytes().splitlines()] if deleted_path.exists() else []
        return cls(
            data_dir,
            manifest["transactionTime"],
            entries,
            by_patient,
            list(dict.fromkeys(patients)),
            deleted,
            (data_dir / "manifest.json").stat().st_mtime,
        )

    def file(self, rtype: str) -> Path:
        return self.data_dir / f"{rtype}.ndjson"


@dataclass
class Job:
    id: str
    request: str
    transaction_time: str
    ready_at: float
    outputs: list[dict]  # {type, name, entries: list[Entry]}
    deleted: list[dict]
    client_id: str = ""
    elements: dict[str, set[str]] | None = None  # per type (or "*"): the elements kept (_elements)
    polls: int = 0
    downloads: dict[str, int] = field(default_factory=dict)


class EHR:
    def __init__(
        self,
        data_dir: Path,
        faults: Faults | None = None,
        max_lines_per_file: int = 100_000,
        admin: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.faults = faults or Faults()
        self.max_lines_per_file = max_lines_per_file
        self.index = Index.build(data_dir)
        self.issuer = TokenIssuer(data_dir)
        self.jobs: dict[str, Job] = {}
        self.pages: dict[str, tuple[str, list[int], int]] = {}
        self.kickoffs = 0
        self.search_calls = 0
        self.deleted_jobs: set[str] = set()
        # the fault switch exists only on a server started for it (`ehr serve --admin`)
        self.admin_token = _write_admin_token(data_dir) if admin else None
        self._apply_faults()

    def _apply_faults(self) -> None:
        self.issuer.max_uses = 3 if self.faults.expire_tokens else None

    def maybe_reload(self) -> None:
        if (self.data_dir / "manifest.json").stat().st_mtime != self.index.mtime:
            self.index = Index.build(self.data_dir)

    # --- helpers --------------------------------------------------------------------------------
    def authorized(self, request: Request, *types: str) -> dict | Response:
        """The token's grant, or the response refusing the request (no valid token, or a type not granted)."""
        grant = self.issuer.check(request.headers.get("authorization"))
        if grant is None:
            return outcome(
                401,
                "login",
                "missing, invalid or expired bearer token: re-authenticate",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        refused = [t for t in types if not allows(grant, t)]
        if refused:
            return outcome(403, "forbidden", f"the token's scopes do not cover {', '.join(refused)}")
        return grant

    def own_job(self, request: Request) -> tuple[Job | None, Response | None]:
        """The job named in the path if the caller's token belongs to the client that started it; another
        client's job is answered exactly like one that does not exist."""
        grant = self.authorized(request)
        if isinstance(grant, Response):
            return None, grant
        job_id = request.path_params["job"]
        job = self.jobs.get(job_id)
        if job is None or job.client_id != grant["client_id"]:
            gone = job_id in self.deleted_jobs and job is None
            return None, outcome(404, "not-found", "export job was deleted" if gone else "no such export job")
        return job, None

    # --- SMART ----------------------------------------------------------------------------------
    async def smart_configuration(self, request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "token_endpoint": f"{base}/auth/token",
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                "grant_types_supported": ["client_credentials"],
                "scopes_supported": ["system/*.read", "system/*.rs"],
                "capabilities": ["client-confidential-asymmetric"],
            }
        )

    async def token(self, request: Request) -> Response:
        try:
            form = dict(await request.form())
        except Exception:  # noqa: BLE001 - any unparseable body is a bad request
            form = {}
        token_url = str(request.url).split("?")[0]
        try:
            return JSONResponse(self.issuer.exchange(form, token_url))
        except AuthError as e:
            status = 400 if e.error in ("invalid_request", "unsupported_grant_type", "invalid_scope") else 401
            return JSONResponse({"error": e.error, "error_description": e.description}, status_code=status)

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["json"],
                "date": self.index.transaction_time,
                "rest": [
                    {
                        "mode": "server",
                        "resource": [{"type": t, "interaction": [{"code": "search-type"}]} for t in self.index.entries],
                    }
                ],
            },
            media_type=FHIR_JSON,
        )

    # --- Bulk Data ------------------------------------------------------------------------------
    async def export(self, request: Request) -> Response:
        grant = self.authorized(request)
        if isinstance(grant, Response):
            return grant
        self.kickoffs += 1
        if self.faults.unavailable and self.kickoffs % 2 == 1:
            return outcome(503, "transient", "export service busy; retry", headers={"Retry-After": "1"})
        prefer = [p.strip() for p in request.headers.get("prefer", "").split(",")]
        if "respond-async" not in prefer:
            return outcome(400, "invalid", "Prefer: respond-async is required")
        lenient = "handling=lenient" in prefer
        params: list[tuple[str, str]] = list(request.query_params.multi_items())
        if request.method == "POST":
            try:
                body = orjson.loads(await request.body() or b"{}")
                for p in body.get("parameter", []):
                    params.append((p["name"], next(v for k, v in p.items() if k.startswith("value"))))
            except (orjson.JSONDecodeError, StopIteration, KeyError, AttributeError, TypeError):
                return outcome(400, "invalid", "POST body must be a Parameters resource")
        known = {"_type", "_since", "_outputFormat", "_typeFilter", "_elements"}
        unsupported = sorted({k for k, _ in params} - known)
        if unsupported and not lenient:
            return outcome(400, "not-supported", f"parameter(s) not supported: {', '.join(unsupported)}")
        single = {k: v for k, v in params if k not in ("_typeFilter", "_type")}
        group = request.path_params.get("group")
        if group is not None and group != GROUP_ID:
            return outcome(404, "not-found", f"Group/{group} not found")
        fmt = single.get("_outputFormat", "application/fhir+ndjson")
        if fmt not in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
            return outcome(400, "not-supported", f"_outputFormat {fmt} not supported")
        self.maybe_reload()
        index = self.index
        patient_level = group is not None or request.url.path.endswith("/Patient/$export")
        available = [t for t in index.entries if not (patient_level and t == "Practitioner")]
        asked = [t for v in (v for k, v in params if k == "_type") for t in v.split(",") if t]
        types = list(dict.fromkeys(asked)) or [t for t in available if allows(grant, t)]
        unknown = [t for t in types if t not in available]
        if unknown:
            # the reference server's wording: clients must say which type they drop
            return outcome(
                400, "not-supported", f'The requested resource type "{unknown[0]}" is not available on this server'
            )
        refused = [t for t in types if not allows(grant, t)]
        if refused:
            return outcome(403, "forbidden", f"the token's scopes do not cover {', '.join(refused)}")
        filters, problem = _type_filters([v for k, v in params if k == "_typeFilter"], types)
        if problem and not lenient:
            return outcome(400, "not-supported", problem)
        elements, problem = _elements(single.get("_elements"), types)
        if problem and not lenient:
            return outcome(400, "invalid", problem)
        since = None
        if single.get("_since"):
            try:
                since = parse_instant(single["_since"])
            except ValueError as e:
                return outcome(400, "invalid", f"_since must be a FHIR instant with offset: {e}")
        outputs = []
        for t in types:
            codes = filters.get(t)
            chosen = [
                e
                for e in index.entries[t]
                if (since is None or (e.last_updated is not None and e.last_updated > since))
                and (codes is None or (e.code is not None and (e.code in codes or e.code.split("|")[1] in codes)))
            ]
            for k in range(0, len(chosen), self.max_lines_per_file):
                part = chosen[k : k + self.max_lines_per_file]
                outputs.append({"type": t, "name": f"{t}-{k // self.max_lines_per_file + 1}.ndjson", "entries": part})
        deleted = [
            d
            for d in index.deleted
            if since is not None and d["resourceType"] in types and parse_instant(d["deletedAt"]) > since
        ]
        job = Job(
            secrets.token_hex(12),
            str(request.url),
            index.transaction_time,
            time.time() + (3.0 if self.faults.slow else 0.3),
            outputs,
            deleted,
            grant["client_id"],
            elements,
        )
        self.jobs[job.id] = job
        base = str(request.base_url).rstrip("/")
        return Response(status_code=202, headers={"Content-Location": f"{base}/_jobs/{job.id}"})

    async def job_status(self, request: Request) -> Response:
        job, refused = self.own_job(request)
        if refused is not None:
            return refused
        if request.method == "DELETE":
            del self.jobs[job.id]
            self.deleted_jobs.add(job.id)
            return Response(status_code=202)
        job.polls += 1
        if self.faults.unavailable and job.polls == 1:
            return outcome(503, "transient", "status temporarily unavailable; retry", headers={"Retry-After": "1"})
        if self.faults.rate_limit and job.polls <= 3:
            retry = (
                "1" if job.polls % 2 == 1 else format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
            )
            return outcome(429, "throttled", "polling too fast", headers={"Retry-After": retry})
        remaining = job.ready_at - time.time()
        if remaining > 0:
            pct = int(100 * (1 - remaining / (3.0 if self.faults.slow else 0.3)))
            return Response(status_code=202, headers={"X-Progress": f"{max(0, pct)}% complete", "Retry-After": "1"})
        base = str(request.base_url).rstrip("/")
        manifest = {
            "transactionTime": job.transaction_time,
            "request": job.request,
            "requiresAccessToken": True,
            "output": [
                {"type": o["type"], "url": f"{base}/_files/{job.id}/{o['name']}", "count": len(o["entries"])}
                for o in job.outputs
            ],
            "error": [],
        }
        if job.deleted:
            manifest["deleted"] = [
                {"type": "Bundle", "url": f"{base}/_files/{job.id}/deleted.ndjson", "count": len(job.deleted)}
            ]
        return JSONResponse(manifest)

    async def download(self, request: Request) -> Response:
        job, refused = self.own_job(request)
        if refused is not None:
            return refused
        name = request.path_params["name"]
        gzipped = "gzip" in request.headers.get("accept-encoding", "").lower()
        if name == "deleted.ndjson":
            lines = b"".join(
                orjson.dumps(
                    {
                        "resourceType": "Bundle",
                        "type": "transaction",
                        "entry": [{"request": {"method": "DELETE", "url": f"{d['resourceType']}/{d['id']}"}}],
                    }
                )
                + b"\n"
                for d in job.deleted
            )
            return _ndjson_response(iter([lines]), gzipped, len(lines), len(lines))
        out = next((o for o in job.outputs if o["name"] == name), None)
        if out is None:
            return outcome(404, "not-found", f"no file {name} in this export")
        job.downloads[name] = job.downloads.get(name, 0) + 1
        path = self.index.file(out["type"])
        entries = out["entries"]
        keep = None if job.elements is None else job.elements.get(out["type"], job.elements.get("*"))
        total = sum(e.length for e in entries)

        def body():
            with open(path, "rb") as f:
                for start, length in _runs(entries):
                    f.seek(start)
                    if keep is not None:  # _elements: each line rewritten
                        for line in f.read(length).splitlines():
                            yield _subset(line, keep)
                        continue
                    while length > 0:
                        chunk = f.read(min(length, 1 << 20))
                        if not chunk:
                            return
                        length -= len(chunk)
                        yield chunk

        if keep is not None:
            chunks = list(body())
            total = sum(len(c) for c in chunks)
            source = iter(chunks)
        else:
            source = body()
        # the truncate fault: the first download of a file ends halfway
        limit = total // 2 if self.faults.truncate and job.downloads[name] == 1 else total
        return _ndjson_response(source, gzipped, total, limit)

    # --- search ---------------------------------------------------------------------------------
    async def group(self, request: Request) -> Response:
        if isinstance(resp := self.authorized(request, "Group"), Response):
            return resp
        if request.path_params["group"] != GROUP_ID:
            return outcome(404, "not-found", f"Group/{request.path_params['group']} not found")
        self.maybe_reload()
        return JSONResponse(
            {
                "resourceType": "Group",
                "id": GROUP_ID,
                "type": "person",
                "actual": True,
                "name": "Ketamine clinic patients",
                "quantity": len(self.index.patients),
                "member": [{"entity": {"reference": f"Patient/{p}"}} for p in self.index.patients],
            },
            media_type=FHIR_JSON,
        )

    async def search(self, request: Request) -> Response:
        rtype = request.path_params["rtype"]
        if isinstance(resp := self.authorized(request, rtype), Response):
            return resp
        q = request.query_params
        self.search_calls += 1
        if self.faults.rate_limit and self.search_calls % 5 == 1:
            return outcome(429, "throttled", "too many requests", headers={"Retry-After": "1"})
        if self.faults.unavailable and self.search_calls % 7 == 3:
            return outcome(503, "transient", "search temporarily unavailable")
        try:
            count = min(1000, max(1, int(q.get("_count", "50"))))
        except ValueError:
            return outcome(400, "invalid", "_count must be an integer")
        if "_getpages" in q:
            page = self.pages.get(q["_getpages"])
            if page is None or page[0] != rtype:
                return outcome(410, "expired", "paging token unknown or expired; restart the search")
            _, ids, _ = page
            try:
                start = int(q.get("_getpagesoffset", "0"))
            except ValueError:
                return outcome(400, "invalid", "_getpagesoffset must be an integer")
            token = q["_getpages"]
        else:
            self.maybe_reload()
            if rtype not in self.index.entries:
                return outcome(404, "not-supported", f"resource type {rtype} not available")
            # as in FHIR R4: a Patient is searched by _id, other resources by their patient (or subject)
            scope = {"_id"} if rtype == "Patient" else {"patient", "subject"}
            allowed = scope | {"code", "_lastUpdated", "_count"}
            bad = [k for k in q if k not in allowed]
            if bad:
                return outcome(400, "not-supported", f"search parameter(s) not supported on {rtype}: {', '.join(bad)}")
            pat = next((q[k] for k in sorted(scope) if q.get(k)), None)
            if not pat:
                return outcome(400, "invalid", f"patient-scoped search: {' or '.join(sorted(scope))} is required")
            pat = pat.split("/")[-1]
            entries = self.index.entries[rtype]
            idx = self.index.by_patient.get(pat, {}).get(rtype, [])
            filters = []
            for spec in q.getlist("_lastUpdated"):
                m = re.fullmatch(r"(gt|ge|lt|le|eq)?(.+)", spec)
                try:
                    filters.append((m.group(1) or "eq", parse_instant(m.group(2))))
                except ValueError as e:
                    return outcome(400, "invalid", f"_lastUpdated: {e}")
            codes = set(q.get("code", "").split(",")) - {""}

            def keep(e: Entry) -> bool:
                if e.last_updated is None:
                    return False  # unparseable lines cannot be put in a Bundle
                for op, v in filters:
                    lu = e.last_updated
                    if not {"gt": lu > v, "ge": lu >= v, "lt": lu < v, "le": lu <= v, "eq": lu == v}[op]:
                        return False
                return not codes or (e.code is not None and (e.code in codes or e.code.split("|")[1] in codes))

            ids = sorted((i for i in idx if keep(entries[i])), key=lambda i: (entries[i].last_updated, i))
            token = secrets.token_urlsafe(12)
            self.pages[token] = (rtype, ids, 0)
            start = 0
        entries = self.index.entries[rtype]
        chunk = ids[start : start + count]
        resources = []
        with open(self.index.file(rtype), "rb") as f:
            for i in chunk:
                f.seek(entries[i].offset)
                resources.append(orjson.loads(f.read(entries[i].length)))
        base = str(request.base_url).rstrip("/")
        links = [{"relation": "self", "url": str(request.url)}]
        if start + count < len(ids):
            links.append(
                {
                    "relation": "next",
                    "url": f"{base}/{rtype}?_getpages={token}&_getpagesoffset={start + count}&_count={count}",
                }
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(ids),
            "link": links,
            "entry": [
                {"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
            ],
        }
        return Response(orjson.dumps(bundle), media_type=FHIR_JSON)

    # --- admin ----------------------------------------------------------------------------------
    async def admin_faults(self, request: Request) -> Response:
        # only who can read the clinic folder (the admin token file is 0600) may switch faults
        if not secrets.compare_digest(request.headers.get("x-admin-token", ""), self.admin_token):
            return outcome(403, "forbidden", f"X-Admin-Token required (the token is in {ADMIN_TOKEN_FILE})")
        if request.method == "POST":
            try:
                body = orjson.loads(await request.body() or b"{}")
                self.faults = Faults(**{k: bool(v) for k, v in body.items()})
            except (orjson.JSONDecodeError, TypeError) as e:
                return outcome(400, "invalid", f"faults must be a JSON object of booleans: {e}")
            self._apply_faults()
        return JSONResponse(asdict(self.faults))


ADMIN_TOKEN_FILE = "_ehr/admin_token"


def _write_admin_token(data_dir: Path) -> str:
    """A fresh token for /_admin/faults, in a file only the folder's owner can read."""
    token = secrets.token_urlsafe(24)
    path = data_dir / ADMIN_TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def _ndjson_response(chunks, gzipped: bool, total: int, limit: int) -> Response:
    """NDJSON bytes as a stream, gzip-encoded when the client accepts it; `limit` < `total` cuts it short
    (identity: the connection ends before Content-Length; gzip: the stream ends without its trailer)."""

    async def body():
        sent = 0
        compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzipped else None
        for chunk in chunks:
            cut = sent + len(chunk) > limit
            piece = chunk[: limit - sent] if cut else chunk
            sent += len(piece)
            yield compressor.compress(piece) if compressor else piece
            if cut:
                return
            await asyncio.sleep(0)
        if compressor:
            yield compressor.flush()

    if gzipped:
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    else:
        headers = {"Content-Length": str(total)}
    return StreamingResponse(body(), media_type="application/fhir+ndjson", headers=headers)


def _type_filters(values: list[str], types: list[str]) -> tuple[dict[str, set[str]], str | None]:
    """`_typeFilter` queries as the codes kept per type (only `Observation?code=...` is supported; filters
    on one type are OR-ed); the problem with the first unsupported one, if any."""
    codes: dict[str, set[str]] = {}
    for value in values:
        rtype, _, query = value.partition("?")
        m = re.fullmatch(r"code=([^&]+)", query)
        if rtype != "Observation" or m is None:
            return {}, f"_typeFilter {value!r} not supported (only Observation?code=...)"
        if rtype in types:
            codes.setdefault(rtype, set()).update(c for c in m.group(1).split(",") if c)
    return codes, None


MANDATORY_ELEMENTS = {"resourceType", "id", "meta"}


def _elements(value: str | None, types: list[str]) -> tuple[dict[str, set[str]] | None, str | None]:
    """`_elements` (`status,code` or `Observation.status`) as the top-level elements kept per type."""
    if not value:
        return None, None
    kept: dict[str, set[str]] = {}
    for item in (v.strip() for v in value.split(",")):
        rtype, dot, element = item.rpartition(".")
        if not re.fullmatch(r"[a-z][A-Za-z0-9]*", element) or (dot and rtype not in types):
            return None, f"_elements entry {item!r} is not an element of the exported types"
        kept.setdefault(rtype if dot else "*", set(MANDATORY_ELEMENTS)).add(element)
    if "*" in kept:
        for t in kept:
            kept[t] |= kept["*"]
    return kept, None


def _subset(line: bytes, keep: set[str]) -> bytes:
    res = orjson.loads(line)
    out = {k: v for k, v in res.items() if k in keep}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), {"system": SUBSETTED[0], "code": SUBSETTED[1]}]
    out["meta"] = meta
    return orjson.dumps(out) + b"\n"


SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")


def _runs(entries: list[Entry]):
    """Coalesce entries into contiguous (offset, length) byte ranges."""
    start = length = None
    for e in entries:
        if start is not None and start + length == e.offset:
            length += e.length
            continue
        if start is not None:
            yield start, length
        start, length = e.offset, e.length
    if start is not None:
        yield start, length


class ClinicClockDate:
    """Every response's Date header tells the clinic's clock (the served snapshot's as-of instant), like an
    EHR whose clock its data agree with; uvicorn's own Date header (this machine's clock) is switched off."""

    def __init__(self, app, ehr: EHR) -> None:
        self.app = app
        self.ehr = ehr

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_dated(message) -> None:
            if message["type"] == "http.response.start":  # after the handler, which may have reloaded the data
                clinic_now = format_datetime(parse_instant(self.ehr.index.transaction_time), usegmt=True).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", clinic_now)]}
            await send(message)

        await self.app(scope, receive, send_dated)


MAX_BODY_BYTES = 64 * 2**10  # a token request or an export's Parameters body is a few KB


class BodyLimit:
    """413 for a request body over MAX_BODY_BYTES, before any handler reads it: by Content-Length when sent,
    else while it streams in (it is held, at most the limit, and handed on whole)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        await outcome(413, "too-costly", f"request body over {self.max_bytes} bytes")(scope, receive, send)


def create_app(
    data_dir: Path, faults: Faults | None = None, max_lines_per_file: int = 100_000, admin: bool = False
) -> Starlette:
    ehr = EHR(data_dir, faults, max_lines_per_file, admin)

    async def not_found(request: Request, exc: Exception) -> Response:
        return outcome(404, "not-found", f"no route for {request.method} {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return outcome(500, "exception", f"internal error: {type(exc).__name__}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return outcome(405, "not-supported", f"{request.method} not allowed on {request.url.path}")

    routes = [
        Route("/.well-known/smart-configuration", ehr.smart_configuration),
        Route("/auth/token", ehr.token, methods=["POST"]),
        Route("/metadata", ehr.metadata),
        Route("/$export", ehr.export, methods=["GET", "POST"]),
        Route("/Patient/$export", ehr.export, methods=["GET", "POST"]),
        Route("/Group/{group}/$export", ehr.export, methods=["GET", "POST"]),
        Route("/Group/{group}", ehr.group),
        Route("/_jobs/{job}", ehr.job_status, methods=["GET", "DELETE"]),
        Route("/_files/{job}/{name}", ehr.download),
        *([Route("/_admin/faults", ehr.admin_faults, methods=["GET", "POST"])] if admin else []),
        Route("/{rtype}", ehr.search),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ClinicClockDate, ehr=ehr), Middleware(BodyLimit)],
        exception_handlers={
            404: not_found,
            405: method_not_allowed,
            500: server_error,
            Exception: server_error,
        },
    )
    app.state.ehr = ehr
    return app


def serve(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    faults: Faults | None = None,
    max_lines_per_file: int = 100_000,
    admin: bool = False,
) -> None:
    import uvicorn

    app = create_app(data_dir, faults, max_lines_per_file, admin)
    print(
        f"EHR serving {data_dir} at http://{host}:{port} (faults: "
        f"{', '.join(k for k, v in asdict(app.state.ehr.faults).items() if v) or 'none'})",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, date_header=False)
