"""Worker-side key material for enrollment tests."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def make_csr(key_size: int | None = None) -> tuple[str, object]:
    """A PEM CSR and its private key (EC P-256, or RSA of ``key_size`` bits)."""
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        if key_size
        else ec.generate_private_key(ec.SECP256R1())
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asks to be root")]))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def tamper(csr_pem: str) -> str:
    """The same CSR with one bit of its signed content flipped (its signature no longer verifies)."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER))
    der[der.index(b"asks to be root")] ^= 0x01  # a letter of the signed subject: "asks" -> "`sks"
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
