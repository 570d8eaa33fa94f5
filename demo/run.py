"""``make run``: the whole pipeline end to end on real Kafka, Redis and Flink, with a labelled stream.

Assumes Kafka and Redis are up (``scripts/services.sh up``; ``make run`` does it). It seeds the
service context into Redis, makes sure model versions exist, starts the job on the embedded
MiniCluster on topics of its own, replays the demo stream (with malformed records among it) into
the metrics topic, consumes the alerts and dead letters while showing progress, and prints a
summary scored against the injected incidents. Every alert consumed is written to a JSONL file.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml

from common.config import ROOT, VigilConfig
from common.kafka_io import Follower, GroupProgress, create_topics, produce
from jobs.launch import start_job, stop_job
from models.context import connect, seed
from training.simulate import SERVICES, Incident, generate, incident_series

MATCH_GRACE_MS = 10 * 60_000


def malformed_records(t_ms: int) -> list[tuple[bytes, str]]:
    """Bad records a real topic sees, each with the dead-letter reason it must get."""
    ok = {"metric": "cpu_util", "value": 1.0, "timestamp": t_ms, "service": "search", "tags": {"instance": "i-0"}}
    return [
        (b"cpu_util search 12.5", "not_json"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"[1, 2, 3]", "not_object"),
        (json.dumps({k: v for k, v in ok.items() if k != "value"}).encode(), "missing_field"),
        (json.dumps({**ok, "value": "high"}).encode(), "wrong_type"),
        (json.dumps({**ok, "value": None}).encode(), "wrong_type"),
        (b'{"metric":"cpu_util","value":NaN,"timestamp":%d,"service":"search"}' % t_ms, "non_finite_value"),
        (json.dumps({**ok, "timestamp": 4_102_444_800_000}).encode(), "timestamp_in_future"),
        (json.dumps({**ok, "tags": {"instance": "i-0", "blob": "x" * 70_000}}).encode(), "oversized"),
        (json.dumps({"name": "disk", "fields": {"util": 3.0}, "tags": {"instance": "i-0"},
                     "timestamp": t_ms // 1000}).encode(), "missing_field"),
        (json.dumps({"hello": "world"}).encode(), "unknown_shape"),
    ]


def to_prometheus(ev: dict) -> dict:
    """The business metric ships as a Prometheus sample, as a remote-write adapter would send it."""
    ts = datetime.fromtimestamp(ev["timestamp"] / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    return {"name": ev["metric"], "labels": {"__name__": ev["metric"], "service": ev["service"], **ev["tags"]},
            "value": str(ev["value"]), "timestamp": ts}


class Collector(threading.Thread):
    """Consumes a topic (read_committed) into a list until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.items: list[dict] = []
        self.stop_flag = threading.Event()
        self.follower = Follower(bootstrap, topic)

    def run(self) -> None:
        with self.follower:
            while not self.stop_flag.is_set():
                self.items.extend(json.loads(r.value) for r in self.follower.poll(0.5))


def match(alert: dict, inc: Incident) -> bool:
    """Does this alert report this incident (same service, entity or series, inside its window)?"""
    s = alert["series"]
    if s["service"] != inc.service:
        return False
    t = int(datetime.fromisoformat(alert["event_time"]).timestamp() * 1000)
    if not (inc.start_ms <= t <= inc.end_ms + MATCH_GRACE_MS):
        return False
    if inc.instance is None:
        return True
    keys = set(incident_series(inc))
    return s.get("entity") == inc.instance or bool(keys & set(alert.get("related_series", [])))


def summarise(alerts: list[dict], dead: list[dict], incidents: list[Incident], expected_dead: Counter,
              produced: int) -> tuple[str, dict]:
    """The end-of-run report, as text and as numbers."""
    latest: dict[str, dict] = {}  # each alert's last revision before it resolved
    for a in alerts:
        if a["status"] != "resolved" and a["revision"] >= latest.get(a["alert_id"], {"revision": -1})["revision"]:
            latest[a["alert_id"]] = a
    resolved = {a["alert_id"] for a in alerts if a["status"] == "resolved"}
    active = [a for a in latest.values() if a["status"] != "suppressed"]  # raised to people (resolved or not)
    suppressed = [a for a in latest.values() if a["status"] == "suppressed"]
    lines = [f"events produced: {produced}; alert records consumed: {len(alerts)} "
             f"({len(latest)} alerts, {len(suppressed)} suppressed, {len(resolved)} resolved)"]
    for field in ("severity", "priority", "team", "category", "trigger"):
        c = Counter(a[field] for a in active)
        lines.append(f"  by {field:<9} " + ", ".join(f"{k}={v}" for k, v in sorted(c.items())))
    caught: list[str] = []
    matched_ids: set[str] = set()
    lines.append("incidents:")
    for inc in incidents:
        hits = [a for a in alerts if a["status"] in ("open", "escalated") and match(a, inc)]
        matched_ids.update(a["alert_id"] for a in hits)
        if hits:
            t0 = min(int(datetime.fromisoformat(a["event_time"]).timestamp() * 1000) for a in hits)
            delay = (t0 - inc.start_ms) / 60000
            caught.append(inc.id)
            a0 = min(hits, key=lambda a: a["event_time"])
            lines.append(f"  CAUGHT {inc.id:<11} {inc.kind:<18} {inc.service}/{inc.instance or '*'}: first alert "
                         f"after {delay:.0f} min of event time ({a0['trigger']}, {a0['severity']}, "
                         f"{a0['priority']}, team {a0['team']}, category {a0['category']})")
        else:
            lines.append(f"  MISSED {inc.id:<11} {inc.kind:<18} {inc.service}/{inc.instance or '*'}")
    false_alerts = [a for a in active if a["alert_id"] not in matched_ids]
    lines.append(f"caught {len(caught)}/{len(incidents)} incidents; false alerts: {len(false_alerts)} of "
                 f"{len(active)} active alerts")
    got_dead = Counter(d["reason"] for d in dead)
    lines.append(f"dead letters: {sum(got_dead.values())} (" + ", ".join(
        f"{k}={v}" for k, v in sorted(got_dead.items())) + f"); injected: {sum(expected_dead.values())}")
    numbers = {"produced": produced, "alerts": len(latest), "active": len(active), "suppressed": len(suppressed),
               "resolved": len(resolved),
               "caught": caught, "incidents": len(incidents), "false_alerts": len(false_alerts),
               "dead_letters": dict(got_dead), "dead_letters_expected": dict(expected_dead)}
    return "\n".join(lines), numbers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vigil-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=8.0, help="event-time length of the demo stream")
    ap.add_argument("--instances", type=int, default=8, help="instances per service")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--end-hour", type=int, default=None, choices=range(24), metavar="H",
                    help="end the stream at the latest H:00 UTC before now, so that its time of day (and the "
                         "daily cycles it holds) is the same on every run (default: end it now)")
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    ap.add_argument("--out", default=None, help="run folder (default runs/demo-<UTC time>)")
    ap.add_argument("--surprise", action="store_true",
                    help="score with the detector's surprise on (scoring.surprise.enabled; off by default)")
    args = ap.parse_args(argv)
    # a TERM (from make, CI or a user) must still stop the job this process started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "runs" / f"demo-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"demo-{run_id}"
    overrides = {"kafka": {"group_id": prefix, "startup": "earliest",
                           "topics": {"metrics": f"{prefix}.metrics", "alerts": f"{prefix}.alerts",
                                      "forecasts": f"{prefix}.forecasts", "dead_letters": f"{prefix}.deadletters",
                                      "feedback": f"{prefix}.feedback", "drift": f"{prefix}.drift",
                                      "shadow": f"{prefix}.shadow"}}}
    overrides["job"] = {"checkpoint_dir": str(out.resolve() / "checkpoints")}  # the run's own
    if args.surprise:
        overrides["scoring"] = {"surprise": {"enabled": True}}
    raw = yaml.safe_load((ROOT / "flink-conf" / "vigil.yaml").read_text())
    for sec, vals in overrides.items():
        raw[sec] = {**raw[sec], **{k: ({**raw[sec].get(k, {}), **v} if isinstance(v, dict) else v)
                                   for k, v in vals.items()}}
    cfg_path = out / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = VigilConfig.load(cfg_path)
    boot, topics = cfg.kafka.bootstrap_servers, cfg.kafka.topics

    print(f"[demo] run folder {out}")
    seed(connect(cfg.redis.url), SERVICES)
    print(f"[demo] seeded service context for {len(SERVICES)} services into Redis ({cfg.redis.url})")

    create_topics(boot, [topics.metrics, topics.alerts, topics.forecasts, topics.dead_letters, topics.drift])
    end = int(time.time() * 1000)
    if args.end_hour is not None:
        end -= (end - args.end_hour * 3_600_000) % 86_400_000
    start = end - int(args.hours * 3_600_000)
    start -= start % 60_000
    print(f"[demo] stream from {datetime.fromtimestamp(start / 1000, UTC):%Y-%m-%d %H:%M} to "
          f"{datetime.fromtimestamp(end / 1000, UTC):%H:%M} UTC")
    scen = generate(seed=args.seed, hours=args.hours, start_ms=start, instances=args.instances)
    (out / "incidents.json").write_text(json.dumps([i.to_dict() for i in scen.incidents], indent=1))

    log = open(out / "job.log", "w")
    job = start_job(cfg_path, log=log)
    print(f"[demo] started the Flink job (MiniCluster, pid {job.pid}); log {out / 'job.log'}")

    alerts_c, dead_c = Collector(boot, topics.alerts), Collector(boot, topics.dead_letters)
    drift_c = Collector(boot, topics.drift)
    for c in (alerts_c, dead_c, drift_c):
        c.start()
    # one set of clients asked every 2 s for the job's progress, for the demo's lifetime
    progress = GroupProgress(boot, cfg.kafka.group_id, topics.metrics)
    status = 0
    try:
        bad = malformed_records(start + 3_600_000)
        every = max(len(scen.events) // (len(bad) + 1), 1)
        produced = 0
        t0 = time.time()
        payloads = []
        for i, ev in enumerate(scen.events):
            body = to_prometheus(ev) if ev.get("metric") == "plays_per_min" else ev
            payloads.append(json.dumps(body, separators=(",", ":")).encode())
            produced += 1
            if i % every == every - 1 and bad:
                payloads.append(bad.pop(0)[0])
        payloads.extend(payload for payload, _ in bad)
        produce(boot, topics.metrics, payloads, batch_size=256 * 1024, acks=1)
        expected_dead = Counter(r for _, r in malformed_records(start))
        print(f"[demo] replayed {produced} events ({len(scen.incidents)} incidents injected) and "
              f"{sum(expected_dead.values())} malformed records in {time.time() - t0:.1f} s")

        deadline = time.time() + args.timeout
        quiet_since, last_seen = time.time(), -1
        while True:
            time.sleep(2)
            done, end = progress()
            n_alerts = len(alerts_c.items)
            print(f"[demo] job consumed {done}/{end} records ({100 * done / max(end, 1):.0f}%), "
                  f"alerts {n_alerts}, dead letters {len(dead_c.items)}", flush=True)
            if job.poll() is not None:
                print(f"[demo] the job exited early with code {job.returncode}; see {out / 'job.log'}")
                status = 1
                break
            if done >= end > 0:
                if n_alerts != last_seen:
                    quiet_since, last_seen = time.time(), n_alerts
                elif time.time() - quiet_since > max(3 * cfg.job.checkpoint_interval_ms / 1000, 6):
                    break
            if time.time() > deadline:
                print("[demo] timed out waiting for the job to catch up")
                status = 1
                break
    finally:
        progress.close()
        stop_job(job)
        for c in (alerts_c, dead_c, drift_c):
            c.stop_flag.set()
        for c in (alerts_c, dead_c, drift_c):
            c.join(10)
        log.close()

    path = out / "alerts.jsonl"
    with open(path, "w") as fh:
        for a in alerts_c.items:
            fh.write(json.dumps(a) + "\n")
    with open(out / "dead_letters.jsonl", "w") as fh:
        for d in dead_c.items:
            fh.write(json.dumps(d) + "\n")
    text, numbers = summarise(alerts_c.items, dead_c.items, scen.incidents, expected_dead, produced)
    (out / "summary.json").write_text(json.dumps(numbers, indent=1))
    print("\n===== Vigil demo summary =====")
    print(text)
    touched = {s for inc in scen.incidents for s in incident_series(inc, args.instances)}
    drifted = {d["series"] for d in drift_c.items}
    print(f"drift events: {len(drift_c.items)} on {len(drifted)} series "
          f"({len(drifted & touched)} of them touched by an incident); topic {topics.drift}")
    print(f"\nalerts written to {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
