"""The database handle: engine, units of work, and the thread pool they run in.

psycopg2 is synchronous, so the database work of one RPC runs as one unit
of work on a bounded thread pool, never on the event loop. A unit of work
is one transaction: it commits when the function returns and rolls back
when it raises, except through :meth:`UnitOfWork.commit_and_raise`, which
keeps what was written (an audit row of a refusal) and then fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from rap_common.errors import RapError, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


class _CommitThenRaise(Exception):
    def __init__(self, error: RapError) -> None:
        super().__init__(error.reason)
        self.error = error


class UnitOfWork:
    """One transaction. Repositories use :attr:`session`; they never commit."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this unit has committed (never if it rolls back).

        For caches of what the unit wrote: another thread must never be
        handed a row that is not committed yet, and may never be.
        """
        self._after_commit.append(callback)

    def committed(self) -> None:
        for callback in self._after_commit:
            callback()
        self._after_commit.clear()

    def commit_and_raise(self, error: RapError) -> NoReturn:
        """Commit what this unit wrote so far, then raise ``error`` to the caller.

        For refusals that must leave an audit row although the request fails.
        """
        raise _CommitThenRaise(error)


class Database:
    """Owns the engine and the pool of threads that run units of work."""

    def __init__(self, url: str, *, pool_size: int = 10, system_pool_size: int = 2) -> None:
        self.url = url
        self.engine: Engine = self._engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # One thread per pooled connection: a unit never waits for a connection.
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="rap-db")
        # Liveness work (recording heartbeats, sweeping leases, health probes) has
        # connections and threads of its own: however many user calls queue for the
        # main pool, a worker's heartbeats are recorded on time and its leases do not
        # lapse because the control plane was busy.
        self._system_engine = self._engine(url, system_pool_size)
        self._system_sessions = sessionmaker(self._system_engine, expire_on_commit=False)
        self._system_executor = ThreadPoolExecutor(
            max_workers=system_pool_size, thread_name_prefix="rap-db-sys"
        )
        # When a unit last failed for want of the database (monotonic seconds).
        self._unavailable_at: float | None = None

    @staticmethod
    def _engine(url: str, pool_size: int) -> Engine:
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            # No pre-ping: it costs a round trip per unit of work. A connection that
            # died answers its one call with UNAVAILABLE (see transaction()), and
            # SQLAlchemy then invalidates the pool so the next call reconnects.
            pool_recycle=1800,
            pool_timeout=10,
            # Statement parameters never appear in error text or logs: defence in
            # depth, since an unexpected error's traceback goes to the server log.
            hide_parameters=True,
        )

    def unavailable_within(self, seconds: float) -> bool:
        """Whether a unit of work failed for want of the database in the last ``seconds``.

        Work that would punish others for the control plane's own outage (the
        lease sweeper) waits until the outage is that far behind.
        """
        at = self._unavailable_at
        return at is not None and time.monotonic() - at < seconds

    @contextlib.contextmanager
    def transaction(self, *, system: bool = False) -> Iterator[UnitOfWork]:
        """A unit of work, synchronously (for the CLI and the thread pool).

        An operational database error (lost or refused connection, deadlock,
        timeout) becomes :class:`Unavailable`, "retry later": the one place
        that lower-level error is mapped.
        """
        session = self._system_sessions() if system else self._sessions()
        uow = UnitOfWork(session)
        try:
            yield uow
            session.commit()
            uow.committed()
        except _CommitThenRaise as keep:
            session.commit()
            uow.committed()
            raise keep.error from None
        except (OperationalError, InterfaceError) as exc:
            # Lost connections, refused connections, deadlocks, timeouts: all worth a retry.
            session.rollback()
            self._unavailable_at = time.monotonic()
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            raise Unavailable(
                "the database is unavailable; retry later", reason="database_unavailable"
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def run_sync(self, fn: Callable[[UnitOfWork], T], *, system: bool = False) -> T:
        """Run ``fn`` in one transaction on the calling thread."""
        with self.transaction(system=system) as uow:
            return fn(uow)

    async def run(self, fn: Callable[[UnitOfWork], T]) -> T:
        """Run ``fn`` in one transaction on the database thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.run_sync, fn))

    async def run_system(self, fn: Callable[[UnitOfWork], T]) -> T:
        """:meth:`run` for liveness work, on its own connections and threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._system_executor, functools.partial(self.run_sync, fn, system=True)
        )

    def close(self) -> None:
        """Stop the thread pool and close every pooled connection."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._system_executor.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()
        self._system_engine.dispose()
