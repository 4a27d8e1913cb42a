"""Render ``$CITYBRAIN_ARTIFACTS/fault-results.jsonl`` (written by ``make test-faults``) as a markdown table.

One row per fault and engine (the latest result). A row may say what the operator sees during the fault
(``operator_sees``: ``/health``, the console, an alert). "survived" is ``yes`` when the test passed, ``NO`` when it
failed, and ``known failure (…)`` for an xfailed test that recorded the upstream issue behind it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
#: ``CITYBRAIN_TEST_ENGINE`` → the brokers the row ran against.
ENGINES = {"kafka": "Apache Kafka + mosquitto", "embedded": "Tansu + amqtt"}


def main() -> int:
    path = Path(os.environ.get("CITYBRAIN_ARTIFACTS", ROOT / "artifacts")) / "fault-results.jsonl"
    if not path.exists():
        print(f"no results at {path}: run make test-faults", file=sys.stderr)
        return 1
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    latest: dict[tuple[str, str], dict] = {}
    for r in rows:
        latest[(r["fault"], r["engine"])] = r
    cols = ["fault", "engine", "survived", "events / payloads", "lost", "duplicate outputs"]
    extra = ["redelivered (deduplicated)", "failures", "recovery", "what the operator sees"]
    print("| " + " | ".join([*cols, *extra]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (fault, engine), r in sorted(latest.items()):
        n = r.get("events", r.get("payloads", r.get("requests", "–")))
        rec = f"{r['recovery_s']} s" if "recovery_s" in r else "–"
        brokers = "–" if "payloads" in r else ENGINES.get(engine, engine)  # fuzzing needs no broker
        survived = "yes" if r.get("passed") else "NO"
        if r.get("xfail"):  # a known failure outside citybrain, marked xfail with the evidence in the test
            survived = f"known failure ({r['xfail']})"
        print(
            f"| {fault} | {brokers} | {survived} | {n} | {r.get('lost', '–')} | "
            f"{r.get('duplicate_outputs', '–')} | {r.get('redelivered_readings', '–')} | {r.get('failures', '–')} | "
            f"{rec} | "
            f"{r.get('operator_sees', '–')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
