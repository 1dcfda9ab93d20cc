"""RPCs of the contract that this version does not implement yet.

Each answers UNIMPLEMENTED with a message naming the method and the work
it belongs to, on purpose: :data:`PLANNED` lists them all, and a test
checks that every RPC of every rap.v1 service is either implemented or
listed here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from rap_common.errors import NotImplementedYet

# "Service/Method" -> the work that will implement it.
PLANNED: dict[str, str] = {}

Handler = Callable[[Any, Any], Coroutine[Any, Any, Any]]


class planned:
    """A servicer attribute that answers UNIMPLEMENTED, and registers itself in PLANNED."""

    def __init__(self, feature: str) -> None:
        self.feature = feature
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        service = getattr(owner, "SERVICE_NAME", owner.__name__)
        PLANNED[f"{service}/{name}"] = self.feature

    # Typed Any: it stands in for handlers of every request and response type.
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        message = f"{self.name} is not implemented yet in this version of RAP: it comes with {self.feature}"

        async def handler(request: Any, context: Any) -> Any:
            raise NotImplementedYet(message, reason="not_implemented")

        return handler
