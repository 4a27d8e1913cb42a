"""Process orchestration for ``citybrain demo``, ``citybrain replay`` and the integration tests.

A :class:`Stack` starts what the settings do not point at (the embedded Tansu Kafka broker when
``kafka.brokers`` is empty, amqtt when ``mqtt.host`` is empty), then the worker and the MQTT bridge as child
processes configured through ``CITYBRAIN_*`` environment variables, waits until their ``/health`` says ok,
and stops everything in reverse order (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import networkx as nx

from ops.brokers import AmqttBroker, EmbeddedBroker, TansuBroker, free_port
from ops.settings import Settings, reveal


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
    """A citybrain sub-command (``python -m ops …``) run as a child with its own log file."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_path: Path, wrapper: list[str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "ops", *args],  # wrapper: e.g. a profiler
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

    def start_bridge(self) -> ChildProcess:
        s = self.settings.model_copy(update={"bridge_web_port": free_port()})
        self.settings = s.model_copy(update={"web_port": self.settings.web_port})
        self.bridge = self._spawn("bridge", ["bridge"], s)
        self.bridge.web_port = s.bridge_web_port  # type: ignore[attr-defined]
        return self.bridge

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
