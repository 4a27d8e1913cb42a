"""``citybrain sumo-twin``: a SUMO scenario as the city (``sensors_sim.sumo_twin``), and the closed-loop subscriber.

:func:`recommendation_subscriber` starts the consumer of citybrain's ``signal-recommendations`` topic from the
settings; ``citybrain simulate --apply-recommendations``, ``citybrain demo`` and ``citybrain sumo-twin
--apply-recommendations`` use it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ops.settings import Settings
    from sensors_sim.recommendations import PlanStats, RecommendationSubscriber


def recommendation_subscriber(settings: Settings) -> RecommendationSubscriber:
    """Start a consumer of the configured ``signal-recommendations`` topic (no group, from the latest offset).

    Parameters
    ----------
    settings : Settings
        citybrain settings (``kafka.brokers``, security, ``topics``).

    Returns
    -------
    RecommendationSubscriber
        Started; its ``inbox`` receives the plans.

    Raises
    ------
    typer.Exit
        With code 2 when no Kafka broker is configured or it cannot be reached.
    """
    from sensors_sim.recommendations import RecommendationSubscriber
    from streams.topics import bootstrap_of, kafka_client_kwargs

    if not settings.kafka.brokers:
        typer.echo("--apply-recommendations needs kafka.brokers (CITYBRAIN_KAFKA__BROKERS)", err=True)
        raise typer.Exit(2)
    sub = RecommendationSubscriber(
        bootstrap_of(settings.kafka.brokers),
        settings.topics.name("recommendations"),
        **kafka_client_kwargs(settings),
    )
    try:
        return sub.start()
    except ConnectionError as exc:
        typer.echo(f"citybrain: {exc}", err=True)
        raise typer.Exit(2) from None


def plan_summary(stats: PlanStats) -> str:
    """One line: recommendations received, applied, rejected (and the last reason).

    Parameters
    ----------
    stats : PlanStats
        The closed loop's counts.

    Returns
    -------
    str
        Summary.
    """
    line = f"recommendations: {stats.received} received, {stats.applied} applied, {stats.rejected} rejected"
    if stats.installed:
        line += f", {stats.installed} installed"
    if stats.reasons:
        line += f" (last rejection: {stats.reasons[-1]})"
    return line


def sumo_twin(
    sumocfg: Annotated[Path | None, typer.Option(help="SUMO configuration (.sumocfg)", exists=True)] = None,
    net: Annotated[
        Path | None, typer.Option(help="SUMO .net.xml (instead of the configuration's)", exists=True)
    ] = None,
    routes: Annotated[list[Path] | None, typer.Option(help="route file(s) added to the configuration's")] = None,
    network: Annotated[
        Path | None,
        typer.Option(help="citybrain's road network (default: the SUMO .net.xml, so segment ids match)", exists=True),
    ] = None,
    publish: Annotated[str, typer.Option(help="mqtt, kafka or file")] = "file",
    out: Annotated[Path, typer.Option(help="with --publish file: the JSONL path")] = Path("events.jsonl"),
    speed: Annotated[float, typer.Option(help="simulated s per wall s; 0 = as fast as possible")] = 0.0,
    duration_s: Annotated[
        float | None, typer.Option(help="simulated seconds (default: until SUMO has no vehicles left)")
    ] = None,
    start: Annotated[str, typer.Option(help="wall-clock time of SUMO t = 0, ISO UTC")] = "2025-01-06T07:00:00Z",
    apply_recommendations: Annotated[
        bool, typer.Option(help="closed loop: install citybrain's signal-recommendations on SUMO's lights")
    ] = False,
    backend: Annotated[str, typer.Option(help="auto (libsumo, else traci), libsumo or traci")] = "auto",
    seed: Annotated[int | None, typer.Option(help="SUMO --seed (default: the configuration's)")] = None,
) -> None:
    """Run a SUMO scenario as the city: its detectors publish like devices; citybrain's plans drive its lights."""
    from ops.cli import _settings

    try:
        from sensors_sim.sumo_twin import SumoTwin
    except ImportError as exc:
        typer.echo(f"citybrain sumo-twin: {exc}", err=True)
        raise typer.Exit(2) from None
    from ops.cli import make_publisher

    if sumocfg is None and net is None:
        typer.echo("give --sumocfg (or --net with --routes)", err=True)
        raise typer.Exit(2)
    s = _settings()
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    twin = SumoTwin(sumocfg, net=net, routes=routes or [], network=network, start=t0, backend=backend, seed=seed)
    pub = make_publisher(publish, out, s)
    sub = recommendation_subscriber(s) if apply_recommendations else None
    inbox = sub.inbox if sub is not None else None
    last = [0.0]

    def progress(stats: Any, ts: datetime) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            done = f"  {stats.sim_s / duration_s:6.1%}" if duration_s else ""
            plans = f"  plans applied {inbox.stats.applied} installed {stats.plans_installed}" if inbox else ""
            typer.echo(f"\r{stats.published:>9,} events  simulated {ts:%H:%M:%S}{done}{plans}", err=True, nl=False)

    stop = threading.Event()
    try:
        with twin:
            typer.echo(
                f"SUMO twin: {twin.net_file.name}, {len(twin.loops)} loops, {len(twin.cameras)} cameras, "
                f"{len(twin.tls_ids)} signals, publishing to {publish}",
                err=True,
            )
            try:
                stats = twin.run(pub, duration_s=duration_s, speed=speed, inbox=inbox, on_progress=progress, stop=stop)
            except KeyboardInterrupt:
                stop.set()
                stats = twin.stats
    finally:
        if sub is not None:
            sub.close()
        pub.close()
    typer.echo(
        f"\n{stats.published} events published ({publish}): {stats.events['loop']} loop, {stats.events['camera']} "
        f"camera; {stats.sim_s:.0f} simulated s in {stats.wall_s:.1f} s; {stats.plans_installed} plans installed",
        err=True,
    )
    if inbox is not None:
        typer.echo(plan_summary(inbox.stats), err=True)
