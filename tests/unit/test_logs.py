"""Log lines: colour only on a terminal (and never with NO_COLOR); client mistakes at info, without a traceback."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

SNIPPET = """
import logging
from ops.logs import configure_logging
configure_logging("info", "console")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("app").exception("boom")
try:
    from aiohttp.http_exceptions import BadHttpMessage
    raise BadHttpMessage("Invalid header token")
except BadHttpMessage as exc:
    logging.getLogger("aiohttp.server").exception("Error handling request from %s", "10.0.0.9", exc_info=exc)
"""


def _run(env: dict[str, str], tty: bool) -> str:
    if not tty:
        out = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env, timeout=60)
        return out.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SNIPPET], stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return {**env, **extra}


def test_no_colour_codes_when_stderr_is_not_a_terminal() -> None:
    err = _run(_env(), tty=False)
    assert "boom" in err and "ZeroDivisionError" in err  # the traceback is there, in plain text
    assert "\x1b[" not in err


def test_colour_on_a_terminal_unless_no_color() -> None:
    assert "\x1b[" in _run(_env(), tty=True)
    assert "\x1b[" not in _run(_env(NO_COLOR="1"), tty=True)


def test_a_client_mistake_is_one_info_line_without_traceback() -> None:
    err = _run(_env(), tty=False)
    line = next(ln for ln in err.splitlines() if "10.0.0.9" in ln)
    assert "[info" in line and "Invalid header token" in line
    assert err.count("Traceback") == 1  # only the ZeroDivisionError's
