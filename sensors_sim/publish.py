"""Where simulated device events go: an MQTT broker (as field devices would), a JSONL file, or Kafka.

Every publisher has the same interface (:class:`Publisher`): ``publish(event)``, ``flush()`` and
``close()``, and works as a context manager (``close()`` on exit). Payloads are the event's compact JSON
(orjson), the same bytes as a line of the SUMO harness's ``events.jsonl``; a
:class:`~sensors_sim.events.RawEvent` (a faulty device's malformed payload) is sent as its raw bytes, to the
topic / with the key of its device.

**Device status over MQTT.** Field devices each hold an MQTT session with a last will. The simulator
publishes for many devices over one connection, which can carry only one will, so:

- :meth:`MqttPublisher.announce` publishes one *retained* ``{"status":"online"}`` per device to
  ``{topic_root}/{city}/{loop|camera}/{id}/status`` (``simulate`` calls it at the start);
- the connection's own will is ``{"status":"offline"}`` (retained) on
  ``{topic_root}/{city}/sim/{client_id}/status``, where ``{"status":"online"}`` is published (retained) on
  connect. If the simulator dies, the broker sends that will: a subscriber learns that every device announced
  by that client went offline with it;
- a clean :meth:`MqttPublisher.close` publishes ``{"status":"offline"}`` (retained) for the client and for
  every announced device.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensors_sim.events import Event, event_bytes, event_device

_T = TypeVar("_T")


class Publisher(Protocol):
    """What :func:`sensors_sim.run.simulate` needs from a sink."""

    def publish(self, event: Event) -> None:
        """Send one event, or a raw payload (may be buffered).

        Parameters
        ----------
        event : dict or RawEvent
            A device-schema-v1 event, or raw bytes with their device.
        """
        ...

    def flush(self) -> None:
        """Block until every event published so far is delivered."""
        ...

    def close(self) -> None:
        """Flush and release the connection or file."""
        ...


class _ContextManager:
    def close(self) -> None:  # pragma: no cover - overridden
        """Release the sink."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def device_topic(event: Event, city: str, topic_root: str = "city") -> str:
    """The MQTT topic of a device event: ``{topic_root}/{city}/{loop|camera}/{detector_id|camera_id}``.

    Parameters
    ----------
    event : dict or RawEvent
        A loop or camera event, or a raw payload of such a device.
    city : str
        City id.
    topic_root : str
        First topic level.

    Returns
    -------
    str
        The topic.
    """
    kind, dev, _ = event_device(event)
    return f"{topic_root}/{city}/{kind}/{dev}"


def status_topic(kind: str, device_id: str, city: str, topic_root: str = "city") -> str:
    """The retained status topic of a device: ``{topic_root}/{city}/{kind}/{device_id}/status``.

    Parameters
    ----------
    kind : str
        ``loop``, ``camera`` (or ``sim`` for the simulator's own client).
    device_id : str
        Device (or MQTT client) id.
    city : str
        City id.
    topic_root : str
        First topic level.

    Returns
    -------
    str
        The topic.
    """
    return f"{topic_root}/{city}/{kind}/{device_id}/status"


ONLINE = b'{"status":"online"}'
OFFLINE = b'{"status":"offline"}'


class MqttPublisher(_ContextManager):
    """Publish each event to its device topic with paho-mqtt 2.x (MQTT 3.1.1).

    The network loop runs in paho's background thread. At most 100 messages are in flight; at most
    ``max_pending`` unacknowledged messages are kept, beyond that :meth:`publish` waits for the oldest.
    Messages published while the connection is down are queued by paho and sent after it reconnects.
    Device status (retained online messages, the client's last will) is described in the module docstring.

    Parameters
    ----------
    host : str
        Broker host.
    port : int
        Broker port.
    city : str
        City id in the topic.
    topic_root : str
        First topic level.
    qos : int
        MQTT QoS (0, 1 or 2).
    username, password : str, optional
        Broker credentials.
    client_id : str, optional
        MQTT client id; default ``citybrain-sim-<random>``.
    timeout_s : float
        Seconds to wait for the connection, and for acknowledgements in :meth:`flush`.
    max_pending : int
        Unacknowledged messages kept before :meth:`publish` blocks.
    offline_on_close : bool
        On :meth:`close`, publish a retained offline status for the client and every announced device.

    Raises
    ------
    ConnectionError
        If the broker refuses the connection or does not answer within ``timeout_s``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        city: str,
        topic_root: str = "city",
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        *,
        timeout_s: float = 30.0,
        max_pending: int = 10_000,
        offline_on_close: bool = True,
    ) -> None:
        self.city = city
        self.topic_root = topic_root
        self.qos = qos
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()
        self._connected = threading.Event()
        self._refused: str | None = None
        self.offline_on_close = offline_on_close
        self.client_id = client_id or f"citybrain-sim-{uuid.uuid4().hex[:8]}"
        self.announced: list[tuple[str, str]] = []
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
        )
        self.sim_status_topic = status_topic("sim", self.client_id, city, topic_root)
        self._client.will_set(self.sim_status_topic, OFFLINE, qos=1, retain=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(100)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        try:
            self._client.connect(host, port)
        except OSError as exc:
            raise ConnectionError(f"MQTT broker {host}:{port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s) or self._refused:
            self._client.loop_stop()
            self._client.disconnect()
            raise ConnectionError(f"MQTT broker {host}:{port}: {self._refused or 'no CONNACK'}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        else:  # (re)connected: the will may have marked this client offline meanwhile
            client.publish(self.sim_status_topic, ONLINE, self.qos, retain=True)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()

    def publish(self, event: Event) -> None:
        """Publish one event (its JSON) or raw payload (its bytes) to its device topic.

        Parameters
        ----------
        event : dict or RawEvent
            A loop or camera event, or a raw payload.

        Raises
        ------
        TimeoutError
            If the oldest of ``max_pending`` messages is not acknowledged within ``timeout_s``.
        """
        self._send(device_topic(event, self.city, self.topic_root), event_bytes(event))

    def announce(self, devices: Iterable[tuple[str, str]]) -> None:
        """Publish a retained ``{"status":"online"}`` on each device's status topic.

        Parameters
        ----------
        devices : iterable of (str, str)
            ``(type, id)`` of each device (``loop``/``camera``).
        """
        for kind, did in devices:
            self._send(status_topic(kind, did, self.city, self.topic_root), ONLINE, retain=True)
            self.announced.append((kind, did))

    def _send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        while self._pending and self._pending[0].is_published():
            self._pending.popleft()
        if len(self._pending) >= self.max_pending:
            self._wait(self._pending.popleft(), self.timeout_s)
        info = self._client.publish(topic, payload, self.qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            # paho keeps the message queued and sends it after reconnecting; wait_for_publish would
            # otherwise raise on this return code.
            info.rc = mqtt.MQTT_ERR_SUCCESS
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
        if self.qos > 0:
            self._pending.append(info)

    @staticmethod
    def _wait(info: mqtt.MQTTMessageInfo, timeout_s: float) -> None:
        info.wait_for_publish(max(timeout_s, 0.0))
        if not info.is_published():
            raise TimeoutError(f"MQTT message {info.mid} not acknowledged within {timeout_s:.1f} s")

    def flush(self) -> None:
        """Block until the broker has acknowledged every message published so far.

        Raises
        ------
        TimeoutError
            If some message is not acknowledged within ``timeout_s`` (from the start of the call).
        """
        deadline = time.monotonic() + self.timeout_s
        while self._pending:
            self._wait(self._pending[0], deadline - time.monotonic())
            self._pending.popleft()

    def close(self) -> None:
        """Publish the offline statuses (``offline_on_close``), flush, disconnect, stop the network thread."""
        try:
            if self.offline_on_close:
                for kind, did in self.announced:
                    self._send(status_topic(kind, did, self.city, self.topic_root), OFFLINE, retain=True)
                self._send(self.sim_status_topic, OFFLINE, retain=True)
            self.flush()
        finally:
            self._client.disconnect()
            self._client.loop_stop()


class JsonlPublisher(_ContextManager):
    """Write each event as one JSON line to a file (created or truncated).

    Parameters
    ----------
    path : str or pathlib.Path
        Output file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("wb")

    def publish(self, event: Event) -> None:
        """Append one event line (a raw payload's bytes as they are).

        Parameters
        ----------
        event : dict or RawEvent
            The message.
        """
        self._file.write(event_bytes(event) + b"\n")

    def flush(self) -> None:
        """Flush the file buffer to the operating system."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


class KafkaPublisher(_ContextManager):
    """Produce each event's JSON to a Kafka topic, keyed by ``segment_id``, with aiokafka.

    The producer lives in an asyncio loop on a background thread. :meth:`publish` waits until the record
    is in the producer's batch (so records keep their order); delivery is confirmed by :meth:`flush`.

    Parameters
    ----------
    bootstrap : str
        Bootstrap servers, ``host:port[,host:port...]``.
    topic : str
        Topic to produce to (citybrain's raw ``ingest`` topic).
    timeout_s : float
        Seconds to wait for the producer to start, for one record to be accepted, and in :meth:`flush`.
    **producer_options : Any
        Further ``aiokafka.AIOKafkaProducer`` arguments (security settings, ``max_batch_size``, ...).
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 30.0, **producer_options: Any) -> None:
        from aiokafka import AIOKafkaProducer

        self.topic = topic
        self.timeout_s = timeout_s
        self._delivery: deque[asyncio.Future[Any]] = deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sensors-sim-kafka", daemon=True)
        self._thread.start()

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            return producer

        try:
            self._producer = self._run(start())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        fut: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(self.timeout_s)

    async def _send(self, key: bytes, value: bytes) -> None:
        while self._delivery and self._delivery[0].done():
            self._delivery.popleft().result()  # raises a delivery error
        self._delivery.append(await self._producer.send(self.topic, value=value, key=key))

    async def _flush(self) -> None:
        await self._producer.flush()
        while self._delivery:
            await self._delivery.popleft()

    def publish(self, event: Event) -> None:
        """Hand one event (its JSON) or raw payload (its bytes) to the producer, keyed by segment.

        Parameters
        ----------
        event : dict or RawEvent
            The message.

        Raises
        ------
        aiokafka.errors.KafkaError
            If an earlier record failed delivery.
        TimeoutError
            If the producer does not accept the record within ``timeout_s``.
        """
        self._run(self._send(event_device(event)[2].encode(), event_bytes(event)))

    def flush(self) -> None:
        """Block until every record handed over so far is acknowledged by the broker.

        Raises
        ------
        aiokafka.errors.KafkaError
            If a record failed delivery.
        TimeoutError
            If this takes longer than ``timeout_s``.
        """
        self._run(self._flush())

    def close(self) -> None:
        """Flush, stop the producer and its thread."""
        try:
            self.flush()
        finally:
            try:
                self._run(self._producer.stop())
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout_s)
        self._loop.close()
