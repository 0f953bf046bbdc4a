"""The lab's PKI, made per lab as kubeadm makes a cluster's: a CA, the API server's serving
certificate, client certificates (user = CN, groups = O) and the ServiceAccount signing key.

Everything is written under ``<lab>/pki`` with mode 0600 (the directory 0700): only root,
who started the lab, can read a key. Keys are ECDSA P-256 (fast to make, accepted by Go's
TLS and by kubectl), the ServiceAccount key RSA 2048 (RS256, what Kubernetes' tokens use).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local", "localhost")


@dataclass(frozen=True)
class Pair:
    cert: str  # path of the PEM certificate
    key: str   # path of the PEM private key


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


class LabPKI:
    def __init__(self, lab_dir: str) -> None:
        self.dir = os.path.join(lab_dir, "pki")
        self.ca = Pair(os.path.join(self.dir, "ca.crt"), os.path.join(self.dir, "ca.key"))
        self.sa_key = os.path.join(self.dir, "sa.key")
        self.sa_pub = os.path.join(self.dir, "sa.pub")

    def init(self, serving_ips: list[str]) -> Pair:
        """The CA, the ServiceAccount key pair and the API server's certificate; returns the latter."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trellis-lab-ca")])
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        _write(self.ca.key, _key_pem(key))
        _write(self.ca.cert, cert.public_bytes(serialization.Encoding.PEM))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(self.sa_key, _key_pem(sa))
        _write(self.sa_pub, sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        sans = [x509.DNSName(n) for n in SERVICE_NAMES] + [x509.IPAddress(ipaddress.ip_address(ip))
                                                           for ip in dict.fromkeys(serving_ips)]
        return self._issue("apiserver", "kube-apiserver", (), sans, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, file_name: str, user: str, groups: tuple[str, ...] = ()) -> Pair:
        """A client certificate for ``user`` in ``groups`` (kube-apiserver reads CN and O)."""
        return self._issue(file_name, user, groups, [], ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(self, file_name: str, cn: str, orgs: tuple[str, ...], sans: list, usage) -> Pair:
        with open(self.ca.key, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        with open(self.ca.cert, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                            + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (_builder(subject, ca.subject, key.public_key())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        pair = Pair(os.path.join(self.dir, f"{file_name}.crt"), os.path.join(self.dir, f"{file_name}.key"))
        _write(pair.key, _key_pem(key))
        _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
        return pair


def kubeconfig(path: str, name: str, server: str, ca_cert: str, client: Pair, namespace: str = "default") -> str:
    """A kubeconfig (mode 0600) with the CA and the client certificate embedded, as kubeadm's."""
    import base64

    import yaml

    def b64(p: str) -> str:
        with open(p, "rb") as f:
            return base64.b64encode(f.read()).decode()
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": name,
           "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)}}],
           "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
           "users": [{"name": name, "user": {"client-certificate-data": b64(client.cert),
                                             "client-key-data": b64(client.key)}}]}
    _write(path, yaml.safe_dump(doc, sort_keys=False).encode())
    return path
