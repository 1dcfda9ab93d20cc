"""`rapctl keys rewrap` progress: a redrawn bar on a terminal, one line per batch otherwise."""

from __future__ import annotations

import io
import os
import pty
import select

from rap_control.cli import _ProgressBar
from rap_control.secrets.rewrap import RewrapProgress


def _steps(bar: _ProgressBar) -> None:
    for done in (250, 500):
        bar.update(RewrapProgress(rewrapped=done, remaining=500 - done, total=500, target_key_id="kek-b"))
    bar.finish()


def test_on_a_terminal_the_bar_is_redrawn_in_place() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as stream:
            _steps(_ProgressBar(stream))
        # A pty hands over what was written in pieces: read until the bar's last line ended.
        shown = ""
        while not ("500/500" in shown and shown.endswith("\n")):
            ready, _, _ = select.select([leader], [], [], 10)
            assert ready, f"the pty showed only {shown!r}"
            shown += os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert shown.count("\rrewrap [") == 2  # redrawn in place (the pty shows the final newline as \r\n)
    assert shown.endswith("\n")
    assert "[" + "#" * 15 + "." * 15 + "] 250/500" in shown
    assert "[" + "#" * 30 + "] 500/500" in shown


def test_in_a_log_each_batch_is_a_line() -> None:
    stream = io.StringIO()
    _steps(_ProgressBar(stream))
    assert stream.getvalue().splitlines() == ["rewrapped 250/500", "rewrapped 500/500"]
