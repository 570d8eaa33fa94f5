"""Business rules in the scoring logic: peak hours, deployment and maintenance windows (models.rules)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from common.config import VigilConfig
from jobs.inprocess import InProcessJob
from models.config import ConfigError, RulesConfig, build
from models.pipeline import EntityState
from models.rules import NONE, Rules, Window, fold_window, lowered
from training.simulate import Incident, generate
from udfs.parse import OpsEvent, parse_ops_event

START = 1_780_000_000_000 - (1_780_000_000_000 % 3_600_000)  # a Thursday, 20:00 UTC
SPIKE = Incident("it-spike", "spike", "search", "i-1", ("latency_p99_ms",), START + 70 * 60_000,
                 START + 73 * 60_000, "latency")


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    scen = generate(seed=11, hours=1.6, start_ms=START, instances=2, incidents=[SPIKE], business_metric=False)
    return [json.dumps(e).encode() for e in scen.events]


def run(models, payloads, rules: dict | None = None, ops: list[dict] = (), context=None) -> InProcessJob:
    # the spike comes 50 scores into its series: the learning period (alerts.learning_scores) is
    # off, so that what the rules do is all that moves an alert here
    cfg = VigilConfig.load(overrides={"validation": {"max_past_s": None, "max_future_s": None},
                                      "rules": rules or {}, "alerts": {"learning_scores": 0}})
    job = InProcessJob(cfg, models, context=context or (lambda s: {}))
    for o in ops:
        job.feed_ops_event(json.dumps(o).encode())
    return job.run(payloads, START)


def alerts(job: InProcessJob) -> list[dict]:
    return [json.loads(a) for a in job.alerts]


# ---- configuration and the rules themselves

def test_rules_config_refuses_bad_zones_days_and_hours_by_name():
    with pytest.raises(ConfigError, match="'timezone' parameter of PeakHours must be an IANA time zone"):
        build(RulesConfig, {"peak_hours": [{"timezone": "Mars/Olympus"}]}, "rules")
    with pytest.raises(ConfigError, match=r"'days\[\]' parameter of MaintenanceHours must be one of"):
        build(RulesConfig, {"maintenance": [{"days": ["monday"]}]}, "rules")
    with pytest.raises(ConfigError, match="'hours' parameter of PeakHours must be"):
        build(RulesConfig, {"peak_hours": [{"hours": [8, 8]}]}, "rules")
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['sensitivty'\] in section 'rules.peak_hours\[0\]'"):
        build(RulesConfig, {"peak_hours": [{"sensitivty": 2}]}, "rules")
    with pytest.raises(ConfigError, match="'sensitivity' parameter of PeakHours must be a number in"):
        build(RulesConfig, {"peak_hours": [{"sensitivity": 0}]}, "rules")


def test_peak_hours_follow_the_local_clock_of_their_zone_across_daylight_saving():
    r = Rules(build(RulesConfig, {"peak_hours": [{"timezone": "Europe/Stockholm", "days": ["mon", "tue", "wed", "thu",
                                                                                           "fri"],
                                                  "hours": [8, 20], "sensitivity": 2.0, "services": ["payments"]}]},
                    "rules"))
    # 08:30 local is 07:30 UTC in winter (CET) and 06:30 UTC in summer (CEST)
    assert r.effects("payments", ms("2026-12-03T07:30:00+00:00"), [], None).peak == 2.0
    assert r.effects("payments", ms("2026-12-03T06:30:00+00:00"), [], None) is NONE
    assert r.effects("payments", ms("2026-07-02T06:30:00+00:00"), [], None).peak == 2.0
    assert r.effects("payments", ms("2026-12-05T10:00:00+00:00"), [], None) is NONE  # a Saturday
    assert r.effects("search", ms("2026-12-03T10:00:00+00:00"), [], None) is NONE  # not its service


def test_a_maintenance_schedule_past_midnight_suppresses_until_its_last_hour_ends():
    r = Rules(build(RulesConfig, {"maintenance": [{"days": ["sun"], "hours": [22, 2], "reason": "index rebuild"}]},
                    "rules"))
    sun_23 = r.effects("search", ms("2026-12-06T23:00:00+00:00"), [], None)  # Sunday 23:00
    assert sun_23.maintenance.end_ms == ms("2026-12-07T02:00:00+00:00") and sun_23.maintenance.source == "config"
    assert r.effects("search", ms("2026-12-07T01:59:00+00:00"), [], None).maintenance is not None  # Monday early
    assert r.effects("search", ms("2026-12-07T02:00:00+00:00"), [], None) is NONE
    assert r.effects("search", ms("2026-12-01T01:00:00+00:00"), [], None) is NONE  # a Tuesday early: no


def test_windows_from_events_and_from_redis_apply_in_event_time_and_close_early():
    r = Rules(RulesConfig())
    wins = fold_window([], "deploy", 1_000_000, 2_000_000, "", 16, 0)
    assert r.effects("s", 999_999, wins, None) is NONE
    e = r.effects("s", 1_500_000, wins, None)
    assert e.deploy is not None and e.sensitivity == RulesConfig().deploy_sensitivity and e.maintenance is None
    closed = fold_window(wins, "deploy", 1_200_000, 1_200_000, "", 16, 0)  # duration 0: the deploy finished early
    assert closed == [Window("deploy", 1_000_000, 1_200_000, "", "events")]
    assert r.effects("s", 1_300_000, closed, None) is NONE
    ctx = {"maintenance_until": "2026-12-03T12:00:00Z", "maintenance_reason": "db failover"}
    m = r.effects("s", ms("2026-12-03T11:00:00+00:00"), [], ctx).maintenance
    assert (m.source, m.reason) == ("redis", "db failover")
    assert r.effects("s", ms("2026-12-03T12:00:00+00:00"), [], ctx) is NONE
    # bounded: ended windows go first, then the oldest beyond max_windows
    many: list[Window] = []
    for k in range(40):
        many = fold_window(many, "deploy", k * 10, k * 10 + 5, "", 16, clock_ms=100)
    assert len(many) == 16 and all(w.end_ms > 100 for w in many) and many[-1].start_ms == 390


def test_sensitivity_divides_the_margin_over_the_usual_score():
    assert lowered(0.45, 2.0, 0.05) == pytest.approx(0.25)
    assert lowered(0.45, 0.5, 0.05) == pytest.approx(0.85)
    assert lowered(0.9, 0.1, 0.0) == 1.0 and lowered(0.1, 3.0, 0.2) == 0.1


def test_ops_events_parse_or_say_why_not():
    ok = parse_ops_event(b'{"kind":"maintenance","service":"search","at":1780000000,"duration_s":600,'
                         b'"reason":"reindex","by":"ops","ticket":"OPS-12"}')
    assert ok == OpsEvent("maintenance", "search", 1_780_000_000_000, 1_780_000_600_000, "reindex", "ops")
    for raw, reason in [(b'{"kind":"deploy","service":"s","duration_s":60}', "missing_field"),
                        (b'{"kind":"deploy","service":"s","at":"soon","duration_s":60}', "wrong_type"),
                        (b'{"kind":"deploy","service":"s","at":1,"duration_s":-1}', "invalid_value"),
                        (b'{"kind":"deploy","service":"s","at":1,"duration_s":900000}', "invalid_value"),
                        (b'{"kind":"deploy","service":"s","at":1,"duration_s":"60"}', "wrong_type"),
                        (b'{"kind":"deploy","at":1,"duration_s":60}', "missing_field"),
                        (b'{"schema":"vigil.ops-event/v9","kind":"deploy","service":"s","at":1,"duration_s":1}',
                         "invalid_value"),
                        (b"[1]", "not_object")]:
        assert parse_ops_event(raw).reason == reason, raw


def test_entity_state_v4_keeps_windows_and_v3_reads_without_them():
    st = EntityState(last_ts_ms=5, windows=[Window("deploy", 1, 9, "r", "events")])
    back = EntityState.from_bytes(st.to_bytes())
    assert back.windows == st.windows and back.last_ts_ms == 5
    v4 = EntityState(last_ts_ms=5).to_bytes()
    v3 = bytes([3]) + v4[1:EntityState._HEAD_V3.size] + v4[EntityState._HEAD.size:]
    old = EntityState.from_bytes(v3)
    assert old.windows == [] and old.last_ts_ms == 5


# ---- through the scoring logic

def test_maintenance_suppresses_the_services_alerts_and_says_so(models, payloads):
    plain = alerts(run(models, payloads))
    window = {"kind": "maintenance", "service": "search", "at": (START + 60 * 60_000) // 1000, "duration_s": 1800,
              "reason": "reindex"}
    job = run(models, payloads, ops=[window])
    got = alerts(job)
    assert job.dead_letters == []
    inside = [a for a in got if a["series"]["service"] == "search"
              and START + 60 * 60_000 <= ms(a["event_time"]) < START + 90 * 60_000 and a["status"] != "resolved"]
    assert inside, "the spike raised no candidate in the window"
    assert all(a["status"] == "suppressed" and "maintenance" in a["suppressed_by"] for a in inside)
    notes = [r for a in inside for r in a["explanation"]["rules"]]
    assert {r["rule"] for r in notes} == {"maintenance"} and all("reindex" in r["effect"] for r in notes)
    # the spike's own alert was open without the window: there the rule changed the outcome
    opened = {a["series"]["key"] for a in plain if a["status"] == "open" and a["series"]["service"] == "search"}
    assert opened & {a["series"]["key"] for a in inside}
    assert any(r["changed_outcome"] for r in notes)
    others = [a for a in got if a["series"]["service"] != "search"]
    assert others and not any(a["explanation"]["rules"] or "maintenance" in a["suppressed_by"] for a in others)
    assert [a["series"]["service"] for a in others] == [a["series"]["service"] for a in plain
                                                         if a["series"]["service"] != "search"]


def test_a_deployment_lowers_the_services_bars_and_marks_its_alerts(models, payloads):
    plain = run(models, payloads)
    deploy = {"kind": "deploy", "service": "search", "at": (START + 60 * 60_000) // 1000, "duration_s": 3600}
    job = run(models, payloads, ops=[deploy])
    in_window = lambda s: s.service == "search" and s.ts_ms >= START + 60 * 60_000  # noqa: E731
    before = sum(1 for s in plain.scored if in_window(s) and s.trigger == "detector")
    after = sum(1 for s in job.scored if in_window(s) and s.trigger == "detector")
    assert after > before
    lowered_bars = [s for s in job.scored if in_window(s) and s.base_threshold is not None]
    assert lowered_bars and all(s.threshold < s.base_threshold for s in lowered_bars)
    got = [a for a in alerts(job) if a["status"] != "resolved"]
    marked = [a for a in got if a["deploying"]]
    assert marked and all(a["series"]["service"] == "search" for a in marked)
    by_bar = [r for a in marked for r in a["explanation"]["rules"] if r["changed_outcome"]]
    assert by_bar and all(r["rule"] == "deploy" and "bar " in r["effect"] for r in by_bar)
    assert not any(a["deploying"] for a in got if ms(a["event_time"]) < START + 60 * 60_000)


def test_peak_hours_change_how_many_samples_clear_the_bar_both_ways(models, payloads):
    def candidates(job: InProcessJob) -> int:
        return sum(1 for s in job.scored if s.trigger == "detector")

    base = candidates(run(models, payloads))
    # START is a Thursday 20:00 UTC: 21:00 to 23:00 in Stockholm
    peak = run(models, payloads, {"peak_hours": [{"timezone": "Europe/Stockholm", "days": ["thu"], "hours": [21, 24],
                                                  "sensitivity": 1.5}]})
    quiet = run(models, payloads, {"peak_hours": [{"hours": [0, 24], "sensitivity": 0.5}]})
    assert candidates(peak) > base > candidates(quiet)
    assert any(r["rule"] == "peak_hours" for a in alerts(peak) for r in a["explanation"]["rules"])


def test_a_redis_maintenance_field_suppresses_like_an_event(models, payloads):
    ctx = {"search": {"maintenance_until": str((START + 3 * 3600_000) // 1000), "maintenance_reason": "failover"}}
    got = [a for a in alerts(run(models, payloads, context=lambda s: ctx.get(s, {})))
           if a["series"]["service"] == "search" and a["status"] != "resolved"]
    assert got and all(a["status"] == "suppressed" and "maintenance" in a["suppressed_by"] for a in got)
    assert all("(redis): failover" in a["explanation"]["rules"][0]["effect"] for a in got)


def test_a_bad_ops_event_is_a_dead_letter_and_a_future_window_outlives_the_sweep(models, payloads):
    job = run(models, payloads[:2000], ops=[{"kind": "deploy", "service": "search", "at": "tomorrow",
                                              "duration_s": 60},
                                             {"kind": "maintenance", "service": "quiet-svc",
                                              "at": (START + 30 * 86400_000) // 1000, "duration_s": 600}])
    assert [d.reason for d in job.dead_letters] == ["wrong_type"]
    job.sweep()
    assert "quiet-svc" in job.entity_state  # the service never sent data, but its window is still to come
