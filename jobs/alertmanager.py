"""Forward the alert topic to a Prometheus Alertmanager (API v2), with each alert's whole lifecycle.

    python -m jobs.alertmanager --config flink-conf/vigil.yaml [--url http://alertmanager:9093]

It reads the alert topic ``read_committed`` from its beginning (alerts are keyed by fingerprint, so a
compacted topic keeps this short) and keeps the latest revision of every alert; from then on every
new revision is posted to ``/api/v2/alerts`` as it arrives, and every active alert is posted again
each ``alertmanager.repeat_interval_s``, so that Alertmanager (which resolves an alert it has not
heard of for ``resolve_timeout``, 5 minutes by default) never resolves a live incident by silence.
A ``resolved`` revision is posted with its ``endsAt``; a ``suppressed`` one (likely a false positive)
ends what was posted before. When a revision changes a label (an escalation raises the severity),
the alert under the old labels is ended, since Alertmanager tells alerts apart by their labels. A
failed post is retried with back-off until it goes through: nothing is dropped. The forwarder keeps
no state of its own; restarted, it reads the topic again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.config import ROOT, AlertmanagerConfig, VigilConfig
from common.kafka_io import Follower, Record, client_options

ACTIVE = ("open", "escalated")


def to_alertmanager(alert: dict[str, Any], cfg: AlertmanagerConfig) -> dict[str, Any]:
    """One Vigil alert (``vigil.alert/v1``) in Alertmanager's API v2 shape (``postableAlert``)."""
    s = alert["series"]
    labels = {
        "alertname": f"Vigil{alert['category'].title().replace('_', '')}",
        "service": s["service"],
        "severity": alert["severity"],
        "priority": alert["priority"],
        "team": alert["team"],
        "category": alert["category"],
        "vigil_fingerprint": alert["fingerprint"],
    }
    if s.get("entity"):
        labels["entity"] = s["entity"]
    where = f"{s['service']}/{s['entity']}" if s.get("entity") else s["service"]
    imp = alert.get("impact") or {}
    description = (
        f"{s['metric']} of {where} was {alert['value']:.4g} where {alert['expected_value']:.4g} was expected "
        f"(score {alert['anomaly']['score']:.3f}, threshold {alert['anomaly']['threshold']:.3f}; trigger "
        f"{alert['trigger']}). {alert['window']['candidates']} candidate(s) in the group, related series: "
        f"{', '.join(alert['related_series'][:5])}. Impact: {imp.get('revenue_per_min_at_risk', 0)} revenue/min "
        f"at risk, {imp.get('users_affected', 0)} users affected. False-positive probability "
        f"{alert['false_positive_probability']:.2f}. Vigil alert {alert['alert_id']} revision {alert['revision']}."
    )
    annotations = {
        "summary": alert["explanation"]["summary"],
        "description": description,
        "recommended_actions": "\n".join(alert.get("recommended_actions") or []),
    }
    rules = alert["explanation"].get("rules") or []
    if rules:  # what peak hours, a deployment or maintenance did to this alert
        annotations["rules"] = "; ".join(f"{r['rule']}: {r['effect']}"
                                         + (" (changed the outcome)" if r["changed_outcome"] else "") for r in rules)
    if alert.get("deploying"):
        annotations["deploying"] = "true"
    if cfg.runbook_url:
        annotations["runbook"] = cfg.runbook_url.format(category=alert["category"], service=s["service"],
                                                        metric=s["metric"])
    out = {"labels": labels, "annotations": annotations, "startsAt": alert["startsAt"],
           "generatorURL": cfg.generator_url}
    if alert["status"] == "resolved" and alert.get("endsAt"):
        out["endsAt"] = alert["endsAt"]
    return out


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Forwarder:
    """The latest revision of each alert, and what was last posted for it."""

    def __init__(self, cfg: AlertmanagerConfig, post=None) -> None:
        self.cfg = cfg
        self.post = post or self._post
        self.posted: dict[str, dict[str, Any]] = {}  # fingerprint -> the Alertmanager alert last posted
        self.active: dict[str, dict[str, Any]] = {}  # fingerprint -> ... of alerts still open
        self.posts = 0

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        """POST to /api/v2/alerts, retrying with back-off until Alertmanager takes it."""
        body = json.dumps(alerts).encode()
        delay = 0.5
        while True:
            req = urllib.request.Request(self.cfg.url.rstrip("/") + "/api/v2/alerts", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as r:
                    if 200 <= r.status < 300:
                        self.posts += 1
                        return
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500:  # Alertmanager refuses this payload: retrying would not help
                    print(f"alertmanager: refused ({e.code}): {e.read()[:500]!r}", file=sys.stderr, flush=True)
                    return
            except (urllib.error.URLError, OSError) as e:
                print(f"alertmanager: {e}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)

    def apply_record(self, value: bytes, where: str) -> list[dict[str, Any]]:
        """``apply`` to one record of the topic; one that is not a Vigil alert is reported and skipped."""
        try:
            return self.apply(json.loads(value))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"alertmanager: skipping {where}: not a vigil.alert/v1 record ({type(e).__name__}: {e})",
                  file=sys.stderr, flush=True)
            return []

    def apply(self, alert: dict[str, Any]) -> list[dict[str, Any]]:
        """Fold one revision in; what to post for it (the old label set ended, if the labels changed)."""
        new = to_alertmanager(alert, self.cfg)
        fp = alert["fingerprint"]
        old = self.posted.get(fp)
        out = []
        if old is not None and old["labels"] != new["labels"] and "endsAt" not in old:
            out.append({**old, "endsAt": _now_iso()})
        if alert["status"] in ACTIVE:
            self.active[fp] = new
            out.append(new)
        else:
            self.active.pop(fp, None)
            if alert["status"] == "resolved":
                out.append(new)
            elif old is not None and "endsAt" not in old and old["labels"] == new["labels"]:
                out.append({**old, "endsAt": _now_iso()})  # suppressed now: end what was posted
        for a in out:
            self.posted[fp] = a
        return out

    def repeat(self) -> list[dict[str, Any]]:
        return list(self.active.values())


def run(cfg: VigilConfig, idle_exit_s: float | None = None) -> Forwarder:
    k = cfg.kafka
    fw = Forwarder(cfg.alertmanager)

    def waiting(topic: str) -> None:  # started before the job has created its alert topic
        print(f"alertmanager: waiting for topic {topic}", file=sys.stderr, flush=True)

    alerts = Follower(k.bootstrap_servers, k.topics.alerts, wait_s=None, on_wait=waiting, retry_s=2,
                      **client_options(k.client_properties()))
    # catch up: the latest revision of every alert, posted once
    latest: dict[str, Record] = {}  # fingerprint -> its latest revision
    for r in alerts.catch_up(timeout_s=None):
        try:
            latest[json.loads(r.value)["fingerprint"]] = r
        except (ValueError, KeyError, TypeError):
            fw.apply_record(r.value, alerts.where(r))  # reports it
    batch = [x for r in latest.values() for x in fw.apply_record(r.value, alerts.where(r))]
    if batch:
        fw.post(batch)
    print(f"alertmanager: caught up on {len(latest)} alert(s), {len(fw.active)} active; forwarding to "
          f"{cfg.alertmanager.url}", flush=True)
    next_repeat = time.monotonic() + cfg.alertmanager.repeat_interval_s
    idle_since = time.monotonic()
    while True:
        batch = [x for r in alerts.poll(0.5) for x in fw.apply_record(r.value, alerts.where(r))]
        if batch:
            fw.post(batch)
            idle_since = time.monotonic()
        if time.monotonic() >= next_repeat:
            if fw.active:
                fw.post(fw.repeat())
            next_repeat = time.monotonic() + cfg.alertmanager.repeat_interval_s
        if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
            alerts.close()
            return fw


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="vigil-alertmanager", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "flink-conf" / "vigil.yaml"), help="job YAML file")
    ap.add_argument("--url", help="Alertmanager's base URL (default: alertmanager.url of the config)")
    ap.add_argument("--idle-exit-s", type=float, default=None, help="stop after this long without new alerts")
    args = ap.parse_args(argv)
    over = {"alertmanager": {"url": args.url}} if args.url else None
    run(VigilConfig.load(Path(args.config), overrides=over), args.idle_exit_s)


if __name__ == "__main__":
    main()
