"""The signing key ring: one key created under the KEK, tokens that verify against its JWKS."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg2
import pytest

from rap_common.tokens import LEASE_AUDIENCE, verify
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.service import KeyService
from rap_control.principal import Actor
from rap_control.tokens.keyring import ISSUER, SigningKeyRing
from tests.conftest import _libpq, fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
def ring_db(postgres_url: str, provider: LocalKeyProvider) -> Iterator[tuple[str, Database]]:
    with fresh_database(postgres_url) as url:
        database = Database(url, pool_size=4)
        database.run_sync(
            lambda uow: KeyService(AuditLog(), provider).register_at_startup(uow, Actor.system("t"))
        )
        yield url, database
        database.close()


def test_replicas_racing_create_one_sealed_key_and_tokens_verify(
    ring_db: tuple[str, Database], provider: LocalKeyProvider
) -> None:
    url, db = ring_db
    rings = [SigningKeyRing(provider, KeyService(AuditLog(), provider)) for _ in range(4)]
    kids: list[str] = []
    threads = [threading.Thread(target=lambda r=r: kids.append(db.run_sync(r.active).kid)) for r in rings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(kids)) == 1, "one key for every replica"
    with psycopg2.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT string_agg(state, ',' ORDER BY state), "
            "bool_and(position('PRIVATE KEY' in encode(sealed_private_key, 'escape')) = 0) FROM signing_keys"
        )
        assert cur.fetchone() == ("active,next", True), "one active key, one published next key, all sealed"
    token, jti, _ = db.run_sync(
        lambda uow: rings[0].sign(uow, {"sub": "w1", "sid": "s1"}, audience=LEASE_AUDIENCE, ttl_seconds=60)
    )
    jwks = db.run_sync(rings[1].jwks)
    assert kids[0] in jwks and len(jwks) == 2, "the active key and the next one"
    assert all("d" not in key for key in jwks.values()), "public keys only"
    claims = verify(token, jwks, audience=LEASE_AUDIENCE, issuer=ISSUER)
    assert (claims["sub"], claims["sid"], claims["jti"]) == ("w1", "s1", jti)


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg2.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        row = cur.fetchone()
        return bool(row and row[0])


def test_no_caller_is_handed_keys_that_are_not_committed(
    ring_db: tuple[str, Database], provider: LocalKeyProvider
) -> None:
    """The race of a fresh database, made deterministic: one ring, caller A creates the
    keys in a transaction it has not committed, caller B asks for the JWKS meanwhile.
    B must wait for A's keys and get them, never an empty set."""
    import concurrent.futures
    import time

    url, db = ring_db
    ring = SigningKeyRing(provider, KeyService(AuditLog(), provider))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with db.transaction() as a:
            created = ring.active(a)
            b = pool.submit(db.run_sync, ring.jwks)
            deadline = time.monotonic() + 20
            # B either finished (the bug: it read the uncommitted state) or waits for A's lock.
            while not b.done() and not _waiting_on_a_lock(url):
                assert time.monotonic() < deadline, "caller B neither finished nor waited"
                time.sleep(0.02)
            assert not b.done(), f"B answered before A committed: {b.result()!r}"
        jwks = b.result(20)
    assert created.kid in jwks and len(jwks) == 2
    # And the ring now serves the committed key from its cache.
    assert db.run_sync(ring.active).kid == created.kid


def test_a_rolled_back_key_is_never_cached(ring_db: tuple[str, Database], provider: LocalKeyProvider) -> None:
    _, db = ring_db
    ring = SigningKeyRing(provider, KeyService(AuditLog(), provider))

    class Abort(Exception):
        pass

    created: list[str] = []

    def create_then_fail() -> None:
        with db.transaction() as uow:
            created.append(ring.active(uow).kid)
            raise Abort

    with pytest.raises(Abort):
        create_then_fail()
    phantom = created[0]
    jwks = db.run_sync(ring.jwks)
    assert phantom not in jwks and len(jwks) == 2
    assert db.run_sync(ring.active).kid in jwks
