"""TLS material for the ingress: Secrets checked into PEM bundles, and the default certificate.

``bundle_from_secret`` is pure (parsing, no I/O): a ``kubernetes.io/tls`` Secret becomes the
PEM haproxy loads (certificate chain, then key), or a ``BadSecret`` naming what is wrong,
so a malformed Secret never reaches haproxy (haproxy refuses a whole config over one bad
certificate). ``self_signed`` makes the certificate served to hosts without one.
"""
from __future__ import annotations

import base64
import binascii
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

TLS_TYPE = "kubernetes.io/tls"


class BadSecret(ValueError):
    pass


def _field(secret: dict, key: str) -> bytes:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        if (secret.get("stringData") or {}).get(key):
            return secret["stringData"][key].encode()
        raise BadSecret(f"data[{key!r}] is missing")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret(f"data[{key!r}] is not base64") from None


def bundle_from_secret(secret: dict) -> bytes:
    """The PEM bundle of a TLS Secret: certificates (leaf first) then the private key."""
    typ = secret.get("type") or "Opaque"
    if typ != TLS_TYPE:
        raise BadSecret(f"type is {typ!r}, want {TLS_TYPE!r}")
    crt, key = _field(secret, "tls.crt"), _field(secret, "tls.key")
    try:
        certs = x509.load_pem_x509_certificates(crt)
    except ValueError as e:
        raise BadSecret(f"data['tls.crt'] is not a PEM certificate ({e})") from None
    try:
        pkey = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise BadSecret(f"data['tls.key'] is not an unencrypted PEM private key ({e})") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (certs[0].public_key().public_bytes(serialization.Encoding.PEM, pub)
            != pkey.public_key().public_bytes(serialization.Encoding.PEM, pub)):
        raise BadSecret("data['tls.key'] does not belong to the certificate in data['tls.crt']")
    out = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return out + pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())


def self_signed(common_name: str = "trellis-ingress-default", days: int = 3650) -> bytes:
    """A self-signed certificate and its key as one PEM bundle (the default certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
