"""SMART Backend Services for the stand-in EHR: client registration and assertion checks (PyJWT)."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt

CLIENTS_FILE = "_ehr/clients.json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME_S = 300
LEEWAY_S = 10


def register_jwks(data_dir: Path, jwks: dict, client_id: str | None = None) -> str:
    """Register a backend client by its public JWKS (as EHRs do); its keys are added to the client's."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError('a JWKS is a JSON object {"keys": [...]} with at least one key')
    for k in keys:
        if not isinstance(k, dict) or not k.get("kid"):
            raise ValueError("every key of the JWKS needs a kid: servers choose the key by it")
        if k.get("alg") not in ALGORITHMS:
            raise ValueError(f"key {k.get('kid')}: alg must be RS384 or ES384, got {k.get('alg')!r}")
        if any(private in k for private in ("d", "p", "q", "dp", "dq", "qi")):
            raise ValueError(f"key {k['kid']} holds private key material: register the public JWKS only")
        jwt.PyJWK.from_dict(k)  # raises on a malformed key
    client_id = client_id or f"outcomes-{secrets.token_hex(4)}"
    clients = load_clients(data_dir)
    stored = clients.setdefault(client_id, {"jwks": {"keys": []}})["jwks"]["keys"]
    stored[:] = [k for k in stored if k["kid"] not in {n["kid"] for n in keys}] + keys
    path = data_dir / CLIENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clients, indent=2) + "\n")
    return client_id


def load_clients(data_dir: Path) -> dict:
    path = data_dir / CLIENTS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class AuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass
class TokenIssuer:
    data_dir: Path
    token_lifetime_s: int = 300
    max_uses: int | None = None  # fault injection: a token that stops working mid-export
    tokens: dict[str, dict] = field(default_factory=dict)
    seen_jti: dict[str, float] = field(default_factory=dict)

    def exchange(self, form: dict, token_url: str) -> dict:
        if form.get("grant_type") != "client_credentials":
            raise AuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise AuthError("invalid_client", f"client_assertion is not a JWT: {e}") from e
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError("invalid_client", f"alg {alg!r} not accepted; use RS384 or ES384")
        client_id = unverified.get("iss")
        client = load_clients(self.data_dir).get(client_id or "")
        if client is None:
            raise AuthError("invalid_client", f"unknown client {client_id!r}")
        kid = header.get("kid")
        if not kid:
            raise AuthError("invalid_client", "the assertion's JWT header has no kid: it names the registered key")
        keys = [k for k in client["jwks"]["keys"] if k.get("kid") == kid]
        if not keys:
            raise AuthError("invalid_client", f"no key with kid {kid!r} is registered for client {client_id!r}")
        keys = [k for k in keys if k.get("alg") == alg]
        if not keys:
            raise AuthError("invalid_client", f"key {kid!r} is registered for another alg than {alg}")
        claims = None
        last_error: Exception | None = None
        for k in keys:
            try:
                key = jwt.PyJWK.from_dict(k).key
                claims = jwt.decode(
                    assertion,
                    key,
                    algorithms=[alg],
                    audience=token_url,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "sub", "aud", "jti"]},
                )
                break
            except jwt.InvalidSignatureError as e:
                last_error = e
            except jwt.PyJWTError as e:
                raise AuthError("invalid_client", f"assertion rejected: {e}") from e
        if claims is None:
            raise AuthError("invalid_client", f"assertion rejected: {last_error}")
        malformed = [
            name
            for name, kind in (("exp", (int, float)), ("sub", str), ("jti", str), ("iss", str))
            if not isinstance(claims.get(name), kind) or isinstance(claims.get(name), bool)
        ]
        if malformed:
            raise AuthError("invalid_client", f"assertion claim(s) of the wrong type: {', '.join(malformed)}")
        now = time.time()
        if claims["sub"] != client_id:
            raise AuthError("invalid_client", "sub must equal iss (the client_id)")
        if claims["exp"] - now > MAX_ASSERTION_LIFETIME_S + LEEWAY_S:
            raise AuthError("invalid_client", "assertion exp must be no more than 5 minutes ahead")
        self.seen_jti = {j: e for j, e in self.seen_jti.items() if e > now - LEEWAY_S}
        if claims["jti"] in self.seen_jti:
            raise AuthError("invalid_client", "jti already used (replay)")
        self.seen_jti[claims["jti"]] = claims["exp"]
        granted = granted_scopes(form.get("scope") or "")
        if not granted:
            raise AuthError(
                "invalid_scope",
                f"none of the scopes asked for ({form.get('scope') or 'none'}) can be granted: this server grants "
                "system-level read scopes (system/Observation.read, system/*.rs, ...)",
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = {
            "client_id": client_id,
            "exp": now + self.token_lifetime_s,
            "uses": 0,
            "types": {t for t, _ in granted},
        }
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime_s,
            "scope": " ".join(text for _, text in granted),
        }

    def check(self, authorization: str | None) -> dict | None:
        """The grant (client_id, types) of a valid bearer token, else None. Counts uses for the
        expiring-token fault."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        info = self.tokens.get(authorization[7:].strip())
        if info is None or info["exp"] < time.time():
            return None
        info["uses"] += 1
        if self.max_uses is not None and info["uses"] > self.max_uses:
            return None
        return info


SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]{1,63})\.(read|[cruds]+)")


def granted_scopes(requested: str) -> list[tuple[str, str]]:
    """The read scopes among those asked for, as (type or *, scope text): SMART v1 `.read`, v2 `.r`, `.s`
    or `.rs`. Write scopes, patient/user scopes and anything unknown are not granted."""
    granted = []
    for text in requested.split():
        m = SCOPE.fullmatch(text)
        if m and (m.group(2) == "read" or set(m.group(2)) <= {"r", "s"}):
            granted.append((m.group(1), text))
    return granted


def allows(grant: dict, resource_type: str) -> bool:
    return "*" in grant["types"] or resource_type in grant["types"]
