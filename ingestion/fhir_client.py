"""An HTTP client for a FHIR server: SMART Backend Services auth and retries that honour Retry-After."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import jwt

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ExtractError(RuntimeError):
    """The EHR refused or failed in a way retrying will not fix; the message says what to do."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP-date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def outcome_text(resp: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome body, else the start of the body."""
    try:
        body = resp.json()
        issues = body.get("issue", []) if isinstance(body, dict) else []
        text = "; ".join(i.get("diagnostics") or i.get("code", "") for i in issues)
        if not text and isinstance(body, dict) and "error" in body:
            text = f"{body['error']}: {body.get('error_description', '')}"
        return text or resp.text[:200]
    except ValueError:
        return resp.text[:200]


def is_transient(resp: httpx.Response) -> bool:
    if resp.status_code in RETRYABLE_STATUS:
        return True
    try:
        body = resp.json()
        return any(i.get("code") in ("transient", "throttled") for i in body.get("issue", []))
    except (ValueError, AttributeError):
        return False


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter; Retry-After wins when the server sends it."""

    base: float = 0.5
    cap: float = 30.0
    max_wait: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        return self.rng.uniform(0, min(self.cap, self.base * 2**attempt))


class SmartAuth:
    """SMART Backend Services: a signed JWT assertion (RS384/ES384) exchanged for a bearer token."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        private_key_pem: bytes,
        http: httpx.Client,
        scope: str = "system/*.read",
        key_id: str | None = None,
    ) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        try:
            self._key = load_pem_private_key(private_key_pem, password=None)
        except ValueError as e:
            raise ExtractError(
                f"the client private key is not a readable PEM key ({e}); check "
                "OUTCOMES_PRIVATE_KEY_PATH / OUTCOMES_PRIVATE_KEY"
            ) from None
        if isinstance(self._key, rsa.RSAPrivateKey):
            self.alg = "RS384"
        elif isinstance(self._key, ec.EllipticCurvePrivateKey):
            self.alg = "ES384"
        else:
            raise ExtractError("the client key must be RSA (RS384) or EC P-384 (ES384)")
        self.http = http
        self.scope = scope
        self.key_id = key_id
        self._token: str | None = None
        self._expires_at = 0.0
        self._token_url: str | None = None
        self.tokens_issued = 0

    def token_url(self) -> str:
        if self._token_url is None:
            r = self.http.get(f"{self.base_url}/.well-known/smart-configuration")
            if r.status_code != 200:
                raise ExtractError(
                    f"SMART discovery failed ({r.status_code}) at {self.base_url}: is the EHR URL right?"
                )
            self._token_url = r.json()["token_endpoint"]
        return self._token_url

    def invalidate(self) -> None:
        self._token = None

    def token(self) -> str:
        if self._token and time.time() < self._expires_at - 30:
            return self._token
        url = self.token_url()
        now = int(time.time())
        headers = {"kid": self.key_id} if self.key_id else None
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": url,
            "iat": now,
            "exp": now + 240,
            "jti": str(uuid.uuid4()),
        }
        assertion = jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)
        r = self.http.post(
            url,
            data={
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )
        if r.status_code != 200:
            raise ExtractError(
                f"token request rejected ({r.status_code}: {outcome_text(r)}); check the client "
                "id and that its public key is registered with the EHR"
            )
        body = r.json()
        self._token = body["access_token"]
        self._expires_at = time.time() + float(body.get("expires_in", 300))
        self.tokens_issued += 1
        return self._token


class FhirClient:
    """Requests with auth, re-authentication on 401, and retries of 408/429/5xx and transport errors."""

    def __init__(
        self,
        base_url: str,
        auth: SmartAuth | None = None,
        http: httpx.Client | None = None,
        max_attempts: int = 8,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = print,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        self.auth = auth
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.log = log
        self.retries = 0
        self.reauths = 0

    def _headers(self, extra: dict | None) -> dict:
        h = {"Accept": "application/fhir+json"}
        if self.auth is not None:
            h["Authorization"] = f"Bearer {self.auth.token()}"
        return {**h, **(extra or {})}

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else f"{self.base_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict | None = None,
        headers: dict | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        url = self.url(path_or_url)
        last = "no response"
        for attempt in range(self.max_attempts):
            try:
                resp = self.http.request(method, url, params=params, headers=self._headers(headers))
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                self._wait(attempt, None, f"{method} {url}: {last}")
                continue
            if resp.status_code in ok:
                return resp
            if resp.status_code == 401 and self.auth is not None:
                self.reauths += 1
                self.auth.invalidate()
                last = "401 unauthorized"
                continue
            if is_transient(resp):
                last = f"{resp.status_code} {outcome_text(resp)}"
                self._wait(attempt, retry_after_seconds(resp.headers.get("Retry-After")), f"{method} {url}: {last}")
                continue
            raise ExtractError(f"{method} {url} failed: {resp.status_code} {outcome_text(resp)}")
        raise ExtractError(
            f"{method} {url} still failing after {self.max_attempts} attempts ({last}); the EHR "
            "may be down: rerun later (the export resumes where it stopped)"
        )

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        self.retries += 1
        delay = self.backoff.delay(attempt, retry_after)
        self.log(f"  retrying in {delay:.1f}s ({why})")
        self.sleep(delay)

    @contextmanager
    def stream(self, url: str) -> Iterator[httpx.Response]:
        """GET a download as a stream (auth header included; retries are the caller's, per file)."""
        with self.http.stream("GET", self.url(url), headers=self._headers({"Accept": "application/fhir+ndjson"})) as r:
            yield r
