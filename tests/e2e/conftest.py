"""Fixtures the end-to-end suites share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import sshd as sshd_support
from tests.support.sshd import Sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One real sshd for the whole run: its user's password is set once, at its start."""
    server = sshd_support.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
