"""SMART Backend Services for the stand-in EHR: client registration and assertion checks (PyJWT)."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CLIENTS_FILE = "_ehr/clients.json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME_S = 300
LEEWAY_S = 10


def new_key_pair(alg: str) -> tuple[bytes, dict]:
    """A private key (PEM) and its public JWK for `alg` (RS384 or ES384)."""
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    elif alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        raise ValueError(f"unsupported algorithm {alg!r}: use RS384 or ES384")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    jwk.update(alg=alg, kid=secrets.token_hex(8), use="sig")
    return pem, jwk


def register_client(data_dir: Path, key_out: Path, alg: str = "RS384", client_id: str | None = None) -> str:
    """Create a key pair, write the private key to `key_out` (mode 0600) and register the public key."""
    pem, jwk = new_key_pair(alg)
    client_id = client_id or f"outcomes-{secrets.token_hex(4)}"
    key_out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    clients = load_clients(data_dir)
    clients.setdefault(client_id, {"jwks": {"keys": []}})["jwks"]["keys"].append(jwk)
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
        keys = [
            k
            for k in client["jwks"]["keys"]
            if k.get("alg") == alg and (header.get("kid") is None or k.get("kid") == header.get("kid"))
        ]
        if not keys:
            raise AuthError("invalid_client", "no registered key matches the assertion's alg/kid")
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
        now = time.time()
        if claims["sub"] != client_id:
            raise AuthError("invalid_client", "sub must equal iss (the client_id)")
        if claims["exp"] - now > MAX_ASSERTION_LIFETIME_S + LEEWAY_S:
            raise AuthError("invalid_client", "assertion exp must be no more than 5 minutes ahead")
        self.seen_jti = {j: e for j, e in self.seen_jti.items() if e > now - LEEWAY_S}
        if claims["jti"] in self.seen_jti:
            raise AuthError("invalid_client", "jti already used (replay)")
        self.seen_jti[claims["jti"]] = claims["exp"]
        token = secrets.token_urlsafe(32)
        self.tokens[token] = {"client_id": client_id, "exp": now + self.token_lifetime_s, "uses": 0}
        scope = form.get("scope") or "system/*.read"
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime_s,
            "scope": scope,
        }

    def check(self, authorization: str | None) -> str | None:
        """Client id for a valid bearer token, else None. Counts uses for the expiring-token fault."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        info = self.tokens.get(authorization[7:].strip())
        if info is None or info["exp"] < time.time():
            return None
        info["uses"] += 1
        if self.max_uses is not None and info["uses"] > self.max_uses:
            return None
        return info["client_id"]
