"""The client's signing key for SMART Backend Services, and the public JWKS a clinic registers with its EHR.

EHRs (Epic, Oracle Health, the SMART reference server and others) register a backend app by its public
JWKS and choose the key that verifies an assertion by the `kid` in its header, so every key carries one:
by default the RFC 7638 thumbprint of the public key, which any party can recompute from the JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

ALGORITHMS = ("RS384", "ES384")
# RFC 7638 §3.2: the members of the thumbprint, per key type
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url, unpadded) of a public JWK."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None:
        raise ValueError(f"cannot compute a thumbprint of a {jwk.get('kty')!r} key (RSA or EC only)")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_private_key(pem: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"the client private key is not a readable unencrypted PEM key ({e})") from None


def algorithm_of(key) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return "ES384"
    raise ValueError("the client key must be RSA (RS384) or EC P-384 (ES384)")


def public_jwk(private_pem: bytes, kid: str | None = None) -> dict:
    """The public half of the key as a JWK with `kid` (default: its thumbprint), `alg` and `use`."""
    import jwt

    key = load_private_key(private_pem)
    alg = algorithm_of(key)
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS384" else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk = {k: v for k, v in jwk.items() if k in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    return {**jwk, "alg": alg, "use": "sig", "kid": kid or jwk_thumbprint(jwk), "key_ops": ["verify"]}


def jwks(private_pem: bytes, kid: str | None = None) -> dict:
    return {"keys": [public_jwk(private_pem, kid)]}


def new_private_key(alg: str = "RS384") -> bytes:
    """A fresh private key (PKCS#8 PEM) for `alg`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        raise ValueError(f"unsupported algorithm {alg!r}: use RS384 or ES384")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private_key(path: Path, pem: bytes, overwrite: bool = False) -> None:
    """Write the key readable by its owner only (mode 0600); an existing key is kept unless `overwrite`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
