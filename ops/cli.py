"""The ``citybrain`` command (also ``python -m ops``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from ops.settings import Settings, load_settings
from ops.sumo_cmd import sumo_twin

app = typer.Typer(
    name="citybrain",
    help="Real-time traffic stream processor: devices → MQTT/Kafka → live segment state.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state: dict[str, Any] = {"config": None}

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (also CITYBRAIN_CONFIG)", exists=True, dir_okay=False),
]


@app.callback()
def _main(config: ConfigOpt = None) -> None:
    _state["config"] = config


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(_state["config"], **overrides)
    except Exception as exc:  # pydantic ValidationError, missing file: say which setting and stop
        typer.echo(f"citybrain: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    from ops.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(json.dumps(_settings().masked(), indent=2))


@app.command()
def worker() -> None:
    """Run a stream worker (Faust) against the configured Kafka cluster. SIGTERM drains and stops."""
    import faust

    from ops.logs import logging_dict_config
    from ops.runtime import load_network
    from streams.app import build_app
    from streams.topics import bootstrap_of, ensure_topics

    s = _settings()
    if not s.kafka.brokers:
        typer.echo(
            "citybrain worker needs kafka.brokers (CITYBRAIN_KAFKA__BROKERS); `citybrain demo` starts one",
            err=True,
        )
        raise typer.Exit(2)
    _check_open_api(s)
    (s.data_dir / s.app_id).mkdir(parents=True, exist_ok=True)
    graph = load_network(s.network)
    # Faust only declares its internal topics; the source and output topics must exist (with the configured
    # partition count) before the consumer subscribes, or it ignores them.
    asyncio.run(ensure_topics(bootstrap_of(s.kafka.brokers), s.topics.all_names(), s))
    pipe = build_app(s, graph)
    w = faust.Worker(
        pipe.app,
        loglevel=s.log_level,
        logging_config=logging_dict_config(s.log_level, s.log_format),
        redirect_stdouts=False,
    )
    w.execute_from_commandline()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_open_api(s: Settings) -> None:
    """Without ``auth.users`` the API is open: refuse any address but loopback, and say so at start."""
    if s.auth.users:
        typer.echo(f"citybrain worker: API and console with token auth ({len(s.auth.users)} users)", err=True)
        return
    if not _is_loopback(s.web_host):
        typer.echo(
            f"citybrain worker: refusing to serve the API without authentication on {s.web_host}: anyone who "
            "reaches that address could act as an operator. Set auth.users (CITYBRAIN_AUTH__USERS) or keep "
            "web_host on loopback (127.0.0.1).",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(
        f"citybrain worker: API and console without authentication, on {s.web_host} (loopback) only; "
        "operator actions are recorded as 'unauthenticated'. Set auth.users to require tokens.",
        err=True,
    )


@app.command()
def bridge() -> None:
    """Run the MQTT → Kafka bridge. SIGTERM stops intake, flushes Kafka and acks what was produced.

    Exit status: 0 stopped, 2 invalid settings, other: crashed (a supervisor restarts it; docs/operations.md)."""
    from ops.bridge_main import BridgeConfigError, run_bridge

    s = _settings()
    _logging(s)
    try:
        asyncio.run(run_bridge(s))
    except BridgeConfigError as exc:
        typer.echo(f"citybrain bridge: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def brokers() -> None:
    """Start the embedded brokers (Tansu Kafka + amqtt MQTT) and print their addresses until Ctrl-C."""
    from ops.runtime import Stack

    s = _settings()
    with Stack(s, Path(".cache/citybrain/logs")) as stack:
        eff = stack.start_brokers()
        typer.echo(f"Kafka: {eff.kafka.brokers}\nMQTT:  {eff.mqtt.host}:{eff.mqtt.port}\nCtrl-C stops them.")
        _wait_for_signal()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


@app.command()
def demo(
    network: Annotated[Path | None, typer.Option(help="traffic-net/1.0 JSON; default: a generated 4x4 city")] = None,
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 10.0,
    web_port: Annotated[int, typer.Option(help="worker web port")] = 6066,
    scenario: Annotated[
        Path | None, typer.Option(help="scenario JSON (default for the demo city: an incident and a few faulty loops)")
    ] = None,
    apply_recommendations: Annotated[
        bool, typer.Option(help="closed loop: the simulated lights run citybrain's signal recommendations")
    ] = True,
) -> None:
    """Start brokers, worker, bridge and a simulated city publishing over MQTT; Ctrl-C stops everything."""
    from ops.runtime import Stack, load_network
    from sensors_sim.publish import MqttPublisher
    from sensors_sim.run import simulate
    from sensors_sim.scenario import load_scenario

    s = _settings(network=network) if network else _settings()
    # simulated time runs `speed` times faster: idle means "quiet for longer than a reporting interval"
    s = s.model_copy(
        update={"window": s.window.model_copy(update={"idle_close_s": max(2.0, s.window.idle_close_s / speed)})}
    )
    log_dir = Path(".cache/citybrain/logs")
    t0 = time.monotonic()
    graph = load_network(s.network)
    with Stack(s, log_dir) as stack:
        eff = stack.start_brokers()
        w = stack.start_worker(web_port=web_port)
        b = stack.start_bridge()
        stack.wait_healthy(w)
        stack.wait_healthy(b)
        # a bridge that exits is restarted with backoff, logged and counted (production: systemd, docs/operations.md)
        bridge_sup = stack.supervise_bridge(report=lambda line: typer.echo(f"citybrain demo: {line}", err=True))
        eff = stack.settings
        stop = threading.Event()
        pub = MqttPublisher(
            eff.mqtt.host,
            eff.mqtt.port,
            eff.city,
            topic_root=eff.mqtt.topic_root,
            client_id="citybrain-demo-sim",
        )
        # simulated time starts yesterday 06:30 UTC so accelerated time stays in the past (future stamps are clock skew)
        start = (datetime.now(UTC) - timedelta(days=1)).replace(hour=6, minute=30, second=0, microsecond=0)
        if scenario is None and network is None and s.network is None:
            scenario = Path(__file__).resolve().parents[1] / "sensors_sim" / "scenarios" / "demo.json"
        sc = load_scenario(scenario) if scenario else None
        loop: dict[str, Any] = {}
        if apply_recommendations:  # closed loop: recommendations → the simulated lights at their next cycle
            from ops.sumo_cmd import recommendation_subscriber
            from sensors_sim.recommendations import simulator_plans
            from sensors_sim.run import Simulator

            sub = recommendation_subscriber(eff)
            loop["simulator"] = Simulator(graph, start, scenario=sc)
            loop["plans"] = simulator_plans(loop["simulator"], sub.inbox)
        sim = threading.Thread(
            target=simulate,
            args=(graph, pub),
            kwargs={"start": start, "duration_s": None, "speed": speed, "stop": stop, "scenario": sc, **loop},
            daemon=True,
        )
        sim.start()
        url = f"http://127.0.0.1:{w.web_port}"  # type: ignore[attr-defined]
        typer.echo(
            f"\ncitybrain demo is up in {time.monotonic() - t0:.1f} s — {graph.number_of_edges()} segments, "
            f"{len(graph.graph['detectors'])} detectors, simulated at {speed:g}x from {start:%Y-%m-%d %H:%M} UTC\n"
            f"  console             : {url}/   (first windows close after ~{90 / speed + 2:.0f} s)\n"
            f"  live segment states : {url}/api/snapshot   (API: {url}/api/openapi.json)\n"
            f"  worker metrics      : {url}/metrics   health: {url}/health\n"
            + (
                ""
                if eff.auth.users
                else "  no authentication   : loopback only, actions by 'unauthenticated' (docs/api-security.md)\n"
            )
            + f"  bridge metrics      : http://127.0.0.1:{b.web_port}/metrics\n"  # type: ignore[attr-defined]
            f"  Kafka {eff.kafka.brokers}   MQTT {eff.mqtt.host}:{eff.mqtt.port}   logs: {log_dir}/\n"
            f"  tail the stream     : CITYBRAIN_KAFKA__BROKERS={eff.kafka.brokers} .venv/bin/citybrain tail\n"
            "Ctrl-C stops everything.",
        )
        try:
            _wait_for_signal()
        finally:
            n = bridge_sup.restarts
            restarts = f" (the bridge was restarted {n} time{'s' if n > 1 else ''})" if n else ""
            typer.echo(f"stopping…{restarts}")
            stop.set()
            sim.join(10)
            pub.close()
            if apply_recommendations:
                from ops.sumo_cmd import plan_summary

                sub.close()
                typer.echo(plan_summary(sub.inbox.stats))


@app.command()
def tail(
    topic: Annotated[str, typer.Option(help="which topic: segment_state or dead_letter")] = "segment_state",
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest record")] = False,
    limit: Annotated[int, typer.Option(help="stop after N records (0 = never)")] = 0,
) -> None:
    """Print records of an output topic as JSON lines."""
    from aiokafka import AIOKafkaConsumer

    from streams.topics import bootstrap_of, kafka_client_kwargs

    s = _settings()
    if not s.kafka.brokers:
        typer.echo("set CITYBRAIN_KAFKA__BROKERS (the demo prints it)", err=True)
        raise typer.Exit(2)

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            s.topics.name(topic),
            bootstrap_servers=bootstrap_of(s.kafka.brokers),
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=False,
            **kafka_client_kwargs(s),
        )
        await consumer.start()
        n = 0
        try:
            async for msg in consumer:
                sys.stdout.write((msg.value or b"").decode() + "\n")
                sys.stdout.flush()
                n += 1
                if limit and n >= limit:
                    break
        finally:
            await consumer.stop()

    asyncio.run(run())


@app.command()
def replay(
    network: Annotated[Path, typer.Option(help="traffic-net/1.0 JSON of the events' network", exists=True)],
    events: Annotated[Path, typer.Option(help="device events, JSON lines (device schema v1)", exists=True)],
    states_out: Annotated[Path, typer.Option(help="write every segment-state here as JSON lines")],
    via: Annotated[str, typer.Option(help="mqtt (as devices would) or kafka (devices producing to Kafka)")] = "mqtt",
    timeout_s: Annotated[float, typer.Option(help="give up when nothing progresses for this long")] = 120.0,
    keep_logs: Annotated[Path | None, typer.Option(help="folder for the worker/bridge/broker logs")] = None,
    faults: Annotated[float, typer.Option(help="share of loops made faulty first (silent/stuck), 0-1")] = 0.0,
    fault_seed: Annotated[int, typer.Option(help="which loops (seed)")] = 1,
    dead_letters_out: Annotated[Path | None, typer.Option(help="write the dead-lettered records here (JSONL)")] = None,
    alarms_out: Annotated[
        Path | None, typer.Option(help="write every raised incident as {ts, segment_id, lane} (JSONL)")
    ] = None,
    alerts_out: Annotated[
        Path | None, typer.Option(help="write every alert (incidents with their evidence, device faults) (JSONL)")
    ] = None,
) -> None:
    """Push an events file through the real pipeline (brokers, bridge, worker) and write every segment-state.

    Exits non-zero if any event is unaccounted for (accounted = readings in emitted windows + dead letters).
    """
    from ops.replay import run_replay

    if via not in ("mqtt", "kafka"):
        typer.echo("--via must be mqtt or kafka", err=True)
        raise typer.Exit(2)
    s = _settings(network=network)
    result = run_replay(
        s,
        events,
        states_out,
        via=via,
        timeout_s=timeout_s,
        log_dir=keep_logs,
        faults=faults,
        fault_seed=fault_seed,
        dead_letters_out=dead_letters_out,
        alarms_out=alarms_out,
        alerts_out=alerts_out,
    )
    typer.echo(json.dumps(result, indent=2))
    if result["unaccounted"] != 0:
        raise typer.Exit(1)


def make_publisher(publish: str, out: Path, s: Settings) -> Any:
    """The device publisher for ``--publish file|mqtt|kafka`` (simulate, sumo-twin); exits 2 with the setting
    to fix when the broker it needs is not configured."""
    from sensors_sim.publish import JsonlPublisher, KafkaPublisher, MqttPublisher
    from streams.topics import bootstrap_of

    if publish == "file":
        return JsonlPublisher(out)
    if publish == "mqtt":
        if not s.mqtt.host:
            typer.echo("set CITYBRAIN_MQTT__HOST/PORT", err=True)
            raise typer.Exit(2)
        return MqttPublisher(s.mqtt.host, s.mqtt.port, s.city, topic_root=s.mqtt.topic_root)
    if publish == "kafka":
        if not s.kafka.brokers:
            typer.echo("set CITYBRAIN_KAFKA__BROKERS", err=True)
            raise typer.Exit(2)
        return KafkaPublisher(bootstrap_of(s.kafka.brokers), s.topics.name("ingest"))
    typer.echo("--publish must be mqtt, kafka or file", err=True)
    raise typer.Exit(2)


@app.command()
def simulate(
    network: Annotated[Path | None, typer.Option(help="traffic-net/1.0 JSON; default: the generated demo city")] = None,
    publish: Annotated[str, typer.Option(help="mqtt, kafka or file")] = "file",
    out: Annotated[Path, typer.Option(help="with --publish file: the JSONL path")] = Path("events.jsonl"),
    speed: Annotated[float, typer.Option(help="simulated s per wall s; 0 = as fast as possible")] = 0.0,
    duration_s: Annotated[float, typer.Option(help="simulated seconds")] = 3600.0,
    start: Annotated[str, typer.Option(help="simulated start, ISO UTC")] = "2025-01-06T07:00:00Z",
    seed: Annotated[int | None, typer.Option(help="default: the scenario's seed, else 0")] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(help="scenario JSON: demand, incidents, faults, signal plans (docs/simulator.md)", exists=True),
    ] = None,
    truth_dir: Annotated[
        Path | None,
        typer.Option(help="write ground truth here (ground_truth_edges.jsonl, incidents.json, device_faults.jsonl)"),
    ] = None,
    apply_recommendations: Annotated[
        bool, typer.Option(help="closed loop: apply citybrain's signal-recommendations (Kafka) to the lights")
    ] = False,
) -> None:
    """Simulate the network's loop detectors and cameras and publish their events like real devices."""
    from ops.runtime import load_network
    from sensors_sim.run import simulate as run_sim
    from sensors_sim.scenario import load_scenario

    s = _settings()
    graph = load_network(network or s.network)
    pub = make_publisher(publish, out, s)
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    last = [0.0]

    def progress(n: int, ts: datetime) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            done = (ts - t0).total_seconds() / duration_s if duration_s else 0
            typer.echo(f"\r{n:>9,} events  simulated {ts:%H:%M:%S}  {done:6.1%}", err=True, nl=False)

    sc = load_scenario(scenario) if scenario else None
    loop: dict[str, Any] = {}
    if apply_recommendations:  # closed loop: recommendations → the simulated lights at their next cycle
        from ops.sumo_cmd import plan_summary, recommendation_subscriber
        from sensors_sim.recommendations import simulator_plans
        from sensors_sim.run import Simulator

        sub = recommendation_subscriber(s)
        loop["simulator"] = Simulator(graph, t0, seed=seed, scenario=sc)
        loop["plans"] = simulator_plans(loop["simulator"], sub.inbox)
    n = run_sim(
        graph,
        pub,
        start=t0,
        duration_s=duration_s,
        speed=speed,
        seed=seed,
        on_progress=progress,
        scenario=sc,
        truth_dir=truth_dir,
        **loop,
    )
    pub.flush()
    pub.close()
    typer.echo(f"\n{n} events published ({publish})", err=True)
    if apply_recommendations:
        sub.close()
        typer.echo(plan_summary(sub.inbox.stats), err=True)


@app.command()
def route(
    origin: Annotated[str, typer.Argument(help="origin intersection id")],
    destination: Annotated[str, typer.Argument(help="destination intersection id")],
    url: Annotated[str, typer.Option(help="a worker's web address")] = "http://127.0.0.1:6066",
    token: Annotated[str | None, typer.Option(help="API token (viewer)", envvar="CITYBRAIN_TOKEN")] = None,
) -> None:
    """Fastest route between two intersections and its expected travel time, from the live state."""
    import urllib.error
    import urllib.parse
    import urllib.request

    q = urllib.parse.urlencode({"from": origin, "to": destination})
    req = urllib.request.Request(
        f"{url.rstrip('/')}/api/route?{q}", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            res = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        typer.echo(f"citybrain route: {json.loads(exc.read() or b'{}').get('error', exc)}", err=True)
        raise typer.Exit(1) from None
    free = res["free_flow_travel_time_s"]
    typer.echo(
        f"{origin} → {destination}: {res['travel_time_s']:.0f} s expected (free flow {free:.0f} s), "
        f"{res['length_m'] / 1000:.2f} km via {' '.join(res['segments'])}"
    )


@app.command()
def greenwave(
    origin: Annotated[str, typer.Argument(help="origin intersection id")],
    destination: Annotated[str, typer.Argument(help="destination intersection id")],
    depart: Annotated[float | None, typer.Option(help="departure, Unix s (default now)")] = None,
    url: Annotated[str, typer.Option(help="a worker's web address")] = "http://127.0.0.1:6066",
    token: Annotated[str | None, typer.Option(help="API token (viewer)", envvar="CITYBRAIN_TOKEN")] = None,
) -> None:
    """Emergency green wave: route on the live graph and a temporary plan for each signal on it."""
    import urllib.error
    import urllib.parse
    import urllib.request

    q = {"from": origin, "to": destination} | ({"depart": str(depart)} if depart is not None else {})
    req = urllib.request.Request(
        f"{url.rstrip('/')}/api/greenwave?{urllib.parse.urlencode(q)}",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            plan = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        typer.echo(f"citybrain greenwave: {json.loads(exc.read() or b'{}').get('error', exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"route {' '.join(plan['route'])}: {plan['arrival_s'] - plan['departure_s']:.0f} s, "
        f"{'green all the way' if plan['all_green'] else 'some waits'} (computed in {1000 * plan['compute_s']:.0f} ms)"
    )
    for a in plan["actions"]:
        typer.echo(f"  {json.dumps(a)}")


app.command("sumo-twin")(sumo_twin)

net_app = typer.Typer(help="Road networks: inspect and convert.", no_args_is_help=True)
app.add_typer(net_app, name="net")


@net_app.command("info")
def net_info(
    path: Annotated[Path, typer.Argument(help="network file (format from its name/content)", exists=True)],
) -> None:
    """Print a summary of a road network file."""
    from ops.net_cmd import info

    typer.echo(info(path))


@net_app.command("export")
def net_export(
    path: Annotated[Path, typer.Argument(help="network file", exists=True)],
    out: Annotated[Path, typer.Option(help="output traffic-net/1.0 JSON")] = Path("network.json"),
    geojson: Annotated[Path | None, typer.Option(help="also write GeoJSON (RFC 7946, lon/lat)")] = None,
) -> None:
    """Convert a network to traffic-net/1.0 JSON (and GeoJSON for maps)."""
    from ops.net_cmd import export

    typer.echo(export(path, out, geojson))


@app.command()
def controller(
    stdio: Annotated[
        bool, typer.Option("--stdio", help="speak the JSON-lines controller protocol on stdin/stdout")
    ] = False,
    network: Annotated[
        Path | None, typer.Option(help="traffic-net/1.0 JSON (default: settings, then $SUMO_SCENARIO)")
    ] = None,
) -> None:
    """Signal controller using the production signal-timing model (closed-loop evaluation protocol)."""
    from ops.controller import run_stdio

    if not stdio:
        typer.echo("only --stdio is supported: see `citybrain controller --help`", err=True)
        raise typer.Exit(2)
    run_stdio(network or _settings().network)


def main() -> None:
    """Console-script entry point: a bad network file or Kafka TLS file is one clear line, not a traceback."""
    from roadnet import RoadnetError
    from streams.topics import KafkaSslError

    os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    # SIGTERM unwinds like Ctrl-C, so commands that started brokers and children (replay, demo) stop them
    # (the worker and bridge install their own draining handlers later)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        app()
    except (RoadnetError, KafkaSslError) as exc:
        typer.echo(f"citybrain: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
