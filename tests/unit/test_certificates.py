"""The platform CA's certificate rules, checked with cryptography's own X.509 verifier."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from rap_common.errors import InvalidArgument
from rap_control.pki import certificates
from tests.support.pki import make_csr, tamper

NOW = dt.datetime.now(dt.UTC)
CA_KEY, CA_CERT = certificates.new_ca(NOW)


def _issue(names: list[str], worker_id: uuid.UUID | None = None) -> x509.Certificate:
    csr = certificates.parse_csr(make_csr()[0])
    return certificates.issue_worker_certificate(CA_KEY, CA_CERT, csr, worker_id or uuid.uuid4(), names, NOW)


def test_the_ca_is_a_ca_and_nothing_else() -> None:
    constraints = CA_CERT.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = CA_CERT.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature


def test_a_worker_certificate_names_its_worker_and_host_names() -> None:
    worker_id = uuid.uuid4()
    cert = _issue(["worker-1.internal", "127.0.0.1"], worker_id)
    assert certificates.worker_id_of(cert) == worker_id
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["worker-1.internal"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert cert.not_valid_after_utc - NOW <= certificates.WORKER_VALIDITY
    assert "asks to be root" not in cert.subject.rfc4514_string()


def test_the_certificate_verifies_as_client_and_as_server_under_the_ca_only() -> None:
    cert = _issue(["worker-1.internal"])
    policy = PolicyBuilder().store(Store([CA_CERT])).time(NOW)
    policy.build_client_verifier().verify(cert, [])
    policy.build_server_verifier(x509.DNSName("worker-1.internal")).verify(cert, [])
    with pytest.raises(VerificationError):
        policy.build_server_verifier(x509.DNSName("other.internal")).verify(cert, [])
    _, other_ca = certificates.new_ca(NOW)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([other_ca])).time(NOW).build_client_verifier().verify(cert, [])


@pytest.mark.parametrize(
    ("csr_pem", "reason"),
    [
        (tamper(make_csr()[0]), "bad_csr"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "bad_csr"),
        ("not a csr", "bad_csr"),
        (make_csr(key_size=1024)[0], "weak_key"),
    ],
    ids=["tampered", "garbage-pem", "not-pem", "rsa-1024"],
)
def test_a_bad_csr_is_refused(csr_pem: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        certificates.parse_csr(csr_pem)
    assert info.value.reason == reason


def test_bad_host_names_are_refused() -> None:
    for names in (["bad host"], ["x" * 300], [f"h{i}.internal" for i in range(17)]):
        with pytest.raises(InvalidArgument):
            certificates.host_names(names)
