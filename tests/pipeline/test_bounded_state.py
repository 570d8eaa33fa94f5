"""Bounded state: quiet series, peers and services expire, alert groups close, series per service are capped."""

from __future__ import annotations

import json

import pytest

from common.config import VigilConfig
from jobs.inprocess import InProcessJob
from models.pipeline import EntityState, SeriesState, iso
from training.simulate import SERVICES, Incident, generate

START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)
CTX = {k: {f: v[f] for f in ("owner", "criticality", "revenue_per_min", "users", "description")}
       for k, v in SERVICES.items()}
TTL_S = 20 * 60
SPIKE = Incident("t-spike", "spike", "search", "i-1", ("latency_p99_ms",), START + 90 * 60_000,
                 START + 93 * 60_000, "latency")


@pytest.fixture(scope="module")
def short_ttl() -> VigilConfig:
    return VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None},
                                       "state": {"series_ttl_s": TTL_S}})


@pytest.fixture(scope="module")
def churn() -> list[bytes]:
    """A fleet whose instance i-2 goes away after 40 minutes, with an incident later on: churn."""
    scen = generate(seed=3, hours=2.5, start_ms=START, instances=3, incidents=[SPIKE], business_metric=False)
    out = []
    for e in scen.events:
        raw = json.dumps(e)
        ts_ms = e["timestamp"] * (1000 if e["timestamp"] < 1e11 else 1)  # Telegraf's are in seconds
        if '"instance": "i-2"' in raw and ts_ms > START + 40 * 60_000:
            continue
        out.append(raw.encode())
    return out


def _run(cfg, models, payloads, sweep_every: int | None) -> InProcessJob:
    job = InProcessJob(cfg, models, context=CTX.get)
    for i in range(0, len(payloads), 64):
        job.feed_batch(payloads[i:i + 64], START)
        if sweep_every and (i // 64) % sweep_every == 0:
            job.sweep()
    return job


def _split(alerts: list[str]) -> tuple[list[dict], list[dict]]:
    """(alerts other than resolved revisions, in order; resolved ones by id, emit time left out)."""
    rows = [json.loads(a) for a in alerts]
    live = [a for a in rows if a["status"] != "resolved"]
    done = sorted(({k: v for k, v in a.items() if k != "emitted_at"} for a in rows if a["status"] == "resolved"),
                  key=lambda a: a["alert_id"])
    return live, done


def test_a_sweep_changes_no_output_wherever_it_falls(short_ttl, models, churn):
    """...but when a resolved revision is emitted: a sweep resolves a quiet group early, the service's next
    candidate (or the last sweep) otherwise; what it says is the same."""
    never = _run(short_ttl, models, churn, None)
    often = _run(short_ttl, models, churn, 1)
    rare = _run(short_ttl, models, churn, 17)
    for job in (never, often, rare):
        job.sweep()  # the end of the stream: the last timer
    assert len(never.alerts) > 0 and len(never.forecasts) > 0
    live, done = _split(never.alerts)
    assert live and done
    for job in (often, rare):
        assert _split(job.alerts) == (live, done)
        assert job.forecasts == never.forecasts
        assert job.drift == never.drift
        assert [(d.reason, d.detail) for d in job.dead_letters] == [(d.reason, d.detail) for d in never.dead_letters]


def test_quiet_series_and_peers_leave_state(short_ttl, models, churn):
    job = _run(short_ttl, models, churn, None)
    gone = [k for k in job.series_state if "instance=i-2" in k]
    assert gone, "i-2's series were in state before the sweep"
    before_series, before_entity = len(job.series_state), len(job.entity_state["search"])
    swept = job.sweep()
    assert sorted(swept.series) == sorted(gone)
    assert not any("instance=i-2" in k for k in job.series_state)
    assert len(job.series_state) == before_series - len(gone)
    for svc, raw in job.entity_state.items():
        st = EntityState.from_bytes(raw)
        assert "i-2" not in st.clusters and "i-2" not in st.latest, svc
        assert st.groups == {} or all(job.state.clock_ms - g["last"] <= short_ttl.alerts.dedup_window_s * 1000
                                      for g in st.groups.values())
    assert len(job.entity_state["search"]) < before_entity


def test_alert_groups_resolve_on_the_sweep_not_on_the_next_record(short_ttl, models, churn):
    job = _run(short_ttl, models, churn, None)
    groups = EntityState.from_bytes(job.entity_state["search"]).groups
    assert groups, "the incident left an open group"
    window_ms = short_ttl.alerts.dedup_window_s * 1000
    open_ids = {g["alert_id"]: g for g in groups.values()}
    last = {}
    for a in map(json.loads, job.alerts):
        last[a["alert_id"]] = a
    n = len(job.alerts)
    # the shard's clock moves on (another service reports) while search stays quiet past the window
    late = START + 150 * 60_000 + window_ms + 60_000
    job.feed(json.dumps({"metric": "cpu_util", "value": 1.0, "timestamp": late, "service": "other"}).encode(), START)
    assert len(job.alerts) == n  # nothing of search's ran: no record of it resolves anything
    job.sweep(now_ms=late)
    assert "search" not in job.entity_state or EntityState.from_bytes(job.entity_state["search"]).groups == {}
    resolved = [json.loads(a) for a in job.alerts[n:]]
    search = [a for a in resolved if a["alert_id"] in open_ids]
    assert {a["alert_id"] for a in search} == set(open_ids)
    for a in search:
        g, before = open_ids[a["alert_id"]], last[a["alert_id"]]
        assert a["status"] == "resolved" and a["revision"] == before["revision"] + 1
        assert a["startsAt"] == before["startsAt"] and before["endsAt"] is None
        assert a["endsAt"] == iso(g["last"] + window_ms) and a["window"]["end"] == iso(g["last"])
        assert a["fingerprint"] == before["fingerprint"] and a["severity"] == g["severity"]


def test_a_series_quiet_past_the_ttl_starts_afresh(short_ttl, models):
    job = InProcessJob(short_ttl, models)
    ev = {"metric": "cpu_util", "service": "s", "tags": {"instance": "a"}}
    for i in range(30):
        job.feed(json.dumps({**ev, "value": 50.0 + i % 3, "timestamp": START + i * 60_000}).encode(), START)
    key = "s|cpu_util|instance=a"
    assert SeriesState.from_bytes(job.series_state[key]).window.n == 30
    back = START + 29 * 60_000 + TTL_S * 1000 + 1
    job.feed(json.dumps({**ev, "value": 50.0, "timestamp": back}).encode(), START)
    st = SeriesState.from_bytes(job.series_state[key])
    assert st.window.n == 1 and st.max_ts_ms == back
    assert job.dead_letters == []


def test_series_per_service_are_capped_with_a_dead_letter(models):
    cfg = VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None},
                                      "state": {"max_series_per_service": 3, "series_ttl_s": TTL_S}})
    job = InProcessJob(cfg, models)
    recs = [{"metric": "cpu_util", "value": 1.0, "timestamp": START, "service": "s", "tags": {"pod": f"p{i}"}}
            for i in range(5)]
    recs.append({"metric": "cpu_util", "value": 1.0, "timestamp": START, "service": "t"})
    job.run([json.dumps(r).encode() for r in recs], START, batch_size=4)
    assert [d.reason for d in job.dead_letters] == ["too_many_series", "too_many_series"]
    assert "service s already holds 3 series" in job.dead_letters[0].detail
    assert sorted(job.series_state) == ["s|cpu_util|pod=p0", "s|cpu_util|pod=p1", "s|cpu_util|pod=p2",
                                        "t|cpu_util|"]
    # known series still score; once the old ones expire and a sweep deletes them, new ones are taken
    later = START + TTL_S * 1000 + 60_000
    job.feed(json.dumps({**recs[0], "timestamp": later}).encode(), START)
    assert len(job.dead_letters) == 2
    job.sweep()
    assert sorted(job.series_state) == ["s|cpu_util|pod=p0"]
    job.feed(json.dumps({**recs[4], "timestamp": later}).encode(), START)
    assert len(job.dead_letters) == 2 and "s|cpu_util|pod=p4" in job.series_state


def test_a_verdict_on_a_series_without_state_is_a_dead_letter(short_ttl, models):
    job = InProcessJob(short_ttl, models)
    job.feed_feedback(b'{"schema":"vigil.feedback/v1","alert_id":"a","series":"s|cpu_util|","category":"saturation",'
                      b'"verdict":"false_positive","by":"b","at":"2026-11-29T00:00:00Z"}')
    assert [d.reason for d in job.dead_letters] == ["unknown_series"]
    assert job.series_state == {} and job.entity_state == {}


def test_entity_state_v2_reads_and_migrates(short_ttl, models, churn):
    job = _run(short_ttl, models, churn, None)
    st = EntityState.from_bytes(job.entity_state["search"])
    assert st.windows == []  # no rule windows in this run: the v4 layout without them is v2's with a longer head
    v4 = st.to_bytes()
    # the v2 layout: the same without the last event time and the windows' length in the head
    v2 = bytes([2]) + v4[1:EntityState._HEAD_V2.size] + v4[EntityState._HEAD.size:]
    old = EntityState.from_bytes(v2)
    assert old.last_ts_ms == max(int(c[0]) for c in st.clusters.values())
    assert old.latest == st.latest and old.clusters == st.clusters and old.groups == st.groups
    assert EntityState.from_bytes(old.to_bytes()).to_bytes()[:1] == bytes([EntityState.VERSION])
