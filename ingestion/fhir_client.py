"""An HTTP client for a FHIR server: SMART Backend Services auth and retries that honour Retry-After."""

from __future__ import annotations

import random
import re
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

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    u = httpx.URL(url)
    return u.scheme, u.host, u.port or {"http": 80, "https": 443}.get(u.scheme)


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


def server_date(resp: httpx.Response) -> datetime | None:
    """The server's clock from the response's Date header (None when absent or unreadable)."""
    try:
        when = parsedate_to_datetime(resp.headers.get("Date", ""))
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def outcome_text(resp: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome body, else the start of the body as one line of text."""
    try:
        body = resp.json()
        issues = body.get("issue", []) if isinstance(body, dict) else []
        text = "; ".join(i.get("diagnostics") or i.get("code", "") for i in issues if isinstance(i, dict))
        if not text and isinstance(body, dict) and "error" in body:
            text = f"{body['error']}: {body.get('error_description', '')}"
        return text or _one_line(resp.text)
    except ValueError:
        return _one_line(resp.text)


def _one_line(text: str) -> str:
    """An error page's text without its markup, on one line (an HTML 404 page would otherwise fill the log)."""
    return " ".join(re.sub(r"<[^>]*>", " ", text).split())[:200]


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


def default_scope(smart_configuration: dict) -> str:
    """SMART v2 read scopes (`.rs`) where the server says it implements them, else v1 (`.read`)."""
    capabilities = smart_configuration.get("capabilities") or []
    if "permission-v2" in capabilities and "permission-v1" not in capabilities:
        return "system/*.rs"
    return "system/*.read"


class SmartAuth:
    """SMART Backend Services: a signed JWT assertion (RS384/ES384) exchanged for a bearer token."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        private_key_pem: bytes,
        http: httpx.Client,
        scope: str | None = None,
        key_id: str | None = None,
    ) -> None:
        from ingestion.client_keys import algorithm_of, load_private_key, public_jwk

        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        try:
            self._key = load_private_key(private_key_pem)
            self.alg = algorithm_of(self._key)
        except ValueError as e:
            raise ExtractError(f"{e}; check OUTCOMES_PRIVATE_KEY_PATH / OUTCOMES_PRIVATE_KEY") from None
        # servers pick the registered key by `kid`: the JWKS `outcomes keys jwks` prints carries the same one
        key_id = key_id or public_jwk(private_key_pem)["kid"]
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
            try:
                config = r.json()
                self._token_url = config["token_endpoint"]
            except (ValueError, KeyError, TypeError):
                raise ExtractError(
                    f"{self.base_url}/.well-known/smart-configuration names no token_endpoint: is the EHR URL "
                    "the FHIR base URL, and does the EHR offer SMART Backend Services?"
                ) from None
            if self.scope is None:
                self.scope = default_scope(config)
        return self._token_url

    def invalidate(self) -> None:
        self._token = None

    def token(self) -> str:
        if self._token and time.time() < self._expires_at - 30:
            return self._token
        url = self.token_url()
        now = int(time.time())
        headers = {"kid": self.key_id, "typ": "JWT"}
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
                f"token request rejected ({r.status_code}: {outcome_text(r)}); check the client id, that the "
                f"JWKS from `outcomes keys jwks` (kid {self.key_id}) is registered with the EHR for it, and that "
                f"the scopes asked for ({self.scope}) are granted to the app",
                r.status_code,
                outcome_text(r),
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

    def _headers(self, extra: dict | None, token: bool = True) -> dict:
        h = {"Accept": "application/fhir+json"}
        if token and self.auth is not None:
            h["Authorization"] = f"Bearer {self.auth.token()}"
        return {**h, **(extra or {})}

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else f"{self.base_url}/{path_or_url.lstrip('/')}"

    def is_own_origin(self, url: str) -> bool:
        return origin(url) == origin(self.base_url)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict | list | None = None,
        headers: dict | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        url = self.url(path_or_url)
        if not self.is_own_origin(url):
            # a status URL or `next` link elsewhere would receive the bearer token: never follow it
            raise ExtractError(
                f"the EHR sent a URL on another origin ({url}); the token is only sent to {self.base_url}'s "
                "origin. If the EHR really serves from there, set OUTCOMES_EHR_URL to that base URL"
            )
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
            detail = outcome_text(resp)
            raise ExtractError(f"{method} {url} failed: {resp.status_code} {detail}", resp.status_code, detail)
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
    def stream(self, url: str, with_token: bool = True, max_redirects: int = 5) -> Iterator[httpx.Response]:
        """GET a download as a stream, body undecoded (retries are the caller's, per file).

        The token goes only to the EHR's own origin, and only when the manifest requires it; redirects are
        followed here so that none carries it elsewhere (storage on another host gets no Authorization)."""
        url = self.url(url)
        if with_token and not self.is_own_origin(url):
            raise ExtractError(
                f"the manifest lists {url}, on another origin than {self.base_url}, and says it requires the "
                "access token; the token is never sent outside the EHR's origin: ask the EHR's administrators"
            )
        # no br/zstd: the body is decoded here, as it streams
        extra = {"Accept": "application/fhir+ndjson", "Accept-Encoding": "gzip, deflate"}
        for _ in range(max_redirects + 1):
            token = with_token and self.is_own_origin(url)
            request = self.http.build_request("GET", url, headers=self._headers(extra, token=token))
            resp = self.http.send(request, stream=True)
            location = resp.headers.get("Location")
            if resp.is_redirect and location:
                resp.close()
                url = str(resp.url.join(location))
                continue
            try:
                yield resp
            finally:
                resp.close()
            return
        raise ExtractError(f"download {url}: more than {max_redirects} redirects")
