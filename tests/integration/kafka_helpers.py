"""Small helpers for tests against the real broker: topics, producing with offsets, reading back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from common import kafka_io
from common.config import DEFAULT_CONFIG

TOPICS = ("metrics", "alerts", "forecasts", "dead_letters", "model_events", "feedback", "drift", "shadow", "events")


def job_config(tmp: Path, prefix: str, bootstrap: str, redis_url: str, store: Path, **sections) -> Path:
    """A job YAML on topics of this test's own, with the given section overrides."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["kafka"].update(bootstrap_servers=bootstrap, group_id=prefix, startup="earliest",
                        topics={**{t: f"{prefix}.{t}" for t in TOPICS}, "model_updates": f"{prefix}.model_updates"})
    raw["redis"]["url"] = redis_url
    raw["registry"]["root"] = str(store)
    raw["validation"].update(max_past_s=None, max_future_s=None)
    raw["job"]["checkpoint_dir"] = str(tmp / "checkpoints")
    for sec, vals in sections.items():
        raw[sec].update(vals)
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(raw))
    kafka_io.create_topics(bootstrap, [f"{prefix}.{t}" for t in TOPICS])
    return path


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> list[int]:
    """Send every payload; return the offset each one got."""
    return kafka_io.produce(bootstrap, topic, payloads, linger_ms=10)


def read_all(bootstrap: str, topic: str, quiet_s: float = 3.0, committed: bool = True) -> list[dict]:
    """Everything in a topic (committed transactions only, unless told otherwise)."""
    return [v for _, v in read_keyed(bootstrap, topic, quiet_s, committed)]


def read_keyed(bootstrap: str, topic: str, quiet_s: float = 3.0, committed: bool = True
               ) -> list[tuple[bytes | None, dict]]:
    """Everything in a topic as (record key, decoded value) pairs: to its end, then what else comes
    until ``quiet_s`` pass without a record. A topic that does not appear within ``quiet_s`` reads
    as empty."""
    try:
        f = kafka_io.Follower(bootstrap, topic, committed=committed, wait_s=quiet_s)
    except kafka_io.TopicReadError:
        return []
    with f:
        got = f.catch_up()
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            more = f.poll(min(0.5, quiet_s))
            if more:
                got += more
                quiet_until = time.monotonic() + quiet_s
    return [(r.key, json.loads(r.value)) for r in got]


def wait_for(predicate, timeout_s: float, every_s: float = 2.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return predicate()
