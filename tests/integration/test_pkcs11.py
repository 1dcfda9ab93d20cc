"""The PKCS#11 key provider against a real SoftHSM2 token."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from rap.v1 import credentials_pb2, resource_pb2, secret_pb2
from rap_common.errors import DataLoss
from rap_common.secrets import SecretStr
from rap_control.audit.service import AuditLog
from rap_control.config import Environment
from rap_control.db.engine import Database
from rap_control.identity.service import IdentityService
from rap_control.keys.pkcs11 import Pkcs11KeyProvider
from rap_control.keys.service import KeyService
from rap_control.secrets.service import SecretStore
from tests.conftest import _libpq, _settings, fresh_database
from tests.support.client import Client
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
BIN = Path(sys.executable).parent
PIN = "4271"
KEY_ID = "kek-hsm-1"


@dataclass(frozen=True)
class Token:
    conf: Path
    pin_file: Path
    label: str

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_", "PKCS11_", "APP_ENV"))}
        env.update(
            SOFTHSM2_CONF=str(self.conf),
            SECRET_KEY_PROVIDER="pkcs11",
            PKCS11_MODULE=str(MODULE),
            PKCS11_TOKEN_LABEL=self.label,
            PKCS11_PIN_FILE=str(self.pin_file),
            SECRET_ENCRYPTION_KEY_ID=KEY_ID,
        )
        env.update(overrides)
        return env


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Token:
    """A fresh SoftHSM2 token with an AES KEK made by `rapctl keys generate`."""
    if not shutil.which("softhsm2-util") or not MODULE.exists():
        pytest.fail("SoftHSM2 is not installed: scripts/test installs it with apt-get when run as root")
    work = tmp_path_factory.mktemp("softhsm")
    (work / "tokens").mkdir()
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {work}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    # python-pkcs11 loads the module once per process: the conf must be in place first.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label = f"rap-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "87654321", "--pin", PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    pin_file = work / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    made = Token(conf, pin_file, label)
    generated = subprocess.run(
        [str(BIN / "rapctl"), "keys", "generate", KEY_ID],
        env=made.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert generated.returncode == 0, generated.stderr
    assert "sensitive, not extractable" in generated.stdout
    return made


@pytest.fixture(scope="module")
def hsm(token: Token) -> Iterator[Pkcs11KeyProvider]:
    provider = Pkcs11KeyProvider(MODULE, token.label, SecretStr(PIN), KEY_ID)
    yield provider
    provider.close()


def test_the_kek_is_on_the_token_and_its_value_cannot_be_read(token: Token, hsm: Pkcs11KeyProvider) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    assert KEY_ID in hsm.key_ids()
    tok = pkcs11.lib(str(MODULE)).get_token(token_label=token.label)
    with tok.open() as session:  # the provider's login covers this process
        key = session.get_key(label=KEY_ID, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY)
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        with pytest.raises(pkcs11.AttributeSensitive):
            key[Attribute.VALUE]
    again = subprocess.run(
        [str(BIN / "rapctl"), "keys", "generate", KEY_ID],
        env=token.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "already has a key" in again.stderr


def test_put_and_read_back_through_the_token(postgres_url: str, hsm: Pkcs11KeyProvider) -> None:
    with fresh_database(postgres_url) as url:
        db = Database(url, pool_size=4)
        try:
            audit = AuditLog()
            org, _, issued = db.run_sync(
                lambda uow: IdentityService(audit).bootstrap(uow, "hsm", "ops@hsm.test")
            )
            server = ServerThread(_settings(Environment.DEVELOPMENT, None, url), db, hsm).start()
            try:
                with server.channel() as channel:
                    client = Client(channel, issued.token.reveal())
                    resource = client.resources.CreateResource(
                        resource_pb2.CreateResourceRequest(
                            resource=resource_pb2.Resource(
                                name="h", protocol=resource_pb2.PROTOCOL_VNC, address="10.0.0.2"
                            )
                        )
                    ).resource
                    info = client.secrets.PutResourceSecret(
                        secret_pb2.PutResourceSecretRequest(
                            resource_id=resource.id, vnc=credentials_pb2.VncCredential(password="hsm-pw")
                        )
                    ).secret
            finally:
                server.stop()
            assert info.key_id == KEY_ID
            store = SecretStore(audit, hsm, KeyService(audit, hsm))
            credential = db.run_sync(
                lambda uow: store.reveal(uow, org.id, uuid.UUID(resource.id), info.secret_ref)
            )
            assert credential.password.reveal() == "hsm-pw"
            with psycopg2.connect(_libpq(url)) as conn, conn.cursor() as cur:
                cur.execute(
                    "UPDATE resource_secrets SET wrapped_dek = set_byte(wrapped_dek, 30, get_byte(wrapped_dek, 30) # 1)"
                )
            with pytest.raises(DataLoss):
                db.run_sync(lambda uow: store.reveal(uow, org.id, uuid.UUID(resource.id), info.secret_ref))
        finally:
            db.close()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"PKCS11_PIN_FILE": "WRONG_PIN"}, "PIN in PKCS11_PIN_FILE is not accepted"),
        ({"SECRET_ENCRYPTION_KEY_ID": "kek-missing"}, "names no AES key on the PKCS#11 token"),
        ({"PKCS11_TOKEN_LABEL": "no-such-token"}, "PKCS11_TOKEN_LABEL names no token"),
        ({"PKCS11_MODULE": "/nonexistent/lib.so"}, "PKCS11_MODULE names a file that does not exist"),
    ],
)
def test_start_up_stops_with_a_clear_error(
    token: Token, tmp_path: Path, overrides: dict[str, str], expected: str
) -> None:
    if overrides.get("PKCS11_PIN_FILE") == "WRONG_PIN":
        wrong = tmp_path / "wrong-pin"
        wrong.write_text("9999\n")
        overrides = {"PKCS11_PIN_FILE": str(wrong)}
    env = token.env(RAP_DATA_DIR=str(tmp_path), RAP_LISTEN_ADDRESS="127.0.0.1:0", **overrides)
    result = subprocess.run(
        [str(BIN / "rap-control"), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "9999" not in result.stderr and PIN not in result.stderr
