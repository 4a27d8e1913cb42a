"""Process orchestration for ``citybrain demo``, ``citybrain replay`` and the integration tests.

A :class:`Stack` starts what the settings do not point at (the embedded Tansu Kafka broker when
``kafka.brokers`` is empty, amqtt when ``mqtt.host`` is empty), then the worker and the MQTT bridge as child
processes configured through ``CITYBRAIN_*`` environment variables, waits until their ``/health`` says ok,
optionally restarts a bridge that exits (:class:`Supervisor`, the demo's stand-in for systemd), and stops
everything in reverse order (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import networkx as nx

from ops.brokers import AmqttBroker, EmbeddedBroker, TansuBroker, free_port
from ops.settings import Settings, reveal

log = logging.getLogger(__name__)


def load_network(path: Path | None) -> nx.MultiDiGraph:
    """The road graph: ``path`` (traffic-net JSON, SUMO .net.xml, CityFlow, CBEngine, OSM) or the demo city."""
    import roadnet

    if path is None:
        return roadnet.grid_city()
    return roadnet.load_network(path)


def settings_env(settings: Settings) -> dict[str, str]:
    """``CITYBRAIN_*`` environment variables that rebuild ``settings`` in a child process (secrets included)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}__{k.upper()}" if prefix else k.upper(), v)
        elif value is None:
            return
        elif isinstance(value, list):
            out["CITYBRAIN_" + prefix] = json.dumps(value)
        elif isinstance(value, bool):
            out["CITYBRAIN_" + prefix] = "true" if value else "false"
        else:
            out["CITYBRAIN_" + prefix] = str(value)

    walk("", reveal(settings))
    return out


def http_json(url: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    """GET ``url`` → (status, decoded JSON or None)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, None


class ChildProcess:
    """A citybrain sub-command (``python -m ops …``; ``argv``: any command) run as a child with its own log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        wrapper: list[str] | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv or [*(wrapper or []), sys.executable, "-m", "ops", *args],  # wrapper: e.g. a profiler
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n_bytes: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_bytes:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace_s: float = 15.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


#: Exit status of ``citybrain bridge`` / ``worker`` that restarting cannot fix: invalid settings (docs/operations.md).
EXIT_CONFIG_ERROR = 2


class Supervisor:
    """Restarts a child process that exits by itself, with backoff: what systemd does in production
    (``Restart=on-failure``, ``RestartPreventExitStatus=2``), for ``citybrain demo``.

    A child that exits 0 (a clean stop) or 2 (invalid settings) is not restarted; any other exit, a signal
    included, is, after a wait that doubles from ``first_backoff_s`` to ``max_backoff_s`` and falls back to
    ``first_backoff_s`` once a child has run ``stable_s``. Every exit and restart is reported (``report``, a
    log line) and counted (``restarts``).

    Parameters
    ----------
    child
        The running child.
    start
        Starts a replacement and returns it.
    """

    def __init__(
        self,
        child: ChildProcess,
        start: Callable[[], ChildProcess],
        *,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.child = child
        self._start = start
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.report = report or log.warning
        self.restarts = 0
        self.backoffs_s: list[float] = []  # the wait before each restart
        self.gave_up: int | None = None  # the exit status it stopped at
        self._backoff_s = first_backoff_s
        self._started_at = time.monotonic()
        self._restart_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Look at the child once: schedule or carry out a restart."""
        if self.gave_up is not None:
            return
        now = time.monotonic()
        if self.child.alive():
            if now - self._started_at >= self.stable_s:
                self._backoff_s = self.first_backoff_s
            return
        code = self.child.proc.returncode
        if self._restart_at is None:
            if code in (0, EXIT_CONFIG_ERROR):
                self.gave_up = code
                why = "stopped cleanly" if code == 0 else "invalid settings: fix them and start it again"
                self.report(f"{self.child.name} exited with status {code} ({why}); not restarting")
                return
            self._restart_at = now + self._backoff_s
            self.backoffs_s.append(self._backoff_s)
            self.report(
                f"{self.child.name} exited with status {code}; restarting in {self._backoff_s:g} s "
                f"(restart {self.restarts + 1}); log: {self.child.log_path}"
            )
            self._backoff_s = min(self.max_backoff_s, 2 * self._backoff_s)
        elif now >= self._restart_at:
            self._restart_at = None
            self.child = self._start()
            self._started_at = time.monotonic()
            self.restarts += 1
            self.report(f"{self.child.name} restarted (pid {self.child.proc.pid}, restart {self.restarts})")

    def start(self, poll_s: float = 0.25) -> Self:
        """Poll from a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.wait(poll_s):
                try:
                    self.poll()
                except Exception:  # a restart that failed to spawn: try again at the next poll
                    log.exception("supervising %s", self.child.name)

        self._thread = threading.Thread(target=loop, name=f"supervise-{self.child.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class Stack:
    """Brokers (embedded unless configured), worker and bridge for one run."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.base_settings = settings
        self.settings = settings
        self.log_dir = log_dir
        self.brokers: list[EmbeddedBroker] = []
        self.children: list[ChildProcess] = []
        self.worker: ChildProcess | None = None
        self.bridge: ChildProcess | None = None
        self.supervisors: list[Supervisor] = []

    # -- brokers ----------------------------------------------------------------------------------------
    def start_brokers(self) -> Settings:
        s = self.settings
        if not s.kafka.brokers:
            kafka = TansuBroker(log_dir=self.log_dir).start()
            self.brokers.append(kafka)
            s = s.model_copy(update={"kafka": s.kafka.model_copy(update={"brokers": kafka.url})})
        if not s.mqtt.host:
            mq = AmqttBroker(log_dir=self.log_dir).start()
            self.brokers.append(mq)
            s = s.model_copy(update={"mqtt": s.mqtt.model_copy(update={"host": mq.host, "port": mq.port})})
        self.settings = s
        return s

    # -- children ---------------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], settings: Settings) -> ChildProcess:
        child = ChildProcess(name, args, settings_env(settings), self.log_dir / f"{name}.log")
        self.children.append(child)
        return child

    def start_worker(self, name: str = "worker", web_port: int | None = None) -> ChildProcess:
        s = self.settings.model_copy(update={"web_port": web_port or free_port()})
        if self.worker is None:
            self.settings = s
        child = self._spawn(name, ["worker"], s)
        child.web_port = s.web_port  # type: ignore[attr-defined]
        if self.worker is None:
            self.worker = child
        return child

    def start_bridge(self, web_port: int | None = None) -> ChildProcess:
        s = self.settings.model_copy(update={"bridge_web_port": web_port or free_port()})
        self.settings = s.model_copy(update={"web_port": self.settings.web_port})
        self.bridge = self._spawn("bridge", ["bridge"], s)
        self.bridge.web_port = s.bridge_web_port  # type: ignore[attr-defined]
        return self.bridge

    def supervise_bridge(self, report: Callable[[str], None] | None = None, **backoff: float) -> Supervisor:
        """Restart the bridge whenever it exits by itself (:class:`Supervisor`), on the same web port;
        :attr:`bridge` follows the restarts."""
        assert self.bridge is not None, "start_bridge first"
        port = self.bridge.web_port  # type: ignore[attr-defined]

        def restart() -> ChildProcess:
            return self.start_bridge(web_port=port)

        sup = Supervisor(self.bridge, restart, report=report, **backoff).start()
        self.supervisors.append(sup)
        return sup

    def start_pipeline(self, timeout_s: float = 90.0) -> tuple[ChildProcess, ChildProcess]:
        """Brokers (embedded unless configured), a worker and a bridge, waited for until both are healthy.

        Returns
        -------
        tuple[ChildProcess, ChildProcess]
            The worker and the bridge.
        """
        self.start_brokers()
        worker = self.start_worker()
        bridge = self.start_bridge()
        self.wait_healthy(bridge)
        self.wait_healthy(worker, timeout_s=timeout_s)
        return worker, bridge

    def wait_healthy(self, child: ChildProcess, timeout_s: float = 90.0) -> dict[str, Any]:
        """Poll the child's ``/health`` until HTTP 200.

        Raises
        ------
        RuntimeError
            If the child exits or stays unhealthy past ``timeout_s``, with the tail of its log.
        """
        url = f"http://127.0.0.1:{child.web_port}/health"  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited ({child.proc.returncode}); log:\n{child.tail()}")
            try:
                status, body = http_json(url)
                last = body
                if status == 200:
                    return dict(body)
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{child.name} not healthy after {timeout_s:.0f} s (last: {last}); log:\n{child.tail()}")

    # -- lifecycle --------------------------------------------------------------------------------------
    def stop(self) -> None:
        for sup in self.supervisors:  # first, or they would restart what is being stopped
            sup.stop()
        self.supervisors.clear()
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        for b in reversed(self.brokers):
            b.cleanup()
        self.brokers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
