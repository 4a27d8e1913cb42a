"""A city of simulated devices on any road graph: a mesoscopic traffic model observed by loops and cameras.

The traffic is a cell-transmission model (:mod:`sensors_sim.traffic`) with signals, turning ratios,
time-of-day demand and incidents; devices (:mod:`sensors_sim.devices`) emit device-schema-v1 events, faulty
ones as configured (:mod:`sensors_sim.faults`); the ground truth (:mod:`sensors_sim.truth`) comes in the SUMO
harness's formats. See ``docs/simulator.md``.

>>> import roadnet, datetime as dt
>>> from sensors_sim import JsonlPublisher, simulate
>>> with JsonlPublisher("events.jsonl") as pub:  # doctest: +SKIP
...     simulate(roadnet.grid_city(), pub, start=dt.datetime(2025, 1, 6, 7, 30, tzinfo=dt.UTC),
...              duration_s=3600, speed=0, truth_dir="truth")
"""

from sensors_sim.devices import DeviceBank
from sensors_sim.events import Event, RawEvent
from sensors_sim.faults import Fault, FaultInjector, apply_faults, choose_faults
from sensors_sim.publish import JsonlPublisher, KafkaPublisher, MqttPublisher, Publisher, device_topic, status_topic
from sensors_sim.recommendations import PlanInbox, RecommendationSubscriber, simulator_plans
from sensors_sim.run import Simulator, iter_ticks, simulate
from sensors_sim.scenario import DemandSpec, IncidentSpec, Scenario, load_scenario
from sensors_sim.traffic import TrafficModel

__all__ = [
    "DemandSpec",
    "DeviceBank",
    "Event",
    "Fault",
    "FaultInjector",
    "IncidentSpec",
    "JsonlPublisher",
    "KafkaPublisher",
    "MqttPublisher",
    "PlanInbox",
    "Publisher",
    "RawEvent",
    "RecommendationSubscriber",
    "Scenario",
    "Simulator",
    "TrafficModel",
    "apply_faults",
    "choose_faults",
    "device_topic",
    "iter_ticks",
    "load_scenario",
    "simulate",
    "simulator_plans",
    "status_topic",
]
