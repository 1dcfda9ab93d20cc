"""Types that hold secret values and refuse to show them.

A :class:`SecretStr` or :class:`SecretBytes` has a redacted ``repr`` and
``str``, is not picklable, and hands out its value only through an explicit
:meth:`reveal` call, so that a secret passed to a log call, an f-string or
an exception message shows as ``**********``.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

REDACTED = "**********"


class SecretBytes:
    """Bytes that never print. :meth:`wipe` zeroes the buffer it holds."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self._value = bytearray(value)

    def reveal(self) -> bytes:
        """The value. Call it only where the value is used, never to log."""
        return bytes(self._value)

    def wipe(self) -> None:
        """Overwrite the held buffer with zeros (copies made by reveal() are not reached)."""
        self._value[:] = bytes(len(self._value))  # in place, in C
        self._value = bytearray()

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(bytes(self._value), bytes(other._value))

    def __hash__(self) -> int:
        raise TypeError("secret values are not hashable")

    def __repr__(self) -> str:
        return f"SecretBytes('{REDACTED}')"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("secret values cannot be pickled")

    def __format__(self, spec: str) -> str:
        return repr(self)


class SecretStr:
    """A text secret (password, token) that never prints."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value. Call it only where the value is used, never to log."""
        return self._value

    def drop(self) -> None:
        """Forget the value. Python strings cannot be zeroed in place; this drops
        this holder's reference so the memory can be reclaimed."""
        self._value = ""

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretStr):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        raise TypeError("secret values are not hashable")

    def __repr__(self) -> str:
        return f"SecretStr('{REDACTED}')"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("secret values cannot be pickled")

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __getstate__(self) -> Any:
        raise TypeError("secret values cannot be pickled")
