"""Secret-store benchmark: each figure beside a floor measured in the same run.

    python bench/secrets.py [--puts 1000] [--rows 100000]

1. Put-and-read through the API (PutResourceSecret then GetResourceSecret,
   over gRPC on loopback, one client) beside a bare psycopg2 INSERT + SELECT
   of rows of the same size on one connection. Target: at least 0.4.
2. Rewrap of --rows secrets from key A to key B (`rapctl keys rewrap`, a
   process of its own) beside a bare batched UPDATE of the same rows with
   new values of the same size. Target: at least 0.5.
3. Peak RSS of that rewrap process at 10,000 and at --rows rows. Target:
   within 10 % of each other (memory must not grow with the table).

Uses DATABASE_URL (default: the local PostgreSQL) and makes, then drops,
its own databases. Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# This file is named like the standard library's `secrets`: take its folder off
# the path (Python put it first) so that `import secrets` finds the real one.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import grpc  # noqa: E402
import psycopg2  # noqa: E402

from rap.v1 import credentials_pb2, resource_pb2, secret_pb2  # noqa: E402
from rap_common.secrets import SecretBytes  # noqa: E402
from rap_control.audit.service import AuditLog  # noqa: E402
from rap_control.db.engine import Database  # noqa: E402
from rap_control.identity.service import IdentityService  # noqa: E402
from rap_control.keys.local import LocalKeyProvider  # noqa: E402
from rap_control.keys.service import KeyService  # noqa: E402
from rap_control.principal import Actor  # noqa: E402
from tests.conftest import _libpq, fresh_database  # noqa: E402
from tests.support.bulk import bulk_secrets  # noqa: E402
from tests.support.client import Client  # noqa: E402

RAPCTL = str(Path(sys.executable).parent / "rapctl")


def report(name: str, value: float, unit: str, floor: float, target: str, ok: bool) -> None:
    ratio = value / floor if floor else float("nan")
    verdict = "meets" if ok else "MISSES"
    print(
        f"{name}: {value:,.1f} {unit}; floor {floor:,.1f} {unit}; ratio {ratio:.2f} ({verdict} target {target})"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def put_and_read(url: str, puts: int, work: Path) -> tuple[float, float]:
    """Through a `rap-control serve` process of its own (a client in the same process
    would share its GIL), then the floor on one psycopg2 connection."""
    db = Database(url, pool_size=2)
    _, _, issued = db.run_sync(
        lambda uow: IdentityService(AuditLog()).bootstrap(uow, "bench", "b@bench.test")
    )
    db.close()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_", "PKCS11_", "APP_ENV"))}
    env.update(
        DATABASE_URL=url,
        RAP_LISTEN_ADDRESS=f"127.0.0.1:{port}",
        RAP_WORKER_LISTEN_ADDRESS="127.0.0.1:0",
        RAP_DATA_DIR=str(work),
        RAP_LOG_LEVEL="WARNING",
        SECRET_ENCRYPTION_KEY_B64=base64.b64encode(os.urandom(32)).decode(),
        SECRET_ENCRYPTION_KEY_ID="bench-a",
    )
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "rap-control"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        client = Client(channel, issued.token.reveal())
        ids = []
        for i in range(puts):
            request = resource_pb2.CreateResourceRequest(
                resource=resource_pb2.Resource(
                    name=f"r{i}", protocol=resource_pb2.PROTOCOL_SSH, address="10.0.0.1"
                )
            )
            for _ in range(50):  # the server migrates and registers its key before it answers
                try:
                    ids.append(client.resources.CreateResource(request).resource.id)
                    break
                except grpc.RpcError:
                    time.sleep(0.2)
        password = "p" * 32
        started = time.perf_counter()
        for resource_id in ids:
            client.secrets.PutResourceSecret(
                secret_pb2.PutResourceSecretRequest(
                    resource_id=resource_id,
                    ssh=credentials_pb2.SshCredential(username="bench", password=password),
                )
            )
            client.secrets.GetResourceSecret(secret_pb2.GetResourceSecretRequest(resource_id=resource_id))
        api_rate = puts / (time.perf_counter() - started)
        channel.close()
    finally:
        server.terminate()
        server.wait(20)

    conn = psycopg2.connect(_libpq(url))
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench_rows (id uuid PRIMARY KEY, secret_ref text, key_id text, wrapped_dek bytea, "
            "nonce bytea, ciphertext bytea, payload_sha256 bytea)"
        )
    conn.commit()
    started = time.perf_counter()
    for _ in range(puts):
        row_id = uuid.uuid4()
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO bench_rows VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    str(row_id),
                    f"rap-secret://org/{uuid.uuid4()}/resources/{uuid.uuid4()}/default",
                    "bench-a",
                    os.urandom(60),
                    os.urandom(12),
                    os.urandom(120),
                    os.urandom(32),
                ),
            )
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM bench_rows WHERE id = %s", (str(row_id),))
            cur.fetchone()
        conn.commit()
    floor_rate = puts / (time.perf_counter() - started)
    conn.close()
    return api_rate, floor_rate


def rewrap_process(url: str, rows: int, work: Path) -> tuple[float, int]:
    """Load ``rows`` secrets under key A, then time `rapctl keys rewrap` to key B; (rows/s, peak RSS KiB)."""
    a, b = os.urandom(32), os.urandom(32)
    db = Database(url, pool_size=2)
    old = LocalKeyProvider("kek-a", {"kek-a": SecretBytes(a)})
    db.run_sync(lambda uow: KeyService(AuditLog(), old).register_at_startup(uow, Actor.system("bench")))
    org, _, _ = db.run_sync(lambda uow: IdentityService(AuditLog()).bootstrap(uow, "bench", "b@bench.test"))
    bulk_secrets(db, old, "kek-a", org.id, rows, chunk=5000)
    db.close()
    (work / "b.key").write_bytes(base64.b64encode(b))
    (work / "ring.json").write_text(json.dumps({"kek-a": base64.b64encode(a).decode()}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_", "PKCS11_", "APP_ENV"))}
    env.update(
        DATABASE_URL=url,
        SECRET_ENCRYPTION_KEY_FILE=str(work / "b.key"),
        SECRET_ENCRYPTION_KEY_ID="kek-b",
        SECRET_ENCRYPTION_KEYRING_FILE=str(work / "ring.json"),
    )
    started = time.perf_counter()
    proc = subprocess.Popen(
        [RAPCTL, "keys", "rewrap", "--batch-size", "1000"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"rapctl keys rewrap failed with status {status}")
    return rows / elapsed, usage.ru_maxrss


def bare_batched_update(url: str, batch: int = 1000) -> float:
    """The same rows, updated in batches with new values of the same size: the floor for rewrap."""
    conn = psycopg2.connect(_libpq(url))
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM resource_secrets ORDER BY id")
        ids = [row[0] for row in cur.fetchall()]
    conn.commit()
    started = time.perf_counter()
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        with conn.cursor() as cur:
            args = ",".join(
                cur.mogrify("(%s::uuid, %s, %s)", (i, os.urandom(60), os.urandom(32))).decode() for i in chunk
            )
            cur.execute(
                "UPDATE resource_secrets t SET key_id = 'kek-c', wrapped_dek = v.w, payload_sha256 = v.d "
                f"FROM (VALUES {args}) AS v(id, w, d) WHERE t.id = v.id"
            )
        conn.commit()
    rate = len(ids) / (time.perf_counter() - started)
    conn.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())

    with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as url:
        api, floor = put_and_read(url, args.puts, Path(tmp))
    report("put+read through the API", api, "pairs/s", floor, ">= 0.4", api / floor >= 0.4)

    with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as url:
        _, rss_small = rewrap_process(url, 10_000, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as url:
        rate, rss_large = rewrap_process(url, args.rows, Path(tmp))
        floor = bare_batched_update(url)
    report(f"rewrap of {args.rows:,} secrets", rate, "rows/s", floor, ">= 0.5", rate / floor >= 0.5)
    growth = rss_large / rss_small
    print(
        f"rewrap peak RSS: {rss_small / 1024:,.1f} MiB at 10,000 rows, {rss_large / 1024:,.1f} MiB at "
        f"{args.rows:,} rows; ratio {growth:.3f} ({'meets' if growth <= 1.10 else 'MISSES'} target <= 1.10)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
