"""Run a servicer's database work as one unit of work that starts by authenticating.

DESIGN.md: the database work of one RPC runs as one unit of work. The
token check is part of it, so an RPC costs one transaction, and a revoked
token is refused by the same snapshot that would have served the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rap_control.api.context import current_request_id, current_token
from rap_control.db.engine import Database, UnitOfWork
from rap_control.identity.service import IdentityService
from rap_control.principal import CallContext

T = TypeVar("T")


class Calls:
    def __init__(self, db: Database, identity: IdentityService) -> None:
        self.db = db
        self._identity = identity

    async def run(self, fn: Callable[[UnitOfWork, CallContext], T]) -> T:
        """``fn(uow, call)`` in one transaction, ``call`` being the authenticated caller."""
        token, request_id = current_token(), current_request_id()

        def unit(uow: UnitOfWork) -> T:
            principal = self._identity.authenticate(uow, token)
            return fn(uow, CallContext(principal=principal, request_id=request_id))

        return await self.db.run(unit)

    async def authenticate(self) -> CallContext:
        """The caller, for a streaming RPC whose work spans several units."""
        return await self.run(lambda uow, call: call)
