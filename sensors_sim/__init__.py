"""A minimal device simulator: a macroscopic traffic state observed by loops and cameras (device schema v1).

>>> import roadnet, datetime as dt
>>> from sensors_sim import JsonlPublisher, simulate
>>> with JsonlPublisher("events.jsonl") as pub:  # doctest: +SKIP
...     simulate(roadnet.grid_city(), pub, start=dt.datetime(2025, 1, 6, 7, 30, tzinfo=dt.UTC),
...              duration_s=3600, speed=0)
"""

from sensors_sim.devices import DeviceBank
from sensors_sim.publish import JsonlPublisher, KafkaPublisher, MqttPublisher, Publisher, device_topic
from sensors_sim.run import iter_ticks, simulate
from sensors_sim.traffic import TrafficState

__all__ = [
    "DeviceBank",
    "JsonlPublisher",
    "KafkaPublisher",
    "MqttPublisher",
    "Publisher",
    "TrafficState",
    "device_topic",
    "iter_ticks",
    "simulate",
]
