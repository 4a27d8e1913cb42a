"""The production brokers, run as subprocesses on free loopback ports for CI's "real-engine" suite.

- :class:`ApacheKafkaBroker` — Apache Kafka 4.x, single-node KRaft (broker and controller in one JVM),
  from the jars that ``ops/kafka/pom.xml`` lists, fetched once by :func:`ensure_kafka_jars`; optionally with a
  client listener that requires SASL/PLAIN logins, TLS (:class:`TlsFiles`) or both; restartable (``stop()``
  then ``start()`` keeps its data).
- :class:`MosquittoBroker` — Eclipse mosquitto from Debian's ``mosquitto`` package: anonymous and without
  persistence by default; optionally persistent, with a password file, with a TLS listener.

Both follow :class:`ops.brokers.EmbeddedBroker` like the embedded ``TansuBroker``/``AmqttBroker`` they
stand in for: ``start()`` returns once the broker serves clients, ``stop()`` sends SIGTERM then SIGKILL,
``cleanup()`` also removes the temporary directory, and they work as context managers.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from ops.brokers import EmbeddedBroker, free_port, wait_for_port

#: The Maven project whose dependencies are the Kafka broker's classpath.
KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"

#: The broker's main class (``bin/kafka-server-start.sh``).
KAFKA_MAIN = "kafka.Kafka"

#: The storage tool's main class (``bin/kafka-storage.sh``).
KAFKA_STORAGE_MAIN = "kafka.tools.StorageTool"

_MARKER = ".complete"


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def ensure_kafka_jars(cache_dir: Path = Path(".cache/kafka"), pom: Path = KAFKA_POM) -> Path:
    """Fetch the Kafka broker's jars with Maven, once, and return the folder that holds them.

    The jars go to ``cache_dir/lib``; a marker file holding the pom's SHA-256 is written there last, so a
    fetch that was interrupted, or a pom that changed since (a new Kafka version), fetches again. Maven uses
    its default local repository (``~/.m2``). Concurrent callers are serialised with a file lock.

    Parameters
    ----------
    cache_dir
        Where to keep the jars; relative paths are taken from the current directory.
    pom
        The Maven project listing the jars, ``ops/kafka/pom.xml`` by default.

    Returns
    -------
    Path
        The absolute path of the folder of jars, to use as ``-cp 'DIR/*'``.

    Raises
    ------
    RuntimeError
        If ``mvn`` is not installed or fails (the message holds its output).
    """
    cache_dir = cache_dir.resolve()
    lib = cache_dir / "lib"
    marker = lib / _MARKER
    digest = _pom_digest(pom)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == digest and any(lib.glob("*.jar")):
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven is needed to fetch the Kafka broker's jars: apt-get install -y maven")
        shutil.rmtree(lib, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={lib}"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(cmd)} timed out after {exc.timeout:.0f} s") from exc
        if res.returncode != 0 or not any(lib.glob("*.jar")):
            out = (res.stdout + res.stderr)[-4000:]
            raise RuntimeError(f"fetching the Kafka jars failed (exit {res.returncode}): {' '.join(cmd)}\n{out}")
        marker.write_text(digest + "\n")
    return lib


def _kafka_uuid() -> str:
    """A random Kafka cluster id: 16 random bytes in URL-safe base64 without padding, like ``random-uuid``."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not s.startswith("-"):  # Kafka avoids these too: they read as options on a command line
            return s


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    """Send one request (header v1, client id ``citybrain-probe``) and return the response body."""
    client = b"citybrain-probe"
    req = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    sock.sendall(struct.pack(">i", len(req)) + req)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (got,) = struct.unpack(">i", resp[:4])
    if got != corr:
        raise ConnectionError(f"correlation id {got} != {corr}")
    return resp[4:]


def kafka_serves(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether the Kafka broker at ``host:port`` answers requests and lists at least one live broker.

    Sends ApiVersions v0, then Metadata v4 for no topics: a broker answers these only once its request
    handlers are enabled, which in KRaft happens after it caught up with the metadata log and was unfenced.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            body = _kafka_call(sock, 18, 0, 1, b"")  # ApiVersions v0
            (err, n) = struct.unpack(">hi", body[:6])
            if err != 0:
                return False
            versions = {k: (lo, hi) for k, lo, hi in struct.iter_unpack(">hhh", body[6 : 6 + 6 * n])}
            lo, hi = versions.get(3, (-1, -1))
            if not lo <= 4 <= hi:
                return True  # answers requests; Metadata v4 unsupported, so this is the best we can tell
            body = _kafka_call(sock, 3, 4, 2, struct.pack(">ib", 0, 0))  # Metadata v4, no topics
            (_throttle, brokers) = struct.unpack(">ii", body[:8])
            return brokers >= 1
    except (OSError, struct.error):
        return False


@dataclass(frozen=True)
class TlsFiles:
    """A TLS server identity in PEM files, for :class:`ApacheKafkaBroker`'s ``tls`` option.

    Attributes
    ----------
    cert
        The server certificate, optionally followed by the intermediate certificates of its chain (PEM). Its
        subject alternative names must cover the address clients connect to (``127.0.0.1``), since clients
        check the host name.
    key
        The certificate's private key: unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), as
        ``openssl req -nodes`` (OpenSSL 3) writes it; RSA, DSA or EC.
    client_ca
        If given, the listener requires a client certificate (mutual TLS, ``ssl.client.auth=required``) signed by
        one of the CA certificates in this PEM file, its truststore; a client without one, or with one another CA
        signed, fails the TLS handshake. None (the default): clients are not asked for a certificate.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None


def _properties_value(value: str) -> str:
    """``value`` escaped for a Java ``.properties`` file: backslashes and line breaks (PEM blocks) kept."""
    return value.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class ApacheKafkaBroker(EmbeddedBroker):
    """Apache Kafka 4.x as a single-node KRaft cluster (``process.roles=broker,controller``) on loopback.

    ``start()`` fetches the jars if needed (:func:`ensure_kafka_jars`), writes ``server.properties`` and a
    log4j2 config into the temporary directory, formats the storage like
    ``kafka-storage.sh format -t <uuid> -c server.properties --standalone``, runs ``kafka.Kafka`` and returns
    once the broker answers Metadata requests (about 5-10 s on two cores).

    Parameters
    ----------
    port
        The PLAINTEXT listener port; a free one by default. The controller listener gets another free port.
    log_dir
        Where the broker's log goes (``kafka-PORT.log``); the temporary directory by default.
    lib_dir
        A folder of the broker's jars; fetched into ``.cache/kafka/lib`` by default.
    properties
        Extra or overriding ``server.properties`` entries.
    heap
        The JVM's maximum heap, as for ``-Xmx``.
    sasl_users
        If given, ``port`` is a ``SASL_PLAINTEXT`` listener accepting SASL/PLAIN logins of these users (name →
        password), and the broker talks to itself (and :meth:`ready` probes) over a PLAINTEXT listener on
        ``internal_port``, a free port.
    tls
        If given, ``port`` speaks TLS only, with this certificate and key (given to Kafka inline as a ``PEM``
        keystore, ``ssl.keystore.certificate.chain`` / ``ssl.keystore.key``; clients are not asked for a
        certificate unless ``tls.client_ca`` is set, which makes it mutual TLS: a client certificate signed by
        that CA is required, the CA given as an inline ``PEM`` truststore): an ``SSL`` listener, or ``SASL_SSL``
        with ``sasl_users``. As with ``sasl_users``, the broker itself and :meth:`ready` use the PLAINTEXT
        listener on ``internal_port``.

    ``stop()`` then ``start()`` again restarts the same broker: the storage is formatted only once, so topics,
    offsets and consumer groups survive (a broker restart, as in production).
    """

    name = "kafka"
    start_timeout_s = 90.0

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        *,
        lib_dir: Path | None = None,
        properties: Mapping[str, str] | None = None,
        heap: str = "512m",
        sasl_users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(port, log_dir)
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.sasl_users = dict(sasl_users or {})
        self.tls = tls
        self.internal_port = self.port
        if self.security_protocol != "PLAINTEXT":
            while self.internal_port in (self.port, self.controller_port):
                self.internal_port = free_port()
        self.lib_dir = lib_dir
        self.heap = heap
        self.cluster_id = _kafka_uuid()
        self.config_path = self._tmp / "server.properties"
        self.log4j_path = self._tmp / "log4j2.properties"
        self.data_dir = self._tmp / "data"
        self._extra = dict(properties or {})

    @staticmethod
    def java() -> str:
        """The ``java`` executable: ``$JAVA_HOME/bin/java`` or the one on ``PATH``."""
        home = os.environ.get("JAVA_HOME")
        if home and (Path(home) / "bin" / "java").is_file():
            return str(Path(home) / "bin" / "java")
        found = shutil.which("java")
        if found is None:
            raise RuntimeError("Kafka needs Java 17+: apt-get install -y openjdk-17-jre-headless")
        return found

    @property
    def security_protocol(self) -> str:
        """The Kafka security protocol of ``port``: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""
        if self.sasl_users:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    def properties(self) -> dict[str, str]:
        """The broker's ``server.properties`` entries (values unescaped; PEM blocks span lines)."""
        listeners = f"PLAINTEXT://{self.host}:{self.internal_port},CONTROLLER://{self.host}:{self.controller_port}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        client = self.security_protocol
        if client != "PLAINTEXT":
            listeners = f"{client}://{self.host}:{self.port},{listeners}"
            protocols += f",{client}:{client}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}",
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        if self.sasl_users:
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
            props["sasl.enabled.mechanisms"] = "PLAIN"
            props[f"listener.name.{client.lower()}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        if self.tls is not None:
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.certificate.chain"] = self.tls.cert.read_text().strip()
            props["ssl.keystore.key"] = self.tls.key.read_text().strip()
            props["ssl.client.auth"] = "none"
            if self.tls.client_ca is not None:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.certificates"] = self.tls.client_ca.read_text().strip()
                props["ssl.client.auth"] = "required"
                # SASL_SSL listeners ignore the broker-wide setting (KIP-684): only the listener's own counts
                props[f"listener.name.{client.lower()}.ssl.client.auth"] = "required"
        props.update(self._extra)
        return props

    def _write_config(self) -> None:
        self.config_path.write_text("".join(f"{k}={_properties_value(v)}\n" for k, v in self.properties().items()))
        self.config_path.chmod(0o600)  # may hold a private key and SASL passwords
        self.log4j_path.write_text(
            "status = warn\n"
            # keep logging through Kafka's own shutdown hook instead of stopping in the middle of it
            "shutdownHook = disable\n"
            "appender.out.type = Console\n"
            "appender.out.name = OUT\n"
            "appender.out.target = SYSTEM_OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.out.ref = OUT\n"
            # the config dumps and per-request client chatter say nothing a test needs
            "logger.config.name = org.apache.kafka.common.config.AbstractConfig\n"
            "logger.config.level = WARN\n"
            "logger.clients.name = org.apache.kafka.clients\n"
            "logger.clients.level = WARN\n"
        )

    def _classpath(self) -> str:
        assert self.lib_dir is not None, "start() sets lib_dir"
        return f"{self.lib_dir}{os.sep}*"

    def _format_storage(self) -> None:
        """Format ``log.dirs`` as a standalone KRaft controller, as ``kafka-storage.sh format`` does."""
        cmd = [
            self.java(),
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            self._classpath(),
            KAFKA_STORAGE_MAIN,
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(self.config_path),
            "--standalone",
        ]
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, cwd=self._tmp, env=self.env()
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}\n")
        if res.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed (exit {res.returncode}):\n{res.stdout}{res.stderr}")

    def command(self) -> list[str]:
        return [
            self.java(),
            "-Xms64m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self._tmp / 'logs'}",
            "-cp",
            self._classpath(),
            KAFKA_MAIN,
            str(self.config_path),
        ]

    def ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        wait_for_port(self.host, self.port, self.start_timeout_s, self.proc)
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kafka exited with code {self.proc.returncode} before serving requests")
            if kafka_serves(self.host, self.internal_port):
                return
            time.sleep(0.2)
        raise RuntimeError(f"kafka did not serve Metadata requests within {self.start_timeout_s:.0f} s")

    def start(self) -> Self:
        if self.lib_dir is None:
            self.lib_dir = ensure_kafka_jars()
        self._write_config()
        if not (self.data_dir / "meta.properties").is_file():  # a restart keeps the formatted storage
            self._format_storage()
        return super().start()

    def stop(self, timeout_s: float = 30.0) -> None:
        # A controlled shutdown of a single KRaft node takes a few seconds; give it time before SIGKILL.
        super().stop(timeout_s)

    @property
    def url(self) -> str:
        """The Faust broker URL."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """The aiokafka bootstrap servers string."""
        return f"{self.host}:{self.port}"

    @property
    def internal_bootstrap(self) -> str:
        """The PLAINTEXT listener (``bootstrap`` unless ``sasl_users`` or ``tls`` secured ``port``)."""
        return f"{self.host}:{self.internal_port}"


class MosquittoBroker(EmbeddedBroker):
    """Eclipse mosquitto (Debian's ``mosquitto`` package) on loopback: anonymous and without persistence
    unless told otherwise.

    Parameters
    ----------
    port
        The listener port; a free one by default.
    log_dir
        Where the broker's log goes (``mosquitto-PORT.log``); the temporary directory by default.
    binary
        The mosquitto executable.
    persistence
        Save sessions and queued QoS 1 messages across a restart (``stop()`` then ``start()``).
    users
        Name → password: written as a ``mosquitto_passwd`` password file, anonymous clients refused.
    tls_cert, tls_key
        The server certificate and key (PEM): the listener speaks MQTT over TLS only.
    """

    name = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        *,
        binary: Path = Path("/usr/sbin/mosquitto"),
        persistence: bool = False,
        users: dict[str, str] | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        super().__init__(port, log_dir)
        self.binary = binary
        self.config_path = self._tmp / "mosquitto.conf"
        self.persistence = persistence
        self.users = dict(users or {})
        self.tls_cert, self.tls_key = tls_cert, tls_key

    def resolve_binary(self) -> Path:
        """The mosquitto executable: ``binary`` if it exists, else ``mosquitto`` on ``PATH``.

        Raises
        ------
        RuntimeError
            If neither exists, telling how to install it.
        """
        if self.binary.is_file():
            return self.binary
        found = shutil.which("mosquitto")
        if found is None:
            raise RuntimeError(f"mosquitto not found at {self.binary} nor on PATH: apt-get install -y mosquitto")
        return Path(found)

    def start(self) -> Self:
        self.binary = self.resolve_binary()  # fail before the base class opens the log
        return super().start()

    def command(self) -> list[str]:
        lines = [f"listener {self.port} {self.host}"]
        if self.tls_cert and self.tls_key:
            lines += [f"certfile {self.tls_cert}", f"keyfile {self.tls_key}"]
        if self.users:
            pw = self._tmp / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self._tmp}/",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            # As root mosquitto switches to the `mosquitto` user, which cannot read our temp dir; stay root.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")
        return [str(self.binary), "-c", str(self.config_path)]

    @property
    def url(self) -> str:
        """The MQTT URL."""
        return f"mqtt://{self.host}:{self.port}"
