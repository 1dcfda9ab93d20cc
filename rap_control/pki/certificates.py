"""X.509 rules of the platform: the CA certificate, and identity certificates from CSRs.

An identity certificate names its identity and role in a URI SAN
``rap://<role>/<id>`` (what every worker-facing check reads). A worker's
also lists the host names and IP addresses clients use for direct WSS as
DNS and IP SANs, and is valid for client and server authentication; a
gateway's is a client certificate only (it serves clients with a
certificate of its own). Both live a short time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rap_common.errors import InvalidArgument
from rap_common.identity import ROLE_WORKER, identity_of_certificate, identity_uri
from rap_control.resources.validation import check_host

CA_VALIDITY = dt.timedelta(days=5 * 365)
WORKER_VALIDITY = dt.timedelta(hours=24)
MAX_HOST_NAMES = 16
_CLOCK_SKEW = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


def new_ca(now: dt.datetime) -> tuple[PrivateKey, x509.Certificate]:
    """A fresh CA key (P-256) and its self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RAP"),
            x509.NameAttribute(NameOID.COMMON_NAME, "RAP platform CA"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def parse_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """A CSR whose signature verifies and whose key is strong enough; INVALID_ARGUMENT otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise InvalidArgument("csr_pem is not a PEM certificate signing request", reason="bad_csr") from None
    if not csr.is_signature_valid:
        raise InvalidArgument(
            "the CSR's signature does not verify: it was altered, or not signed by its own key",
            reason="bad_csr",
        )
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidArgument("an RSA key in the CSR must have at least 2048 bits", reason="weak_key")
    elif not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1")):
        raise InvalidArgument(
            "the CSR's key must be ECDSA P-256 or P-384, or RSA of 2048 bits or more", reason="weak_key"
        )
    return csr


def host_names(names: list[str]) -> list[x509.GeneralName]:
    """DNS and IP SANs for the names clients use to reach the worker directly."""
    if len(names) > MAX_HOST_NAMES:
        raise InvalidArgument(f"at most {MAX_HOST_NAMES} direct_host_names", reason="too_many_host_names")
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            checked = check_host(name)
        except InvalidArgument:
            raise InvalidArgument(
                f"direct host name {name[:64]!r} is neither a DNS name nor an IP address",
                reason="bad_host_name",
            ) from None
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(checked)))
        except ValueError:
            out.append(x509.DNSName(checked))
    return out


def issue_worker_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    worker_id: uuid.UUID,
    names: list[str],
    now: dt.datetime,
    validity: dt.timedelta = WORKER_VALIDITY,
    role: str = ROLE_WORKER,
) -> x509.Certificate:
    """Sign the CSR's key into a short-lived certificate of an identity of ``role``.
    The CSR's own subject and extensions are ignored: the CA decides what the
    identity is. Only a worker gets host-name SANs and server authentication."""
    worker = role == ROLE_WORKER
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(role, worker_id)),
        *(host_names(names) if worker else []),
    ]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH, *([ExtendedKeyUsageOID.SERVER_AUTH] if worker else [])]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{role} {worker_id}")]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def worker_id_of(certificate: x509.Certificate) -> uuid.UUID | None:
    """The worker a certificate names in its URI SAN, or None (also for a gateway's)."""
    named = identity_of_certificate(certificate)
    return named[1] if named is not None and named[0] == ROLE_WORKER else None


SERVER_VALIDITY = dt.timedelta(days=30)


def issue_server_certificate(
    ca_key: PrivateKey, ca_cert: x509.Certificate, names: list[str], now: dt.datetime
) -> tuple[PrivateKey, x509.Certificate]:
    """A fresh key and a server certificate for the control plane's worker listener,
    so that workers verify it with the same platform CA bundle they enrolled with."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RAP control plane")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(host_names(names)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate
